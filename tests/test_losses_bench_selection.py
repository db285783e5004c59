"""The losses bench's selection rules, provided splits as one set, resuming by content, and its ETA."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_losses_bench_protocols import write_rows
from typer.testing import CliRunner

from speechkern.errors import SpeechkernError
from speechkern.losses import bench, selection
from speechkern.progress import ProgressTracker
from speechkern_cli.losses import app

HEADER = ["x1", "x2", "label"]

TINY = bench.BenchConfig(seeds=1, epochs=3, hidden=(4,), batch_size=16)

# a constructed validation curve on which every rule names a different epoch
ACCURACY = [0.50, 0.90, 0.60, 0.60, 0.85, 0.88, 0.90, 0.87, 0.90, 0.70]
LOSS = [1.00, 0.60, 0.50, 0.50, 0.70, 0.55, 0.52, 0.58, 0.51, 0.90]


@pytest.mark.parametrize(
    ("rule", "window", "epoch"),
    [
        ("accuracy-earliest", 5, 2),  # 0.90 first reached at epoch 2
        ("accuracy-latest", 5, 9),  # and last at epoch 9
        ("accuracy-smoothed", 3, 8),  # centred means: epoch 8 (0.90, 0.87, 0.90) = 0.893 is the highest
        ("accuracy-smoothed", 1, 9),  # a window of one is accuracy-latest
        ("loss", 5, 3),  # 0.50 at epochs 3 and 4: the earlier
        ("last", 5, 10),
    ],
)
def test_each_rule_picks_the_epoch_it_states(rule: str, window: int, epoch: int) -> None:
    assert selection.select_epoch(rule, ACCURACY, LOSS, window) == epoch


def test_smoothing_is_centred_and_truncated_at_the_ends() -> None:
    # window 5: epoch 1 averages epochs 1–3, epoch 10 averages 8–10
    accuracy = [0.95, 0.95, 0.95, 0.5, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9]
    assert selection.select_epoch("accuracy-smoothed", accuracy, window=5) == 1
    accuracy[-3:] = [0.96, 0.96, 0.96]  # epoch 10 averages 8–10 only: 0.96 > 0.95
    assert selection.select_epoch("accuracy-smoothed", accuracy, window=5) == 10


def test_online_selector_keeps_the_weights_of_the_epoch_select_epoch_names() -> None:
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 25))
        accuracy = rng.integers(0, 6, size=n) / 5  # a small validation part: many ties
        loss = rng.integers(0, 4, size=n) / 3
        for rule in selection.CURVE_RULES:
            for window in (1, 2, 3, 5):
                selector = selection.EpochSelector(rule, window)
                for epoch in range(n):
                    selector.update(accuracy[epoch], loss[epoch], {"w": torch.tensor([epoch])})
                kept, val_accuracy, state = selector.finish()
                expected = selection.select_epoch(rule, accuracy, loss, window)
                assert kept == expected, (trial, rule, window)
                assert int(state["w"]) == kept - 1 and val_accuracy == accuracy[kept - 1]


def test_rules_are_validated() -> None:
    with pytest.raises(SpeechkernError, match="selection rule 'best' is unknown; choose from accuracy-smoothed"):
        bench.BenchConfig(selection="best")
    with pytest.raises(SpeechkernError, match="selection 'last' .* learning rates 0.001, 0.01; give one"):
        bench.BenchConfig(selection="last", learning_rates=(1e-3, 1e-2))
    with pytest.raises(SpeechkernError, match="empty validation curve"):
        selection.select_epoch("accuracy-latest", [])


def noisy_blobs(n: int, seed: int, spread: float = 0.5) -> list[list[object]]:
    rng = np.random.default_rng(seed)
    return [[*(rng.normal(2.0 * (i % 2), spread, size=2).round(4)), "ab"[i % 2]] for i in range(n)]


@pytest.mark.parametrize("rule", [r for r in selection.CURVE_RULES])
def test_training_keeps_the_weights_of_the_selected_epoch(rule: str) -> None:
    data = bench.two_spirals(n_per_class=60, seed=1)
    config = bench.BenchConfig(seeds=1, epochs=12, hidden=(16,), batch_size=16, selection=rule, smoothing_window=3)
    (spec,) = bench.evaluation_splits(data, 0, config)
    split = bench.prepare_split(data, spec, torch.device("cpu"))
    chosen = bench.train_selected(split, 2, "squentropy", 0, config)
    assert 1 <= chosen.epoch <= 12
    assert bench._validate(chosen.model, split.x_val, split.y_val, bench.loss_function("squentropy", config))[
        0
    ] == pytest.approx(chosen.val_accuracy)


def splits_json(path: Path, splits: list[dict], selection_split: dict | None = None) -> Path:
    content: dict = {"splits": splits}
    if selection_split is not None:
        content["selection"] = selection_split
    path.write_text(json.dumps(content))
    return path


OVERLAPPING = [  # 40 rows; row 0 is in no test part, rows 30–39 are in every test part
    {"name": "r1", "train": list(range(0, 20)), "test": list(range(30, 40))},
    {"name": "r2", "train": list(range(10, 30)), "test": list(range(30, 40)) + [1, 2]},
    {"train": list(range(7, 30)), "test": list(range(30, 40)) + list(range(3, 7))},
]


def test_overlapping_provided_splits_run_as_one_set_and_average(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    write_rows(data / "over.csv", HEADER, noisy_blobs(40, 0, spread=1.2))
    splits_json(data / "over_splits.json", OVERLAPPING)
    write_rows(data / "plain.csv", HEADER, noisy_blobs(30, 1))
    sets = {d.name: d for d in bench.load_data_dir(data)}
    assert sorted(sets) == ["over", "plain"]  # the splits file is no set of its own
    over = sets["over"]
    assert [s.name for s in over.splits] == ["r1", "r2", "split 3"]
    assert over.protocol == "3 provided splits (index lists)" and over.describe()["n_splits"] == 3

    tested: list[int] = []
    real = bench.evaluate

    def spy(model, split, loss_name, config):
        tested.append(split.x_test.shape[0])
        return real(model, split, loss_name, config)

    monkeypatch.setattr(bench, "evaluate", spy)
    config = bench.BenchConfig(seeds=2, epochs=2, hidden=(4,), batch_size=8)
    result = bench.run_benchmark(tmp_path / "out", config, data_dir=data, losses=["cross_entropy", "squentropy"])
    assert tested[: 3 * 2 * 2] == [10, 10, 12, 12, 14, 14] * 2  # splits × losses, for each seed
    runs = [r for r in result.runs if r.dataset == "over" and r.loss == "squentropy"]
    assert sorted({r.split for r in runs}) == ["r1", "r2", "split 3"] and len(runs) == 3 * 2
    row = next(r for r in result.summary if r.dataset == "over" and r.loss == "squentropy")
    assert row.n_runs == 6 and row.accuracy_mean == pytest.approx(np.mean([r.accuracy for r in runs]))
    # the sign test counts sets, not splits
    assert {c.n_datasets for c in result.comparisons} == {2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"splits": [{"train": [0, 1, 2], "test": [2, 3]}]}, "split 1: row 2 is in both train and test"),
        ({"splits": [{"train": [0, 1], "test": [40]}]}, r"split 1, test: row index 40 is outside 0..39"),
        ({"splits": [{"train": [0, 1], "test": [3, 3]}]}, "appears twice"),
        ({"splits": [{"train": [0, 1]}]}, "the 'test' index list is missing or empty"),
        ({"splits": [{"train": [0, 1], "test": ["3"]}]}, "expected a list of integer row indices"),
        ({"splits": [{"train": [0, 1], "tset": [3]}]}, "unknown key"),
        ({"splits": []}, "non-empty 'splits' list"),
        ({"splits": [{"train": [0], "test": [1]}], "selection": {"train": [0, 1]}}, "selection: the 'validation'"),
    ],
)
def test_bad_splits_files_name_the_file_and_split(tmp_path: Path, content: dict, message: str) -> None:
    write_rows(tmp_path / "s.csv", HEADER, noisy_blobs(40, 0))
    (tmp_path / "s_splits.json").write_text(json.dumps(content))
    with pytest.raises(SpeechkernError, match=message) as err:
        bench.load_data_dir(tmp_path)
    assert "s_splits.json" in str(err.value)


def test_splits_file_and_fold_column_together_are_refused(tmp_path: Path) -> None:
    rows = [[*row[:2], i % 2, row[2]] for i, row in enumerate(noisy_blobs(20, 0))]
    write_rows(tmp_path / "s.csv", ["x1", "x2", "fold", "label"], rows)
    splits_json(tmp_path / "s_splits.json", [{"train": [0, 1, 2, 3], "test": [4, 5]}])
    with pytest.raises(SpeechkernError, match="give the protocol once"):
        bench.load_data_dir(tmp_path)


def test_budget_chooses_epochs_on_the_selection_split_once_per_seed_and_loss(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    write_rows(data / "over.csv", HEADER, noisy_blobs(40, 0, spread=1.2))
    splits_json(
        data / "over_splits.json", OVERLAPPING, {"train": list(range(0, 20)), "validation": list(range(20, 40))}
    )
    chose: list[int] = []
    real = bench.train_selected

    def counting(split, n_classes, loss_name, seed, config):
        chose.append(split.x_train.shape[0])
        return real(split, n_classes, loss_name, seed, config)

    monkeypatch.setattr(bench, "train_selected", counting)
    config = bench.BenchConfig(seeds=2, epochs=6, hidden=(4,), batch_size=8, selection="budget")
    result = bench.run_benchmark(tmp_path / "out", config, data_dir=data, losses=["cross_entropy", "squentropy"])
    assert chose == [20] * 2 * 2  # the selection split's 20 training rows, once per seed × loss
    for seed in range(2):
        for loss in ("cross_entropy", "squentropy"):
            epochs = {r.epoch for r in result.runs if r.seed == seed and r.loss == loss}
            assert len(epochs) == 1 and 1 <= epochs.pop() <= 6  # one budget for all three splits


def test_chosen_epochs_are_reported(tmp_path: Path) -> None:
    config = bench.BenchConfig(seeds=2, epochs=4, hidden=(4,), batch_size=16, selection="last")
    result = bench.run_benchmark(tmp_path / "out", config, datasets=["iris"], losses=["squentropy"])
    (row,) = result.summary
    assert (row.epoch_median, row.epoch_min, row.epoch_max) == (4, 4, 4)
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| 4 (4–4) |" in markdown and "Selection 'last'" in markdown
    assert "epoch ≤ 5 in 100% of runs" in markdown


def test_resume_with_relative_and_absolute_data_paths(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    write_rows(data / "a.csv", HEADER, noisy_blobs(20, 1))
    write_rows(data / "b.csv", HEADER, noisy_blobs(20, 2))
    monkeypatch.chdir(tmp_path)
    first = bench.run_benchmark("out", TINY, data_dir="data", losses=["square"])
    assert first.resumed == []

    def no_training(*args, **kwargs):
        raise AssertionError("a finished set was trained again")

    monkeypatch.setattr(bench, "train_selected", no_training)
    again = bench.run_benchmark(tmp_path / "out", TINY, data_dir=data.resolve(), losses=["square"])
    assert again.resumed == ["a", "b"]
    assert [r.accuracy for r in again.runs] == [r.accuracy for r in first.runs]

    # keyed on the content: a changed file is trained again, the unchanged one is not
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    write_rows(data / "b.csv", HEADER, noisy_blobs(20, 3))
    third = bench.run_benchmark("out", TINY, data_dir="./data/../data", losses=["square"])
    assert third.resumed == ["a"]


def test_cli_resumes_with_an_absolute_data_path(tmp_path: Path, monkeypatch) -> None:
    write_rows(tmp_path / "data" / "a.csv", HEADER, noisy_blobs(20, 1))
    monkeypatch.chdir(tmp_path)
    args = ["bench", "--out", "out", "--seeds", "1", "--epochs", "2", "--losses", "square,squentropy"]
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--data", "data", "--selection", "accuracy-latest"])
    assert first.exit_code == 0, first.output
    assert "selection accuracy-latest: epoch kept: median" in first.stdout
    again = runner.invoke(app, [*args, "--data", str(tmp_path / "data"), "--selection", "accuracy-latest"])
    assert again.exit_code == 0 and "resumed 1 finished dataset" in again.output
    bad = runner.invoke(app, [*args, "--data", "data", "--selection", "best"])
    assert bad.exit_code == 2 and "selection rule 'best' is unknown" in bad.output


class _Events(logging.Handler):
    """The bench's progress events with the time each arrived, in CPU seconds of this process (the load of other
    processes on a shared machine then does not move the measured time left)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.events: list[tuple[float, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "progress", None)
        if event is not None and event.task == "losses/bench":
            self.events.append((time.process_time(), event))


@pytest.fixture
def events():
    handler = _Events()
    logger = logging.getLogger("speechkern")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler.events
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.mark.parametrize("rule", ["accuracy-smoothed", "budget", "last"])
def test_planned_work_is_the_work_done(tmp_path: Path, events, monkeypatch, rule: str) -> None:
    """The ETA's unit: every optimiser step and validation pass is planned, and nothing else."""
    steps = [0]
    real_optimizer, real_validate = bench._optimizer, bench._validate

    def counting_optimizer(model, lr, config):
        optimizer = real_optimizer(model, lr, config)
        step = optimizer.step

        def counted(*args, **kwargs):
            steps[0] += 1
            return step(*args, **kwargs)

        optimizer.step = counted
        return optimizer

    def counting_validate(*args):
        steps[0] += 1
        return real_validate(*args)

    monkeypatch.setattr(bench, "_optimizer", counting_optimizer)
    monkeypatch.setattr(bench, "_validate", counting_validate)
    data = tmp_path / "data"
    write_rows(data / "a.csv", HEADER, noisy_blobs(30, 1))
    write_rows(data / "big.csv", HEADER, noisy_blobs(90, 2))
    lrs = (2e-3,) if rule == "last" else (1e-3, 3e-3)
    config = bench.BenchConfig(seeds=2, epochs=5, hidden=(4,), batch_size=8, selection=rule, learning_rates=lrs)
    bench.run_benchmark(tmp_path / "out", config, data_dir=data, losses=["cross_entropy", "squentropy"])
    last = events[-1][1]
    assert last.completed == last.total == steps[0]
    assert last.info["run"] == "8/8"


def test_eta_counts_work_not_runs(tmp_path: Path, events) -> None:
    """A small set then one eight times larger: the ETA when the small set is done is within a factor 2 of the CPU
    time actually left (measured 1.00–1.23 on the development machine); counting finished runs, as the bench
    did, says about 0.2 of it."""
    data = tmp_path / "data"
    write_rows(data / "a_small.csv", HEADER, noisy_blobs(60, 1))
    write_rows(data / "b_large.csv", HEADER, noisy_blobs(480, 2))
    config = bench.BenchConfig(seeds=3, epochs=12, hidden=(16,), batch_size=8, selection="accuracy-smoothed")
    bench.run_benchmark(tmp_path / "out", config, data_dir=data, losses=["cross_entropy", "squentropy"])
    start, end = events[0][0], events[-1][0]
    tracker = ProgressTracker(start)
    for now, event in events:
        tracker.update(event, now)
        if event.info["dataset"] == "a_small" and event.info["run"] == "6/12":
            eta, left = tracker.eta(now), end - now
            by_runs = (now - start) / 5 * 6  # runs 2–6 took now − start; 6 runs are left
            break
    assert eta is not None and left / 2 <= eta <= 2 * left, (eta, left)
    assert by_runs < left / 2  # the test tells the two estimates apart
