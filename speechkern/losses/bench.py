"""Benchmark of the classification losses: one small network trained with each loss, accuracy and calibration.

For every dataset, evaluation split and seed the *same* multilayer perceptron — same initial weights, same
mini-batch order — is trained with each loss. The splits are the ones the data provide (train/test files, folds,
row-index lists: see :mod:`speechkern.losses.bench_data`), else a stratified re-split per seed. Features are
standardised with the training statistics. A selection rule (:mod:`speechkern.losses.selection`) picks the epoch
and the learning rate. The test accuracy and top-label ECE of the kept model are summarised as mean ± standard
deviation over the splits and seeds of each set, and losses are compared pairwise over sets (wins/ties/losses
with a sign test, :mod:`speechkern.losses.comparison`).

Files written into the output folder, each atomically: ``sets/<dataset>.json`` as each dataset finishes (a rerun
with the same settings resumes from them), ``reliability/<dataset>.png``, and at the end ``results.md``,
``results.csv``, ``results.json``, ``comparison.md``, ``comparison.csv`` and ``comparison.png``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

import speechkern
from speechkern.device import resolve_device
from speechkern.errors import SpeechkernError
from speechkern.limits import check_network
from speechkern.losses import comparison
from speechkern.losses.bench_data import (
    BUILTIN_DATASETS,
    Dataset,
    Split,
    builtin_dataset,
    load_csv_dataset,
    load_data_dir,
    load_split_files,
    select_datasets,
    two_spirals,
)
from speechkern.losses.calibration import (
    calibration_bins_from_confidence,
    new_figure,
    plot_reliability,
    reliability_bins,
    square_loss_probabilities,
)
from speechkern.losses.names import DEFAULT_EPOCHS, DEFAULT_SELECTION, DEFAULT_SMOOTHING_WINDOW, LOSSES
from speechkern.losses.selection import (
    BUDGET_RULE,
    CURVE_RULES,
    SELECTION_HELP,
    SELECTION_RULES,
    EpochSelector,
    check_rule,
)
from speechkern.losses.square import rescaled_square_loss
from speechkern.losses.squentropy import squentropy_loss
from speechkern.outputs import atomic_write, check_out_dir, remove_parts, write_text
from speechkern.progress import report

logger = logging.getLogger(__name__)
OPTIMIZERS = ("adam", "sgd")
__all__ = [
    "BUILTIN_DATASETS",
    "LOSSES",
    "SELECTION_HELP",
    "SELECTION_RULES",
    "BenchConfig",
    "BenchResult",
    "Dataset",
    "Split",
    "builtin_dataset",
    "load_csv_dataset",
    "load_data_dir",
    "load_split_files",
    "run_benchmark",
    "select_datasets",
    "two_spirals",
]


@dataclass(frozen=True)
class BenchConfig:
    """Settings of the benchmark.

    seeds: runs per dataset, split and loss (seed s fixes a re-split, the validation share, the initial weights
    and the batch order); epochs: passes over the training part; hidden: widths of the hidden ReLU layers;
    batch_size: samples per step; optimizer: ``"adam"`` or ``"sgd"``; learning_rates: the grid the validation
    selects from; momentum, weight_decay: SGD's momentum and both optimisers' weight decay; test_fraction: share
    held out for testing when the data provide no split; val_fraction: share of the training part held out for
    model selection when the data provide no validation part (0: no selection, the last epoch of the first
    learning rate); selection: the rule that picks the epoch (one of
    :data:`~speechkern.losses.selection.SELECTION_RULES`); smoothing_window: epochs averaged by
    ``"accuracy-smoothed"``; n_bins: ECE bins; rescaled_t, rescaled_M: the rescaled square loss's t and M;
    squentropy_alpha: squentropy's α; device: torch device; threads: torch CPU threads during the run (1 is
    fastest for networks this small; None leaves the setting alone).
    """

    seeds: int = 5
    epochs: int = DEFAULT_EPOCHS
    hidden: tuple[int, ...] = (128, 128)
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rates: tuple[float, ...] = (2e-3,)
    momentum: float = 0.9
    weight_decay: float = 0.0
    test_fraction: float = 0.3
    val_fraction: float = 0.2
    selection: str = DEFAULT_SELECTION
    smoothing_window: int = DEFAULT_SMOOTHING_WINDOW
    n_bins: int = 15
    rescaled_t: float = 1.0
    rescaled_M: float = 10.0
    squentropy_alpha: float = 1.0
    device: str = "cpu"
    threads: int | None = 1

    def __post_init__(self) -> None:
        check_rule(self.selection)
        checks = {
            "seeds": self.seeds >= 1,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "optimizer": self.optimizer in OPTIMIZERS,
            "learning_rates": len(self.learning_rates) >= 1 and all(lr > 0 for lr in self.learning_rates),
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "test_fraction": 0 < self.test_fraction < 1,
            "val_fraction": 0 <= self.val_fraction < 1,
            "smoothing_window": self.smoothing_window >= 1,
            "n_bins": self.n_bins >= 1,
            "rescaled_t": self.rescaled_t > 0,
            "rescaled_M": self.rescaled_M > 0,
            "squentropy_alpha": self.squentropy_alpha >= 0,
            "hidden": all(h >= 1 for h in self.hidden),
        }
        floats = ("learning_rates", "momentum", "weight_decay", "test_fraction", "val_fraction", "rescaled_t",
                  "rescaled_M", "squentropy_alpha")  # fmt: skip
        for name in floats:  # inf passes the comparisons above and trains to NaN outputs
            values = getattr(self, name)
            checks[name] = checks[name] and all(math.isfinite(v) for v in np.atleast_1d(values))
        whole, positive = "a whole number ≥ 1", "a finite number above 0"
        expected = {
            "seeds": whole, "epochs": whole, "batch_size": whole, "smoothing_window": whole, "n_bins": whole,
            "optimizer": f"one of {', '.join(OPTIMIZERS)}",
            "learning_rates": "one or more finite numbers above 0, such as 2e-3",
            "momentum": "a number from 0 up to 1 (not 1), such as 0.9",
            "weight_decay": "a finite number ≥ 0, such as 0 or 1e-4",
            "test_fraction": "a fraction between 0 and 1 (neither), such as 0.3",
            "val_fraction": "a fraction from 0 up to 1 (not 1), such as 0.2",
            "rescaled_t": positive, "rescaled_M": positive, "squentropy_alpha": "a finite number ≥ 0",
            "hidden": "layer widths of 1 or more",
        }  # fmt: skip
        for name, ok in checks.items():
            if not ok:  # the value, what was expected (it said only "is out of range")
                value = getattr(self, name)  # a list as the command line takes it: 1e-3,nan (not (0.001, nan))
                shown = ",".join(f"{v:g}" for v in value) if isinstance(value, tuple | list) else repr(value)
                raise SpeechkernError(f"benchmark setting {name}={shown} is out of range; expected "
                                      f"{expected[name]}")  # fmt: skip
        if self.selection == "last" and len(self.learning_rates) > 1:
            raise SpeechkernError(
                f"selection 'last' trains without a validation part and cannot choose among the learning rates "
                f"{', '.join(f'{lr:g}' for lr in self.learning_rates)}; give one learning rate or another selection"
            )

    def key(self, losses: Sequence[str]) -> str:
        """A hash of every setting that changes the results (not the device or threads), with the losses."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("device", "threads")}
        text = json.dumps({"settings": settings, "losses": list(losses)}, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    split: str = "random split"
    learning_rate: float | None = None
    epoch: int | None = None
    val_accuracy: float | None = None


@dataclass(frozen=True)
class SummaryRow:
    """Mean and sample standard deviation (n − 1; None for one run) over the splits × seeds of one dataset × loss,
    and the median and range of the epochs the selection kept (1-based)."""

    dataset: str
    loss: str
    n_runs: int
    accuracy_mean: float
    accuracy_std: float | None
    ece_mean: float
    ece_std: float | None
    ece_inverse_mean: float | None = None
    ece_inverse_std: float | None = None
    epoch_median: float | None = None
    epoch_min: int | None = None
    epoch_max: int | None = None


@dataclass
class BenchResult:
    """What :func:`run_benchmark` measured and wrote."""

    config: BenchConfig
    datasets: list[dict[str, Any]]
    runs: list[RunResult]
    summary: list[SummaryRow]
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    losses: tuple[str, ...] = LOSSES
    comparisons: list[comparison.PairedComparison] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "speechkern_version": speechkern.__version__,
            "torch_version": torch.__version__,
            "config": asdict(self.config),
            "losses": loss_descriptions(self.config),
            "datasets": self.datasets,
            "summary": [asdict(row) for row in self.summary],
            "runs": [asdict(run) for run in self.runs],
            "comparison": [asdict(c) for c in self.comparisons],
            "resumed_datasets": self.resumed,
            "seconds": round(self.seconds, 2),
        }


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
    widths = [n_features, *hidden, n_classes]  # weights, gradients and Adam's two moments
    n_weights = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    check_network(f"a network of hidden widths {tuple(hidden)}", n_weights, 4, "lower hidden, such as (128, 128)")
    layers: list[nn.Module] = []
    width = n_features
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            layers.append(nn.Linear(width, n_classes))
        except (MemoryError, RuntimeError) as err:  # torch's CPU allocator raises RuntimeError
            if not isinstance(err, MemoryError) and "allocate" not in str(err):
                raise
            raise SpeechkernError(
                f"a network of hidden widths {tuple(hidden)} does not fit in memory; lower hidden, such as (128, 128)"
            ) from None
        return nn.Sequential(*layers)


