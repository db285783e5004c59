"""Training targets: the ideal ratio mask and the ideal binary mask (SPEC §5).

S and N are the T-F energies of the premixed clean speech and of the scaled noise, in the domain of the mask
(cochleagram channels or STFT bins), over the project's centred frames.

- IRM = (S / (S + N))^β, β = 0.5 by default; in [0, 1].
- IBM = 1 where 10·log10(S / N) ≥ LC, else 0. LC is ``snr_db − 5`` under the reference rule ``"snr-5"``
  (snr_db: the mixture SNR), or a fixed number of dB.

Units where both S and N are 0 (digital silence in both signals) have no defined SNR: both masks are 0 there
(the unit carries no energy, so its mask value changes nothing in the resynthesis). S > 0 with N = 0 gives 1.
"""

from __future__ import annotations

import math
import re
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from speechkern.errors import SpeechkernError

_RULE = re.compile(r"^snr\s*([+-])\s*(\d+(?:\.\d+)?)$")


def ideal_ratio_mask(speech_energy: np.ndarray, noise_energy: np.ndarray, beta: float = 0.5) -> np.ndarray:
    """IRM = (S / (S + N))^β per unit, float32 in [0, 1]; 0 where S = N = 0. Energies must be >= 0."""
    s = np.asarray(speech_energy, dtype=np.float64)
    n = np.asarray(noise_energy, dtype=np.float64)
    _check_energies(s, n)
    if beta <= 0:
        raise SpeechkernError(f"IRM exponent beta = {beta}: expected beta > 0 (0.5 is the reference value)")
    total = s + n
    ratio = np.divide(s, total, out=np.zeros_like(total), where=total > 0)
    return np.clip(ratio**beta, 0.0, 1.0).astype(np.float32)


def local_criterion(rule: str | float, snr_db: float | None = None) -> float:
    """Local criterion LC in dB: ``"snr-5"`` (any ``"snr±K"``) → snr_db ∓ K; a number → that fixed LC in dB."""
    if isinstance(rule, bool):
        raise SpeechkernError(f"local criterion {rule!r}: expected 'snr-5' or a number of dB")
    if isinstance(rule, (int, float)):
        if not math.isfinite(rule):
            raise SpeechkernError(f"local criterion {rule} dB: expected a finite number")
        return float(rule)
    text = str(rule).strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    match = _RULE.match(text)
    if not match:
        raise SpeechkernError(f"local criterion {rule!r}: expected 'snr-5' (mixture SNR − 5 dB) or a number of dB")
    if snr_db is None:
        raise SpeechkernError(f"local criterion {rule!r} needs the mixture SNR (snr_db), which was not given")
    offset = float(match.group(2))
    return float(snr_db) + (offset if match.group(1) == "+" else -offset)


def ideal_binary_mask(speech_energy: np.ndarray, noise_energy: np.ndarray, lc_db: float) -> np.ndarray:
    """IBM: 1 where 10·log10(S/N) ≥ lc_db, else 0 (float32); S > 0, N = 0 → 1; S = 0 → 0."""
    s = np.asarray(speech_energy, dtype=np.float64)
    n = np.asarray(noise_energy, dtype=np.float64)
    _check_energies(s, n)
    # S/N ≥ 10^(LC/10) ⇔ S ≥ N·10^(LC/10): no division, no log of zero; S = 0 never passes.
    return ((s >= n * 10.0 ** (float(lc_db) / 10.0)) & (s > 0)).astype(np.float32)


def _check_energies(s: np.ndarray, n: np.ndarray) -> None:
    if s.shape != n.shape:
        raise SpeechkernError(f"speech energies {s.shape} and noise energies {n.shape} differ in shape")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(n))):
        raise SpeechkernError("T-F energies hold NaN or infinite values")
    if np.any(s < 0) or np.any(n < 0):
        raise SpeechkernError("T-F energies must be non-negative (sums of squares)")


