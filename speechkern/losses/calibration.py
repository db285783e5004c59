"""Calibration of classifiers: expected calibration error (ECE) and reliability diagrams.

Top-label calibration (SPEC.md §9): each sample's confidence is its largest class probability and its prediction
that class (the first one on ties). The confidences are put into K equal-width bins of [0, 1] — bin k holds
``k/K ≤ conf < (k+1)/K`` and the last bin also holds ``conf = 1.0`` (the convention of :func:`numpy.histogram`,
which compares with the edges as floating-point numbers: 0.7, stored just below 7/10, lies in [0.6, 0.7)) — and

    ECE = Σ_k |B_k|/n · |acc(B_k) − conf(B_k)|,

with acc the fraction of correct predictions and conf the mean confidence of a bin. A reliability diagram draws
acc per bin against the diagonal, with the gap ``conf − acc`` shaded.

Probabilities from a model's outputs:

- cross-entropy and squentropy: the softmax of the logits (``torch.softmax(logits, dim=1)``);
- square losses: the softmax as well by default (what SPEC.md §9 and the literature report), or
  :func:`square_loss_probabilities`, which inverts the loss's minimiser: the rescaled square loss with target
  distribution ``p`` is minimised by ``f_k = t·M·p_k / (t·p_k + 1 − p_k)``, so ``p_k = f_k / (t·M − (t − 1)·f_k)``
  (``p = f`` for the square loss), with outputs clipped to ``[0, M]`` and the result normalised to sum 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from speechkern.losses import _targets

DEFAULT_BINS = 15


@dataclass(frozen=True)
class ReliabilityBins:
    """Top-label calibration of a set of predictions, per confidence bin.

    edges: bin edges ``(K+1,)`` from 0 to 1; counts: samples per bin ``(K,)``; accuracy, confidence: fraction
    correct and mean confidence per bin ``(K,)`` (NaN for an empty bin); ece: the expected calibration error.
    """

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    ece: float

    @property
    def gap(self) -> np.ndarray:
        """``confidence − accuracy`` per bin: positive where the model is over-confident (NaN for empty bins)."""
        return self.confidence - self.accuracy

    @property
    def n_samples(self) -> int:
        return int(self.counts.sum())


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def top_label(probabilities: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Confidence (largest probability) and predicted class of each row of ``(N, C)`` class probabilities."""
    probs = _as_numpy(probabilities).astype(np.float64, copy=False)
    if probs.ndim != 2 or probs.shape[1] < 1:
        raise ValueError(f"probabilities must have shape (N, C), got {probs.shape}")
    if probs.size and (not np.all(np.isfinite(probs)) or probs.min() < -1e-6 or probs.max() > 1 + 1e-6):
        raise ValueError(
            "probabilities must lie in [0, 1]; these look like logits or raw outputs: apply torch.softmax "
            "(or square_loss_probabilities for square-loss outputs) first"
        )
    sums = probs.sum(axis=1)
    if probs.size and not np.allclose(sums, 1.0, atol=1e-3):
        worst = float(sums[np.argmax(np.abs(sums - 1.0))])
        raise ValueError(f"each row of probabilities must sum to 1, found a row summing to {worst:.6g}")
    prediction = probs.argmax(axis=1)
    confidence = np.clip(probs[np.arange(len(probs)), prediction], 0.0, 1.0)
    return confidence, prediction


MAX_BINS = 1_000_000


