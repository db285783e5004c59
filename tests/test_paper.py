"""The paper recipe (per-condition protocol on the dev data) and benchmarks/paper_tables.py: the recipe refuses bad
noises and empty splits at load; the tables keep the paper's layout and their win/tie/loss counts add up; a tiny
run of the benchmark goes end to end on the real dev audio (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from speechkern.errors import SpeechkernError
from speechkern.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import paper_tables  # noqa: E402


def test_paper_recipe_loads_with_five_noises_three_snrs_per_condition():
    recipe = load_recipe(ROOT / "recipes" / "paper")
    assert recipe.train.mode == "per-condition"
    assert recipe.data.snrs == [-5.0, 0.0, 5.0]
    assert len(recipe.data.noises) == 5 and recipe.data.noises[:2] == ["ssn", "babble"]
    assert (recipe.target.kind, recipe.target.domain, recipe.features.kind) == ("irm", "cochleagram", "complementary")
    stand_ins = paper_tables.stand_in_noises()
    assert set(stand_ins) == set(paper_tables.NOISES)
    assert {paper_tables.noise_name(v) for v in stand_ins.values()} == {
        "ssn", "babble", "machine2_dough-machine-electricity-001_cut", "boat",
        "underground_large-underground-metro-station-heavy-ventilation-and-distant-echo-voices"}  # fmt: skip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ('data.noises=["ssn", "babel"]', r"data.noises: 'babel' is not a noise; expected ssn, babble"),
        ('data.conditions=["factory1@-5"]', r"data.conditions: 'factory1@-5' names no noise of data.noises"),
        ("data.n_val=0", r"data.n_val: 0 utterances leave the val split empty"),
        ("data.n_test=0", r"data.n_test: 0 utterances leave the test split empty"),
    ],
)
def test_paper_recipe_refuses_unknown_noises_and_empty_splits_at_load(override, message):
    with pytest.raises(SpeechkernError, match=message) as err:
        load_recipe(ROOT / "recipes" / "paper", [override])
    assert "\n" not in str(err.value)


def test_conditions_naming_the_recipe_noises_load():
    recipe = load_recipe(ROOT / "recipes" / "paper", ['data.conditions=["ssn@-2", "babble@0", "boat@5"]'])
    assert recipe.data.conditions == ["ssn@-2", "babble@0", "boat@5"]
    # with pooled noises ('dir', 'manifest') the names are known only once the files are read: not refused here
    load_recipe(ROOT / "recipes" / "general", ['data.conditions=["anything@0"]'])


def _row(task, noise, snr, kernel, dnn, kernel1=None, noisy=None):
    row = {"task": task, "noise": noise, "snr": snr, "condition": f"{noise}_{snr:g}dB", "kernel": kernel, "dnn": dnn}
    row["kernel1"] = kernel1 or dict(kernel)
    row["noisy"] = noisy or {"stoi": 0.6, "pesq": 1.5}
    return row


def _timed(scores, minutes, epochs=1):
    return {**scores, "minutes": minutes, "epochs": epochs, "minutes_to_best": minutes, "channel_mse": [0.01] * 64}


def test_tables_keep_the_paper_layout_and_the_counts_add_up():
    ssn_k = _timed({"mse": 0.0140, "stoi": 0.801, "pesq": 2.30}, 1.0)
    ssn_d = _timed({"mse": 0.0160, "stoi": 0.804, "pesq": 2.35}, 4.0)
    engine_k = _timed({"mse": 0.0190, "stoi": 0.75, "pesq": 2.10}, 2.0)
    engine_d = _timed({"mse": 0.0180, "stoi": 0.74, "pesq": 2.00}, 3.0)
    ibm_k = _timed({"mse": 0.08, "accuracy": 0.93, "stoi": 0.84}, 0.5)
    ibm_d = _timed({"mse": 0.09, "accuracy": 0.90, "stoi": 0.84}, 1.0)
    rows = [
        _row("irm", "ssn", 0.0, ssn_k, ssn_d),  # kernel wins MSE, ties STOI at two decimals (0.801, 0.804), loses PESQ
        _row("irm", "engine", -5.0, engine_k, engine_d),  # kernel loses MSE, wins STOI and PESQ
        _row("ibm", "babble", 0.0, ibm_k, ibm_d),
    ]
    c = paper_tables.counts(rows)
    assert c[("irm", "mse")] == {"wins": 1, "ties": 0, "losses": 1}
    assert c[("irm", "stoi")] == {"wins": 1, "ties": 1, "losses": 0}
    assert c[("irm", "pesq")] == {"wins": 1, "ties": 0, "losses": 1}
    assert c[("ibm", "accuracy")] == {"wins": 1, "ties": 0, "losses": 0}
    assert c[("ibm", "stoi")] == {"wins": 0, "ties": 1, "losses": 0}
    assert all(sum(v.values()) == n for (task, _), v in c.items() for n in [2 if task == "irm" else 1])

    text = paper_tables.tables(rows)
    lines = text.splitlines()
    table = lines.index("Table 6.1 (IRM; ours (paper), MSE ×10⁻², K = kernel with 4 subbands, D = DNN)")
    assert lines[table + 1].startswith("| noise | SNR | MSE K | MSE D | STOI K | STOI D | STOI noisy | PESQ K |")
    # the paper's row order (engine first), our value then the paper's in parentheses; MSE ×10⁻²
    assert lines[table + 3] == ("| engine | -5 | 1.90 (1.17) | 1.80 (1.82) | 0.75 (0.80) | 0.74 (0.77) | 0.60 (0.57) "
                                "| 2.10 (2.19) | 2.00 (2.16) | 1.50 (1.41) |")  # fmt: skip
    assert lines[table + 4].startswith("| SSN | 0 | 1.40 (1.48) | 1.60 (1.67) |")
    assert "| babble | 0 | 0.90 (0.90) | 0.93 (0.92) | 0.84 (0.83) | 0.84 (0.86) | 0.60 |" in lines
    assert "| SSN | 0 | 1.40 / 0.80 / 2.30 | 1.40 / 0.80 / 2.30 | 1.60 / 0.80 / 2.35 | 1.60 / 0.81 / 2.35 | " \
           "1.48 / 0.82 / 2.36 |" in lines  # fmt: skip
    assert "| IRM | DNN | 2 | 3.50 | 3.50 | 1.0 | 124 | 93 |" in lines
    assert "| IRM | kernel (4 subbands) | mse | 1 | 0 | 1 | 2 |" in lines
    ratio = "- IRM ssn_0dB: kernel (1 subband) ×0.25, kernel (4 subbands) ×0.25 of the DNN's time to its best epoch"
    assert ratio in lines


def test_units_limit_noises_and_snrs_and_refuse_unknown_noises():
    args = paper_tables.argparse.Namespace(noises="ssn,factory", snrs="0,5", tasks="irm,ibm", ibm="ssn@-5", frames=2000,
                                           utterances=10, n_val=3, n_test=3, extra=[], models="dnn")  # fmt: skip
    units = paper_tables.units_of(args)
    assert [u["condition"] for u in units] == ["ssn_0dB", "ssn_5dB", "factory_0dB", "factory_5dB", "ssn_-5dB"]
    assert "target.kind=ibm" in units[-1]["sets"] and "target.kind=ibm" not in units[0]["sets"]
    assert len({u["key"] for u in units}) == len(units)
    with pytest.raises(SystemExit, match="--noises: unknown factory1"):
        paper_tables.units_of(paper_tables.argparse.Namespace(**{**vars(args), "noises": "factory1"}))


def test_rows_measured_with_another_recipe_are_not_reused(tmp_path, monkeypatch):
    """A row's key holds the recipe's digest: after an edit of recipe.toml every condition is measured again."""
    args = paper_tables.argparse.Namespace(noises="ssn", snrs="0", tasks="irm", ibm="", frames=2000, utterances=10,
                                           n_val=3, n_test=3, extra=[], models="dnn")  # fmt: skip
    before = [u["key"] for u in paper_tables.units_of(args)]
    (tmp_path / "recipe.toml").write_text((paper_tables.RECIPE / "recipe.toml").read_text())
    monkeypatch.setattr(paper_tables, "RECIPE", tmp_path)
    assert [u["key"] for u in paper_tables.units_of(args)] == before
    text = (tmp_path / "recipe.toml").read_text().replace('input_transform = "rfm"', 'input_transform = "pca"')
    (tmp_path / "recipe.toml").write_text(text)
    after = [u["key"] for u in paper_tables.units_of(args)]
    assert after != before and after[0].startswith("irm/ssn_0dB/2000/10/recipe-")


@pytest.mark.slow
def test_benchmark_runs_end_to_end_on_two_tiny_conditions(dev_data, tmp_path):
    argv = [sys.executable, str(ROOT / "benchmarks" / "paper_tables.py"), "--tasks", "irm", "--noises", "ssn",
            "--snrs", "0,5", "--frames", "1500", "--utterances", "8", "--n-val", "3", "--n-test", "3", "--out",
            str(tmp_path), "--figure-condition", "ssn_5dB", "--extra", "kernel.autotune=false", "--extra",
            "dnn.epochs=2", "--extra", "dnn.hidden=[64]", "--extra", "features.context=1",
            "--extra", "train.max_val_frames=500", "--extra", "kernel.input_transform=none"]  # fmt: skip
    # six `speechkern train` processes and two evaluations: 2–3 min idle, 15 min or more on the loaded 2 cores
    out = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=2400)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["condition"] for r in rows] == ["ssn_0dB", "ssn_5dB"]
    for r in rows:
        assert 0 < r["kernel"]["mse"] < 0.2 and 0 < r["dnn"]["mse"] < 0.2 and r["kernel1"]["minutes"] > 0
        assert len(r["kernel"]["channel_mse"]) == 64
    assert "| SSN | 5 |" in out.stdout and "| SSN | 0 |" in out.stdout
    assert "| IRM | kernel (4 subbands) | mse |" in out.stdout
    assert (tmp_path / "fig6_2.png").stat().st_size > 1000
    again = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=300)  # resumes: nothing to do
    assert again.returncode == 0 and "2 kept from" in again.stdout and "trained" not in again.stdout


def _args(**changes):
    base = dict(noises="ssn", snrs="0", tasks="irm", ibm="", frames=2000, utterances=10, n_val=3, n_test=3, extra=[],
                models="kernel,kernel1,dnn")  # fmt: skip
    return paper_tables.argparse.Namespace(**{**base, **changes})


@pytest.mark.parametrize(
    "changes, message",
    [({"snrs": "0,five"}, "--snrs: 'five' is not a finite number of dB"), ({"snrs": "nan"}, "--snrs: 'nan' is not"),
     ({"snrs": ""}, "--snrs: no SNR given"), ({"frames": 0}, "--frames 0: expected at least 1"),
     ({"frames": -5}, "--frames -5: expected at least 1"), ({"tasks": "irmx"}, "--tasks: unknown irmx"),
     ({"tasks": ""}, "--tasks: no task given"), ({"models": "kernel,svm"}, "--models: unknown svm"),
     ({"tasks": "ibm", "ibm": "ssn"}, "--ibm: 'ssn' is not NOISE@SNR"),
     ({"tasks": "ibm", "ibm": "ssn@x"}, "--ibm: 'ssn@x' is not NOISE@SNR"),
     ({"tasks": "ibm", "ibm": "hum@0"}, "--ibm: unknown noise hum"),
     ({"utterances": -1}, "--utterances -1: recipe key 'data.n_train' = -1"),
     ({"n_val": 0}, "--n-val 0: recipe key data.n_val: 0 utterances leave the val split empty"),
     ({"n_test": -3}, "--n-test -3: recipe key 'data.n_test'"),
     ({"extra": ["kernel.epochs=0"]}, "--extra kernel.epochs=0: recipe key 'kernel.epochs' = 0"),
     ({"extra": ["foo"]}, "--extra 'foo': expected KEY=VALUE"), ({"snrs": "500"}, "data.snrs")],
)  # fmt: skip
def test_odd_arguments_are_refused_in_one_line_before_any_work(changes, message):
    """Each was a traceback (float('five'), an IndexError on --ibm), no work at all (--tasks irmx ran IRM, --tasks ''
    nothing), or a refusal only inside the first `speechkern train` process (bad recipe values); a value of the
    script's own options (--utterances -1) was named as the recipe override it becomes, "condition irm ssn_0dB:
    recipe override data.n_train=-1", not as the option given."""
    with pytest.raises(SystemExit) as err:
        paper_tables.units_of(_args(**changes))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "changes, message",
    [({"figure_condition": "ssn_7dB"}, "--figure-condition ssn_7dB: not an IRM condition of this run; expected one "
      "of ssn_0dB"), ({"figure_condition": "ssn_0dB", "tasks": "ibm"}, "--tasks has no irm, so no figure")],
)  # fmt: skip
def test_a_figure_condition_that_is_not_measured_is_refused_before_any_work(changes, message):
    """--figure-condition with a typo ran every condition, then drew Fig. 6.2 for another one."""
    with pytest.raises(SystemExit) as err:
        paper_tables.units_of(_args(**changes))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_the_figure_defaults_to_the_papers_condition_else_the_first(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr("speechkern.report._save_figure", lambda fig, path: drawn.append(path))
    row = {m: {"channel_mse": [0.1] * 64} for m in paper_tables.MODELS}
    rows = [{"task": "irm", "condition": c, **row} for c in ("factory_0dB", "ssn_0dB")]
    assert paper_tables.units_of(_args())  # no --figure-condition: accepted
    assert paper_tables.figure(rows, tmp_path / "f.png") == "ssn_0dB"
    assert paper_tables.figure(rows[:1], tmp_path / "f.png") == "factory_0dB"


def test_a_repeated_snr_is_measured_once():
    """--snrs 0,0.0,-0 made three units with one key: the condition was measured and written three times."""
    units = paper_tables.units_of(_args(snrs="0,0.0,-0,5"))
    assert [u["condition"] for u in units] == ["ssn_0dB", "ssn_5dB"]


def _fake_main(tmp_path, monkeypatch, argv, measured, stop_at=None):
    """Run main() with ``measure`` replaced by a stand-in that records the condition (and is interrupted at
    ``stop_at``)."""

    def measure(unit, run_dir, models, tick):
        if unit["condition"] == stop_at:
            raise KeyboardInterrupt
        measured.append(unit["condition"])
        return {k: unit[k] for k in ("key", "task", "noise", "snr", "condition")}

    monkeypatch.setattr(paper_tables, "measure", measure)
    monkeypatch.setattr(paper_tables, "require_dev_data", lambda: None)
    monkeypatch.setenv("SPEECHKERN_CACHE", str(tmp_path / "cache"))
    paper_tables.main(["--tasks", "irm", "--noises", "ssn", "--snrs", "0,5,-5", "--frames", "100", *argv])


def test_an_interrupted_run_keeps_its_rows_and_resumes_without_duplicates(tmp_path, monkeypatch, capsys):
    out, measured = tmp_path / "out", []
    with pytest.raises(SystemExit, match=r"interrupted; 1 of 3 conditions kept in .*results.jsonl; run the same "):
        _fake_main(tmp_path, monkeypatch, ["--out", str(out)], measured, stop_at="ssn_5dB")
    assert measured == ["ssn_0dB"]
    _fake_main(tmp_path, monkeypatch, ["--out", str(out)], measured)
    assert measured == ["ssn_0dB", "ssn_5dB", "ssn_-5dB"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["condition"] for r in rows) == ["ssn_-5dB", "ssn_0dB", "ssn_5dB"]
    _fake_main(tmp_path, monkeypatch, ["--out", str(out)], measured)
    assert len(measured) == 3 and "3 kept from" in capsys.readouterr().out
    assert len((out / "results.jsonl").read_text().splitlines()) == 3


def test_a_row_cut_off_mid_line_is_measured_again_and_the_next_row_stays_whole(tmp_path, monkeypatch):
    """A kill while the row was written left half a line; the next row was appended to it, and the file no longer
    parsed (json.JSONDecodeError traceback on every later run)."""
    out, measured = tmp_path / "out", []
    _fake_main(tmp_path, monkeypatch, ["--out", str(out)], measured)
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    _fake_main(tmp_path, monkeypatch, ["--out", str(out)], measured)
    assert measured[3:] == [json.loads(lines[2])["condition"]]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and len({r["key"] for r in rows}) == 3


@pytest.mark.parametrize("garbage", ["not json", "[1, 2]", '{"no": "key"}', '{"key": "irm/ssn_0dB/2000"}'])
def test_garbage_in_results_is_refused_naming_the_line_and_kept(tmp_path, monkeypatch, garbage):
    out, measured = tmp_path / "out", []
    out.mkdir()
    text = f"{garbage}\n" + '{"key": "x", "task": "irm", "noise": "ssn", "snr": 0, "condition": "ssn_0dB"}\n'
    (out / "results.jsonl").write_text(text)
    with pytest.raises(SystemExit, match=r"results.jsonl:1: not a row of this benchmark .*; delete the line"):
        _fake_main(tmp_path, monkeypatch, ["--out", str(out)], measured)
    assert measured == [] and (out / "results.jsonl").read_text() == text


def test_an_out_folder_that_is_a_file_or_read_only_is_refused_before_any_work(tmp_path, monkeypatch):
    measured = []
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(SystemExit, match=r"--out .*file: is a file, not a folder; choose another --out"):
        _fake_main(tmp_path, monkeypatch, ["--out", str(tmp_path / "file")], measured)
    assert (tmp_path / "file").read_text() == "keep me"
    (tmp_path / "odd" / "results.jsonl").mkdir(parents=True)  # was an IsADirectoryError after the first condition
    with pytest.raises(SystemExit, match=r"--out .*odd: its results.jsonl is not a file"):
        _fake_main(tmp_path, monkeypatch, ["--out", str(tmp_path / "odd")], measured)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root)")
        with pytest.raises(SystemExit, match=r"--out .*locked.*cannot be written"):
            _fake_main(tmp_path, monkeypatch, ["--out", str(locked / "sub")], measured)
    finally:
        locked.chmod(0o700)
    assert measured == []


