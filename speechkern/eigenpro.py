"""EigenPro: kernel regression by preconditioned stochastic gradient descent (SPEC §6).

:class:`EigenProRegressor` is a scikit-learn estimator for f(x) = Σ_j w_j k(x, z_j) with the exponential power
kernel of :mod:`speechkern.kernels`. Two modes share one iteration:

* **EigenPro 2** (``centers=None``, Ma & Belkin 2019): every training point is a centre and the iteration
  solves Kw = Y approximately (interpolation; no ridge term, early stopping regularises). One step on a batch B
  of m points, with residual g = K(X_B, X)·w − Y_B:

      w_B ← w_B − (η/m)·g,    w_S ← w_S + (η/m)·E·diag(D)·Eᵀ·K(X_S, X_B)·g

  where S is a fixed subsample of s points, (λ_i, e_i) the top eigenpairs of K(X_S, X_S)/s (float64, scipy's
  dense ``eigh`` on the top q + 1 only), E = [e_1 … e_q]/√s and D_i = (1 − (λ_{q+1}/λ_i)^α)/λ_i. The
  preconditioned top eigenvalue is λ_new = λ_1^(1−α)·λ_{q+1}^α, the batch size m = min(⌊β/λ_new⌋ + 1, m_mem)
  with β = max k(x, x) = 1, and the step η = m/β below that critical size, else 0.99·2m/(β + (m − 1)·λ_new).
  The number of directions q is the largest (up to 160) whose critical batch fits the memory budget.
* **EigenPro 3** (``centers`` a number p < n or an array, Abedsoltan, Belkin & Pandit 2023): the model keeps p
  centres z_j and learns from all n points by projected preconditioned steps, f ← Π(f − η·P·∇L(f)), where Π
  projects onto the centres' span (solving K(Z, Z)·θ = h for a function's values h at the centres). Here the
  data preconditioner acts on the *projected* gradient, Π·P·Π: with u = K(Z, Z)⁻¹·K(Z, X_B)·g,

      w ← w − (η/m)·(u − K(Z, Z)⁻¹·K(Z, X_S)·E·diag(D)·Eᵀ·K(X_S, Z)·u).

  Π·P·Π is positive definite on the span, so the fixed point is exactly the least-squares fit
  min‖K(X, Z)·w − Y‖ wherever the subsample S lies (applying P before projecting, as in the paper's code,
  biases the fixed point unless S lies in the span; the two agree when it does). S is drawn from the centres
  when they are training points (``centers=p``), from the training points when centres are given as an array;
  batch and step size follow the EigenPro 2 rules for the data. *Choice made here:* projections are solved
  exactly, through a float64 Cholesky factor of K(Z, Z) computed once (a tiny diagonal jitter is added only if
  the factorisation fails, e.g. for duplicate centres), instead of the paper's inner EigenPro iterations: two
  solves of 2p² operations per output and batch and p²·8 bytes of memory, which is cheap for the compact models
  (p up to ~20 000) this mode exists for; a clear error names the memory needed when p is too large.

**Precomputed mode** (``precompute``, on by default when it fits the memory budget). The blocked iteration
recomputes kernel tiles in every product, so each epoch costs n·p·features multiply-adds (n·p kernel entries for p
centres); yet the kernel matrix does not change between epochs. When the matrices fit the budget, they are formed
once at set-up instead: K(X, Z) (n × p float32; K(X, X) for EigenPro 2) and, with validation data, K(X_val, Z)
(n_val × p), with the numerics of the blocked products (:func:`speechkern.kernels.squared_distances` then the
kernel's elementwise transform). A batch's residual is then a row gather of K and one product with the weights (for
EigenPro 2 the batch's columns at the subsample, k_bs, are taken from the same rows), the end-of-epoch training
check uses rows of K, and the validation loss is one product with K(X_val, Z): an epoch costs n·p·outputs
multiply-adds and one pass over K in memory instead of n·p·features multiply-adds. The squared distances, which do
not depend on (γ, σ), come from the process-wide cache of :mod:`speechkern.kernels`, so consecutive fits on the
same data (the subband models, the autotune evaluations on one subsample) compute the distance product once; the
float64 distances of the preconditioner's subsample are shared the same way whenever the kernel matrices fit the
budget (the eigensystem is unchanged bit for bit). Memory accounting: the fit needs K and the validation matrix,
plus the larger of the per-batch transients (gathered rows of K and their subsample columns, for max(batch,
training-check) rows) and the set-up transients (augmented copies of the points for the distance product), plus the
centres' Cholesky factors for EigenPro 3; it must fit ``memory_budget_gb`` (default a quarter of the available
memory). A newly computed distance matrix is kept in the cache only if the cache then stays within what the budget
has left over; otherwise it is turned into kernel values in place, so a fit never holds a distance matrix and its
kernel matrix at once unless the budget allows both. ``"auto"`` falls back to the blocked products when the
matrices do not fit; ``True`` raises an error naming the bytes needed. Batch, step size and preconditioner are
chosen identically in both modes, so they agree to float32 rounding. On the CPU the gathered products run on the
kernel module's worker threads (each with one torch thread) and the rest of a precomputed epoch, many small
operations, on one thread: on a busy machine torch's thread team made those small operations the dearest part of
the epoch.

Each epoch visits every training point once. After each epoch the training loss of the weights is measured on
a fixed random subset of the training points (n/20 of them, 100 to 1000: a few per cent of an epoch's work),
and the validation loss on ``X_val``/``Y_val`` when given; the *progressive* loss (each batch's residual just
before its own update, free to compute) is recorded too. Early stopping watches the validation loss, or the
training loss when no validation set is given, stops after ``patience`` epochs without a relative improvement
of ``tol``, and keeps the best weights. Divergence (a non-finite residual, a batch residual 10⁴ times the
targets' mean square, an epoch's progressive loss ten times the previous one's, or a training loss ten times
the targets' mean square) is never silent: the step size is halved, training restarts from the best weights so
far (the zero model before any epoch succeeded), a warning is logged, and after ``max_restarts`` such restarts
:class:`DivergenceError` is raised.

Models are saved without pickle: :meth:`EigenProRegressor.save` writes one safetensors file whose header carries
the JSON configuration; :meth:`~EigenProRegressor.to_state` and :meth:`~EigenProRegressor.from_state` give the
tensors and the JSON-able configuration separately (with a key prefix) for containers that hold several models.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from speechkern import progress
from speechkern.device import resolve_device
from speechkern.errors import SpeechkernError
from speechkern.kernels import (
    ContentKey,
    ExponentialPowerKernel,
    available_memory_bytes,
    cached_squared_distances,
    content_key,
    gathered_mm,
)
from speechkern.outputs import atomic_write

logger = logging.getLogger(__name__)

FORMAT = "speechkern.eigenpro"
FORMAT_VERSION = 1
METADATA_KEY = "speechkern"  # safetensors header key that holds the JSON configuration

MAX_COMPONENTS = 160  # default cap on q, as in the EigenPro 2 reference
DAMPING = 0.95  # α of the preconditioner, as in the EigenPro 2 reference
# Divergence tests: a batch whose mean squared residual exceeds this multiple of mean(Y²), or an epoch loss this
# many times the previous epoch's. Both are far outside what a stable iteration produces.
BATCH_EXPLOSION = 1e4
EPOCH_EXPLOSION = 10.0
# Eigenvalues below this fraction of the top one are numerical noise, not a usable preconditioner tail.
EIGENVALUE_FLOOR = 1e-10
# The training loss after each epoch is measured on this many training points (n/20, within these bounds).
TRAIN_CHECK_MIN = 100
TRAIN_CHECK_MAX = 1000
PROGRESS_INTERVAL_S = 2.0  # report progress within an epoch at most this often
# Subsample size up to which the eigensolver runs on one thread: threaded LAPACK gained < 2× on an idle 2-core
# machine and was 30× slower on a busy one (s = 2000: 1.3 s on one thread, 40 s on two under a load of 4).
SMALL_EIGENPROBLEM = 4096
SMALL_PROBLEM_WORK = 4_000_000  # kernel entries per epoch up to which training runs on one thread


class DivergenceError(SpeechkernError):
    """The EigenPro iteration diverged even after repeated step-size halving."""


def default_subsample_size(n: int) -> int:
    """s of SPEC §6: min(n, 2000) below 100 000 points, else 12 000."""
    return min(n, 2000) if n < 100_000 else min(n, 12_000)


def train_check_size(n: int) -> int:
    """Number of training points the end-of-epoch training loss is measured on: n/20, within 100 to 1000."""
    return min(n, TRAIN_CHECK_MAX, max(TRAIN_CHECK_MIN, n // 20))


def precomputed_bytes(n: int, p: int, n_val: int, batch: int, s: int, d: int, k: int) -> int:
    """Bytes the precomputed mode needs for n points, p centres, n_val validation points, batches of ``batch``, a
    subsample of s, d features and k outputs (float32): K(X, Z) and K(X_val, Z), plus the larger of the per-batch
    transients (at most the gathered rows of K, their subsample columns and residuals, for the batch or the
    training check, whichever is larger; EigenPro 2 gathers rows in small chunks, so this is an upper bound) and
    the set-up transients (augmented copies of the points for the distance products). A newly computed distance
    matrix kept in the cache comes on top (see ``max_cache_bytes`` in
    :func:`speechkern.kernels.cached_squared_distances`)."""
    matrices = 4 * (n + n_val) * p + 4 * n_val * k
    rows = max(batch, train_check_size(n))
    per_batch = 4 * rows * (p + s + 2 * k)
    setup = 4 * (n + n_val + p) * (d + 2)
    return matrices + max(per_batch, setup)


# ---------------------------------------------------------------------------------------------------------
# The preconditioner


@dataclass
class Preconditioner:
    """Nyström eigensystem of the kernel on a subsample, and the EigenPro step parameters derived from it.

    ``eigenvalues`` (float64, descending) are those of K(X_S, X_S)/s that were computed: q + 1 of them or more.
    ``vectors`` (s × q) are the eigenvectors scaled by 1/√s; ``scale`` (q) is D. Both live on the device in
    float32. ``new_top`` is λ_new, the top eigenvalue after preconditioning (λ_1 when q = 0).
    """

    eigenvalues: np.ndarray
    n_components: int
    vectors: torch.Tensor
    scale: torch.Tensor
    new_top: float

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """E·diag(D)·Eᵀ·v for v (s × outputs)."""
        t = self.vectors.T @ v
        t.mul_(self.scale.unsqueeze(1))
        return self.vectors @ t

    def correction(self, k_bs: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """E·diag(D)·Eᵀ·K(X_S, X_B)·g for ``k_bs`` = K(X_B, X_S) (m × s) and residuals g (m × outputs)."""
        return self.apply(k_bs.T @ g)


def nystrom_eigensystem(
    kernel: ExponentialPowerKernel, X_s: torch.Tensor, n_eig: int, max_cache_bytes: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n_eig`` eigenpairs of K(X_S, X_S)/s in float64, descending (scipy ``eigh`` on that subset only).

    With ``max_cache_bytes`` > 0 the float64 squared distances of the subsample are taken from (or kept in) the
    distance cache of :mod:`speechkern.kernels` within that many bytes: fits on the same subsample with other
    (γ, σ) then skip the distance product; the kernel block is the same bit for bit.
    """
    s = X_s.shape[0]
    n_eig = max(1, min(n_eig, s))
    x64 = X_s.to(torch.float64)
    if max_cache_bytes > 0:
        D, shared = cached_squared_distances(x64, x64, max_cache_bytes=max_cache_bytes)
        k = kernel.from_squared_distances(D, inplace=not shared).cpu().numpy()
    else:
        k = kernel(x64, x64).cpu().numpy()
    k /= s
    # A threaded LAPACK stalls badly on a busy machine (see SMALL_EIGENPROBLEM).
    with threadpool_limits(1 if s <= SMALL_EIGENPROBLEM else None):
        values, vectors = scipy.linalg.eigh(
            k, subset_by_index=[s - n_eig, s - 1], overwrite_a=True, check_finite=False, driver="evr"
        )
    return values[::-1].copy(), vectors[:, ::-1].copy()


