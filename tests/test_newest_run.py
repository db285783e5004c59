""" "The newest run" finds runs trained with --out, and says where it looked when there is none."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from speechkern.errors import SpeechkernError
from speechkern.models.select import find_model, newest_run, record_run


def _fake_run(path: Path, model: str = "kernel", mtime: float = 1_000_000.0, hidden: bool = False) -> Path:
    """A run folder with a model's config.json of a given modification time (newest_run only looks at files)."""
    folder = path / "models" / (f".{model}-parts" if hidden else model)
    folder.mkdir(parents=True)
    config = folder / "config.json"
    config.write_text("{}")
    os.utime(config, (mtime, mtime))
    return path


def test_runs_trained_with_out_are_found_through_the_index(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fake_run(tmp_path / "runs" / "demo", mtime=1_000_000)
    elsewhere = _fake_run(tmp_path / "big-disk" / "timit", mtime=2_000_000)
    assert newest_run() == Path("runs/demo")  # not known yet
    index = record_run(elsewhere)
    assert index == Path("runs/index.txt") and index.read_text() == f"{elsewhere.resolve()}\n"
    assert newest_run() == elsewhere.resolve()
    assert record_run(elsewhere) is None  # recorded once
    assert record_run(tmp_path / "runs" / "other") is None  # runs/<name> needs no entry
    newer = _fake_run(tmp_path / "runs" / "newer", mtime=3_000_000)
    assert newest_run().resolve() == newer.resolve()


def test_unfinished_parts_and_deleted_runs_do_not_count(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fake_run(tmp_path / "runs" / "done", mtime=1_000_000)
    _fake_run(tmp_path / "runs" / "interrupted", mtime=5_000_000, hidden=True)
    gone = _fake_run(tmp_path / "gone", mtime=9_000_000)
    record_run(gone)
    for path in sorted(gone.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    gone.rmdir()
    assert newest_run() == Path("runs/done")


def test_a_refused_folder_is_not_offered_as_the_newest_run(tmp_path, monkeypatch):
    """evaluate runs/x of a run whose recipe.toml was lost said "runs/x: not a run directory (no recipe.toml
    inside); ... the newest one here is runs/x": the folder it had just refused."""
    from speechkern.models.select import what_a_run_is

    monkeypatch.chdir(tmp_path)
    _fake_run(tmp_path / "runs" / "good", mtime=1_000_000)
    _fake_run(tmp_path / "runs" / "x", mtime=2_000_000)
    assert "the newest one here is runs/good;" in what_a_run_is(refused="runs/x")
    (tmp_path / "runs" / "empty").mkdir()
    with pytest.raises(SpeechkernError, match=r"^runs/empty: not a run directory .*the newest one here is runs/x;"):
        find_model("runs/empty")
    (tmp_path / "runs" / "good" / "models" / "kernel" / "config.json").unlink()
    assert re.search(r"in runs/<recipe name> \(or the --out folder\); make one with", what_a_run_is(refused="runs/x"))


def test_evaluate_of_a_run_without_its_recipe_says_recipe_toml_is_missing(tmp_path, monkeypatch):
    """A run whose recipe.toml was deleted (models/, manifests/ and train.log still there) was "not a run directory"
    with another run offered instead; it is this run, missing one file, which can be restored."""
    from speechkern.evaluate import evaluate

    monkeypatch.chdir(tmp_path)
    _fake_run(tmp_path / "runs" / "good", mtime=1_000_000)
    run = _fake_run(tmp_path / "runs" / "x", mtime=2_000_000)
    (run / "manifests").mkdir()
    (run / "train.log").write_text("")
    with pytest.raises(SpeechkernError) as err:
        evaluate("runs/x")
    message = str(err.value)
    assert message.startswith("runs/x: recipe.toml is missing from this run directory (it holds models/, manifests/, "
                              "train.log); restore recipe.toml from a copy, or write it again")  # fmt: skip
    assert "resume=True" in message and "runs/good" not in message and "not a run directory" not in message
    (tmp_path / "runs" / "bare").mkdir()  # a folder that holds nothing of a run is still no run
    with pytest.raises(SpeechkernError, match=r"^runs/bare: not a run directory \(no recipe.toml inside\)"):
        evaluate("runs/bare")


def test_evaluate_of_a_folder_without_recipe_says_so_before_asking_for_overwrite(tmp_path, monkeypatch, capsys):
    """A run that lost its recipe.toml but kept its report was answered 'a report exists already; pass
    --overwrite', and only with --overwrite 'not a run directory'."""
    from conftest import run_cli

    monkeypatch.chdir(tmp_path)
    _fake_run(tmp_path / "runs" / "x")
    (tmp_path / "runs" / "x" / "report").mkdir()
    (tmp_path / "runs" / "x" / "report" / "index.html").write_text("<html></html>")
    (tmp_path / "runs" / "x" / "report" / "results.json").write_text("{}")
    code, _, err = run_cli(["evaluate", "runs/x"], capsys)
    assert code == 2 and "runs/x: recipe.toml is missing from this run directory" in err and "--overwrite" not in err
    assert "with --resume (finished models are kept)" in err and len(err.strip().splitlines()) == 1


def test_no_model_names_the_places_searched(tmp_path, monkeypatch):
    import speechkern.models.select as select

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(select, "SHIPPED", tmp_path / "not-installed")  # an installation without the shipped model
    with pytest.raises(SpeechkernError) as err:
        find_model(None)
    message = str(err.value)
    assert str((tmp_path / "runs").resolve()) in message and "runs/index.txt" in message
    assert "speechkern train recipes/demo" in message and "--model" in message


def test_training_time_table_shows_autotune_minutes_beside_fit_minutes(tiny_run):
    import json

    _, root, summary = tiny_run
    run = root / "run"
    lines = (run / "training_time.md").read_text().splitlines()
    header = ("| model | condition | subbands | fit minutes | autotune minutes | transform minutes | epochs | "
              "validation MSE |")  # fmt: skip
    assert lines[0] == header
    rows = {r["model"]: r for r in json.loads((run / "training_time.json").read_text())["rows"]}
    kernel_line = next(line for line in lines if line.startswith("| kernel |"))
    assert f"| {rows['kernel']['autotune_minutes']:.2f} |" in kernel_line
    dnn_line = next(line for line in lines if line.startswith("| dnn |"))
    assert dnn_line.split("|")[5].strip() == "–"  # no kernel search for the DNN
    assert "autotune_minutes" in (run / "training_time.csv").read_text().splitlines()[0]


def test_training_time_table_shows_the_input_transform_minutes(tmp_path):
    """A learned metric's exact fits take minutes that the fit time leaves out: the table shows them."""
    from speechkern.pipeline import ModelTiming, write_timings

    write_timings(tmp_path, [
        ModelTiming("kernel", "all", 4, 4.391, 6, 0.05466, {"autotune_minutes": 1.519, "transform_minutes": 6.135}),
        ModelTiming("dnn", "all", 1, 8.5, 20, 0.045, {}),
    ])  # fmt: skip
    lines = (tmp_path / "training_time.md").read_text().splitlines()
    assert lines[2] == "| kernel | all | 4 | 4.39 | 1.52 | 6.13 | 6 | 0.05466 |"
    assert lines[3] == "| dnn | all | 1 | 8.50 | – | – | 20 | 0.04500 |"
    assert (tmp_path / "training_time.csv").read_text().splitlines()[1].endswith(",1.519,6.135")


def test_find_model_in_odd_places_says_what_to_give(tmp_path):
    """A config.json given as --model was 'not a run directory'; a per-condition run of one condition still asked
    for --condition; a model folder with weights but no config.json listed 'one model per condition ()'."""
    import shutil

    from speechkern.models.select import SHIPPED

    with pytest.raises(SpeechkernError, match=rf"config.json: is a file; give the folder that holds it, {SHIPPED} "):
        find_model(SHIPPED / "config.json")
    run = tmp_path / "run"
    shutil.copytree(SHIPPED, run / "models" / "kernel" / "ssn_0dB")
    model, folder = find_model(run)  # the one condition is the model
    assert folder == run / "models" / "kernel" / "ssn_0dB" and model.n_units > 0
    shutil.copytree(SHIPPED, run / "models" / "kernel" / "ssn_5dB")
    with pytest.raises(SpeechkernError, match=r"one model per condition \(ssn_0dB, ssn_5dB\); choose one"):
        find_model(run)
    assert find_model(run, condition="ssn_5dB")[1].name == "ssn_5dB"
    (run / "models" / "dnn").mkdir()
    shutil.copy(SHIPPED / "weights.safetensors", run / "models" / "dnn")
    with pytest.raises(SpeechkernError, match=r"dnn: holds no finished model .*`speechkern train --resume`"):
        find_model(run, system="dnn")


def test_find_model_checks_the_condition_of_a_multi_condition_run(tmp_path):
    """find_model ignored ``condition`` on a run whose one model serves every condition (only the CLI checked it);
    RUN/models/kernel of a per-condition run was 'not a run directory or model folder'."""
    import json
    import shutil

    from speechkern.models.select import SHIPPED

    run = tmp_path / "run"
    shutil.copytree(SHIPPED, run / "models" / "kernel")
    (run / "manifests").mkdir()
    line = {"id": "a", "split": "train", "condition": "ssn_0dB", "clean": "/c.wav", "noise": "/n.wav",
            "noise_name": "ssn", "snr_db": 0.0, "noise_offset": 0, "noise_start": 0, "noise_stop": 16000,
            "n_samples": 16000, "gain": 1.0, "seed": 1, "sr": 16000, "talker": "t", "paired": False}  # fmt: skip
    (run / "manifests" / "train.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(SpeechkernError, match=r"--condition babble_5dB: .* not trained on babble_5dB; give one of "
                                              r"ssn_0dB or drop"):  # fmt: skip
        find_model(run, condition="babble_5dB")
    assert find_model(run, condition="ssn_0dB")[1] == run / "models" / "kernel"
    per = tmp_path / "per"
    for condition in ("ssn_0dB", "ssn_5dB"):
        shutil.copytree(SHIPPED, per / "models" / "kernel" / condition)
    assert find_model(per / "models" / "kernel", condition="ssn_5dB")[1] == per / "models" / "kernel" / "ssn_5dB"
    with pytest.raises(SpeechkernError, match=r"kernel: one model per condition \(ssn_0dB, ssn_5dB\); choose one"):
        find_model(per / "models" / "kernel")
    with pytest.raises(SpeechkernError, match=r"no model for condition babble_0dB; available: ssn_0dB, ssn_5dB"):
        find_model(per / "models" / "kernel", condition="babble_0dB")


def test_a_damaged_line_of_the_index_is_passed_over(tmp_path, monkeypatch):
    """A line of runs/index.txt too long for a file name ended every enhance without --model in an OSError
    traceback (File name too long)."""
    monkeypatch.chdir(tmp_path)
    run = _fake_run(tmp_path / "elsewhere" / "run")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "index.txt").write_text(f"{'a' * 5000}\nnul\x00byte\n{run}\n")
    assert newest_run() == run


@pytest.mark.parametrize(("option", "value"), [("system", ""), ("condition", ""), ("system", " ")])
def test_an_empty_system_or_condition_is_refused(tmp_path, option, value):
    """--system '' (an unset variable in a script) took the default model without a word, and --condition ''
    said the model was 'not trained on ; give one of ...'."""
    run = _fake_run(tmp_path / "run")
    with pytest.raises(SpeechkernError, match=rf"^--{option} '{value}': empty; expected .*, or leave the option out"):
        find_model(run, **{option: value})


def test_an_unfinished_model_folder_is_not_chosen_over_a_finished_one(tmp_path, monkeypatch):
    """A run whose models/kernel held no finished model (emptied, or its config.json lost) beside a finished
    models/dnn: enhance without --model or --system chose kernel and stopped with "holds no finished model"."""
    import speechkern.models.select as select

    monkeypatch.chdir(tmp_path)
    run = _fake_run(tmp_path / "runs" / "x", model="dnn")
    (run / "models" / "kernel").mkdir()
    loaded = []
    monkeypatch.setattr(select.MaskModel, "load", staticmethod(lambda folder, device="cpu": loaded.append(folder)))
    _, where = find_model(None)
    assert where == Path("runs/x/models/dnn") and loaded == [where]
    with pytest.raises(SpeechkernError, match=r"^runs/x/models/kernel: holds no finished model"):
        find_model("runs/x", system="kernel")  # asked for: what it lacks
    with pytest.raises(SpeechkernError, match=r"^runs/x: has no kernel1 model; available: dnn$"):
        find_model("runs/x", system="kernel1")
