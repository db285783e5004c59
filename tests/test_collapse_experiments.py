"""The collapse experiments and the ``collapse run`` command, on tiny settings."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from speechkern.collapse.experiments import (
    CollapseConfig,
    _log_epochs,
    check_out_dir,
    collapse_over_time,
    load_dataset,
    run_experiments,
    superclasses,
    write_outputs,
)
from speechkern.errors import SpeechkernError
from speechkern_cli.collapse import app

TINY = CollapseConfig(
    train_sizes=(40, 80),
    epochs=4,
    width=24,
    depth=2,
    checkpoints=3,
    transfer_checkpoints=2,
    finetune_epochs=1,
    kmeans_restarts=2,
)


def _strict_json(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def tiny_results():
    return run_experiments(TINY)


def test_run_produces_rows_for_every_size_checkpoint_and_transfer(tiny_results):
    res = tiny_results
    epochs = _log_epochs(TINY.epochs, TINY.checkpoints)
    assert epochs[0] == 0 and epochs[-1] == TINY.epochs
    assert [r["train_size"] for r in res.over_time] == [40] * len(epochs) + [80] * len(epochs)
    assert [r["epoch"] for r in res.over_time[: len(epochs)]] == epochs
    assert [r["train_size"] for r in res.train_sizes] == [40, 80]
    assert len(res.transfer) == len(_log_epochs(TINY.epochs, TINY.transfer_checkpoints))
    for row in res.over_time:
        for key in ("train_variance", "strong_test_variance", "weak_test_variance", "nc1_train", "nc3"):
            assert np.isfinite(row[key]) and row[key] >= 0, key
        assert 0 <= row["nc4_agreement"] <= 1
    final = res.over_time[len(epochs) - 1]
    assert final["epoch"] == TINY.epochs and final["zero_train_error_epoch"] in (None, *range(TINY.epochs + 1))
    for row in res.transfer:
        assert 0 <= row["probe_test_error"] <= 1 and 0 <= row["finetune_test_error"] <= 1
    assert res.summary["dataset"] == "digits" and "transfer" in res.summary


def test_outputs_are_written_and_readable(tiny_results, tmp_path):
    out = tmp_path / "run"
    written = write_outputs(tiny_results, out)
    names = {p.name for p in written}
    assert names == {
        "over_time.csv",
        "train_sizes.csv",
        "transfer.csv",
        "results.json",
        "collapse_over_time.png",
        "nc_over_time.png",
        "collapse_vs_train_size.png",
        "transfer.png",
    }
    for name in names:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = _strict_json((out / "results.json").read_text())
    assert isinstance(data, dict)
    assert data["config"]["train_sizes"] == [40, 80]
    assert len(data["over_time"]) == len(tiny_results.over_time)
    with open(out / "over_time.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(tiny_results.over_time)
    assert float(rows[-1]["train_variance"]) == pytest.approx(tiny_results.over_time[-1]["train_variance"], rel=1e-5)
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind
    with pytest.raises(SpeechkernError, match="not empty"):
        write_outputs(tiny_results, out)
    write_outputs(tiny_results, out, overwrite=True)


def test_same_seed_gives_same_numbers(tiny_results):
    again = run_experiments(replace(TINY, transfer=False))
    assert again.over_time == tiny_results.over_time
    assert again.transfer == []


def test_training_past_zero_error_collapses_train_more_than_test():
    config = CollapseConfig(train_sizes=(150,), epochs=60, width=64, depth=2, checkpoints=4, kmeans_restarts=3)
    data = load_dataset("digits", config.test_fraction, config.seed)
    rows = collapse_over_time(data, config, 150)
    first, last = rows[0], rows[-1]
    assert last["train_error"] == 0.0
    assert last["zero_train_error_epoch"] is not None and last["zero_train_error_epoch"] <= 60
    assert last["train_variance"] < 0.25 * first["train_variance"]
    assert last["strong_test_variance"] > 1.5 * last["train_variance"]
    assert last["nc1_train"] < last["nc1_test"]


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(SpeechkernError, match="unknown dataset"):
        CollapseConfig(dataset="mnist").validate()
    with pytest.raises(SpeechkernError, match=r"device 'mps': unknown; expected auto, cpu, cuda or cuda:N"):
        CollapseConfig(device="mps").validate()
    with pytest.raises(SpeechkernError, match="exceeds"):
        run_experiments(replace(TINY, train_sizes=(5000,)))
    with pytest.raises(SpeechkernError, match="at least 3 classes"):
        superclasses(2)
    assert superclasses(5).tolist() == [0, 0, 0, 1, 1]
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpeechkernError, match="is a file"):
        check_out_dir(tmp_path / "file", overwrite=True)


def test_cli_run_writes_outputs_and_refuses_non_empty_folder(tmp_path: Path):
    runner = CliRunner()
    assert "--train-sizes" in runner.invoke(app, ["run", "--help"]).output
    out = tmp_path / "c"
    base = ["run", "--out", str(out), "--epochs", "2", "--checkpoints", "2", "--width", "16", "--no-transfer"]
    result = runner.invoke(app, [*base, "--train-sizes", "40", "--json"])
    assert result.exit_code == 0, result.output
    summary = _strict_json(result.stdout)
    assert isinstance(summary, dict) and summary["final"][0]["train_size"] == 40
    assert (out / "over_time.csv").is_file() and not (out / "transfer.csv").exists()
    refused = runner.invoke(app, [*base, "--train-sizes", "40"])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    again = runner.invoke(app, [*base, "--overwrite", "--dataset", "iris", "--train-sizes", "30"])
    assert again.exit_code == 0, again.output
    assert "iris" in again.stdout
    assert _strict_json((out / "results.json").read_text())["dataset"]["name"] == "iris"  # type: ignore[index]
    bad = runner.invoke(app, ["run", "--out", str(tmp_path / "d"), "--train-sizes", "a,b"])
    assert bad.exit_code == 2 and "comma list" in bad.output


def test_default_train_sizes_fit_every_builtin_dataset():
    from speechkern.collapse.experiments import DATASETS, check_config, default_train_sizes, resolve_train_sizes

    assert default_train_sizes(1257, 10) == (50, 100, 300, 1000)
    assert default_train_sizes(105, 3) == (50, 100)
    assert default_train_sizes(30, 3) == (30,)  # no rung fits: the whole pool
    for name in DATASETS:
        config = CollapseConfig(dataset=name)
        data = check_config(config)  # raised "exceeds" for iris and wine before
        sizes = resolve_train_sizes(config, data)
        assert sizes and max(sizes) <= len(data.y_pool)
    assert resolve_train_sizes(replace(TINY, train_sizes=(80, 40, 80)), load_dataset("digits")) == (40, 80)


def test_cli_runs_iris_with_its_default_sizes(tmp_path: Path):
    out = tmp_path / "iris"
    args = ["run", "--dataset", "iris", "--out", str(out), "--epochs", "2", "--checkpoints", "2", "--width", "8"]
    args += ["--no-transfer"]  # the transfer's 8 × 30 fine-tuning epochs are slow; its iris check is in check_config
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = _strict_json(result.stdout)
    assert [row["train_size"] for row in summary["final"]] == [50, 100]  # type: ignore[index]
    assert _strict_json((out / "results.json").read_text())["config"]["train_sizes"] == [50, 100]  # type: ignore[index]
    assert (out / "collapse_vs_train_size.png").is_file()


def test_one_checkpoint_measures_the_final_epoch_and_the_command_line_takes_it(tmp_path):
    """checkpoints=1 (the library's minimum) measured epochs 0 and 1 only, so every measure was normalised by
    epoch 1's means, not the final epoch's, while the command line refused 1 (its minimum was 2)."""
    assert _log_epochs(300, 1) == [0, 300] and _log_epochs(1, 1) == [0, 1]
    config = replace(TINY, train_sizes=(40,), checkpoints=1, transfer=False)
    assert [r["epoch"] for r in collapse_over_time(load_dataset("digits"), config, 40)] == [0, TINY.epochs]
    args = ["run", "--dataset", "iris", "--out", str(tmp_path / "o"), "--epochs", "3", "--width", "8",
            "--train-sizes", "50", "--no-transfer", "-q"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--checkpoints", "1"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "o" / "over_time.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "3"]
    result = CliRunner().invoke(app, [*args, "--checkpoints", "0", "--overwrite"])
    assert result.exit_code != 0 and "checkpoints must be at least 1; got 0." in result.output
