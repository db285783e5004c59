"""The v3 additions under hostile use: the benchmarks' options, and rewriting a model folder in place."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _benchmark(name: str, monkeypatch):
    """benchmarks/<name>.py as a module; reaching for the dev data fails the test (the options are checked first)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = __import__(name)

    def no_data():
        raise AssertionError("the options were not checked before the dev data")

    monkeypatch.setattr(module, "require_dev_data", no_data)
    return module


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value.code)
    assert "\n" not in message and "Traceback" not in message
    return message


ODD_OPTIONS = [
    (["--utterances", "-1"], "--utterances -1: expected a count"),  # was [:-1], every utterance but the last
    (["--max-seconds", "-1"], "--max-seconds -1: expected at least 1 s"),  # was [:-16000], the ends cut off
    (["--max-seconds", "0"], "--max-seconds 0: "),  # was a traceback on silent speech
    (["--max-seconds", "nan"], "--max-seconds nan: "),
    (["--snrs", "0", "0"], "--snrs 0 0: expected distinct finite SNRs"),  # was averaged with itself
    (["--snrs", "nan"], "--snrs nan: "),  # was a traceback from the features
    (["--snrs", "inf"], "--snrs inf: "),
    (["--snrs", "1e300"], "--snrs 1e+300: expected distinct finite SNRs in dB from -100 to 100"),  # OverflowError
]


@pytest.mark.parametrize(("argv", "message"), ODD_OPTIONS + [
    (["--speed-minutes", "-1"], "--speed-minutes -1: expected at least 0.5 minutes"),  # was skipped silently
    (["--speed-minutes", "0.001"], "--speed-minutes 0.001: "),  # timed 60 ms: "0.4× real time → NOT met"
    (["--speed-minutes", "nan"], "--speed-minutes nan: "),  # was skipped silently
    (["--speed-minutes", "inf"], "--speed-minutes inf: "),  # was an OverflowError after the scoring
    (["--threads", "0"], "--threads 0: expected at least 1"),  # was torch's RuntimeError traceback
])  # fmt: skip
def test_shipped_model_refuses_odd_options_in_one_line(argv, message, monkeypatch):
    shipped_model = _benchmark("shipped_model", monkeypatch)
    with pytest.raises(SystemExit) as err:
        shipped_model.main(["--split", "val", "--no-clean-guard", *argv])
    assert message in _one_line(err)


@pytest.mark.parametrize("name", ["shipped_model", "clean_guard"])
def test_benchmarks_refuse_a_missing_model_or_json_folder_before_any_work(name, monkeypatch, tmp_path):
    module = _benchmark(name, monkeypatch)
    with pytest.raises(SystemExit) as err:  # was a SpeechkernError traceback
        module.main(["--model", str(tmp_path / "none")])
    assert _one_line(err).startswith(
        f"--model {tmp_path / 'none'}: "
    ) and "no such run directory or model folder" in str(err.value)
    out = tmp_path / "no" / "scores.json"
    with pytest.raises(SystemExit) as err:  # was a FileNotFoundError at the end, the results lost
        module.main(["--json", str(out)])
    assert _one_line(err) == f"--json {out}: the folder {out.parent} does not exist; create it or choose another"
    earlier = tmp_path / "earlier.json"
    earlier.write_text("{}")
    with pytest.raises(SystemExit) as err:  # an earlier run's results were replaced without asking
        module.main(["--json", str(earlier)])
    assert _one_line(err) == f"--json {earlier}: exists already; choose another name or pass --overwrite to replace it"
    assert earlier.read_text() == "{}"


@pytest.mark.parametrize(("argv", "message"), ODD_OPTIONS)
def test_clean_guard_refuses_odd_options_in_one_line(argv, message, monkeypatch, tmp_path):
    clean_guard = _benchmark("clean_guard", monkeypatch)
    with pytest.raises(SystemExit) as err:
        clean_guard.main(["--model", str(tmp_path), *argv])
    assert message in _one_line(err)


def test_clean_guard_save_and_from_json_refusals(monkeypatch, tmp_path):
    clean_guard = _benchmark("clean_guard", monkeypatch)
    with pytest.raises(SystemExit) as err:
        clean_guard.main(["--save"])
    assert _one_line(err).startswith("--save needs --model DIR")
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"rows": []}))
    with pytest.raises(SystemExit) as err:
        clean_guard.main(["--save", "--model", str(tmp_path), "--from-json", str(scores)])
    assert _one_line(err).startswith(f"--save with --from-json {scores}: ")
    for content in (None, "{not json", '{"other": 1}', '{"rows": [1]}'):  # were tracebacks
        if content is None:
            scores.unlink()
        else:
            scores.write_text(content)
        with pytest.raises(SystemExit) as err:
            clean_guard.main(["--from-json", str(scores)])
        assert _one_line(err).startswith(f"--from-json {scores}: not the scores of an earlier --json")


