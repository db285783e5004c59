"""Linear input transforms x ↦ W·x applied to the normalised, context-stacked inputs before the kernel.

Four kinds, all fitted on training frames and stored with the model's feature statistics:

* ``pca``: projection on the top principal directions of the training inputs (rotation and truncation);
* ``whiten``: the same directions, each scaled to unit variance;
* ``rfm``: a learned metric M = WᵀW for the exponential-power kernel, k(x, z) = exp(−‖x − z‖_M^γ / σ), from the
  average gradient outer product (AGOP) of an exact kernel ridge fit, as in the Recursive Feature Machine
  (Radhakrishnan, Beaglehole, Pandit & Belkin, "Mechanism for feature learning in neural networks and
  backpropagation-free machine learning models", Science 383, 2024, Algorithm 1) and xRFM; diagonal and full M
  are tried and kept only where the validation frames say they help;
* ``pca+rfm``: the metric learned on the principal directions, composed into one map.

Since ‖x − z‖_M = ‖W·x − W·z‖, every kind is the plain kernel on transformed inputs, so the solver is unchanged
and a transform to fewer dimensions makes each kernel evaluation cheaper.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from speechkern.autotune import median_distance_power
from speechkern.errors import SpeechkernError
from speechkern.kernels import ExponentialPowerKernel

logger = logging.getLogger(__name__)

RFM_RIDGES = (1e-4, 1e-3, 1e-2, 1e-1)  # λ tried with each candidate metric (the engine's kernel.ridges)
RFM_SIGMA_MULTIPLIERS = (1.0, 2.0, 4.0)  # σ tried, × the median ‖x − z‖^γ under the candidate metric
RFM_SIGMA_FRAMES = 5000  # frames the σ of each candidate is chosen on
# The metric is the AGOP's square root, the neural feature ansatz's exponent: on 20 000 frames of the scaling arrays
# it beat the AGOP itself (validation MSE 0.0584 against 0.0593; M = I 0.0604; docs/engine.md, "A learned metric").
RFM_POWER = 0.5
# The AGOP Σ_l ∇f_l ∇f_lᵀ is the same in any orthonormal basis of the outputs; in that of the weights' top right
# singular vectors, 16 of the 64 mask channels give it within 2.6 % (Frobenius) and the same validation MSE, 6.7 times
# faster (20 000 frames of the scaling arrays; docs/engine.md, "A learned metric").
RFM_AGOP_OUTPUTS = 16

KINDS = ("none", "pca", "whiten", "rfm", "pca+rfm")


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

    def save(self, path) -> None:
        """Write the transform to one safetensors file (the matrix, the configuration as metadata), atomically."""
        from safetensors.torch import save_file

        from speechkern.outputs import atomic_write

        metadata = {"config": json.dumps(self.to_config())}
        atomic_write(path, lambda tmp: save_file({"matrix": torch.from_numpy(self.matrix)}, tmp, metadata=metadata))

    @classmethod
    def load(cls, path) -> InputTransform:
        """Read a transform written by :meth:`save`; a damaged file raises SpeechkernError naming it."""
        from speechkern.eigenpro.state import read_safetensors

        tensors, metadata = read_safetensors(path, f"input transform {path}")
        try:
            if "matrix" not in tensors or "config" not in metadata:
                raise SpeechkernError("no matrix and configuration")
            return cls.from_state(tensors["matrix"], json.loads(metadata["config"]))
        except (SpeechkernError, ValueError) as err:  # json's errors are ValueErrors
            detail = str(err).removesuffix("; the model file is damaged, retrain it")  # no model file here
            reason = f"is not an input transform written by speechkern ({detail})"
            raise SpeechkernError(f"{path} {reason}", reason) from None

    @classmethod
    def from_state(cls, matrix: np.ndarray | torch.Tensor, config: dict[str, Any]) -> InputTransform:
        """Rebuild from a model file's tensor and ``to_config`` dictionary; refuses a shape mismatch."""
        if isinstance(matrix, torch.Tensor):
            matrix = matrix.detach().cpu().to(torch.float32).numpy()  # any float dtype another writer chose
        matrix = np.asarray(matrix, dtype=np.float32)
        if not isinstance(config, dict) or not isinstance(config.get("info", {}), dict):
            raise SpeechkernError(f"input transform: its configuration {str(config)[:80]!r} is not an object "
                                  "with a kind, sizes and info; the model file is damaged, retrain it")  # fmt: skip
        if matrix.shape != (config.get("out_dim"), config.get("in_dim")):
            expected = (config.get("out_dim"), config.get("in_dim"))
            raise SpeechkernError(f"input transform: matrix {matrix.shape} does not match its configuration "
                                  f"{expected}; the model file is damaged, retrain it")  # fmt: skip
        return cls(config.get("kind"), matrix, dict(config.get("info", {})))


