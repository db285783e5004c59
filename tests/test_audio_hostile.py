"""Hostile use of the enhancement and evaluation side as a newcomer would try it: odd arrays through the Python
API, damaged run folders and manifests, outputs that are folders, and the benchmark scripts' odd arguments."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from speechkern.enhance import apply_mask, enhance_signal
from speechkern.errors import SpeechkernError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped():
    from speechkern.models.select import SHIPPED, find_model

    return find_model(SHIPPED)[0]


def _speechlike(n: int = 16000) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(n) * 0.1).astype(np.float32)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, r"^y=None: expected a waveform"),
        ("noisy.wav", r"^y='noisy.wav': expected a waveform"),
        (np.float32(0.1), r"^y: shape \(\); expected a mono waveform"),
        (np.zeros(0, np.float32), r"^y: holds no samples"),
        ((_speechlike() * 32767).astype(np.int16), r"^y: int16 samples; .* / 32768, or read the file"),
        (((_speechlike() + 1) * 127).astype(np.uint8), r"^y: uint8 samples; .*- 128\) / 128"),
        (_speechlike() > 0, r"^y: bool samples; expected floating-point samples with full scale 1\.0; read"),
        (_speechlike().astype(np.complex64), r"^y: complex \(a spectrum\?\) values"),
        (np.array([_speechlike()], dtype=object), r"^y: object values"),
        (np.stack([_speechlike()] * 2), r"^y: shape \(2, 16000\); .*average the channels"),
        (np.stack([_speechlike()] * 2).T, r"^y: shape \(16000, 2\); .*average the channels"),
        (np.where(np.arange(16000) == 7, np.nan, _speechlike()), r"^y: holds 1 NaN .* the first at index 7"),
        (_speechlike().astype(np.float64) * 1e300, r"^y: holds 16000 NaN or infinite sample\(s\) \(or beyond float32"),
    ],
    ids=["none", "str", "scalar", "empty", "int16", "uint8", "bool", "complex", "object", "2d", "2d-T", "nan", "huge"],
)
def test_enhance_signal_refuses_what_is_no_float_mono_waveform_in_one_line(shipped, value, says):
    """int16 arrays (scipy.io.wavfile) were enhanced as if full scale were 32768.0 and came back as float32 at that
    scale; complex, object, scalar, str and None inputs stopped in numpy's TypeError; 2-D arrays were refused by
    the feature code without naming the parameter or what to do; float64 samples beyond float32 were 'NaN'."""
    with pytest.raises(SpeechkernError, match=says) as err:
        enhance_signal(shipped, value)
    assert "\n" not in str(err.value)


def test_enhance_signal_takes_float_lists_and_any_float_width_alike(shipped):
    y = _speechlike()
    want = enhance_signal(shipped, y)
    assert want.dtype == np.float32 and want.shape == y.shape
    np.testing.assert_allclose(enhance_signal(shipped, y.astype(np.float64)), want, atol=1e-6)
    np.testing.assert_allclose(enhance_signal(shipped, y.tolist()), want, atol=1e-6)


@pytest.mark.parametrize(
    ("mask", "says"),
    [
        (lambda m: m.T, r"^mask: shape \(64, 101\) does not fit .* expected \(n_frames, n_units\) = \(101, 64\)"),
        (lambda m: m[:-3], r"^mask: shape \(98, 64\) does not fit"),
        (lambda m: m[:, 0], r"^mask: shape \(101,\) does not fit"),
        (lambda m: np.where(m > 0.5, np.nan, m), r"^mask: holds NaN or infinite values"),
        (lambda m: m.astype(np.complex64), r"^mask: complex64 values"),
        (lambda m: "ones", r"^mask: <U4 values"),
    ],
    ids=["transposed", "frames", "1d", "nan", "complex", "str"],
)
def test_apply_mask_names_the_documented_orientation(shipped, mask, says):
    """A mask (n_frames, n_units) of the wrong shape was reported transposed ('mask of shape (101, 64) … expected
    (64, 101)' for a transposed one, i.e. told to pass what it had passed); a list mask stopped in AttributeError."""
    y = _speechlike()
    good = shipped.mask(shipped.features(y, 16000))
    with pytest.raises(SpeechkernError, match=says):
        apply_mask(y, mask(good), shipped)
    np.testing.assert_allclose(apply_mask(y, good.tolist(), shipped), apply_mask(y, good, shipped), atol=1e-6)
    with pytest.raises(SpeechkernError, match=r"^mixture: int16 samples"):
        apply_mask((y * 32767).astype(np.int16), good, shipped)


def test_an_output_that_is_a_folder_or_lies_below_a_file_is_refused_before_the_work(tmp_path):
    """atomic_write renamed onto a folder only after the work (IsADirectoryError: shipped_model.py --json DIR
    --overwrite lost its scores), and a file where a parent folder goes stopped in FileExistsError (evaluate of a
    run whose manifests/ was a file)."""
    from speechkern.outputs import atomic_write, check_writable

    called = []
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "plain").write_text("x")
    for path, says in ((tmp_path / "folder.json", "is a folder; name a file"),
                       (tmp_path / "plain" / "deeper" / "x.json", "plain is a file, not a folder")):  # fmt: skip
        with pytest.raises(SpeechkernError, match=says):
            atomic_write(path, called.append)
        assert not called
    with pytest.raises(SpeechkernError, match="is a folder; name a file"):
        check_writable(tmp_path / "folder.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.json", "plain"]  # nothing left behind