def new_top_eigenvalue(eigenvalues: np.ndarray, q: int, damping: float) -> float:
    """λ_new = λ_1^(1−α)·λ_{q+1}^α after flattening the top q directions (λ_1 itself when q = 0)."""
    if q == 0:
        return float(eigenvalues[0])
    return float(eigenvalues[0] ** (1.0 - damping) * eigenvalues[q] ** damping)


def critical_batch_size(beta: float, new_top: float) -> int:
    """⌊β/λ_new⌋ + 1, the largest batch for which the step size still grows linearly."""
    return int(math.floor(beta / new_top)) + 1


def step_size(batch: int, beta: float, new_top: float) -> float:
    """η of EigenPro 2: m/β below the critical batch, else 0.99·2m/(β + (m − 1)·λ_new)."""
    if batch < beta / new_top + 1:
        return batch / beta
    return 0.99 * 2.0 * batch / (beta + (batch - 1) * new_top)


def choose_components(
    eigenvalues: np.ndarray, beta: float, batch_limit: int, damping: float, max_components: int
) -> int:
    """Largest q ≤ ``max_components`` with a usable tail eigenvalue whose critical batch fits ``batch_limit``."""
    q_best = 0
    for q in range(1, min(max_components, len(eigenvalues) - 1) + 1):
        if not eigenvalues[q] > EIGENVALUE_FLOOR * eigenvalues[0]:
            break
        if critical_batch_size(beta, new_top_eigenvalue(eigenvalues, q, damping)) > batch_limit:
            break
        q_best = q
    return q_best