def fit_transform(
    kind: str,
    X: np.ndarray,
    Y: np.ndarray | None = None,
    X_val: np.ndarray | None = None,
    Y_val: np.ndarray | None = None,
    *,
    dims: int = 0,
    shape: float = 1.0,
    rfm_frames: int = 20_000,
    rfm_iterations: int = 1,
    rfm_diagonal: bool = False,
    rfm_agop_frames: int = 2000,
    seed: int = 0,
) -> InputTransform | None:
    """Fit the input transform ``kind`` on training inputs ``X`` (n, d); ``rfm`` and ``pca+rfm`` also need the
    targets ``Y`` (n, k) and validation frames ``X_val``, ``Y_val`` (:func:`fit_rfm`).

    dims: output dimensions for ``pca``/``whiten``/``pca+rfm`` and the rank of M for ``rfm`` (0: keep all d);
    shape: γ of the kernel whose metric ``rfm`` learns; ``pca+rfm`` learns it on the principal directions and
    returns the composed map. rfm_frames, rfm_iterations, rfm_diagonal, rfm_agop_frames: :func:`fit_rfm`'s
    ``n_frames``, ``iterations``, ``diagonal_only`` and ``agop_frames``. Returns None for ``none``. Raises
    SpeechkernError on a bad kind or dimension count.
    """
    if kind not in KINDS:
        raise SpeechkernError(f"kernel.input_transform = {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "none":
        return None
    X, Y, X_val, Y_val = _checked(kind, X, Y, X_val, Y_val)
    d = X.shape[1]
    if dims < 0 or dims > d:
        raise SpeechkernError(f"kernel.input_dims = {dims}: must be between 0 (all) and the {d} input dimensions; "
                              "lower it")  # fmt: skip
    dims = dims or d
    if kind in ("pca", "whiten"):
        return _fit_pca(X, dims, whiten=kind == "whiten", seed=seed)
    if Y is None:
        raise SpeechkernError(f"input transform {kind}: needs the training targets")
    pca = _fit_pca(X, dims, whiten=False, seed=seed) if kind == "pca+rfm" else None
    if pca is not None:
        X, X_val = pca.apply(X), None if X_val is None else pca.apply(X_val)
    rank = 0 if rfm_diagonal or pca is not None else dims
    rfm = fit_rfm(X, Y, X_val, Y_val, rank=rank, shape=shape, n_frames=rfm_frames, iterations=rfm_iterations,
                  diagonal_only=rfm_diagonal, agop_frames=rfm_agop_frames, seed=seed)  # fmt: skip
    if pca is None:
        return rfm
    return InputTransform(kind, rfm.matrix @ pca.matrix, {"pca": pca.info, "rfm": rfm.info})


def _check_rfm_settings(n_frames, agop_frames, iterations, shape) -> None:
    """Refuse, naming the recipe key, RFM settings the fit cannot use (the recipe bounds them; library callers
    may not)."""
    for key, value, least in (("rfm_frames", n_frames, 20), ("rfm_agop_frames", agop_frames, 1),
                              ("rfm_iterations", iterations, 1)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise SpeechkernError(f"input transform rfm: kernel.{key} = {value}: expected a whole number of at least "
                                  f"{least}")  # fmt: skip
    if not (isinstance(shape, (int, float)) and 0 < shape <= 2):  # NaN fails the comparison too
        raise SpeechkernError(f"input transform rfm: kernel.shape = {shape}: expected 0 < γ ≤ 2 (1 Laplacian, 2 "
                              "Gaussian)")  # fmt: skip


def _checked(kind: str, X, Y, X_val, Y_val) -> tuple:
    """The arrays as float32 (targets as (n, k)), refused with a SpeechkernError where their shapes disagree."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) < 2:
        raise SpeechkernError(f"input transform {kind}: {len(X) if X.ndim else 0} training frame(s) of shape "
                              f"{X.shape}; expected (frames ≥ 2, inputs)")  # fmt: skip
    arrays = {"training inputs": X}
    if Y is not None:
        Y = np.asarray(Y, dtype=np.float32)
        if len(Y) != len(X):
            raise SpeechkernError(f"input transform {kind}: the training targets have {len(Y)} rows, the inputs "
                                  f"{len(X)}; pass one target row per frame")  # fmt: skip
        Y = Y.reshape(len(X), -1)
        arrays["training targets"] = Y
    if X_val is not None:
        X_val = np.asarray(X_val, dtype=np.float32)
        if X_val.ndim != 2 or X_val.shape[1] != X.shape[1]:
            cols = X_val.shape[1] if X_val.ndim == 2 else X_val.shape
            raise SpeechkernError(f"input transform {kind}: the validation inputs have {cols} columns, the training "
                                  f"inputs {X.shape[1]}; pass frames of the same features")  # fmt: skip
        arrays["validation inputs"] = X_val
    if Y_val is not None and X_val is not None:
        Y_val = np.asarray(Y_val, dtype=np.float32)
        k = Y.shape[1] if Y is not None else Y_val.size // max(1, len(X_val))
        if len(Y_val) != len(X_val) or Y_val.size != len(X_val) * k:
            raise SpeechkernError(f"input transform {kind}: the validation targets are {Y_val.shape}, expected "
                                  f"{(len(X_val), k)} (one row per validation frame, the training targets' "
                                  "columns)")  # fmt: skip
        Y_val = Y_val.reshape(len(X_val), k)
        arrays["validation targets"] = Y_val
    for name, A in arrays.items():
        for start in range(0, len(A), 65536):  # in blocks: the inputs of every frame can be gigabytes
            if not np.isfinite(A[start : start + 65536]).all():
                raise SpeechkernError(f"input transform {kind}: the {name} are not finite (NaN or ±inf near row "
                                      f"{start}); check the features and targets")  # fmt: skip
    return X, Y, X_val, Y_val


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
    X_val: np.ndarray,
    Y_val: np.ndarray,
    *,
    rank: int = 0,
    shape: float = 1.0,
    n_frames: int = 20_000,
    agop_frames: int = 2000,
    iterations: int = 1,
    diagonal_only: bool = False,
    ridges: tuple[float, ...] = RFM_RIDGES,
    val_frames: int = 4000,
    seed: int = 0,
) -> InputTransform:
    """Recursive Feature Machine metric M = WᵀW for k(x, z) = exp(−‖W(x − z)‖^γ/σ), kept only where it helps.

    As xRFM does it: a kernel ridge fit f(x) = Σ_i α_i k(x, x_i) on ``n_frames`` training frames, solved exactly
    (σ and λ chosen on the validation frames from fits of :data:`RFM_SIGMA_FRAMES` of them; on every frame, that λ
    and the next smaller one); its average gradient outer product (AGOP) over ``agop_frames`` of those frames (and
    the top :data:`RFM_AGOP_OUTPUTS` output directions), each point's own term left out (the Laplace kernel has no
    gradient at r = 0); the metric M = (AGOP / its largest entry)^(1/2) (:data:`RFM_POWER`); the kernel refitted
    on W·x with σ and λ tuned again; ``iterations`` such updates. The diagonal M (per-input weights) and, unless
    ``diagonal_only``, the full M are both tried, and M = I stays a candidate: the candidate with the lowest
    validation MSE is returned, so the metric never makes the fit worse.
    For k = exp(−r^γ/σ), ∇_u k(u, u_i) = −(γ/σ)·r^(γ−2)·k·(u − u_i) with u = W·x, and ∇_x = Wᵀ∇_u.

    X: (n, d) normalised training inputs; Y: (n, k) targets; X_val, Y_val: validation frames (held-out talkers),
    at most ``val_frames`` used. rank > 0 keeps the top ``rank`` eigen-directions of the full M (W is rank × d).
    Returns an :class:`InputTransform` of kind ``rfm`` (the identity when no metric helped; ``info["kept"]`` says
    which, ``info["history"]`` every candidate's validation MSE, σ and λ; None for a candidate that maps every frame
    to one point, as the zero AGOP of all-zero targets does). Raises SpeechkernError for fewer than 20 frames,
    frames that are all the same input, no validation frames, or arrays whose shapes disagree.
    Sources: Radhakrishnan et al., Science 2024, Algorithm 1; Beaglehole et al. 2025 (xRFM), whose reference code
    takes the AGOP at the training points with the self term masked.
    """
    from speechkern.eigenpro.exact import ridge_path

    X, Y, X_val, Y_val = _checked("rfm", X, Y, X_val, Y_val)
    _check_rfm_settings(n_frames, agop_frames, iterations, shape)
    n, d = X.shape
    if n < 20:
        raise SpeechkernError(f"input transform rfm: {n} training frames are too few to learn a metric (need 20); "
                              "train on more frames, or set kernel.input_transform = 'pca' or 'none'")  # fmt: skip
    if X_val is None or Y_val is None or len(X_val) == 0:
        raise SpeechkernError("input transform rfm: needs validation frames to decide whether the metric helps")
    rows = _subsample(n, n_frames, seed)
    vrows = _subsample(len(X_val), val_frames, seed + 1)
    # _checked made them float32 with 2-D targets: the rows taken are contiguous copies
    Xf, Yf, Xv, Yv = (torch.from_numpy(a[r]) for a, r in ((X, rows), (Y, rows), (X_val, vrows), (Y_val, vrows)))
    ridges = tuple(sorted(float(r) for r in ridges))

    def refit(W: torch.Tensor, name: str) -> dict | None:
        """The kernel fitted on W·x with σ and λ tuned; None where W maps the sampled frames to one point."""
        U, Uv = Xf @ W.T, Xv @ W.T
        scale = median_distance_power(U.numpy(), shape, seed=seed)
        if not scale > 0:
            return None
        sub = torch.from_numpy(_subsample(len(U), RFM_SIGMA_FRAMES, seed + 2))
        by_sigma = {}
        for mult in RFM_SIGMA_MULTIPLIERS:  # σ and λ on a subsample
            kernel = ExponentialPowerKernel(shape, mult * scale)
            by_sigma[mult] = ridge_path(kernel, U[sub], Yf[sub], Uv, Yv, ridges)
        mult = min(by_sigma, key=lambda m: by_sigma[m].min())
        kernel = ExponentialPowerKernel(shape, mult * scale)
        # On every fitted frame only the subsample's λ and the next smaller one: more frames want no more
        # regularisation, and each λ costs a factorisation of the n × n matrix (the bulk of the metric's time).
        j = int(np.argmin(by_sigma[mult]))
        near = ridges[max(j - 1, 0) : j + 1]
        scores, alpha = ridge_path(kernel, U, Yf, Uv, Yv, near, return_best=True)
        best = int(np.argmin(scores))
        row = {"metric": name, "val_mse": float(scores[best]), "sigma": kernel.bandwidth, "ridge": near[best]}
        logger.info("rfm metric %s: validation mse %.5f (σ %.4g, λ %g)", name, row["val_mse"], row["sigma"],
                    row["ridge"])  # fmt: skip
        return {"row": row, "W": W, "U": U, "alpha": alpha, "kernel": kernel}

    identity = torch.eye(d)
    first = refit(identity, "identity")
    if first is None:
        raise SpeechkernError(f"input transform rfm: all {len(rows)} training frames are the same input (or so "
                              "nearly that every sampled pair is 0 apart), so no bandwidth or metric can be chosen; "
                              "check the features, or set kernel.input_transform = 'none'")  # fmt: skip
    history, best = [first["row"]], first
    first_agop = _agop(first, shape, agop_frames, seed)
    for form in ("diagonal",) if diagonal_only else ("diagonal", "full"):
        fit, agop = first, first_agop
        for it in range(iterations):
            if it:
                agop = _agop(fit, shape, agop_frames, seed)
            M = agop / agop.abs().max().clamp_min(1e-30)
            W = _root(M, rank if form == "full" else 0, form == "diagonal", RFM_POWER)
            name = f"{form}-{it + 1}"
            fit = refit(W.float(), name)
            if fit is None:  # a zero AGOP (e.g. all-zero masks: the fit is flat): M = 0 is no metric
                logger.info("rfm metric %s: maps every frame to one point (zero gradients), skipped", name)
                history.append({"metric": name, "val_mse": None, "sigma": None, "ridge": None})
                break
            history.append(fit["row"])
            if fit["row"]["val_mse"] < best["row"]["val_mse"]:
                best = fit
    info = {"frames": len(rows), "agop_frames": min(len(rows), agop_frames), "val_frames": len(vrows),
            "iterations": iterations, "shape": shape, "kept": best["row"]["metric"],
            "rank": int(best["W"].shape[0]), "history": history}  # fmt: skip
    logger.info("rfm metric: kept %s (validation mse %.5f; identity %.5f)", info["kept"], best["row"]["val_mse"],
                first["row"]["val_mse"])  # fmt: skip
    return InputTransform("rfm", best["W"].numpy(), info)


def _agop(
    fit: dict, shape: float, frames: int, seed: int, block: int = 512, outputs: int = RFM_AGOP_OUTPUTS
) -> torch.Tensor:
    """Average gradient outer product (d × d, float64, input coordinates) of the fitted predictor
    f(x) = Σ_i α_i k(W·x, u_i) over ``frames`` of its own training points, each point's own term left out; with
    more than ``outputs`` outputs, over the top ``outputs`` right singular directions of α (:data:`RFM_AGOP_OUTPUTS`;
    0: every output)."""
    U, alpha, W, sigma = fit["U"], fit["alpha"], fit["W"], fit["kernel"].bandwidth
    if 0 < outputs < alpha.shape[1]:
        _, _, Vh = torch.linalg.svd(alpha.double(), full_matrices=False)
        alpha = (alpha.double() @ Vh[:outputs].T).to(alpha.dtype)
    points = torch.from_numpy(_subsample(len(U), frames, seed + 3))
    G = torch.zeros(U.shape[1], U.shape[1], dtype=torch.float64)
    for start in range(0, len(points), block):
        rows = points[start : start + block]
        us = U[rows]
        r = torch.cdist(U, us)  # (n, b)
        scale = float(r.median())
        if not scale > 0:  # most frames repeat one frame: the distances that are not 0 set the scale
            scale = float(r[r > 0].median()) if bool((r > 0).any()) else 1.0
        tiny = 1e-5 * scale
        C = torch.exp(-r.pow(shape) / sigma) * r.clamp_min(tiny).pow(shape - 2) * (-shape / sigma)
        # The point's own term (and duplicates): the kernel has no gradient at r = 0, and rounding leaves r > 0.
        C[rows, torch.arange(len(rows))] = 0.0
        C[r < tiny] = 0.0
        scaled = C.T @ alpha  # (b, outputs): Σ_i c_ib α_il
        for out in range(alpha.shape[1]):
            grad = scaled[:, out : out + 1] * us - (C * alpha[:, out : out + 1]).T @ U  # (b, d) in u coordinates
            grad = grad.double()
            G += grad.T @ grad
    G /= len(points)
    W = W.double()
    return W.T @ G @ W


def _root(M: torch.Tensor, rank: int, diagonal: bool, power: float = 1.0) -> torch.Tensor:
    """W with WᵀW = M^power (diagonal: diag(M)^power only; rank > 0: the top ``rank`` eigen-directions)."""
    if diagonal:
        return torch.diag(torch.diagonal(M).clamp_min(0) ** (power / 2))
    values, vectors = torch.linalg.eigh((M + M.T) / 2)
    order = torch.argsort(values, descending=True)
    if rank:
        order = order[:rank]
    return (values[order].clamp_min(0) ** (power / 2))[:, None] * vectors[:, order].T
