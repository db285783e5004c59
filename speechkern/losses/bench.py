"""Benchmark of the classification losses: one small network trained with each loss, accuracy and calibration.

For every dataset and seed the data are split (stratified, ``test_fraction`` held out), the features standardised
with the training statistics, and the *same* multilayer perceptron — same initial weights, same mini-batch order —
is trained with cross-entropy, the square loss, the rescaled square loss and squentropy (Adam, which is insensitive
to the scale of each loss). The test accuracy and top-label ECE of each run are summarised as mean ± standard
deviation over seeds; reliability diagrams pool the test predictions of all seeds.

Datasets, all offline: scikit-learn's bundled classification sets (digits, wine, breast_cancer, iris), a generated
two-spiral set, and any CSV files in a folder (:func:`load_csv_dataset` documents the format).

Files written into the output folder (atomically): ``results.md``, ``results.csv``, ``results.json`` (configuration,
datasets, every run, the summary) and ``reliability/<dataset>.png``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from sklearn import datasets as sk_datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

import speechkern
from speechkern.errors import SpeechkernError
from speechkern.losses.calibration import (
    calibration_bins_from_confidence,
    new_figure,
    plot_reliability,
    reliability_bins,
    square_loss_probabilities,
)
from speechkern.losses.square import rescaled_square_loss
from speechkern.losses.squentropy import squentropy_loss
from speechkern.outputs import atomic_write, check_out_dir, write_text
from speechkern.progress import report

LOSSES = ("cross_entropy", "square", "rescaled_square", "squentropy")
BUILTIN_DATASETS = ("digits", "wine", "breast_cancer", "iris", "two_spirals")


@dataclass(frozen=True)
class Dataset:
    """A classification data set: features ``(n, d)`` (float64), labels ``(n,)`` in ``0..C−1``, class names."""

    name: str
    features: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "n_samples": int(self.features.shape[0]),
            "n_features": int(self.features.shape[1]),
            "n_classes": self.n_classes,
        }


@dataclass(frozen=True)
class BenchConfig:
    """Settings of the benchmark.

    seeds: runs per dataset and loss (seed s fixes the split, the initial weights and the batch order);
    epochs: passes over the training set; hidden: widths of the hidden ReLU layers; batch_size: samples per step;
    learning_rate: Adam's step size; test_fraction: share of each dataset held out for testing;
    n_bins: ECE bins; rescaled_t, rescaled_M: the rescaled square loss's t and M; squentropy_alpha: squentropy's α;
    device: torch device; threads: torch CPU threads during the run (1 is fastest for networks this small;
    None leaves the setting alone).
    """

    seeds: int = 5
    epochs: int = 100
    hidden: tuple[int, ...] = (128, 128)
    batch_size: int = 32
    learning_rate: float = 2e-3
    test_fraction: float = 0.3
    n_bins: int = 15
    rescaled_t: float = 1.0
    rescaled_M: float = 10.0
    squentropy_alpha: float = 1.0
    device: str = "cpu"
    threads: int | None = 1

    def __post_init__(self) -> None:
        checks = {
            "seeds": self.seeds >= 1,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "test_fraction": 0 < self.test_fraction < 1,
            "n_bins": self.n_bins >= 1,
            "rescaled_t": self.rescaled_t > 0,
            "rescaled_M": self.rescaled_M > 0,
            "squentropy_alpha": self.squentropy_alpha >= 0,
            "hidden": all(h >= 1 for h in self.hidden),
        }
        for name, ok in checks.items():
            if not ok:
                raise SpeechkernError(f"benchmark setting {name}={getattr(self, name)!r} is out of range")


@dataclass(frozen=True)
class RunResult:
    """One trained network: test accuracy and ECE (fractions in [0, 1]); ``ece_inverse`` only for square losses."""

    dataset: str
    loss: str
    seed: int
    accuracy: float
    ece: float
    ece_inverse: float | None
    final_train_loss: float
    seconds: float


@dataclass(frozen=True)
class SummaryRow:
    """Mean and sample standard deviation (n − 1; None for one seed) over seeds of one dataset × loss."""

    dataset: str
    loss: str
    n_seeds: int
    accuracy_mean: float
    accuracy_std: float | None
    ece_mean: float
    ece_std: float | None
    ece_inverse_mean: float | None = None
    ece_inverse_std: float | None = None


@dataclass
class BenchResult:
    """What :func:`run_benchmark` measured and wrote."""

    config: BenchConfig
    datasets: list[dict[str, Any]]
    runs: list[RunResult]
    summary: list[SummaryRow]
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "speechkern_version": speechkern.__version__,
            "torch_version": torch.__version__,
            "config": asdict(self.config),
            "losses": loss_descriptions(self.config),
            "datasets": self.datasets,
            "summary": [asdict(row) for row in self.summary],
            "runs": [asdict(run) for run in self.runs],
            "seconds": round(self.seconds, 2),
        }


# ---------------------------------------------------------------------------------------------------- datasets


def two_spirals(n_per_class: int = 400, noise: float = 0.8, turns: float = 1.75, seed: int = 0) -> Dataset:
    """Two interleaved spirals in the plane, a non-linear two-class problem.

    Points lie at angle θ (uniform in radius, up to ``turns`` revolutions) and radius θ; the second class is the
    first rotated by π. ``noise``: standard deviation of the Gaussian jitter, in the units of the radius.
    """
    rng = np.random.default_rng(seed)
    theta = np.sqrt(rng.uniform(0.02, 1.0, size=n_per_class)) * turns * 2 * np.pi
    arm = np.stack([theta * np.cos(theta), theta * np.sin(theta)], axis=1)
    points = np.concatenate([arm, -arm]) + rng.normal(scale=noise, size=(2 * n_per_class, 2))
    labels = np.repeat(np.arange(2), n_per_class)
    return Dataset("two_spirals", points, labels, ("arm 0", "arm 1"), f"generated: two spirals, {turns} turns")


def _from_sklearn(name: str, loader: Callable[..., Any]) -> Dataset:
    bunch = loader()
    names = tuple(str(n) for n in getattr(bunch, "target_names", np.unique(bunch.target)))
    return Dataset(
        name,
        np.asarray(bunch.data, dtype=np.float64),
        np.asarray(bunch.target, dtype=np.int64),
        names,
        f"scikit-learn load_{name}",
    )


def builtin_dataset(name: str) -> Dataset:
    """One of :data:`BUILTIN_DATASETS` (bundled with scikit-learn or generated; nothing is downloaded)."""
    loaders = {
        "digits": sk_datasets.load_digits,
        "wine": sk_datasets.load_wine,
        "breast_cancer": sk_datasets.load_breast_cancer,
        "iris": sk_datasets.load_iris,
    }
    if name == "two_spirals":
        return two_spirals()
    if name not in loaders:
        raise SpeechkernError(f"unknown built-in dataset {name!r}; choose from {', '.join(BUILTIN_DATASETS)}")
    return _from_sklearn(name, loaders[name])


def load_csv_dataset(path: str | os.PathLike) -> Dataset:
    """Read a dataset from a CSV file (UTF-8, comma-separated).

    Format: a header row; the last column is named ``label`` and holds the class of each row (any text or
    number; classes are sorted, numerically when all are integers); every other column is a numeric feature.
    Blank lines are skipped. Each class needs at least 2 rows. The dataset is named after the file's stem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise SpeechkernError(f"{path}: cannot read the file ({err}); give a UTF-8 CSV file") from None
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise SpeechkernError(f"{path}: the file is empty; give a header row and one row per sample")
    header = [cell.strip() for cell in rows[0]]
    if len(header) < 2 or header[-1].lower() != "label":
        raise SpeechkernError(
            f"{path}: the header's last column must be 'label' (the class) after at least one feature column, "
            f"got {header!r}"
        )
    features: list[list[float]] = []
    labels: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise SpeechkernError(f"{path}, row {line}: {len(row)} fields, expected {len(header)} as in the header")
        try:
            values = [float(cell) for cell in row[:-1]]
        except ValueError:
            bad = next(cell for cell in row[:-1] if not _is_float(cell))
            raise SpeechkernError(
                f"{path}, row {line}: feature value {bad!r} is not a number; every column but 'label' must be numeric"
            ) from None
        if not all(math.isfinite(v) for v in values):
            raise SpeechkernError(f"{path}, row {line}: features must be finite (no NaN or inf)")
        label = row[-1].strip()
        if not label:
            raise SpeechkernError(f"{path}, row {line}: the label is empty")
        features.append(values)
        labels.append(label)
    class_names = sorted(set(labels), key=lambda s: (0, int(s), s) if _is_int(s) else (1, 0, s))
    if len(class_names) < 2:
        raise SpeechkernError(f"{path}: {len(class_names)} class found; a classification dataset needs at least 2")
    index = {name: i for i, name in enumerate(class_names)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    counts = np.bincount(y, minlength=len(class_names))
    if counts.min() < 2:
        rare = class_names[int(counts.argmin())]
        raise SpeechkernError(f"{path}: class {rare!r} has {counts.min()} row; every class needs at least 2")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)
    return Dataset(name, np.asarray(features, dtype=np.float64), y, tuple(class_names), str(path))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def load_data_dir(directory: str | os.PathLike) -> list[Dataset]:
    """All ``*.csv`` datasets of a folder, in name order (see :func:`load_csv_dataset` for the format)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SpeechkernError(f"{directory}: not a folder; give a folder holding one CSV file per dataset")
    files = sorted(directory.glob("*.csv"))
    if not files:
        raise SpeechkernError(f"{directory}: no *.csv files found; put one CSV file per dataset there")
    return [load_csv_dataset(path) for path in files]


def select_datasets(data_dir: str | os.PathLike | None = None, only: Sequence[str] | None = None) -> list[Dataset]:
    """The built-in datasets plus those of ``data_dir``, restricted to the names in ``only`` when given."""
    extra = load_data_dir(data_dir) if data_dir is not None else []
    names = list(BUILTIN_DATASETS) + [d.name for d in extra]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpeechkernError(
            f"dataset name(s) {', '.join(duplicates)} used twice; rename the CSV file(s) in {data_dir}"
        )
    wanted = list(dict.fromkeys(only)) if only else names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise SpeechkernError(f"unknown dataset(s) {', '.join(unknown)}; available: {', '.join(names)}")
    by_name = {d.name: d for d in extra}
    return [by_name[n] if n in by_name else builtin_dataset(n) for n in wanted]


# ------------------------------------------------------------------------------------------------ training


def loss_descriptions(config: BenchConfig) -> dict[str, str]:
    """Human-readable name of each loss with its settings."""
    return {
        "cross_entropy": "cross-entropy",
        "square": "square",
        "rescaled_square": f"rescaled square (t={config.rescaled_t:g}, M={config.rescaled_M:g})",
        "squentropy": "squentropy" if config.squentropy_alpha == 1 else f"squentropy (α={config.squentropy_alpha:g})",
    }


def loss_function(name: str, config: BenchConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss ``name`` (one of :data:`LOSSES`) as a function of logits and class indices."""
    if name == "cross_entropy":
        return F.cross_entropy
    if name == "square":
        return lambda f, y: rescaled_square_loss(f, y, 1.0, 1.0)
    if name == "rescaled_square":
        return lambda f, y: rescaled_square_loss(f, y, config.rescaled_t, config.rescaled_M)
    if name == "squentropy":
        return lambda f, y: squentropy_loss(f, y, config.squentropy_alpha)
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")


