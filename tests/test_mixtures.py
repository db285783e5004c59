"""Mixing at an exact SNR, the noise split, generated noises, and manifests that rebuild mixtures exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speechkern import audio, mixtures
from speechkern.errors import SpeechkernError


def _snr(clean: np.ndarray, noise: np.ndarray) -> float:
    return 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2))


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5])
def test_mix_at_snr_is_exact_over_the_utterance(snr):
    rng = np.random.default_rng(0)
    clean = rng.standard_normal(16000).astype(np.float32) * 0.1
    noise = rng.standard_normal(16000).astype(np.float32) * 0.3
    mixture, scaled, gain = mixtures.mix_at_snr(clean, noise, snr)
    assert _snr(clean, scaled) == pytest.approx(snr, abs=1e-3)
    np.testing.assert_allclose(mixture, clean + scaled, atol=1e-6)
    assert gain > 0


def test_silent_inputs_are_refused():
    with pytest.raises(SpeechkernError, match="silent"):
        mixtures.mix_at_snr(np.zeros(100, np.float32), np.ones(100, np.float32), 0.0)
    with pytest.raises(SpeechkernError, match="silent"):
        mixtures.mix_at_snr(np.ones(100, np.float32), np.zeros(100, np.float32), 0.0)


def test_a_silent_recording_in_a_corpus_is_named(tmp_path):
    """Training on a folder holding a silent file stopped with 'the clean speech is silent (all zeros)' (or 'the
    noise segment is silent; choose another noise or offset'): no file named, and no offset to choose."""
    sr, speech = 16000, np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    draw = dict(mixture_id="x", split="train", noise_name="n", snr_db=0.0, seed=0, sr=sr)
    with pytest.raises(SpeechkernError, match=r"^c\.wav: the clean speech is silent .*remove this one from the corpus"):
        mixtures.draw_mixture(clean_path="c.wav", clean=np.zeros(sr, np.float32), noise_path="n.wav",
                              noise=speech, **draw)  # fmt: skip
    with pytest.raises(SpeechkernError, match=r"^n\.wav: the noise segment at sample \d+ \(16000 samples\) is "
                       r"silent .*recipe override data\.seed=N"):  # fmt: skip
        mixtures.draw_mixture(clean_path="c.wav", clean=speech, noise_path="n.wav",
                              noise=np.zeros(4 * sr, np.float32), **draw)  # fmt: skip
    audio.save(tmp_path / "quiet.wav", np.zeros(sr, np.float32), sr)
    audio.save(tmp_path / "speech.wav", speech * 0.1, sr)
    for clean, noise, named in (("quiet", "speech", "quiet"), ("speech", "quiet", "quiet")):
        with pytest.raises(SpeechkernError, match=rf"^{tmp_path}/{named}\.wav: the (clean speech|noise segment)"):
            mixtures.mix_files(tmp_path / f"{clean}.wav", tmp_path / f"{noise}.wav", 0.0)


def test_noise_too_short_to_loop_is_refused(tmp_path):
    """A noise file of one sample, looped under 3 s of speech, was a constant offset mixed 'at 0 dB SNR'."""
    rng = np.random.default_rng(0)
    audio.save(tmp_path / "speech.wav", rng.standard_normal(48000).astype(np.float32) * 0.1, 16000)
    for n in (1, 1599):
        audio.save(tmp_path / "n.wav", rng.standard_normal(n).astype(np.float32) * 0.1, 16000, overwrite=True)
        with pytest.raises(SpeechkernError, match=rf"n.wav: {n} samples \(.* ms\) at 16000 Hz is too short to loop"):
            mixtures.mix_files(tmp_path / "speech.wav", tmp_path / "n.wav", 0.0)
    audio.save(tmp_path / "n.wav", rng.standard_normal(1600).astype(np.float32) * 0.1, 16000, overwrite=True)
    assert len(mixtures.mix_files(tmp_path / "speech.wav", tmp_path / "n.wav", 0.0)[0]) == 48000


def test_speech_or_noise_too_short_to_mix_is_refused(tmp_path):
    """`speechkern mix` of 10 samples of speech (with 1 s of noise, or 10 samples of noise) wrote a 0.00 s mixture
    'at 0 dB SNR' and exited 0; the noise check only looked at noise shorter than the speech."""
    rng = np.random.default_rng(0)
    for name, n in (("c10", 10), ("c1599", 1599), ("n10", 10), ("speech", 16000), ("noise", 16000)):
        audio.save(tmp_path / f"{name}.wav", rng.standard_normal(n).astype(np.float32) * 0.1, 16000)
    for clean, noise, named in (("c10", "noise", "c10"), ("c1599", "noise", "c1599"), ("c10", "n10", "c10")):
        with pytest.raises(SpeechkernError, match=rf"^{tmp_path}/{named}\.wav: \d+ samples .* is too short to mix; "
                           r"give at least 0\.1 s \(1600 samples\) of speech$"):  # fmt: skip
            mixtures.mix_files(tmp_path / f"{clean}.wav", tmp_path / f"{noise}.wav", 0.0)
    with pytest.raises(SpeechkernError, match=rf"^{tmp_path}/n10\.wav: 10 samples .* at least 0\.1 s \(1600 samples\)"):
        mixtures.mix_files(tmp_path / "speech.wav", tmp_path / "n10.wav", 0.0)
    assert len(mixtures.mix_files(tmp_path / "speech.wav", tmp_path / "noise.wav", 0.0)[0]) == 16000


@pytest.mark.parametrize(
    "val_share, ranges",
    [
        (0.0, {"train": (0, 32000), "val": (0, 32000), "test": (32000, 64000)}),
        (0.25, {"train": (0, 24000), "val": (24000, 32000), "test": (32000, 64000)}),  # validation never trained on
    ],
)
def test_train_and_test_noise_come_from_different_halves(tmp_path, val_share, ranges):
    sr = 16000
    noise = np.arange(sr * 4, dtype=np.float32)  # each sample's value is its index
    clean = np.random.default_rng(2).standard_normal(sr * 3).astype(np.float32)  # longer than a part: wraps
    for split, (lo, hi) in ranges.items():
        assert mixtures.split_range(len(noise), split, val_share) == (lo, hi)
        for seed in range(20):
            m = mixtures.draw_mixture(mixture_id="x", split=split, clean_path="c.wav", clean=clean, noise_path="n.wav",
                                      noise_name="n", noise=noise, snr_db=0.0, seed=seed, sr=sr,
                                      val_share=val_share)  # fmt: skip
            assert (m.noise_start, m.noise_stop) == (lo, hi)
            _, _, scaled = m.build_from(clean, noise)
            used = np.round(scaled.astype(np.float64) / m.gain).astype(int)
            assert lo <= used.min() and used.max() < hi, "a noise sample from another split's part was used"
    with pytest.raises(SpeechkernError, match=r"n.wav: too short .*val part 800\); use longer noise or a smaller"):
        mixtures.draw_mixture(mixture_id="x", split="val", clean_path="c.wav", clean=clean, noise_path="n.wav",
                              noise_name="n", noise=noise[:3200], snr_db=0.0, seed=0, sr=sr, val_share=0.5)  # fmt: skip


def test_manifest_rebuilds_the_same_mixture(tmp_path):
    sr = 16000
    rng = np.random.default_rng(3)
    clean = (rng.standard_normal(sr) * 0.1).astype(np.float32)
    noise = (rng.standard_normal(sr * 5) * 0.1).astype(np.float32)
    audio.save(tmp_path / "c.wav", clean, sr, subtype="FLOAT")
    audio.save(tmp_path / "n.wav", noise, sr, subtype="FLOAT")
    m = mixtures.draw_mixture(mixture_id="u1", split="test", clean_path=str(tmp_path / "c.wav"), clean=clean,
                              noise_path=str(tmp_path / "n.wav"), noise_name="white", noise=noise, snr_db=-5.0,
                              seed=11, sr=sr)  # fmt: skip
    mixtures.write_manifest(tmp_path / "test.jsonl", [m])
    (again,) = mixtures.read_manifest(tmp_path / "test.jsonl")
    assert again == m
    mix1, c1, n1 = m.build()
    mix2, c2, n2 = again.build()
    np.testing.assert_array_equal(mix1, mix2)
    assert _snr(c1, n1) == pytest.approx(-5.0, abs=1e-3)
    assert m.condition == "white_-5dB"


def test_paired_mixture_noise_is_noisy_minus_clean(tmp_path):
    rng = np.random.default_rng(4)
    clean = (rng.standard_normal(8000) * 0.1).astype(np.float32)
    noisy = clean + (rng.standard_normal(8000) * 0.05).astype(np.float32)
    m = mixtures.paired_mixture(mixture_id="p1", split="train", clean_path="c", clean=clean, noisy_path="n",
                                noisy=noisy, condition="vb", sr=16000)  # fmt: skip
    mix, c, n = m.build_from(clean, noisy)
    np.testing.assert_allclose(mix, noisy)
    np.testing.assert_allclose(c + n, noisy, atol=1e-6)
    assert m.snr_db == pytest.approx(_snr(clean, noisy - clean), abs=1e-3)


def test_speech_shaped_noise_follows_the_speech_spectrum():
    from scipy.signal import welch

    rng = np.random.default_rng(5)
    # "speech" with a strong low-pass tilt
    speech = np.cumsum(rng.standard_normal(16000 * 4)).astype(np.float32)
    speech -= np.convolve(speech, np.ones(50) / 50, mode="same")
    spectrum = mixtures.long_term_spectrum([speech])
    ssn = mixtures.speech_shaped_noise(spectrum, 16000 * 4, seed=0)
    _, p_speech = welch(speech, nperseg=1024)
    _, p_ssn = welch(ssn, nperseg=1024)
    corr = np.corrcoef(np.log(p_speech[1:] + 1e-12), np.log(p_ssn[1:] + 1e-12))[0, 1]
    assert corr > 0.95
    assert np.sqrt(np.mean(ssn**2)) == pytest.approx(0.05, rel=1e-3)
    assert not np.array_equal(ssn, mixtures.speech_shaped_noise(spectrum, 16000 * 4, seed=1))


def test_babble_sums_several_talkers():
    rng = np.random.default_rng(6)
    talkers = [[(rng.standard_normal(8000) * (i + 1)).astype(np.float32)] for i in range(8)]
    b = mixtures.babble(talkers, 16000, seed=0, n_talkers=6)
    assert b.shape == (16000,) and np.isfinite(b).all()
    assert np.sqrt(np.mean(b**2)) == pytest.approx(0.05, rel=1e-3)
    with pytest.raises(SpeechkernError, match="at least 4 talkers"):
        mixtures.babble(talkers[:3], 16000, seed=0)
    with pytest.raises(SpeechkernError, match=r"at least 6 talkers .* parts: train, val, test\); 5 given"):
        mixtures.babble(talkers[:5], 16000, seed=0, val_share=0.2)
    three = mixtures.babble(talkers, 16000, seed=0, n_talkers=6, val_share=0.2)
    for start, stop in mixtures.parts(16000, 0.2):  # each part level-normalised on its own
        assert np.sqrt(np.mean(three[start:stop] ** 2)) == pytest.approx(0.05, rel=1e-3)


def _talker(rng: np.random.Generator, n_utterances: int = 3, seconds: float = 1.5) -> list[np.ndarray]:
    """Noise-excited resonances under a syllable-rate envelope: speech-like, and fast to make."""
    from scipy.signal import lfilter

    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    out = []
    for _ in range(n_utterances):
        pole = 0.97 * np.exp(1j * 2 * np.pi * rng.uniform(300, 3000) / 16000)
        voice = lfilter([1.0], np.poly([pole, np.conj(pole)]).real, rng.standard_normal(n))
        envelope = (1 + np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 2 * np.pi))) ** 2
        out.append((voice * envelope).astype(np.float32))
    return out


