"""Full band at any rate (speechkern.fullband) and the clean-input guard (speechkern.postfilter)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal

from speechkern import audio, fullband, postfilter
from speechkern.features import FeatureConfig
from speechkern.targets import TargetConfig

SR = 48000


def band_level_db(y: np.ndarray, sr: int, lo_hz: float, hi_hz: float) -> float:
    f, p = scipy.signal.welch(y, sr, nperseg=4096)
    return float(10 * np.log10(np.sum(p[(f >= lo_hz) & (f < hi_hz)]) + 1e-30))


def tone(freq_hz: float, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq_hz * np.arange(int(SR * seconds)) / SR).astype(np.float32)


@pytest.mark.parametrize(("freq_hz", "expected_db"), [(4000.0, None), (12000.0, 0.0), (20000.0, 0.0)])
def test_the_high_band_is_what_the_model_rate_cannot_hold(freq_hz, expected_db):
    """Below the model's band the residual is > 100 dB down; above 8 kHz it is the input (within 0.01 dB)."""
    x = tone(freq_hz)
    high = fullband.high_band(x, audio.resample(x, SR, 16000), SR, 16000)
    inner = slice(SR // 10, -SR // 10)  # away from the resampler's edge transients
    level = 10 * np.log10(np.mean(high[inner] ** 2) / np.mean(x[inner] ** 2))
    if expected_db is None:
        assert level < -100.0
    else:
        assert abs(level - expected_db) < 0.01


def test_the_gated_high_band_follows_the_mask_of_the_top_octave():
    fc, tc = FeatureConfig(), TargetConfig()
    cf = fullband.unit_frequencies(fc, tc, fc.n_channels)
    assert np.sum(cf >= 4000.0) == 13 and cf[-1] == 8000.0  # the top octave: 13 of the 64 channels
    x = tone(12000.0)
    low = audio.resample(x, SR, 16000)
    n_frames = 1 + len(low) // fc.hop_length
    high = fullband.high_band(x, low, SR, 16000)
    mask = np.zeros((n_frames, fc.n_channels), dtype=np.float32)
    mask[:, cf >= 4000.0] = 0.5  # channels below 4 kHz do not count
    np.testing.assert_allclose(fullband.gated_high_band(x, low, mask, SR, fc, tc), 0.5 * high, atol=1e-6)
    mask[n_frames // 2 :, :] = 1.0  # the gain moves with the frames, at 10 ms steps
    gated = fullband.gated_high_band(x, low, mask, SR, fc, tc)
    assert np.allclose(gated[: SR // 4], 0.5 * high[: SR // 4]) and np.allclose(gated[-SR // 4 :], high[-SR // 4 :])
    assert not np.any(fullband.gated_high_band(low, low, mask, 16000, fc, tc))  # nothing to add at the model's rate


def test_the_mask_estimate_of_snr_is_exact_for_the_ideal_ratio_mask():
    rng = np.random.default_rng(0)
    s, n = rng.gamma(0.5, size=(200, 64)), 0.1 * rng.gamma(0.5, size=(200, 64))
    irm = np.sqrt(s / (s + n))
    assert postfilter.estimated_snr_db(irm, s + n) == pytest.approx(10 * np.log10(s.sum() / n.sum()), abs=1e-9)
    assert postfilter.estimated_snr_db(np.ones((3, 2)), np.ones((3, 2))) == np.inf


def test_the_noise_floor_estimate_of_snr():
    """Speech-like bursts over a stationary floor: the floor is found in the pauses."""
    rng = np.random.default_rng(1)
    floor = np.full((400, 64), 1.0)
    speech = np.zeros((400, 64))
    speech[::2] = 10.0 * rng.uniform(0.5, 1.5, size=(200, 64))  # half the frames hold speech
    want = 10 * np.log10(speech.sum() / floor.sum())
    assert postfilter.floor_snr_db(speech + floor) == pytest.approx(want, abs=0.2)


def test_the_guard_estimate_of_blocks_is_the_whole_recordings():
    """Blocks of any sizes add up to the estimates of the whole recording, the floor's percentile included (it
    was computed per block, so a long recording's guard weight depended on where blocks fell)."""
    rng = np.random.default_rng(3)
    energies = rng.gamma(0.5, size=(1000, 8)) * np.where(np.arange(1000) < 400, 0.01, 1.0)[:, None]
    mask = rng.uniform(size=(1000, 8))
    whole = (postfilter.estimated_snr_db(mask, energies, 0.5), postfilter.floor_snr_db(energies))
    for cuts in ([0, 1000], [0, 300, 301, 950, 1000], list(range(0, 1001, 100))):
        with postfilter.GuardEstimate(beta=0.5) as guard:
            for a, b in itertools.pairwise(cuts):
                guard.add(mask[a:b], energies[a:b])
            assert guard.frames == 1000
            np.testing.assert_allclose(guard.snr_estimates(), whole, rtol=1e-12)
    first = (postfilter.estimated_snr_db(mask[:400], energies[:400], 0.5), postfilter.floor_snr_db(energies[:400]))
    assert abs(first[1] - whole[1]) > 3  # what one block alone estimates is far from the whole
    with postfilter.GuardEstimate() as guard:
        assert guard.snr_estimates() == (-np.inf, -np.inf) and guard.weight() == 0.0


def test_the_guard_weight_rises_with_the_calibrated_snr():
    calibration = (0.041, 1.337, 0.226)
    assert postfilter.calibrated_snr_db(8.0, 20.0, calibration) == pytest.approx(0.041 + 1.337 * 8 + 0.226 * 20)
    assert postfilter.calibrated_snr_db(8.0, 140.0, calibration) == postfilter.calibrated_snr_db(8.0, 40.0)  # clipped
    assert postfilter.guard_weight(0.0, 40.0) == 0.0  # noise that pauses: the floor alone is fooled
    assert postfilter.guard_weight(10.0, 40.0) == 1.0
    low, high = postfilter.GUARD
    mid = (0.5 * (low + high) - 0.041 - 0.226 * 20.0) / 1.337
    assert postfilter.guard_weight(mid, 20.0) == pytest.approx(0.5, abs=0.01)
    energies = np.random.default_rng(2).gamma(0.5, size=(10, 4))
    mask = np.full((10, 4), 0.9, dtype=np.float32)
    assert postfilter.clean_weight(mask, energies, thresholds=(-100.0, -99.0)) == 1.0
    assert postfilter.clean_weight(mask, energies, thresholds=(100.0, 101.0)) == 0.0
    y, enhanced = np.ones(5, dtype=np.float32), np.zeros(5, dtype=np.float32)
    assert postfilter.blend(y, enhanced, 0.0) is enhanced
    np.testing.assert_array_equal(postfilter.blend(y, enhanced, 1.0), y)
    np.testing.assert_allclose(postfilter.blend(y, enhanced, 0.25), 0.25)
    with pytest.raises(ValueError, match="must exceed"):
        postfilter.ramp(1.0, 2.0, 2.0)


def _gamma_speech_in_noise(snr_db: float, n: int = 160_000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    speech = rng.gamma(postfilter.WADA_SHAPE, 1.0, n) * rng.choice((-1.0, 1.0), n)
    speech /= np.sqrt(np.mean(speech**2))
    return speech + rng.standard_normal(n) * 10.0 ** (-snr_db / 20.0)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0, 30.0])
def test_wada_snr_recovers_the_snr_of_its_own_model_and_adds_up_over_blocks(snr_db):
    """WADA-SNR (Kim & Stern 2008) of gamma-amplitude speech in Gaussian noise, a draw other than its table's, is
    the SNR within 0.5 dB; it is scale-free; a recording's blocks add up to the whole (as the guard gathers it);
    a silent or empty signal reads as the table's lowest SNR."""
    x = _gamma_speech_in_noise(snr_db)
    assert postfilter.wada_snr_db(x) == pytest.approx(snr_db, abs=0.5)
    assert postfilter.wada_snr_db(1e-3 * x) == pytest.approx(postfilter.wada_snr_db(x), abs=1e-6)
    with postfilter.GuardEstimate() as guard:
        for a, b in itertools.pairwise([0, 1, 5000, 100_000, len(x)]):
            guard.add(np.full((1, 2), 0.5), np.ones((1, 2)), x[a:b])
        assert postfilter.wada_snr_db(sums=guard.wada_sums) == pytest.approx(postfilter.wada_snr_db(x), abs=1e-9)
    assert postfilter.wada_snr_db(np.zeros(100)) == postfilter.wada_snr_db(np.zeros(0)) == postfilter.WADA_RANGE[0]


def test_with_a_wada_ramp_the_guard_passes_the_input_only_where_both_estimates_call_it_clean():
    """w = min(ramp of the calibrated SNR, ramp of WADA-SNR): a recording the model's estimates call clean is
    still masked where its waveform says 10 dB, and the guard without a WADA ramp is as before."""
    energies = np.random.default_rng(2).gamma(0.5, size=(10, 4))
    mask = np.full((10, 4), 0.9, dtype=np.float32)
    open_guard = postfilter.GuardConfig(thresholds=(-100.0, -99.0))  # the model's estimates alone: w = 1
    for snr_db, wada, expected in ((10.0, (15.0, 25.0), 0.0), (30.0, (15.0, 25.0), 1.0), (20.0, (15.0, 25.0), 0.5),
                                   (10.0, None, 1.0)):  # fmt: skip
        with postfilter.GuardEstimate() as guard:
            guard.add(mask, energies, _gamma_speech_in_noise(snr_db))
            config = open_guard.model_copy(update={"wada_thresholds": wada})
            assert guard.weight(config) == pytest.approx(expected, abs=0.06)
    for bad in ((12.0, 12.0), (float("nan"), 3.0)):
        with pytest.raises(ValueError):
            postfilter.GuardConfig(wada_thresholds=bad)
    assert postfilter.GuardConfig().wada_thresholds is None  # a model file without one reads as before


@pytest.mark.parametrize("clean_guard", [False, True])
def test_the_shipped_model_keeps_the_band_above_8_khz_of_a_48_khz_recording(tmp_path, clean_guard):
    """Clean 48 kHz stereo speech through the shipped model: rate, channels and length kept, and the band from
    8.5 to 20 kHz within −6 to +0.5 dB of the input's level (measured −1.6 dB with the mask's gating alone; the
    output used to hold nothing there, < −100 dB)."""
    from speechkern.enhance import enhance_file
    from speechkern.models.select import find_model, shipped_model_dir
    from speechkern.synth import TALKERS, synthesize

    model, _ = find_model(shipped_model_dir())
    y = synthesize(TALKERS[1], 3.0, seed=2, sr=SR)
    stereo = np.stack([y, 0.8 * y]).astype(np.float32)
    audio.save(tmp_path / "in.wav", stereo, SR)
    enhance_file(model, tmp_path / "in.wav", tmp_path / "out.wav", clean_guard=clean_guard)
    head = audio.info(tmp_path / "out.wav")
    assert (head.samplerate, head.channels, head.frames) == (SR, 2, stereo.shape[1])
    out = audio.load(tmp_path / "out.wav", sr=None, mono=False)[0]
    mono = stereo.mean(axis=0)  # the channels are averaged, enhanced once and written to both
    for channel in range(2):
        change = band_level_db(out[channel], SR, 8500, 20000) - band_level_db(mono, SR, 8500, 20000)
        assert -6.0 <= change <= 0.5, change


def test_the_clean_input_guard_on_real_speech(dev_data):
    """A LibriSpeech utterance in recorded street noise (second half of the file): at 20 dB SNR the output keeps
    the input's STOI and its SI-SDR within 1 dB, clean speech comes back as it went in, and at 0 dB the guard
    leaves the enhanced output as it was."""
    from speechkern.enhance import enhance_signal
    from speechkern.metrics import si_sdr, stoi
    from speechkern.mixtures import mix_at_snr
    from speechkern.models.select import find_model, shipped_model_dir

    model, _ = find_model(shipped_model_dir())
    clean = audio.load(sorted((dev_data / "clean" / "librispeech_train-clean-100").glob("*.flac"))[-1])[0][:96000]
    noise = audio.load(dev_data / "noise" / "blanket_ambient" / "city.flac")[0]
    noise = noise[len(noise) // 2 :][: len(clean)]
    noisy = mix_at_snr(clean, noise, 20.0)[0]
    guarded = enhance_signal(model, noisy)
    assert stoi(clean, guarded, 16000) >= stoi(clean, noisy, 16000)
    assert si_sdr(guarded, clean) >= si_sdr(noisy, clean) - 1.0
    dc_free = clean - np.mean(clean, dtype=np.float64).astype(np.float32)  # enhance removes a DC offset first
    np.testing.assert_array_equal(enhance_signal(model, clean), dc_free)
    noisy0 = mix_at_snr(clean, noise, 0.0)[0]
    np.testing.assert_array_equal(enhance_signal(model, noisy0), enhance_signal(model, noisy0, clean_guard=False))


def test_a_model_carries_its_own_guard_into_enhance(tiny_run, tmp_path):
    """The guard fitted for a model (benchmarks/clean_guard.py --save) is kept in its file and used by enhance;
    a model without one uses the default, and an invalid guard is refused."""
    import pydantic

    from speechkern.enhance import enhance_signal
    from speechkern.models.io import load_model, save_model

    _, root, _ = tiny_run
    model = load_model(root / "run" / "models" / "kernel")
    assert model.clean_guard is None
    y = audio.load(root / "run" / "noises" / "babble.wav")[0][: 16000 * 2]
    dc_free = y - np.mean(y, dtype=np.float64).astype(np.float32)
    plain = enhance_signal(model, y, clean_guard=False)
    # A WADA ramp below the babble's WADA-SNR leaves the open guard open; one above it closes it: enhance gives
    # the guard the waveform wherever the model's guard reads it.
    for thresholds, wada, expected in (((-100.0, -99.0), None, dc_free), ((100.0, 101.0), None, plain),
                                       ((-100.0, -99.0), (-19.0, -18.0), dc_free),
                                       ((-100.0, -99.0), (99.0, 99.5), plain)):  # fmt: skip
        model.clean_guard = postfilter.GuardConfig(calibration=(0.5, 1.0, 0.0), thresholds=thresholds,
                                                   wada_thresholds=wada)  # fmt: skip
        save_model(model, tmp_path / "m", overwrite=True)
        back = load_model(tmp_path / "m")
        assert back.clean_guard == model.clean_guard
        np.testing.assert_array_equal(enhance_signal(back, y), expected)
    with pytest.raises(pydantic.ValidationError, match="must exceed"):
        postfilter.GuardConfig(thresholds=(3.0, 3.0))
    with pytest.raises(pydantic.ValidationError, match="finite"):
        postfilter.GuardConfig(calibration=(0.0, float("nan"), 1.0))
