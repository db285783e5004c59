"""The losses benchmark: datasets, CSV format, training, outputs and the ``losses bench`` command."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from speechkern.errors import SpeechkernError
from speechkern.losses import bench
from speechkern_cli.losses import app

TINY = bench.BenchConfig(seeds=2, epochs=3, hidden=(8,), batch_size=16)


def write_csv(path: Path, rows: list[list[object]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header or ["x1", "x2", "label"])
        writer.writerows(rows)
    return path


def blobs_csv(path: Path, n: int = 40, seed: int = 0) -> Path:
    """Two well-separated Gaussian blobs with text labels."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cls = i % 2
        x = rng.normal(loc=4.0 * cls, scale=0.5, size=2)
        rows.append([f"{x[0]:.4f}", f"{x[1]:.4f}", "dog" if cls else "cat"])
    return write_csv(path, rows)


def test_two_spirals_is_balanced_and_reproducible() -> None:
    a, b = bench.two_spirals(n_per_class=50, seed=3), bench.two_spirals(n_per_class=50, seed=3)
    assert a.features.shape == (100, 2)
    assert np.bincount(a.labels).tolist() == [50, 50]
    np.testing.assert_array_equal(a.features, b.features)
    # the second arm is the first rotated by π, up to the noise
    clean = bench.two_spirals(n_per_class=50, noise=0.0, seed=3)
    np.testing.assert_allclose(clean.features[50:], -clean.features[:50])


def test_builtin_datasets_load_offline() -> None:
    digits = bench.builtin_dataset("digits")
    assert digits.features.shape == (1797, 64) and digits.n_classes == 10
    with pytest.raises(SpeechkernError, match="unknown built-in dataset"):
        bench.builtin_dataset("mnist")


def test_csv_dataset_format(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "my set.csv", [[1, 2, "10"], [3, 4, "2"], [5, 6, "10"], [7, 8, "2"]])
    data = bench.load_csv_dataset(path)
    assert data.name == "my_set"
    assert data.class_names == ("2", "10")  # integer labels sort numerically
    assert data.labels.tolist() == [1, 0, 1, 0]
    np.testing.assert_array_equal(data.features, [[1, 2], [3, 4], [5, 6], [7, 8]])


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["x1", "x2", "class"], [[1, 2, "a"]], "needs a 'label' column"),
        (None, [[1, "two", "a"], [1, 2, "b"]], r"row 2: feature value 'two' is not a number"),
        (None, [[1, 2, "a"], [1, 2]], "row 3: 2 fields, expected 3"),
        (None, [[1, 2, "a"], [1, 2, "a"], [3, 4, "b"]], "class 'b' has 1 row"),
        (None, [[1, 2, "a"], [3, 4, "a"]], "at least 2"),
        (None, [[1, "nan", "a"], [3, 4, "b"]], "finite"),
        # a second label column was read as a feature: the label leaked into the inputs (accuracy 100 %)
        (["x1", "label", "Label"], [[1, "a", "a"], [2, "b", "b"]], r"names 2 'label' columns \(columns 2, 3\)"),
        (["x1", "fold", "label", "fold"], [[1, 0, "a", 0], [2, 1, "b", 1]], "names 2 'fold' columns"),
    ],
)
def test_csv_errors_name_the_file_and_row(tmp_path: Path, header, rows, message) -> None:
    path = write_csv(tmp_path / "bad.csv", rows, header)
    with pytest.raises(SpeechkernError, match=message) as err:
        bench.load_csv_dataset(path)
    assert "bad.csv" in str(err.value)


def test_dataset_selection(tmp_path: Path) -> None:
    blobs_csv(tmp_path / "blobs.csv")
    chosen = bench.select_datasets(tmp_path, ["blobs", "iris"])
    assert [d.name for d in chosen] == ["blobs", "iris"]
    # built-in sets run only when asked for
    assert [d.name for d in bench.select_datasets(tmp_path)] == ["blobs"]
    assert [d.name for d in bench.select_datasets(None, builtin=True)] == list(bench.BUILTIN_DATASETS)
    with pytest.raises(SpeechkernError, match="no datasets chosen"):
        bench.select_datasets(None)
    with pytest.raises(SpeechkernError, match="unknown dataset"):
        bench.select_datasets(None, ["blobs"])
    blobs_csv(tmp_path / "wine.csv")
    with pytest.raises(SpeechkernError, match="used twice"):
        bench.select_datasets(tmp_path, builtin=True)
    with pytest.raises(SpeechkernError, match="not a folder"):
        bench.load_data_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpeechkernError, match="no \\*.csv"):
        bench.load_data_dir(tmp_path / "empty")