def test_save_model_over_a_folder_keeps_its_other_files_and_the_old_model_when_the_rename_fails(
    tiny_run, tmp_path, monkeypatch
):
    """clean_guard.py --save rewrites a model folder in place: a copy of the shipped model keeps its
    ATTRIBUTION.md (it was deleted), and a failed rename leaves the old model (it was deleted first)."""
    import os

    from speechkern.models import io
    from speechkern.postfilter import GuardConfig

    _, root, _ = tiny_run
    folder = tmp_path / "model"
    shutil.copytree(root / "run" / "models" / "kernel", folder)
    (folder / "ATTRIBUTION.md").write_text("talkers: CC BY 4.0")
    model = io.load_model(folder)
    model.clean_guard = GuardConfig(calibration=(0.0, 1.0, 0.5), thresholds=(9.0, 12.0))
    io.save_model(model, folder, overwrite=True)
    assert io.load_model(folder).clean_guard == model.clean_guard
    assert (folder / "ATTRIBUTION.md").read_text() == "talkers: CC BY 4.0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left beside it

    real_replace = os.replace

    def failing(src, dst):
        if Path(dst) == folder and ".model.old." not in str(src):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", failing)
    with pytest.raises(OSError, match="No space"):
        io.save_model(dataclasses.replace(model, clean_guard=None), folder, overwrite=True)
    assert io.load_model(folder).clean_guard == model.clean_guard  # the old model, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_clean_guard_save_on_a_tiny_model_leaves_a_loadable_model_with_its_guard(tiny_run, dev_data, tmp_path):
    """benchmarks/clean_guard.py --model DIR --save on two of the dev data's validation talkers (about 6 s); a
    model of another rate than the dev mixtures is refused (it was fed them as its own rate)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import clean_guard
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from speechkern.models.io import load_model

    _, root, _ = tiny_run
    folder = tmp_path / "model"
    shutil.copytree(root / "run" / "models" / "kernel", folder)
    before = load_model(folder)
    assert clean_guard.main(["--model", str(folder), "--save", "--utterances", "2", "--snrs", "0", "20"]) == 0
    after = load_model(folder)
    assert after.clean_guard is not None and after.clean_guard.thresholds[1] > after.clean_guard.thresholds[0]
    feats = np.random.default_rng(0).standard_normal((20, before.stats.mean.shape[0])).astype(np.float32)
    np.testing.assert_array_equal(after.mask(feats), before.mask(feats))
    eight_khz = dataclasses.replace(before, feature_config=before.feature_config.model_copy(update={"sr": 8000}))
    with pytest.raises(SystemExit) as err:
        clean_guard.check_rate(folder, eight_khz, 16000)
    assert _one_line(err).endswith("is for 8000 Hz audio, the dev mixtures are 16000 Hz; score a 16000 Hz model")


def test_clean_guard_save_leaves_the_folder_as_it_was_on_every_failure(tiny_run, tmp_path, monkeypatch):
    """A folder changed while the guard was fitted (it was overwritten with the model read before), a guard that
    is no guard and a failed write (they were tracebacks) stop in one line; the folder keeps its model."""
    from speechkern.models import io

    clean_guard = _benchmark("clean_guard", monkeypatch)
    _, root, _ = tiny_run
    folder = tmp_path / "model"
    shutil.copytree(root / "run" / "models" / "kernel", folder)
    model = io.load_model(folder)
    loaded = (folder / "config.json").read_bytes()
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def unchanged() -> bool:
        return {p.name: p.read_bytes() for p in folder.iterdir()} == before

    with pytest.raises(SystemExit) as err:
        clean_guard.save_guard(model, folder, (0.0, 1.0, 0.0), (5.0, 6.0), loaded + b" ")
    assert _one_line(err) == f"--save: {folder} changed while its guard was fitted, so it is left as it was; " \
        "run clean_guard.py again"  # fmt: skip
    with pytest.raises(SystemExit) as err:
        clean_guard.save_guard(model, folder, (0.0, float("nan"), 0.0), (5.0, 6.0), loaded)
    assert "expected finite numbers" in _one_line(err) and unchanged()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "save_model", full)
    with pytest.raises(SystemExit) as err:
        clean_guard.save_guard(model, folder, (0.0, 1.0, 0.0), (5.0, 6.0), loaded)
    assert _one_line(err).startswith(f"--save: {folder} cannot be written ([Errno 28] No space") and unchanged()
    monkeypatch.undo()
    clean_guard.save_guard(model, folder, (0.0, 1.0, 0.0), (5.0, 6.0), loaded)
    assert io.load_model(folder).clean_guard.thresholds == (5.0, 6.0)


@pytest.mark.parametrize("margin_s", [float("nan"), float("inf"), -1.0])
def test_enhance_refuses_a_margin_that_is_no_length(tiny_run, tmp_path, margin_s):
    """max(nan, reach) is nan: the margin was NaN and enhance a ValueError traceback; inf and negative alike."""
    from speechkern import audio
    from speechkern.enhance import enhance_file, enhance_signal
    from speechkern.errors import SpeechkernError
    from speechkern.models.io import load_model

    _, root, _ = tiny_run
    model = load_model(root / "run" / "models" / "kernel")
    y = np.zeros(16000, np.float32)
    audio.save(tmp_path / "in.wav", y, 16000)
    message = f"margin_s={margin_s:g}: expected seconds of context on each side of a block, such as 1"
    with pytest.raises(SpeechkernError, match=message):
        enhance_signal(model, y, margin_s=margin_s)
    with pytest.raises(SpeechkernError, match=message):
        enhance_file(model, tmp_path / "in.wav", tmp_path / "out.wav", margin_s=margin_s)
    assert not (tmp_path / "out.wav").exists()


def test_save_model_over_a_file_is_refused_and_keeps_it(tiny_run, tmp_path):
    """A file where the model folder should go was renamed aside and left behind as .name.old.* (rmtree ignores
    files); before the move-aside it was a NotADirectoryError traceback."""
    from speechkern.errors import SpeechkernError
    from speechkern.models import io

    _, root, _ = tiny_run
    model = io.load_model(root / "run" / "models" / "kernel")
    (tmp_path / "model").write_text("notes")
    with pytest.raises(SpeechkernError, match="model: is a file, not a model folder; choose another name"):
        io.save_model(model, tmp_path / "model", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and (tmp_path / "model").read_text() == "notes"


@pytest.mark.parametrize("version", [2, 3])
def test_a_model_folder_of_an_older_format_loads_with_the_default_guard(tiny_run, tmp_path, version):
    """A folder as speechkern wrote it before format 4: no clean_guard entry, no floor_window_s among the features,
    the configuration copy in the weights signed without them."""
    from safetensors.torch import load_file, save_file

    from speechkern.enhance import enhance_signal
    from speechkern.models import io

    _, root, _ = tiny_run
    new = io.load_model(root / "run" / "models" / "kernel")
    folder = tmp_path / f"v{version}"
    folder.mkdir()
    config = json.loads((root / "run" / "models" / "kernel" / "config.json").read_text())
    config["format_version"] = version
    del config["clean_guard"], config["features"]["floor_window_s"]
    tensors = load_file(root / "run" / "models" / "kernel" / "weights.safetensors")
    save_file(tensors, str(folder / "weights.safetensors"), metadata={io.CONFIG_KEY: io._signed(config)})
    (folder / "config.json").write_text(json.dumps(config))
    old = io.load_model(folder)
    assert old.clean_guard is None and old.feature_config == new.feature_config
    y = 0.05 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    np.testing.assert_array_equal(enhance_signal(old, y), enhance_signal(new, y))


def test_shipped_model_benchmark_scores_one_validation_mixture(dev_data, monkeypatch, tmp_path, capsys):
    """benchmarks/shipped_model.py end to end on one 3-second validation mixture: the table row and the JSON
    hold real scores (the enhanced STOI above the noisy one at 0 dB)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import shipped_model

    out = tmp_path / "scores.json"
    argv = ["--split", "val", "--utterances", "1", "--snrs", "0", "--max-seconds", "3", "--speed-minutes", "0"]
    assert shipped_model.main([*argv, "--json", str(out)]) in (0, None)
    assert "| 0 | 0." in capsys.readouterr().out
    row = json.loads(out.read_text())["table"]["0.0"]
    assert 0.5 < row["stoi_noisy"] < row["stoi_enhanced"] <= 1 and np.isfinite(row["pesq_enhanced"])