def build_preconditioner(
    eigenvalues: np.ndarray, eigenvectors: np.ndarray, q: int, damping: float, device: torch.device
) -> Preconditioner:
    """The EigenPro preconditioner on the top ``q`` directions of a Nyström eigensystem."""
    s = eigenvectors.shape[0]
    lam = eigenvalues[:q]
    tail = eigenvalues[q] if q < len(eigenvalues) else eigenvalues[-1]
    scale = (1.0 - (tail / lam) ** damping) / lam if q else np.zeros(0)
    vectors = eigenvectors[:, :q] / math.sqrt(s)
    return Preconditioner(
        eigenvalues=eigenvalues,
        n_components=q,
        vectors=torch.from_numpy(vectors.astype(np.float32)).to(device),
        scale=torch.from_numpy(scale.astype(np.float32)).to(device),
        new_top=new_top_eigenvalue(eigenvalues, q, damping),
    )


# ---------------------------------------------------------------------------------------------------------
# The two iterations


class _Diverged(Exception):
    """Internal signal: the current epoch diverged."""


class _BlockedModel:
    """What both blocked iterations share: predictions by blocked kernel products, and the fitted result."""

    def predict_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Predictions of the current weights at the training points ``rows``."""
        return self.kernel.mm(self.X[rows], self.centers, self.weights)

    def predict_val(self, X_val: torch.Tensor) -> torch.Tensor:
        """Predictions of the current weights at the validation points."""
        return self.kernel.mm(X_val, self.centers, self.weights)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(centres, weights) of the fitted model, rows matching."""
        return self.centers, self.weights


class _AllPointsModel(_BlockedModel):
    """EigenPro 2 state: every training point is a centre; the subsample S is the first s points."""

    def __init__(self, kernel, X, Y, s, precond, block_size):
        self.kernel, self.X, self.Y, self.s, self.precond = kernel, X, Y, s, precond
        self.block_size = block_size
        self.centers = X
        self.weights = torch.zeros(X.shape[0], Y.shape[1], dtype=torch.float32, device=X.device)
        # The points' shifts and augmented copies are computed once, not once per batch.
        self.subsample = kernel.prepare(X[:s])
        self.rest = kernel.prepare(X[s:])

    def residual(self, idx: torch.Tensor) -> tuple[torch.Tensor, Any]:
        xb = self.X[idx]
        k_bs = self.kernel(xb, self.subsample)
        pred = k_bs @ self.weights[: self.s]
        if self.rest.size:
            pred += self.kernel.mm(xb, self.rest, self.weights[self.s :], block_size=self.block_size)
        return pred.sub_(self.Y[idx]), k_bs

    def update(self, idx: torch.Tensor, g: torch.Tensor, k_bs: torch.Tensor, lr: float) -> None:
        self.weights.index_add_(0, idx, g, alpha=-lr)
        if self.precond.n_components:
            self.weights[: self.s].add_(self.precond.correction(k_bs, g), alpha=lr)


class _PrecomputedAllPointsModel:
    """EigenPro 2 on a precomputed K(X, X) and K(X_val, X), whose rows and columns follow the caller's point order.

    ``X``/``Y`` and the batch indices are in the permuted order of the blocked model (subsample first), so the
    iteration visits the same batches; ``order`` maps those positions to rows of K. The weights are kept in the
    order of K's columns and permuted back by :meth:`result`.
    """

    def __init__(self, X, Y, order, s, precond, k_xx, k_val, workers):
        self.X, self.Y, self.s, self.precond = X, Y, s, precond
        self.centers = X
        self.order = order
        self.subsample = order[:s]
        self.k, self.k_val, self.workers = k_xx, k_val, workers
        self.weights = torch.zeros(X.shape[0], Y.shape[1], dtype=torch.float32, device=X.device)

    def residual(self, idx: torch.Tensor) -> tuple[torch.Tensor, Any]:
        rows = self.order[idx]
        columns = self.subsample if self.precond.n_components else None
        pred, k_bs = gathered_mm(self.k, self.weights, rows, columns, workers=self.workers)
        return pred.sub_(self.Y[idx]), (rows, k_bs)

    def update(self, idx: torch.Tensor, g: torch.Tensor, cache: Any, lr: float) -> None:
        rows, k_bs = cache
        self.weights.index_add_(0, rows, g, alpha=-lr)
        if k_bs is not None:
            self.weights.index_add_(0, self.subsample, self.precond.correction(k_bs, g), alpha=lr)

    def predict_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return gathered_mm(self.k, self.weights, self.order[rows], workers=self.workers)[0]

    def predict_val(self, X_val: torch.Tensor) -> torch.Tensor:
        return gathered_mm(self.k_val, self.weights, workers=self.workers)[0]

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.centers, self.weights.index_select(0, self.order)


class _CentresModel(_BlockedModel):
    """EigenPro 3 state: p centres Z; projections onto their span through the Cholesky factor of K(Z, Z).

    One step: u = K(Z, Z)⁻¹·K(Z, X_B)·g is the batch gradient projected onto the centres' span; the data
    preconditioner acts on that projected gradient through its values at the subsample, v = K(X_S, Z)·u, and its
    correction K(Z, X_S)·E·diag(D)·Eᵀ·v is projected back the same way. The preconditioner is thus Π·P·Π, which
    is positive definite on the span, so the fixed point is exactly the least-squares fit wherever S lies.
    """

    def __init__(self, kernel, X, Y, Z, precond, chol, k_zs, dense_batch, block_size):
        self.kernel, self.X, self.Y, self.precond = kernel, X, Y, precond
        self.centers, self.chol, self.k_zs = Z, chol, k_zs
        self.dense_batch, self.block_size = dense_batch, block_size
        self.weights = torch.zeros(Z.shape[0], Y.shape[1], dtype=torch.float32, device=X.device)
        self.prepared_centers = kernel.prepare(Z)

    def residual(self, idx: torch.Tensor) -> tuple[torch.Tensor, Any]:
        xb = self.X[idx]
        if self.dense_batch:  # one kernel evaluation serves both the residual and the gradient at the centres
            k_bz = self.kernel(xb, self.prepared_centers)
            pred = k_bz @ self.weights
        else:
            k_bz = None
            pred = self.kernel.mm(xb, self.prepared_centers, self.weights, block_size=self.block_size)
        return pred.sub_(self.Y[idx]), (xb, k_bz)

    def update(self, idx: torch.Tensor, g: torch.Tensor, cache: Any, lr: float) -> None:
        xb, k_bz = cache
        h = k_bz.T @ g if k_bz is not None else self.kernel.mm(self.centers, xb, g, block_size=self.block_size)
        u = torch.cholesky_solve(h.to(torch.float64), self.chol)
        if self.precond.n_components:
            c = self.precond.apply(self.k_zs.T @ u.to(torch.float32))
            u -= torch.cholesky_solve((self.k_zs @ c).to(torch.float64), self.chol)
        self.weights.sub_(u.to(torch.float32), alpha=lr)


