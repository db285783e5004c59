"""Expected calibration error on hand-built examples, reliability diagrams, probabilities from square-loss outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from speechkern.losses import (
    expected_calibration_error,
    reliability_bins,
    reliability_diagram,
    square_loss_probabilities,
)
from speechkern.losses.calibration import calibration_bins_from_confidence


def two_class(confidence: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Two-class probabilities whose top label is class 0 with the given confidences; labels per correctness."""
    conf = np.asarray(confidence, dtype=np.float64)
    probs = np.stack([conf, 1.0 - conf], axis=1)
    labels = np.where(np.asarray(correct), 0, 1)
    return probs, labels


def test_one_bin_is_the_gap_between_accuracy_and_confidence() -> None:
    probs, labels = two_class([0.9, 0.9, 0.9, 0.9], [True, True, True, False])
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.15)


def test_two_bins_are_weighted_by_their_share_of_samples() -> None:
    probs = np.array([[0.25, 0.4, 0.35], [0.3, 0.3, 0.4], [0.95, 0.03, 0.02], [0.01, 0.04, 0.95]])
    labels = np.array([0, 2, 0, 2])  # predictions 1, 2, 0, 2: correct F, T, T, T
    # bin [0.4, 0.6): conf 0.4 and 0.4 → 0.4, acc 0.5, |gap| 0.1, share 1/2; bin [0.8, 1.0]: conf 0.95, acc 1
    bins = reliability_bins(probs, labels, n_bins=5)
    assert bins.counts.tolist() == [0, 0, 2, 0, 2]
    np.testing.assert_allclose(bins.accuracy[[2, 4]], [0.5, 1.0])
    np.testing.assert_allclose(bins.confidence[[2, 4]], [0.4, 0.95])
    assert np.isnan(bins.accuracy[0]) and np.isnan(bins.gap[3])
    assert bins.ece == pytest.approx(0.5 * 0.1 + 0.5 * 0.05)


def test_confidence_one_goes_into_the_last_bin_and_edges_open_the_upper_bin() -> None:
    bins = calibration_bins_from_confidence([1.0, 1.0, 0.5, 0.25, 0.0], [True, False, True, False, False], n_bins=4)
    assert bins.counts.tolist() == [1, 1, 1, 2]  # 0 → [0, .25), .25 → [.25, .5), .5 → [.5, .75), 1.0 → [.75, 1]
    # last bin: acc 1/2, conf 1 → 0.5·2/5; 0.5 bin: 0.5·1/5; 0.25 bin: 0.25·1/5; 0 bin: 0
    assert bins.ece == pytest.approx((0.5 * 2 + 0.5 + 0.25) / 5)
    eight = calibration_bins_from_confidence([0.125, 0.625, 0.99999], [True, True, True], n_bins=8)
    assert eight.counts[[1, 5, 7]].tolist() == [1, 1, 1]
    np.testing.assert_array_equal(eight.edges, np.arange(9) / 8)


def test_calibrated_and_always_wrong_extremes() -> None:
    probs, labels = two_class([0.75] * 4, [True, True, True, False])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    probs, labels = two_class([1.0, 0.99, 0.98], [False, False, False])
    assert expected_calibration_error(probs, labels) == pytest.approx(np.mean([1.0, 0.99, 0.98]))


def test_equals_a_direct_loop_over_bins() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(500, 6))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 6, size=500)
    conf, pred = probs.max(1), probs.argmax(1)
    k = 12
    expected = 0.0
    for b in range(k):
        lo, hi = b / k, (b + 1) / k
        inside = (conf >= lo) & ((conf < hi) if b < k - 1 else (conf <= hi))
        if inside.any():
            expected += inside.mean() * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
    assert expected_calibration_error(probs, labels, n_bins=k) == pytest.approx(expected, rel=1e-12)
    # torch tensors are accepted as well
    assert expected_calibration_error(torch.from_numpy(probs), torch.from_numpy(labels), n_bins=k) == pytest.approx(
        expected, rel=1e-12
    )


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="look like logits"):
        expected_calibration_error(np.array([[2.0, -1.0]]), np.array([0]))
    with pytest.raises(ValueError, match="sum to 1"):
        expected_calibration_error(np.array([[0.2, 0.2]]), np.array([0]))
    with pytest.raises(ValueError, match="one entry per row"):
        expected_calibration_error(np.array([[0.5, 0.5]]), np.array([0, 1]))
    with pytest.raises(ValueError, match="n_bins"):
        calibration_bins_from_confidence([0.5], [True], n_bins=0)
    with pytest.raises(ValueError, match="at least one sample"):
        calibration_bins_from_confidence([], [], n_bins=5)


def test_reliability_diagram_draws_accuracy_and_gap(tmp_path) -> None:
    probs, labels = two_class([0.95, 0.95, 0.65, 0.65, 0.55], [True, False, True, True, False])
    fig = reliability_diagram(probs, labels, n_bins=10, title="demo")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    # accuracy bars 0, 1, 0.5 for bins [0.5,0.6), [0.6,0.7), [0.9,1.0]; gaps 0.55, −0.35, 0.45
    assert heights == sorted([0.0, 1.0, 0.5, 0.55, -0.35, 0.45])
    assert ax.get_title() == "demo"
    path = tmp_path / "reliability.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # drawing onto given axes returns their figure
    other = Figure()
    ax2 = other.add_subplot()
    assert reliability_diagram(probs, labels, ax=ax2) is other


def test_square_loss_probabilities_invert_the_minimiser() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(7, 5, generator=g, dtype=torch.float64), 1)
    for t, m in [(1.0, 1.0), (1.0, 10.0), (15.0, 30.0)]:
        minimiser = t * m * p / (t * p + 1 - p)
        torch.testing.assert_close(square_loss_probabilities(minimiser, t, m), p)
    # square loss (t = M = 1): outputs clipped to [0, 1] and normalised
    out = torch.tensor([[0.8, -0.2, 0.2], [-0.1, -0.3, -0.5], [1.5, 0.5, 0.0]])
    probs = square_loss_probabilities(out)
    torch.testing.assert_close(probs, torch.tensor([[0.8, 0.0, 0.2], [1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 3, 0.0]]))
    assert probs.dtype == torch.float32
    # class axis elsewhere than 1
    torch.testing.assert_close(square_loss_probabilities(out.T, dim=0), probs.T)