def make_network(n_features: int, n_classes: int, hidden: Sequence[int], seed: int) -> nn.Sequential:
    """A ReLU multilayer perceptron with initial weights fixed by ``seed`` (the global RNG is left untouched)."""
    layers: list[nn.Module] = []
    width = n_features
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        return nn.Sequential(*layers)


@dataclass(frozen=True)
class _Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def split_dataset(dataset: Dataset, seed: int, test_fraction: float, device: torch.device) -> _Split:
    """Stratified train/test split and standardisation with the training statistics."""
    try:
        x_tr, x_te, y_tr, y_te = train_test_split(
            dataset.features, dataset.labels, test_size=test_fraction, random_state=seed, stratify=dataset.labels
        )
    except ValueError as err:
        raise SpeechkernError(
            f"dataset {dataset.name}: cannot split off a stratified test set of {test_fraction:.0%} ({err}); "
            "give more rows per class"
        ) from None
    scaler = StandardScaler().fit(x_tr)

    def tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(a, dtype=dtype, device=device)

    return _Split(
        tensor(scaler.transform(x_tr), torch.float32),
        tensor(y_tr, torch.long),
        tensor(scaler.transform(x_te), torch.float32),
        tensor(y_te, torch.long),
    )


def train_one(split: _Split, n_classes: int, loss_name: str, seed: int, config: BenchConfig) -> tuple[nn.Module, float]:
    """Train the seed's network with one loss; returns it and the mean training loss of the last epoch."""
    device = split.x_train.device
    model = make_network(split.x_train.shape[1], n_classes, config.hidden, seed).to(device)
    loss_fn = loss_function(loss_name, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    order = torch.Generator().manual_seed(seed)  # the same batch order for every loss
    n = split.x_train.shape[0]
    last = math.nan
    model.train()
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=order).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, n, config.batch_size):
            idx = perm[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(split.x_train[idx]), split.y_train[idx])
            loss.backward()
            optimizer.step()
            total += loss.detach() * idx.numel()
        last = total / n
    return model, float(last)