def test_every_loss_trains_the_same_initial_network() -> None:
    a = bench.make_network(4, 3, (8,), seed=1)
    b = bench.make_network(4, 3, (8,), seed=1)
    c = bench.make_network(4, 3, (8,), seed=2)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_every_loss_learns_iris(one_thread) -> None:
    data = bench.builtin_dataset("iris")
    config = bench.BenchConfig(seeds=1, epochs=30, hidden=(32,), batch_size=16, learning_rates=(1e-2,))
    split = bench.split_dataset(data, 0, config.test_fraction, torch.device("cpu"))
    for loss in bench.LOSSES:
        model, final = bench.train_one(split, data.n_classes, loss, 0, config)
        accuracy, ece, _, probs = bench.evaluate(model, split, loss, config)
        assert accuracy >= 0.85, loss
        assert 0.0 <= ece <= 1.0 and np.isfinite(final)
        np.testing.assert_allclose(probs.sum(1), 1.0)


def test_run_benchmark_writes_consistent_outputs(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    blobs_csv(data_dir / "blobs.csv")
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    result = bench.run_benchmark(out, TINY, data_dir=data_dir, datasets=["blobs", "wine"])
    assert torch.get_num_threads() == threads
    assert len(result.runs) == 2 * TINY.seeds * len(bench.LOSSES)
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == [
        "bench.json",
        "comparison.csv",
        "comparison.md",
        "comparison.png",
        "reliability/blobs.png",
        "reliability/wine.png",
        "results.csv",
        "results.json",
        "results.md",
        "sets/blobs.json",
        "sets/wine.json",
    ]
    assert not list(out.rglob(".*"))  # no temporary files left behind

    saved = json.loads((out / "results.json").read_text())
    assert len(saved["runs"]) == len(result.runs) and saved["config"]["seeds"] == 2
    row = next(r for r in saved["summary"] if r["dataset"] == "blobs" and r["loss"] == "squentropy")
    runs = [r for r in saved["runs"] if r["dataset"] == "blobs" and r["loss"] == "squentropy"]
    assert row["accuracy_mean"] == pytest.approx(np.mean([r["accuracy"] for r in runs]))
    assert row["ece_std"] == pytest.approx(np.std([r["ece"] for r in runs], ddof=1))
    assert row["ece_inverse_mean"] is None
    square = next(r for r in saved["summary"] if r["loss"] == "rescaled_square")
    assert square["ece_inverse_mean"] is not None

    with (out / "results.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 2 * len(bench.LOSSES)
    markdown = (out / "results.md").read_text()
    assert markdown.count("\n| blobs |") == len(bench.LOSSES)
    assert "rescaled square (t=1, M=10)" in markdown
    assert (out / "reliability" / "wine.png").read_bytes()[:4] == b"\x89PNG"

    # a non-empty output folder of other settings is refused unless --overwrite
    with pytest.raises(SpeechkernError, match="not empty.*overwrite=True"):
        bench.run_benchmark(out, replace(TINY, epochs=4), datasets=["iris"])
    again = bench.run_benchmark(out, TINY, datasets=["iris"], losses=["square"], overwrite=True)
    assert [r.loss for r in again.summary] == ["square"]
    assert json.loads((out / "results.json").read_text())["datasets"][0]["name"] == "iris"
    assert sorted(p.name for p in (out / "reliability").iterdir()) == ["iris.png"]


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SpeechkernError, match="test_fraction"):
        bench.BenchConfig(test_fraction=1.5)
    with pytest.raises(SpeechkernError, match="unknown loss"):
        bench.run_benchmark(tmp_path / "o", TINY, losses=["hinge"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpeechkernError, match="not a folder"):
        bench.run_benchmark(tmp_path / "file", TINY, datasets=["iris"])
    with pytest.raises(SpeechkernError, match=r"device 'gpu0': unknown; expected auto, cpu, cuda or cuda:N"):
        bench.run_benchmark(tmp_path / "o", bench.BenchConfig(device="gpu0"), datasets=["iris"])


def test_cli_bench(tmp_path: Path) -> None:
    blobs_csv(tmp_path / "blobs.csv")
    out = tmp_path / "out"
    args = ["bench", "--out", str(out), "--data", str(tmp_path), "--dataset", "blobs", "--seeds", "2", "--epochs", "2"]
    runner = CliRunner()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "blobs" in result.stdout and "squentropy" in result.stdout and "±" in result.stdout
    assert (out / "results.md").is_file()

    # the same command again resumes (nothing left to train); other settings are refused without --overwrite
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "resumed 1 finished dataset" in again.output
    refused = runner.invoke(app, [*args[:-1], "3"])
    assert refused.exit_code == 2
    assert "not empty" in refused.output and "--overwrite" in refused.output
    bad = runner.invoke(app, [*args, "--losses", "square,hinge"])
    assert bad.exit_code == 2 and "hinge" in bad.output
    none = runner.invoke(app, ["bench", "--out", str(tmp_path / "o2")])
    assert none.exit_code == 2 and "--data" in none.output

    as_json = runner.invoke(app, [*args, "--overwrite", "--json"])
    assert as_json.exit_code == 0, as_json.output
    parsed = json.loads(as_json.stdout)
    assert {r["loss"] for r in parsed["summary"]} == set(bench.LOSSES)