@dataclass(frozen=True)
class _Split:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None


def _stratified(y: np.ndarray, fraction: float, seed: int, what: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a stratified split of ``y`` into (kept, held out ``fraction``)."""
    idx = np.arange(len(y))
    try:
        kept, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=y)
    except ValueError as err:
        raise SpeechkernError(
            f"dataset {dataset}: cannot split off a stratified {what} of {fraction:.0%} ({err}); give more rows per "
            f"class{' or val_fraction=0' if what == 'validation part' else ''}"
        ) from None
    return np.sort(kept), np.sort(held)


def _hold_out(dataset: Dataset, split: Split, seed: int, config: BenchConfig) -> Split:
    """``split`` with a stratified ``val_fraction`` of its training part (drawn with the seed) as validation."""
    kept, held = _stratified(dataset.labels[split.train], config.val_fraction, seed, "validation part", dataset.name)
    return Split(split.name, split.train[kept], split.test, split.train[held])


def evaluation_splits(dataset: Dataset, seed: int, config: BenchConfig) -> list[Split]:
    """The splits a seed evaluates: the data's own (train/test files, folds, index lists), else one re-split.

    For the rules that read a validation curve a validation part is added when the split has none and
    ``val_fraction > 0``: a stratified share of the training part, drawn with the seed. For ``"last"`` and
    ``"budget"`` the training part stays whole (``"budget"`` chooses its epochs on :func:`selection_split`).
    """
    if dataset.splits is None:
        train, test = _stratified(dataset.labels, config.test_fraction, seed, "test set", dataset.name)
        splits = [Split("random split", train, test, None)]
    else:
        splits = list(dataset.splits)
    if config.selection not in CURVE_RULES or config.val_fraction == 0:
        return splits
    return [split if split.validation is not None else _hold_out(dataset, split, seed, config) for split in splits]


def selection_split(dataset: Dataset, split: Split, seed: int, config: BenchConfig) -> Split | None:
    """Where the ``"budget"`` rule chooses the epoch budget for ``split``: the data's selection split, else the
    split's own training and validation parts, else a ``val_fraction`` share of its training part (None when
    ``val_fraction`` is 0). The returned split has an empty test part."""
    if dataset.selection is not None:
        chosen = dataset.selection
    elif split.validation is not None:
        chosen = split
    elif config.val_fraction > 0:
        chosen = _hold_out(dataset, split, seed, config)
    else:
        return None
    return Split(f"{split.name}: selection", chosen.train, np.empty(0, dtype=np.int64), chosen.validation)


def prepare_split(dataset: Dataset, split: Split, device: torch.device) -> _Split:
    """Tensors of one split, standardised with the training part's statistics."""
    if np.unique(dataset.labels[split.train]).size < 2:
        raise SpeechkernError(f"dataset {dataset.name}, {split.name}: the training part holds a single class")
    scaler = StandardScaler().fit(dataset.features[split.train])

    def x(rows: np.ndarray) -> torch.Tensor:
        if rows.size == 0:  # the test part of a selection split
            return torch.empty((0, dataset.features.shape[1]), dtype=torch.float32, device=device)
        return torch.as_tensor(scaler.transform(dataset.features[rows]), dtype=torch.float32, device=device)

    def y(rows: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(dataset.labels[rows], dtype=torch.long, device=device)

    val = split.validation
    return _Split(
        split.name,
        x(split.train),
        y(split.train),
        x(split.test),
        y(split.test),
        None if val is None else x(val),
        None if val is None else y(val),
    )


def split_dataset(dataset: Dataset, seed: int, test_fraction: float, device: torch.device) -> _Split:
    """Stratified train/test re-split (no validation part) and standardisation with the training statistics."""
    train, test = _stratified(dataset.labels, test_fraction, seed, "test set", dataset.name)
    return prepare_split(dataset, Split("random split", train, test, None), device)


def _optimizer(model: nn.Module, lr: float, config: BenchConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=config.weight_decay)


def _validate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> tuple[float, float]:
    """Accuracy and mean loss of ``model`` on ``(x, y)``."""
    model.eval()
    with torch.no_grad():
        outputs = model(x)
        correct = (outputs.argmax(dim=1) == y).double().mean()
        loss = loss_fn(outputs, y)
    model.train()
    return float(correct), float(loss)


@dataclass(frozen=True)
class Selected:
    """The model a run keeps: trained with ``learning_rate``, weights of ``epoch`` (1-based), its validation
    accuracy (None without a validation part), the mean training loss of that epoch, and the score the rule
    compares learning rates by (higher is better; None without a validation part)."""

    model: nn.Module
    learning_rate: float
    epoch: int
    val_accuracy: float | None
    train_loss: float
    score: float | None = None


def train_one(
    split: _Split, n_classes: int, loss_name: str, seed: int, config: BenchConfig, learning_rate: float | None = None
) -> tuple[nn.Module, float]:
    """Train the seed's network with one loss and learning rate (default: the first of the grid) for all epochs,
    without selection; returns it and the mean training loss of the last epoch."""
    lr = config.learning_rates[0] if learning_rate is None else learning_rate
    chosen = _train(split, n_classes, loss_name, seed, config, lr)
    return chosen.model, chosen.train_loss


def _train(
    split: _Split,
    n_classes: int,
    loss_name: str,
    seed: int,
    config: BenchConfig,
    lr: float,
    rule: str | None = None,
    epochs: int | None = None,
) -> Selected:
    """Train for ``epochs`` (default ``config.epochs``); with a curve ``rule`` and a validation part keep the
    epoch the rule selects (:class:`~speechkern.losses.selection.EpochSelector`), else the last."""
    device = split.x_train.device
    model = make_network(split.x_train.shape[1], n_classes, config.hidden, seed).to(device)
    loss_fn = loss_function(loss_name, config)
    optimizer = _optimizer(model, lr, config)
    order = torch.Generator().manual_seed(seed)  # the same batch order for every loss
    n = split.x_train.shape[0]
    selector = None
    if rule in CURVE_RULES and split.x_val is not None and split.x_val.shape[0] > 0:
        selector = EpochSelector(rule, config.smoothing_window)
    train_losses: list[float] = []
    model.train()
    for _ in range(epochs or config.epochs):
        perm = torch.randperm(n, generator=order).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, n, config.batch_size):
            idx = perm[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(split.x_train[idx]), split.y_train[idx])
            loss.backward()
            optimizer.step()
            total += loss.detach() * idx.numel()
        train_losses.append(float(total / n))
        if selector is not None:
            selector.update(*_validate(model, split.x_val, split.y_val, loss_fn), model.state_dict())  # type: ignore[arg-type]
    if selector is None:
        return Selected(model, lr, len(train_losses), None, train_losses[-1])
    epoch, val_accuracy, state = selector.finish()
    model.load_state_dict(state)
    score = selector.score(epoch)
    return Selected(model, lr, epoch, val_accuracy, train_losses[epoch - 1], score)


