"""Gammatone filterbank, cochleagram and resynthesis against the formulas of SPEC §3."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from speechkern import gammatone as gt
from speechkern.errors import SpeechkernError

SR = 16000


@pytest.fixture(scope="module")
def bank() -> gt.GammatoneBank:
    return gt.gammatone_bank(SR, 64, 50.0, 8000.0)


def _erb_rate(f):
    return 21.4 * np.log10(4.37 * np.asarray(f) / 1000.0 + 1.0)


def test_erb_formula():
    assert gt.erb(1000.0) == pytest.approx(24.7 * 5.37)
    assert gt.erb(0.0) == pytest.approx(24.7)


def test_centre_frequencies_are_erb_spaced_with_both_ends(bank):
    cf = bank.center_freqs
    assert cf.shape == (64,)
    assert cf[0] == 50.0 and cf[-1] == 8000.0
    e = _erb_rate(cf)
    steps = np.diff(e)
    assert np.allclose(steps, (_erb_rate(8000.0) - _erb_rate(50.0)) / 63, rtol=0, atol=1e-9)
    # Independent inverse of the ERB-rate scale.
    expected = (10 ** (np.linspace(_erb_rate(50.0), _erb_rate(8000.0), 64) / 21.4) - 1) * 1000 / 4.37
    np.testing.assert_allclose(cf, expected, rtol=1e-12)
    assert np.allclose(gt.erb_space(100.0, 4000.0, 32)[[0, -1]], [100.0, 4000.0])


def test_bandwidth_parameters(bank):
    np.testing.assert_allclose(bank.bandwidths, 1.019 * 24.7 * (4.37 * bank.center_freqs / 1000 + 1), rtol=1e-12)


def test_impulse_responses_are_sampled_gammatones(bank):
    """The IIR sections reproduce t³·exp(−2πbt)·cos(2π·cf·t) at t = (n+1)/sr, every channel incl. cf = sr/2."""
    n = np.arange(1, 3001)
    impulse = np.zeros(3000)
    impulse[0] = 1.0
    for c in range(bank.n_channels):
        b, f = bank.bandwidths[c], bank.center_freqs[c]
        ref = (n / SR) ** 3 * np.exp(-2 * np.pi * b * n / SR) * np.cos(2 * np.pi * f * n / SR)
        got = scipy.signal.sosfilt(bank.channel_sos(c), impulse)
        scale = np.dot(got, ref) / np.dot(ref, ref)
        assert np.max(np.abs(got - scale * ref)) < 1e-7 * np.max(np.abs(got)), c


def test_same_design_as_scipy_fir_gammatone(bank):
    """scipy's FIR gammatone (its own ERB formula, 1.019·ERB) has the same taps, shifted by its zero first tap."""
    length = 2000
    taps = bank.impulse_responses(length)
    for c in range(0, 63, 7):  # scipy refuses cf = sr/2 (channel 63)
        ref, _ = scipy.signal.gammatone(bank.center_freqs[c], "fir", numtaps=length + 1, fs=SR)
        ref = ref[1:]
        cos = np.dot(ref, taps[c]) / np.linalg.norm(ref) / np.linalg.norm(taps[c])
        assert cos > 1 - 1e-10, c


def test_measured_erb_of_each_filter_matches_formula(bank):
    """∫|H|² df / |H(cf)|² of a 4th-order gammatone is b·π·6!/(2⁶·(3!)²) = 0.98175·b = 1.0004·ERB(cf).

    Measured numerically from the designed sections, away from 0 Hz and Nyquist where the mirror images of the
    sampled filter add to the integral.
    """
    freqs = np.linspace(0.0, SR / 2, 2**16 + 1)
    df = freqs[1] - freqs[0]
    factor = math.pi * math.factorial(6) / (2**6 * math.factorial(3) ** 2)
    assert factor == pytest.approx(15 * math.pi / 48)
    checked = 0
    for c in np.flatnonzero((bank.center_freqs > 300) & (bank.center_freqs < 5000)):
        response = np.abs(_response(bank, c, freqs)) ** 2
        peak = np.abs(_response(bank, c, np.array([bank.center_freqs[c]]))[0]) ** 2
        assert peak == pytest.approx(1.0, rel=1e-9)  # unit gain at cf
        measured = response.sum() * df / peak
        assert measured == pytest.approx(factor * bank.bandwidths[c], rel=1e-3), bank.center_freqs[c]
        assert measured == pytest.approx(gt.erb(bank.center_freqs[c]), rel=1e-3)
        checked += 1
    assert checked > 30


