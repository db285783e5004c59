"""Resampling without aliasing: flat passband, deep stopband, for the rates speechkern meets."""

from __future__ import annotations

import numpy as np
import pytest

from speechkern.audio import resample

CASES = [(44100, 16000), (48000, 16000), (20000, 16000), (16000, 8000)]  # to 16 kHz, and 16 → 8 kHz for PESQ-NB


def _gain_db(freq: float, orig_sr: int, target_sr: int) -> float:
    """Output RMS of a unit sine at ``freq`` Hz against its input RMS, measured away from the edges."""
    t = np.arange(orig_sr) / orig_sr  # 1 s
    y = resample(np.sin(2 * np.pi * freq * t).astype(np.float32), orig_sr, target_sr)
    middle = y[len(y) // 4 : 3 * len(y) // 4].astype(np.float64)
    return float(20 * np.log10(max(np.sqrt(np.mean(middle**2)), 1e-12) / np.sqrt(0.5)))


@pytest.mark.parametrize(("orig_sr", "target_sr"), CASES)
def test_passband_is_flat_to_0_9_nyquist(orig_sr, target_sr):
    gains = [_gain_db(f, orig_sr, target_sr) for f in np.linspace(100.0, 0.9 * target_sr / 2, 12)]
    assert max(abs(g) for g in gains) <= 0.5


@pytest.mark.parametrize(("orig_sr", "target_sr"), CASES)
def test_stopband_from_the_new_nyquist_up_is_below_minus_60_db(orig_sr, target_sr):
    nyquist = target_sr / 2
    freqs = [nyquist + 10.0, nyquist + 100.0, *np.linspace(nyquist * 1.05, orig_sr / 2 - 50.0, 8)]
    gains = [_gain_db(f, orig_sr, target_sr) for f in freqs]
    assert max(gains) <= -60.0, dict(zip(freqs, gains, strict=True))


def test_length_dtype_and_channels():
    x = np.random.default_rng(0).standard_normal((2, 44100)).astype(np.float32)
    y = resample(x, 44100, 16000)
    assert y.shape == (2, 16000) and y.dtype == np.float32
    np.testing.assert_allclose(y[1], resample(x[1], 44100, 16000), atol=1e-6)  # channels resampled independently
    mono = x[0]
    assert resample(mono, 16000, 16000) is mono  # same rate: untouched
