"""Figures of the collapse experiments, rendered off-screen (Agg) to PNG bytes; callers write them atomically.

Every ``plot_*`` function takes the row dictionaries of :mod:`speechkern.collapse.experiments` and returns PNG bytes;
the matching ``*_figure`` function returns the :class:`matplotlib.figure.Figure` itself (built directly, so no
pyplot state or GUI backend is touched). A series with no finite value is neither drawn nor listed in a legend.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "nc_over_time_figure",
    "over_time_figure",
    "plot_nc_over_time",
    "plot_over_time",
    "plot_train_sizes",
    "plot_transfer",
    "train_sizes_figure",
    "transfer_figure",
]

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


def _series(ax: Any, x: Sequence[float], y: Sequence[float], style: str, order_by_x: bool = False, **kw: Any) -> bool:
    """Plot one series: as given (a missing value leaves a gap), or its finite points sorted by x with
    ``order_by_x``; nothing at all, so no legend entry, when no point is finite. Returns whether it drew."""
    points = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    if not points:
        return False
    if order_by_x:
        points.sort(key=lambda p: p[0])
        x, y = [p[0] for p in points], [p[1] for p in points]
    ax.plot(x, y, style, **kw)  # in x order already: a missing value stays a gap in the line
    return True


def _legend(ax: Any, **kw: Any) -> None:
    """A legend of the labelled lines actually drawn (none for an empty panel)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _epoch_axis(ax: Any) -> None:
    ax.set_xscale("symlog", linthresh=1.0)  # epoch 0 (initialisation) stays on the axis
    ax.set_xlim(left=0)
    ax.set_xlabel("epoch")
    ax.grid(True, which="both", alpha=0.3)


def plot_over_time(rows: Rows) -> bytes:
    """Train / strong test / weak test variance (top) and train / test error (bottom) against epoch, per size."""
    return _png(over_time_figure(rows))


def over_time_figure(rows: Rows) -> Figure:
    """The figure of :func:`plot_over_time`."""
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
            _series(top, epochs, _values(group, key), style, marker="o", markersize=3, label=label)
        if _positive(_values(group, "train_variance")):
            top.set_yscale("log")
        top.set_title(f"train size {size}")
        top.set_ylabel("variance ratio")
        top.grid(True, which="both", alpha=0.3)
        _series(bottom, epochs, _values(group, "train_error"), "-", marker="o", markersize=3, label="train error")
        _series(bottom, epochs, _values(group, "test_error"), "--", marker="o", markersize=3, label="test error")
        bottom.set_ylabel("error rate")
        _epoch_axis(bottom)
        if col == 0:
            _legend(top, fontsize="small")
            _legend(bottom, fontsize="small")
    fig.suptitle("Collapse of last-layer features over training (means/centres from the final epoch)")
    return fig


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
    return _png(nc_over_time_figure(rows))


