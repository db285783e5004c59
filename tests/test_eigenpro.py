"""EigenPro 2 and 3: interpolation, agreement with exact solves, early stopping, divergence, persistence; the
precomputed mode against the blocked one, and the distance cache shared between fits."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

import speechkern.eigenpro as ep
import speechkern.eigenpro.eigenpro3 as ep_eigenpro3
import speechkern.eigenpro.estimator as ep_estimator
import speechkern.eigenpro.preconditioner as ep_preconditioner
import speechkern.kernels as kernels
import speechkern.kernels.distance_cache as kernel_distance_cache
from speechkern.eigenpro import DivergenceError, EigenProRegressor
from speechkern.errors import SpeechkernError
from speechkern.kernels import ExponentialPowerKernel


def target(X: np.ndarray) -> np.ndarray:
    return np.stack([np.sin(2 * X[:, 0]) * np.cos(X[:, 1]), X[:, 2] ** 2 / 3 - 0.3], axis=1)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 5))
    Y = target(X) + 0.1 * rng.standard_normal((600, 2))
    X_test = rng.standard_normal((200, 5))
    return X, Y, X_test, target(X_test)


def exact_solution(X, Y, Z, shape, bandwidth):
    """Float64 solve of K(Z, Z)·a = Y (Z = X) or least squares min‖K(X, Z)·a − Y‖."""
    kernel = ExponentialPowerKernel(shape, bandwidth)
    K = kernel(torch.from_numpy(X), torch.from_numpy(Z)).numpy()
    if X is Z:
        return np.linalg.solve(K, Y)
    return np.linalg.lstsq(K, Y, rcond=None)[0]


def predict_exact(X, Z, a, shape, bandwidth):
    return ExponentialPowerKernel(shape, bandwidth)(torch.from_numpy(X), torch.from_numpy(Z)).numpy() @ a


@pytest.mark.parametrize("shape", [1.0, 0.75])
def test_interpolates_and_matches_the_exact_solve(problem, shape):
    X, Y, X_test, _ = problem
    model = EigenProRegressor(shape, 1.5, epochs=20, patience=None).fit(X, Y)
    train_mse = np.mean((model.predict(X) - Y) ** 2)
    assert train_mse < 1e-5 * np.mean(Y**2)
    exact = predict_exact(X_test, X, exact_solution(X, Y, X, shape, 1.5), shape, 1.5)
    got = model.predict(X_test)
    assert np.linalg.norm(got - exact) / np.linalg.norm(exact) < 1e-3
    # the automatic set-up: a preconditioner on many directions, a critical batch, the EigenPro 2 step rule
    assert model.n_components_ > 10 and model.subsample_size_ == 600
    assert 1 <= model.batch_size_ <= 600 and model.step_size_ > 0
    assert np.all(np.diff(model.eigenvalues_) <= 0) and model.eigenvalues_.dtype == np.float64
    assert [h["epoch"] for h in model.history_] == list(range(1, 21))
    assert model.history_[-1]["train_mse"] < 1e-3 * model.history_[0]["train_mse"]


def test_preconditioner_speeds_up_convergence(problem):
    X, Y, _, _ = problem
    fast = EigenProRegressor(1.0, 3.0, epochs=5, patience=None).fit(X, Y)
    # the same iteration and batch without the preconditioner: its step is limited by the top eigenvalue
    plain = EigenProRegressor(1.0, 3.0, n_components=0, batch_size=fast.batch_size_, epochs=5, patience=None)
    plain.fit(X, Y)
    assert plain.n_components_ == 0 and fast.n_components_ > 0
    assert plain.step_size_ < 0.1 * fast.step_size_
    assert fast.history_[-1]["train_mse"] < 0.1 * plain.history_[-1]["train_mse"]


def test_single_and_multi_output_shapes_and_dtypes(problem):
    X, Y, X_test, _ = problem
    multi = EigenProRegressor(1.0, 3.0, epochs=8).fit(X, Y)
    single = EigenProRegressor(1.0, 3.0, epochs=8).fit(X, Y[:, 1])
    assert multi.predict(X_test).shape == (200, 2) and multi.n_outputs_ == 2
    assert single.predict(X_test).shape == (200,) and single.n_outputs_ == 1
    assert multi.predict(X_test.astype(np.float32)).dtype == np.float32
    assert multi.predict(X_test).dtype == np.float64
    # each output of the multi-output model is the single-output model of that column
    np.testing.assert_allclose(single.predict(X_test), multi.predict(X_test)[:, 1], rtol=1e-4, atol=1e-4)
    # torch tensors are accepted; predict_tensor stays in torch
    torch.testing.assert_close(
        multi.predict_tensor(torch.from_numpy(X_test)), torch.from_numpy(multi.predict(X_test.astype(np.float32)))
    )


def test_validation_early_stopping_keeps_the_best_weights(problem):
    X, Y, X_test, Y_test = problem
    rng = np.random.default_rng(3)
    noisy = Y + 0.5 * rng.standard_normal(Y.shape)  # interpolating heavy noise overfits: validation turns up
    began = time.perf_counter()
    model = EigenProRegressor(2.0, 6.0, epochs=30, patience=2).fit(X, noisy, X_val=X_test, Y_val=Y_test)
    wall = time.perf_counter() - began
    assert len(model.history_) < 30
    val = [h["val_mse"] for h in model.history_]
    assert model.best_epoch_ == int(np.argmin(val)) + 1
    assert len(model.history_) == model.best_epoch_ + 2
    got = np.mean((model.predict(X_test) - Y_test) ** 2)
    assert got == pytest.approx(val[model.best_epoch_ - 1], rel=1e-4)
    seconds = [h["seconds"] for h in model.history_]  # each epoch's own time: together within the fit's wall time
    assert all(s > 0 for s in seconds) and sum(seconds) <= wall


def test_progress_is_reported_every_epoch(problem, caplog):
    X, Y, _, _ = problem
    with caplog.at_level(logging.INFO, logger="speechkern"):
        EigenProRegressor(1.0, 3.0, epochs=3, patience=None, progress_task="kernel/band-2").fit(X, Y)
    events = [r.progress for r in caplog.records if hasattr(r, "progress") and r.progress.task == "kernel/band-2"]
    epochs = [e for e in events if "train_mse" in e.info]
    assert [e.completed for e in epochs] == [1, 2, 3] and all(e.total == 3 for e in epochs)
    assert {"train_mse", "val_mse", "seconds"} <= set(epochs[0].info)
    assert events[-1].done
    assert any("3 epochs" in r.getMessage() for r in caplog.records)


def test_stopping_messages_say_what_happened(problem, caplog):
    """Early stopping is reported only when it cut training short; the final progress event gives the epochs run."""
    X, Y, _, _ = problem

    def run(epochs: int) -> tuple[list[str], object]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="speechkern"):
            # tol 0.9: no epoch after the first counts as a gain, so patience 1 ends training after epoch 2
            EigenProRegressor(1.0, 3.0, epochs=epochs, patience=1, tol=0.9, progress_task="band-1").fit(X, Y)
        done = [r.progress for r in caplog.records if getattr(r, "progress", None) and r.progress.done]
        return [r.getMessage() for r in caplog.records], done[-1]

    messages, done = run(5)
    assert any("stopping early after epoch 2 of 5" in m for m in messages)
    assert (done.completed, done.total, done.info["stopped"]) == (2, 5, "early")
    messages, done = run(2)  # patience runs out at the epoch limit: that is no early stop
    assert not any("stopping early" in m for m in messages)
    assert (done.completed, done.total, done.info["stopped"]) == (2, 2, "epoch limit")


def test_divergence_halves_the_step_and_warns(problem, caplog, monkeypatch):
    X, Y, _, _ = problem
    rule = ep.step_size
    monkeypatch.setattr(ep_estimator, "step_size", lambda m, beta, top: 4.0 * rule(m, beta, top))
    with caplog.at_level(logging.WARNING, logger="speechkern"):
        model = EigenProRegressor(1.0, 3.0, n_components=0, batch_size=100, epochs=6, patience=None).fit(X, Y)
    assert model.restarts_ >= 1
    assert model.step_size_ == pytest.approx(4.0 * rule(100, 1.0, model.eigenvalues_[0]) / 2**model.restarts_)
    assert any("diverged" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert np.isfinite(model.predict(X)).all()
    assert np.mean((model.predict(X) - Y) ** 2) < np.mean(Y**2)
    assert all(h["train_mse"] < np.mean(Y**2) for h in model.history_)


def test_persistent_divergence_raises(problem, monkeypatch):
    X, Y, _, _ = problem
    rule = ep.step_size
    monkeypatch.setattr(ep_estimator, "step_size", lambda m, beta, top: 1e4 * rule(m, beta, top))
    with pytest.raises(DivergenceError, match="diverged"):
        EigenProRegressor(1.0, 3.0, epochs=4, max_restarts=2).fit(X, Y)


def test_centres_fit_matches_least_squares_and_beats_a_centres_only_model():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((1000, 5))
    Y = target(X) + 0.3 * rng.standard_normal((1000, 2))
    X_test = rng.standard_normal((500, 5))
    Y_test = target(X_test)
    model = EigenProRegressor(1.0, 3.0, centers=120, epochs=12, patience=None, seed=4).fit(X, Y)
    assert model.centers_.shape == (120, 5) and model.weights_.shape == (120, 2)
    Z = model.centers_.double().numpy()
    exact = predict_exact(X_test, Z, exact_solution(X, Y, Z, 1.0, 3.0), 1.0, 3.0)
    got = model.predict(X_test)
    assert np.linalg.norm(got - exact) / np.linalg.norm(exact) < 0.1
    mse = np.mean((got - Y_test) ** 2)
    assert mse < 1.1 * np.mean((exact - Y_test) ** 2)
    # the same centres, trained on their own points only (EigenPro 2 on 120 points)
    rows = [int(np.flatnonzero((X.astype(np.float32) == z).all(axis=1))[0]) for z in model.centers_.numpy()]
    alone = EigenProRegressor(1.0, 3.0, epochs=12, patience=None).fit(X[rows], Y[rows])
    assert mse < 0.8 * np.mean((alone.predict(X_test) - Y_test) ** 2)


@pytest.mark.parametrize(
    ("centres", "precompute", "explicit", "randomized"),
    [
        ("drawn", True, False, False),
        ("drawn", False, False, False),
        ("array", True, False, False),
        ("drawn", True, True, False),
        ("drawn", True, True, True),
    ],
)
def test_eigenpro3_converges_to_the_least_squares_fit(precompute, centres, explicit, randomized, monkeypatch):
    """The projected iteration reaches min‖K(X, Z)·w − Y‖ (plain minibatch steps stalled ~1 % above it). Centres
    that are not training points leave the preconditioner's subsample outside their span: slower, still linear.
    The float32 explicit preconditioner (used from ~1000 centres on) reaches the same fit, and so does the
    preconditioner from randomized eigenpairs (used for subsamples of more than 4096 points)."""
    if explicit:
        monkeypatch.setattr(ep_eigenpro3, "EXPLICIT_MIN_CENTRES", 1)
    n_components = None
    if randomized:
        monkeypatch.setattr(ep_preconditioner, "SMALL_EIGENPROBLEM", 10)
        n_components = 20  # a block of 2·21 + 10 columns, well below the 120-point subsample
        calls = []
        real = ep_preconditioner.randomized_top_eigenpairs
        monkeypatch.setattr(
            ep_preconditioner, "randomized_top_eigenpairs", lambda *a, **k: calls.append(1) or real(*a, **k)
        )
    rng = np.random.default_rng(1)
    X = rng.standard_normal((1500, 5))
    Y = target(X) + 0.3 * rng.standard_normal((1500, 2))
    centers = 120 if centres == "drawn" else rng.standard_normal((120, 5))
    epochs = 30 if centres == "drawn" else 100
    model = EigenProRegressor(
        1.0,
        3.0,
        centers=centers,
        epochs=epochs,
        patience=None,
        precompute=precompute,
        seed=4,
        n_components=n_components,
    )
    model.fit(X, Y)
    assert not randomized or calls == [1]
    Z = model.centers_.double().numpy()
    K = ExponentialPowerKernel(1.0, 3.0)(torch.from_numpy(X), torch.from_numpy(Z)).numpy()
    best = np.sum((K @ np.linalg.lstsq(K, Y, rcond=None)[0] - Y) ** 2)
    got = np.sum((K @ model.weights_.double().numpy() - Y) ** 2)
    assert (got - best) / best <= 1e-4


@pytest.mark.parametrize("intrinsic_dims", [3, 40])
def test_randomized_eigenpairs_match_the_exact_top_of_a_kernel_spectrum(intrinsic_dims):
    """Against LAPACK on K/s of 1500 points: fast-decaying (3-dimensional data) and flat (40-dimensional) spectra.
    The Ritz values are lower bounds within 0.5 %, and the leading eigenvectors span the same directions."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1500, intrinsic_dims)) @ rng.standard_normal((intrinsic_dims, 60))
    X = torch.from_numpy(X)
    bandwidth = float(torch.cdist(X[:300], X[:300]).median())
    k = ExponentialPowerKernel(1.0, bandwidth)(X, X).numpy() / len(X)
    exact_values, exact_vectors = np.linalg.eigh(k)
    exact_values, exact_vectors = exact_values[::-1][:41], exact_vectors[:, ::-1][:, :41]
    values, vectors = ep_preconditioner.randomized_top_eigenpairs(k, 41)
    assert values.shape == (41,) and vectors.shape == (1500, 41)
    assert np.all(values <= exact_values * (1 + 1e-12))
    assert np.max((exact_values - values) / exact_values) < 5e-3
    overlap = np.linalg.svd(exact_vectors[:, :10].T @ vectors[:, :12], compute_uv=False)
    assert overlap.min() > 0.999


