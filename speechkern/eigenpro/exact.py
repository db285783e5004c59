"""Exact kernel ridge regression: the minimiser of ‖K·w − Y‖² + λ·wᵀK·w, w = (K + λI)⁻¹·Y, by Cholesky; and its
Nyström form on m centres Z, solved exactly from the normal equations.

The reference every iterative solver is measured against, and the solver of each leaf of
:class:`~speechkern.eigenpro.local.LocalKernelRegressor` (docs/engine.md, "Solved kernels").
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from speechkern.errors import SpeechkernError
from speechkern.kernels import ExponentialPowerKernel, available_memory_bytes, kernel_matrix

logger = logging.getLogger(__name__)

# LAPACK (as built into torch and scipy) indexes a matrix with 32-bit integers: n² must stay below 2³¹, so
# n ≤ 46 340. scipy's OpenBLAS crashed on a 45 000-point float32 Cholesky here, torch's worked at 40 000.
MAX_EXACT_POINTS = 40_000
# Diagonal jitter (relative to the mean diagonal) tried in turn when a factorisation fails; none when it works.
JITTERS = (1e-7, 1e-6, 1e-5, 1e-4)
NYSTROM_BLOCK = 8192  # rows of K(X, Z) per product in the Nyström normal equations


def exact_bytes(n: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes an exact solve of n points holds at its peak: K(X, X) in ``dtype`` (factorised in place)."""
    return int(n) * int(n) * torch.finfo(dtype).bits // 8


def check_exact_size(n: int, budget_bytes: int | None = None) -> None:
    """Raise :class:`~speechkern.errors.SpeechkernError` (one line) when n points cannot be solved exactly: above
    :data:`MAX_EXACT_POINTS` (LAPACK's 32-bit indices) or beyond ``budget_bytes`` for the float32 matrix."""
    if n > MAX_EXACT_POINTS:
        raise SpeechkernError(
            f"an exact kernel solve of {n} points is beyond this solver's {MAX_EXACT_POINTS} (LAPACK indexes the "
            f"{n}×{n} matrix with 32-bit integers); use solver='local' (leaves solved exactly) or fewer points"
        )
    if budget_bytes is not None and exact_bytes(n) > budget_bytes:
        raise SpeechkernError(
            f"an exact kernel solve of {n} points needs {exact_bytes(n) / 2**30:.2f} GiB for K(X, X) but the memory "
            f"budget is {budget_bytes / 2**30:.2f} GiB; raise memory_budget_gb (kernel.memory_gb in a recipe), use "
            "solver='local' with a smaller leaf_size, or fewer points"
        )


def ridge_solve(kernel: ExponentialPowerKernel, X: torch.Tensor, Y: torch.Tensor, ridge: float) -> torch.Tensor:
    """w = (K(X, X) + λI)⁻¹·Y for X (n × features) and Y (n × outputs), float32 (n × outputs), on X's device.

    K is built in float32 and factorised in place; a factorisation that fails (λ tiny against the rounding of
    K) is retried in float64 where that matrix fits half the free memory (else in float32), then with diagonal
    jitter (:data:`JITTERS`, logged). All outputs share the one
    factor. Raises :class:`~speechkern.errors.SpeechkernError` when n is beyond :func:`check_exact_size` or no
    factorisation succeeds.
    """
    check_exact_size(X.shape[0])
    return _solve(kernel, X, kernel_matrix(kernel, X, X, torch.float32), Y, ridge)