def test_the_feature_cache_carries_on_where_a_file_blocks_its_folder(tmp_path, caplog):
    from speechkern.cache import ArrayCache

    cache = ArrayCache(tmp_path)
    blocked = cache._path("k" * 64)
    blocked.parent.parent.mkdir(parents=True, exist_ok=True)
    blocked.parent.write_text("not a folder")
    cache.put("k" * 64, {"a": np.zeros(3)})  # warns and carries on, as on a full disk
    assert "carrying on without caching" in caplog.text


@pytest.fixture
def damaged_run(tiny_run, tmp_path):
    """A copy of the tiny run (models and manifests) to damage."""
    _, root, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, ignore=shutil.ignore_patterns("report"))
    return run


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda m: m.write_bytes(bytes(range(128, 256))), r"test\.jsonl: not a manifest \(no UTF-8 text"),
        (
            lambda m: m.write_text(m.read_text().replace('"snr_db": 0.0', '"snr_db": "abc"')),
            r'test\.jsonl:1: not a manifest row \(snr_db = "abc": expected a finite number\)',
        ),
        (
            lambda m: m.write_text(m.read_text().replace('"sr": 16000', '"sr": 16000.5')),
            r"test\.jsonl:1: not a manifest row \(sr = 16000\.5: expected a whole number\)",
        ),
        (
            lambda m: m.write_text(re.sub(r'"gain": [0-9.e-]+', '"gain": NaN', m.read_text())),
            r"test\.jsonl:1: not a manifest row \(gain = NaN: expected a finite number\)",
        ),
        (
            lambda m: m.write_text(re.sub(r'"n_samples": \d+', '"n_samples": 0', m.read_text())),
            r"test\.jsonl:1: not a manifest row \(n_samples = 0, .*expected a sample or more",
        ),
        (
            lambda m: m.write_text(re.sub(r'"noise_stop": \d+', '"noise_stop": 0', m.read_text())),
            r"test\.jsonl:1: not a manifest row \(.*noise range \[\d+, 0\): expected",
        ),
        (
            lambda m: (shutil.rmtree(m.parent), m.parent.write_text("x")),
            r"manifests/train\.jsonl: cannot be written, .*manifests is a file, not a folder",
        ),
    ],
    ids=["binary", "str-snr", "float-sr", "nan-gain", "no-samples", "no-noise-range", "manifests-is-a-file"],
)
def test_evaluate_refuses_a_damaged_manifest_in_one_line(damaged_run, damage, says):
    """A binary manifest stopped in UnicodeDecodeError; a row with snr_db "abc" was scored (rc 0) under its label;
    NaN gains and 0 samples failed later without naming the manifest; a noise range [x, 0) divides by zero."""
    from speechkern.evaluate import evaluate

    damage(damaged_run / "manifests" / "test.jsonl")
    with pytest.raises(SpeechkernError, match=says) as err:
        evaluate(damaged_run, workers=1, cache_dir=None)
    assert "\n" not in str(err.value)


def test_a_recorded_pair_without_noise_keeps_its_infinite_snr_in_the_manifest(tmp_path):
    from speechkern.mixtures import paired_mixture, read_manifest, write_manifest

    clean = _speechlike(4000)
    row = paired_mixture(mixture_id="p", split="test", clean_path="c.wav", clean=clean, noisy_path="n.wav",
                         noisy=clean, condition="vb", sr=16000)  # fmt: skip
    write_manifest(tmp_path / "m.jsonl", [row])
    assert read_manifest(tmp_path / "m.jsonl") == [row] and row.snr_db == float("inf")


