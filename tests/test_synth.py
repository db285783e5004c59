"""The speech synthesiser behind the demo recipe: determinism, levels, pitch, energy gaps, spectrum, the API."""

from __future__ import annotations

import dataclasses
import logging

import librosa
import numpy as np
import pytest
from scipy import signal

from speechkern import synth
from speechkern.errors import SpeechkernError

SR = 16000


def frame_db(y: np.ndarray, frame: int = 320, hop: int = 160) -> np.ndarray:
    """Frame energies (dB re. the loudest frame) of 20 ms frames every 10 ms."""
    frames = librosa.util.frame(np.pad(y.astype(np.float64), (0, frame)), frame_length=frame, hop_length=hop)
    energy = (frames**2).mean(axis=0)
    return 10 * np.log10(energy / energy.max() + 1e-20)


@pytest.fixture(scope="module")
def samples() -> dict[str, np.ndarray]:
    """One 3 s utterance per talker (seed 0)."""
    return {t.name: synth.synthesize(t, 3.0, seed=0) for t in synth.TALKERS}


def test_same_seed_same_samples_other_seed_other_samples():
    talker = synth.TALKERS[1]
    a = synth.synthesize(talker, 1.5, seed=7)
    np.testing.assert_array_equal(a, synth.synthesize(talker, 1.5, seed=7))
    assert not np.allclose(a, synth.synthesize(talker, 1.5, seed=8))
    assert not np.allclose(a, synth.synthesize(synth.TALKERS[4], 1.5, seed=7))


@pytest.mark.parametrize(("duration_s", "sr"), [(1.0, 16000), (2.3456, 16000), (0.73, 8000), (1.21, 22050)])
def test_length_dtype_range_and_level(duration_s, sr):
    y = synth.synthesize(synth.TALKERS[3], duration_s, seed=3, sr=sr)
    assert y.dtype == np.float32
    assert y.shape == (round(duration_s * sr),)
    assert np.isfinite(y).all()
    assert np.abs(y).max() <= 1.0
    assert np.sqrt(np.mean(y.astype(np.float64) ** 2)) == pytest.approx(synth.RMS_LEVEL, rel=1e-3)


def test_shorter_than_a_syllable_is_quiet_but_valid():
    y = synth.synthesize(synth.TALKERS[0], 0.01, seed=1)
    assert y.shape == (160,) and y.dtype == np.float32 and np.isfinite(y).all()
    assert np.abs(y).max() < 0.01  # only the noise floor


def test_talkers_are_distinct_and_varied():
    assert len(synth.TALKERS) >= 6
    assert len({t.name for t in synth.TALKERS}) == len(synth.TALKERS)
    f0s = sorted(t.f0_hz for t in synth.TALKERS)
    assert sum(f < 150 for f in f0s) >= 3 and sum(f > 180 for f in f0s) >= 3
    assert len({t.tract_scale for t in synth.TALKERS}) == len(synth.TALKERS)
    assert len({t.rate_syl_s for t in synth.TALKERS}) >= 3


def test_median_f0_matches_each_talker_and_orders_them(samples):
    medians = []
    for talker in synth.TALKERS:
        y = samples[talker.name].astype(np.float64)
        f0 = librosa.yin(y, fmin=60, fmax=400, sr=SR, frame_length=1024, hop_length=160)
        spec = np.abs(librosa.stft(y, n_fft=1024, hop_length=160)) ** 2
        freqs = librosa.fft_frequencies(sr=SR, n_fft=1024)
        low_share = spec[freqs < 1000].sum(axis=0) / spec.sum(axis=0)
        level = 10 * np.log10(spec.sum(axis=0) / spec.sum(axis=0).max())
        voiced = (level > -25) & (low_share > 0.5)  # loud, low-frequency dominated frames: vowels
        assert voiced.sum() > 50, talker.name
        medians.append(float(np.median(f0[voiced])))
        assert medians[-1] == pytest.approx(talker.f0_hz, rel=0.15), talker.name
    # Distinguishable: the estimated pitches sort the talkers exactly as configured.
    assert np.argsort(medians).tolist() == np.argsort([t.f0_hz for t in synth.TALKERS]).tolist()


def test_energy_has_gaps_and_syllable_rhythm():
    talker = synth.TALKERS[0]
    db = frame_db(synth.synthesize(talker, 10.0, seed=5))
    assert np.percentile(db, 95) - np.percentile(db, 5) > 20.0
    assert (db < -40).mean() > 0.08, "expected silent pauses"
    assert (db > -20).mean() > 0.3, "expected plenty of loud (voiced) frames"
    # Syllable nuclei: energy peaks that stand 6 dB above their surroundings, counted per second of speech.
    smoothed = np.convolve(db, np.ones(3) / 3, mode="same")
    peaks, _ = signal.find_peaks(smoothed, prominence=6, height=-30)
    speaking_s = (db > -30).sum() * 0.01
    assert 1.5 < len(peaks) / speaking_s < 7.0