def _check_bins(n_bins: int) -> int:
    """``n_bins`` as an int in 1..:data:`MAX_BINS` (more bins than that only allocate empty ones), else ValueError."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or not 1 <= n_bins <= MAX_BINS:
        raise ValueError(f"n_bins={n_bins!r} must be an integer from 1 to {MAX_BINS}, such as {DEFAULT_BINS}")
    return int(n_bins)


def _class_indices(labels: np.ndarray | torch.Tensor, n_classes: int) -> np.ndarray:
    """Labels as class indices in ``[0, n_classes)``; a float label must be a whole number. ValueError otherwise:
    a label that matches no column would count as a wrong prediction and bias the ECE without a sign."""
    arr = _as_numpy(labels).ravel()
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"labels must be class indices (integers), got dtype {arr.dtype}")
    valid = np.isfinite(arr) & (arr == np.round(arr)) & (arr >= 0) & (arr < n_classes)
    if not np.all(valid):
        raise ValueError(
            f"labels must be class indices from 0 to {n_classes - 1} (one column of probabilities each), "
            f"found {arr[~valid][0].item()!r}"
        )
    return arr.astype(np.int64)


def calibration_bins_from_confidence(
    confidence: np.ndarray | torch.Tensor, correct: np.ndarray | torch.Tensor, n_bins: int = DEFAULT_BINS
) -> ReliabilityBins:
    """Bin top-label confidences in [0, 1] ``(N,)`` with their correctness ``(N,)`` (bool or 0/1) into K bins.

    Raises ValueError for a confidence outside [0, 1] or NaN, a correctness other than 0/1, or ``n_bins`` that is
    not an integer in 1..:data:`MAX_BINS`.
    """
    n_bins = _check_bins(n_bins)
    conf = _as_numpy(confidence).astype(np.float64).ravel()
    hit = _as_numpy(correct).astype(np.float64).ravel()
    if conf.shape != hit.shape:
        raise ValueError(f"confidence and correct must have the same length, got {conf.size} and {hit.size}")
    if conf.size == 0:
        raise ValueError("no predictions to calibrate: give at least one sample")
    if not np.all((hit == 0) | (hit == 1)):
        bad = hit[(hit != 0) & (hit != 1)][0]
        raise ValueError(f"correct must hold True/False (or 1/0) per sample, found {bad:g}")
    # NaN fails both comparisons below and numpy.histogram drops it, so it would vanish from the bins
    if not np.all(np.isfinite(conf)) or conf.min() < 0.0 or conf.max() > 1.0:
        raise ValueError(f"confidences must lie in [0, 1], found [{np.min(conf):.6g}, {np.max(conf):.6g}]")
    # numpy.histogram puts 1.0 into the last bin and handles values on the other edges exactly.
    counts, edges = np.histogram(conf, bins=n_bins, range=(0.0, 1.0))
    conf_sum, _ = np.histogram(conf, bins=edges, weights=conf)
    hit_sum, _ = np.histogram(conf, bins=edges, weights=hit)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(counts > 0, hit_sum / counts, np.nan)
        mean_conf = np.where(counts > 0, conf_sum / counts, np.nan)
    # |B_k|/n · |acc − conf| = |Σ correct − Σ conf| / n per bin, which needs no division by empty counts
    ece = float(np.abs(hit_sum - conf_sum).sum() / conf.size)
    return ReliabilityBins(edges=edges, counts=counts, accuracy=accuracy, confidence=mean_conf, ece=ece)


def reliability_bins(
    probabilities: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, n_bins: int = DEFAULT_BINS
) -> ReliabilityBins:
    """Top-label calibration bins of class probabilities ``(N, C)`` against true class indices ``(N,)``.

    Raises ValueError for probabilities outside [0, 1] or rows not summing to 1, and for labels that are not
    class indices in ``[0, C)`` (whole-number floats are accepted).
    """
    confidence, prediction = top_label(probabilities)
    labels = _class_indices(labels, _as_numpy(probabilities).shape[1])
    if labels.shape[0] != prediction.shape[0]:
        raise ValueError(f"labels must have one entry per row of probabilities: {labels.shape[0]} vs {len(prediction)}")
    return calibration_bins_from_confidence(confidence, prediction == labels, n_bins)


def expected_calibration_error(
    probabilities: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, n_bins: int = DEFAULT_BINS
) -> float:
    """Top-label ECE of class probabilities ``(N, C)`` (rows sum to 1) against class indices ``(N,)``, in [0, 1]."""
    return reliability_bins(probabilities, labels, n_bins).ece


def square_loss_probabilities(outputs: torch.Tensor, t: float = 1.0, M: float = 1.0, dim: int = 1) -> torch.Tensor:
    """Class probabilities from (rescaled) square-loss outputs by inverting the loss's minimiser.

    ``p_k ∝ f_k / (t·M − (t − 1)·f_k)`` with ``f_k`` clipped to ``[0, M]``, normalised over ``dim``; a sample
    whose outputs are all ≤ 0 gets the uniform distribution. Works on any device and keeps the dtype.
    """
    t = _targets.check_scale("t", t, positive=True)
    M = _targets.check_scale("M", M, positive=True)
    f = outputs.clamp(0.0, M)
    p = f / (t * M - (t - 1.0) * f)  # the denominator lies in [M, t·M] for f in [0, M]
    total = p.sum(dim=dim, keepdim=True)
    uniform = torch.full_like(p, 1.0 / p.shape[dim])
    return torch.where(total > 0, p / total.clamp_min(torch.finfo(p.dtype).tiny), uniform)


def plot_reliability(bins: ReliabilityBins, ax: Axes, title: str | None = None) -> Axes:
    """Draw a reliability diagram of ``bins`` on ``ax``: accuracy bars, the gap to confidence, the diagonal."""
    left = bins.edges[:-1]
    width = np.diff(bins.edges)
    filled = bins.counts > 0
    ax.bar(
        left[filled],
        bins.accuracy[filled],
        width=width[filled],
        align="edge",
        color="#4c72b0",
        edgecolor="#1f3b63",
        linewidth=0.6,
        label="accuracy",
    )
    # the gap spans accuracy to mean confidence: above the bar when over-confident, inside it when under-confident;
    # hatching without fill keeps both cases readable
    ax.bar(
        left[filled],
        bins.gap[filled],
        bottom=bins.accuracy[filled],
        width=width[filled],
        align="edge",
        facecolor="none",
        edgecolor="#c44e52",
        hatch="///",
        linewidth=0.8,
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.text(
        0.03,
        0.95,
        f"ECE {bins.ece:.3f}\nn = {bins.n_samples}",
        transform=ax.transAxes,
        va="top",
        fontsize=9,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"},
    )
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure on the Agg canvas (no pyplot, no global backend change); size in inches."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def reliability_diagram(
    probabilities: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    n_bins: int = DEFAULT_BINS,
    *,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Reliability diagram of class probabilities ``(N, C)`` against labels ``(N,)`` as a matplotlib figure.

    Draws on ``ax`` when given (and returns its figure); otherwise on a new Agg figure with a legend.
    Save it with ``fig.savefig("reliability.png", dpi=150)``.
    """
    bins = reliability_bins(probabilities, labels, n_bins)
    if ax is None:
        fig = new_figure(4.5, 4.5)
        ax = fig.add_subplot()
        plot_reliability(bins, ax, title)
        ax.legend(loc="lower right", fontsize=8)
        return fig
    plot_reliability(bins, ax, title)
    return ax.get_figure()
