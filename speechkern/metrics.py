"""Objective measures of masks and enhanced speech (SPEC §8).

STOI and extended STOI come from ``pystoi``; PESQ from ``pesq`` (ITU-T P.862): wide-band at 16 kHz and
narrow-band at 8 kHz. A file PESQ cannot score (for example one with no detectable utterance) gives NaN and
the reason, never an exception that stops an evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def mask_mse(estimate: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error per T-F unit between an estimated and an ideal mask (same shape)."""
    return float(np.mean((estimate.astype(np.float64) - target.astype(np.float64)) ** 2))


def mask_mse_per_channel(estimate: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean squared error of each frequency channel; masks are ``(n_frames, n_channels)``."""
    return np.mean((estimate.astype(np.float64) - target.astype(np.float64)) ** 2, axis=0)


def binary_accuracy(estimate: np.ndarray, target: np.ndarray) -> float:
    """Fraction of T-F units whose binary label is right (estimates thresholded at 0.5)."""
    return float(np.mean((estimate >= 0.5) == (target >= 0.5)))


def hit_minus_fa(estimate: np.ndarray, target: np.ndarray) -> float:
    """HIT − FA: hits among speech-dominant units minus false alarms among noise-dominant units."""
    est, ref = estimate >= 0.5, target >= 0.5
    hit = float(np.mean(est[ref])) if ref.any() else 0.0
    fa = float(np.mean(est[~ref])) if (~ref).any() else 0.0
    return hit - fa


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019), means removed."""
    est = estimate.astype(np.float64) - np.mean(estimate)
    ref = reference.astype(np.float64) - np.mean(reference)
    n = min(len(est), len(ref))
    est, ref = est[:n], ref[:n]
    scale = np.dot(est, ref) / max(np.dot(ref, ref), 1e-20)
    target = scale * ref
    noise = est - target
    return float(10.0 * np.log10(max(np.dot(target, target), 1e-20) / max(np.dot(noise, noise), 1e-20)))


def stoi(clean: np.ndarray, processed: np.ndarray, sr: int, extended: bool = False) -> float:
    """Short-time objective intelligibility (pystoi), or its extended form."""
    from pystoi import stoi as _stoi

    n = min(len(clean), len(processed))
    return float(_stoi(clean[:n].astype(np.float64), processed[:n].astype(np.float64), sr, extended=extended))


def pesq(clean: np.ndarray, processed: np.ndarray, sr: int, mode: str = "wb") -> tuple[float, str]:
    """PESQ score and an empty string, or NaN and the reason it could not be scored.

    mode "wb": wide-band P.862.2 at 16 kHz; "nb": narrow-band P.862 at 8 kHz. Other input rates are resampled.
    """
    from pesq import pesq as _pesq
    from pesq.cypesq import PesqError

    from speechkern.audio import resample

    rate = 16000 if mode == "wb" else 8000
    ref = resample(clean.astype(np.float32), sr, rate)
    deg = resample(processed.astype(np.float32), sr, rate)
    n = min(len(ref), len(deg))
    try:
        return float(_pesq(rate, ref[:n], deg[:n], mode)), ""
    except PesqError as err:  # no utterance detected, too short, ...
        return math.nan, f"{type(err).__name__}: {err}"


@dataclass
class SpeechScores:
    """Intelligibility and quality of one processed signal against the clean reference."""

    stoi: float
    estoi: float
    pesq: float
    pesq_nb: float
    si_sdr: float
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return {"stoi": self.stoi, "estoi": self.estoi, "pesq": self.pesq, "pesq_nb": self.pesq_nb,
                "si_sdr": self.si_sdr}  # fmt: skip


def speech_scores(clean: np.ndarray, processed: np.ndarray, sr: int) -> SpeechScores:
    """STOI, ESTOI, wide- and narrow-band PESQ and SI-SDR of ``processed`` against ``clean``."""
    pesq_wb, why_wb = pesq(clean, processed, sr, "wb")
    pesq_nb, why_nb = pesq(clean, processed, sr, "nb")
    problems = [f"pesq {m}: {why}" for m, why in (("wb", why_wb), ("nb", why_nb)) if why]
    return SpeechScores(
        stoi=stoi(clean, processed, sr),
        estoi=stoi(clean, processed, sr, extended=True),
        pesq=pesq_wb,
        pesq_nb=pesq_nb,
        si_sdr=si_sdr(processed, clean),
        problems=problems,
    )