def train_selected(split: _Split, n_classes: int, loss_name: str, seed: int, config: BenchConfig) -> Selected:
    """Model selection on the validation part by ``config.selection``: the learning rate of the grid whose
    selected epoch scores best (ties: the earlier learning rate), with that epoch's weights. Without a
    validation part, or with ``"last"``: the first learning rate, last epoch. ``"budget"`` is run by
    :func:`train_budget`; here it selects as its selection split does (best validation accuracy, earliest)."""
    rule = BUDGET_RULE if config.selection == "budget" else config.selection
    if rule not in CURVE_RULES or split.x_val is None or split.x_val.shape[0] == 0:
        return _train(split, n_classes, loss_name, seed, config, config.learning_rates[0])
    best: Selected | None = None
    for lr in config.learning_rates:
        chosen = _train(split, n_classes, loss_name, seed, config, lr, rule)
        if best is None or (chosen.score or 0.0) > (best.score or 0.0):
            best = chosen
    assert best is not None
    return best


def train_budget(
    split: _Split, n_classes: int, loss_name: str, seed: int, config: BenchConfig, budget: Selected
) -> Selected:
    """A fresh network trained on the whole training part of ``split`` with the learning rate and for the
    epochs ``budget`` chose on a selection split (the ``"budget"`` rule); the last epoch is kept."""
    trained = _train(split, n_classes, loss_name, seed, config, budget.learning_rate, epochs=budget.epoch)
    return replace(trained, val_accuracy=budget.val_accuracy, score=budget.score)