def test_centres_given_as_an_array(problem):
    X, Y, X_test, _ = problem
    Z = X[::10]
    model = EigenProRegressor(1.0, 3.0, centers=Z, epochs=15, patience=None).fit(X, Y)
    np.testing.assert_array_equal(model.centers_.numpy(), Z.astype(np.float32))
    exact = predict_exact(X_test, Z, exact_solution(X, Y, Z, 1.0, 3.0), 1.0, 3.0)
    assert np.linalg.norm(model.predict(X_test) - exact) / np.linalg.norm(exact) < 0.1
    # as many centres as points: the plain EigenPro 2 model
    assert EigenProRegressor(1.0, 3.0, centers=10_000, epochs=1).fit(X, Y).centers_.shape == (600, 5)


def test_save_and_load_predict_the_same(problem, tmp_path):
    X, Y, X_test, _ = problem
    for centers, y in ((None, Y), (50, Y[:, 0])):
        model = EigenProRegressor(0.75, 3.0, centers=centers, epochs=3).fit(X, y)
        path = model.save(tmp_path / f"model-{centers}.safetensors")
        loaded = EigenProRegressor.load(path)
        np.testing.assert_array_equal(loaded.predict(X_test), model.predict(X_test))
        assert loaded.get_params() == model.get_params()
        assert loaded.history_ == model.history_ and loaded.best_epoch_ == model.best_epoch_
        with pytest.raises(SpeechkernError, match="exists"):
            model.save(path)
        model.save(path, overwrite=True)
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files


