"""EigenPro 3: p centres learn from all n points by projected preconditioned steps; blocked and precomputed."""

from __future__ import annotations

import logging
from typing import Any

import torch

from speechkern.eigenpro.eigenpro2 import _BlockedModel
from speechkern.errors import SpeechkernError
from speechkern.kernels import gathered_mm

logger = logging.getLogger(__name__)


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
