"""Linear input transforms x ↦ W·x applied to the normalised, context-stacked inputs before the kernel.

Three kinds, all fitted on training frames and stored with the model's feature statistics:

* ``pca``: projection on the top principal directions of the training inputs (rotation and truncation);
* ``whiten``: the same directions, each scaled to unit variance;
* ``rfm``: a learned metric M = WᵀW for the exponential-power kernel, k(x, z) = exp(−‖x − z‖_M^γ / σ), from the
  average gradient outer product (AGOP) of a kernel predictor, iterated as in the Recursive Feature Machine
  (Radhakrishnan, Beaglehole, Pandit & Belkin, "Mechanism for feature learning in neural networks and
  backpropagation-free machine learning models", Science 383, 2024, Algorithm 1); M kept low-rank or diagonal.

Since ‖x − z‖_M = ‖W·x − W·z‖, every kind is the plain kernel on transformed inputs, so the solver is unchanged
and a transform to fewer dimensions makes each kernel evaluation cheaper.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from speechkern.errors import SpeechkernError

logger = logging.getLogger(__name__)

KINDS = ("none", "pca", "whiten", "rfm")


@dataclass
class InputTransform:
    """A fitted linear map of model inputs: ``apply(X) = X @ matrix.T``.

    kind: one of ``pca``, ``whiten``, ``rfm``; matrix: (out_dim, in_dim) float32; info: fitting facts (JSON-able).
    """

    kind: str
    matrix: np.ndarray
    info: dict[str, Any]

    def __post_init__(self) -> None:
        self.matrix = np.ascontiguousarray(self.matrix, dtype=np.float32)
        if self.kind not in KINDS[1:]:
            raise SpeechkernError(f"input transform {self.kind!r}: expected one of {', '.join(KINDS[1:])}")
        if self.matrix.ndim != 2 or not np.all(np.isfinite(self.matrix)):
            raise SpeechkernError(f"input transform {self.kind}: matrix must be finite and 2-D, got "
                                  f"{self.matrix.shape}; the model file is damaged, retrain it")  # fmt: skip

    @property
    def in_dim(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.matrix.shape[0])

    def apply(self, X: np.ndarray, block: int = 65536) -> np.ndarray:
        """Transformed inputs (n, out_dim) float32 from inputs ``X`` (n, in_dim); blocks bound the memory used."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.in_dim:
            raise SpeechkernError(f"input transform {self.kind}: expected inputs with {self.in_dim} columns, got "
                                  f"shape {X.shape}; the model and the features disagree")  # fmt: skip
        out = np.empty((len(X), self.out_dim), np.float32)
        for start in range(0, len(X), block):
            np.matmul(X[start : start + block], self.matrix.T, out=out[start : start + block])
        return out

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "in_dim": self.in_dim, "out_dim": self.out_dim, "info": self.info}

    @classmethod
    def from_state(cls, matrix: np.ndarray | torch.Tensor, config: dict[str, Any]) -> InputTransform:
        """Rebuild from a model file's tensor and ``to_config`` dictionary; refuses a shape mismatch."""
        matrix = np.asarray(matrix.numpy() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float32)
        if matrix.shape != (config.get("out_dim"), config.get("in_dim")):
            expected = (config.get("out_dim"), config.get("in_dim"))
            raise SpeechkernError(f"input transform: matrix {matrix.shape} does not match its configuration "
                                  f"{expected}; the model file is damaged, retrain it")  # fmt: skip
        return cls(config["kind"], matrix, dict(config.get("info", {})))


