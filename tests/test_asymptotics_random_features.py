"""The rescaled-square-loss asymptotics: the fixed-point solver on cases with known answers, and against simulation."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from speechkern.errors import SpeechkernError
from speechkern.losses import asymptotics_random_features as asym


@pytest.mark.parametrize(("beta", "ridge"), [(0.5, 0.1), (2.0, 0.3), (1.0, 1e-2)])
def test_unweighted_response_is_the_marchenko_pastur_stieltjes_transform(beta: float, ridge: float) -> None:
    """R = 1, linear read-out: V = s·I with s = (1/d)·tr(ZᵀZ/d + λ)⁻¹ → the root of λs² + (λ + β − 1)s − 1 = 0."""
    fp = asym.solve(asym.Problem(k=3, beta=beta, R=1.0, ridge=ridge, model="linear"))
    s = (-(ridge + beta - 1) + math.sqrt((ridge + beta - 1) ** 2 + 4 * ridge)) / (2 * ridge)
    np.testing.assert_allclose(fp.V, s * np.eye(3), rtol=1e-8, atol=1e-10)
    # ... which a sampled matrix reproduces
    d = 600
    z = np.random.default_rng(0).standard_normal((int(beta * d), d))
    sampled = np.trace(np.linalg.inv(z.T @ z / d + ridge * np.eye(d))) / d
    assert sampled == pytest.approx(s, rel=0.03)


def test_no_signal_gives_chance_and_accuracy_does_not_depend_on_M() -> None:
    blind = asym.solve(asym.Problem(k=4, beta=2.0, R=3.0, snr=0.0, model="relu"))
    np.testing.assert_allclose(blind.A, 0.0, atol=1e-12)
    assert asym.accuracy_from_fixed_point(blind, 100_000) == pytest.approx(0.25, abs=0.01)

    p = asym.Problem(k=3, beta=1.5, R=4.0, snr=3.0, label_noise=0.2, ridge=0.2)
    one, ten = asym.solve(p), asym.solve(replace(p, M=10.0))
    np.testing.assert_allclose(ten.A, 10 * one.A, rtol=1e-6)
    np.testing.assert_allclose(ten.Q, 100 * one.Q, rtol=1e-6)
    assert asym.accuracy_from_fixed_point(one) == asym.accuracy_from_fixed_point(ten)


def test_symmetric_classes_give_symmetric_fixed_point_below_bayes() -> None:
    fp = asym.solve(asym.Problem(k=4, beta=2.0, R=2.0, snr=4.0))
    diag = np.diag(fp.A)
    off = fp.A[~np.eye(4, dtype=bool)]
    np.testing.assert_allclose(diag, diag[0], rtol=1e-8)
    np.testing.assert_allclose(off, off[0], rtol=1e-6, atol=1e-12)
    assert diag[0] > off[0]  # each output points to its own class mean
    np.testing.assert_allclose(fp.Q, fp.Q.T)
    assert np.all(np.linalg.eigvalsh(fp.Q) > 0)
    acc = asym.accuracy_from_fixed_point(fp)
    assert 0.25 < acc < asym.bayes_accuracy(4, 4.0)


def test_fixed_point_matches_the_exact_finite_size_solution() -> None:
    """Linear read-out, d = 800: the overlaps of the exact weighted-ridge minimiser are those of the fixed point.

    Entries fluctuate by O(1/√d) (a_c is read from single coordinates), so the class-symmetric averages are
    compared: the diagonal and off-diagonal means of A and Q, within 10 %.
    """
    problem = asym.Problem(k=3, beta=2.0, R=3.0, snr=2.0, ridge=0.5, model="linear", label_noise=0.1)
    fp = asym.solve(problem)
    d = 800
    rng = np.random.default_rng(1)
    n = int(problem.beta * d)
    x, _, y = asym._gaussian_classes(n, d, problem.k, problem.snr, problem.label_noise, rng)
    phi = torch.as_tensor(x / math.sqrt(d))
    v, _ = asym._exact_minimiser(phi, torch.as_tensor(y), problem, problem.ridge / (n * problem.k))
    W = v.numpy()
    A = W[: problem.k, :].T / math.sqrt(d)  # a_c = Wᵀu_c/√d with u_c = e_c; column c
    Q = W.T @ W / d
    off = ~np.eye(problem.k, dtype=bool)
    for got, expected in ((A, fp.A), (Q, fp.Q)):
        assert np.diag(got).mean() == pytest.approx(np.diag(expected).mean(), rel=0.1)
        assert got[off].mean() == pytest.approx(expected[off].mean(), rel=0.1)


def test_solver_refuses_bad_settings_and_reports_non_convergence() -> None:
    with pytest.raises(SpeechkernError, match="ridge"):
        asym.solve(asym.Problem(k=3, beta=1.0, ridge=0.0))
    with pytest.raises(SpeechkernError, match="k=1"):
        asym.solve(asym.Problem(k=1, beta=1.0))
    with pytest.raises(asym.ConvergenceError, match="no convergence after 3 iterations"):
        asym.solve(asym.Problem(k=3, beta=1.0), max_iter=3)


# Stated tolerance: at d = 200 (n = βd, width 8·max(n, d)) the simulated accuracy, averaged over 2 training sets
# and 10 000 test points each, lies within 0.04 of the prediction (docs/losses-asymptotics.md, section 5).
SIMULATION_TOLERANCE = 0.04


@pytest.mark.slow
@pytest.mark.parametrize(("k", "R"), [(2, 1.0), (3, 0.3), (3, 10.0), (5, 3.0)])
def test_prediction_matches_gradient_descent_simulation(k: int, R: float) -> None:
    problem = asym.Problem(k=k, beta=2.0, R=R, snr=4.0, ridge=0.1)
    predicted = asym.predicted_accuracy(problem)
    sims = [asym.simulate(problem, d=200, steps=2000, n_test=10_000, seed=s) for s in range(2)]
    assert all(s.objective_gap < 1e-3 for s in sims)  # gradient descent reached the minimiser
    simulated = float(np.mean([s.accuracy for s in sims]))
    assert simulated == pytest.approx(predicted, abs=SIMULATION_TOLERANCE), (predicted, simulated)
