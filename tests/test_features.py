"""Feature sets, deltas, context windows, normalisation statistics and batched extraction."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pydantic
import pytest
import scipy.linalg
import scipy.signal
import soundfile as sf
import torch

from speechkern import features as fe
from speechkern import gammatone, stft
from speechkern.errors import SpeechkernError

SR = 16000


@pytest.fixture(scope="module")
def noisy_speech() -> np.ndarray:
    """A speech-like test signal that needs no data: harmonic tone bursts in noise, 1.5 s."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.5 * SR)) / SR
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    return (0.1 * envelope * voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_dimensions_of_the_reference_set():
    cfg = fe.FeatureConfig()
    assert cfg.components == ("ams", "rasta_plp", "mfcc", "gf")
    assert fe.component_dims(cfg) == {"ams": 15, "rasta_plp": 13, "mfcc": 31, "gf": 64}
    assert fe.base_dim(cfg.model_copy(update={"deltas": False})) == 123
    assert fe.base_dim(cfg) == 246
    assert fe.input_dim(cfg) == 1230
    assert fe.base_dim(fe.FeatureConfig(kind="logpower", deltas=False)) == 161
    assert fe.base_dim(fe.FeatureConfig(kind="gf+mfcc", deltas=False, context=0)) == 95


@pytest.mark.parametrize("n_samples", [1, 161, 4000, 16001])
def test_every_feature_set_has_the_project_frame_count(n_samples):
    y = np.random.default_rng(1).standard_normal(n_samples).astype(np.float32) * 0.1
    for kind in (*fe.KINDS, "complementary"):
        cfg = fe.FeatureConfig(kind=kind)
        f = fe.extract(y, cfg)
        assert f.shape == (1 + n_samples // 160, fe.base_dim(cfg)), kind
        assert f.dtype == np.float32 and np.all(np.isfinite(f)), kind


def test_digital_silence_gives_finite_features():
    f = fe.extract(np.zeros(3200, dtype=np.float32), fe.FeatureConfig())
    assert np.all(np.isfinite(f))


def test_config_serialises_and_validates():
    cfg = fe.FeatureConfig(kind="gf+mfcc", context=1, gf_compression="cbrt")
    again = fe.FeatureConfig.model_validate(json.loads(cfg.model_dump_json()))
    assert again == cfg and hash(again) == hash(cfg)
    with pytest.raises(pydantic.ValidationError):
        cfg.context = 3  # frozen
    for bad in (
        {"kind": "mfcc+plp"},
        {"kind": "gf+gf"},
        {"fmax": 9000.0},
        {"n_fft": 256},
        {"n_mfcc": 80},
        {"hop_length": 162},
        {"hop_length": 320},  # trained, then refused by enhance and evaluate (frames must overlap)
        {"frame_length": 2},
        {"gf_compression": "sqrt"},
        {"unknown": 1},
    ):
        with pytest.raises(pydantic.ValidationError):
            fe.FeatureConfig(**bad)
    # 8 kHz models are a configuration.
    cfg8 = fe.FeatureConfig(sr=8000, fmax=4000.0, n_fft=256, frame_length=160, hop_length=80)
    y = np.random.default_rng(2).standard_normal(8000).astype(np.float32)
    assert fe.extract(y, cfg8).shape == (101, fe.base_dim(cfg8))


def test_gf_is_the_compressed_cochleagram(noisy_speech):
    coch = gammatone.cochleagram(fe.normalize_level(noisy_speech, -26.0), SR)  # features see the −26 dBFS level
    gf = fe.extract(noisy_speech, fe.FeatureConfig(kind="gf", deltas=False))
    np.testing.assert_allclose(gf, (coch ** (1 / 15)).T, rtol=1e-5)
    gf_log = fe.extract(noisy_speech, fe.FeatureConfig(kind="gf", deltas=False, gf_compression="log"))
    np.testing.assert_allclose(gf_log, np.log(np.maximum(coch, 1e-10)).T, rtol=1e-5, atol=1e-5)


def test_noise_floor_is_minimum_statistics():
    e = np.ones((2, 400))
    e[0, 100:120] = 100.0  # a burst shorter than the window: the floor stays at the background
    e[1, 150:350] = 100.0  # longer than the window: the floor rises inside it, away from its edges
    floor = fe.noise_floor(e, window=51)
    np.testing.assert_allclose(floor[0], 1.0)
    assert np.all(floor[1, 180:320] == 100.0)
    np.testing.assert_allclose(floor[1, :120], 1.0)
    np.testing.assert_allclose(floor[1, 380:], 1.0)
    # smoothing over 5 frames before the minimum: one quiet frame does not pull the floor down
    f = np.full((1, 200), 10.0)
    f[0, 100] = 0.0
    np.testing.assert_allclose(fe.noise_floor(f, window=11)[0, 95:106], 8.0)


def test_gf_floor_is_the_compressed_floor_of_the_cochleagram(noisy_speech):
    cfg = fe.FeatureConfig(kind="gf+gf_floor", deltas=False)
    assert fe.component_dims(cfg) == {"gf": 64, "gf_floor": 64}
    f = fe.extract(noisy_speech, cfg)
    coch = gammatone.cochleagram(fe.normalize_level(noisy_speech, -26.0), SR)
    np.testing.assert_allclose(f[:, 64:], (fe.noise_floor(coch, 150) ** (1 / 15)).T, rtol=1e-4)
    assert np.all(f[:, 64:] <= f[:, :64].max(axis=0) + 1e-6)
    # the 4 Hz bursts ride on noise: the floor sits well below the speech peaks
    assert np.median(f[:, 64:]) < np.median(f[:, :64])


def test_features_of_a_block_with_the_reach_as_margin_equal_the_whole_files():
    rng = np.random.default_rng(4)
    t = np.arange(6 * SR) / SR
    y = (0.1 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 1.3 * t) > 0.3)).astype(np.float32)
    y += (0.02 * rng.standard_normal(t.size) * (1 + (t > 3))).astype(np.float32)  # the noise steps up at 3 s
    cfg = fe.FeatureConfig(kind="gf+gf_floor")
    assert fe.reach_s(cfg) == pytest.approx((2 + 4 + 2 + 75 + 2) * 160 / SR + 0.02)
    assert fe.reach_s(fe.FeatureConfig(kind="gf+mfcc")) == pytest.approx(0.1)
    gain = fe.level_gain(y, cfg.level_dbfs)
    whole = fe.extract(y, cfg, gain=gain)
    margin = int(fe.reach_s(cfg) * SR) // 160 * 160
    start, stop = 2 * SR, 4 * SR
    block = fe.extract(y[start - margin : stop + margin], cfg, gain=gain)
    first = margin // 160
    kept = block[first : first + (stop - start) // 160]
    np.testing.assert_allclose(kept, whole[start // 160 : stop // 160], rtol=2e-3, atol=2e-4)
    short = fe.extract(y[start - SR // 4 : stop + SR // 4], cfg, gain=gain)[SR // 4 // 160 :][: (stop - start) // 160]
    assert np.abs(short - whole[start // 160 : stop // 160]).max() > 1e-2  # a shorter margin would not do


def test_rasta_plp_of_a_block_with_the_reach_as_margin_equals_the_whole_files():
    """RASTA's pole (0.94 per frame) carries a frame's input into every later frame: the reach counts the frames
    it takes to decay to 1e-3 (it counted none: a block with the reach as margin was 16 % off), and parallel
    components' reaches are not added up (the floor's and RASTA's)."""
    rng = np.random.default_rng(5)
    t = np.arange(8 * SR) / SR
    y = (0.1 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 1.3 * t) > 0.3)).astype(np.float32)
    y += (0.02 * rng.standard_normal(t.size) * (1 + 3 * (t > 4))).astype(np.float32)
    cfg = fe.FeatureConfig(kind="rasta_plp", context=1)
    assert fe.reach_s(cfg) == pytest.approx((1 + 4 + 2 + 112 + 2) * 160 / SR + 0.02)
    both = fe.FeatureConfig(kind="complementary+gf_floor")
    assert fe.reach_s(both) == pytest.approx(fe.reach_s(fe.FeatureConfig()))  # RASTA reaches further than the floor
    gain = fe.level_gain(y, cfg.level_dbfs)
    whole = fe.extract(y, cfg, gain=gain)
    margin = int(fe.reach_s(cfg) * SR) // 160 * 160
    start, stop = 3 * SR, 5 * SR
    block = fe.extract(y[start - margin : stop + margin], cfg, gain=gain)[margin // 160 :][: (stop - start) // 160]
    np.testing.assert_allclose(block, whole[start // 160 : stop // 160], atol=1e-3)


def test_mfcc_logmel_logpower_match_librosa(noisy_speech):
    cfg = fe.FeatureConfig(kind="mfcc+logmel+logpower", deltas=False)
    f = fe.extract(noisy_speech, cfg)
    mfcc, logmel, logpower = f[:, :31], f[:, 31:95], f[:, 95:]
    noisy_speech = fe.normalize_level(noisy_speech, -26.0)  # features see the −26 dBFS level
    power = np.abs(stft.stft(noisy_speech.astype(np.float64), 320, 160, 512)) ** 2
    mel = librosa.feature.melspectrogram(S=power, sr=SR, n_fft=512, n_mels=64, fmin=0.0, fmax=SR / 2)
    ref_logmel = np.log(np.maximum(mel, 1e-10))
    np.testing.assert_allclose(logmel, ref_logmel.T, atol=2e-3)
    ref_mfcc = librosa.feature.mfcc(S=ref_logmel, n_mfcc=31, dct_type=2, norm="ortho", lifter=0)
    np.testing.assert_allclose(mfcc, ref_mfcc.T, atol=1e-2 * np.abs(ref_mfcc).max())
    np.testing.assert_allclose(logpower, np.log(np.maximum(stft.power_spectrogram(noisy_speech), 1e-10)).T, atol=1e-3)


def test_levinson_and_cepstrum():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 400))
    x = np.cumsum(x, axis=1) * 0.3 + x  # coloured
    r = np.stack([np.correlate(row, row, "full")[399 : 399 + 13] for row in x])
    a, e = fe.levinson(r, 12)
    for i in range(5):
        coeffs = scipy.linalg.solve_toeplitz(r[i, :12], -r[i, 1:13])
        np.testing.assert_allclose(a[i, 1:], coeffs, rtol=1e-6, atol=1e-9)
        assert e[i] == pytest.approx(r[i, 0] + np.dot(coeffs, r[i, 1:13]), rel=1e-9)
    # Cepstrum of the model spectrum e/|A|² by brute force (inverse FFT of its log).
    n = 2**17  # long enough that the cepstrum does not alias
    spectrum = e[:, None] / np.abs(np.fft.rfft(a, n, axis=1)) ** 2
    brute = np.fft.irfft(np.log(spectrum), n, axis=1)[:, :13]
    np.testing.assert_allclose(fe.lpc_to_cepstrum(a, e, 13), brute, atol=1e-8)


def test_rasta_plp_ignores_gain_and_fixed_channels_but_tracks_change(noisy_speech):
    """RASTA removes constant log-spectral offsets: the recording level and a fixed linear channel (here a
    first difference, +6 dB/octave) leave the features (almost) unchanged, while a change over time shows."""
    cfg = fe.FeatureConfig(kind="rasta_plp", deltas=False)
    a = fe.extract(noisy_speech, cfg)
    assert a.shape[1] == 13
    np.testing.assert_allclose(fe.extract(4.0 * noisy_speech, cfg), a, atol=1e-4 * np.abs(a).max())
    tilted = fe.extract(np.diff(noisy_speech, prepend=0.0).astype(np.float32), cfg)
    assert np.abs(tilted - a).mean() < 0.1 * np.abs(a).mean()
    # Low-pass noise that turns into high-pass noise: a transient at the switch, decaying with the 0.94 pole.
    rng = np.random.default_rng(7)
    white = rng.standard_normal(2 * SR)
    low = scipy.signal.lfilter([1, 1], [1], white)
    high = scipy.signal.lfilter([1, -1], [1], white)
    y = np.concatenate([low[:SR], high[SR:]]).astype(np.float32)
    f = fe.extract(y, cfg)
    steady = f[60:95].mean(0)
    assert np.abs(f[101:104] - steady).mean() > 4 * np.abs(f[60:95] - steady).mean()
    assert np.abs(f[101:104] - steady).mean() > 3 * np.abs(f[180:195] - f[180:195].mean(0)).mean()


def _toolbox_rastafilt(x: np.ndarray) -> np.ndarray:
    """NumPy reference of the toolbox's rastafilt.m (rastamat): causal FIR, state primed on frames 1–4, whose
    outputs are zeroed, then the pole 0.94. x: (n_bands, n_frames)."""
    numer = -np.arange(-2, 3, dtype=np.float64) / 10.0
    _, zi = scipy.signal.lfilter(numer, [1.0], x[:, :4], axis=1, zi=np.zeros((x.shape[0], 4)))
    rest = scipy.signal.lfilter(numer, [1.0, -0.94], x[:, 4:], axis=1, zi=zi)[0]
    return np.concatenate([np.zeros((x.shape[0], 4)), rest], axis=1)


def test_rasta_filter_is_the_toolbox_filter_centred():
    x = np.cumsum(np.random.default_rng(9).standard_normal((5, 400)), axis=1) * 0.1 + 3.0  # log energies
    ours, ref = fe.rasta_filter(x), _toolbox_rastafilt(x)
    # The toolbox's frame t + 2 is ours at t once the start-up (different initial states) has decayed.
    np.testing.assert_allclose(ours[:, 200:-2], ref[:, 202:], atol=1e-4)
    lag = [np.mean(np.abs(ours[:, 200:-4] - ref[:, 200 + d : 400 - 4 + d])) for d in range(5)]
    assert int(np.argmin(lag)) == 2


def test_ams_peaks_at_the_modulation_frequency():
    cfg = fe.FeatureConfig(kind="ams", deltas=False, ams_variant="centred")
    corners = np.linspace(15.625, 400.0, 17)
    rng = np.random.default_rng(4)
    t = np.arange(2 * SR) / SR
    for band in (2, 7, 12):
        fm = corners[band + 1]  # peak of triangular window `band`
        y = ((1 + np.cos(2 * np.pi * fm * t)) * rng.standard_normal(t.size)).astype(np.float32)
        ams = fe.extract(y, cfg)
        assert ams.shape == (1 + len(y) // 160, 15)
        assert int(np.argmax(np.median(ams[10:-10], axis=0))) == band
    flat = fe.extract(rng.standard_normal(t.size).astype(np.float32), cfg)
    assert np.median(flat[10:-10]).max() < np.median(ams[10:-10]).max()


def _matlab_decimate_fir(x: np.ndarray, r: int) -> np.ndarray:
    """MATLAB's decimate(x, r, 'fir'): fir1(30, 1/r) (Hamming), ends extended by odd reflection, delay
    compensated, every r-th sample (MATLAB's own choice of phase may differ by a few input samples)."""
    b = scipy.signal.firwin(31, 1.0 / r)
    ext = np.concatenate([2 * x[0] - x[15:0:-1], x, 2 * x[-1] - x[-2:-17:-1]])
    return np.convolve(ext, b, mode="valid")[::r]


def _toolbox_ams(sig: np.ndarray) -> np.ndarray:
    """NumPy reference of the toolbox's get_amsfeature_chan_fast(sig, 64) at 16 kHz: (n_frames, 15) with
    n_frames = floor(n / 160), frame 0 zero (the prepended column), frame j ≥ 1 = extract_AMS_perChan.m's
    column kk = j."""
    mf_t = np.zeros((15, 128))  # AMS_init_FFT.m, MATLAB's 1-based column 1 + b is 0-based bin b
    rows = [(1, 3, [0.25, 0.5, 0.25]), (2, 5, [0.1, 0.4, 0.4, 0.1]), (3, 6, [0.1, 0.4, 0.4, 0.1]),
            (4, 6, [0.25, 0.5, 0.25]), (4, 7, [0.1, 0.4, 0.4, 0.1]), (5, 8, [0.1, 0.4, 0.4, 0.1]),
            (6, 9, [0.1, 0.4, 0.4, 0.1]), (8, 10, [0.25, 0.5, 0.25]), (9, 12, [0.1, 0.4, 0.4, 0.1]),
            (11, 13, [0.25, 0.5, 0.25]), (13, 15, [0.25, 0.5, 0.25]), (15, 17, [0.25, 0.5, 0.25]),
            (17, 19, [0.25, 0.5, 0.25]), (20, 22, [0.25, 0.5, 0.25]), (23, 25, [0.25, 0.5, 0.25])]  # fmt: skip
    for i, (a, b, w) in enumerate(rows):
        mf_t[i, a : b + 1] = w
    n_frames_env = len(sig) // 4  # Nframes = floor(length(x) / len2), len2 = 4 samples (0.25 ms)
    kk_max = n_frames_env // 40  # KK = floor(Nframes / AMS_frame_step)
    env = np.concatenate([_matlab_decimate_fir(np.abs(sig), 4), np.zeros(128)])
    win = np.hanning(128)  # MATLAB window(@hann, 128): symmetric
    ns_ams = np.zeros((15, kk_max))
    for kk in range(1, kk_max + 1):
        start = (kk - 2) * 40  # the first frame's window hangs 40 envelope samples over the start
        frame = env[:88] * win[40:] if kk == 1 else env[start : start + 128] * win
        ns_ams[:, kk - 1] = mf_t @ np.abs(np.fft.fft(frame, 256))[:128]
    n_frame = len(sig) // 160 - 1
    return np.concatenate([np.zeros((1, 15)), ns_ams.T[:n_frame]], axis=0)


def _per_band_correlation(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    n = min(len(ours), len(ref))
    return np.array([np.corrcoef(ours[1:n, b], ref[1:n, b])[0, 1] for b in range(ref.shape[1])])


def _check_ams_against_toolbox(y: np.ndarray) -> None:
    ref = _toolbox_ams(y)
    # gain=1: the toolbox sees the waveform as it is, without speechkern's level normalisation
    ours = fe.extract(y.astype(np.float32), fe.FeatureConfig(kind="ams", deltas=False), gain=1.0)
    assert ours.shape == (1 + len(y) // 160, 15) and ref.shape == (len(y) // 160, 15)
    corr = _per_band_correlation(ours, ref)
    assert corr.min() >= 0.95, corr
    np.testing.assert_allclose(ours[1 : len(ref)], ref[1:], rtol=0.02, atol=0.02 * ref[1:].max())
    old = fe.extract(y.astype(np.float32), fe.FeatureConfig(kind="ams", deltas=False, ams_variant="centred"), gain=1.0)
    assert np.median(_per_band_correlation(old, ref)) < 0.9  # the earlier definition is a different feature


def _at_0_db(speech: np.ndarray, noise: np.ndarray) -> np.ndarray:
    noise = noise[: len(speech)].astype(np.float64)
    return speech + noise * np.sqrt(np.sum(speech.astype(np.float64) ** 2) / np.sum(noise**2))


def test_ams_is_the_toolbox_ams_on_speech_in_noise():
    from speechkern import synth

    speech = synth.synthesize(synth.TALKERS[3], 2.0, seed=11).astype(np.float64)
    noise = scipy.signal.lfilter([1.0], [1.0, -0.9], np.random.default_rng(12).standard_normal(len(speech)))
    _check_ams_against_toolbox(_at_0_db(speech, noise))


def test_ams_is_the_toolbox_ams_on_dev_speech_in_noise(dev_data):
    rows = [line.split(",") for line in (dev_data / "manifest.csv").read_text().splitlines()[1:]]
    clean = next(r[0] for r in rows if r[2] == "clean" and float(r[5]) > 3.0)
    noise = next(r[0] for r in rows if r[2] == "noise" and float(r[5]) > 4.0)
    speech, _ = sf.read(dev_data / clean, dtype="float64", frames=3 * SR)
    noise_y, _ = sf.read(dev_data / noise, dtype="float64", frames=3 * SR, always_2d=True)
    _check_ams_against_toolbox(_at_0_db(speech if speech.ndim == 1 else speech.mean(1), noise_y.mean(1)))


def test_ams_toolbox_filters_peak_at_their_modulation_frequencies():
    weights = fe.ams_toolbox_filterbank(129)
    centres = (weights * np.arange(129)[:, None]).sum(0) / weights.sum(0) * 15.625
    np.testing.assert_allclose(centres[[0, -1]], [31.25, 375.0])
    assert np.all(np.diff(centres) > 0) and np.allclose(weights.sum(0), 1.0)
    cfg = fe.FeatureConfig(kind="ams", deltas=False)
    rng = np.random.default_rng(4)
    t = np.arange(2 * SR) / SR
    for band in (6, 10, 14):  # the low bands also take the envelope's DC (no mean removal, as in the toolbox)
        y = ((1 + np.cos(2 * np.pi * centres[band] * t)) * rng.standard_normal(t.size)).astype(np.float32)
        ams = fe.extract(y, cfg)
        assert int(np.argmax(np.median(ams[10:-10, 5:], axis=0))) + 5 == band
    with pytest.raises(pydantic.ValidationError, match="31.25 Hz bins .*coarser than the 15.625 Hz"):
        fe.FeatureConfig(kind="ams", ams_frame_length=256)
    # 8 kHz audio, same 64 ms window: 7.8125 Hz bins, the same filters in Hz.
    fine = fe.ams_toolbox_filterbank(257, 7.8125)
    np.testing.assert_allclose((fine * np.arange(257)[:, None]).sum(0) * 7.8125, centres, atol=1e-9)
    np.testing.assert_allclose(fine[::2][:129] * 2, weights[:129], atol=0.06)


def test_ams_filterbank_corners():
    tri = fe.ams_filterbank(129, 15.625, 15, 15.625, 400.0)
    assert tri.shape == (129, 15)
    assert tri[0].sum() == 0.0  # DC outside every window
    assert np.all(tri[int(400 / 15.625) + 1 :] == 0.0)
    assert np.all(tri.max(axis=0) > 0.5)


def test_deltas_on_small_arrays():
    t = np.arange(10, dtype=np.float64)
    f = np.stack([3.0 * t + 1.0, np.full(10, 5.0)], axis=1)
    d = fe.deltas(f, width=2)
    np.testing.assert_allclose(d[2:-2, 0], 3.0)  # slope in the interior
    np.testing.assert_allclose(d[:, 1], 0.0)
    # Edges repeat the first frame: Δ_0 = (1·(F1 − F0) + 2·(F2 − F0)) / 10 = (3 + 12) / 10.
    assert d[0, 0] == pytest.approx(1.5)
    assert d[1, 0] == pytest.approx((1 * (f[2, 0] - f[0, 0]) + 2 * (f[3, 0] - f[0, 0])) / 10)
    # Away from the edges these are librosa's deltas.
    x = np.random.default_rng(5).standard_normal((30, 4))
    ref = librosa.feature.delta(x.T, width=5, axis=-1).T
    np.testing.assert_allclose(fe.deltas(x, 2)[2:-2], ref[2:-2], atol=1e-10)
    both = fe.add_deltas(x.astype(np.float32))
    assert both.shape == (30, 8) and both.dtype == np.float32
    np.testing.assert_allclose(both[:, :4], x, rtol=1e-6)


def _toolbox_deltas(x: np.ndarray, w: int = 9) -> np.ndarray:
    """NumPy reference of the OSU toolbox's deltas.m (rastamat): x is (dim, n_frames) as in MATLAB."""
    hlen = w // 2
    win = np.arange(hlen, -hlen - 1, -1, dtype=np.float64)  # hlen:-1:-hlen
    xx = np.concatenate([np.repeat(x[:, :1], hlen, 1), x, np.repeat(x[:, -1:], hlen, 1)], axis=1)
    d = scipy.signal.lfilter(win, [1.0], xx, axis=1)  # filter(win, 1, xx, [], 2)
    return d[:, 2 * hlen : 2 * hlen + x.shape[1]]


def test_default_deltas_are_the_toolbox_nine_frame_window():
    x = np.random.default_rng(8).standard_normal((40, 3))
    assert fe.FeatureConfig().delta_width == 4
    ref = _toolbox_deltas(x.T).T
    np.testing.assert_allclose(fe.deltas(x) * 60.0, ref, atol=1e-10)  # every frame, edges included
    assert np.corrcoef(fe.deltas(x).ravel(), ref.ravel())[0, 1] > 0.999999
    np.testing.assert_allclose(fe.add_deltas(x)[:, 3:], fe.deltas(x, 4))
    assert not np.allclose(fe.deltas(x, 2), fe.deltas(x, 4))  # the width is a setting


def test_context_windows_on_small_arrays():
    f = np.arange(10, dtype=np.float32).reshape(5, 2)  # frame t = [2t, 2t + 1]
    ctx = fe.stack_context(f, 1)
    assert ctx.shape == (5, 6)
    np.testing.assert_array_equal(ctx[2], [2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(ctx[0], [0, 1, 0, 1, 2, 3])  # first frame repeated
    np.testing.assert_array_equal(ctx[4], [6, 7, 8, 9, 8, 9])
    assert fe.stack_context(f, 2).shape == (5, 10)
    np.testing.assert_array_equal(fe.stack_context(f, 0), f)
    cfg = fe.FeatureConfig()
    big = fe.stack_context(np.zeros((7, fe.base_dim(cfg)), np.float32), cfg.context)
    assert big.shape == (7, fe.input_dim(cfg))


def test_feature_stats_streaming_and_roundtrip():
    rng = np.random.default_rng(6)
    blocks = [rng.normal(5.0, 3.0, size=(n, 4)) for n in (7, 100, 1, 55)]
    for b in blocks:
        b[:, 3] = 2.0  # a constant dimension
    stats = fe.FeatureStats()
    for b in blocks:
        stats.update(b)
    stats.finalize()
    allx = np.concatenate(blocks)
    np.testing.assert_allclose(stats.mean, allx.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std[:3], allx.std(0)[:3], rtol=1e-12)
    assert stats.std[3] == 1.0 and stats.count == len(allx) and stats.dim == 4
    fitted = fe.FeatureStats.fit(allx)
    np.testing.assert_allclose(fitted.mean, stats.mean, rtol=1e-12)
    np.testing.assert_allclose(fe.FeatureStats.fit(iter(blocks)).std, stats.std, rtol=1e-12)
    z = stats.normalize(allx)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:, :3].mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(z[:, :3].std(0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(stats.normalize(fe.stack_context(allx, 2))[:, 8:12], z, rtol=1e-6, atol=1e-6)
    again = fe.FeatureStats.from_dict({k: torch.as_tensor(v) for k, v in stats.to_dict("feat.").items()}, "feat.")
    np.testing.assert_array_equal(again.normalize(allx), z)
    assert again.count == stats.count
    np.testing.assert_array_equal(fe.FeatureStats(mean=stats.mean, std=stats.std).normalize(allx), z)
    with pytest.raises(SpeechkernError, match="dimension"):
        stats.normalize(np.zeros((2, 5)))
    with pytest.raises(SpeechkernError, match="no training frames"):
        fe.FeatureStats().finalize()
    with pytest.raises(SpeechkernError, match="malformed"):
        fe.FeatureStats(mean=np.zeros(3), std=np.array([1.0, 0.0, 1.0]))


def test_extract_batch_matches_extract(noisy_speech):
    cfg = fe.FeatureConfig()
    signals = [noisy_speech, noisy_speech[:5000], 0.5 * noisy_speech[3000:]]
    expected = [fe.extract(y, cfg) for y in signals]
    for n_jobs, backend in ((1, "threads"), (2, "threads"), (2, "processes")):
        got = fe.extract_batch(signals, cfg, n_jobs=n_jobs, backend=backend)
        assert len(got) == 3
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_extract_on_dev_speech(dev_data):
    path = sorted((dev_data / "clean").rglob("*.flac"))[5]
    y, _ = sf.read(path, dtype="float32")
    f = fe.extract(y, fe.FeatureConfig())
    assert f.shape == (1 + len(y) // 160, 246) and np.all(np.isfinite(f))
    assert np.all(f[:, :123].std(axis=0) > 0)  # no dead dimension


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_features_match_cpu(noisy_speech):
    cfg = fe.FeatureConfig()
    cpu = fe.extract(noisy_speech, cfg, device="cpu")
    gpu = fe.extract(noisy_speech, cfg, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3 * np.abs(cpu).max())


@pytest.mark.parametrize("key", ["level_dbfs", "gf_power", "fmin", "fmax", "ams_fmin", "ams_fmax", "floor_window_s"])
@pytest.mark.parametrize("value", [float("nan"), float("-inf"), float("inf")])
def test_feature_settings_that_are_no_numbers_are_refused_as_such(key, value):
    """level_dbfs = -inf was accepted (every feature 0); NaN was refused as 'should be less than or equal to 10'."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="Input should be a finite number"):
        fe.FeatureConfig(**{key: value})


@pytest.mark.parametrize("value", [-100.5, -200.0, -500.0])
def test_a_level_so_low_that_the_features_underflow_is_refused(value):
    """features.level_dbfs = -500 was accepted: the waveform scaled to 10^-25 RMS gave float32 spectra that
    underflow, 70 % of the feature values 0 (18 % at -200 dBFS); -100 dBFS, below 16-bit audio's floor, still works."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="greater than or equal to -100"):
        fe.FeatureConfig(level_dbfs=value)
    y = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    feats = fe.extract(y, fe.FeatureConfig(level_dbfs=-100.0, kind="gf+mfcc"))
    assert np.isfinite(feats).all() and (feats == 0).mean() < 0.01