@pytest.mark.parametrize("option", ["workers", "limit", "examples"])
@pytest.mark.parametrize("value", [-1, 1.5, "2", True])
def test_evaluate_refuses_odd_counts_before_any_work(tmp_path, option, value):
    """evaluate(limit=-1) scored all test mixtures but the last (a slice from the end), without a word."""
    from speechkern.evaluate import evaluate

    with pytest.raises(SpeechkernError, match=rf"^{option}={value!r}: expected a whole number ≥ 0"):
        evaluate(tmp_path / "no-run", **{option: value})
    assert not (tmp_path / "no-run").exists()


def test_shipped_model_benchmark_refuses_a_json_folder_before_the_work(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import shipped_model

    monkeypatch.setattr(shipped_model, "load_model_or_exit", lambda folder: pytest.fail("worked before refusing"))
    with pytest.raises(SystemExit, match=rf"^--json {tmp_path}: is a folder; name a file for the results$"):
        shipped_model.main(["--json", str(tmp_path), "--overwrite", "--speed-minutes", "0"])


GOOD_ROW = {"snr": 0, "snr_mask": 1.0, "snr_floor": 2.0, "stoi_in": 0.5, "si_sdr_in": 1.0, "stoi": [0.5] * 6,
            "si_sdr": [1.0] * 6}  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ([], r"none of its 0 rows is a noisy mixture"),
        ([GOOD_ROW | {"snr": "inf"}], r"none of its 1 rows is a noisy mixture"),
        ([{"snr": 1}], r"KeyError: 'row 0 lacks snr_mask, snr_floor"),
        ([GOOD_ROW, GOOD_ROW | {"stoi": [0.5]}], r"row 1: stoi holds no 6 scores, one per weight"),
        ([GOOD_ROW | {"snr_mask": "x"}], r'row 0: snr_mask = "x" is no number'),
        ([GOOD_ROW | {"snr": "nan"}], r"row 0: snr is NaN"),
        ([3], r"row 0 is no table"),
        ([GOOD_ROW | {"snr_wada": "x"}], r'row 0: snr_wada = "x" is no number'),
    ],
    ids=["empty", "clean-only", "missing", "short", "str", "nan-snr", "no-table", "str-wada"],
)
def test_clean_guard_refuses_foreign_scores_from_json_in_one_line(tmp_path, monkeypatch, rows, says, capsys):
    """--from-json with an empty, clean-only or partial 'rows' stopped in LinAlgError, KeyError, numpy's
    interpolation ValueError or a ufunc TypeError instead of naming the file."""
    import json

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import clean_guard

    path = tmp_path / "scores.json"
    path.write_text(json.dumps({"rows": rows}))
    with pytest.raises(SystemExit, match=rf"^--from-json {re.escape(str(path))}: .*{says}"):
        clean_guard.main(["--from-json", str(path)])
    path.write_text(json.dumps({"rows": [GOOD_ROW, GOOD_ROW | {"snr": float("inf"), "si_sdr_in": None}]}))
    assert clean_guard.main(["--from-json", str(path)]) == 0  # the scores it writes are taken
    assert "calibration (c0, c1, c2)" in capsys.readouterr().out


@pytest.fixture(scope="module")
def stft_model(tmp_path_factory):
    """A tiny kernel model with an STFT-domain IRM (TINY settings), trained in a few seconds."""
    from conftest import RECIPES, TINY

    from speechkern.models.io import MaskModel
    from speechkern.pipeline import train
    from speechkern.recipe import load_recipe

    root = tmp_path_factory.mktemp("stft")
    train(load_recipe(RECIPES / "demo", [*TINY, "target.domain=stft"]), root / "run", cache_dir=None, models=["kernel"])
    return MaskModel.load(root / "run" / "models" / "kernel")


def test_an_stft_model_enhances_with_the_clean_guard(stft_model, tmp_path):
    """The guard's T-F energies of an STFT model had the features' n_fft = 512 (257 bins) against the mask's
    frame_length // 2 + 1 = 161: every STFT model failed in `speechkern enhance` with its default guard
    (ValueError: operands could not be broadcast together with shapes (201,161) (201,257))."""
    import soundfile as sf

    from speechkern.enhance import enhance_file
    from speechkern.postfilter import unit_energies

    y = _speechlike(2 * 22050)
    sf.write(tmp_path / "in.wav", np.stack([y, 0.5 * y], axis=1), 22050, subtype="PCM_24")
    enhance_file(stft_model, tmp_path / "in.wav", tmp_path / "out.wav", chunk_s=1.0)  # several blocks, guard on
    out, sr = sf.read(tmp_path / "out.wav", always_2d=True)
    assert sr == 22050 and out.shape == (len(y), 2) and np.isfinite(out).all()
    assert sf.info(tmp_path / "out.wav").subtype == "PCM_24"
    assert enhance_signal(stft_model, y[:16000]).shape == (16000,)
    fc, tc = stft_model.feature_config, stft_model.target_config
    low = _speechlike()
    mask = stft_model.mask(stft_model.features(low, fc.sr))
    assert unit_energies(stft_model.features(low, fc.sr), low, fc, tc).shape == mask.shape == (101, 161)