class _PrecomputedCentresModel(_CentresModel):
    """EigenPro 3 on a precomputed K(X, Z) (n × p) and K(X_val, Z): a batch's kernel rows are gathered, not
    recomputed, and serve both its residual and its gradient at the centres."""

    def __init__(self, kernel, X, Y, Z, precond, chol, k_zs, k_xz, k_val, workers):
        super().__init__(kernel, X, Y, Z, precond, chol, k_zs, True, None)
        self.k, self.k_val, self.workers = k_xz, k_val, workers

    def residual(self, idx: torch.Tensor) -> tuple[torch.Tensor, Any]:
        k_bz = self.k.index_select(0, idx)  # kept whole: the update needs K(X_B, Z)ᵀ·g
        return (k_bz @ self.weights).sub_(self.Y[idx]), (None, k_bz)

    def predict_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return gathered_mm(self.k, self.weights, rows, workers=self.workers)[0]

    def predict_val(self, X_val: torch.Tensor) -> torch.Tensor:
        return gathered_mm(self.k_val, self.weights, workers=self.workers)[0]


# ---------------------------------------------------------------------------------------------------------
# The estimator


class EigenProRegressor(RegressorMixin, BaseEstimator):
    """Kernel regression with the exponential power kernel, trained by EigenPro 2 or EigenPro 3.

    Parameters
    ----------
    shape, bandwidth:
        Kernel shape γ ∈ (0, 2] and bandwidth σ > 0: k(x, z) = exp(−‖x − z‖^γ/σ).
    centers:
        None: every training point is a centre (EigenPro 2). An int p: p training points drawn at random (with
        ``seed``) are the centres (EigenPro 3; p ≥ n falls back to all points). An array (p × features): those
        centres (EigenPro 3).
    subsample_size:
        s, the Nyström subsample for the preconditioner; default min(n, 2000) below 100 000 points, else 12 000
        (with ``centers=p``, also at most p).
    n_components:
        q, the number of top eigen-directions the preconditioner flattens; default: the largest q ≤ 160 whose
        critical batch fits the memory budget. 0 gives the plain, unpreconditioned iteration.
    epochs:
        Maximum number of passes over the training data.
    patience:
        Stop after this many epochs without improvement (None: never stop early; best weights are still kept).
    tol:
        Relative improvement of the monitored loss that counts as progress.
    batch_size:
        Override the automatic batch size (the step size follows the EigenPro 2 rule for this size).
    device:
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    backend:
        Kernel backend for K·W products: ``"auto"``, ``"torch"`` or ``"keops"``.
    memory_budget_gb:
        Memory the batch blocks (and the centres' Cholesky factor, and the precomputed kernel matrices) may use,
        in GiB; default a quarter of the device's available memory.
    precompute:
        ``"auto"`` (default): form the kernel matrices K(X, centres) and K(X_val, centres) once at set-up when
        they fit the memory budget (see the module notes), else compute kernel tiles in every product (the
        blocked mode). ``True``: require the precomputed mode (a :class:`~speechkern.errors.SpeechkernError`
        naming the bytes needed when it does not fit). ``False``: always the blocked mode. Both give the same
        results to float32 rounding; the precomputed mode is many times faster per epoch.
    damping:
        α of the preconditioner (0.95 as in the reference).
    max_restarts:
        How many times divergence may halve the step size before :class:`DivergenceError` is raised.
    max_seconds:
        Stop after the epoch during which training (set-up included) has run this long (None: no limit).
    progress_task:
        Name of the progress bar this model reports to (e.g. ``"kernel/band-2"``).
    seed:
        Seeds the subsample, the centres and the batch order.

    Attributes
    ----------
    centers_, weights_:
        Float32 tensors (p × features) and (p × outputs) on the training device; f(x) = K(x, centers_)·weights_.
    kernel_:
        The :class:`~speechkern.kernels.ExponentialPowerKernel` used.
    history_:
        One dict per epoch: epoch, train_mse (of the end-of-epoch weights, on a fixed random subset of n/20
        training points, 100 to 1000), val_mse (None without validation data), progressive_mse (each batch's
        residual just before its own update, averaged over the epoch), seconds (wall time of the epoch and its
        evaluations), step_size.
    precomputed_:
        Whether the kernel matrices were precomputed (True) or the blocked products were used (False).
    best_epoch_, batch_size_, step_size_, n_components_, eigenvalues_, subsample_size_, restarts_,
    n_features_in_, n_outputs_, y_ndim_.
    """

    def __init__(
        self,
        shape: float = 1.0,
        bandwidth: float = 1.0,
        *,
        centers: int | np.ndarray | None = None,
        subsample_size: int | None = None,
        n_components: int | None = None,
        epochs: int = 10,
        patience: int | None = 2,
        tol: float = 1e-4,
        batch_size: int | None = None,
        device: str = "auto",
        backend: str = "auto",
        memory_budget_gb: float | None = None,
        precompute: bool | str = "auto",
        damping: float = DAMPING,
        max_restarts: int = 3,
        max_seconds: float | None = None,
        progress_task: str = "eigenpro",
        seed: int = 0,
    ) -> None:
        self.shape = shape
        self.bandwidth = bandwidth
        self.centers = centers
        self.subsample_size = subsample_size
        self.n_components = n_components
        self.epochs = epochs
        self.patience = patience
        self.tol = tol
        self.batch_size = batch_size
        self.device = device
        self.backend = backend
        self.memory_budget_gb = memory_budget_gb
        self.precompute = precompute
        self.damping = damping
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.progress_task = progress_task
        self.seed = seed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    # ------------------------------------------------------------------------------------------------------
    # Fitting

    def fit(self, X: Any, y: Any, X_val: Any = None, Y_val: Any = None) -> EigenProRegressor:
        """Train on X (n × features) and y (n,) or (n × outputs); monitor X_val/Y_val when given."""
        X, y = validate_data(self, _to_numpy(X), _to_numpy(y), multi_output=True, y_numeric=True, dtype=_DTYPES)
        self._check_params()
        y = np.asarray(y)
        self.y_ndim_ = 1 if y.ndim == 1 else 2
        Y = y.reshape(y.shape[0], -1)
        self.n_outputs_ = Y.shape[1]
        n, d = X.shape

        val = None
        if (X_val is None) != (Y_val is None):
            raise SpeechkernError("validation data: give both X_val and Y_val, or neither")
        if X_val is not None:
            Xv = check_array(_to_numpy(X_val), dtype=_DTYPES)
            Yv = np.asarray(check_array(_to_numpy(Y_val), dtype=_DTYPES, ensure_2d=False))
            if Yv.shape[0] != Xv.shape[0]:
                raise SpeechkernError(f"X_val has {Xv.shape[0]} rows but Y_val has {Yv.shape[0]}; expected the same")
            Yv = Yv.reshape(Xv.shape[0], -1)
            if Xv.shape[1] != d:
                raise SpeechkernError(f"X_val has {Xv.shape[1]} features; the training data has {d}")
            if Yv.shape[1] != self.n_outputs_:
                raise SpeechkernError(f"Y_val has {Yv.shape[1]} outputs; the training targets have {self.n_outputs_}")
            val = (Xv, Yv)

        device = resolve_device(self.device)
        budget = self._budget_bytes(device)
        self.kernel_ = ExponentialPowerKernel(self.shape, self.bandwidth, self.backend)
        rng = np.random.default_rng(self.seed)
        start = time.perf_counter()
        centres = n if self.centers is None or isinstance(self.centers, (int, np.integer)) else len(self.centers)
        with torch.no_grad(), _small_problem_threads(device, n * min(n, int(centres))):
            val_np = None if val is None else tuple(_writable32(a) for a in val)
            model = self._setup(_writable32(X), _writable32(Y), rng, device, budget, val_np)
            val_t = None
            if val_np is not None:
                val_t = tuple(torch.from_numpy(a).to(device) for a in val_np)
            # Precomputed epochs are many small operations around a few large gathered products that run on the
            # model's own worker threads; torch's thread team would only slow the small ones on a busy machine.
            with _small_problem_threads(device, 0) if self.precomputed_ else nullcontext():
                self._train(model, n, rng, val_t, start)
        total = time.perf_counter() - start
        best = self.history_[self.best_epoch_ - 1] if self.best_epoch_ else None
        logger.info(
            "%s: %d epochs in %.1f s; best epoch %d (train mse %.4g, val mse %s); %d centres, batch %d, step %.4g, "
            "%d components%s",
            self.progress_task,
            len(self.history_),
            total,
            self.best_epoch_,
            best["train_mse"] if best else float("nan"),
            f"{best['val_mse']:.4g}" if best and best["val_mse"] is not None else "n/a",
            self.centers_.shape[0],
            self.batch_size_,
            self.step_size_,
            self.n_components_,
            f", {self.restarts_} restarts after divergence" if self.restarts_ else "",
        )
        return self

    def _check_params(self) -> None:
        def positive_int(name: str, value: Any, allow_none: bool = False, allow_zero: bool = False) -> None:
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if allow_zero else 1):
                kind = "a non-negative" if allow_zero else "a positive"
                raise SpeechkernError(f"{name}={value!r}: expected {kind} integer{' or None' if allow_none else ''}")

        positive_int("epochs", self.epochs)
        positive_int("patience", self.patience, allow_none=True)
        positive_int("subsample_size", self.subsample_size, allow_none=True)
        positive_int("n_components", self.n_components, allow_none=True, allow_zero=True)
        positive_int("batch_size", self.batch_size, allow_none=True)
        positive_int("max_restarts", self.max_restarts, allow_zero=True)
        if not (0.0 < float(self.damping) <= 1.0):
            raise SpeechkernError(f"damping={self.damping!r}: expected 0 < α ≤ 1")
        if not (float(self.tol) >= 0.0):
            raise SpeechkernError(f"tol={self.tol!r}: expected a number ≥ 0")
        if self.max_seconds is not None and not float(self.max_seconds) > 0:
            raise SpeechkernError(f"max_seconds={self.max_seconds!r}: expected a positive number of seconds or None")
        if self.memory_budget_gb is not None and not float(self.memory_budget_gb) > 0:
            raise SpeechkernError(f"memory_budget_gb={self.memory_budget_gb!r}: expected a positive number of GiB")
        if not (
            isinstance(self.precompute, (bool, np.bool_))
            or (isinstance(self.precompute, str) and self.precompute == "auto")
        ):
            raise SpeechkernError(f"precompute={self.precompute!r}: expected True, False or 'auto'")

    def _budget_bytes(self, device: torch.device) -> int:
        if self.memory_budget_gb is not None:
            return int(float(self.memory_budget_gb) * (1 << 30))
        return available_memory_bytes(device) // 4

    def _setup(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        rng: np.random.Generator,
        device: torch.device,
        budget: int,
        val: tuple[np.ndarray, np.ndarray] | None,
    ):
        """Choose centres and subsample, compute the eigensystem, batch and step size, and the kernel matrices in
        the precomputed mode; return the state."""
        n, d = X.shape
        n_val = 0 if val is None else val[0].shape[0]
        k = Y.shape[1]
        kernel = self.kernel_
        beta = kernel.max_diagonal
        centers = self.centers
        centre_idx: np.ndarray | None = None
        Z_np: np.ndarray | None = None
        if centers is None:
            pass
        elif isinstance(centers, (int, np.integer)) and not isinstance(centers, bool):
            if centers < 1:
                raise SpeechkernError(f"centers={centers}: expected a positive number of centres")
            if centers < n:
                centre_idx = rng.choice(n, size=int(centers), replace=False)
            else:
                logger.info("%s: %d centres requested for %d points: using every point", self.progress_task, centers, n)
        else:
            Z_np = check_array(_to_numpy(centers), dtype=_DTYPES).astype(np.float32)
            if Z_np.shape[1] != d:
                raise SpeechkernError(f"centers has {Z_np.shape[1]} features; the training data has {d}")

        X_t = torch.from_numpy(X).to(device)
        Y_t = torch.from_numpy(Y).to(device)
        block = None
        if self.memory_budget_gb is not None:
            block = max(1, budget // 8)  # a kernel tile never exceeds the budget

        if centre_idx is None and Z_np is None:
            # EigenPro 2: permute the points so that the subsample S is the first s of them.
            s = min(self.subsample_size or default_subsample_size(n), n)
            order = rng.permutation(n)
            X_in, order_t = X_t, torch.from_numpy(order).to(device)
            X_t, Y_t = X_t[order_t], Y_t[order_t]
            X_s = X_t[:s]
            per_row = 4 * (s + d + 3 * k)
            nystrom_cache = self._nystrom_cache_bytes(n, n, n_val, s, budget)
            precond, batch = self._preconditioner(X_s, n, beta, budget // per_row, device, nystrom_cache)
            spare = self._precompute_spare(precomputed_bytes(n, n, n_val, batch, s, d, k), budget)
            if spare is None:
                model = _AllPointsModel(kernel, X_t, Y_t, s, precond, block)
            else:
                # K in the caller's point order, so that fits on the same data share the cached distances.
                x_key = content_key(X, device)
                k_xx = self._precomputed_matrix(X_in, X_in, x_key, x_key, spare)
                k_val = None
                if val is not None:
                    X_val = torch.from_numpy(val[0]).to(device)
                    k_val = self._precomputed_matrix(X_val, X_in, content_key(val[0], device), x_key, spare)
                model = _PrecomputedAllPointsModel(X_t, Y_t, order_t, s, precond, k_xx, k_val, _workers(device))
        else:
            if centre_idx is not None:
                # Centres drawn from the data: the subsample is drawn from the centres, so K(Z, X_S) is a block of
                # K(Z, Z) and the preconditioner's eigenfunctions lie in the centres' span.
                p = len(centre_idx)
                s = min(self.subsample_size or default_subsample_size(n), p)
                centre_idx = centre_idx[rng.permutation(p)]
                Z = X_t[torch.from_numpy(centre_idx).to(device)]
                X_s, s_in_z = Z[:s], True
            else:
                p = Z_np.shape[0]
                Z = torch.from_numpy(np.ascontiguousarray(Z_np)).to(device)
                s = min(self.subsample_size or default_subsample_size(n), n)
                X_s, s_in_z = X_t[torch.from_numpy(rng.choice(n, size=s, replace=False)).to(device)], False
            chol_bytes = 2 * 8 * p * p
            if chol_bytes > budget:
                raise SpeechkernError(
                    f"centers: the exact projection onto {p} centres needs {chol_bytes / 2**30:.1f} GiB "
                    f"(two {p}×{p} float64 matrices) but the memory budget is {budget / 2**30:.1f} GiB; "
                    "use fewer centres or raise memory_budget_gb"
                )
            # K(X_B, Z) is kept whole when it fits (one kernel evaluation per batch instead of two).
            left = budget - chol_bytes
            nystrom_cache = self._nystrom_cache_bytes(n, p, n_val, s, left)
            precond, batch = self._preconditioner(
                X_s, n, beta, max(1, left // (4 * (d + 3 * k))), device, nystrom_cache
            )
            dense_batch = 4 * batch * (p + d + 3 * k) <= left
            z64 = Z.to(torch.float64)
            k_zz = kernel(z64, z64)
            chol = _cholesky_with_jitter(k_zz)
            k_zs = (k_zz[:, :s] if s_in_z else kernel(z64, X_s.to(torch.float64))).to(torch.float32)
            del k_zz
            spare = self._precompute_spare(chol_bytes + precomputed_bytes(n, p, n_val, batch, s, d, k), budget)
            if spare is None:
                model = _CentresModel(kernel, X_t, Y_t, Z, precond, chol, k_zs, dense_batch, block)
            else:
                z_key = content_key(Z)
                k_xz = self._precomputed_matrix(X_t, Z, content_key(X, device), z_key, spare)
                k_val = None
                if val is not None:
                    X_val = torch.from_numpy(val[0]).to(device)
                    k_val = self._precomputed_matrix(X_val, Z, content_key(val[0], device), z_key, spare)
                model = _PrecomputedCentresModel(
                    kernel, X_t, Y_t, Z, precond, chol, k_zs, k_xz, k_val, _workers(device)
                )

        self.precomputed_ = spare is not None
        self.subsample_size_ = int(X_s.shape[0])
        self.n_components_ = precond.n_components
        self.eigenvalues_ = precond.eigenvalues[: precond.n_components + 1].copy()
        self.batch_size_ = batch
        self.step_size_ = step_size(batch, beta, precond.new_top)
        self.centers_ = model.centers
        logger.info(
            "%s: %d points, %d centres, subsample %d, %d components (λ1 %.4g, λ_new %.4g), batch %d, step %.4g, %s",
            self.progress_task,
            n,
            model.centers.shape[0],
            self.subsample_size_,
            self.n_components_,
            precond.eigenvalues[0],
            precond.new_top,
            batch,
            self.step_size_,
            "precomputed kernel matrices" if self.precomputed_ else "blocked kernel products",
        )
        return model

    def _nystrom_cache_bytes(self, n: int, p: int, n_val: int, s: int, budget: int) -> int:
        """How many bytes the distance cache may hold after keeping the subsample's float64 distances: 0 (do not
        keep them) in the blocked mode and wherever the kernel matrices cannot fit the budget (the precomputed mode
        is then out of reach, and a large subsample's distances would only take memory), else the budget left over
        by the kernel matrices and the subsample's own kernel block."""
        if self.precompute is False or self.precompute is np.False_:
            return 0
        spare = budget - 4 * (n + n_val) * p - 8 * s * s
        return max(0, spare)

    def _precompute_spare(self, needed: int, budget: int) -> int | None:
        """None for the blocked mode; else the bytes the distance cache may hold (the budget left over by the
        precomputed mode's ``needed`` bytes). Raises when ``precompute=True`` and ``needed`` exceeds the budget."""
        if self.precompute is False or self.precompute is np.False_:
            return None
        if needed <= budget:
            return budget - needed
        if isinstance(self.precompute, str):  # "auto"
            logger.info(
                "%s: precomputed kernel matrices need %.2f GiB, over the memory budget of %.2f GiB: blocked products",
                self.progress_task,
                needed / 2**30,
                budget / 2**30,
            )
            return None
        raise SpeechkernError(
            f"precompute=True: the precomputed kernel matrices need {needed} bytes ({needed / 2**30:.2f} GiB: the "
            "float32 kernel matrices of the training and validation points against the centres, the batch rows "
            f"and the set-up buffers) but the memory budget is {budget} bytes ({budget / 2**30:.2f} GiB); raise "
            "memory_budget_gb, use fewer points or centres, or set precompute='auto' to fall back to blocked "
            "products"
        )

    def _precomputed_matrix(self, X: torch.Tensor, Z: torch.Tensor, x_key: ContentKey, z_key: ContentKey, spare: int):
        """K(X, Z) as a float32 matrix: the squared distances come from the shared cache (and are kept there if the
        cache can hold them within ``spare`` bytes), and are turned into kernel values in a copy when shared, in
        place otherwise (so that no second matrix is held when memory is tight)."""
        D, shared = cached_squared_distances(X, Z, max_cache_bytes=spare, x_key=x_key, z_key=z_key)
        return self.kernel_.from_squared_distances(D, inplace=not shared)

    def _preconditioner(
        self, X_s: torch.Tensor, n: int, beta: float, batch_limit: int, device: torch.device, cache_bytes: int = 0
    ) -> tuple[Preconditioner, int]:
        """Eigensystem on the subsample, q within the memory limit, and the batch size."""
        s = X_s.shape[0]
        batch_limit = max(1, int(batch_limit))
        max_q = MAX_COMPONENTS if self.n_components is None else int(self.n_components)
        max_q = min(max_q, s - 1)
        values, vectors = nystrom_eigensystem(self.kernel_, X_s, max_q + 1, cache_bytes)
        if self.n_components is None:
            q = choose_components(values, beta, batch_limit, self.damping, max_q)
        else:
            q = max_q
            while q > 0 and not values[q] > EIGENVALUE_FLOOR * values[0]:
                q -= 1
            if q < int(self.n_components):
                logger.warning(
                    "%s: n_components=%d reduced to %d (subsample of %d points, eigenvalues beyond are negligible)",
                    self.progress_task,
                    self.n_components,
                    q,
                    s,
                )
        precond = build_preconditioner(values, vectors, q, self.damping, device)
        if self.batch_size is not None:
            batch = min(int(self.batch_size), n)
        else:
            batch = min(critical_batch_size(beta, precond.new_top), batch_limit, n)
        return precond, max(1, batch)

    def _train(
        self, model, n: int, rng: np.random.Generator, val: tuple[torch.Tensor, torch.Tensor] | None, start: float
    ) -> None:
        """Epochs with early stopping, best-weight tracking and divergence handling."""
        y_scale = float(model.Y.square().mean()) if model.Y.numel() else 0.0
        # The training loss of the weights themselves, on a fixed random subset of the training points: it judges
        # the end-of-epoch weights (the progressive loss judges the weights during the epoch, which can look sane
        # while the last step has just diverged).
        check = torch.from_numpy(rng.choice(n, size=train_check_size(n), replace=False))
        check = check.to(model.X.device)
        y_check = model.Y[check]
        batch = self.batch_size_
        eta = self.step_size_
        best_loss = math.inf
        best_weights = model.weights.clone()  # zeros until an epoch succeeds
        self.history_: list[dict[str, Any]] = []
        self.best_epoch_ = 0
        self.restarts_ = 0
        epoch, waited = 0, 0
        previous = y_scale  # the loss of the zero model we start from
        task = self.progress_task
        while epoch < self.epochs:
            epoch += 1
            started = time.perf_counter()
            try:
                progressive = self._epoch(model, n, batch, eta / batch, rng, y_scale, epoch, started)
                if progressive > EPOCH_EXPLOSION * previous:
                    raise _Diverged(f"epoch loss {progressive:.4g} after {previous:.4g}")
                train_mse = _mse(model.predict_rows(check), y_check)
                if not train_mse <= EPOCH_EXPLOSION * max(y_scale, best_loss if math.isfinite(best_loss) else 0.0):
                    raise _Diverged(f"training loss {train_mse:.4g}, targets' mean square {y_scale:.4g}")
                val_mse = None
                if val is not None:
                    val_mse = _mse(model.predict_val(val[0]), val[1])
                    if not math.isfinite(val_mse):
                        raise _Diverged(f"validation loss {val_mse}")
            except _Diverged as why:
                self.restarts_ += 1
                if self.restarts_ > self.max_restarts:
                    raise DivergenceError(
                        f"{task}: EigenPro diverged ({why}) even after halving the step size {self.max_restarts} "
                        f"times (step {eta:.4g}, batch {batch}); check the features for outliers or try a larger "
                        "bandwidth or a smaller batch_size"
                    ) from None
                eta /= 2.0
                logger.warning(
                    "%s: EigenPro diverged in epoch %d (%s); halving the step size to %.4g and restarting from the "
                    "best weights (epoch %d)",
                    task,
                    epoch,
                    why,
                    eta,
                    self.best_epoch_,
                )
                model.weights.copy_(best_weights)
                epoch -= 1
                continue
            seconds = time.perf_counter() - started
            self.history_.append(
                {
                    "epoch": epoch,
                    "train_mse": train_mse,
                    "val_mse": val_mse,
                    "progressive_mse": progressive,
                    "seconds": seconds,
                    "step_size": eta,
                }
            )
            progress.report(
                task, epoch, self.epochs, task, train_mse=train_mse, val_mse=val_mse, seconds=round(seconds, 2)
            )
            previous = progressive
            monitored = val_mse if val_mse is not None else train_mse
            if monitored < best_loss * (1.0 - float(self.tol)):
                best_loss, waited, self.best_epoch_ = monitored, 0, epoch
                best_weights.copy_(model.weights)
            else:
                waited += 1
                if self.patience is not None and waited >= self.patience:
                    logger.info("%s: stopping early after epoch %d (best epoch %d)", task, epoch, self.best_epoch_)
                    break
            if self.max_seconds is not None and time.perf_counter() - start > float(self.max_seconds):
                logger.info("%s: time limit of %g s reached after epoch %d", task, float(self.max_seconds), epoch)
                break
        progress.report(task, self.epochs, self.epochs, task, done=True)
        self.step_size_ = eta
        if self.best_epoch_:
            model.weights.copy_(best_weights)
        self.centers_, self.weights_ = model.result()

    def _epoch(self, model, n: int, batch: int, lr: float, rng, y_scale: float, epoch: int, started: float) -> float:
        """One pass over the data in random batches; returns the progressive mean squared residual."""
        device = model.X.device
        order = torch.from_numpy(rng.permutation(n)).to(device)
        limit = BATCH_EXPLOSION * max(y_scale, 1e-30)
        total = 0.0
        last_report = time.perf_counter()
        n_batches = -(-n // batch)
        for b, i in enumerate(range(0, n, batch)):
            idx = order[i : i + batch]
            g, cache = model.residual(idx)
            sq = float(g.square().sum())
            batch_mse = sq / max(1, g.numel())
            if not math.isfinite(sq) or batch_mse > limit:
                raise _Diverged(f"batch residual {batch_mse:.4g}, targets' mean square {y_scale:.4g}")
            total += sq
            model.update(idx, g, cache, lr)
            now = time.perf_counter()
            if now - last_report > PROGRESS_INTERVAL_S and b + 1 < n_batches:
                last_report = now
                progress.report(
                    self.progress_task,
                    epoch - 1 + (b + 1) / n_batches,
                    self.epochs,
                    self.progress_task,
                    seconds=round(now - started, 2),
                )
        return total / max(1, n * model.Y.shape[1])

    # ------------------------------------------------------------------------------------------------------
    # Prediction

    def predict(self, X: Any) -> np.ndarray:
        """Predictions (n,) for 1-D training targets, else (n × outputs); float64 for float64 X, else float32."""
        check_is_fitted(self, "weights_")
        X = validate_data(self, _to_numpy(X), reset=False, dtype=_DTYPES)
        out_dtype = X.dtype
        pred = self.predict_tensor(torch.from_numpy(_writable32(X)))
        result = pred.cpu().numpy().astype(out_dtype, copy=False)
        return result[:, 0] if self.y_ndim_ == 1 else result

    def predict_tensor(self, X: torch.Tensor) -> torch.Tensor:
        """K(X, centers_)·weights_ as a float32 tensor (n × outputs) on the model's device; X may be anywhere."""
        check_is_fitted(self, "weights_")
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise SpeechkernError(f"input has shape {tuple(X.shape)}; expected (frames, {self.n_features_in_})")
        with torch.no_grad():
            Xt = X.to(device=self.centers_.device, dtype=torch.float32)
            return self.kernel_.mm(Xt, self.centers_, self.weights_)

    # ------------------------------------------------------------------------------------------------------
    # Persistence

    def to_state(self, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (keys ``prefix + name``, contiguous, on the CPU) and a JSON-able configuration."""
        check_is_fitted(self, "weights_")
        params = self.get_params()
        centers_param = params["centers"]
        if centers_param is not None and not isinstance(centers_param, (int, np.integer)):
            params["centers"] = "array"  # the centres themselves are saved as a tensor
        elif isinstance(centers_param, np.integer):
            params["centers"] = int(centers_param)
        tensors = {
            f"{prefix}centers": self.centers_.detach().to("cpu", torch.float32).contiguous(),
            f"{prefix}weights": self.weights_.detach().to("cpu", torch.float32).contiguous(),
            f"{prefix}eigenvalues": torch.from_numpy(np.ascontiguousarray(self.eigenvalues_, dtype=np.float64)),
        }
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": _package_version(),
            "params": _jsonable(params),
            "kernel": self.kernel_.to_config(),
            "n_features_in": int(self.n_features_in_),
            "n_outputs": int(self.n_outputs_),
            "y_ndim": int(self.y_ndim_),
            "history": _jsonable(self.history_),
            "best_epoch": int(self.best_epoch_),
            "batch_size": int(self.batch_size_),
            "step_size": float(self.step_size_),
            "n_components": int(self.n_components_),
            "subsample_size": int(self.subsample_size_),
            "restarts": int(self.restarts_),
            "precomputed": bool(getattr(self, "precomputed_", False)),
        }
        return tensors, config

    @classmethod
    def from_state(
        cls, tensors: dict[str, torch.Tensor], config: dict[str, Any], prefix: str = "", device: str | None = None
    ) -> EigenProRegressor:
        """A fitted estimator from :meth:`to_state`'s output; tensors go to ``device`` (default ``"auto"``: CUDA when
        available, else the CPU, whatever device the model was trained on)."""
        if config.get("format") != FORMAT:
            raise SpeechkernError(f"model state of format {config.get('format')!r}: expected {FORMAT!r}")
        if int(config.get("format_version", 0)) > FORMAT_VERSION:
            raise SpeechkernError(
                f"model state version {config.get('format_version')} is newer than this speechkern understands "
                f"({FORMAT_VERSION}); upgrade speechkern"
            )
        missing = [name for name in ("centers", "weights", "eigenvalues") if f"{prefix}{name}" not in tensors]
        if missing:
            raise SpeechkernError(f"model state lacks the tensors {', '.join(prefix + m for m in missing)}")
        params = dict(config["params"])
        if params.get("centers") == "array":
            params["centers"] = tensors[f"{prefix}centers"].numpy().copy()
        est = cls(**params)
        dev = resolve_device(device if device is not None else "auto")
        est.kernel_ = ExponentialPowerKernel.from_config(config["kernel"])
        est.centers_ = tensors[f"{prefix}centers"].to(dev, torch.float32).contiguous()
        est.weights_ = tensors[f"{prefix}weights"].to(dev, torch.float32).contiguous()
        est.eigenvalues_ = tensors[f"{prefix}eigenvalues"].numpy().astype(np.float64)
        est.n_features_in_ = int(config["n_features_in"])
        est.n_outputs_ = int(config["n_outputs"])
        est.y_ndim_ = int(config["y_ndim"])
        est.history_ = list(config["history"])
        est.best_epoch_ = int(config["best_epoch"])
        est.batch_size_ = int(config["batch_size"])
        est.step_size_ = float(config["step_size"])
        est.n_components_ = int(config["n_components"])
        est.subsample_size_ = int(config["subsample_size"])
        est.restarts_ = int(config["restarts"])
        est.precomputed_ = bool(config.get("precomputed", False))
        if est.centers_.shape != (est.weights_.shape[0], est.n_features_in_) or est.weights_.shape[1] != est.n_outputs_:
            raise SpeechkernError(
                f"model state is inconsistent: centres {tuple(est.centers_.shape)}, weights "
                f"{tuple(est.weights_.shape)}, {est.n_features_in_} features, {est.n_outputs_} outputs"
            )
        return est

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the model to one safetensors file (JSON configuration in its header), atomically.

        Refuses to replace an existing file unless ``overwrite``. Returns the path written.
        """
        from safetensors.torch import save_file

        path = Path(path)
        if path.exists() and not overwrite:
            raise SpeechkernError(f"{path} exists; pass overwrite=True (or --overwrite) to replace it")
        tensors, config = self.to_state()
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(config)}))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> EigenProRegressor:
        """Read a model written by :meth:`save` (no code from the file is run); ``device`` as in :meth:`from_state`."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise SpeechkernError(f"model file {path} not found")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise SpeechkernError(f"model file {path} is not a readable safetensors file ({exc})") from exc
        if METADATA_KEY not in metadata:
            raise SpeechkernError(f"model file {path} has no speechkern configuration; was it written by save()?")
        return cls.from_state(tensors, json.loads(metadata[METADATA_KEY]), device=device)


# ---------------------------------------------------------------------------------------------------------
# Helpers

_DTYPES = (np.float64, np.float32)


def _to_numpy(a: Any) -> Any:
    """Torch tensors (any device) become NumPy arrays; everything else passes through for sklearn to check."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return a


@contextmanager
def _small_problem_threads(device: torch.device, work: int) -> Iterator[None]:
    """Train tiny problems on one CPU thread: their tensor operations are too small to share between threads,
    and OpenMP teams on a busy 2-core machine made them ~30× slower (the project's features code does the same).
    ``work`` is the number of kernel entries one epoch evaluates."""
    if device.type != "cpu" or work > SMALL_PROBLEM_WORK or torch.get_num_threads() <= 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _workers(device: torch.device) -> int:
    """Worker threads for the precomputed mode's large products: torch's CPU thread count (1 off the CPU)."""
    return max(1, torch.get_num_threads()) if device.type == "cpu" else 1


def _writable32(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous, writable float32 array (copied only when needed): what torch.from_numpy wants."""
    return np.require(a, dtype=np.float32, requirements=["C", "W"])


def _mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred - target).square().mean()) if target.numel() else 0.0


def _cholesky_with_jitter(k: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of a symmetric positive (semi)definite matrix, adding diagonal jitter if needed."""
    scale = float(k.diagonal().mean()) if k.shape[0] else 1.0
    for jitter in (0.0, 1e-12, 1e-10, 1e-8, 1e-6, 1e-4):
        a = k if jitter == 0.0 else k + jitter * scale * torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            if jitter:
                logger.info("centres' kernel matrix is nearly singular (duplicate centres?); jitter %.0e", jitter)
            return chol
    raise SpeechkernError(
        "the centres' kernel matrix is not positive definite even with jitter; remove duplicate centres"
    )


def _jsonable(obj: Any) -> Any:
    """Plain JSON types from NumPy scalars and containers."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _package_version() -> str:
    from speechkern import __version__

    return __version__