def evaluate(
    model: nn.Module, split: _Split, loss_name: str, config: BenchConfig
) -> tuple[float, float, float | None, np.ndarray]:
    """Test accuracy, ECE of the softmax, ECE of the inverse square-loss map (square losses), softmax probs.

    Raises SpeechkernError when the network's outputs are NaN or infinite (training diverged).
    """
    model.eval()
    with torch.no_grad():
        outputs = model(split.x_test)
    if not bool(torch.isfinite(outputs).all()):  # softmax of NaN is NaN: no calibration to compute
        rates = ", ".join(f"{lr:g}" for lr in config.learning_rates)
        raise SpeechkernError(
            f"{split.name}: the {loss_name} network's test outputs are NaN or infinite (training diverged, or the "
            f"features are too large to standardise); lower learning_rates (now {rates}) or rescale the features"
        )
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


# ------------------------------------------------------------------------------------------------- outputs


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def summarise(runs: Sequence[RunResult]) -> list[SummaryRow]:
    """Mean ± sample standard deviation over splits × seeds of each dataset × loss, in the order the runs came."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for run in runs:
        groups.setdefault((run.dataset, run.loss), []).append(run)
    rows = []
    for (dataset, loss), group in groups.items():
        acc = _mean_std([r.accuracy for r in group])
        ece = _mean_std([r.ece for r in group])
        inv = _mean_std([r.ece_inverse for r in group]) if group[0].ece_inverse is not None else (None, None)
        epochs = [r.epoch for r in group if r.epoch is not None]
        spread = (float(np.median(epochs)), min(epochs), max(epochs)) if epochs else (None, None, None)
        rows.append(SummaryRow(dataset, loss, len(group), acc[0], acc[1], ece[0], ece[1], inv[0], inv[1], *spread))
    return rows


def format_mean_std(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` scaled (to percent by default); ``—`` when there is no value."""
    if mean is None:
        return "—"
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