def test_state_with_prefix_for_containers(problem):
    X, Y, X_test, _ = problem
    models = {f"band{i}/": EigenProRegressor(1.0, 2.0 + i, epochs=2).fit(X, Y[:, i]) for i in range(2)}
    tensors, configs = {}, {}
    for prefix, model in models.items():
        t, c = model.to_state(prefix=prefix)
        tensors.update(t)
        configs[prefix] = c
    assert set(tensors) == {f"band{i}/{k}" for i in range(2) for k in ("centers", "weights", "eigenvalues")}
    for prefix, model in models.items():
        again = EigenProRegressor.from_state(tensors, configs[prefix], prefix=prefix)
        np.testing.assert_array_equal(again.predict(X_test), model.predict(X_test))
    with pytest.raises(SpeechkernError, match="lacks"):
        EigenProRegressor.from_state(tensors, configs["band0/"], prefix="band9/")


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(SpeechkernError, match="not found"):
        EigenProRegressor.load(tmp_path / "none.safetensors")
    with pytest.raises(SpeechkernError, match="is a folder; expected the model file"):  # was "not found"
        EigenProRegressor.load(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(SpeechkernError, match="safetensors"):
        EigenProRegressor.load(bad)


def test_bad_inputs_are_explained(problem):
    X, Y, _, _ = problem
    with pytest.raises(SpeechkernError, match="X_val and Y_val"):
        EigenProRegressor().fit(X, Y, X_val=X)
    with pytest.raises(SpeechkernError, match="features"):
        EigenProRegressor(centers=np.zeros((5, 3))).fit(X, Y)
    with pytest.raises(SpeechkernError, match="epochs"):
        EigenProRegressor(epochs=0).fit(X, Y)
    with pytest.raises(SpeechkernError, match="X_val has 4 features"):
        EigenProRegressor().fit(X, Y, X_val=X[:, :4], Y_val=Y)


# scikit-learn's estimator contract. One check cannot pass by design: predictions are computed in float32 blocks
# whose GEMMs round differently for different numbers of rows, so predicting on a subset differs from the full
# prediction by ~1e-7 relative, while that check demands agreement to 1e-7 absolute.
EXPECTED_FAILURES = {
    "check_methods_subset_invariance": "float32 block products round differently for different row counts",
}


@parametrize_with_checks([EigenProRegressor(epochs=3)], expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_scikit_learn_estimator_contract(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------------------------------------
# The precomputed mode and the shared distance cache


def assert_same_fit(a: EigenProRegressor, b: EigenProRegressor, X_test: np.ndarray) -> None:
    """Two fits that differ only in how the kernel products were computed: float32 rounding apart."""
    assert (a.batch_size_, a.n_components_, a.subsample_size_) == (b.batch_size_, b.n_components_, b.subsample_size_)
    assert a.step_size_ == b.step_size_ and a.best_epoch_ == b.best_epoch_
    assert torch.equal(a.centers_, b.centers_)
    for ha, hb in zip(a.history_, b.history_, strict=True):
        for key in ("train_mse", "val_mse", "progressive_mse"):
            assert (ha[key] is None) == (hb[key] is None)
            if ha[key] is not None:
                assert ha[key] == pytest.approx(hb[key], rel=2e-4, abs=1e-9), key
    pa, pb = a.predict(X_test), b.predict(X_test)
    np.testing.assert_allclose(pa, pb, rtol=1e-3, atol=1e-4 * np.abs(pa).max())


@pytest.mark.parametrize("centers", [None, 150, "array"])
@pytest.mark.parametrize("validation", [False, True])
def test_precomputed_and_blocked_modes_agree(problem, centers, validation):
    X, Y, X_test, Y_test = problem
    if centers == "array":
        centers = X_test[::4]  # centres that are not training points
    val = {"X_val": X_test, "Y_val": Y_test} if validation else {}
    fits = {}
    for mode in (False, True):
        est = EigenProRegressor(0.75, 3.0, centers=centers, epochs=4, patience=None, precompute=mode, seed=2)
        fits[mode] = est.fit(X, Y, **val)
    assert not fits[False].precomputed_ and fits[True].precomputed_
    assert fits[True].n_components_ > 0
    assert_same_fit(fits[False], fits[True], X_test)
    assert EigenProRegressor(0.75, 3.0, centers=centers, epochs=4, patience=None, seed=2).fit(X, Y).precomputed_


def test_precompute_falls_back_or_refuses_when_the_budget_is_too_small(problem):
    X, Y, X_test, Y_test = problem
    needed = ep.precomputed_bytes(600, 600, 200, 100, 600, 5, 2)
    tiny = 0.5 * needed / 2**30  # too small for K(X, X) but enough for blocked products
    auto = EigenProRegressor(1.0, 3.0, epochs=3, memory_budget_gb=tiny).fit(X, Y, X_test, Y_test)
    assert not auto.precomputed_
    blocked = EigenProRegressor(1.0, 3.0, epochs=3, memory_budget_gb=tiny, precompute=False).fit(X, Y, X_test, Y_test)
    np.testing.assert_array_equal(auto.predict(X_test), blocked.predict(X_test))
    with pytest.raises(SpeechkernError, match=r"precompute=True: .* need \d+ bytes .* budget is \d+ bytes"):
        EigenProRegressor(1.0, 3.0, epochs=3, memory_budget_gb=tiny, precompute=True).fit(X, Y, X_test, Y_test)
    with pytest.raises(SpeechkernError, match="precompute"):
        EigenProRegressor(precompute="yes").fit(X, Y)


def test_distances_are_shared_between_fits_on_the_same_data(problem, monkeypatch):
    X, Y, X_test, Y_test = problem
    products = []
    compute = kernels.squared_distances
    monkeypatch.setattr(
        kernel_distance_cache, "squared_distances", lambda *a, **k: products.append(1) or compute(*a, **k)
    )
    kernels.clear_distance_cache()
    before = kernels.distance_cache_info()
    first = EigenProRegressor(1.0, 3.0, epochs=3).fit(X, Y[:, 0], X_test, Y_test[:, 0])
    assert len(products) == 3  # K(X, X), K(X_val, X) and the subsample's float64 block for the eigensystem
    # another band's targets and another kernel on the same (copied) data: no new distance product
    second = EigenProRegressor(0.5, 2.0, epochs=3).fit(X.copy(), Y[:, 1], X_test.copy(), Y_test[:, 1])
    info = kernels.distance_cache_info()
    assert first.precomputed_ and second.precomputed_
    assert len(products) == 3 and info.hits - before.hits == 3 and info.misses - before.misses == 3
    # the shared distances give exactly what a fresh computation gives
    kernels.clear_distance_cache()
    fresh = EigenProRegressor(0.5, 2.0, epochs=3).fit(X, Y[:, 1], X_test, Y_test[:, 1])
    assert len(products) == 6
    np.testing.assert_array_equal(second.eigenvalues_, fresh.eigenvalues_)
    np.testing.assert_array_equal(second.predict(X_test), fresh.predict(X_test))
    assert second.history_[-1]["val_mse"] == fresh.history_[-1]["val_mse"]
    # different data never take another's distances
    X2 = X.copy()
    X2[17, 3] += 1e-3
    changed = EigenProRegressor(0.5, 2.0, epochs=3).fit(X2, Y[:, 1], X_test, Y_test[:, 1])
    assert len(products) == 9  # all three distance matrices of X2 are new: nothing of X's is reused
    kernels.clear_distance_cache()
    alone = EigenProRegressor(0.5, 2.0, epochs=3).fit(X2, Y[:, 1], X_test, Y_test[:, 1])
    np.testing.assert_array_equal(changed.predict(X_test), alone.predict(X_test))
    kernels.clear_distance_cache()


def test_uncached_distances_are_transformed_in_place(problem, monkeypatch):
    """With room for the kernel matrices but not for a cached copy of the distances, no second matrix is held."""
    X, Y, X_test, Y_test = problem
    calls = []
    transform = ExponentialPowerKernel.from_squared_distances

    def spy(self, D, **kwargs):
        if D.dtype == torch.float32:  # the kernel matrices (the eigensystem's float64 block aside)
            calls.append(kwargs.get("inplace", False))
        return transform(self, D, **kwargs)

    monkeypatch.setattr(ExponentialPowerKernel, "from_squared_distances", spy)
    kernels.clear_distance_cache()
    batch = EigenProRegressor(1.0, 3.0).fit(X, Y).batch_size_  # the batch is the same under both budgets below
    needed = ep.precomputed_bytes(600, 600, 200, batch, 600, 5, 2)
    tight = EigenProRegressor(
        1.0, 3.0, epochs=2, memory_budget_gb=(needed + 1000) / 2**30, precompute=True, kernel_dtype="float32"
    )
    kernels.clear_distance_cache()
    calls.clear()
    tight.fit(X, Y, X_test, Y_test)
    assert tight.precomputed_ and calls == [True, True] and kernels.distance_cache_info().entries == 0
    roomy = EigenProRegressor(1.0, 3.0, epochs=2, memory_budget_gb=4 * needed / 2**30, precompute=True)
    calls.clear()
    roomy.fit(X, Y, X_test, Y_test)
    assert calls == [False, False] and kernels.distance_cache_info().entries == 3
    np.testing.assert_allclose(tight.predict(X_test), roomy.predict(X_test), rtol=0, atol=0)
    kernels.clear_distance_cache()


@pytest.mark.parametrize("centers", [None, 150])
def test_reduced_precision_kernel_storage_stays_close_to_float32(problem, centers):
    """float16 storage of the precomputed matrices: predictions within 1 % of float32's (measured 0.2 %), validation
    MSE within 1 %; bfloat16 within 5 % (measured 1.8 %). 'auto' picks float16 when float32 does not fit."""
    X, Y, X_test, Y_test = problem
    fits = {
        dtype: EigenProRegressor(
            1.0, 3.0, centers=centers, epochs=6, patience=None, precompute=True, kernel_dtype=dtype
        ).fit(X, Y, X_test, Y_test)
        for dtype in ("float32", "float16", "bfloat16")
    }
    ref = fits["float32"].predict(X_test)
    for dtype, tolerance in (("float16", 0.01), ("bfloat16", 0.05)):
        assert fits[dtype].kernel_dtype_ == dtype
        got = fits[dtype].predict(X_test)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < tolerance
        val, val_ref = fits[dtype].history_[-1]["val_mse"], fits["float32"].history_[-1]["val_mse"]
        assert abs(val - val_ref) < tolerance * val_ref
    p, ref = (600 if centers is None else centers), fits["float32"]
    sizes = (600, p, 200, ref.batch_size_, ref.subsample_size_, 5, 2)
    needed32 = ep.precomputed_bytes(*sizes, 4) + (2 * 8 * p * p if centers else 0)
    needed16 = ep.precomputed_bytes(*sizes, 2) + (2 * 8 * p * p if centers else 0)
    budget = (needed16 + needed32) / 2 / 2**30  # room for float16 matrices only
    auto = EigenProRegressor(1.0, 3.0, centers=centers, epochs=2, memory_budget_gb=budget).fit(X, Y, X_test, Y_test)
    assert auto.precomputed_ and auto.kernel_dtype_ == "float16"
    with pytest.raises(SpeechkernError, match="kernel_dtype"):
        EigenProRegressor(kernel_dtype="int8").fit(X, Y)


@pytest.mark.parametrize("centers", [None, 150])
def test_subbands_share_one_distance_product_in_reduced_precision(problem, centers, monkeypatch):
    """Subband fits (other targets, other (γ, σ)) on the same points reuse the float16 distances of the first fit,
    and equal fits computed from scratch."""
    X, Y, X_test, Y_test = problem
    products = []
    compute = kernels.squared_distances
    monkeypatch.setattr(
        kernel_distance_cache, "squared_distances", lambda *a, **k: products.append(a[0].shape[0]) or compute(*a, **k)
    )

    def fit(band: int, shape: float, bandwidth: float) -> EigenProRegressor:
        est = EigenProRegressor(shape, bandwidth, centers=centers, epochs=3, kernel_dtype="float16", seed=1)
        return est.fit(X, Y[:, band], X_test, Y_test[:, band])

    kernels.clear_distance_cache()
    fit(0, 1.0, 3.0)
    rows_first = sum(products)
    products.clear()
    second = fit(1, 0.75, 2.0)
    assert second.kernel_dtype_ == "float16"
    # only the float64 subsample block of the preconditioner (and EigenPro 3's step sample) may be new
    assert sum(products) < 0.2 * rows_first
    kernels.clear_distance_cache()
    alone = fit(1, 0.75, 2.0)
    np.testing.assert_array_equal(second.predict(X_test), alone.predict(X_test))
    kernels.clear_distance_cache()


@pytest.mark.parametrize("centers", [None, 150])
def test_budget_holding_matrices_and_distances_keeps_the_distances(centers, monkeypatch):
    """The set-up's transient copies of the points are gone once the distances exist, so a budget that holds the
    float16 kernel matrices, the batch rows and the float16 distances keeps the distances for the next subband even
    when it could not also hold the set-up copies (many features): the second fit makes no new distance product."""
    rng = np.random.default_rng(3)
    n, n_val, d = 600, 200, 1000  # wide inputs: the set-up copies outweigh the batch rows
    X, X_val = rng.standard_normal((n, d)), rng.standard_normal((n_val, d))
    Y, Y_val = target(X[:, :5]), target(X_val[:, :5])
    products = []
    compute = kernels.squared_distances
    monkeypatch.setattr(
        kernel_distance_cache, "squared_distances", lambda *a, **k: products.append(a[0].shape[0]) or compute(*a, **k)
    )

    def fit(band: int, budget_gb: float | None) -> EigenProRegressor:
        est = EigenProRegressor(1.0, 30.0, centers=centers, epochs=2, kernel_dtype="float16", seed=1,
                                subsample_size=100, memory_budget_gb=budget_gb)  # fmt: skip
        return est.fit(X, Y[:, band], X_val, Y_val[:, band])

    kernels.clear_distance_cache()
    probe = fit(0, None)
    p = n if centers is None else centers
    sizes = (n, p, n_val, probe.batch_size_, probe.subsample_size_, d, 1, 2)
    fixed = 0 if centers is None else 2 * 8 * p * p
    distances = 2 * (n + n_val) * p
    budget = fixed + ep.precomputed_bytes(*sizes) + distances - 1024  # short of set-up copies and distances at once
    kernels.clear_distance_cache()
    products.clear()
    first = fit(0, budget / 2**30)
    assert first.precomputed_ and first.batch_size_ == probe.batch_size_
    rows_first = sum(products)
    products.clear()
    fit(1, budget / 2**30)
    assert sum(products) < 0.2 * rows_first  # only the preconditioner's subsample block and the step sample
    kernels.clear_distance_cache()


@pytest.mark.parametrize("seed", [-1, 1.5])
def test_a_bad_seed_of_eigenpro_is_one_line(seed):
    """EigenProRegressor(seed=-1).fit ended in NumPy's ValueError where its subsample is drawn."""
    X = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    with pytest.raises(SpeechkernError, match=rf"^seed={seed!r}: expected a non-negative integer$"):
        EigenProRegressor(epochs=1, seed=seed, device="cpu").fit(X, X[:, :2])
