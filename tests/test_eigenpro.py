"""EigenPro 2 and 3: interpolation, agreement with exact solves, early stopping, divergence, persistence."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

import speechkern.eigenpro as ep
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
    model = EigenProRegressor(2.0, 6.0, epochs=30, patience=2).fit(X, noisy, X_val=X_test, Y_val=Y_test)
    assert len(model.history_) < 30
    val = [h["val_mse"] for h in model.history_]
    assert model.best_epoch_ == int(np.argmin(val)) + 1
    assert len(model.history_) == model.best_epoch_ + 2
    got = np.mean((model.predict(X_test) - Y_test) ** 2)
    assert got == pytest.approx(val[model.best_epoch_ - 1], rel=1e-4)
    assert all(h["seconds"] >= 0 for h in model.history_)


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


def test_divergence_halves_the_step_and_warns(problem, caplog, monkeypatch):
    X, Y, _, _ = problem
    rule = ep.step_size
    monkeypatch.setattr(ep, "step_size", lambda m, beta, top: 4.0 * rule(m, beta, top))
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
    monkeypatch.setattr(ep, "step_size", lambda m, beta, top: 1e4 * rule(m, beta, top))
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
