"""The ideal-mask upper bound for a user's own speech and noise: how much could a perfect mask estimator gain?"""

from __future__ import annotations

import math
import os
from pathlib import Path

from speechkern import audio, metrics
from speechkern.enhance import apply_mask
from speechkern.errors import SpeechkernError
from speechkern.features import FeatureConfig
from speechkern.mixtures import mix_files
from speechkern.targets import TargetConfig, compute_target


def oracle(
    clean_path: str | os.PathLike,
    noise_path: str | os.PathLike,
    snr_db: float,
    target: TargetConfig | None = None,
    signal: FeatureConfig | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """STOI, ESTOI, PESQ and SI-SDR of the mixture and of the ideal-mask output, ``{"noisy": …, "ideal": …}``.

    The mixture is made as ``speechkern mix`` makes it (same seed, same segment); the ideal mask comes from the
    premixed speech and scaled noise in the target's domain, with the framing of ``signal``. A score that is
    undefined all the same (silent speech, too few frames left after STOI's silence removal) is NaN, with the
    reason under ``"problems"``.

    Raises SpeechkernError naming the clean file when it is shorter than STOI can score (about 0.41 s, see
    :func:`speechkern.metrics.stoi_min_samples`), before anything is computed.
    """
    target = target or TargetConfig()
    signal = signal or FeatureConfig()
    _check_length(Path(clean_path), signal.sr)
    mixture, clean, noise, sr, _ = mix_files(clean_path, noise_path, snr_db, seed=seed, sr=signal.sr)
    mask = compute_target(clean, noise, target, signal, snr_db=snr_db).T
    ideal = apply_mask(mixture, mask, (signal, target))
    out = {}
    for name, y in (("noisy", mixture), ("ideal", ideal)):
        s = metrics.speech_scores(clean, y, sr)
        out[name] = s.as_dict()
        if s.problems:
            out[name]["problems"] = s.problems
    return out


def _check_length(path: Path, sr: int) -> None:
    """Refuse speech too short to score: fewer samples than give STOI's minimum once resampled to ``sr`` Hz."""
    head = audio.info(path)
    minimum = math.floor((metrics.stoi_min_samples(sr) - 1) * head.samplerate / sr) + 1
    if head.frames < minimum:
        raise SpeechkernError(
            f"{path}: {head.frames} samples ({1000 * head.frames / head.samplerate:.1f} ms) is too short to score; "
            f"STOI needs at least {minimum} samples ({1000 * minimum / head.samplerate:.0f} ms) at "
            f"{head.samplerate} Hz; give a longer recording"
        )
