"""The ideal-mask upper bound for a user's own speech and noise: how much could a perfect mask estimator gain?"""

from __future__ import annotations

import os

from speechkern import metrics
from speechkern.enhance import apply_mask
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
    premixed speech and scaled noise in the target's domain, with the framing of ``signal``.
    """
    target = target or TargetConfig()
    signal = signal or FeatureConfig()
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