def test_long_term_spectrum_mostly_below_4khz_with_fricatives_above(samples):
    y = np.concatenate(list(samples.values())).astype(np.float64)
    f, psd = signal.welch(y, SR, nperseg=1024)
    low, high = psd[f < 4000].sum(), psd[f >= 4000].sum()
    assert low / (low + high) > 0.9
    assert high / (low + high) > 1e-3
    # Fricatives: loud frames whose energy lies mostly above 4 kHz.
    spec = np.abs(librosa.stft(y, n_fft=512, hop_length=160)) ** 2
    freqs = librosa.fft_frequencies(sr=SR, n_fft=512)
    level = 10 * np.log10(spec.sum(axis=0) / spec.sum(axis=0).max())
    fricative = (level > -30) & (spec[freqs >= 4000].sum(axis=0) > spec[freqs < 4000].sum(axis=0))
    assert fricative.mean() > 0.02


def test_tract_scale_raises_formants():
    base = dataclasses.replace(synth.TALKERS[0], breathiness=0.0)
    short = dataclasses.replace(base, tract_scale=1.3)
    centroids = []
    for talker in (base, short):
        y = synth.synthesize(talker, 3.0, seed=11).astype(np.float64)
        centroid = librosa.feature.spectral_centroid(y=y, sr=SR, n_fft=1024, hop_length=160)[0]
        loud = frame_db(y)[: len(centroid)] > -20
        centroids.append(np.median(centroid[loud]))
    assert centroids[1] / centroids[0] > 1.1


def test_utterances_round_robin_seeds_and_ids(caplog):
    with caplog.at_level(logging.INFO, logger="speechkern"):
        utts = synth.utterances(7, seed=3, min_duration_s=0.5, max_duration_s=1.0)
    assert [uid for uid, _ in utts] == [f"{synth.TALKERS[i % 6].name}-{i:04d}" for i in range(7)]
    assert [synth.talker_of(uid) for uid, _ in utts] == [synth.TALKERS[i % 6].name for i in range(7)]
    for _, y in utts:
        assert y.dtype == np.float32 and round(0.5 * SR) <= len(y) <= round(1.0 * SR)
    assert len({len(y) for _, y in utts}) > 1, "durations should vary"
    assert any(getattr(r, "progress", None) is not None for r in caplog.records)
    # Utterance i depends only on (seed, i): a shorter list is a prefix, another seed differs.
    again = synth.utterances(3, seed=3, min_duration_s=0.5, max_duration_s=1.0)
    for (uid_a, a), (uid_b, b) in zip(utts[:3], again, strict=True):
        assert uid_a == uid_b
        np.testing.assert_array_equal(a, b)
    other = synth.utterances(1, seed=4, min_duration_s=0.5, max_duration_s=1.0)
    assert other[0][1].shape != utts[0][1].shape or not np.allclose(other[0][1], utts[0][1])


def test_utterances_custom_talkers_and_rate():
    talkers = synth.TALKERS[3:5]
    utts = synth.utterances(3, seed=0, sr=8000, talkers=talkers, min_duration_s=0.5, max_duration_s=0.5)
    assert [synth.talker_of(uid) for uid, _ in utts] == ["talker3", "talker4", "talker3"]
    assert all(len(y) == 4000 for _, y in utts)


def test_bad_input_raises_clear_errors():
    t = synth.TALKERS[0]
    with pytest.raises(SpeechkernError, match="duration_s"):
        synth.synthesize(t, 0.0, seed=0)
    with pytest.raises(SpeechkernError, match="duration_s"):
        synth.synthesize(t, float("nan"), seed=0)
    with pytest.raises(SpeechkernError, match="shorter than one sample"):
        synth.synthesize(t, 1e-6, seed=0)
    with pytest.raises(SpeechkernError, match="sample rate"):
        synth.synthesize(t, 1.0, seed=0, sr=4000)
    with pytest.raises(SpeechkernError, match="0 or more"):
        synth.utterances(-1, seed=0)
    with pytest.raises(SpeechkernError, match="min_duration_s"):
        synth.utterances(2, seed=0, min_duration_s=3.0, max_duration_s=2.0)
    with pytest.raises(SpeechkernError, match="no talkers"):
        synth.utterances(2, seed=0, talkers=())
    with pytest.raises(SpeechkernError, match="not of the form"):
        synth.talker_of("talker3")
    with pytest.raises(SpeechkernError, match="breathiness"):
        synth.Talker("x", 100.0, 4.0, 1.0, 4.0, breathiness=2.0)
    with pytest.raises(SpeechkernError, match="f0_hz"):
        synth.Talker("x", 0.0, 4.0, 1.0, 4.0, breathiness=0.1)


def test_sixty_seconds_synthesise_whole():
    # Speed is measured by benchmarks/feature_speed.py, not here: a timed assertion fails on a busy machine.
    y = synth.synthesize(synth.TALKERS[2], 60.0, seed=1)
    assert len(y) == 60 * SR
    assert np.all(np.isfinite(y)) and np.abs(y).max() > 0