def test_evaluate_scores_the_other_conditions_of_a_per_condition_run_missing_one_model(tmp_path):
    """evaluate warned 'the run is incomplete, no model for kernel/babble_0dB; scoring the others', then stopped
    at the first babble mixture ('no model was trained for condition babble_0dB'), scoring nothing."""
    import shutil

    from conftest import RECIPES, TINY

    from speechkern.evaluate import evaluate
    from speechkern.pipeline import train
    from speechkern.recipe import load_recipe

    recipe = load_recipe(RECIPES / "demo", [*TINY, "train.mode=per-condition"])
    train(recipe, tmp_path / "run", cache_dir=None, models=["kernel"])
    shutil.rmtree(tmp_path / "run" / "models" / "kernel" / "babble_0dB")
    ev = evaluate(tmp_path / "run", workers=1, cache_dir=None)
    assert "kernel/babble_0dB" in ev.missing
    scored = {(r["condition"], r["system"]): r["n_files"] for r in ev.rows}
    assert scored[("ssn_0dB", "kernel")] == 2 and ("babble_0dB", "kernel") not in scored
    assert scored[("babble_0dB", "noisy")] == scored[("babble_0dB", "ideal")] == 2


@pytest.mark.parametrize(("fmt", "subtype", "sr"), [("WAV", "GSM610", 8000), ("WAV", "G721_32", 16000)])
def test_files_libsndfile_decodes_only_forward_are_enhanced_like_any_other(shipped, tmp_path, fmt, subtype, sr):
    """GSM 6.10 and G.721 files (telephony) were refused as 'could not be read at sample 0 (Seek attempted on
    unseekable file type.); is it damaged?' by enhance, and as 'not a readable audio file' by load: every read
    began with a seek. Blocks of several seconds (and the guard's second pass) read them as a plain WAV."""
    import soundfile as sf

    from speechkern import audio
    from speechkern.enhance import enhance_file

    sf.write(tmp_path / "in.wav", _speechlike(6 * sr), sr, subtype=subtype, format=fmt)
    decoded = sf.read(tmp_path / "in.wav", dtype="float32")[0]
    sf.write(tmp_path / "plain.wav", decoded, sr, subtype="PCM_16")  # the codecs decode to 16-bit samples
    np.testing.assert_array_equal(sf.read(tmp_path / "plain.wav", dtype="float32")[0], decoded)
    np.testing.assert_array_equal(audio.load(tmp_path / "in.wav", sr=None)[0], decoded)
    np.testing.assert_array_equal(
        audio.load(tmp_path / "in.wav", sr=None, start=sr, stop=2 * sr)[0], decoded[sr : 2 * sr]
    )
    for name in ("in", "plain"):
        enhance_file(shipped, tmp_path / f"{name}.wav", tmp_path / f"{name}_out.flac", chunk_s=1.0, margin_s=1.0)
    want = sf.read(tmp_path / "plain_out.flac")[0]
    np.testing.assert_array_equal(sf.read(tmp_path / "in_out.flac")[0], want)
    enhance_file(shipped, tmp_path / "in.wav", tmp_path / "in_out.wav", chunk_s=1.0)  # written in its own encoding
    assert sf.info(tmp_path / "in_out.wav").subtype == subtype


def test_a_forward_reader_serves_any_order_of_blocks():
    """ForwardReader against plain reads: forward skips, re-reads inside the last block, rewinds to the start."""
    import tempfile

    import soundfile as sf

    from speechkern.audio import ForwardReader

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/x.wav"
        sf.write(path, _speechlike(8000), 8000, subtype="GSM610")  # GSM 6.10 is mono only
        want = sf.read(path, dtype="float32", always_2d=True)[0]
        with ForwardReader(path) as reader:
            for start, n in [(0, 100), (50, 300), (1000, 10), (990, 40), (20, 5), (7990, 100), (3000, 0), (0, 8000)]:
                reader.seek(start)
                np.testing.assert_array_equal(reader.read(n), want[start : start + n], err_msg=f"{start}+{n}")
                assert reader.tell() == min(start + n, len(want))


