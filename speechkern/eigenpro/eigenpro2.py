"""EigenPro 2: every training point is a centre; blocked and precomputed-kernel variants of one step."""

from __future__ import annotations

from typing import Any

import torch

from speechkern.eigenpro.loop import _mse
from speechkern.kernels import gathered_mm


class _BlockedModel:
    """What both blocked iterations share: predictions by blocked kernel products, and the fitted result."""

    ridge = 0.0  # λ of the ridge term (set by the estimator): a batch's residual gains λ·w_B

    def start_epoch(self) -> None:
        """Called before each epoch's first batch (EigenPro 2 needs nothing)."""

    def train_loss(self, check: torch.Tensor, y_check: torch.Tensor) -> float:
        """Mean squared training residual of the current weights, on the fixed check rows."""
        return _mse(self.predict_rows(check), y_check)

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
        pred.sub_(self.Y[idx])
        if self.ridge:  # the gradient of ‖K·w − Y‖² + λ·wᵀK·w in the kernel's metric: (K + λI)·w − Y
            pred.add_(self.weights[idx], alpha=self.ridge)
        return pred, k_bs

    def update(self, idx: torch.Tensor, g: torch.Tensor, k_bs: torch.Tensor, lr: float) -> None:
        self.weights.index_add_(0, idx, g, alpha=-lr)
        if self.precond.n_components:
            self.weights[: self.s].add_(self.precond.correction(k_bs, g), alpha=lr)


class _PrecomputedAllPointsModel(_BlockedModel):
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
        pred.sub_(self.Y[idx])
        if self.ridge:
            pred.add_(self.weights[rows], alpha=self.ridge)
        return pred, (rows, k_bs)

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
