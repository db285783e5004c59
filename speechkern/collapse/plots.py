"""Figures of the collapse experiments, rendered off-screen (Agg) to PNG bytes; callers write them atomically.

Every function takes the row dictionaries of :mod:`speechkern.collapse.experiments` and returns PNG bytes. Figures
are built on :class:`matplotlib.figure.Figure` directly, so no pyplot state or GUI backend is touched.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_nc_over_time", "plot_over_time", "plot_train_sizes", "plot_transfer"]

Rows = Sequence[dict[str, Any]]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _values(rows: Rows, key: str) -> list[float]:
    out = []
    for row in rows:
        value = row.get(key)
        out.append(float("nan") if value is None else float(value))
    return out


def _by_size(rows: Rows) -> dict[int, list[dict[str, Any]]]:
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(int(row["train_size"]), []).append(row)
    return dict(sorted(groups.items()))


def _positive(values: list[float]) -> bool:
    return any(v > 0 and math.isfinite(v) for v in values)


def _epoch_axis(ax: Any) -> None:
    ax.set_xscale("symlog", linthresh=1.0)  # epoch 0 (initialisation) stays on the axis
    ax.set_xlim(left=0)
    ax.set_xlabel("epoch")
    ax.grid(True, which="both", alpha=0.3)


def plot_over_time(rows: Rows) -> bytes:
    """Train / strong test / weak test variance (top) and train / test error (bottom) against epoch, per size."""
    groups = _by_size(rows)
    fig = Figure(figsize=(4.2 * max(1, len(groups)), 6.4), layout="constrained")
    axes = fig.subplots(2, max(1, len(groups)), squeeze=False, sharex="col")
    for col, (size, group) in enumerate(groups.items()):
        epochs = _values(group, "epoch")
        top, bottom = axes[0][col], axes[1][col]
        for key, label, style in (
            ("train_variance", "TrainVariance", "-"),
            ("strong_test_variance", "StrongTestVariance", "--"),
            ("weak_test_variance", "WeakTestVariance", ":"),
        ):
            top.plot(epochs, _values(group, key), style, marker="o", markersize=3, label=label)
        if _positive(_values(group, "train_variance")):
            top.set_yscale("log")
        top.set_title(f"train size {size}")
        top.set_ylabel("variance ratio")
        top.grid(True, which="both", alpha=0.3)
        bottom.plot(epochs, _values(group, "train_error"), "-", marker="o", markersize=3, label="train error")
        bottom.plot(epochs, _values(group, "test_error"), "--", marker="o", markersize=3, label="test error")
        bottom.set_ylabel("error rate")
        _epoch_axis(bottom)
        if col == 0:
            top.legend(fontsize="small")
            bottom.legend(fontsize="small")
    fig.suptitle("Collapse of last-layer features over training (means/centres from the final epoch)")
    return _png(fig)


_NC_PANELS = (
    ("NC1: tr(Σ_W Σ_B⁺)/C", (("nc1_train", "train", "-"), ("nc1_test", "test", "--")), True),
    (
        "NC2 equinorm (CV of norms)",
        (("nc2_equinorm_means", "means", "-"), ("nc2_equinorm_classifier", "classifier", "--")),
        True,
    ),
    (
        "NC2 equiangular (std of cosines)",
        (("nc2_equiangular_means", "means", "-"), ("nc2_equiangular_classifier", "classifier", "--")),
        True,
    ),
    (
        "NC2 max-angle: mean |cos + 1/(C−1)|",
        (("nc2_maxangle_means", "means", "-"), ("nc2_maxangle_classifier", "classifier", "--")),
        True,
    ),
    ("NC3 self-duality", (("nc3", "train", "-"),), True),
    ("NC4 agreement with nearest class mean", (("nc4_agreement", "train", "-"),), False),
)


def plot_nc_over_time(rows: Rows) -> bytes:
    """Papyan et al.'s NC1–NC4 on the train features against epoch, one colour per train size."""
    groups = _by_size(rows)
    fig = Figure(figsize=(13, 7), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    colours = [f"C{i}" for i in range(len(groups))]
    for ax, (title, series, log_y) in zip(axes, _NC_PANELS, strict=True):
        any_positive = False
        for colour, (size, group) in zip(colours, groups.items(), strict=True):
            epochs = _values(group, "epoch")
            for key, label, style in series:
                values = _values(group, key)
                any_positive |= _positive(values)
                ax.plot(epochs, values, style, color=colour, label=f"n={size} {label}")
        if log_y and any_positive:
            ax.set_yscale("log")
        ax.set_title(title, fontsize="medium")
        _epoch_axis(ax)
    axes[0].legend(fontsize="x-small")
    fig.suptitle("Neural-collapse metrics (Papyan, Han & Donoho) over training")
    return _png(fig)


def plot_train_sizes(rows: Rows) -> bytes:
    """Final-epoch variances (left) and test error (right) against the train-set size."""
    sizes = _values(rows, "train_size")
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for key, label, style in (
        ("train_variance", "TrainVariance", "-"),
        ("strong_test_variance", "StrongTestVariance", "--"),
        ("weak_test_variance", "WeakTestVariance", ":"),
    ):
        left.plot(sizes, _values(rows, key), style, marker="o", label=label)
    if _positive(_values(rows, "train_variance")):
        left.set_yscale("log")
    left.set_ylabel("variance ratio at the final epoch")
    right.plot(sizes, _values(rows, "test_error"), "-", marker="o", label="test error")
    right.plot(sizes, _values(rows, "train_error"), "--", marker="o", label="train error")
    right.set_ylabel("error rate")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("train-set size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Collapse against train-set size")
    return _png(fig)


def plot_transfer(rows: Rows) -> bytes:
    """Coarse collapse and fine-task transfer errors against pre-training epoch, and error against collapse."""
    epochs = _values(rows, "pretrain_epoch")
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    left, middle, right = fig.subplots(1, 3)
    for key, label, style in (
        ("coarse_train_variance", "coarse TrainVariance", "-"),
        ("coarse_test_variance", "coarse test variance", "--"),
        ("fine_within_coarse_variance", "fine classes within a super-class", ":"),
    ):
        left.plot(epochs, _values(rows, key), style, marker="o", label=label)
    if _positive(_values(rows, "coarse_train_variance")):
        left.set_yscale("log")
    left.set_ylabel("variance ratio (this epoch's means)")
    left.set_title("collapse during 2-super-class pre-training", fontsize="medium")
    middle.plot(epochs, _values(rows, "probe_test_error"), "-", marker="o", label="linear probe")
    middle.plot(epochs, _values(rows, "finetune_test_error"), "--", marker="o", label="full fine-tune")
    middle.plot(epochs, _values(rows, "coarse_test_error"), ":", marker="o", label="coarse task (2 classes)")
    middle.set_ylabel("test error rate")
    middle.set_title("transfer to all classes", fontsize="medium")
    for ax in (left, middle):
        _epoch_axis(ax)
        ax.legend(fontsize="small")
    coarse = _values(rows, "coarse_train_variance")
    right.plot(coarse, _values(rows, "probe_test_error"), "-", marker="o", label="linear probe")
    right.plot(coarse, _values(rows, "finetune_test_error"), "--", marker="o", label="full fine-tune")
    if _positive(coarse):
        right.set_xscale("log")
    right.set_xlabel("coarse TrainVariance (smaller = more collapsed)")
    right.set_ylabel("fine-task test error rate")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize="small")
    fig.suptitle("Super-class pre-training: collapse against transfer")
    return _png(fig)