def nc_over_time_figure(rows: Rows) -> Figure:
    """The figure of :func:`plot_nc_over_time`.

    Colour encodes the train size (one figure legend); line style encodes the series of each panel (train/test
    in NC1, class means/classifier rows in NC2), explained by the panel's own legend of the styles it draws.
    """
    groups = _by_size(rows)
    fig = Figure(figsize=(13, 7.4), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    colours = {size: f"C{i}" for i, size in enumerate(groups)}
    sizes_drawn: set[int] = set()
    for ax, (title, series, log_y) in zip(axes, _NC_PANELS, strict=True):
        any_positive = False
        styles_drawn: dict[str, str] = {}
        for size, group in groups.items():
            epochs = _values(group, "epoch")
            for key, label, style in series:
                values = _values(group, key)
                if _series(ax, epochs, values, style, color=colours[size]):
                    any_positive |= _positive(values)
                    styles_drawn[label] = style
                    sizes_drawn.add(size)
        if len(series) > 1 and styles_drawn:
            ax.legend(
                handles=[
                    Line2D([], [], color="0.3", linestyle=style, label=label) for label, style in styles_drawn.items()
                ],
                fontsize="x-small",
            )
        if log_y and any_positive:
            ax.set_yscale("log")
        ax.set_title(title, fontsize="medium")
        _epoch_axis(ax)
    handles = [
        Line2D([], [], color=colours[size], label=f"train size {size}") for size in groups if size in sizes_drawn
    ]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small", frameon=False)
    fig.suptitle("Neural-collapse metrics (Papyan, Han & Donoho) over training")
    return fig


def plot_train_sizes(rows: Rows) -> bytes:
    """Final-epoch variances (left) and test error (right) against the train-set size."""
    return _png(train_sizes_figure(rows))


def train_sizes_figure(rows: Rows) -> Figure:
    """The figure of :func:`plot_train_sizes` (points ordered by train size)."""
    sizes = _values(rows, "train_size")
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for key, label, style in (
        ("train_variance", "TrainVariance", "-"),
        ("strong_test_variance", "StrongTestVariance", "--"),
        ("weak_test_variance", "WeakTestVariance", ":"),
    ):
        _series(left, sizes, _values(rows, key), style, order_by_x=True, marker="o", label=label)
    if _positive(_values(rows, "train_variance")):
        left.set_yscale("log")
    left.set_ylabel("variance ratio at the final epoch")
    _series(right, sizes, _values(rows, "test_error"), "-", order_by_x=True, marker="o", label="test error")
    _series(right, sizes, _values(rows, "train_error"), "--", order_by_x=True, marker="o", label="train error")
    right.set_ylabel("error rate")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("train-set size")
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax, fontsize="small")
    fig.suptitle("Collapse against train-set size")
    return fig


def plot_transfer(rows: Rows) -> bytes:
    """Coarse collapse and fine-task transfer errors against pre-training epoch, and error against collapse."""
    return _png(transfer_figure(rows))


def transfer_figure(rows: Rows) -> Figure:
    """The figure of :func:`plot_transfer`; every panel draws its points in the order of its x-axis."""
    epochs = _values(rows, "pretrain_epoch")
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    left, middle, right = fig.subplots(1, 3)
    for key, label, style in (
        ("coarse_train_variance", "coarse TrainVariance", "-"),
        ("coarse_test_variance", "coarse test variance", "--"),
        ("fine_within_coarse_variance", "fine classes within a super-class", ":"),
    ):
        _series(left, epochs, _values(rows, key), style, order_by_x=True, marker="o", label=label)
    if _positive(_values(rows, "coarse_train_variance")):
        left.set_yscale("log")
    left.set_ylabel("variance ratio (this epoch's means)")
    left.set_title("collapse during 2-super-class pre-training", fontsize="medium")
    for key, label, style in (
        ("probe_test_error", "linear probe", "-"),
        ("finetune_test_error", "full fine-tune", "--"),
        ("coarse_test_error", "coarse task (2 classes)", ":"),
    ):
        _series(middle, epochs, _values(rows, key), style, order_by_x=True, marker="o", label=label)
    middle.set_ylabel("test error rate")
    middle.set_title("transfer to all classes", fontsize="medium")
    for ax in (left, middle):
        _epoch_axis(ax)
        _legend(ax, fontsize="small")
    coarse = _values(rows, "coarse_train_variance")
    # collapse is not monotone in the epoch, so the points are joined in the order of the x-axis
    _series(right, coarse, _values(rows, "probe_test_error"), "-", order_by_x=True, marker="o", label="linear probe")
    _series(
        right, coarse, _values(rows, "finetune_test_error"), "--", order_by_x=True, marker="o", label="full fine-tune"
    )
    if _positive(coarse):
        right.set_xscale("log")
    right.set_xlabel("coarse TrainVariance (smaller = more collapsed)")
    right.set_ylabel("fine-task test error rate")
    right.grid(True, which="both", alpha=0.3)
    _legend(right, fontsize="small")
    fig.suptitle("Super-class pre-training: collapse against transfer")
    return fig