def test_enhance_file_refuses_odd_arguments_in_one_line(shipped, tmp_path):
    """per_channel="no" enhanced every channel (a truthy string); a model folder or None for the model stopped in
    AttributeError, paths of other types in TypeError."""
    import soundfile as sf

    from speechkern.enhance import enhance_file

    sf.write(tmp_path / "in.wav", np.stack([_speechlike()] * 2, axis=1), 16000)
    out = tmp_path / "out.wav"
    cases = [
        ({"per_channel": "no"}, r"^per_channel='no': expected True or False$"),
        ({"overwrite": 1}, r"^overwrite=1: expected True or False$"),
        ({"clean_guard": None}, r"^clean_guard=None: expected True or False$"),
        ({"model": str(tmp_path)}, r"^model='.*': expected a loaded MaskModel; load one with .*find_model\(FOLDER\)"),
        ({"model": None}, r"^model=None: expected a loaded MaskModel"),
        ({"path": 3}, r"^path=3: expected a path, a str or pathlib\.Path$"),
        ({"out_path": None}, r"^out_path=None: expected a path"),
    ]
    for change, says in cases:
        arguments = {"model": shipped, "path": tmp_path / "in.wav", "out_path": out} | change
        with pytest.raises(SpeechkernError, match=says):
            enhance_file(**arguments)
        assert not out.exists()
    with pytest.raises(SpeechkernError, match=r"^model_or_configs='x': expected a loaded MaskModel"):
        apply_mask(_speechlike(), np.ones((101, 64)), "x")
    with pytest.raises(SpeechkernError, match=r"^clean_guard='yes': expected True or False$"):
        enhance_signal(shipped, _speechlike(), clean_guard="yes")
    enhance_file(shipped, os.fsencode(tmp_path / "in.wav"), out, per_channel=np.bool_(False))  # bytes and numpy bools
    assert sf.info(out).channels == 2


def test_find_inputs_takes_one_path_as_one_item(tmp_path, monkeypatch):
    """find_inputs("noisy") searched each letter ('n: no such file or folder'); a Path stopped in TypeError."""
    import soundfile as sf

    from speechkern.enhance import find_inputs, plan_outputs

    (tmp_path / "noisy").mkdir()
    sf.write(tmp_path / "noisy" / "a.wav", _speechlike(), 16000)
    monkeypatch.chdir(tmp_path)
    for items in ("noisy", Path("noisy"), ["noisy"]):
        assert find_inputs(items).files == [Path("noisy/a.wav")]
    for items, says in (
        ([], r"^items=\[\]: expected audio files"),
        (None, r"^items=None"),
        ([3], r"^items=3: expected a path"),
    ):
        with pytest.raises(SpeechkernError, match=says):
            find_inputs(items)
    with pytest.raises(SpeechkernError, match=r"^out=3: expected a path"):
        plan_outputs(find_inputs("noisy"), 3)
    assert plan_outputs(find_inputs("noisy"), b"out") == [(Path("noisy/a.wav"), Path("out/a_enhanced.wav"))]


@pytest.mark.parametrize("run_dir", [None, 3])
def test_evaluate_refuses_a_run_dir_that_is_no_path(run_dir):
    from speechkern.evaluate import evaluate

    with pytest.raises(SpeechkernError, match=rf"^run_dir={run_dir}: expected a path"):
        evaluate(run_dir)


def test_evaluate_refuses_a_cache_dir_that_is_no_path(damaged_run):
    from speechkern.evaluate import evaluate

    with pytest.raises(SpeechkernError, match=r"^cache_dir=3: expected a path"):
        evaluate(damaged_run, cache_dir=3, workers=1)