TABLE_HEADER = ("dataset", "loss", "test accuracy (%)", "ECE (%)", "ECE, inverse map (%)", "epoch kept")


def format_epochs(row: SummaryRow) -> str:
    """``median (min–max)`` of the epochs kept, ``—`` when unknown."""
    if row.epoch_median is None:
        return "—"
    return f"{row.epoch_median:g} ({row.epoch_min}–{row.epoch_max})"


def epoch_overview(runs: Sequence[RunResult], early: int = 5) -> str:
    """One sentence on the epochs kept over all runs: the median and the share of runs at epoch ≤ ``early``."""
    epochs = np.asarray([r.epoch for r in runs if r.epoch is not None])
    if epochs.size == 0:
        return "no epochs recorded"
    share = float(np.mean(epochs <= early))
    return f"epoch kept: median {np.median(epochs):g} over {epochs.size} runs, epoch ≤ {early} in {share:.0%} of runs"


def table_rows(result: BenchResult, short_names: bool = False) -> list[tuple[str, ...]]:
    """The summary as rows of text cells under :data:`TABLE_HEADER` (mean ± std over runs, in percent; the
    median and range of the epochs kept).

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
            format_epochs(row),
        )
        for row in result.summary
    ]


def markdown_table(result: BenchResult) -> str:
    """The summary as a Markdown document: the table and how it was measured."""
    cfg = result.config
    optimiser = "Adam" if cfg.optimizer == "adam" else f"SGD (momentum {cfg.momentum:g})"
    lrs = ", ".join(f"{lr:g}" for lr in cfg.learning_rates)
    protocols = sorted({d.get("protocol", "") for d in result.datasets})
    lines = [
        "# Classification losses: test accuracy and calibration",
        "",
        f"Mean ± sample standard deviation over the runs of each dataset (its evaluation splits × {cfg.seeds} "
        f"seed(s)); each seed fixes the initial weights and the batch order (and any re-split), the same for every "
        f"loss. Evaluation: {'; '.join(protocols)} (re-splits hold out {cfg.test_fraction:.0%} for testing). "
        f"Network: MLP {cfg.hidden} with ReLU, {optimiser}, weight decay {cfg.weight_decay:g}, {cfg.epochs} "
        f"epochs, batch {cfg.batch_size}; learning rate from {{{lrs}}}. Selection '{cfg.selection}': "
        f"{_selection_text(cfg)}. ECE: top-label, {cfg.n_bins} equal-width bins, softmax probabilities; "
        "'inverse map': probabilities from inverting the square loss's minimiser (square losses only). "
        f"Results are averaged over each set's splits; the comparison counts sets. "
        f"{epoch_overview(result.runs).capitalize()}.",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(TABLE_HEADER) - 2)) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(result)]
    lines += ["", f"Reliability diagrams: `reliability/<dataset>.png`. Total time {result.seconds:.0f} s.", ""]
    return "\n".join(lines)


def _selection_text(cfg: BenchConfig) -> str:
    text = SELECTION_HELP[cfg.selection]
    if cfg.selection == "accuracy-smoothed":
        text += f" (window {cfg.smoothing_window})"
    share = f"{cfg.val_fraction:.0%} of the training part"
    if cfg.selection == "budget":
        text += f"; the selection split: the data's own, else the split's validation part, else {share}"
    elif cfg.selection != "last":
        text += f"; the validation part: the data's own, else {share}"
    return text


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
    fig.suptitle(f"{dataset}: reliability, test sets of all splits and seeds pooled", fontsize=11)
    return fig


# --------------------------------------------------------------------------------------------------- driver


_STATE = "bench.json"


def _set_path(out: Path, name: str) -> Path:
    return out / "sets" / f"{name}.json"


def _prepare_out_dir(out: Path, key: str, overwrite: bool) -> bool:
    """Check the output folder; returns whether finished sets may be resumed from it.

    A folder holding a bench of the same settings (``bench.json``) resumes; any other non-empty folder is
    refused unless ``overwrite``, which removes the earlier per-set results and diagrams.
    """
    state = out / _STATE
    for part in remove_parts(out):  # a run killed mid-write (SIGKILL): its other files are whole, it resumes
        logger.info("removed %s, the unfinished write of a killed run", part)
    if state.is_file():
        try:
            saved = json.loads(state.read_text(encoding="utf-8"))
            same = isinstance(saved, dict) and saved.get("key") == key
        except (OSError, ValueError):
            same = False
        if same and not overwrite:
            return True
    check_out_dir(out, overwrite)
    if overwrite:
        for folder in ("sets", "reliability"):
            if (out / folder).is_dir():
                shutil.rmtree(out / folder)
        (out / "comparison.png").unlink(missing_ok=True)
    return False


def _load_finished(out: Path, dataset: Dataset, key: str) -> list[RunResult] | None:
    """The runs of a set finished by an earlier run with the same settings, or None."""
    path = _set_path(out, dataset.name)
    if not path.is_file():
        return None
    # a damaged file (not JSON, not the object written, runs of other fields) is recomputed: writes are atomic,
    # so it is a foreign file
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        # keyed on the content, not on how the path was spelled: a relative and an absolute --data resume alike
        if saved.get("key") != key or saved.get("dataset", {}).get("fingerprint") != dataset.fingerprint():
            return None
        return [RunResult(**run) for run in saved["runs"]]
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return None


def _steps(n_train: int, epochs: int, config: BenchConfig, validate: bool) -> int:
    """Optimiser steps of one training, plus one per validation pass: the unit of work the ETA counts."""
    return epochs * (math.ceil(n_train / config.batch_size) + int(validate))


@dataclass
class _Work:
    """The bench's work in training steps (:func:`_steps`), planned and done, and its runs, for the ETA."""

    total: int = 0
    done: int = 0
    runs: int = 0
    n_runs: int = 0