def fit_transform(
    kind: str,
    X: np.ndarray,
    Y: np.ndarray | None = None,
    *,
    dims: int = 0,
    shape: float = 1.0,
    rfm_frames: int = 2000,
    rfm_iterations: int = 3,
    rfm_diagonal: bool = False,
    seed: int = 0,
) -> InputTransform | None:
    """Fit the input transform ``kind`` on training inputs ``X`` (n, d) (and targets ``Y`` (n, k) for ``rfm``).

    dims: output dimensions for ``pca``/``whiten`` and the rank of M for ``rfm`` (0: keep all d); shape: γ of
    the kernel whose metric ``rfm`` learns. Returns None for ``none``. Raises SpeechkernError on a bad kind or
    dimension count.
    """
    if kind not in KINDS:
        raise SpeechkernError(f"kernel.input_transform = {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "none":
        return None
    X = np.asarray(X, dtype=np.float32)
    d = X.shape[1]
    if dims < 0 or dims > d:
        raise SpeechkernError(f"kernel.input_dims = {dims}: must be between 0 (all) and the {d} input dimensions")
    dims = dims or d
    if kind in ("pca", "whiten"):
        return _fit_pca(X, dims, whiten=kind == "whiten", seed=seed)
    if Y is None:
        raise SpeechkernError("input transform rfm: needs the training targets")
    return fit_rfm(X, np.asarray(Y, np.float32).reshape(len(X), -1), rank=0 if rfm_diagonal else dims, shape=shape,
                   n_frames=rfm_frames, iterations=rfm_iterations, diagonal=rfm_diagonal, seed=seed)  # fmt: skip


def _covariance(X: np.ndarray, max_frames: int, seed: int) -> tuple[np.ndarray, int]:
    rows = _subsample(len(X), max_frames, seed)
    Xs = torch.from_numpy(X[rows]).double()
    Xs = Xs - Xs.mean(0)
    return (Xs.T @ Xs / max(1, len(rows) - 1)).numpy(), len(rows)


def _fit_pca(X: np.ndarray, dims: int, whiten: bool, seed: int, max_frames: int = 100_000) -> InputTransform:
    cov, n = _covariance(X, max_frames, seed)
    eigvals, eigvecs = np.linalg.eigh(cov)
    order = np.argsort(eigvals)[::-1][:dims]
    values, vectors = np.clip(eigvals[order], 0.0, None), eigvecs[:, order]
    matrix = vectors.T
    if whiten:  # floor tiny variances so near-constant directions are not blown up into noise
        matrix = matrix / np.sqrt(np.maximum(values, 1e-3 * values[0]))[:, None]
    explained = float(values.sum() / max(np.clip(eigvals, 0, None).sum(), 1e-30))
    info = {"frames": n, "explained_variance": round(explained, 6)}
    return InputTransform("whiten" if whiten else "pca", matrix, info)


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def fit_rfm(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    rank: int = 0,
    shape: float = 1.0,
    n_frames: int = 2000,
    iterations: int = 3,
    diagonal: bool = False,
    ridge: float = 1e-3,
    output_components: int = 8,
    seed: int = 0,
) -> InputTransform:
    """Recursive Feature Machine metric for the exponential-power kernel; returns W with M = WᵀW.

    Each iteration fits a kernel ridge predictor f(x) = Σ_j α_j k_M(x, x_j) on ``n_frames`` training frames
    (σ = median ‖x − z‖_M^γ), takes the gradients of f at as many other training frames, and sets M to their
    average outer product, normalised to trace d. For k = exp(−r^γ/σ), r = ‖x − z‖_M:
    ∇_x k = −(γ/σ)·r^(γ−2)·k·M(x − z). The outputs are first rotated onto their ``output_components`` principal
    directions (the AGOP summed over an orthonormal output basis is unchanged; the truncation drops little for
    correlated mask channels). rank > 0 keeps the top ``rank`` eigen-directions of M (W is rank × d); diagonal
    keeps diag(M) only (W is d × d diagonal).

    X: (n, d) normalised inputs; Y: (n, k) targets. Source: Radhakrishnan et al., Science 2024, Algorithm 1
    (reference code github.com/aradha/recursive_feature_machines, Laplacian kernel).
    """
    n, d = X.shape
    if n < 20:
        raise SpeechkernError(f"input transform rfm: {n} training frames are too few to learn a metric (need 20)")
    rows = np.random.default_rng(seed).permutation(n)
    m = min(n_frames, n // 2)
    centres = torch.from_numpy(X[np.sort(rows[:m])]).double()
    targets = torch.from_numpy(Y[np.sort(rows[:m])]).double()
    probes = torch.from_numpy(X[np.sort(rows[m : 2 * m])]).double()
    targets = targets - targets.mean(0)
    # Orthonormal output basis: the AGOP is a sum over outputs, invariant to rotating them.
    _, _, vh = torch.linalg.svd(targets, full_matrices=False)
    targets = targets @ vh[: min(output_components, vh.shape[0])].T
    W = torch.eye(d, dtype=torch.float64)  # M = WᵀW; inputs are mapped by W
    history = []
    for it in range(iterations):
        U, P = (centres @ W.T).float(), (probes @ W.T).float()  # float32 for the large products
        D = torch.cdist(U, U).double().clamp_min(0)
        sigma = float(torch.median(D[D > 0] ** shape))
        K = torch.exp(-(D**shape) / sigma)
        alpha = torch.linalg.solve(K + ridge * torch.eye(m, dtype=K.dtype), targets)
        R = torch.cdist(P, U).double().clamp_min(1e-12)
        Kp = torch.exp(-(R**shape) / sigma)
        weights = (Kp * R ** (shape - 2.0)).float()  # (probes, centres): r^(γ−2)·k
        # Gradient of output c at probe x, in the transformed space (a factor −γ/σ dropped: M is normalised):
        # h_c(x) = Σ_j α_jc w_xj (u_x − u_j); the gradient in input space is Wᵀ h_c(x) scaled by (γ/σ).
        agop_u = torch.zeros((U.shape[1], U.shape[1]), dtype=torch.float64)
        for c in range(targets.shape[1]):
            wa = weights * alpha[:, c].float()[None, :]
            H = (wa.sum(1, keepdim=True) * P - wa @ U).double()
            agop_u += H.T @ H
        M = W.T @ agop_u @ W
        M = M * (d / max(float(torch.trace(M)), 1e-30))
        residual = float(((Kp @ alpha - _project_targets(probes, rows, m, Y, vh, output_components)) ** 2).mean())
        history.append({"iteration": it + 1, "sigma": sigma, "probe_mse": residual})
        W = _root(M, rank, diagonal)
    info = {"frames": m, "iterations": iterations, "shape": shape, "rank": int(W.shape[0]), "diagonal": diagonal,
            "history": history}  # fmt: skip
    logger.info("rfm metric: %d iterations on %d frames, rank %d; probe mse by iteration %s", iterations, m,
                W.shape[0], [round(h["probe_mse"], 5) for h in history])  # fmt: skip
    return InputTransform("rfm", W.float().numpy(), info)


def _project_targets(probes, rows, m, Y, vh, output_components) -> torch.Tensor:
    t = torch.from_numpy(Y[np.sort(rows[m : 2 * m])]).double()
    t = t - torch.from_numpy(Y[np.sort(rows[:m])]).double().mean(0)
    return t @ vh[: min(output_components, vh.shape[0])].T


def _root(M: torch.Tensor, rank: int, diagonal: bool) -> torch.Tensor:
    """W with WᵀW = M (diagonal: diag(M) only; rank > 0: the top ``rank`` eigen-directions)."""
    if diagonal:
        return torch.diag(torch.sqrt(torch.diagonal(M).clamp_min(0)))
    values, vectors = torch.linalg.eigh((M + M.T) / 2)
    order = torch.argsort(values, descending=True)
    if rank:
        order = order[:rank]
    return torch.sqrt(values[order].clamp_min(0))[:, None] * vectors[:, order].T