@pytest.mark.parametrize("sr", ["16000", 0, -8000, 1, 8000.5, float("nan"), 10**9, True, None])
def test_audio_functions_refuse_a_rate_that_is_no_sample_rate(tmp_path, sr):
    """load(sr="16000") stopped in TypeError, sr=0 in soxr's ValueError; sr=NaN hung in soxr; sr=10**9 allocated
    8 GB for one second of audio; sr=1 returned 2 samples; sr=8000.5 resampled to 8000.5 Hz and said 8000."""
    import soundfile as sf

    from speechkern import audio

    sf.write(tmp_path / "in.wav", _speechlike(), 16000)
    says = rf"=({re.escape(repr(sr))}): expected a sample rate in Hz, a whole number from 4000 to 384000$"
    if sr is not None:
        with pytest.raises(SpeechkernError, match="^sr" + says):
            audio.load(tmp_path / "in.wav", sr=sr)
        with pytest.raises(SpeechkernError, match="^sr" + says):
            audio.save(tmp_path / "out.wav", _speechlike(), sr)
    with pytest.raises(SpeechkernError, match="^target_sr" + says):
        audio.resample(_speechlike(), 16000, sr)
    assert not (tmp_path / "out.wav").exists()
    assert audio.load(tmp_path / "in.wav", sr=8000.0)[1] == 8000  # a whole float is a rate


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"start": -100}, r"^start=-100, stop=None: expected sample numbers 0 <= start < stop"),
        ({"start": 1000, "stop": 10}, r"^start=1000, stop=10: expected"),
        ({"start": 10.5}, r"^start=10\.5, stop=None: expected"),
        ({"start": 10**9}, r"in\.wav: start=1000000000 is past its 16000 samples"),
        ({"mono": "no"}, r"^mono='no': expected True or False$"),
        ({"path": 3}, r"^path=3: expected a path"),
    ],
)
def test_load_refuses_odd_ranges_and_flags_naming_them(tmp_path, arguments, says):
    """A negative start was 'not a readable audio file (Internal psf_fseek() failed.)', start > stop 'the file
    holds no samples', a float start TypeError, mono="no" returned the channels."""
    import soundfile as sf

    from speechkern import audio

    sf.write(tmp_path / "in.wav", _speechlike(), 16000)
    with pytest.raises(SpeechkernError, match=says):
        audio.load(**({"path": tmp_path / "in.wav"} | arguments))


@pytest.mark.parametrize(
    ("y", "says"),
    [
        (np.full(100, np.nan), r"^y: holds 100 NaN or infinite sample\(s\), the first at index 0"),
        ((_speechlike() * 3e4).astype(np.int16), r"^y: int16 samples; .* / 32768"),
        (_speechlike().astype(complex), r"^y: complex \(a spectrum\?\) values"),
        (
            np.stack([_speechlike()] * 2).T,
            r"^y: shape \(16000, 2\); .*for an \(n_samples, n_channels\) array pass y\.T",
        ),
        (_speechlike().reshape(2, 2, 4000), r"^y: shape \(2, 2, 4000\); expected"),
    ],
    ids=["nan", "int16", "complex", "transposed", "3d"],
)
def test_save_refuses_samples_it_would_write_wrongly(tmp_path, y, says):
    """save wrote NaN and int16 values (clipped to full scale: noise), dropped the imaginary part of complex
    samples, and read an (n_samples, 2) array as 16000 channels ('cannot hold 16000 channel(s)')."""
    from speechkern import audio

    with pytest.raises(SpeechkernError, match=says):
        audio.save(tmp_path / "out.wav", y, 16000)
    with pytest.raises(SpeechkernError, match=r"^subtype='BOGUS': not an encoding of WAV files; expected one of PCM"):
        audio.save(tmp_path / "out.wav", _speechlike(), 16000, subtype="BOGUS")
    assert not (tmp_path / "out.wav").exists()


def test_evaluate_points_from_a_path_inside_a_run_to_the_run(damaged_run, tmp_path, monkeypatch):
    """evaluate of the run's recipe.toml said 'not a run directory (no recipe.toml inside)'."""
    from speechkern.evaluate import evaluate

    for inside in (damaged_run / "recipe.toml", damaged_run / "models" / "kernel"):
        with pytest.raises(SpeechkernError, match=rf"^{re.escape(str(inside))}: lies inside the run directory "):
            evaluate(inside)
    (tmp_path / "x.wav").write_bytes(b"")
    with pytest.raises(SpeechkernError, match=r"x\.wav: is a file, not a run directory; a run directory is"):
        evaluate(tmp_path / "x.wav")
    monkeypatch.chdir(damaged_run)  # a missing path below a run is just missing
    with pytest.raises(SpeechkernError, match=r"^nothing: no such run directory"):
        evaluate("nothing")