@dataclass(frozen=True)
class _Unit:
    """One split of a seed: where it is evaluated, where ``"budget"`` chooses its epochs, the planned steps."""

    split: Split
    selection: Split | None
    selection_steps: int
    train_steps: int


def _units(dataset: Dataset, seed: int, config: BenchConfig) -> list[_Unit]:
    """The splits one seed evaluates with the training steps each costs per loss (selection and training)."""
    n_lr = len(config.learning_rates)
    units = []
    for k, split in enumerate(evaluation_splits(dataset, seed, config)):
        if config.selection == "budget":
            selection = selection_split(dataset, split, seed, config)
            # the data's own selection split is trained once per seed and loss, with the first split
            shared_done = dataset.selection is not None and k > 0
            chose_steps = 0
            if selection is not None and not shared_done:
                chose_steps = n_lr * _steps(len(selection.train), config.epochs, config, True)
            units.append(_Unit(split, selection, chose_steps, _steps(len(split.train), config.epochs, config, False)))
            continue
        validate = config.selection in CURVE_RULES and split.validation is not None and len(split.validation) > 0
        steps = _steps(len(split.train), config.epochs, config, validate) * (n_lr if validate else 1)
        units.append(_Unit(split, None, 0, steps))
    return units


def _plan(datasets: Sequence[Dataset], config: BenchConfig, n_losses: int) -> _Work:
    """The work of every dataset × seed × split × loss, planned before training (``done`` = 0)."""
    work = _Work()
    for dataset in datasets:
        for seed in range(config.seeds):
            for unit in _units(dataset, seed, config):
                work.total += n_losses * (unit.selection_steps + unit.train_steps)
                work.n_runs += n_losses
    return work


