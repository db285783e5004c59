"""The neural-collapse experiments behind ``speechkern collapse run`` (SPEC §10).

1. **Collapse over training time**: a small MLP (batch norm, ReLU) is trained with SGD and weight decay on an
   offline scikit-learn dataset well past zero training error. At log-spaced epochs the last-layer features
   (the classifier's input) of the train and test sets are captured and TrainVariance, StrongTestVariance,
   WeakTestVariance (normalised by the means / k-means centres at the final epoch, as SPEC §10 defines them)
   and Papyan et al.'s NC1–NC4 are recorded.
2. **Against train-set size**: the same for several train-set sizes (stratified subsets of one train pool,
   one fixed test set).
3. **Super-class transfer**: the network is pre-trained on 2 super-classes (the first and second half of the
   sorted classes); at log-spaced pre-training epochs its features are transferred to the fine task with all
   classes, by a linear probe (logistic regression on frozen features) and by fine-tuning the whole network
   with a new head. Stronger collapse of the coarse classes erases fine-class structure and hurts the transfer.

:func:`run_experiments` returns the numbers; :func:`write_outputs` writes CSV, JSON and PNG files atomically.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

import speechkern
from speechkern.device import resolve_device
from speechkern.errors import SpeechkernError
from speechkern.limits import MAX_SEED, check_network
from speechkern.outputs import check_out_dir, csv_text, write_bytes
from speechkern.progress import report

from .capture import capture_features, classifier_weights
from .measures import FeatureStats, kmeans_centers, nc_metrics, train_variance, weak_test_variance

__all__ = [
    "DATASETS",
    "CollapseConfig",
    "CollapseResults",
    "Dataset",
    "MLP",
    "check_config",
    "check_out_dir",
    "collapse_over_time",
    "default_train_sizes",
    "load_dataset",
    "resolve_train_sizes",
    "run_experiments",
    "transfer_experiment",
    "write_outputs",
]

logger = logging.getLogger(__name__)

# Offline datasets bundled with scikit-learn (no download): name → loader.
DATASETS: dict[str, str] = {"digits": "load_digits", "iris": "load_iris", "wine": "load_wine"}

_EVAL_BATCH = 512  # samples per batch when capturing features (memory only; results do not depend on it)


# ----------------------------------------------------------------------------------------------------------------
# Configuration and data


@dataclass(frozen=True)
class CollapseConfig:
    """Settings of the experiments (defaults: about a minute or two on 2 CPU cores with digits).

    dataset: one of :data:`DATASETS`. train_sizes: samples in each train subset (stratified, at most the pool);
    None picks sizes that fit the dataset (:func:`default_train_sizes`: 50, 100, 300, 1000 for digits; 50, 100
    for iris and wine).
    test_fraction: share of the dataset held out as the fixed test set. epochs: passes over each train subset.
    width/depth: hidden units per layer and hidden layers of the MLP. lr, momentum, weight_decay, batch_size:
    SGD settings (cosine learning-rate decay to 0 over all steps). checkpoints: log-spaced epochs at which the
    measures are taken (epoch 0, the initialisation, is always added). kmeans_restarts: k-means restarts for
    WeakTestVariance. transfer: run the super-class experiment; transfer_checkpoints: pre-training epochs
    probed; finetune_epochs/finetune_lr: the full fine-tuning. seed: every random choice derives from it.
    device: where the networks train (``"cpu"``, ``"cuda"``, ...); bit-for-bit repeatability holds on CPU.
    """

    dataset: str = "digits"
    train_sizes: tuple[int, ...] | None = None
    test_fraction: float = 0.3
    epochs: int = 300
    width: int = 256
    depth: int = 3
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-3
    batch_size: int = 64
    checkpoints: int = 25
    kmeans_restarts: int = 10
    transfer: bool = True
    transfer_checkpoints: int = 8
    finetune_epochs: int = 30
    finetune_lr: float = 0.01
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> None:
        """Raise SpeechkernError naming the first setting out of range."""
        _check_types(self)
        if self.dataset not in DATASETS:
            raise SpeechkernError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}.")
        if not 0 <= self.seed <= MAX_SEED:  # scikit-learn's splits take 0 .. 2**32 - 1; the probe uses seed + 1
            raise SpeechkernError(f"seed={self.seed}: expected a whole number from 0 to {MAX_SEED}.")
        positive = {
            "epochs": self.epochs,
            "width": self.width,
            "depth": self.depth,
            "batch_size": self.batch_size,
            "checkpoints": self.checkpoints,
            "kmeans_restarts": self.kmeans_restarts,
            "transfer_checkpoints": self.transfer_checkpoints,
        }
        for name, value in positive.items():
            if value < 1:
                raise SpeechkernError(f"{name} must be at least 1; got {value}.")
        if self.finetune_epochs < 0:
            raise SpeechkernError(f"finetune_epochs must be 0 or more; got {self.finetune_epochs}.")
        if not 0.0 < self.test_fraction < 1.0:
            raise SpeechkernError(f"test_fraction must lie strictly between 0 and 1; got {self.test_fraction}.")
        if self.lr <= 0 or self.finetune_lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise SpeechkernError("lr and finetune_lr must be > 0, weight_decay >= 0 and momentum in [0, 1).")
        if self.train_sizes is not None and not self.train_sizes:
            raise SpeechkernError("give at least one train size.")
        resolve_device(self.device)  # an unknown device, or one this machine lacks, is refused naming those it has


def _check_types(config: CollapseConfig) -> None:
    """Refuse a setting of the wrong type in one line (a seed of -1 or 1.5, epochs of "3"), naming it, before NumPy,
    scikit-learn or torch fail on it with a traceback."""
    import numbers

    for name, kind in CollapseConfig.__annotations__.items():
        value = getattr(config, name)
        if kind == "int" and not (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
            raise SpeechkernError(f"{name}={value!r}: expected a whole number.")
        if kind == "float" and not (isinstance(value, numbers.Real) and not isinstance(value, bool)
                                    and math.isfinite(value)):  # fmt: skip
            raise SpeechkernError(f"{name}={value!r}: expected a finite number.")
        if kind == "bool" and not isinstance(value, (bool, np.bool_)):
            raise SpeechkernError(f"{name}={value!r}: expected True or False.")
        if kind == "str" and not isinstance(value, str):
            raise SpeechkernError(f"{name}={value!r}: expected a string.")
    sizes = config.train_sizes
    if sizes is not None and not (isinstance(sizes, (tuple, list)) and all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in sizes)):  # fmt: skip
        raise SpeechkernError(f"train_sizes={sizes!r}: expected whole numbers ≥ 1, such as (100, 300, 1000).")


@dataclass(frozen=True)
class Dataset:
    """A train pool and a fixed test set; labels are ``0 .. C-1`` (class ``k`` is ``class_names[k]``)."""

    name: str
    X_pool: NDArray[np.float64]
    y_pool: NDArray[np.int64]
    X_test: NDArray[np.float64]
    y_test: NDArray[np.int64]
    class_names: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_features(self) -> int:
        return int(self.X_pool.shape[1])


def load_dataset(name: str, test_fraction: float = 0.3, seed: int = 0) -> Dataset:
    """One of scikit-learn's bundled datasets split (stratified) into a train pool and a test set."""
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    if name not in DATASETS:
        raise SpeechkernError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    bunch = getattr(sklearn.datasets, DATASETS[name])()
    X = np.asarray(bunch.data, dtype=np.float64)
    classes, y = np.unique(np.asarray(bunch.target), return_inverse=True)
    names = (
        tuple(str(bunch.target_names[c]) for c in classes)
        if hasattr(bunch, "target_names")
        else tuple(str(c) for c in classes)
    )
    X_pool, X_test, y_pool, y_test = train_test_split(X, y, test_size=test_fraction, stratify=y, random_state=seed)
    return Dataset(name, X_pool, y_pool.astype(np.int64), X_test, y_test.astype(np.int64), names)