def _response(bank, c, freqs):
    return scipy.signal.sosfreqz(bank.channel_sos(c), worN=freqs, fs=SR)[1]


def test_low_channel_is_stable_with_unit_gain(bank):
    """The 50 Hz channel (poles at |z| = 0.988, the float32-unstable case) passes a 50 Hz tone at gain 1."""
    t = np.arange(SR * 4) / SR
    y = gt.gammatone_filter(np.sin(2 * np.pi * 50.0 * t), SR, 64, 50.0, 8000.0)
    assert np.all(np.isfinite(y))
    steady = y[0, SR * 2 :]
    assert np.max(np.abs(steady)) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("n_samples", [1, 159, 160, 161, 3200, 16001])
def test_frame_count(n_samples):
    y = np.random.default_rng(0).standard_normal(n_samples).astype(np.float32)
    coch = gt.cochleagram(y, SR)
    assert coch.shape == (64, 1 + n_samples // 160)
    coch = gt.cochleagram(y, SR, n_channels=32, fmin=80.0, fmax=5000.0, frame_length=400, hop_length=100)
    assert coch.shape == (32, 1 + n_samples // 100)


@pytest.mark.parametrize(("frame_length", "hop_length"), [(320, 160), (400, 100), (320, 200), (6, 4)])
def test_frame_energies_are_centred_sums(frame_length, hop_length):
    x = np.random.default_rng(1).random(1003)
    got = gt.frame_energies(x, frame_length, hop_length)
    expected = [
        x[max(0, m * hop_length - frame_length // 2) : max(0, m * hop_length + frame_length // 2)].sum()
        for m in range(1 + len(x) // hop_length)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_cochleagram_energy_of_a_tone_and_backends_agree(bank):
    """A 1 kHz tone of amplitude A puts L·A²/2 per frame into the channel centred nearest 1 kHz."""
    t = np.arange(SR) / SR
    c = int(np.argmin(np.abs(bank.center_freqs - 1000.0)))
    f = bank.center_freqs[c]
    y = (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)
    coch = gt.cochleagram(y, SR, method="sos")
    assert np.median(coch[c, 20:-20]) == pytest.approx(320 * 0.25 / 2, rel=1e-3)
    assert int(np.argmax(coch[:, 50])) == c
    fft = gt.cochleagram(y, SR, method="fft")
    np.testing.assert_allclose(fft, coch, rtol=1e-4, atol=1e-6 * coch.max())
    resp = gt.gammatone_filter(y, SR, method="sos")
    np.testing.assert_allclose(gt.gammatone_filter(y, SR, method="fft"), resp, atol=1e-5 * np.abs(resp).max())


def test_interpolate_mask_raised_cosine():
    n = 1600
    ones = gt.interpolate_mask(np.full((2, 11), 0.7), n)
    np.testing.assert_allclose(ones, 0.7, rtol=1e-12)  # edges included
    mask = np.random.default_rng(2).random((3, 11))
    w = gt.interpolate_mask(mask, n)
    # At frame centres only that frame's window is non-zero (periodic Hann, 50 % overlap).
    np.testing.assert_allclose(w[:, ::160], mask[:, :10], rtol=1e-12)
    # Midway between centres both windows weigh 1/2.
    np.testing.assert_allclose(w[:, 80::160], (mask[:, :-1] + mask[:, 1:]) / 2, rtol=1e-12)
    assert np.all((w >= mask.min() - 1e-12) & (w <= mask.max() + 1e-12))


def _highpassed(path, cutoff_hz=60.0):
    y, sr = sf.read(path, dtype="float64")
    assert sr == SR
    return scipy.signal.sosfiltfilt(scipy.signal.butter(4, cutoff_hz, "highpass", fs=SR, output="sos"), y)


def _snr_db(ref, est):
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2))


def test_all_ones_mask_resynthesises_speech(dev_data):
    """SNR ≥ 30 dB on dev speech. Some dev recordings carry up to 9 % of their energy as rumble below 50 Hz,
    which no channel of a 50–8000 Hz bank covers; it is removed first (60 Hz high-pass), as the bank's design
    range is what resynthesis can return."""
    paths = sorted((dev_data / "clean").rglob("*.flac"))[::150][:3]
    assert paths
    for path in paths:
        y = _highpassed(path).astype(np.float32)
        mask = np.ones((64, 1 + len(y) // 160))
        out = gt.resynthesize(y, mask, SR)
        assert out.shape == y.shape and out.dtype == np.float32
        assert _snr_db(y, out) >= 30.0, path.name
    sos_out = gt.resynthesize(y, mask, SR, method="sos")
    assert _snr_db(sos_out, out) > 90.0  # the default FFT path against the exact IIR filtering


@pytest.mark.parametrize(("frame_length", "hop_length", "n"), [(320, 160, 16000), (320, 160, 16077), (400, 160, 9999)])
def test_cpu_fft_path_matches_the_exact_iir_filtering(frame_length, hop_length, n):
    """The default CPU path (FIR taps by FFT, float32, hop-segment sums) against float64 IIR sections: responses,
    cochleagram and masked resynthesis, for lengths on and off the hop grid and framings whose half-frame is
    (320/160) or is not (400/160) a whole number of hops."""
    rng = np.random.default_rng(4)
    y = scipy.signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(n)).astype(np.float32)  # speech-like tilt
    resp, exact = gt.gammatone_filter(y, SR), gt.gammatone_filter(y, SR, method="sos")
    rel = np.sqrt(np.sum((resp - exact) ** 2, axis=1) / np.sum(exact**2, axis=1))
    assert rel.max() < 1e-5
    coch = gt.cochleagram(y, SR, frame_length=frame_length, hop_length=hop_length)
    ref = gt.cochleagram(y, SR, frame_length=frame_length, hop_length=hop_length, method="sos")
    assert coch.shape == ref.shape
    np.testing.assert_allclose(coch, ref, rtol=1e-4, atol=1e-9 * ref.max())
    mask = rng.random(ref.shape)
    out = gt.resynthesize(y, mask, SR, frame_length=frame_length, hop_length=hop_length)
    exact_out = gt.resynthesize(y, mask, SR, frame_length=frame_length, hop_length=hop_length, method="sos")
    assert out.shape == (n,) and _snr_db(exact_out, out) > 90.0
    for threads in (1, 3):  # the result does not depend on how channels are shared among threads
        np.testing.assert_array_equal(gt.resynthesize(y, mask, SR, frame_length=frame_length,
                                                      hop_length=hop_length, n_threads=threads), out)  # fmt: skip


def test_resynthesis_of_band_limited_noise_and_masks():
    rng = np.random.default_rng(3)
    white = rng.standard_normal(SR * 2)
    y = scipy.signal.sosfiltfilt(scipy.signal.butter(6, [150, 6000], "bandpass", fs=SR, output="sos"), white)
    frames = 1 + len(y) // 160
    assert _snr_db(y, gt.resynthesize(y, np.ones((64, frames)))) >= 30.0
    assert np.max(np.abs(gt.resynthesize(y, np.zeros((64, frames))))) == 0.0
    half = gt.resynthesize(y, np.full((64, frames), 0.5))
    assert _snr_db(0.5 * y, half) >= 30.0
    # Keeping only the channels above 2 kHz removes the low band.
    mask = np.zeros((64, frames))
    mask[gt.gammatone_bank().center_freqs > 2000] = 1.0
    out = gt.resynthesize(y, mask)
    spec = np.abs(np.fft.rfft(out)) ** 2
    f = np.fft.rfftfreq(len(out), 1 / SR)
    assert spec[(f > 300) & (f < 1000)].sum() < 1e-3 * spec[(f > 3000) & (f < 5000)].sum()


def test_bad_inputs_raise_clear_errors():
    y = np.zeros(1600, dtype=np.float32)
    with pytest.raises(SpeechkernError, match="does not fit"):
        gt.resynthesize(y, np.ones((64, 5)))
    with pytest.raises(SpeechkernError, match="Nyquist"):
        gt.cochleagram(y, sr=8000, fmax=8000.0)
    with pytest.raises(SpeechkernError, match="mono"):
        gt.cochleagram(np.zeros((2, 100)))
    with pytest.raises(SpeechkernError, match="NaN"):
        gt.cochleagram(np.full(100, np.nan))
    with pytest.raises(SpeechkernError, match="fmin"):
        gt.erb_space(500.0, 100.0, 8)


def test_design_is_cached():
    assert gt.gammatone_bank(SR, 64, 50.0, 8000.0) is gt.gammatone_bank(SR, 64, 50.0, 8000.0)
    small = gt.gammatone_bank(8000, 32, 50.0, 4000.0)
    assert small.n_channels == 32 and small.center_freqs[-1] == 4000.0
