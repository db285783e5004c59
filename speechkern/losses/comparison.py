"""Paired comparison of two losses over datasets: wins, ties and losses on accuracy and ECE, with a sign test.

For each dataset the mean test accuracy (and mean ECE) over its runs is compared between a loss and the baseline.
A win is a higher accuracy (a lower ECE) than the baseline's, a tie an equal one (within ``tie_tolerance``). The
two-sided sign test (:func:`scipy.stats.binomtest` of the wins among wins + losses, p = 1/2; ties are left out, the
usual convention) gives the probability of a split at least as uneven if neither loss were better. This is the
comparison Hui & Belkin (ICLR 2021, square loss vs cross-entropy) and Hui, Belkin & Wright (ICML 2023,
squentropy) report over their collections of tabular data sets.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import binomtest

TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class PairedComparison:
    """``loss`` against ``baseline`` over ``n_datasets`` datasets for one ``metric`` (``accuracy`` or ``ece``).

    wins/ties/losses: datasets where ``loss`` is better / equal / worse (higher accuracy, lower ECE);
    p_value: two-sided sign test of wins against losses (1.0 when there are neither);
    mean_difference: mean over datasets of loss − baseline (accuracy or ECE, a fraction).
    """

    loss: str
    baseline: str
    metric: str
    n_datasets: int
    wins: int
    ties: int
    losses: int
    p_value: float
    mean_difference: float


def sign_test(wins: int, losses: int) -> float:
    """Two-sided sign-test p-value of ``wins`` against ``losses`` (ties excluded); 1.0 with no untied pair."""
    n = wins + losses
    return 1.0 if n == 0 else float(binomtest(wins, n, 0.5, alternative="two-sided").pvalue)


def compare(
    loss_values: Sequence[float],
    baseline_values: Sequence[float],
    higher_is_better: bool,
    tie_tolerance: float = TIE_TOLERANCE,
) -> tuple[int, int, int]:
    """(wins, ties, losses) of paired per-dataset values; ties within ``tie_tolerance``."""
    diff = np.asarray(loss_values, dtype=np.float64) - np.asarray(baseline_values, dtype=np.float64)
    if not higher_is_better:
        diff = -diff
    ties = np.abs(diff) <= tie_tolerance
    return int(np.sum((diff > 0) & ~ties)), int(np.sum(ties)), int(np.sum((diff < 0) & ~ties))


def _per_dataset(summary: Sequence[Any], metric: str) -> dict[str, dict[str, float]]:
    """metric → {loss → {dataset → mean}} from summary rows (``dataset``, ``loss``, ``<metric>_mean``)."""
    table: dict[str, dict[str, float]] = {}
    for row in summary:
        table.setdefault(row.loss, {})[row.dataset] = float(getattr(row, f"{metric}_mean"))
    return table


def baseline_of(losses: Sequence[str]) -> str:
    """Cross-entropy when compared, else the first loss."""
    return "cross_entropy" if "cross_entropy" in losses else losses[0]


def paired_comparisons(
    summary: Sequence[Any], losses: Sequence[str], tie_tolerance: float = TIE_TOLERANCE
) -> list[PairedComparison]:
    """Every loss but the baseline (:func:`baseline_of`) against it, on accuracy and on ECE, over the datasets
    where both ran. summary: rows with ``dataset``, ``loss``, ``accuracy_mean`` and ``ece_mean``."""
    if len(losses) < 2:
        return []
    baseline = baseline_of(losses)
    out = []
    for metric, higher in (("accuracy", True), ("ece", False)):
        table = _per_dataset(summary, metric)
        base = table.get(baseline, {})
        for loss in losses:
            if loss == baseline:
                continue
            mine = table.get(loss, {})
            common = [d for d in base if d in mine]
            a = [mine[d] for d in common]
            b = [base[d] for d in common]
            wins, ties, worse = compare(a, b, higher, tie_tolerance)
            mean_diff = float(np.mean(np.subtract(a, b))) if common else float("nan")
            out.append(
                PairedComparison(
                    loss, baseline, metric, len(common), wins, ties, worse, sign_test(wins, worse), mean_diff
                )
            )
    return out


def markdown(comparisons: Sequence[PairedComparison], names: Mapping[str, str] | None = None) -> str:
    """The comparisons as a Markdown document."""
    names = names or {}
    lines = [
        "# Paired comparison over datasets",
        "",
        "Per dataset, the mean over its runs; a win is a higher test accuracy or a lower ECE than the baseline's, a "
        f"tie an equal one (within {TIE_TOLERANCE:g}). p: two-sided sign test of wins against losses "
        "(scipy.stats.binomtest, ties left out). Δ: mean over datasets of loss − baseline, in percentage points.",
        "",
        "| loss | baseline | metric | datasets | wins | ties | losses | sign test p | mean Δ (pp) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in comparisons:
        lines.append(
            f"| {names.get(c.loss, c.loss)} | {names.get(c.baseline, c.baseline)} | {c.metric} | {c.n_datasets} "
            f"| {c.wins} | {c.ties} | {c.losses} | {c.p_value:.3g} | {100 * c.mean_difference:+.2f} |"
        )
    if not comparisons:
        lines.append("| — | — | — | 0 | 0 | 0 | 0 | — | — |")
    return "\n".join(lines) + "\n"


def csv_text(comparisons: Sequence[PairedComparison]) -> str:
    """The comparisons as CSV, one row per loss × metric."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(PairedComparison.__dataclass_fields__), lineterminator="\n")
    writer.writeheader()
    for c in comparisons:
        writer.writerow(asdict(c))
    return buffer.getvalue()


def figure(summary: Sequence[Any], comparisons: Sequence[PairedComparison], names: Mapping[str, str]) -> Figure:
    """Per compared loss, per-dataset accuracy (left) and ECE (right) against the baseline's; the diagonal is a
    tie, points above it on the left and below it on the right favour the loss."""
    pairs = sorted({(c.loss, c.baseline) for c in comparisons}, key=lambda p: [c.loss for c in comparisons].index(p[0]))
    fig = Figure(figsize=(8.4, 3.9 * len(pairs)), layout="constrained")
    axes = fig.subplots(len(pairs), 2, squeeze=False)
    for row, (loss, baseline) in enumerate(pairs):
        for col, metric in enumerate(("accuracy", "ece")):
            ax = axes[row][col]
            table = _per_dataset(summary, metric)
            common = [d for d in table.get(baseline, {}) if d in table.get(loss, {})]
            x = 100 * np.array([table[baseline][d] for d in common])
            y = 100 * np.array([table[loss][d] for d in common])
            ax.scatter(x, y, s=14, alpha=0.8)
            lo = float(min(x.min(), y.min())) if common else 0.0
            hi = float(max(x.max(), y.max())) if common else 100.0
            ax.plot([lo, hi], [lo, hi], color="0.5", linewidth=0.8, linestyle="--")
            c = next(c for c in comparisons if c.loss == loss and c.metric == metric)
            label = "test accuracy (%)" if metric == "accuracy" else "ECE (%)"
            ax.set_xlabel(f"{names.get(baseline, baseline)}: {label}")
            ax.set_ylabel(f"{names.get(loss, loss)}: {label}")
            ax.set_title(f"{c.wins} wins, {c.ties} ties, {c.losses} losses (sign test p = {c.p_value:.2g})", fontsize=9)
            ax.grid(True, alpha=0.3)
    fig.suptitle("Paired comparison over datasets (one point per dataset)", fontsize=11)
    return fig