def _subset(data: Dataset, n: int, seed: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    from sklearn.model_selection import train_test_split

    pool = len(data.y_pool)
    if n > pool:
        raise SpeechkernError(
            f"train size {n} exceeds the {pool} samples of the {data.name} train pool; "
            f"use sizes up to {pool} (or a smaller test fraction)."
        )
    if n < 2 * data.n_classes:
        raise SpeechkernError(f"train size {n} is too small: use at least 2 per class ({2 * data.n_classes}).")
    if n == pool:
        return data.X_pool, data.y_pool
    X, _, y, _ = train_test_split(data.X_pool, data.y_pool, train_size=n, stratify=data.y_pool, random_state=seed)
    return X, y


# The ladder of default train sizes; each dataset runs the rungs its train pool can fill.
_SIZE_LADDER = (50, 100, 300, 1000, 3000, 10000)


def default_train_sizes(pool_size: int, n_classes: int) -> tuple[int, ...]:
    """Train sizes that fit a pool of ``pool_size`` samples and ``n_classes`` classes.

    The rungs of 50, 100, 300, 1000, 3000, 10000 that lie between 2 per class and the pool size; the whole pool
    when no rung fits. digits (pool 1257 at the default test fraction): (50, 100, 300, 1000); iris (105) and wine
    (124): (50, 100).
    """
    sizes = tuple(n for n in _SIZE_LADDER if 2 * n_classes <= n <= pool_size)
    return sizes or (pool_size,)


def resolve_train_sizes(config: CollapseConfig, data: Dataset) -> tuple[int, ...]:
    """The configured train sizes, sorted and unique, or the dataset's defaults when none are configured."""
    if config.train_sizes is None:
        return default_train_sizes(len(data.y_pool), data.n_classes)
    return tuple(sorted(set(config.train_sizes)))


def _standardise(device: str, X_train: NDArray[np.float64], *others: NDArray[np.float64]) -> list[torch.Tensor]:
    """Inputs scaled by the train subset's per-feature mean and std (constant features left unscaled)."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std < 1e-12] = 1.0
    return [torch.as_tensor((X - mean) / std, dtype=torch.float32, device=device) for X in (X_train, *others)]


# ----------------------------------------------------------------------------------------------------------------
# Model and training


class MLP(nn.Module):
    """``depth`` hidden layers of Linear → BatchNorm → ReLU, then a linear ``classifier`` (features = its input)."""

    def __init__(self, n_inputs: int, n_classes: int, width: int = 256, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(n_inputs if i == 0 else width, width), nn.BatchNorm1d(width), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


def _seeded_model(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    # fork_rng keeps the caller's global torch RNG untouched while the initialisation is seeded.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return build()
        except (MemoryError, RuntimeError) as err:  # torch's CPU allocator raises RuntimeError
            if not isinstance(err, MemoryError) and "allocate" not in str(err):
                raise
            raise SpeechkernError(
                "the network's weights do not fit in memory (width too large); lower width, such as 256"
            ) from None


def _log_epochs(epochs: int, count: int) -> list[int]:
    """Epoch 0 plus ``count`` log-spaced epochs in 1..epochs (always including the last, which every measure is
    normalised by: geomspace's one point is its start, epoch 1)."""
    marks = np.unique(np.round(np.geomspace(1, epochs, num=count)).astype(int)) if count > 1 else [epochs]
    return [0, *[int(e) for e in marks if e >= 1]] if epochs >= 1 else [0]


def _main_training(config: CollapseConfig) -> dict[str, Any]:
    """The optimiser settings of the main training runs (every train-set size, and the pre-training)."""
    return {"epochs": config.epochs, "lr": config.lr, "momentum": config.momentum,
            "weight_decay": config.weight_decay, "batch_size": config.batch_size, "seed": config.seed}  # fmt: skip


def _train(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    at_epoch: Callable[[int], None] | None = None,
    params: Sequence[nn.Parameter] | None = None,
    task: str = "collapse/train",
    description: str = "train",
) -> None:
    """Minibatch SGD on cross-entropy with cosine decay; ``at_epoch(e)`` runs after epoch ``e`` (and for e=0)."""
    optimiser = torch.optim.SGD(
        list(params) if params is not None else model.parameters(),
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
    )
    n = len(y)
    steps = epochs * math.ceil(n / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, steps))
    generator = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    if at_epoch is not None:
        at_epoch(0)
    every = max(1, epochs // 100)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size].to(X.device)
            if len(index) < 2:  # batch norm needs two samples; a lone straggler is skipped this epoch
                continue
            loss = loss_fn(model(X[index]), y[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(index)
        if at_epoch is not None:
            at_epoch(epoch)
        if epoch % every == 0 or epoch == epochs:
            report(task, epoch, epochs, description, loss=total / n, done=epoch == epochs)


def _features(model: MLP, X: torch.Tensor) -> NDArray[np.float32]:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X), batch_size=_EVAL_BATCH)
    H, _ = capture_features(model, loader, "classifier", which="input")
    return H


def _error(logits: NDArray[np.float64], y: NDArray[np.int64]) -> float:
    return float(np.mean(logits.argmax(axis=1) != y))


def _cross_entropy(logits: NDArray[np.float64], y: NDArray[np.int64]) -> float:
    return float(nn.functional.cross_entropy(torch.as_tensor(logits), torch.as_tensor(y)))


# ----------------------------------------------------------------------------------------------------------------
# Experiment 1 and 2: collapse over time, for one train size


@dataclass
class _Snapshot:
    epoch: int
    train_stats: FeatureStats
    test_stats: FeatureStats
    H_test: NDArray[np.float32]
    row: dict[str, Any]


def collapse_over_time(data: Dataset, config: CollapseConfig, n_train: int) -> list[dict[str, Any]]:
    """Train on ``n_train`` pool samples; one row of measures per checkpoint epoch (see module docstring)."""
    X_np, y_np = _subset(data, n_train, config.seed)
    X, X_test = _standardise(config.device, X_np, data.X_test)
    y = torch.as_tensor(y_np, device=config.device)
    model = _seeded_model(config.seed, lambda: MLP(data.n_features, data.n_classes, config.width, config.depth))
    model.to(config.device)
    assert isinstance(model, MLP)
    checkpoints = set(_log_epochs(config.epochs, config.checkpoints))
    classes = list(range(data.n_classes))
    snapshots: list[_Snapshot] = []
    zero_error: list[int] = []

    def at_epoch(epoch: int) -> None:
        if not zero_error and epoch not in checkpoints:
            # The first epoch with zero training error is tracked at every epoch, not only at checkpoints.
            model.eval()
            with torch.no_grad():
                if bool((model(X).argmax(dim=1) == y).all()):
                    zero_error.append(epoch)
        if epoch not in checkpoints:
            return
        W, b = classifier_weights(model.classifier)
        H_tr = _features(model, X)
        H_te = _features(model, X_test)
        logits_tr = H_tr.astype(np.float64) @ W.T + b
        logits_te = H_te.astype(np.float64) @ W.T + b
        train_error = _error(logits_tr, y_np)
        if train_error == 0 and not zero_error:
            zero_error.append(epoch)
        nc_train = nc_metrics(H_tr, y_np, W, b)
        nc_test = nc_metrics(H_te, data.y_test)
        row: dict[str, Any] = {
            "train_size": n_train,
            "epoch": epoch,
            "train_loss": _cross_entropy(logits_tr, y_np),
            "train_error": train_error,
            "test_error": _error(logits_te, data.y_test),
            "nc1_train": nc_train.nc1,
            "nc1_test": nc_test.nc1,
        }
        row.update({k: v for k, v in nc_train.to_dict().items() if k.startswith(("nc2", "nc3", "nc4"))})
        snapshots.append(
            _Snapshot(
                epoch,
                FeatureStats(classes, covariance=False).update(H_tr, y_np),
                FeatureStats(classes, covariance=False).update(H_te, data.y_test),
                H_te,
                row,
            )
        )

    _train(
        model,
        X,
        y,
        **_main_training(config),
        at_epoch=at_epoch,
        task=f"collapse/n={n_train}",
        description=f"train n={n_train}",
    )
    # SPEC §10: every epoch is measured against the final epoch's train means, test means and k-means centres.
    final = snapshots[-1]
    train_means = final.train_stats.means
    test_means = final.test_stats.means
    centres = kmeans_centers(final.H_test, data.n_classes, n_init=config.kmeans_restarts, random_state=config.seed)
    rows = []
    for snap in snapshots:
        row = {
            **snap.row,
            "train_variance": snap.train_stats.train_variance(train_means),
            "strong_test_variance": snap.test_stats.strong_test_variance(test_means),
            "weak_test_variance": weak_test_variance(snap.H_test, data.n_classes, centres),
            "zero_train_error_epoch": zero_error[0] if zero_error else None,
        }
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Experiment 3: super-class transfer


def superclasses(n_classes: int) -> NDArray[np.int64]:
    """Super-class of each class: 0 for the first ``ceil(C/2)`` classes, 1 for the rest."""
    if n_classes < 3:
        raise SpeechkernError(f"the transfer experiment needs at least 3 classes; the dataset has {n_classes}.")
    return (np.arange(n_classes) >= math.ceil(n_classes / 2)).astype(np.int64)


def _probe_error(
    H_train: NDArray[np.float32], y_train: NDArray[np.int64], H_test: NDArray[np.float32], y_test: NDArray[np.int64]
) -> float:
    """Test error of a logistic-regression probe on frozen features.

    Features are divided by one global scale (their RMS norm), not per feature: per-feature standardisation
    would blow collapsed directions' round-off back up and hide the collapse being measured.
    """
    from sklearn.linear_model import LogisticRegression

    scale = float(np.sqrt(np.mean(np.sum(H_train.astype(np.float64) ** 2, axis=1)))) or 1.0
    probe = LogisticRegression(max_iter=2000)
    probe.fit(H_train / scale, y_train)
    return float(np.mean(probe.predict(H_test / scale) != y_test))


def transfer_experiment(data: Dataset, config: CollapseConfig) -> list[dict[str, Any]]:
    """Pre-train on 2 super-classes with the whole pool; per checkpoint, coarse collapse and fine transfer errors."""
    coarse_of = superclasses(data.n_classes)
    X, X_test = _standardise(config.device, data.X_pool, data.X_test)
    y_fine = data.y_pool
    y_coarse = coarse_of[y_fine]
    model = _seeded_model(config.seed, lambda: MLP(data.n_features, 2, config.width, config.depth))
    model.to(config.device)
    assert isinstance(model, MLP)
    checkpoints = set(_log_epochs(config.epochs, config.transfer_checkpoints))
    rows: list[dict[str, Any]] = []

    def at_epoch(epoch: int) -> None:
        if epoch not in checkpoints:
            return
        W, b = classifier_weights(model.classifier)
        H_tr = _features(model, X)
        H_te = _features(model, X_test)
        coarse_test = coarse_of[data.y_test]
        row: dict[str, Any] = {
            "pretrain_epoch": epoch,
            "coarse_train_error": _error(H_tr.astype(np.float64) @ W.T + b, y_coarse),
            "coarse_test_error": _error(H_te.astype(np.float64) @ W.T + b, coarse_test),
            # Self-normalised at this epoch: how collapsed the coarse classes are now.
            "coarse_train_variance": train_variance(H_tr, y_coarse),
            "coarse_test_variance": train_variance(H_te, coarse_test),
            "coarse_nc1": nc_metrics(H_tr, y_coarse).nc1,
            # Fine classes inside each super-class: within-fine spread against the spread of the fine means of
            # that super-class (averaged over super-classes); it grows as collapse merges the fine classes.
            "fine_within_coarse_variance": float(
                np.mean([train_variance(H_tr[y_coarse == s], y_fine[y_coarse == s]) for s in (0, 1)])
            ),
            "probe_test_error": _probe_error(H_tr, y_fine, H_te, data.y_test),
            "finetune_test_error": _finetune_error(model, X, y_fine, X_test, data.y_test, data.n_classes, config),
        }
        rows.append(row)
        report(
            "collapse/transfer-probe",
            len(rows),
            len(checkpoints),
            "transfer checkpoints",
            probe_error=row["probe_test_error"],
            done=len(rows) == len(checkpoints),
        )

    _train(
        model,
        X,
        torch.as_tensor(y_coarse, device=config.device),
        **_main_training(config),
        at_epoch=at_epoch,
        task="collapse/transfer",
        description="pre-train 2 super-classes",
    )
    return rows


def _finetune_error(
    pretrained: MLP,
    X: torch.Tensor,
    y: NDArray[np.int64],
    X_test: torch.Tensor,
    y_test: NDArray[np.int64],
    n_classes: int,
    config: CollapseConfig,
) -> float:
    """Test error after fine-tuning a copy of the whole network with a fresh ``n_classes`` head."""
    if config.finetune_epochs == 0:
        return float("nan")
    model = copy.deepcopy(pretrained)
    model.classifier = _seeded_model(config.seed + 1, lambda: nn.Linear(config.width, n_classes)).to(config.device)
    with torch.random.fork_rng(devices=[]):
        _train(
            model,
            X,
            torch.as_tensor(y, device=config.device),
            epochs=config.finetune_epochs,
            lr=config.finetune_lr,
            momentum=config.momentum,
            weight_decay=5e-4,
            batch_size=config.batch_size,
            seed=config.seed + 1,
            task="collapse/finetune",
            description="fine-tune all classes",
        )
    model.eval()
    with torch.no_grad():
        predictions = model(X_test).argmax(dim=1).cpu().numpy()
    return float(np.mean(predictions != y_test))


# ----------------------------------------------------------------------------------------------------------------
# All experiments


@dataclass
class CollapseResults:
    """Everything one run measured: rows of the three experiments and a short summary (JSON-ready)."""

    config: CollapseConfig
    dataset: dict[str, Any]
    over_time: list[dict[str, Any]]
    train_sizes: list[dict[str, Any]]
    transfer: list[dict[str, Any]]
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"]["train_sizes"] = list(self.config.train_sizes or ())
        data["speechkern_version"] = speechkern.__version__
        return _json_safe(data)


_SIZE_COLUMNS = (
    "train_size",
    "zero_train_error_epoch",
    "train_error",
    "test_error",
    "train_variance",
    "strong_test_variance",
    "weak_test_variance",
    "nc1_train",
    "nc1_test",
    "nc4_agreement",
)


def check_config(config: CollapseConfig) -> Dataset:
    """Validate the settings against the dataset (train sizes, class count) before any training; returns it."""
    config.validate()
    data = load_dataset(config.dataset, config.test_fraction, config.seed)
    w, depth = config.width, config.depth  # MLP: weights, gradients, momentum, and the transfer's copy
    weights = data.n_features * w + (depth - 1) * w * w + w * data.n_classes
    check_network(f"width={w}", weights, 4, "lower width, such as 256")
    for n in resolve_train_sizes(config, data):
        _subset(data, n, config.seed)
    if config.transfer:
        superclasses(data.n_classes)
    return data


def run_experiments(config: CollapseConfig, parts_dir: str | os.PathLike | None = None) -> CollapseResults:
    """Run the over-time/train-size experiments for each size, then the transfer experiment (if enabled).

    parts_dir: a folder where each finished part (one train size, the transfer experiment) is kept as it ends and
    read back by a later call with the same settings, so that an interrupted run resumes without repeating them;
    every part is seeded, so the results are those of an uninterrupted run. None: nothing kept.
    """
    started = time.perf_counter()
    data = check_config(config)
    sizes = resolve_train_sizes(config, data)
    # the results record the sizes that ran and the device ("auto" becomes cuda or cpu)
    config = replace(config, train_sizes=sizes, device=str(resolve_device(config.device)))
    parts = _Parts(parts_dir, config)
    over_time: list[dict[str, Any]] = []
    size_rows: list[dict[str, Any]] = []
    for i, n in enumerate(sizes):
        report("collapse/sizes", i, len(sizes), "train sizes", train_size=n)
        rows = parts.get(f"size-{n}", lambda n=n: collapse_over_time(data, config, n))
        over_time += rows
        size_rows.append({k: rows[-1].get(k) for k in _SIZE_COLUMNS})
    report("collapse/sizes", len(sizes), len(sizes), "train sizes", done=True)
    transfer = parts.get("transfer", lambda: transfer_experiment(data, config)) if config.transfer else []
    results = CollapseResults(
        config=config,
        dataset={
            "name": data.name,
            "classes": list(data.class_names),
            "n_features": data.n_features,
            "pool_size": len(data.y_pool),
            "test_size": len(data.y_test),
        },
        over_time=over_time,
        train_sizes=size_rows,
        transfer=transfer,
        seconds=time.perf_counter() - started,
    )
    results.summary = _summary(results)
    return results


class _Parts:
    """Finished parts of a run in a folder (``<name>.json``: the settings' key and the rows), or nowhere."""

    def __init__(self, folder: str | os.PathLike | None, config: CollapseConfig) -> None:
        self.folder = None if folder is None else Path(folder)
        settings = json.dumps({"config": asdict(config), "version": speechkern.__version__}, sort_keys=True)
        self.key = hashlib.sha256(settings.encode("utf-8")).hexdigest()

    def get(self, name: str, compute: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """The rows of part ``name``: kept by an earlier run with the same settings, else computed and kept."""
        if self.folder is None:
            return compute()
        path = self.folder / f"{name}.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("key") == self.key and isinstance(saved["rows"], list):
                logger.info("collapse part %s: finished in an earlier run, kept", name)
                return saved["rows"]
        rows = compute()
        # NaN stays NaN (not null, as in results.json): read back, the rows are the ones computed
        write_bytes(path, json.dumps({"key": self.key, "rows": rows}).encode("utf-8"))
        return rows


def _summary(results: CollapseResults) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "dataset": results.dataset["name"],
        "seconds": round(results.seconds, 1),
        "final": [
            {
                k: row[k]
                for k in (
                    "train_size",
                    "train_variance",
                    "strong_test_variance",
                    "weak_test_variance",
                    "test_error",
                    "zero_train_error_epoch",
                )
            }
            for row in results.train_sizes
        ],
    }
    if results.transfer:
        first, last = results.transfer[0], results.transfer[-1]
        best = min(results.transfer, key=lambda r: r["probe_test_error"])
        summary["transfer"] = {
            "best_probe_epoch": best["pretrain_epoch"],
            "best_probe_test_error": best["probe_test_error"],
            "final_probe_test_error": last["probe_test_error"],
            "final_finetune_test_error": last["finetune_test_error"],
            "initial_probe_test_error": first["probe_test_error"],
            "final_coarse_train_variance": last["coarse_train_variance"],
        }
    return _json_safe(summary)


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars by Python ones, so the JSON is strict."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ----------------------------------------------------------------------------------------------------------------
# Outputs


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    text = csv_text([_json_safe(row) for row in rows],
                    lambda v: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v))  # fmt: skip
    return text.encode("utf-8")


def write_outputs(results: CollapseResults, out_dir: Path, *, overwrite: bool = False) -> list[Path]:
    """Write the CSV tables, ``results.json`` and the PNG curves into ``out_dir`` (atomically, file by file)."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "over_time.csv": _csv_bytes(results.over_time),
        "train_sizes.csv": _csv_bytes(results.train_sizes),
        "results.json": (json.dumps(results.to_dict(), indent=2, allow_nan=False) + "\n").encode("utf-8"),
    }
    from .plots import plot_nc_over_time, plot_over_time, plot_train_sizes, plot_transfer

    files["collapse_over_time.png"] = plot_over_time(results.over_time)
    files["nc_over_time.png"] = plot_nc_over_time(results.over_time)
    files["collapse_vs_train_size.png"] = plot_train_sizes(results.train_sizes)
    if results.transfer:
        files["transfer.csv"] = _csv_bytes(results.transfer)
        files["transfer.png"] = plot_transfer(results.transfer)
    written = []
    for name, data in files.items():
        path = out_dir / name
        write_bytes(path, data)
        written.append(path)
    return written