def test_a_relative_out_folder_is_taken_from_where_the_command_runs(tmp_path, monkeypatch):
    """main() changes to the checkout for the recipe's data paths: --out runs/x landed in the checkout's runs/x."""
    monkeypatch.chdir(tmp_path)
    _fake_main(tmp_path, monkeypatch, ["--out", "mine"], [])
    assert (tmp_path / "mine" / "results.jsonl").is_file()


def test_options_given_with_quick_are_kept(tmp_path, monkeypatch):
    """--quick replaced --noises, --snrs, --frames, ... even where they were given: --quick --noises babble
    measured ssn and factory."""
    measured = []
    monkeypatch.setattr(paper_tables, "measure", lambda unit, *_: measured.append(unit["key"]) or dict(unit))
    monkeypatch.setattr(paper_tables, "require_dev_data", lambda: None)
    monkeypatch.setenv("SPEECHKERN_CACHE", str(tmp_path / "cache"))
    paper_tables.main(["--quick", "--noises", "babble", "--frames", "500", "--out", str(tmp_path / "out")])
    assert [k.split("/")[:3] for k in measured] == [["irm", "babble_0dB", "500"], ["ibm", "ssn_-5dB", "500"]]
    assert all("kernel.gammas=[0.5,1.0]" in k and "/40/" in k for k in measured)