def _run_dataset(
    dataset: Dataset, config: BenchConfig, losses: Sequence[str], device: torch.device, work: _Work
) -> tuple[list[RunResult], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Every split × seed × loss of one dataset; the runs and the test probabilities pooled per loss."""
    runs: list[RunResult] = []
    pooled: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {loss: ([], []) for loss in losses}
    for seed in range(config.seeds):
        budgets: dict[str, Selected] = {}  # per loss, chosen on the data's own selection split
        for unit in _units(dataset, seed, config):
            split = prepare_split(dataset, unit.split, device)
            selection = None
            if unit.selection is not None and (dataset.selection is None or not budgets):
                selection = prepare_split(dataset, unit.selection, device)
            for loss in losses:
                t0 = time.perf_counter()
                train_steps = unit.train_steps
                if config.selection == "budget" and (selection is not None or loss in budgets):
                    budget = budgets.get(loss) or train_selected(selection, dataset.n_classes, loss, seed, config)  # type: ignore[arg-type]
                    if dataset.selection is not None:
                        budgets[loss] = budget
                    chosen = train_budget(split, dataset.n_classes, loss, seed, config, budget)
                    train_steps = _steps(len(unit.split.train), chosen.epoch, config, False)
                    work.total -= unit.train_steps - train_steps  # fewer epochs than planned
                else:
                    chosen = train_selected(split, dataset.n_classes, loss, seed, config)
                try:
                    accuracy, ece, ece_inverse, probs = evaluate(chosen.model, split, loss, config)
                except SpeechkernError as err:
                    raise SpeechkernError(f"dataset {dataset.name}, seed {seed}, {err}") from None
                runs.append(
                    RunResult(
                        dataset.name,
                        loss,
                        seed,
                        accuracy,
                        ece,
                        ece_inverse,
                        chosen.train_loss,
                        time.perf_counter() - t0,
                        split=split.name,
                        learning_rate=chosen.learning_rate,
                        epoch=chosen.epoch,
                        val_accuracy=chosen.val_accuracy,
                    )
                )
                pooled[loss][0].append(probs)
                pooled[loss][1].append(split.y_test.cpu().numpy())
                work.done += unit.selection_steps + train_steps
                work.runs += 1
                report(
                    "losses/bench",
                    work.done,
                    work.total,
                    "losses bench (training steps)",
                    run=f"{work.runs}/{work.n_runs}",
                    dataset=dataset.name,
                    loss=loss,
                    seed=seed,
                    epoch=chosen.epoch,
                    acc=accuracy,
                    ece=ece,
                )
    merged = {loss: (np.concatenate(p), np.concatenate(y)) for loss, (p, y) in pooled.items()}
    return runs, merged


def run_benchmark(
    out_dir: str | os.PathLike,
    config: BenchConfig | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    datasets: Sequence[str] | None = None,
    losses: Sequence[str] = LOSSES,
    builtin: bool = False,
    overwrite: bool = False,
) -> BenchResult:
    """Train and evaluate every dataset × split × seed × loss, write the tables, comparison and diagrams.

    data_dir: a folder (tree) of CSV datasets (:func:`~speechkern.losses.bench_data.load_data_dir`); datasets:
    names to run (default: all of ``data_dir``, plus the built-in ones with ``builtin``; a built-in name given
    here runs without ``builtin``); losses: a subset of :data:`LOSSES` (the first of them, or cross-entropy when
    present, is the baseline of the paired comparison).

    Each dataset's runs are written to ``sets/<name>.json`` as soon as it finishes. A rerun into the same folder
    with the same settings (``bench.json``) resumes: finished datasets are read back, not trained again. Any
    other non-empty folder is refused unless ``overwrite``, which discards its earlier results.
    Reports progress as ``losses/bench`` events. Returns the results and the files written.
    Raises SpeechkernError for bad settings, data or output folder.
    """
    config = config or BenchConfig()
    unknown = [name for name in losses if name not in LOSSES]
    if unknown or not losses:
        raise SpeechkernError(
            f"unknown loss(es) {', '.join(unknown) or '(none given)'}; choose from {', '.join(LOSSES)}"
        )
    losses = tuple(dict.fromkeys(losses))
    chosen = select_datasets(data_dir, datasets, builtin)
    device = resolve_device(config.device)  # refuses an unknown device, or one this machine lacks
    key = config.key(losses)
    out = Path(out_dir)
    resume = _prepare_out_dir(out, key, overwrite)
    write_text(out / _STATE, json.dumps({"key": key, "config": asdict(config), "losses": list(losses)}, indent=2))
    started = time.perf_counter()
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    runs: list[RunResult] = []
    files: list[Path] = []
    resumed: list[str] = []
    work = _plan(chosen, config, len(losses))
    try:
        for dataset in chosen:
            finished = _load_finished(out, dataset, key) if resume else None
            if finished is not None:
                runs += finished
                resumed.append(dataset.name)
                finished_work = _plan([dataset], config, len(losses))
                work.done, work.runs = work.done + finished_work.total, work.runs + finished_work.n_runs
                files.append(_set_path(out, dataset.name))
                continue
            set_runs, pooled = _run_dataset(dataset, config, losses, device, work)
            runs += set_runs
            fig = reliability_figure(dataset.name, pooled, config)
            files.append(
                atomic_write(
                    out / "reliability" / f"{dataset.name}.png",
                    lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=120),
                )
            )
            record = {"key": key, "dataset": dataset.describe(), "runs": [asdict(r) for r in set_runs]}
            files.append(write_text(_set_path(out, dataset.name), json.dumps(record, indent=1) + "\n"))
    finally:
        torch.set_num_threads(threads)

    result = BenchResult(
        config,
        [d.describe() for d in chosen],
        runs,
        summarise(runs),
        seconds=time.perf_counter() - started,
        losses=losses,
        resumed=resumed,
    )
    result.comparisons = comparison.paired_comparisons(result.summary, losses)
    files += [
        write_text(out / "results.json", json.dumps(result.to_dict(), indent=2) + "\n"),
        write_text(out / "results.csv", csv_text(result)),
        write_text(out / "results.md", markdown_table(result)),
        write_text(out / "comparison.md", comparison.markdown(result.comparisons, loss_descriptions(config))),
        write_text(out / "comparison.csv", comparison.csv_text(result.comparisons)),
    ]
    if result.comparisons:
        fig = comparison.figure(result.summary, result.comparisons, loss_descriptions(config))
        files.append(atomic_write(out / "comparison.png", lambda tmp: fig.savefig(tmp, format="png", dpi=120)))
    result.files = files
    return result
