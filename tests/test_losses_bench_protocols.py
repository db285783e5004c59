"""The losses bench as a published protocol: provided splits and folds, resuming, and the paired comparison."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from speechkern.errors import SpeechkernError
from speechkern.losses import bench, comparison

TINY = bench.BenchConfig(seeds=1, epochs=2, hidden=(4,), batch_size=16, selection="accuracy-smoothed")


def write_rows(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def blob_rows(n: int, seed: int, offset: float = 0.0) -> list[list[object]]:
    rng = np.random.default_rng(seed)
    return [[*(rng.normal(4.0 * (i % 2) + offset, 0.5, size=2).round(4)), "ab"[i % 2]] for i in range(n)]


@pytest.fixture
def spy_evaluate(monkeypatch):
    """Record the test labels and training-set size of every evaluated run."""
    calls: list[tuple[int, list[int], int]] = []
    real = bench.evaluate

    def spy(model, split, loss_name, config):
        calls.append((split.x_test.shape[0], split.y_test.tolist(), split.x_train.shape[0]))
        return real(model, split, loss_name, config)

    monkeypatch.setattr(bench, "evaluate", spy)
    return calls


def test_provided_train_test_files_are_used_not_resplit(tmp_path: Path, spy_evaluate) -> None:
    data = tmp_path / "data"
    train = blob_rows(30, 0)
    test = blob_rows(11, 1, offset=0.1)
    test[-1][-1] = "a"  # an unbalanced test file: a stratified re-split could not produce exactly these labels
    write_rows(data / "blobs_train.csv", ["x1", "x2", "label"], train)
    write_rows(data / "blobs_test.csv", ["x1", "x2", "label"], test)
    (dataset,) = bench.load_data_dir(data)
    assert dataset.name == "blobs" and dataset.protocol == "provided train/test files"
    config = bench.BenchConfig(
        seeds=2, epochs=2, hidden=(4,), batch_size=16, val_fraction=0.2, selection="accuracy-smoothed"
    )
    result = bench.run_benchmark(tmp_path / "out", config, data_dir=data, losses=["cross_entropy", "square"])
    expected_test = [0 if row[-1] == "a" else 1 for row in test]
    assert len(spy_evaluate) == 2 * 2  # seeds × losses, one provided split each
    for n_test, labels, n_train in spy_evaluate:
        assert n_test == 11 and labels == expected_test
        assert n_train == 24  # the train file less its 20 % validation share; no test row moved into training
    assert {run.split for run in result.runs} == {"provided split"}
    assert all(run.val_accuracy is not None and 1 <= run.epoch <= 2 for run in result.runs)


@pytest.mark.parametrize("test_header", [["x2", "x1", "label"], ["x1", "y2", "label"]])
def test_train_and_test_files_with_other_feature_columns_are_refused(tmp_path: Path, test_header) -> None:
    """A test file with its columns in another order (x2, x1) was read by position: each network saw one feature
    as the other at test time, and the accuracy came out wrong without a word."""
    write_rows(tmp_path / "blobs_train.csv", ["x1", "x2", "label"], blob_rows(30, 0))
    write_rows(tmp_path / "blobs_test.csv", test_header, blob_rows(11, 1))
    with pytest.raises(SpeechkernError, match=r"blobs_test.csv: the feature columns differ .*same order in each"):
        bench.load_data_dir(tmp_path)


def test_fold_column_fold_file_and_split_column(tmp_path: Path) -> None:
    rows = blob_rows(24, 2)
    folded = [[*row[:2], i % 3, row[2]] for i, row in enumerate(rows)]
    write_rows(tmp_path / "cv.csv", ["x1", "x2", "fold", "label"], folded)
    write_rows(tmp_path / "ff.csv", ["x1", "x2", "label"], rows)
    (tmp_path / "ff_folds.csv").write_text("fold\n" + "\n".join(str(i % 4) for i in range(24)) + "\n")
    roles = ["train"] * 14 + ["validation"] * 4 + ["test"] * 6
    write_rows(
        tmp_path / "sp.csv", ["split", "x1", "x2", "label"], [[r, *row] for r, row in zip(roles, rows, strict=True)]
    )
    sets = {d.name: d for d in bench.load_data_dir(tmp_path)}
    assert sorted(sets) == ["cv", "ff", "sp"]
    cv = bench.evaluation_splits(sets["cv"], 0, TINY)
    assert [s.name for s in cv] == ["fold 0", "fold 1", "fold 2"]
    for k, split in enumerate(cv):
        np.testing.assert_array_equal(split.test, np.arange(k, 24, 3))
        assert set(split.train) | set(split.validation) == set(range(24)) - set(split.test)
    assert len(bench.evaluation_splits(sets["ff"], 0, TINY)) == 4
    (sp,) = bench.evaluation_splits(sets["sp"], 0, TINY)
    np.testing.assert_array_equal(sp.test, np.arange(18, 24))
    np.testing.assert_array_equal(sp.validation, np.arange(14, 18))  # the provided validation rows, not a share
    (tmp_path / "ff_folds.csv").write_text("1\n2\n")
    with pytest.raises(SpeechkernError, match="2 fold values for 24 data rows"):
        bench.load_data_dir(tmp_path)


def test_same_names_in_different_folders_are_qualified(tmp_path: Path) -> None:
    for folder in ("uci", "other"):
        write_rows(tmp_path / "data" / folder / "blobs.csv", ["x1", "x2", "label"], blob_rows(20, 3))
    write_rows(tmp_path / "data" / "adult" / "train.csv", ["x1", "x2", "label"], blob_rows(20, 4))
    write_rows(tmp_path / "data" / "adult" / "test.csv", ["x1", "x2", "label"], blob_rows(8, 5))
    names = [d.name for d in bench.load_data_dir(tmp_path / "data")]
    assert names == ["adult", "other/blobs", "uci/blobs"]
    result = bench.run_benchmark(tmp_path / "out", TINY, data_dir=tmp_path / "data", losses=["square"])
    assert {r.dataset for r in result.summary} == set(names)
    assert (tmp_path / "out" / "sets" / "uci" / "blobs.json").is_file()
    assert (tmp_path / "out" / "reliability" / "other" / "blobs.png").is_file()


def test_interrupted_bench_resumes_without_repeating_finished_sets(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    for name in ("a", "b", "c"):
        write_rows(data / f"{name}.csv", ["x1", "x2", "label"], blob_rows(20, ord(name)))
    trained: list[str] = []
    real = bench.train_selected

    def counting(split, n_classes, loss_name, seed, config):
        trained.append(split_owner[0])
        if split_owner[0] == "b" and interrupt[0]:
            raise KeyboardInterrupt
        return real(split, n_classes, loss_name, seed, config)

    split_owner = [""]
    real_prepare = bench.prepare_split

    def prepare(dataset, split, device):
        split_owner[0] = dataset.name
        return real_prepare(dataset, split, device)

    monkeypatch.setattr(bench, "train_selected", counting)
    monkeypatch.setattr(bench, "prepare_split", prepare)
    losses = ["cross_entropy", "squentropy"]
    interrupt = [True]
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        bench.run_benchmark(out, TINY, data_dir=data, losses=losses)
    assert trained == ["a", "a", "b"]
    assert sorted(p.name for p in (out / "sets").iterdir()) == ["a.json"]  # written as soon as "a" finished
    saved_a = json.loads((out / "sets" / "a.json").read_text())["runs"]

    interrupt[0] = False
    trained.clear()
    result = bench.run_benchmark(out, TINY, data_dir=data, losses=losses)
    assert trained == ["b", "b", "c", "c"]  # "a" is not trained again
    assert result.resumed == ["a"]
    assert [r.dataset for r in result.summary] == ["a", "a", "b", "b", "c", "c"]
    assert [r.accuracy for r in result.runs if r.dataset == "a"] == [run["accuracy"] for run in saved_a]

    # other settings do not resume from these results
    with pytest.raises(SpeechkernError, match="overwrite=True"):
        bench.run_benchmark(out, TINY, data_dir=data, losses=["square"])


def test_paired_comparison_counts_and_sign_test() -> None:
    assert comparison.compare([0.9, 0.8, 0.7, 0.5], [0.8, 0.8, 0.75, 0.4], higher_is_better=True) == (2, 1, 1)
    assert comparison.compare([0.1, 0.2], [0.2, 0.1], higher_is_better=False) == (1, 0, 1)
    # P(X ≤ 1 or X ≥ 9), X ~ Binomial(10, 1/2) = 22/1024
    assert comparison.sign_test(9, 1) == pytest.approx(22 / 1024)
    assert comparison.sign_test(0, 0) == 1.0

    rows = [
        bench.SummaryRow(d, loss, 1, acc, None, ece, None)
        for d, loss, acc, ece in [
            ("s1", "cross_entropy", 0.8, 0.10),
            ("s1", "squentropy", 0.9, 0.05),
            ("s2", "cross_entropy", 0.7, 0.10),
            ("s2", "squentropy", 0.7, 0.20),
            ("s3", "cross_entropy", 0.6, 0.10),
            ("s3", "squentropy", 0.5, 0.02),
        ]
    ]
    acc, ece = comparison.paired_comparisons(rows, ["squentropy", "cross_entropy"])
    assert (acc.loss, acc.baseline, acc.metric, acc.wins, acc.ties, acc.losses) == (
        "squentropy",
        "cross_entropy",
        "accuracy",
        1,
        1,
        1,
    )
    assert (ece.metric, ece.wins, ece.ties, ece.losses) == ("ece", 2, 0, 1)
    assert acc.mean_difference == pytest.approx(0.0)
    assert ece.p_value == pytest.approx(1.0)
    assert "| squentropy | cross_entropy | ece | 3 | 2 | 0 | 1 |" in comparison.markdown([acc, ece])
    assert comparison.csv_text([acc, ece]).splitlines()[0].startswith("loss,baseline,metric,n_datasets,wins")
    fig = comparison.figure(rows, [acc, ece], {})
    assert len(fig.axes) == 2