def evaluate(
    model: nn.Module, split: _Split, loss_name: str, config: BenchConfig
) -> tuple[float, float, float | None, np.ndarray]:
    """Test accuracy, ECE of the softmax, ECE of the inverse square-loss map (square losses), softmax probs."""
    model.eval()
    with torch.no_grad():
        outputs = model(split.x_test)
    probs = torch.softmax(outputs.double(), dim=1)
    labels = split.y_test.cpu().numpy()
    bins = reliability_bins(probs, labels, config.n_bins)
    accuracy = float((probs.argmax(dim=1).cpu().numpy() == labels).mean())
    ece_inverse = None
    if loss_name in ("square", "rescaled_square"):
        t, m = (1.0, 1.0) if loss_name == "square" else (config.rescaled_t, config.rescaled_M)
        mapped = square_loss_probabilities(outputs.double(), t, m)
        ece_inverse = reliability_bins(mapped, labels, config.n_bins).ece
    return accuracy, bins.ece, ece_inverse, probs.cpu().numpy()


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SpeechkernError(f"device {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpeechkernError(f"device {name!r}: no CUDA GPU is available here; use --device cpu")
    return device


# ------------------------------------------------------------------------------------------------- outputs


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def summarise(runs: Sequence[RunResult]) -> list[SummaryRow]:
    """Mean ± sample standard deviation over seeds of each dataset × loss, in the order the runs came."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for run in runs:
        groups.setdefault((run.dataset, run.loss), []).append(run)
    rows = []
    for (dataset, loss), group in groups.items():
        acc = _mean_std([r.accuracy for r in group])
        ece = _mean_std([r.ece for r in group])
        inv = _mean_std([r.ece_inverse for r in group]) if group[0].ece_inverse is not None else (None, None)
        rows.append(SummaryRow(dataset, loss, len(group), acc[0], acc[1], ece[0], ece[1], inv[0], inv[1]))
    return rows


def format_mean_std(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` scaled (to percent by default); ``—`` when there is no value."""
    if mean is None:
        return "—"
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


TABLE_HEADER = ("dataset", "loss", "test accuracy (%)", "ECE (%)", "ECE, inverse map (%)")


def table_rows(result: BenchResult, short_names: bool = False) -> list[tuple[str, ...]]:
    """The summary as rows of text cells under :data:`TABLE_HEADER` (mean ± std over seeds, in percent).

    short_names: name the losses by their keys in :data:`LOSSES` rather than with their settings.
    """
    names = {loss: loss for loss in LOSSES} if short_names else loss_descriptions(result.config)
    return [
        (
            row.dataset,
            names[row.loss],
            format_mean_std(row.accuracy_mean, row.accuracy_std),
            format_mean_std(row.ece_mean, row.ece_std, digits=2),
            format_mean_std(row.ece_inverse_mean, row.ece_inverse_std, digits=2),
        )
        for row in result.summary
    ]


def markdown_table(result: BenchResult) -> str:
    """The summary as a Markdown document: the table and how it was measured."""
    cfg = result.config
    lines = [
        "# Classification losses: test accuracy and calibration",
        "",
        f"Mean ± sample standard deviation over {cfg.seeds} seed(s); each seed fixes the stratified split "
        f"({cfg.test_fraction:.0%} test), the initial weights and the batch order, the same for every loss. "
        f"Network: MLP {cfg.hidden} with ReLU, Adam (lr {cfg.learning_rate:g}), {cfg.epochs} epochs, "
        f"batch {cfg.batch_size}. ECE: top-label, {cfg.n_bins} equal-width bins, softmax probabilities; "
        "'inverse map': probabilities from inverting the square loss's minimiser (square losses only).",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(TABLE_HEADER) - 2)) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(result)]
    lines += ["", f"Reliability diagrams: `reliability/<dataset>.png`. Total time {result.seconds:.0f} s.", ""]
    return "\n".join(lines)


