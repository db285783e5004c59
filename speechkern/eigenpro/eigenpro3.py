"""EigenPro 3: p centres learn from all n points by projected preconditioned steps; blocked and precomputed."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from speechkern.eigenpro.eigenpro2 import _BlockedModel
from speechkern.errors import SpeechkernError
from speechkern.kernels import as_float32, gathered_mm, transposed_mm

logger = logging.getLogger(__name__)

# From this many centres on, the step's preconditioner A is formed once as a float32 matrix instead of applied
# by triangular solves (see explicit_preconditioner).
EXPLICIT_MIN_CENTRES = 1024


class _CentresModel(_BlockedModel):
    """EigenPro 3 state: p centres Z; projections onto their span through the Cholesky factor of K(Z, Z).

    A step applies A = K(Z, Z)⁻¹·(I − K(Z, X_S)·E·diag(D)·Eᵀ·K(X_S, Z)·K(Z, Z)⁻¹), the data preconditioner acting
    on gradients projected onto the centres' span (Π·P·Π, positive definite on the span), to a variance-reduced
    gradient: h = K(Z, X_B)·(g − g̃_B) + m·K(Z, X)·g̃/n, where g̃ holds every point's residual at the weights of the
    epoch's start (:meth:`start_epoch`). Plain minibatch steps stall at a noise floor above the least-squares
    fit (its batch gradients do not vanish there); these converge to it (Johnson & Zhang 2013, SVRG).
    """

    def __init__(self, kernel, X, Y, Z, precond, chol, k_zs, dense_batch, block_size, explicit=None):
        self.kernel, self.X, self.Y, self.precond = kernel, X, Y, precond
        self.centers, self.chol, self.k_zs = Z, chol, k_zs
        self.dense_batch, self.block_size = dense_batch, block_size
        self.weights = torch.zeros(Z.shape[0], Y.shape[1], dtype=torch.float32, device=X.device)
        self.prepared_centers = kernel.prepare(Z)
        self.explicit = explicit  # A as one float32 matrix (built here for many centres unless given)
        if explicit is None and Z.shape[0] >= EXPLICIT_MIN_CENTRES:
            self.explicit = explicit_preconditioner(chol, k_zs, precond)
        self.anchor: torch.Tensor | None = None  # g̃: residuals (n × outputs) at the epoch's starting weights
        self.anchor_version = -1  # the weights' version g̃ belongs to
        self.full_gradient: torch.Tensor | None = None  # K(Z, X)·g̃/n (p × outputs)

    def precondition(self, h: torch.Tensor) -> torch.Tensor:
        """A·h for h (p × outputs): the preconditioned projection of a gradient given by its values at Z."""
        if self.explicit is not None:
            return self.explicit @ h.to(torch.float32)
        u = torch.cholesky_solve(h.to(torch.float64), self.chol)
        if self.precond.n_components:
            c = self.precond.apply(self.k_zs.T @ u.to(torch.float32))
            u -= torch.cholesky_solve((self.k_zs @ c).to(torch.float64), self.chol)
        return u.to(torch.float32)

    def refresh_anchor(self) -> None:
        """g̃ = residuals of the current weights at every training point (recomputed only after the weights
        changed: the end-of-epoch training loss and the next epoch's start share one pass)."""
        if self.anchor is None or self.anchor_version != self.weights._version:
            self.anchor = self.predict_all().sub_(self.Y)
            self.anchor_version = self.weights._version

    def train_loss(self, check: torch.Tensor, y_check: torch.Tensor) -> float:
        """Mean squared residual of the current weights over all training points (exact: the pass is shared with
        the next epoch's variance reduction)."""
        self.refresh_anchor()
        return float(self.anchor.square().mean()) if self.anchor.numel() else 0.0

    def start_epoch(self) -> None:
        """Residuals at every training point and the full gradient at the centres, for the variance reduction."""
        self.refresh_anchor()
        self.full_gradient = self.gradient_at_centres(self.anchor).div_(self.X.shape[0])

    def gradient_at_centres(self, r: torch.Tensor) -> torch.Tensor:
        return self.kernel.mm(self.centers, self.X, r, block_size=self.block_size)

    def predict_all(self) -> torch.Tensor:
        return self.kernel.mm(self.X, self.prepared_centers, self.weights, block_size=self.block_size)

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
        d = g - self.anchor[idx]
        h = k_bz.T @ d if k_bz is not None else self.kernel.mm(self.centers, xb, d, block_size=self.block_size)
        h.add_(self.full_gradient, alpha=float(idx.numel()))
        if self.ridge:  # the exact gradient of λ·wᵀK(Z, Z)·w/n, scaled like the batch's share of the data term
            kzz_w = self.chol @ (self.chol.T @ self.weights.to(torch.float64))
            h.add_(kzz_w.to(torch.float32), alpha=self.ridge * idx.numel() / self.X.shape[0])
        self.weights.sub_(self.precondition(h), alpha=lr)


class _PrecomputedCentresModel(_CentresModel):
    """EigenPro 3 on a precomputed K(X, Z) (n × p) and K(X_val, Z): a batch's kernel rows are gathered, not
    recomputed, and serve both its residual and its gradient at the centres."""

    def __init__(self, kernel, X, Y, Z, precond, chol, k_zs, k_xz, k_val, workers, explicit=None):
        super().__init__(kernel, X, Y, Z, precond, chol, k_zs, True, None, explicit)
        self.k, self.k_val, self.workers = k_xz, k_val, workers

    def gradient_at_centres(self, r: torch.Tensor) -> torch.Tensor:
        return transposed_mm(self.k, r, workers=self.workers)

    def predict_all(self) -> torch.Tensor:
        return gathered_mm(self.k, self.weights, workers=self.workers)[0]

    def residual(self, idx: torch.Tensor) -> tuple[torch.Tensor, Any]:
        k_bz = as_float32(self.k.index_select(0, idx))  # kept whole: the update needs K(X_B, Z)ᵀ·g
        return (k_bz @ self.weights).sub_(self.Y[idx]), (None, k_bz)

    def predict_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return gathered_mm(self.k, self.weights, rows, workers=self.workers)[0]

    def predict_val(self, X_val: torch.Tensor) -> torch.Tensor:
        return gathered_mm(self.k_val, self.weights, workers=self.workers)[0]


def explicit_preconditioner(chol: torch.Tensor, k_zs: torch.Tensor, precond) -> torch.Tensor:
    """A = K(Z, Z)⁻¹ − B·diag(D)·Bᵀ with B = K(Z, Z)⁻¹·K(Z, X_S)·E, formed in float64 and kept in float32 (p × p).

    One float32 product A·h then replaces four float64 triangular solves per batch, a quarter of the memory
    traffic (for p = 5000 and 16 outputs the solves read 0.8 GB per batch). The rounding of A changes the
    direction of the steps a little but not their fixed point (where the full gradient vanishes, whatever A is).
    """
    inverse = torch.cholesky_inverse(chol)
    if precond.n_components:
        b = inverse @ (k_zs.to(torch.float64) @ precond.vectors.to(torch.float64))
        inverse -= (b * precond.scale.to(torch.float64)) @ b.T
    inverse = (inverse + inverse.T).mul_(0.5)
    return inverse.to(torch.float32)


def projected_top_eigenvalue(model: _CentresModel, X_sample: torch.Tensor) -> float:
    """Top eigenvalue of A·K(Z, X_S')·K(X_S', Z)/s', the preconditioned, projected covariance operator of the data
    estimated on a sample X_S' (s' × features): the λ of the step-size rule for this iteration.

    The EigenPro 2 estimate λ_new (from K(X_S, X_S) alone) misjudges it in the centres' span (by 20 % and more
    when S is the centres themselves, enough to make the largest steps unstable). Computed by Lanczos (scipy
    ``eigsh``) on the symmetric s' × s' form C·A·Cᵀ with C = K(X_S', Z)/√s'.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    s = X_sample.shape[0]
    c = model.kernel(X_sample, model.prepared_centers).div_(math.sqrt(s))

    def matvec(v: np.ndarray) -> np.ndarray:
        v = torch.from_numpy(np.asarray(v, dtype=np.float32).reshape(s, -1)).to(c.device)
        return (c @ model.precondition(c.T @ v)).cpu().numpy().astype(np.float64)

    if s <= 64:  # small enough to form
        dense = matvec(np.eye(s))
        return float(np.linalg.eigvalsh((dense + dense.T) / 2)[-1])
    op = LinearOperator((s, s), matvec=matvec, dtype=np.float64)
    start = np.ones(s) / math.sqrt(s)
    return float(eigsh(op, k=1, which="LA", v0=start, tol=1e-3, return_eigenvectors=False)[0])


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
