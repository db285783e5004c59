"""IRM and IBM targets (SPEC §5), and the ideal-mask STOI gain in both domains."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import soundfile as sf
from pystoi import stoi

from speechkern import gammatone, stft
from speechkern.errors import SpeechkernError
from speechkern.features import FeatureConfig
from speechkern.targets import (
    Target,
    TargetConfig,
    compute_target,
    ideal_binary_mask,
    ideal_ratio_mask,
    local_criterion,
    tf_energies,
)

SR = 16000


def test_irm_values_and_range():
    s = np.array([3.0, 1.0, 0.0, 2.0, 0.0, 1e-30])
    n = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 1e-30])
    irm = ideal_ratio_mask(s, n)
    assert irm.dtype == np.float32
    np.testing.assert_allclose(irm, [np.sqrt(0.75), np.sqrt(0.5), 0.0, 1.0, 0.0, np.sqrt(0.5)], rtol=1e-6)
    np.testing.assert_allclose(ideal_ratio_mask(s, n, beta=1.0)[:2], [0.75, 0.5], rtol=1e-6)
    rng = np.random.default_rng(0)
    s, n = rng.exponential(size=(64, 300)) ** 4, rng.exponential(size=(64, 300)) ** 4
    s[rng.random(s.shape) < 0.1] = 0.0
    irm = ideal_ratio_mask(s, n)
    assert irm.min() >= 0.0 and irm.max() <= 1.0
    assert np.all(ideal_ratio_mask(s, n, beta=2.0) <= ideal_ratio_mask(s, n, beta=0.5) + 1e-7)


def test_ibm_follows_its_rule():
    n = np.ones(6)
    s = np.array([1.0, 0.99, 0.4, 0.3, 0.0, 10.0])  # 0, −0.04, −3.98, −5.23, −inf, +10 dB
    np.testing.assert_array_equal(ideal_binary_mask(s, n, 0.0), [1, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(ideal_binary_mask(s, n, local_criterion("snr-5", 0.0)), [1, 1, 1, 0, 0, 1])
    np.testing.assert_array_equal(ideal_binary_mask(s, n, -6.0), [1, 1, 1, 1, 0, 1])
    # Silence in both: 0; speech without noise: 1.
    np.testing.assert_array_equal(ideal_binary_mask(np.array([0.0, 1.0]), np.array([0.0, 0.0]), -5.0), [0, 1])
    assert ideal_binary_mask(s, n, 0.0).dtype == np.float32


def test_local_criterion_rules():
    assert local_criterion("snr-5", 0.0) == -5.0
    assert local_criterion("SNR - 5", -2.0) == -7.0
    assert local_criterion("snr+3", 1.0) == 4.0
    assert local_criterion(-6, None) == -6.0
    assert local_criterion("-6.5") == -6.5
    with pytest.raises(SpeechkernError, match="mixture SNR"):
        local_criterion("snr-5")
    with pytest.raises(SpeechkernError, match="local criterion"):
        local_criterion("median")


def test_target_config():
    t = Target()
    assert (t.kind, t.domain, t.beta, t.lc) == ("irm", "cochleagram", 0.5, "snr-5")
    assert Target.model_validate_json(Target(kind="ibm", lc=-6.0).model_dump_json()) == Target(kind="ibm", lc=-6.0)
    for bad in ({"kind": "irn"}, {"domain": "mel"}, {"beta": 0}, {"lc": "snr*5"}, {"color": 1}):
        with pytest.raises(pydantic.ValidationError):
            Target(**bad)


def test_energy_checks():
    with pytest.raises(SpeechkernError, match="non-negative"):
        ideal_ratio_mask(np.array([-1.0]), np.array([1.0]))
    with pytest.raises(SpeechkernError, match="shape"):
        ideal_binary_mask(np.ones(3), np.ones(4), 0.0)


def test_compute_target_shapes_and_domains():
    rng = np.random.default_rng(1)
    clean = rng.standard_normal(8000).astype(np.float32)
    noise = 0.5 * rng.standard_normal(8000).astype(np.float32)
    frames = 1 + 8000 // 160
    irm = compute_target(clean, noise)
    assert irm.shape == (64, frames) and irm.dtype == np.float32
    s = gammatone.cochleagram(clean)
    n = gammatone.cochleagram(noise)
    np.testing.assert_allclose(irm, ideal_ratio_mask(s, n), atol=1e-6)
    irm_stft = compute_target(clean, noise, Target(domain="stft"))
    assert irm_stft.shape == (161, frames)
    np.testing.assert_allclose(
        irm_stft, ideal_ratio_mask(stft.power_spectrogram(clean), stft.power_spectrogram(noise)), atol=1e-5
    )
    # The "snr-5" rule measures the mixture SNR (here 10·log10(4) ≈ 6 dB) from the signals when not given.
    snr = 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2))
    ibm = compute_target(clean, noise, Target(kind="ibm"))
    np.testing.assert_array_equal(ibm, ideal_binary_mask(s, n, snr - 5))
    np.testing.assert_array_equal(compute_target(clean, noise, Target(kind="ibm"), snr_db=20.0), (s >= n * 10**1.5))
    assert tf_energies(clean, "stft", n_fft=512).shape == (257, frames)
    # Signal parameters come from the feature configuration (one framing for features and targets).
    signal = FeatureConfig(frame_length=400, hop_length=100, n_channels=32, fmin=80.0, fmax=7000.0)
    assert compute_target(clean, noise, TargetConfig(), signal).shape == (32, 1 + 8000 // 100)
    assert compute_target(clean, noise, TargetConfig(domain="stft"), signal).shape == (201, 1 + 8000 // 100)


def _speech_shaped_noise(utterances: list[np.ndarray], n_samples: int, seed: int) -> np.ndarray:
    """White noise shaped (FFT magnitude) to the long-term average spectrum of ``utterances``."""
    n_fft = 512
    ltas = np.mean(np.concatenate([np.abs(stft.stft(u, 320, 160, n_fft)) ** 2 for u in utterances], axis=1), axis=1)
    white = np.fft.rfft(np.random.default_rng(seed).standard_normal(n_samples))
    shape = np.sqrt(np.interp(np.fft.rfftfreq(n_samples, 1 / SR), np.fft.rfftfreq(n_fft, 1 / SR), ltas))
    return np.fft.irfft(white * shape, n_samples)


def test_ideal_ratio_mask_raises_stoi_in_both_domains(dev_data):
    """Dev speech + speech-shaped noise at 0 dB: the IRM gains at least 0.15 STOI over the noisy input."""
    paths = sorted((dev_data / "clean").rglob("*.flac"))
    speech = {p.name: sf.read(p, dtype="float32")[0] for p in paths[::60][:4]}
    utterances = [(k, u) for k, u in speech.items() if 2.0 * SR <= len(u) <= 6.0 * SR][:2] or list(speech.items())[:2]
    for i, (name, clean) in enumerate(utterances):
        noise = _speech_shaped_noise(list(speech.values()), len(clean), seed=i)
        noise = (noise * np.sqrt(np.sum(clean.astype(np.float64) ** 2) / np.sum(noise**2))).astype(np.float32)
        mixture = clean + noise
        noisy = stoi(clean, mixture, SR)
        coch_mask = compute_target(clean, noise, Target(domain="cochleagram"))
        stft_mask = compute_target(clean, noise, Target(domain="stft"))
        enhanced_coch = gammatone.resynthesize(mixture, coch_mask, SR)
        enhanced_stft = stft.resynthesize(mixture, stft_mask)
        gain_coch = stoi(clean, enhanced_coch, SR) - noisy
        gain_stft = stoi(clean, enhanced_stft, SR) - noisy
        assert gain_coch >= 0.15, (name, noisy, gain_coch)
        assert gain_stft >= 0.15, (name, noisy, gain_stft)
        print(f"{name}: noisy STOI {noisy:.3f}, IRM cochleagram +{gain_coch:.3f}, IRM STFT +{gain_stft:.3f}")
