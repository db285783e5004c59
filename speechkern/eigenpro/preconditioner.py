"""The EigenPro preconditioner: a Nyström eigensystem of the kernel on a subsample, the batch and step size rules.

Sources: Ma & Belkin, "Kernel machines that adapt to GPUs", SysML 2019 (EigenPro 2), and its reference code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits

from speechkern.kernels import ExponentialPowerKernel, cached_squared_distances

MAX_COMPONENTS = 160  # default cap on q, as in the EigenPro 2 reference
DAMPING = 0.95  # α of the preconditioner, as in the EigenPro 2 reference
# Eigenvalues below this fraction of the top one are numerical noise, not a usable preconditioner tail.
EIGENVALUE_FLOOR = 1e-10
# Subsample size up to which the eigensolver runs on one thread: threaded LAPACK gained < 2× on an idle 2-core
# machine and was 30× slower on a busy one (s = 2000: 1.3 s on one thread, 40 s on two under a load of 4). Above
# it, callers that allow approximate eigenpairs get the randomized solver.
SMALL_EIGENPROBLEM = 4096
# Subspace iterations of the randomized eigensolver: with a block twice the eigenpairs asked for, 6 bring the
# smallest Ritz value of a flat kernel spectrum within 0.11 % of the exact eigenvalue (4: 0.66 %; test_eigenpro.py).
RANDOMIZED_ITERATIONS = 6


def default_subsample_size(n: int) -> int:
    """s of SPEC §6: min(n, 2000) below 100 000 points, else 12 000."""
    return min(n, 2000) if n < 100_000 else min(n, 12_000)


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
    kernel: ExponentialPowerKernel,
    X_s: torch.Tensor,
    n_eig: int,
    max_cache_bytes: int = 0,
    approximate: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n_eig`` eigenpairs of K(X_S, X_S)/s in float64, descending (scipy ``eigh`` on that subset only, or
    randomized: see ``approximate``).

    With ``max_cache_bytes`` > 0 the float64 squared distances of the subsample are taken from (or kept in) the
    distance cache of :mod:`speechkern.kernels` within that many bytes: fits on the same subsample with other
    (γ, σ) then skip the distance product; the kernel block is the same bit for bit.

    ``approximate``: for subsamples of more than SMALL_EIGENPROBLEM points, eigenpairs from
    :func:`randomized_top_eigenpairs` (O(s²·n_eig) instead of O(s³); a full ``eigh`` took 55 s at s = 8000). Their
    eigenvalues are slightly low, so only a caller that measures its step on the preconditioned operator
    afterwards (EigenPro 3) should allow it.
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
    if approximate and s > SMALL_EIGENPROBLEM and 2 * n_eig < s:
        return randomized_top_eigenpairs(k, n_eig, seed=seed)
    # A threaded LAPACK stalls badly on a busy machine (see SMALL_EIGENPROBLEM).
    with threadpool_limits(1 if s <= SMALL_EIGENPROBLEM else None):
        values, vectors = scipy.linalg.eigh(
            k, subset_by_index=[s - n_eig, s - 1], overwrite_a=True, check_finite=False, driver="evr"
        )
    return values[::-1].copy(), vectors[:, ::-1].copy()


def randomized_top_eigenpairs(
    k: np.ndarray, n_eig: int, iterations: int = RANDOMIZED_ITERATIONS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n_eig`` eigenpairs (descending) of a symmetric positive semidefinite ``k`` (s × s, float64).

    Subspace iteration from a Gaussian block of 2·n_eig + 10 columns, then Rayleigh–Ritz (Halko, Martinsson &
    Tropp, "Finding structure with randomness", SIAM Review 2011, Algorithms 4.4 and 5.3, written for the
    symmetric case: one product with k per iteration, where ``sklearn.utils.extmath.randomized_svd`` takes two).
    The Ritz values are lower bounds of the eigenvalues; the relative error shrinks like
    (λ_{width}/λ_i)^(2·iterations).
    """
    s = k.shape[0]
    width = min(s, 2 * n_eig + 10)
    basis = np.random.default_rng(seed).standard_normal((s, width))
    for _ in range(iterations + 1):
        basis, _ = np.linalg.qr(k @ basis)
    small = basis.T @ (k @ basis)
    values, vectors = np.linalg.eigh((small + small.T) / 2)
    top = slice(width - 1, width - 1 - n_eig, -1)
    return values[top].copy(), basis @ vectors[:, top]


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