def test_a_run_evaluates_from_any_working_directory_and_after_a_move(tiny_run, tmp_path, monkeypatch):
    """A run trained with a relative out (the default runs/<name>) recorded its generated sources and noises
    relative to that working directory: evaluate from anywhere else, or of a moved run, stopped at
    'runs/demo/sources/…/x.wav: no such file; check the path'."""
    from speechkern.evaluate import evaluate
    from speechkern.mixtures import read_manifest, write_manifest

    _, root, _ = tiny_run
    shutil.copytree(root / "run", tmp_path / "a" / "run", ignore=shutil.ignore_patterns("report"))
    manifest = tmp_path / "a" / "run" / "manifests" / "test.jsonl"
    rows = read_manifest(manifest)
    run_text = str(root / "run")
    assert all(m.clean.startswith(run_text) for m in rows)
    as_if_relative = [replace(m, clean=m.clean.replace(run_text, "runs/demo"), noise=m.noise.replace(run_text,
                      "runs/demo")) for m in rows]  # fmt: skip
    write_manifest(manifest, as_if_relative)
    (manifest.parent / "index.json").unlink()  # as such a run wrote it: no record of its manifests
    monkeypatch.chdir(tmp_path)
    again = read_manifest(manifest)
    assert [Path(m.clean) for m in again] == [
        tmp_path / "a" / "run" / Path(m.clean).relative_to(run_text) for m in rows
    ]
    ev = evaluate(tmp_path / "a" / "run", workers=1, cache_dir=None, limit=1)
    assert ev.files and not ev.problems
    # a file of the corpus itself (outside the run's own folders) stays missing, named with the run and what to do
    write_manifest(manifest, [replace(rows[0], clean=str(tmp_path / "corpus" / "x.wav"))])
    with pytest.raises(SpeechkernError, match=rf"^{tmp_path}/a/run: the run's test audio is not where the run "
                       rf"recorded it: {tmp_path}/corpus/x\.wav no longer exists \(under {tmp_path}/corpus\); put "
                       r"the data back there, or link .*/manifests/test\.jsonl\)$"):  # fmt: skip
        evaluate(tmp_path / "a" / "run", workers=1, cache_dir=None)