@pytest.mark.parametrize("timing", ["missing", "garbage", "without dnn"])
def test_a_run_without_the_timing_of_a_model_is_named_not_a_traceback(tmp_path, monkeypatch, timing):
    """A run whose models were kept from an earlier session but whose training_time.json was lost or lacks a model
    raised FileNotFoundError or KeyError after the evaluation."""
    from types import SimpleNamespace

    import speechkern.evaluate

    rows = [{"condition": "ssn_0dB", "system": s, "mse": 0.01, "stoi": 0.8} for s in ("noisy", "kernel", "dnn")]
    ev = SimpleNamespace(rows=rows, channel_mse={"kernel": [0.0] * 64, "dnn": [0.0] * 64}, files=["a"])
    monkeypatch.setattr(paper_tables, "train", lambda *a: None)
    monkeypatch.setattr(speechkern.evaluate, "evaluate", lambda *a, **k: ev)
    run = tmp_path / "run"
    run.mkdir()
    if timing == "garbage":
        (run / "training_time.json").write_text("{")
    elif timing == "without dnn":
        kernel = {"model": "kernel", "minutes": 1.0, "epochs": 2, "val_mse": 0.01}
        (run / "training_time.json").write_text(json.dumps({"rows": [kernel]}))
    unit = {"key": "k", "task": "irm", "noise": "ssn", "snr": 0.0, "condition": "ssn_0dB", "sets": []}
    with pytest.raises(SystemExit, match=r"run: no training time or scores for .*dnn.*; delete the folder to measure "
                                         r"ssn_0dB again"):  # fmt: skip
        paper_tables.measure(unit, run, ["kernel", "dnn"], lambda what: None)