class Target(BaseModel):
    """What a model learns: IRM or IBM, in the cochleagram or the STFT domain.

    beta: IRM exponent; lc: IBM local criterion, ``"snr-5"`` (mixture SNR − 5 dB) or a fixed value in dB.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["irm", "ibm"] = "irm"
    domain: Literal["cochleagram", "stft"] = "cochleagram"
    beta: float = Field(0.5, gt=0.0)
    lc: str | float = "snr-5"

    @field_validator("lc")
    @classmethod
    def _valid_lc(cls, value: str | float) -> str | float:
        try:
            local_criterion(value, 0.0)
        except SpeechkernError as err:
            raise ValueError(str(err)) from None
        return value


TargetConfig = Target
"""Alias: the name the recipe and model files use."""


class SignalParams(Protocol):
    """What :func:`compute_target` reads from its ``signal`` argument (a FeatureConfig has all of it)."""

    sr: int
    frame_length: int
    hop_length: int
    n_channels: int
    fmin: float
    fmax: float


def mask_units(target: Target, signal: SignalParams) -> int:
    """Channels of the mask: ``n_channels`` (cochleagram) or ``frame_length // 2 + 1`` STFT bins."""
    return signal.n_channels if target.domain == "cochleagram" else signal.frame_length // 2 + 1


def tf_energies(
    y: np.ndarray,
    domain: str = "cochleagram",
    sr: int = 16000,
    frame_length: int = 320,
    hop_length: int = 160,
    n_channels: int = 64,
    fmin: float = 50.0,
    fmax: float = 8000.0,
    n_fft: int | None = None,
    *,
    device: str = "cpu",
) -> np.ndarray:
    """T-F energies (n_units, n_frames) of ``y`` in ``domain``: cochleagram channels or |STFT|² bins."""
    if domain == "cochleagram":
        from speechkern.gammatone import cochleagram

        return cochleagram(y, sr, n_channels, fmin, fmax, frame_length, hop_length, device=device)
    if domain == "stft":
        from speechkern.stft import power_spectrogram

        return power_spectrogram(np.asarray(y, dtype=np.float64), frame_length, hop_length, n_fft, device=device)
    raise SpeechkernError(f"target domain {domain!r}: expected 'cochleagram' or 'stft'")


def compute_target(
    clean: np.ndarray,
    noise: np.ndarray,
    config: Target | None = None,
    signal: SignalParams | None = None,
    *,
    snr_db: float | None = None,
    n_fft: int | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """Target mask float32 (n_units, n_frames) from the premixed clean speech and the scaled noise.

    config: the target (default IRM, β = 0.5, cochleagram domain). signal: the signal parameters — any object
    with ``sr``, ``frame_length``, ``hop_length``, ``n_channels``, ``fmin``, ``fmax``, normally the model's
    :class:`~speechkern.features.FeatureConfig` (default: its defaults), so targets and features share one framing.
    n_units: n_channels (cochleagram) or n_fft // 2 + 1 (STFT; n_fft defaults to frame_length: 161 bins).
    snr_db: mixture SNR for the ``"snr-5"`` IBM rule; if None it is measured as 10·log10(Σs²/Σn²) over the
    whole utterance (which is how mixtures are made, SPEC §2).
    """
    config = config or Target()
    if signal is None:
        from speechkern.features import FeatureConfig

        signal = FeatureConfig()
    clean = np.asarray(clean)
    noise = np.asarray(noise)
    if clean.shape != noise.shape:
        raise SpeechkernError(f"clean ({clean.shape}) and noise ({noise.shape}) must have the same shape")
    args = (
        config.domain,
        signal.sr,
        signal.frame_length,
        signal.hop_length,
        signal.n_channels,
        signal.fmin,
        signal.fmax,
        n_fft,
    )
    s = tf_energies(clean, *args, device=device)
    n = tf_energies(noise, *args, device=device)
    if config.kind == "irm":
        return ideal_ratio_mask(s, n, config.beta)
    if snr_db is None and isinstance(config.lc, str) and _RULE.match(config.lc.strip().lower()):
        e_s = float(np.dot(clean.astype(np.float64), clean.astype(np.float64)))
        e_n = float(np.dot(noise.astype(np.float64), noise.astype(np.float64)))
        if e_s <= 0 or e_n <= 0:
            raise SpeechkernError("cannot measure the mixture SNR of a silent clean or noise signal; pass snr_db")
        snr_db = 10.0 * math.log10(e_s / e_n)
    return ideal_binary_mask(s, n, local_criterion(config.lc, snr_db))
