"""Neural-collapse measures on constructed features, their streaming path, and feature capture from torch models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from speechkern.collapse import (
    FeatureStats,
    NearestCentreStats,
    capture_features,
    capture_layer,
    iter_features,
    nc_metrics,
    stream_nc_metrics,
    stream_stats,
    strong_test_variance,
    train_variance,
    weak_test_variance,
)
from speechkern.errors import SpeechkernError


def simplex_etf(C: int, d: int, scale: float = 1.0) -> np.ndarray:
    """``(C, d)`` centred, equinorm, equiangular class means (cosines −1/(C−1))."""
    assert d >= C
    basis = np.linalg.qr(np.random.default_rng(0).normal(size=(d, C)))[0]  # d×C orthonormal columns
    centred = np.eye(C) - 1.0 / C
    return scale * (centred @ basis.T) * np.sqrt(C / (C - 1))


def blobs(C: int = 4, d: int = 6, n_per: int = 50, spread: float = 0.5, seed: int = 1):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(C, d)) * 3
    y = np.repeat(np.arange(C), n_per)
    rng.shuffle(y)
    H = means[y] + spread * rng.normal(size=(len(y), d))
    return H, y


# ------------------------------------------------------------------------------------------------ collapsed features


def test_perfectly_collapsed_features_give_zero_and_ideal_nc_metrics():
    C, d = 5, 8
    M = simplex_etf(C, d, scale=2.0) + 7.0  # an offset: all measures are translation invariant
    y = np.tile(np.arange(C), 20)
    H = M[y]
    # Means of identical rows can differ from the row by round-off only (float64 sums).
    assert train_variance(H, y) == pytest.approx(0.0, abs=1e-24)
    assert strong_test_variance(H, y) == pytest.approx(0.0, abs=1e-24)
    W = M - M.mean(axis=0)  # self-dual classifier
    # argmin ‖h − μ_c‖² = argmax (h·μ_c − ‖μ_c‖²/2), and h·μ_c = W_c·h + h·μ̄ with h·μ̄ common to all classes.
    b = -0.5 * np.sum(M**2, axis=1)
    nc = nc_metrics(H, y, W, b)
    assert nc.nc1 == pytest.approx(0.0, abs=1e-12)
    assert nc.nc2_equinorm_means == pytest.approx(0.0, abs=1e-12)
    assert nc.nc2_equiangular_means == pytest.approx(0.0, abs=1e-12)
    assert nc.nc2_maxangle_means == pytest.approx(0.0, abs=1e-12)
    assert nc.nc2_equinorm_classifier == pytest.approx(0.0, abs=1e-12)
    assert nc.nc3 == pytest.approx(0.0, abs=1e-12)
    assert nc.nc4_agreement == 1.0
    assert nc.n_classes == C and nc.n_samples == len(y)


def test_non_collapsed_features_are_far_from_ideal():
    H, y = blobs(spread=2.0)
    nc = nc_metrics(H, y, W=np.random.default_rng(3).normal(size=(4, 6)))
    assert nc.nc1 > 0.1
    assert nc.nc3 > 0.1
    assert nc.nc2_maxangle_means > 0.01
    assert train_variance(H, y) > 0.1


# ------------------------------------------------------------------------------------------------ known spreads


def test_known_within_and_between_spreads_give_expected_ratio():
    # Class means at ±a·e1 (variance of means about their mean: a²); each class has points at μ ± s·e2 and
    # μ ± s·e3, so every point lies at squared distance s² from its mean.
    a, s = 3.0, 0.5
    means = np.array([[a, 0, 0], [-a, 0, 0]])
    offsets = s * np.array([[0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    H = np.concatenate([m + offsets for m in means])
    y = np.repeat([0, 1], 4)
    assert train_variance(H, y) == pytest.approx(s**2 / a**2, rel=1e-12)
    assert strong_test_variance(H, y) == pytest.approx(s**2 / a**2, rel=1e-12)
    # NC1: Σ_W = diag(0, s²/2, s²/2), Σ_B = diag(a², 0, 0): tr(Σ_W Σ_B⁺) = 0 (within spread ⟂ means).
    assert nc_metrics(H, y).nc1 == pytest.approx(0.0, abs=1e-12)
    # Spread along the means' direction instead: Σ_W = diag(s², 0, 0) → NC1 = (s²/a²)/C.
    H_along = np.concatenate([m + s * np.array([[1, 0, 0], [-1, 0, 0]]) for m in means])
    y_along = np.repeat([0, 1], 2)
    assert nc_metrics(H_along, y_along).nc1 == pytest.approx((s**2 / a**2) / 2, rel=1e-12)


def test_given_means_shift_the_numerator_and_set_the_denominator():
    a = 2.0
    H = np.array([[a, 0.0], [a, 0.0], [-a, 0.0], [-a, 0.0]])
    y = np.array([0, 0, 1, 1])
    # Reference means one unit off in e2: every point at squared distance 1; the spread of means is a² = 4.
    ref = np.array([[a, 1.0], [-a, 1.0]])
    assert train_variance(H, y, means=ref) == pytest.approx(1 / a**2)
    as_dict = {0: ref[0], 1: ref[1]}
    assert train_variance(H, y, means=as_dict) == pytest.approx(1 / a**2)
    # A third reference class (absent from y) widens the denominator: means {±a, 0} → spread 2a²/3.
    ref3 = np.array([[a, 1.0], [-a, 1.0], [0.0, 1.0]])
    assert strong_test_variance(H, y, means=ref3) == pytest.approx(1 / (2 * a**2 / 3))


def test_string_labels_need_mapping_means():
    H = np.array([[1.0, 0.0], [-1.0, 0.0]])
    y = np.array(["cat", "dog"])
    assert train_variance(H, y) == 0.0
    with pytest.raises(SpeechkernError, match="mapping"):
        train_variance(H, y, means=np.zeros((2, 2)))
    assert train_variance(H, y, means={"cat": [1.0, 1.0], "dog": [-1.0, 1.0], "eel": [0.0, 0.0]}) > 0


def test_degenerate_denominator_is_inf_or_nan():
    H = np.ones((4, 2))
    y = np.array([0, 0, 1, 1])
    assert np.isnan(train_variance(H, y))  # 0 / 0
    assert np.isinf(train_variance(H + np.array([[0.0, 1], [0, -1], [0, 1], [0, -1]]), y))
    assert np.isnan(nc_metrics(H, y).nc1)


def test_feature_dimension_below_class_count():
    # 6 classes in 2-D: Σ_B has rank 2 < C − 1 = 5; the pseudo-inverse must cope and match numpy's pinv.
    rng = np.random.default_rng(4)
    C, n_per = 6, 30
    angles = np.linspace(0, 2 * np.pi, C, endpoint=False)
    M = 4 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    y = np.repeat(np.arange(C), n_per)
    H = M[y] + 0.3 * rng.normal(size=(len(y), 2))
    nc = nc_metrics(H, y, W=M.copy())
    Mh = np.stack([H[y == c].mean(0) for c in range(C)])
    centred = Mh - Mh.mean(0)
    sigma_w = sum((H[y == c] - Mh[c]).T @ (H[y == c] - Mh[c]) for c in range(C)) / len(y)
    sigma_b = centred.T @ centred / C
    expected = np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / C
    assert np.isfinite(nc.nc1)
    assert nc.nc1 == pytest.approx(expected, rel=1e-10)
    assert nc.nc4_agreement is not None and nc.nc4_agreement > 0.9


def test_nc1_matches_explicit_formula_on_random_data():
    H, y = blobs(C=5, d=12, n_per=40, spread=1.5)
    Mh = np.stack([H[y == c].mean(0) for c in range(5)])
    centred = Mh - Mh.mean(0)
    sigma_w = sum((H[y == c] - Mh[c]).T @ (H[y == c] - Mh[c]) for c in range(5)) / len(y)
    expected = np.trace(sigma_w @ np.linalg.pinv(centred.T @ centred / 5)) / 5
    assert nc_metrics(H, y).nc1 == pytest.approx(expected, rel=1e-9)


def test_float32_features_far_from_origin_are_accumulated_in_float64():
    # Features offset by 1e4 in float32: float32 sums of squares would lose the small spread entirely.
    H64, y = blobs(spread=0.01)
    H32 = (H64 + 1e4).astype(np.float32)
    exact = train_variance(H32.astype(np.float64), y)
    assert train_variance(H32, y) == pytest.approx(exact, rel=1e-9)
    stats = FeatureStats()
    for start in range(0, len(y), 17):
        stats.update(H32[start : start + 17], y[start : start + 17])
    assert stats.train_variance() == pytest.approx(exact, rel=1e-6)
    assert stats.nc_metrics().nc1 == pytest.approx(nc_metrics(H32.astype(np.float64), y).nc1, rel=1e-6)


# ------------------------------------------------------------------------------------------------ weak test variance


def test_weak_test_variance_zero_when_points_sit_on_k_points_with_wrong_labels():
    C = 4
    points = simplex_etf(C, 6, scale=3.0)
    rng = np.random.default_rng(5)
    which = np.tile(np.arange(C), 25)
    H = points[which]
    wrong = rng.integers(0, C, size=len(which))  # labels unrelated to position
    assert weak_test_variance(H, C) == pytest.approx(0.0, abs=1e-20)
    assert weak_test_variance(H, C, centers=points) == 0.0
    assert strong_test_variance(H, wrong) > 0.5  # the labelled measure does see the mislabelling


def test_weak_test_variance_with_given_centres_has_known_value():
    centres = np.array([[1.0, 0.0], [-1.0, 0.0]])  # spread about their mean: 1
    H = np.array([[1.0, 0.5], [-1.0, -0.5], [1.0, -0.5]])
    assert weak_test_variance(H, 2, centers=centres) == pytest.approx(0.25)
    with pytest.raises(SpeechkernError, match="n_clusters"):
        weak_test_variance(H, 3, centers=centres)


def test_weak_test_variance_kmeans_is_seeded_and_bounded_by_strong():
    H, y = blobs(spread=1.0)
    first = weak_test_variance(H, 4, random_state=0)
    assert first == weak_test_variance(H, 4, random_state=0)
    # k-means minimises the within-cluster spread, so with well-separated blobs it cannot do worse than labels.
    assert first <= strong_test_variance(H, y) * 1.05


# ------------------------------------------------------------------------------------------------ streaming


@pytest.mark.parametrize("batch", [1, 7, 64, 1000])
def test_streamed_batches_match_the_array_functions(batch):
    H, y = blobs(C=4, d=6, n_per=50, spread=0.8)
    rng = np.random.default_rng(2)
    W, b = rng.normal(size=(4, 6)), rng.normal(size=4)
    stats = FeatureStats()
    for start in range(0, len(y), batch):
        stats.update(H[start : start + batch], y[start : start + batch])
    assert stats.n_samples == len(y)
    np.testing.assert_allclose(stats.means, np.stack([H[y == c].mean(0) for c in range(4)]), rtol=1e-12)
    assert stats.train_variance() == pytest.approx(train_variance(H, y), rel=1e-10)
    ref = np.random.default_rng(9).normal(size=(4, 6))
    assert stats.strong_test_variance(ref) == pytest.approx(strong_test_variance(H, y, ref), rel=1e-10)
    agree = NearestCentreStats(stats.means, W, b)
    for start in range(0, len(y), batch):
        agree.update(H[start : start + batch])
    streamed = stats.nc_metrics(W, b, agreement=agree.agreement)
    direct = nc_metrics(H, y, W, b)
    for key, value in direct.to_dict().items():
        assert streamed.to_dict()[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    centres = np.random.default_rng(8).normal(size=(4, 6))
    weak = NearestCentreStats(centres)
    for start in range(0, len(y), batch):
        weak.update(H[start : start + batch])
    assert weak.weak_test_variance() == pytest.approx(weak_test_variance(H, 4, centres), rel=1e-12)


def test_merged_accumulators_equal_one_accumulator():
    H, y = blobs(C=3, d=5, n_per=40)
    whole = FeatureStats().update(H, y)
    left = FeatureStats().update(H[:50], y[:50])
    right = FeatureStats().update(H[50:], y[50:])
    merged = left.merge(right)
    assert merged.n_samples == whole.n_samples
    np.testing.assert_allclose(merged.stats().within, whole.stats().within, rtol=1e-10)
    assert merged.train_variance() == pytest.approx(whole.train_variance(), rel=1e-12)


def test_declared_classes_fix_the_order_and_reject_strangers():
    H = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0]])
    stats = FeatureStats(classes=[2, 0, 1]).update(H[:2], np.array([0, 2]))
    assert stats.classes.tolist() == [2, 0, 1]
    assert np.isnan(stats.means[2]).all()  # class 1 not seen yet
    with pytest.raises(SpeechkernError, match="declared classes"):
        stats.update(H[2:], np.array([7]))
    with pytest.raises(SpeechkernError, match="no samples"):
        stats.nc_metrics(W=np.eye(3, 2))


def test_input_errors_name_the_problem():
    with pytest.raises(SpeechkernError, match="2-D"):
        train_variance(np.zeros(5), np.zeros(5))
    with pytest.raises(SpeechkernError, match="labels"):
        train_variance(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(SpeechkernError, match="NaN"):
        train_variance(np.array([[np.nan, 0.0], [1.0, 0.0]]), np.array([0, 1]))
    with pytest.raises(SpeechkernError, match="shape"):
        nc_metrics(np.eye(3), np.arange(3), W=np.eye(2))
    with pytest.raises(SpeechkernError, match="features"):
        FeatureStats().update(np.eye(2), [0, 1]).update(np.eye(3), [0, 1, 2])


# ------------------------------------------------------------------------------------------------ capture


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.ReLU())
        self.head = nn.Linear(6, 3)
        self.head_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.head_calls += 1
        return self.head(self.body(x))


@pytest.fixture
def net_and_data():
    torch.manual_seed(0)
    net = _Net()
    X = torch.randn(53, 5)
    y = torch.randint(0, 3, (53,))
    y[:3] = torch.tensor([0, 1, 2])  # every class present
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=7)
    return net, X, y, loader


def test_capture_features_by_layer_name_matches_manual_forward(net_and_data):
    net, X, y, loader = net_and_data
    net.train()
    H, labels = capture_features(net, loader, "body.3")  # output of the ReLU
    with torch.no_grad():
        expected = net.body(X).numpy()
    np.testing.assert_allclose(H, expected, rtol=1e-5, atol=1e-6)  # float32 GEMMs of 7 vs 53 rows
    np.testing.assert_array_equal(labels, y.numpy())
    assert net.training  # mode restored
    H_in, _ = capture_features(net, loader, "head", which="input")
    np.testing.assert_allclose(H_in, expected, rtol=1e-5, atol=1e-6)
    assert not net.head._forward_hooks and not net.head._forward_pre_hooks  # hooks removed


def test_capture_stops_the_forward_pass_early(net_and_data):
    net, _, _, loader = net_and_data
    seen = []
    net.head.register_forward_hook(lambda *_: seen.append(1))
    batches = list(iter_features(net, loader, "body", stop_early=True))
    assert len(batches) == 8 and not seen  # the head never ran
    list(iter_features(net, loader, "body", stop_early=False))
    assert len(seen) == 8


def test_capture_unknown_layer_lists_the_names(net_and_data):
    net, _, _, loader = net_and_data
    with pytest.raises(SpeechkernError, match="body.0"):
        capture_features(net, loader, "fc")
    with pytest.raises(SpeechkernError, match="input"), capture_layer(net, "head", which="middle"):  # type: ignore[arg-type]
        pass


def test_streamed_model_metrics_match_arrays(net_and_data):
    net, X, y, loader = net_and_data
    nc, stats = stream_nc_metrics(net, loader, "head")
    with torch.no_grad():
        H = net.body(X).numpy()
    direct = nc_metrics(H, y.numpy(), net.head.weight.detach().numpy(), net.head.bias.detach().numpy())
    for key, value in direct.to_dict().items():
        assert nc.to_dict()[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key
    assert stats.train_variance() == pytest.approx(train_variance(H, y.numpy()), rel=1e-6)
    plain = stream_stats(net, loader, "body", covariance=False)
    assert plain.train_variance() == pytest.approx(stats.train_variance(), rel=1e-12)


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
def test_capture_on_each_device_matches_cpu(net_and_data, device):
    net, X, y, loader = net_and_data
    H_cpu, _ = capture_features(net, loader, "head", which="input")
    net.to(device)
    H_dev, labels = capture_features(net, loader, "head", which="input")  # inputs follow the model's device
    assert H_dev.dtype == np.float32 and isinstance(labels, np.ndarray)
    np.testing.assert_allclose(H_dev, H_cpu, rtol=1e-4, atol=1e-5)
