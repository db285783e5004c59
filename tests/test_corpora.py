"""Corpus readers for TIMIT, NOISEX-92, HINT and VoiceBank-DEMAND on miniature corpora in the real layouts.

The builders below write small corpora from generated audio (synthetic talkers, filtered noise): TIMIT as NIST
SPHERE files written by soundfile, NOISEX-92 at 19.98 kHz in several formats and spellings, VoiceBank-DEMAND
at 48 kHz. tests/test_recipes.py imports them to run the recipes end to end.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from speechkern import audio, synth
from speechkern.corpora import hint, load_splits, noisex, timit, voicebank
from speechkern.dataset import prepare_noises
from speechkern.errors import SpeechkernError
from speechkern.recipe import DataConfig, validate_recipe

SR = 16000
ROOT_VARIABLES = [f"{p}{c}_ROOT" for c in ("TIMIT", "NOISEX", "HINT", "VOICEBANK") for p in ("", "SPEECHKERN_")]

# Speakers of the miniature TIMIT: (region, speaker, SI/SX sentences). MDAB0 and FPAS0 are core-test speakers.
TIMIT_TRAIN = [
    ("DR1", "FCJF0", ("SI1027", "SX127", "SX217")),
    ("DR1", "MDPK0", ("SI1053", "SX153", "SX243")),
    ("DR2", "FAEM0", ("SI1392", "SX42", "SX132")),
    ("DR2", "MARC0", ("SI1188", "SX108", "SX198")),
]
TIMIT_TEST = [
    ("DR1", "MDAB0", ("SI1039", "SX139")),
    ("DR2", "FPAS0", ("SI1272", "SX154")),
    ("DR1", "FAKS0", ("SI943", "SX133")),  # not a core-test speaker
]


def speech(n: int, seed: int, sr: int = SR) -> list[np.ndarray]:
    """``n`` short synthetic utterances (1.0–1.4 s) at ``sr`` Hz."""
    ys = [y for _, y in synth.utterances(n, seed=seed, min_duration_s=1.0, max_duration_s=1.4)]
    return [audio.resample(y, SR, sr) for y in ys]


def noise_signal(seconds: float, sr: int, seed: int, band: tuple[float, float]) -> np.ndarray:
    """Band-passed, slowly modulated noise (a stand-in for a NOISEX-92 recording), peak 0.5."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    sos = signal.butter(4, band, "bandpass", fs=sr, output="sos")
    y = signal.sosfilt(sos, rng.standard_normal(n)) * (1.0 + 0.5 * np.sin(2 * np.pi * 3.0 * np.arange(n) / sr))
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


def build_timit(root: Path, upper: bool = True, converted: bool = False) -> Path:
    """A TIMIT-like tree: TRAIN and TEST with DRn/<speaker>/<sentence>.WAV in NIST SPHERE (PCM 16 bit, 16 kHz).

    Every speaker also gets an SA1 sentence (to be left out) and a PHN transcription file (to be ignored);
    ``upper=False`` writes every name in lower case; ``converted`` adds RIFF copies named ``<sentence>.WAV.wav``.
    """
    case = str.upper if upper else str.lower
    seed = 0
    for split, speakers in (("TRAIN", TIMIT_TRAIN), ("TEST", TIMIT_TEST)):
        for region, speaker, sentences in speakers:
            folder = root / case(split) / case(region) / case(speaker)
            folder.mkdir(parents=True, exist_ok=True)
            seed += 1
            for name, y in zip(("SA1", *sentences), speech(len(sentences) + 1, seed), strict=True):
                sf.write(folder / case(f"{name}.WAV"), y, SR, format="NIST", subtype="PCM_16")
                (folder / case(f"{name}.PHN")).write_text("0 3050 h#\n")
                if converted:
                    sf.write(folder / (case(name) + case(".WAV") + ".wav"), y, SR, format="WAV", subtype="PCM_16")
    return root