def test_evaluate_of_a_run_whose_audio_moved_names_the_run_and_what_to_do(tiny_run, tmp_path, capsys):
    """`speechkern evaluate RUN` after the corpus folder moved said only 'X.flac: no such file; check the path',
    after building the models: not which run, nor that the run reads its audio from the paths it recorded."""
    from conftest import run_cli

    from speechkern.mixtures import read_manifest, write_manifest

    _, root, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, ignore=shutil.ignore_patterns("report"))
    manifest = run / "manifests" / "test.jsonl"
    rows = read_manifest(manifest)
    moved = [replace(m, clean=str(tmp_path / "speech" / f"{i}.wav"), noise=str(tmp_path / "noise" / "n.wav"))
             for i, m in enumerate(rows)]  # fmt: skip
    write_manifest(manifest, moved)
    (manifest.parent / "index.json").unlink()
    code, _, err = run_cli(["evaluate", str(run), "-q"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(
        f"error: {run}: the run's test audio is not where the run recorded it: {tmp_path}/speech/0.wav "
        f"and {len(rows)} more of its {len(rows) + 1} audio files no longer exist (under {tmp_path})"
    )
    assert not (run / "report").exists()
    # training it again (--resume) after its data moved: the same line for the training audio, before any work
    train = run / "manifests" / "train.jsonl"
    write_manifest(train, [replace(m, clean=str(tmp_path / "speech" / "t.wav")) for m in read_manifest(train)])
    shutil.rmtree(run / "models" / "dnn")
    code, _, err = run_cli(["train", str(run / "recipe.toml"), "--out", str(run), "--resume", "-q"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {run}: the run's train/val audio is not where the run recorded it: {tmp_path}/"
                          "speech/t.wav no longer exists (under "), err  # fmt: skip
    assert err.rstrip().endswith(f"manifests/train.jsonl and {run}/manifests/val.jsonl)"), err


def test_a_double_file_beyond_float32_is_not_called_nan_alone(tmp_path):
    """A DOUBLE WAV of finite samples around 1e300 was refused as 'holds 32000 NaN or infinite sample(s)'."""
    import soundfile as sf

    from speechkern import audio

    sf.write(tmp_path / "loud.wav", _speechlike().astype(np.float64) * 1e300, 16000, subtype="DOUBLE")
    with pytest.raises(
        SpeechkernError, match=r"loud\.wav: holds 16000 NaN or infinite sample\(s\) \(or beyond float32"
    ):
        audio.load(tmp_path / "loud.wav")
    with audio.open_read(tmp_path / "loud.wav") as reader, pytest.raises(SpeechkernError, match="beyond float32"):
        audio.read_block(reader, 0, 100)


def test_the_benchmarks_take_a_run_directory_as_model_as_enhance_does(tiny_run, tmp_path, monkeypatch):
    """shipped_model.py and clean_guard.py --model RUN said 'no model here (config.json missing); train one' of a
    trained run (peers.py and enhance take run directories)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import shipped_model

    _, root, _ = tiny_run
    folder, model = shipped_model.load_model_or_exit(str(root / "run"))
    assert folder == root / "run" / "models" / "kernel" and model.n_units == 64
    (tmp_path / "x.wav").write_bytes(b"")
    with pytest.raises(SystemExit, match=rf"^--model {tmp_path}/x\.wav: .*is a file; give the folder"):
        shipped_model.load_model_or_exit(str(tmp_path / "x.wav"))


def test_file_names_with_newlines_escapes_or_markup_keep_each_message_on_one_line(tmp_path, monkeypatch, capsys):
    """A file named 'bad\\nname.wav' split 'skipped …' and the final error over two lines (and 'a\\nb.wav → …' on
    stdout, the lines a script reads); a terminal escape in a name reached the terminal; '[bold]x.wav' lost its
    '[bold]' on stdout (rich markup)."""
    import soundfile as sf
    from conftest import run_cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    for name in ("a\nb.wav", "[bold]x.wav", "e\x1b[31mred.wav"):
        sf.write(tmp_path / "in" / name, _speechlike(), 16000)
    (tmp_path / "in" / "bad\nname.wav").write_text("not audio")
    code, out, err = run_cli(["enhance", "-q", "in", "--model", str(ROOT / "speechkern" / "pretrained" / "general")],
                             capsys)  # fmt: skip
    assert code == 2
    assert sorted(line.split(" → ")[0] for line in out.splitlines()) == [
        "in/[bold]x.wav", "in/a\\nb.wav", "in/e\\x1b[31mred.wav"
    ]  # fmt: skip
    lines = err.splitlines()
    assert any(line.startswith("skipped in/bad\\nname.wav: not a readable audio file") for line in lines)
    assert lines[-1] == "error: 1 of 4 files could not be enhanced: in/bad\\nname.wav (reasons above)"
    assert "\x1b" not in out + err


def test_a_killed_runs_temporary_file_in_the_output_folder_is_named(tmp_path, monkeypatch, capsys):
    """kill -9 during `enhance in -o out` left out/.x_enhanced.wav.XXXXXXXX.part, hidden, never mentioned again
    (only the input folders' were)."""
    import soundfile as sf
    from conftest import run_cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "x.wav", _speechlike(), 16000)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".x_enhanced.wav.abcd1234.part").write_bytes(b"RIFF")
    (tmp_path / "out" / ".notes.txt.abcd1234.part").write_bytes(b"")  # not this run's: not ours to judge
    model = str(ROOT / "speechkern" / "pretrained" / "general")
    code, _, err = run_cli(["enhance", "-q", "in", "-o", "out", "--model", model], capsys)
    assert code == 0
    assert "found 1 stray .part file(s) in out: unfinished writes of interrupted runs, safe to delete" in err
    assert (tmp_path / "out" / "x_enhanced.wav").is_file()


@pytest.mark.parametrize("subtype, fmt", [("PCM_U8", "WAV"), ("PCM_S8", "AIFF"), ("PCM_16", "WAV"), ("PCM_24", "WAV")])
def test_pcm_outputs_round_to_the_nearest_step_with_no_dc(shipped, tmp_path, subtype, fmt):
    """libsndfile truncates floats toward −∞ when it writes PCM: every written file carried −0.5 LSB of DC (about
    −48 dBFS in 8-bit WAVs), through audio.save and through enhance_file's writer alike."""
    import soundfile as sf

    from speechkern import audio
    from speechkern.enhance import enhance_file

    lsb = 2.0 ** (1 - 8 * {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3}[subtype])
    y = (0.1 * np.random.default_rng(0).standard_normal(48000)).astype(np.float32)
    y -= y.mean()
    suffix = "." + fmt.lower()
    audio.save(tmp_path / f"saved{suffix}", y, 16000, subtype=subtype)
    back = sf.read(tmp_path / f"saved{suffix}", dtype="float64")[0]
    assert abs(back.mean() - y.mean()) < 0.05 * lsb and np.abs(back - y).max() <= 0.5 * lsb + 1e-9
    # enhance_file keeps the input's encoding; with atten_lim_db=0 it writes the input less its DC offset
    enhance_file(shipped, tmp_path / f"saved{suffix}", tmp_path / f"out{suffix}", atten_lim_db=0.0, clean_guard=False)
    out = sf.read(tmp_path / f"out{suffix}", dtype="float64")[0]
    assert sf.info(tmp_path / f"out{suffix}").subtype == subtype
    assert abs(out.mean()) < 0.05 * lsb, out.mean() / lsb
    assert np.all(audio.pcm_rounded(np.array([1.5, 1.0, -1.0, -2.0, 0.4 * lsb, -0.6 * lsb]), subtype)
                  == np.array([1 - lsb, 1 - lsb, -1.0, -1.0, 0.0, -lsb]))  # fmt: skip
