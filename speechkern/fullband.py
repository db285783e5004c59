"""Full band at any rate: the band above the model's Nyquist frequency, kept and gated by the model's mask."""

from __future__ import annotations

import numpy as np

from speechkern import audio
from speechkern.features import FeatureConfig
from speechkern.targets import TargetConfig


def unit_frequencies(feature_config: FeatureConfig, target_config: TargetConfig, n_units: int) -> np.ndarray:
    """Centre frequency in Hz of each mask unit: the gammatone channels' (cochleagram masks) or the STFT bins'."""
    fc = feature_config
    if target_config.domain == "cochleagram":
        from speechkern.gammatone import erb_space

        return erb_space(fc.fmin, fc.fmax, n_units)
    return np.linspace(0.0, fc.sr / 2, n_units)


def high_band_gain(
    mask: np.ndarray, feature_config: FeatureConfig, target_config: TargetConfig, octaves: float = 1.0
) -> np.ndarray:
    """Per-frame gain (n_frames,) for the band above the model's rate: the mean mask over the units of the top
    ``octaves`` of the model's band (centre frequencies from fmax·2^−octaves to fmax, fmax = the model's top
    frequency; for the default cochleagram, the 13 channels from 4.1 to 8 kHz).

    Speech above 8 kHz (fricatives, breath, the upper partials of vowels) comes with speech in the top octave
    below it, and noise there with noise; the model's own estimate of that octave is the best guess it has.
    """
    mask = np.asarray(mask, dtype=np.float32)
    cf = unit_frequencies(feature_config, target_config, mask.shape[1])
    top = cf >= cf[-1] * 2.0**-octaves
    return mask[:, top].mean(axis=1)


def high_band(y: np.ndarray, y_model_rate: np.ndarray, sr: int, model_sr: int) -> np.ndarray:
    """What the model does not see: ``y`` (n_samples,) at ``sr`` Hz minus ``y_model_rate`` (``y`` resampled to
    ``model_sr``) resampled back to ``sr``, float32 (n_samples,).

    The crossover is the resampler's anti-aliasing filter (soxr "HQ", linear phase: flat to 0.9 of the model's
    Nyquist frequency, > 120 dB down above it, see :func:`speechkern.audio.resample`), so the two bands add up
    to ``y`` exactly: low band (through the model) + high band = input.
    """
    low = audio.resample(y_model_rate, model_sr, sr)
    n = len(y)
    low = low[:n] if len(low) >= n else np.pad(low, (0, n - len(low)))
    return (np.asarray(y, dtype=np.float32) - low).astype(np.float32)


def gated_high_band(
    y: np.ndarray,
    y_model_rate: np.ndarray,
    mask: np.ndarray,
    sr: int,
    feature_config: FeatureConfig,
    target_config: TargetConfig,
) -> np.ndarray:
    """The band of ``y`` (n_samples,) at ``sr`` Hz above the model's band, weighted sample by sample by
    :func:`high_band_gain` of ``mask`` (n_frames, n_units), the mask the model estimated on ``y_model_rate``
    (``y`` at the model's rate). Add it to the enhanced low band (resampled to ``sr``) for a full-band output.

    Frame m of the mask is centred at model sample m·hop (SPEC §3); the gain is interpolated linearly between
    frame centres at the output rate. Returns float32 (n_samples,); zeros when ``sr`` ≤ the model's rate.
    """
    fc = feature_config
    if sr <= fc.sr:
        return np.zeros(len(y), dtype=np.float32)
    gain = high_band_gain(mask, fc, target_config)
    centres = np.arange(len(gain)) * (fc.hop_length * sr / fc.sr)
    per_sample = np.interp(np.arange(len(y)), centres, gain).astype(np.float32)
    return high_band(y, y_model_rate, sr, fc.sr) * per_sample