def ridge_path(
    kernel: ExponentialPowerKernel,
    X: torch.Tensor,
    Y: torch.Tensor,
    X_val: torch.Tensor,
    Y_val: torch.Tensor,
    ridges: list[float] | np.ndarray,
    return_best: bool = False,
    groups: list[tuple[int, int]] | None = None,
) -> np.ndarray | tuple[np.ndarray, torch.Tensor]:
    """Validation MSE of the exact ridge solution (:func:`ridge_solve`) for every λ in ``ridges``.

    K(X, X) and K(X_val, X) are built once; each λ costs one factorisation of a copy (n³/3, 0.2 s for 4000
    points on 2 cores, where a float64 eigendecomposition serving every λ took 30 times longer), shared by every
    output. Meant for the autotune subsamples. Returns an array of len(ridges) MSEs; with ``groups`` (column
    ranges ``(lo, hi)`` of Y, such as subbands) one MSE per λ and group, (len(ridges), len(groups)). With
    ``return_best`` (not with ``groups``) also the weights (n × outputs) of the λ with the lowest.
    """
    check_exact_size(X.shape[0])
    if groups is not None and return_best:
        raise ValueError("ridge_path: return_best is for one group of outputs")
    K = kernel_matrix(kernel, X, X, torch.float32)
    k_val = kernel_matrix(kernel, X_val, X, torch.float32)
    scores, best = [], None
    for r in ridges:
        w = _solve(kernel, X, K.clone(), Y, r)
        per_output = (k_val @ w - Y_val).square().mean(dim=0).double().cpu().numpy()
        scores.append(float(per_output.mean()) if groups is None else [per_output[lo:hi].mean() for lo, hi in groups])
        if return_best and (best is None or scores[-1] < min(scores[:-1])):
            best = w
    return (np.array(scores), best) if return_best else np.array(scores)


def nystrom_solve(
    kernel: ExponentialPowerKernel, X: torch.Tensor, Y: torch.Tensor, Z: torch.Tensor, ridge: float
) -> torch.Tensor:
    """w minimising ‖K(X, Z)·w − Y‖² + λ·wᵀK(Z, Z)·w: the normal equations (K_XZᵀK_XZ + λ·K_ZZ)·w = K_XZᵀ·Y for
    X (n × features), Y (n × outputs) and centres Z (m × features); float32 (m × outputs) on X's device.

    K(X, Z) is built in float32 row blocks of :data:`NYSTROM_BLOCK`; its products are summed and the m × m system
    factorised in float64 (a float32 sum lost 9 % of validation MSE at m = 5000 on 348 162 frames: the products'
    rounding swamps the directions λ leaves), with diagonal jitter only on failure. n·m² multiply-adds; with
    Z = X the solution is :func:`ridge_solve`'s. The Nyström problem of Rudi, Carratino & Rosasco (2017), solved
    directly where they iterate. Raises :class:`~speechkern.errors.SpeechkernError` for m beyond
    :func:`check_exact_size` or a system that does not factorise.
    """
    check_exact_size(Z.shape[0])
    ridge = _checked_ridge(ridge)
    m = Z.shape[0]
    G = torch.zeros(m, m, dtype=torch.float64, device=X.device)
    b = torch.zeros(m, Y.shape[1], dtype=torch.float64, device=X.device)
    for i in range(0, X.shape[0], NYSTROM_BLOCK):
        K = kernel_matrix(kernel, X[i : i + NYSTROM_BLOCK], Z, torch.float32).to(torch.float64)
        G.addmm_(K.T, K)
        b.addmm_(K.T, Y[i : i + NYSTROM_BLOCK].to(torch.float64))
        del K
    G.add_(kernel_matrix(kernel, Z, Z, torch.float32).to(torch.float64), alpha=ridge)
    factor = _jittered_factor(G.clone, 0.0, float(G.diagonal().mean()), (0.0, *JITTERS), "Nyström solve: the normal "
                              "equations")  # fmt: skip
    if factor is None:
        raise SpeechkernError(
            f"the Nyström normal equations of {m} centres are not positive definite even with jitter "
            f"{JITTERS[-1]:g}; remove duplicate centres or raise the ridge"
        )
    return _factor_solve(factor, b).to(torch.float32)


def nystrom_bytes(m: int, block: int | None = None) -> int:
    """Bytes :func:`nystrom_solve` may hold for m centres: the float64 m × m system and the copy factorised in place
    (16·m²) with a margin of 8·m², and a float64 row block of K(X, Z) with its float32 original."""
    return 24 * m * m + 12 * m * (block or NYSTROM_BLOCK)