def build_noisex(root: Path, seconds: float = 4.0) -> Path:
    """NOISEX-92-like recordings at 19.98 kHz under the spellings and formats real copies use."""
    root.mkdir(parents=True, exist_ok=True)
    rate = noisex.NOISEX_SR
    files = {
        "babble.wav": ("WAV", (300, 3400)),
        "FACTORY1.WAV": ("NIST", (100, 6000)),
        "destroyer_engine.flac": ("FLAC", (60, 1500)),
        "DestroyerOps.sph": ("NIST", (200, 8000)),
        "white.wav": ("WAV", (50, 9000)),
    }
    for i, (name, (fmt, band)) in enumerate(files.items()):
        sf.write(root / name, noise_signal(seconds, rate, 100 + i, band), rate, format=fmt, subtype="PCM_16")
    return root


def build_hint(root: Path, lists: int = 2, per_list: int = 6, sr: int = 22050) -> Path:
    """HINT-like sentences: ``list01/01.wav`` … at ``sr`` Hz (resampled to 16 kHz when loaded)."""
    for i in range(lists):
        for j, y in enumerate(speech(per_list, 200 + i, sr), 1):
            path = root / f"list{i + 1:02d}" / f"{j:02d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, y, sr, subtype="PCM_16")
    return root


VB_TRAIN = {"p226": 2, "p287": 2, "p230": 3, "p231": 3}
VB_TEST = {"p232": 2, "p257": 2}
VB_LOG = {"p232_001": ("bus", 2.5), "p232_002": ("cafe", 7.5), "p257_001": ("bus", 2.5), "p257_002": ("cafe", 7.5)}


