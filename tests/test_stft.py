"""STFT analysis/resynthesis with the project's centred framing."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf

from speechkern import stft as st
from speechkern.errors import SpeechkernError


def _snr_db(ref, est):
    return 10 * np.log10(np.sum(np.asarray(ref, np.float64) ** 2) / np.sum((ref - est.astype(np.float64)) ** 2))


@pytest.mark.parametrize("n_samples", [1, 159, 160, 161, 16001])
def test_shapes_and_frame_count(n_samples):
    y = np.random.default_rng(0).standard_normal(n_samples).astype(np.float32)
    spec = st.stft(y)
    assert spec.shape == (161, 1 + n_samples // 160) and spec.dtype == np.complex64
    assert st.stft(y, n_fft=512).shape == (257, 1 + n_samples // 160)
    assert st.power_spectrogram(y, 400, 100).shape == (201, 1 + n_samples // 100)


def test_frames_are_centred_on_multiples_of_the_hop():
    y = np.zeros(3200, dtype=np.float32)
    y[160 * 7] = 1.0  # an impulse at the centre of frame 7
    mag = np.abs(st.stft(y))
    np.testing.assert_allclose(mag[:, 7], 1.0, rtol=1e-6)  # periodic Hann peak = 1 at the frame centre
    assert np.all(mag[:, 6] < 1e-6) and np.all(mag[:, 8] < 1e-6)  # at the edge of neighbouring frames: w[0] = 0
    assert np.all(mag[:, :5] == 0) and np.all(mag[:, 10:] == 0)


def test_matches_librosa_centred_stft():
    y = np.random.default_rng(1).standard_normal(5000)
    ours = st.stft(y, 320, 160)
    ref = librosa.stft(y, n_fft=320, hop_length=160, window="hann", center=True, pad_mode="constant")
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    np.testing.assert_allclose(st.power_spectrogram(y), np.abs(ref) ** 2, atol=1e-9)


def test_all_ones_mask_resynthesises_input(dev_data):
    path = sorted((dev_data / "clean").rglob("*.flac"))[0]
    y, _ = sf.read(path, dtype="float32")
    for n_fft in (None, 512):
        out = st.resynthesize(y, np.ones((1 + (n_fft or 320) // 2, 1 + len(y) // 160)), n_fft=n_fft)
        assert out.shape == y.shape and out.dtype == np.float32
        assert _snr_db(y, out) >= 60.0


def test_istft_inverts_stft_including_edges():
    y = np.random.default_rng(2).standard_normal(16037)
    back = st.istft(st.stft(y), len(y))
    assert _snr_db(y, back) > 200  # float64 round trip
    assert abs(back[0] - y[0]) < 1e-9 and abs(back[-1] - y[-1]) < 1e-9


def test_mask_scales_magnitude_and_keeps_phase():
    y = np.random.default_rng(3).standard_normal(8000).astype(np.float32)
    frames = 1 + len(y) // 160
    half = st.resynthesize(y, np.full((161, frames), 0.5))
    assert _snr_db(0.5 * y, half) > 60
    mask = np.zeros((161, frames))
    mask[:40] = 1.0  # keep 0–1950 Hz
    out = st.resynthesize(y, mask)
    spec = np.abs(st.stft(out))
    assert spec[60:].max() < 0.02 * spec[:35].max()


def test_bad_inputs_raise():
    y = np.zeros(1600, dtype=np.float32)
    with pytest.raises(SpeechkernError, match="does not fit"):
        st.resynthesize(y, np.ones((161, 3)))
    with pytest.raises(SpeechkernError, match="n_fft"):
        st.stft(y, 320, 160, n_fft=256)
    with pytest.raises(SpeechkernError, match="mono"):
        st.stft(np.zeros((2, 100)))