def _solve(kernel: ExponentialPowerKernel, X: torch.Tensor, K: torch.Tensor, Y: torch.Tensor, ridge: float):
    """(K + λI)⁻¹·Y in float32, K = K(X, X) in float32 factorised in place; on failure :func:`_factor_retry`."""
    ridge = _checked_ridge(ridge)
    factor = _factor(K, ridge)
    if factor is None:
        factor = _factor_retry(kernel, X, ridge)
    return _factor_solve(factor, Y.to(factor.dtype)).to(torch.float32)


def _checked_ridge(ridge: float) -> float:
    ridge = float(ridge)
    if not (np.isfinite(ridge) and ridge >= 0.0):
        raise SpeechkernError(f"ridge λ = {ridge}: expected a finite number ≥ 0")
    return ridge


def _factor(K: torch.Tensor, shift: float) -> torch.Tensor | None:
    """Lower Cholesky factor of the symmetric K + shift·I, computed in place of K; None when the factorisation
    fails. LAPACK works on column-major matrices: given K itself, torch factorises a column-major copy (a second
    n × n matrix, 6 GiB at 40 000 points); K's transpose is the same matrix already column-major, so it is
    factorised where it lies. The factor is that transposed view (column-major), read by :func:`_factor_solve`."""
    K.diagonal().add_(shift)
    Kt = K.mT
    factor, info = torch.linalg.cholesky_ex(Kt, out=(Kt, torch.empty((), dtype=torch.int32, device=K.device)))
    return factor if int(info) == 0 else None


def _factor_solve(factor: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """(L·Lᵀ)⁻¹·B for the lower factor L of :func:`_factor` by two triangular solves, which read L where it lies
    (``torch.cholesky_solve`` copies it first)."""
    z = torch.linalg.solve_triangular(factor, B, upper=False)
    # row-major, as the weights are stored: products with them then round the same before and after a save
    return torch.linalg.solve_triangular(factor.mT, z, upper=True).contiguous()


def _factor_retry(kernel: ExponentialPowerKernel, X: torch.Tensor, ridge: float) -> torch.Tensor:
    """The factor of K + λI after float32 failed: in float64 where its matrix fits half the free memory (else
    float32 again: 40 000 points would need 12.8 GB more), with diagonal jitter only when that fails too (logged)."""
    wide = exact_bytes(X.shape[0], torch.float64) <= available_memory_bytes(X.device) // 2
    if wide:
        X64 = X.to(torch.float64)
        factor = _jittered_factor(lambda: kernel(X64, X64), ridge, 1.0, (0.0, *JITTERS), "exact solve: K + λI")
    else:
        logger.warning("exact solve: K + λI of %d points did not factorise in float32 and its float64 copy does not "
                       "fit the free memory; retrying in float32 with jitter", X.shape[0])  # fmt: skip
        build = lambda: kernel_matrix(kernel, X, X, torch.float32)  # noqa: E731
        factor = _jittered_factor(build, ridge, 1.0, JITTERS, "exact solve: K + λI")
    if factor is None:
        raise SpeechkernError(
            f"the kernel matrix of {X.shape[0]} points is not positive definite even with jitter {JITTERS[-1]:g}; "
            "remove duplicate points or raise the ridge"
        )
    return factor


def _jittered_factor(build, shift: float, scale: float, jitters, what: str) -> torch.Tensor | None:
    """The Cholesky factor of ``build()`` + (shift + jitter·scale)·I for the first jitter that factorises (a fresh
    matrix each try, factorised in place); a jitter above 0 is logged, naming ``what``. None when none works."""
    for jitter in jitters:
        factor = _factor(build(), shift + jitter * scale)
        if factor is not None:
            if jitter:
                logger.warning("%s needed diagonal jitter %.0e to factorise (duplicate points?)", what, jitter)
            return factor
    return None