def build_voicebank(root: Path, sr: int = 48000, with_log: bool = True) -> Path:
    """VoiceBank-DEMAND-like pairs at 48 kHz: clean speech and clean + noise at the logged SNR."""
    seed = 300
    for part, speakers in (("trainset_28spk", VB_TRAIN), ("testset", VB_TEST)):
        clean_dir, noisy_dir = root / f"clean_{part}_wav", root / f"noisy_{part}_wav"
        clean_dir.mkdir(parents=True, exist_ok=True)
        noisy_dir.mkdir(parents=True, exist_ok=True)
        for speaker, count in speakers.items():
            seed += 1
            for k, y in enumerate(speech(count, seed, sr), 1):
                stem = f"{speaker}_{k:03d}"
                snr = VB_LOG.get(stem, ("", 5.0))[1]
                n = noise_signal(len(y) / sr + 0.1, sr, seed * 10 + k, (100, 8000))[: len(y)]
                n = n * np.sqrt(np.sum(y**2) / (np.sum(n**2) * 10 ** (snr / 10)))
                sf.write(clean_dir / f"{stem}.wav", y, sr, subtype="PCM_16")
                sf.write(noisy_dir / f"{stem}.wav", np.clip(y + n, -1, 1), sr, subtype="PCM_16")
    if with_log:
        (root / "logfiles").mkdir(exist_ok=True)
        lines = [f"{stem} {noise} {snr:g}" for stem, (noise, snr) in VB_LOG.items()]
        (root / "logfiles" / "log_testset.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(autouse=True)
def _no_corpus_environment(monkeypatch):
    """Corpus roots of the machine running the tests must not leak into them."""
    for name in ROOT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("corpora")
    return {
        "timit": build_timit(base / "TIMIT"),
        "timit_lower": build_timit(base / "copy" / "data" / "lower", upper=False, converted=True),
        "noisex": build_noisex(base / "NOISEX-92"),
        "hint": build_hint(base / "HINT"),
        "voicebank": build_voicebank(base / "DS_10283_2791"),
    }


def data_config(**values) -> DataConfig:
    return DataConfig(**values)


# ---------------------------------------------------------------------------------------------------------
# TIMIT


def test_soundfile_writes_and_reads_sphere(tmp_path):
    y = speech(1, 1)[0]
    path = tmp_path / "SX1.WAV"
    sf.write(path, y, SR, format="NIST", subtype="PCM_16")
    assert path.read_bytes()[:8] == b"NIST_1A\n"
    back, rate = audio.load(path, sr=SR)
    assert rate == SR and np.max(np.abs(back - y)) < 1e-4


def test_core_test_list_is_the_standard_one():
    speakers = [s for group in timit.CORE_TEST_SPEAKERS.values() for s in group]
    assert len(speakers) == len(set(speakers)) == 24
    assert sorted(timit.CORE_TEST_SPEAKERS) == [f"DR{i}" for i in range(1, 9)]
    for group in timit.CORE_TEST_SPEAKERS.values():  # 2 male and 1 female speaker per region
        assert sorted(s[0] for s in group) == ["F", "M", "M"]


def test_timit_splits(corpora, caplog):
    data = data_config(corpus="timit", timit_root=str(corpora["timit"]), n_train=8, n_val=3, n_test=0)
    with caplog.at_level(logging.INFO, logger="speechkern"):
        out = timit.splits(data, Path("unused"))
    assert [len(out[s]) for s in ("train", "val", "test")] == [8, 3, 4]
    ids = [u.id for s in ("train", "val") for u in out[s]]
    assert len(set(ids)) == 11  # no utterance in both training and validation
    assert all("_SA" not in i for i in ids)  # dialect sentences are left out
    assert {u.talker for u in out["test"]} == {"MDAB0", "FPAS0"}  # the core test speakers only
    assert {u.talker for u in out["train"]} <= {"FCJF0", "MDPK0", "FAEM0", "MARC0"}
    assert out["test"][0].id == "DR1_MDAB0_SI1039" and out["test"][0].path.endswith("MDAB0/SI1039.WAV")
    text = caplog.text
    assert "TRAIN 4 speakers, 12 SI/SX utterances" in text and "core test set 2 speakers, 4 utterances" in text
    assert "missing speakers" in text  # an incomplete core test set is pointed out
    again = timit.splits(data, Path("unused"))
    assert again == out  # seeded
    other = timit.splits(data.model_copy(update={"seed": 5}), Path("unused"))
    assert {u.id for u in other["train"]} != {u.id for u in out["train"]}


def test_timit_lower_case_nested_and_converted(corpora):
    # The root given is two levels above TRAIN/TEST; names are lower case; RIFF copies sit beside the SPHERE files.
    data = data_config(corpus="timit", timit_root=str(corpora["timit_lower"].parents[1]), n_train=0, n_val=2,
                       n_test=3, timit_test="complete")  # fmt: skip
    out = timit.splits(data, Path("unused"))
    assert len(out["train"]) == 10 and len(out["val"]) == 2  # n_train = 0: all but the validation ones
    assert len(out["test"]) == 3  # a cap on the complete test set (6)
    assert all(u.path.endswith(".wav.wav") for s in out.values() for u in s)
    assert out["train"][0].talker.isupper() and "_SA" not in "".join(u.id for u in out["train"])


def test_timit_from_the_environment(corpora, monkeypatch):
    monkeypatch.setenv("TIMIT_ROOT", str(corpora["timit"]))
    out = timit.splits(data_config(corpus="timit", n_train=4, n_val=2, n_test=2), Path("unused"))
    assert [len(out[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    monkeypatch.setenv("SPEECHKERN_TIMIT_ROOT", str(corpora["timit"] / "nowhere"))  # the specific name wins
    with pytest.raises(SpeechkernError, match="nowhere: no such folder .from SPEECHKERN_TIMIT_ROOT"):
        timit.splits(data_config(corpus="timit"), Path("unused"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, r"no TIMIT corpus found \(expected TRAIN/ and TEST/ with DR1\.\.DR8/<speaker>/<utt>\.WAV"),
        (lambda p: p / "missing", r"missing: no such folder .* expected TRAIN/ and TEST/"),
        (lambda p: (p / "train").mkdir() or (p / "TEST").mkdir() or p, r"train: no SI/SX utterances found"),
    ],
)
def test_timit_wrong_roots(tmp_path, make, message):
    root = make(tmp_path)
    with pytest.raises(SpeechkernError, match=message) as err:
        timit.splits(data_config(corpus="timit", timit_root=str(root)), Path("unused"))
    assert "\n" not in str(err.value) and "timit_root" in str(err.value)


def test_timit_root_not_given():
    with pytest.raises(SpeechkernError, match=r"add the recipe override data.timit_root=DIR or set TIMIT_ROOT=DIR"):
        load_splits(data_config(corpus="timit"), Path("unused"))


@pytest.mark.parametrize(
    "content", [b"NIST_1A\n   1024\ngarbage", b"", b"\x00" * 100], ids=["header", "empty", "zeros"]
)
def test_timit_damaged_file_is_named(tmp_path, content):
    root = build_timit(tmp_path / "TIMIT")
    bad = root / "TRAIN" / "DR2" / "MARC0" / "SX108.WAV"
    bad.write_bytes(content)
    with pytest.raises(SpeechkernError, match=r"SX108\.WAV: not readable as audio .*replace or remove it"):
        timit.splits(data_config(corpus="timit", timit_root=str(root)), Path("unused"))


def test_timit_shorten_compressed_sphere_is_explained(tmp_path):
    root = build_timit(tmp_path / "TIMIT")
    header = (b"NIST_1A\n   1024\nchannel_count -i 1\nsample_count -i 16000\nsample_rate -i 16000\n"
              b"sample_n_bytes -i 2\nsample_coding -s26 pcm,embedded-shorten-v2.00\nend_head\n")  # fmt: skip
    compressed = root / "TRAIN" / "DR1" / "FCJF0" / "SI1027.WAV"
    compressed.write_bytes(header.ljust(1024) + bytes(range(256)) * 20)
    with pytest.raises(SpeechkernError, match=r"SI1027\.WAV: NIST SPHERE compressed with shorten.*sph2pipe"):
        timit.splits(data_config(corpus="timit", timit_root=str(root)), Path("unused"))


def test_timit_file_without_samples_is_named(tmp_path):
    root = build_timit(tmp_path / "TIMIT")
    empty = root / "TEST" / "DR1" / "MDAB0" / "SX139.WAV"
    sf.write(empty, np.zeros(0, np.float32), SR, format="NIST", subtype="PCM_16")
    with pytest.raises(SpeechkernError, match=r"SX139\.WAV: the file holds no samples"):
        timit.splits(data_config(corpus="timit", timit_root=str(root)), Path("unused"))


def test_timit_without_core_speakers(tmp_path):
    root = build_timit(tmp_path / "TIMIT")
    for speaker in ("MDAB0", "FPAS0"):
        for f in (root / "TEST").rglob(f"{speaker}/*"):
            f.unlink()
    with pytest.raises(SpeechkernError, match="none of the 24 core-test speakers"):
        timit.splits(data_config(corpus="timit", timit_root=str(root)), Path("unused"))
    out = timit.splits(data_config(corpus="timit", timit_root=str(root), timit_test="complete"), Path("unused"))
    assert {u.talker for u in out["test"]} == {"FAKS0"}


# ---------------------------------------------------------------------------------------------------------
# NOISEX-92


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("babble", "babble"),
        ("factory1", "FACTORY1"),
        ("engine", "destroyer_engine"),
        ("destroyer-engine", "destroyer_engine"),
        ("oproom", "DestroyerOps"),
        ("DESTROYEROPS", "DestroyerOps"),
    ],
)
def test_noisex_names(corpora, name, stem):
    assert noisex.find(name, str(corpora["noisex"])).stem == stem


def test_noisex_resolve_reads_every_format(corpora, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="speechkern"):
        for name in ("babble", "factory1", "engine", "oproom"):
            path = noisex.resolve(name, str(corpora["noisex"]), tmp_path)
            y, rate = audio.load(path, sr=SR)  # 19.98 kHz → 16 kHz
            assert rate == SR and abs(len(y) - 4 * SR) <= 1 and np.std(y) > 0.01
    assert "NOISEX-92 engine:" in caplog.text and "4.0 s at 19980 Hz" in caplog.text


def test_noisex_mat_files_are_converted(tmp_path):
    from scipy.io import savemat

    y = noise_signal(3.0, noisex.NOISEX_SR, 7, (100, 4000))
    savemat(tmp_path / "factory1.mat", {"factory1": (y * 20000).astype(np.float64)[:, None]})
    path = noisex.resolve("factory1", str(tmp_path), tmp_path / "work")
    back, rate = audio.load(path, sr=None)
    assert rate == noisex.NOISEX_SR and np.allclose(back / np.max(np.abs(back)), y / np.max(np.abs(y)), atol=1e-5)
    (tmp_path / "babble.mat").write_bytes(b"MATLAB 5.0 MAT-file, damaged")
    with pytest.raises(SpeechkernError, match=r"babble\.mat: not a readable MATLAB file"):
        noisex.resolve("babble", str(tmp_path), tmp_path / "work")


def test_noisex_errors(corpora, tmp_path):
    with pytest.raises(SpeechkernError, match=r"no NOISEX-92 recording named 'f16' \(found: babble, destroyerengine"):
        noisex.find("f16", str(corpora["noisex"]))
    with pytest.raises(SpeechkernError, match=r"no NOISEX-92 recordings found \(expected NOISEX-92 recordings such as"):
        noisex.find("babble", str(tmp_path))
    with pytest.raises(SpeechkernError, match=r"add the recipe override data.noisex_root=DIR or set NOISEX_ROOT=DIR"):
        noisex.find("babble", "")
    (tmp_path / "babble.wav").write_bytes(b"RIFF....WAVEfmt broken")
    with pytest.raises(SpeechkernError, match=r"babble\.wav: not readable as audio"):
        noisex.resolve("babble", str(tmp_path), tmp_path)


def test_prepare_noises_names_noisex_recordings(corpora, tmp_path, monkeypatch):
    monkeypatch.setenv("NOISEX_ROOT", str(corpora["noisex"]))
    recipe = validate_recipe({"data": {"noises": ["noisex:engine", "noisex:oproom", "noisex:babble"]}})
    noises = prepare_noises(recipe, [], tmp_path)
    assert list(noises) == ["engine", "oproom", "babble"]
    assert Path(noises["engine"]).name == "destroyer_engine.flac"
    # two noises of one name are refused at load (their mixtures would share ids), before any noise is prepared
    with pytest.raises(SpeechkernError, match=r"data.noises: 'babble' is given twice"):
        validate_recipe({"data": {"noises": ["noisex:babble", str(corpora["noisex"] / "babble.wav")]}})
    with pytest.raises(SpeechkernError, match="expected noisex:NAME"):
        prepare_noises(validate_recipe({"data": {"noises": ["noisex:"]}}), [], tmp_path)


# ---------------------------------------------------------------------------------------------------------
# HINT


def test_hint_splits(corpora, caplog):
    data = data_config(corpus="hint", hint_root=str(corpora["hint"]), n_train=0, n_val=2, n_test=3)
    with caplog.at_level(logging.INFO, logger="speechkern"):
        out = hint.splits(data, Path("unused"))
    assert [len(out[s]) for s in ("train", "val", "test")] == [7, 2, 3]
    every = [u.id for s in out.values() for u in s]
    assert len(set(every)) == 12
    assert {u.talker for s in out.values() for u in s} == {"list01", "list02"}
    assert "HINT at" in caplog.text and "12 sentences in 2 folders" in caplog.text
    assert hint.splits(data, Path("unused")) == out


def test_hint_errors(tmp_path):
    with pytest.raises(SpeechkernError, match=r"no HINT sentences found \(expected HINT sentences as audio files"):
        hint.splits(data_config(corpus="hint", hint_root=str(tmp_path)), Path("unused"))
    with pytest.raises(SpeechkernError, match=r"nope: no such folder \(from data.hint_root\)"):
        hint.splits(data_config(corpus="hint", hint_root=str(tmp_path / "nope")), Path("unused"))
    build_hint(tmp_path, lists=1, per_list=4)
    (tmp_path / "list01" / "03.wav").write_bytes(b"RIFF\x00\x00")
    with pytest.raises(SpeechkernError, match=r"list01/03\.wav: not readable as audio"):
        hint.splits(data_config(corpus="hint", hint_root=str(tmp_path)), Path("unused"))


# ---------------------------------------------------------------------------------------------------------
# VoiceBank-DEMAND


def test_voicebank_splits(corpora, caplog):
    data = data_config(corpus="voicebank", voicebank_root=str(corpora["voicebank"]), n_train=0, n_val=0, n_test=0)
    with caplog.at_level(logging.INFO, logger="speechkern"):
        out = voicebank.splits(data, Path("unused"))
    assert {u.talker for u in out["val"]} == {"p226", "p287"} and len(out["val"]) == 4
    assert {u.talker for u in out["train"]} == {"p230", "p231"} and len(out["train"]) == 6
    assert [u.id for u in out["test"]] == ["p232_001", "p232_002", "p257_001", "p257_002"]
    assert [u.condition for u in out["test"]] == ["bus_2.5dB", "cafe_7.5dB", "bus_2.5dB", "cafe_7.5dB"]
    assert all(u.condition == "voicebank" for u in out["train"] + out["val"])
    for u in out["train"]:
        assert "clean_trainset_28spk_wav" in u.path and u.noisy == u.path.replace("clean_", "noisy_")
    assert "test set at" in caplog.text and "2 speakers, 4 pairs" in caplog.text and "48000 Hz" in caplog.text
    capped = voicebank.splits(data.model_copy(update={"n_train": 2, "n_test": 1}), Path("unused"))
    assert len(capped["train"]) == 2 and len(capped["test"]) == 1 and len(capped["val"]) == 4


def test_voicebank_nested_folders_without_log(tmp_path):
    build_voicebank(tmp_path / "DS" / "unzipped", with_log=False)
    out = voicebank.splits(data_config(corpus="voicebank", voicebank_root=str(tmp_path)), Path("unused"))
    assert len(out["test"]) == 4 and {u.condition for u in out["test"]} == {"voicebank"}


def test_voicebank_errors(corpora, tmp_path):
    with pytest.raises(SpeechkernError, match=r"no VoiceBank-DEMAND clean_trainset_28spk_wav/ found \(folders of WAV"):
        voicebank.splits(data_config(corpus="voicebank", voicebank_root=str(tmp_path)), Path("unused"))
    root = build_voicebank(tmp_path / "vb", with_log=False)
    with pytest.raises(SpeechkernError, match="no utterances of the validation speakers p999"):
        voicebank.splits(data_config(corpus="voicebank", voicebank_root=str(root), voicebank_val_speakers=["p999"]),
                         Path("unused"))  # fmt: skip
    (root / "noisy_testset_wav" / "p257_002.wav").unlink()
    with pytest.raises(SpeechkernError, match=r"noisy_testset_wav/p257_002\.wav: missing; every file of .* needs"):
        voicebank.splits(data_config(corpus="voicebank", voicebank_root=str(root)), Path("unused"))
    (root / "noisy_testset_wav" / "p257_002.wav").write_bytes(b"")
    with pytest.raises(SpeechkernError, match=r"p257_002\.wav: not readable as audio"):
        voicebank.splits(data_config(corpus="voicebank", voicebank_root=str(root)), Path("unused"))


def test_corpus_folders_read_every_format_enhance_reads(tmp_path, monkeypatch):
    """The clean and noise folders are searched for the same formats as `speechkern enhance` (audio.READ_SUFFIXES),
    not for wav and flac alone."""
    from speechkern.corpora import folder
    from speechkern.enhance import find_inputs

    y = (0.1 * np.random.default_rng(0).standard_normal(4000)).astype(np.float32)
    for name in ("speech/a/1.wav", "speech/a/2.ogg", "speech/b/3.mp3", "speech/b/4.FLAC", "speech/c/5.aiff",
                 "noise/hum.ogg", "noise/fan.mp3", "noise/notes.txt"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".txt"):
            (tmp_path / name).write_text("x")
        else:
            sf.write(tmp_path / name, y, 16000, format="AIFF" if name.endswith(".aiff") else None)
    data = data_config(corpus="folder", clean_dir=str(tmp_path / "speech"), n_train=3, n_val=1, n_test=1)
    found = sorted(Path(u.path).name for part in folder.splits(data, tmp_path).values() for u in part)
    assert found == ["1.wav", "2.ogg", "3.mp3", "4.FLAC", "5.aiff"]
    recipe = validate_recipe({"data": {"noises": ["dir"], "noise_dir": str(tmp_path / "noise")}})
    assert sorted(Path(p).name for p in prepare_noises(recipe, [], tmp_path).values()) == ["fan.mp3", "hum.ogg"]
    monkeypatch.chdir(tmp_path)
    assert sorted(p.name for p in find_inputs(["speech", "noise"]).files) == sorted([*found, "fan.mp3", "hum.ogg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpeechkernError, match=r"empty: no noise recordings found \(searched recursively for WAV, "
                                              r"FLAC, OGG, MP3"):  # fmt: skip
        prepare_noises(validate_recipe({"data": {"noises": ["dir"], "noise_dir": str(tmp_path / "empty")}}), [],
                       tmp_path)  # fmt: skip


def test_folder_split_by_talker_keeps_talkers_apart(tmp_path):
    from speechkern.corpora.folder import split_talkers

    files = []
    for t, count in enumerate([30, 2, 3, 1, 2, 4, 25, 1]):
        for k in range(count):
            path = tmp_path / f"talker{t}" / f"u{k}.wav"
            path.parent.mkdir(exist_ok=True)
            path.touch()
            files.append(path)
    out = split_talkers(files, tmp_path, n_train=0, n_val=3, n_test=4, seed=0)
    talkers = {s: {u.talker for u in out[s]} for s in out}
    assert not talkers["train"] & talkers["val"] and not talkers["train"] & talkers["test"]
    assert not talkers["val"] & talkers["test"]
    assert len(out["test"]) == 4 and len(out["val"]) == 3
    assert sum(len(v) for v in out.values()) == len(files)
    assert split_talkers(files, tmp_path, 0, 3, 4, seed=0) == out  # seeded
    assert len(split_talkers(files, tmp_path, n_train=10, n_val=3, n_test=4, seed=0)["train"]) == 10
    with pytest.raises(SpeechkernError, match="at least 3"):
        split_talkers(files[:30], tmp_path, 0, 1, 1, seed=0)


def test_folder_split_by_file_takes_every_file_for_n_train_0(tmp_path):
    """data.n_train = 0 ("0: all", as by talker and for the manifest and HINT corpora) gave the folder corpus's
    default file split an empty training split: the run stopped with 'the train split is empty'."""
    from speechkern.corpora.folder import split_files

    files = [tmp_path / f"u{k}.wav" for k in range(10)]
    out = split_files(files, tmp_path, n_train=0, n_val=2, n_test=3, seed=0)
    assert [len(out[s]) for s in ("train", "val", "test")] == [5, 2, 3]
    assert sorted(u.path for s in out.values() for u in s) == sorted(map(str, files))
    assert [len(v) for v in split_files(files, tmp_path, 4, 2, 3, seed=0).values()] == [4, 2, 3]


def test_an_empty_split_names_the_recipe_key(tmp_path):
    from speechkern.dataset import build_manifests
    from speechkern.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "demo", ["data.n_train=0"])
    with pytest.raises(SpeechkernError, match=r"^the train split is empty \(corpus 'demo', data.n_train = 0\); give "
                       r"more clean utterances, or the recipe override data.n_train=N"):  # fmt: skip
        build_manifests(recipe, tmp_path / "run")


def test_too_few_talkers_for_babble_name_the_recipe_keys(tmp_path):
    """'babble needs at least 4 talkers ...; use more training talkers or another noise' named no key to change."""
    from speechkern.dataset import build_manifests
    from speechkern.recipe import load_recipe

    overrides = ["data.n_train=1", "data.n_val=1", "data.n_test=1", "data.generated_noise_s=5"]
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "demo", overrides)
    with pytest.raises(SpeechkernError, match=r"babble needs at least 4 talkers .*1 given: raise data.n_train \(now "
                       r"1\) or take 'babble' out of data.noises$"):  # fmt: skip
        build_manifests(recipe, tmp_path / "run")
