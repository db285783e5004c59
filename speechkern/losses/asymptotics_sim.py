"""Finite-size simulation of the thesis's chapter-3 model: minimise eq. 3.7, ‖R·Y − (Xw)₊‖² + (λ/2)‖w‖², directly.

Data as in §3.3.1 (X with i.i.d. N(0, 1/d) entries, a Gaussian teacher w*, labels argmax_j of x·w* (+ ε)); each
column of w is fitted by an active-set iteration (exact ridge solves on the rows where the column's
pre-activation is positive), with L-BFGS as the fallback. See docs/losses-asymptotics.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import minimize

from speechkern.errors import SpeechkernError
from speechkern.losses.asymptotics import Problem, tie_credit


@dataclass(frozen=True)
class SimulationResult:
    """One fitted network: test accuracy (clean labels, ties broken uniformly), the objective of eq. 3.7 divided by
    R² (the minimiser is R times that of R = 1, so this is the same for every R), the largest entry of the
    objective's gradient divided by R (0 at a stationary point), active-set sweeps of the slowest column, whether
    every column's active set converged (else L-BFGS finished it), and the sizes."""

    R: float
    seed: int
    accuracy: float
    objective: float
    gradient: float
    sweeps: int
    active_set_converged: bool
    n: int
    d: int
    k: int


def teacher_data(
    n: int, d: int, k: int, sigma2: float, noise_var: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X (n, d) with entries N(0, 1/d), labels (n,) = argmax_j (X·w* + ε)_j with ε ~ N(0, noise_var), and the
    teacher w* (d, k) with entries N(0, σ²) (§3.3.1, and §3.4.1 for the label noise)."""
    w_star = rng.standard_normal((d, k)) * math.sqrt(sigma2)
    X = rng.standard_normal((n, d)) / math.sqrt(d)
    scores = X @ w_star
    if noise_var > 0:
        scores += math.sqrt(noise_var) * rng.standard_normal((n, k))
    return X, scores.argmax(axis=1), w_star


def _objective(X: np.ndarray, target: np.ndarray, lam: float, w: np.ndarray) -> tuple[float, np.ndarray]:
    """Eq. 3.7 and its gradient for weights w (d,) or (d, k) and targets (n,) or (n, k)."""
    z = X @ w
    r = np.maximum(z, 0.0) - target
    return float(np.sum(r * r) + 0.5 * lam * np.sum(w * w)), X.T @ (2 * r * (z > 0)) + lam * w


def _active_set(
    X: np.ndarray, target: np.ndarray, lam: float, gram: np.ndarray | None, max_sweeps: int
) -> tuple[np.ndarray, int, bool]:
    n, d = X.shape
    active = np.ones(n, dtype=bool)
    seen: set[bytes] = set()
    w = np.zeros(d)
    for sweep in range(1, max_sweeps + 1):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            return np.zeros(d), sweep, True
        Xa = X[rows]
        if gram is not None:
            alpha = cho_solve(cho_factor(gram[np.ix_(rows, rows)] + 0.5 * lam * np.eye(rows.size)), target[rows])
            w = Xa.T @ alpha
        else:
            w = cho_solve(cho_factor(Xa.T @ Xa + 0.5 * lam * np.eye(d)), Xa.T @ target[rows])
        new = X @ w > 0
        if np.array_equal(new, active):
            return w, sweep, True
        key = new.tobytes()
        if key in seen:
            break
        seen.add(key)
        active = new
    return w, sweep, False


def fit_relu(X: np.ndarray, targets: np.ndarray, lam: float, max_sweeps: int = 20) -> tuple[np.ndarray, int, bool]:
    """Minimise eq. 3.7, ‖T − (XW)₊‖² + (λ/2)‖W‖², over W (d, k) for targets T (n, k) (= R·Y).

    The columns are independent problems. Each is solved by an active-set iteration: on the set A of rows with a
    positive pre-activation (all rows at first) the objective is ridge regression, solved exactly (in the
    n-dimensional dual, with XXᵀ, when n ≤ d, else in the primal); A is recomputed from the new column until it
    repeats, which gives a stationary point. Columns whose A cycles or runs past ``max_sweeps`` are finished
    together by L-BFGS from their last iterate. Returns (W, the most sweeps a column took, whether every column's
    active set converged).
    """
    n, d = X.shape
    gram = X @ X.T if n <= d else None
    W = np.empty((d, targets.shape[1]))
    sweeps, unfinished = 0, []
    for j in range(targets.shape[1]):
        W[:, j], s, ok = _active_set(X, targets[:, j], lam, gram, max_sweeps)
        sweeps = max(sweeps, s)
        if not ok:
            unfinished.append(j)
    if unfinished:
        shape = (d, len(unfinished))
        scale = float(np.abs(targets).max())  # the gradient scales with the targets (R)
        sub = targets[:, unfinished]

        def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = _objective(X, sub, lam, v.reshape(shape))
            return value, grad.ravel()

        result = minimize(
            fun,
            W[:, unfinished].ravel(),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 20000, "gtol": 1e-9 * scale, "ftol": 1e-14},
        )
        W[:, unfinished] = result.x.reshape(shape)
    return W, sweeps, not unfinished


def simulate(
    problem: Problem,
    R_values: tuple[float, ...],
    n: int,
    seeds: int = 1,
    n_test: int = 5000,
    first_seed: int = 0,
) -> list[SimulationResult]:
    """Fit eq. 3.7 at finite size for each R of ``R_values`` on the same training sets, one per seed.

    problem: k, β, λ, σ², σ_ε (its R is ignored); n: training samples (d = round(n/β)); n_test: clean test
    samples per seed. Returns one :class:`SimulationResult` per (seed, R), seeds outermost. Raises
    SpeechkernError for sizes out of range.
    """
    problem.validate()
    d = int(round(n / problem.beta))
    if n < 2 or d < 1 or n_test < 1 or seeds < 1 or not R_values or min(R_values) <= 0:
        raise SpeechkernError(
            f"asymptotics simulation: n={n}, d={d}, n_test={n_test}, seeds={seeds}, R={R_values}: give n ≥ 2, "
            "n_test ≥ 1, seeds ≥ 1 and positive R values"
        )
    k, lam = problem.k, problem.lam
    results: list[SimulationResult] = []
    for seed in range(first_seed, first_seed + seeds):
        rng = np.random.default_rng(seed)
        X, labels, w_star = teacher_data(n, d, k, problem.sigma2, problem.noise_var, rng)
        X_test, _, _ = teacher_data(n_test, d, k, problem.sigma2, 0.0, rng)
        test_labels = (X_test @ w_star).argmax(axis=1)
        onehot = np.eye(k)[labels]
        for R in R_values:
            W, sweeps, converged = fit_relu(X, R * onehot, lam)
            objective, grad = _objective(X, R * onehot, lam, W)
            gradient = float(np.abs(grad).max())
            accuracy = float(tie_credit(np.maximum(X_test @ W, 0.0), test_labels).mean())
            results.append(
                SimulationResult(float(R), seed, accuracy, objective / R**2, gradient / R, sweeps, converged, n, d, k)
            )
    return results