def _max_correlation(segment: np.ndarray, other: np.ndarray) -> float:
    """Largest normalised cross-correlation |r| of ``segment`` against every equally long window of ``other``."""
    from scipy.signal import correlate

    seg = segment.astype(np.float64) - segment.mean()
    ref = other.astype(np.float64)
    num = correlate(ref, seg, mode="valid", method="fft")
    power = np.concatenate([[0.0], np.cumsum(ref**2)])
    window = power[len(seg) :] - power[: -len(seg)]
    return float(np.max(np.abs(num) / (np.linalg.norm(seg) * np.sqrt(np.maximum(window, 1e-20)))))


def test_babble_test_half_shares_no_talker_with_the_training_half():
    rng = np.random.default_rng(11)
    talkers = [_talker(rng) for _ in range(12)]  # 4.5 s of speech per talker: streams repeat within a half
    sr, n = 16000, 16000 * 20
    b = mixtures.babble(talkers, n, seed=3, n_talkers=6)
    start, stop = mixtures.segment_range(n, "second")
    train, test = b[:start], b[start:stop]
    segments = [test[i : i + 3 * sr] for i in range(0, len(test) - 3 * sr + 1, 3 * sr)]
    found = max(_max_correlation(s, train) for s in segments)
    # Chance: the same statistic against babble of 6 talkers never used here.
    others = [_talker(np.random.default_rng(100 + i)) for i in range(12)]
    unrelated = mixtures.babble(others, n, seed=4, n_talkers=6)[: n // 2]
    chance = max(_max_correlation(s, unrelated) for s in segments)
    assert found < 1.5 * chance, (found, chance)
    # The check has power: babble looping each talker's stream over the whole noise (the earlier construction)
    # repeats training-half speech in the test half, and is caught.
    looped = np.zeros(n)
    for utts in talkers[:6]:
        stream = np.concatenate(utts).astype(np.float64)
        looped += np.resize(stream, n) / np.sqrt(np.mean(stream**2))
    assert max(_max_correlation(looped[start + i : start + i + 3 * sr], looped[:start]) for i in (0, 3 * sr)) > 0.5


def test_babble_validation_part_shares_no_talker_with_training_or_test():
    """With data.val_noise_share the validation part of babble is of its own talkers, as the test half is."""
    rng = np.random.default_rng(12)
    talkers = [_talker(rng) for _ in range(12)]
    sr, n = 16000, 16000 * 24
    b = mixtures.babble(talkers, n, seed=5, n_talkers=4, val_share=0.5)
    (t0, t1), (v0, v1), (s0, s1) = mixtures.parts(n, 0.5)
    assert (t0, t1, v0, v1, s0, s1) == (0, 6 * sr, 6 * sr, 12 * sr, 12 * sr, 24 * sr)
    val = b[v0:v1]
    segments = [val[i : i + 2 * sr] for i in range(0, len(val) - 2 * sr + 1, 2 * sr)]
    others = [_talker(np.random.default_rng(200 + i)) for i in range(12)]
    chance = max(_max_correlation(s, mixtures.babble(others, n, seed=6, n_talkers=4)[: n // 2]) for s in segments)
    for lo, hi in ((t0, t1), (s0, s1)):
        assert max(_max_correlation(s, b[lo:hi]) for s in segments) < 1.5 * chance
    # The check has power: without the share, the same talkers' streams (4.5 s, repeating) fill the whole first
    # half, and the same range is caught repeating the training range.
    shared = mixtures.babble(talkers, n, seed=5, n_talkers=4)
    assert max(_max_correlation(shared[v0 + i : v0 + i + 2 * sr], shared[t0:t1]) for i in (0, 2 * sr)) > 0.5


def test_babble_with_a_validation_part_falls_back_to_utterances_as_voices(tmp_path):
    """With data.val_noise_share, babble needs 6 voices; 4 or 5 talkers stopped the run, where utterances of
    those talkers could serve as the voices (as they already did below 4 talkers without the share)."""
    import soundfile as sf

    from speechkern import dataset
    from speechkern.corpora import Utterance
    from speechkern.recipe import load_recipe

    rng = np.random.default_rng(13)
    train = []
    for t in range(4):
        for u, y in enumerate(_talker(rng, n_utterances=2, seconds=1.0)):
            path = tmp_path / f"t{t}-{u}.wav"
            sf.write(path, y / np.abs(y).max() * 0.5, 16000)
            train.append(Utterance(id=f"t{t}-{u}", path=str(path), talker=f"t{t}"))
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "demo",
                         ["data.generated_noise_s=6", "data.val_noise_share=0.2"])  # fmt: skip
    path = dataset._generated_noise("babble", recipe, train, tmp_path / "run")
    y, _ = audio.load(path, sr=16000)
    for start, stop in mixtures.parts(len(y), 0.2):
        assert np.sqrt(np.mean(y[start:stop] ** 2)) == pytest.approx(0.05, rel=1e-3)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3"])
def test_a_bad_seed_is_one_line_naming_it(tmp_path, seed):
    """mix_files(seed=-1) ended in NumPy's ValueError ('expected non-negative integer'); the oracle and the noise
    generators took their seeds the same way."""
    from speechkern.oracle import oracle

    rng = np.random.default_rng(0)
    for name in ("clean", "noise"):
        audio.save(tmp_path / f"{name}.wav", 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
    clean, noise = tmp_path / "clean.wav", tmp_path / "noise.wav"
    expected = rf"^seed={seed!r}: expected a whole number ≥ 0"
    with pytest.raises(SpeechkernError, match=expected):
        mixtures.mix_files(clean, noise, 0.0, seed=seed)
    with pytest.raises(SpeechkernError, match=expected):
        oracle(clean, noise, 0.0, seed=seed)
    with pytest.raises(SpeechkernError, match=expected):
        mixtures.speech_shaped_noise(np.ones(257), 1000, seed)
    assert mixtures.mix_files(clean, noise, 0.0, seed=np.int64(3))[4]["seed"] == 3