def csv_text(result: BenchResult) -> str:
    """The summary as CSV, one row per dataset × loss, fractions in [0, 1]."""
    buffer = io.StringIO()
    fields = list(SummaryRow.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in result.summary:
        writer.writerow({k: ("" if v is None else v) for k, v in asdict(row).items()})
    return buffer.getvalue()


def reliability_figure(dataset: str, pooled: dict[str, tuple[np.ndarray, np.ndarray]], config: BenchConfig) -> Figure:
    """One panel per loss: reliability of the softmax probabilities pooled over seeds."""
    names = loss_descriptions(config)
    fig = new_figure(3.3 * len(pooled), 3.9)
    axes = fig.subplots(1, len(pooled), squeeze=False)[0]
    for ax, (loss, (probs, labels)) in zip(axes, pooled.items(), strict=True):
        conf = probs.max(axis=1)
        correct = probs.argmax(axis=1) == labels
        plot_reliability(calibration_bins_from_confidence(conf, correct, config.n_bins), ax, names[loss])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"{dataset}: reliability, test sets of {config.seeds} seed(s) pooled", fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------------- driver


def run_benchmark(
    out_dir: str | os.PathLike,
    config: BenchConfig | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    datasets: Sequence[str] | None = None,
    losses: Sequence[str] = LOSSES,
    overwrite: bool = False,
) -> BenchResult:
    """Train and evaluate every dataset × loss × seed, write the tables and diagrams to ``out_dir``.

    data_dir: a folder of extra CSV datasets; datasets: names to run (default: all built-in and extra ones);
    losses: a subset of :data:`LOSSES`; overwrite: allow a non-empty ``out_dir`` (the result files are replaced,
    diagrams of datasets not in this run removed; nothing else is touched).
    Reports progress as ``losses/bench`` events. Returns the results and the files written.
    """
    config = config or BenchConfig()
    unknown = [name for name in losses if name not in LOSSES]
    if unknown or not losses:
        raise SpeechkernError(
            f"unknown loss(es) {', '.join(unknown) or '(none given)'}; choose from {', '.join(LOSSES)}"
        )
    out = check_out_dir(out_dir, overwrite)
    chosen = select_datasets(data_dir, datasets)
    device = _device(config.device)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    runs: list[RunResult] = []
    pooled: dict[str, dict[str, tuple[list[np.ndarray], list[np.ndarray]]]] = {}
    total = len(chosen) * config.seeds * len(losses)
    try:
        for dataset in chosen:
            pooled[dataset.name] = {loss: ([], []) for loss in losses}
            for seed in range(config.seeds):
                split = split_dataset(dataset, seed, config.test_fraction, device)
                for loss in losses:
                    t0 = time.perf_counter()
                    model, final = train_one(split, dataset.n_classes, loss, seed, config)
                    accuracy, ece, ece_inverse, probs = evaluate(model, split, loss, config)
                    runs.append(
                        RunResult(dataset.name, loss, seed, accuracy, ece, ece_inverse, final, time.perf_counter() - t0)
                    )
                    pooled[dataset.name][loss][0].append(probs)
                    pooled[dataset.name][loss][1].append(split.y_test.cpu().numpy())
                    report(
                        "losses/bench",
                        len(runs),
                        total,
                        "losses bench",
                        dataset=dataset.name,
                        loss=loss,
                        seed=seed,
                        acc=accuracy,
                        ece=ece,
                    )
    finally:
        torch.set_num_threads(threads)

    result = BenchResult(
        config, [d.describe() for d in chosen], runs, summarise(runs), seconds=time.perf_counter() - started
    )
    files = [
        write_text(out / "results.json", json.dumps(result.to_dict(), indent=2) + "\n"),
        write_text(out / "results.csv", csv_text(result)),
        write_text(out / "results.md", markdown_table(result)),
    ]
    for name, per_loss in pooled.items():
        merged = {loss: (np.concatenate(p), np.concatenate(y)) for loss, (p, y) in per_loss.items()}
        fig = reliability_figure(name, merged, config)
        files.append(
            atomic_write(
                out / "reliability" / f"{name}.png", lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=120)
            )
        )
    # with overwrite, diagrams of datasets left out of this run would otherwise sit beside the new tables
    for stale in sorted((out / "reliability").glob("*.png")):
        if stale not in files:
            stale.unlink()
    result.files = files
    return result
