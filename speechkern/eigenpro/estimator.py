"""The scikit-learn estimator: validates inputs, chooses centres, preconditioner and kernel storage, and delegates
the iteration to :mod:`~speechkern.eigenpro.eigenpro2`/:mod:`~speechkern.eigenpro.eigenpro3`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from speechkern import kernels
from speechkern.device import resolve_device
from speechkern.eigenpro import state
from speechkern.eigenpro._sklearn import MultiOutputTags, to_numpy, writable32
from speechkern.eigenpro.eigenpro2 import _AllPointsModel, _PrecomputedAllPointsModel
from speechkern.eigenpro.eigenpro3 import (
    _CentresModel,
    _cholesky_with_jitter,
    _PrecomputedCentresModel,
    projected_top_eigenvalue,
)
from speechkern.eigenpro.loop import train_check_size, train_epochs
from speechkern.eigenpro.preconditioner import (
    DAMPING,
    EIGENVALUE_FLOOR,
    MAX_COMPONENTS,
    Preconditioner,
    build_preconditioner,
    choose_components,
    critical_batch_size,
    default_subsample_size,
    nystrom_eigensystem,
    step_size,
)
from speechkern.errors import SpeechkernError
from speechkern.kernels import (
    DISTANCE_CACHE,
    STORAGE_DTYPES,
    ContentKey,
    ExponentialPowerKernel,
    cached_squared_distances,
    check_budget_gb,
    content_key,
    default_budget_bytes,
    kernel_matrix,
)

logger = logging.getLogger(__name__)

SMALL_PROBLEM_WORK = 4_000_000  # kernel entries per epoch up to which training runs on one thread
STEP_SAMPLE = 2000  # training points on which EigenPro 3 estimates the top eigenvalue of its step operator


def precomputed_bytes(n: int, p: int, n_val: int, batch: int, s: int, d: int, k: int, itemsize: int = 4) -> int:
    """Bytes the precomputed mode needs at its peak for n points, p centres, n_val validation points, batches of
    ``batch``, a subsample of s, d features and k outputs: K(X, Z) and K(X_val, Z) with ``itemsize`` bytes per
    entry, plus the larger of the per-batch transients (at most the gathered rows of K, their subsample columns and
    residuals, for the batch or the training check, whichever is larger; EigenPro 2 gathers rows in small chunks,
    so this is an upper bound) and the set-up transients (augmented copies of the points for the distance
    products). A newly computed distance matrix kept in the cache comes on top (see :func:`spare_bytes`)."""
    matrices, per_batch, setup = _precomputed_parts(n, p, n_val, batch, s, d, k, itemsize)
    return matrices + max(per_batch, setup)


def spare_bytes(budget: int, n: int, p: int, n_val: int, batch: int, s: int, d: int, k: int, itemsize: int) -> int:
    """What a budget leaves for distances kept in the cache beside the precomputed mode (arguments as for
    :func:`precomputed_bytes`): the distances live on after the set-up, beside the kernel matrices and the batch
    transients, and during it beside the set-up transients, never beside both."""
    matrices, per_batch, setup = _precomputed_parts(n, p, n_val, batch, s, d, k, itemsize)
    return budget - max(matrices + per_batch, setup)


def _precomputed_parts(n: int, p: int, n_val: int, batch: int, s: int, d: int, k: int, itemsize: int):
    """(kernel matrices, per-batch transients, set-up transients) in bytes; see :func:`precomputed_bytes`."""
    matrices = itemsize * (n + n_val) * p + 4 * n_val * k
    rows = max(batch, train_check_size(n))
    per_batch = 4 * rows * (p + s + 2 * k)
    setup = 4 * (n + n_val + p) * (d + 2)
    return matrices, per_batch, setup


class EigenProRegressor(MultiOutputTags, RegressorMixin, BaseEstimator):
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
        in GiB; default a third of the device's available memory.
    precompute:
        ``"auto"`` (default): form the kernel matrices K(X, centres) and K(X_val, centres) once at set-up when
        they fit the memory budget (see docs/engine.md), else compute kernel tiles in every product (the
        blocked mode). ``True``: require the precomputed mode (a :class:`~speechkern.errors.SpeechkernError`
        naming the bytes needed when it does not fit). ``False``: always the blocked mode. Both give the same
        results to float32 rounding; the precomputed mode is many times faster per epoch.
    kernel_dtype:
        Storage of precomputed kernel matrices: ``"float32"``, ``"float16"``, ``"bfloat16"``, or ``"auto"``
        (default): float32 when it fits the memory budget, else float16 (half the memory; kernel values kept to
        an absolute 2⁻¹²; predictions within 0.5 % of float32's in the tests, bfloat16 within 3 %). Products are
        always computed in float32.
    ridge:
        λ ≥ 0 of min ‖K(X, Z)·w − Y‖² + λ·wᵀK(Z, Z)·w: EigenPro 2 converges to (K + λI)⁻¹·Y, EigenPro 3 to the
        Nyström normal equations (K(Z, X)·K(X, Z) + λ·K(Z, Z))·w = K(Z, X)·Y. 0 (default): the unregularised fit,
        where early stopping regularises.
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
    kernel_dtype_:
        Storage dtype of the precomputed kernel matrices (``"float32"``, ``"float16"``, ``"bfloat16"``), None when
        blocked.
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
        kernel_dtype: str = "auto",
        ridge: float = 0.0,
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
        self.kernel_dtype = kernel_dtype
        self.ridge = ridge
        self.damping = damping
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.progress_task = progress_task
        self.seed = seed

    # ------------------------------------------------------------------------------------------------------
    # Fitting

    def fit(self, X: Any, y: Any, X_val: Any = None, Y_val: Any = None) -> EigenProRegressor:
        """Train on X (n × features) and y (n,) or (n × outputs); monitor X_val/Y_val when given."""
        X, y = validate_data(self, to_numpy(X), to_numpy(y), multi_output=True, y_numeric=True, dtype=_DTYPES)
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
            Xv = check_array(to_numpy(X_val), dtype=_DTYPES)
            Yv = np.asarray(check_array(to_numpy(Y_val), dtype=_DTYPES, ensure_2d=False))
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
            val_np = None if val is None else tuple(writable32(a) for a in val)
            model = self._setup(writable32(X), writable32(Y), rng, device, budget, val_np)
            val_t = None
            if val_np is not None:
                val_t = tuple(torch.from_numpy(a).to(device) for a in val_np)
            # Precomputed epochs are many small operations around a few large gathered products that run on the
            # model's own worker threads; torch's thread team would only slow the small ones on a busy machine.
            with _small_problem_threads(device, 0) if self.precomputed_ else nullcontext():
                train_epochs(self, model, n, rng, val_t, start)
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
        positive_int("seed", self.seed, allow_zero=True)
        if not (np.isfinite(float(self.ridge)) and float(self.ridge) >= 0.0):
            raise SpeechkernError(f"ridge={self.ridge!r}: expected a finite number ≥ 0")
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
        if self.kernel_dtype != "auto" and self.kernel_dtype not in STORAGE_DTYPES:
            raise SpeechkernError(
                f"kernel_dtype={self.kernel_dtype!r}: expected 'auto', {', '.join(map(repr, STORAGE_DTYPES))}"
            )

    def _budget_bytes(self, device: torch.device) -> int:
        if self.memory_budget_gb is not None:  # the whole memory, not what is free: a run's bands share one budget
            return check_budget_gb("memory_budget_gb", self.memory_budget_gb, device)
        return default_budget_bytes(device)

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
        beta = kernel.max_diagonal + float(self.ridge)  # the diagonal of K + λI
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
            Z_np = check_array(to_numpy(centers), dtype=_DTYPES).astype(np.float32)
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
            spare, dtype = self._precompute_plan(
                lambda size: (n, n, n_val, batch, s, d, k, size), budget, (n + n_val) * n
            )
            if spare is None:
                model = _AllPointsModel(kernel, X_t, Y_t, s, precond, block)
            else:
                # K in the caller's point order, so that fits on the same data share the cached distances.
                x_key = content_key(X, device)
                k_xx = self._precomputed_matrix(X_in, X_in, x_key, x_key, spare, dtype)
                k_val = None
                if val is not None:
                    X_val = torch.from_numpy(val[0]).to(device)
                    k_val = self._precomputed_matrix(X_val, X_in, content_key(val[0], device), x_key, spare, dtype)
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
                    "use fewer centres (kernel.centers) or raise memory_budget_gb (kernel.memory_gb in a recipe)"
                )
            # K(X_B, Z) is kept whole when it fits (one kernel evaluation per batch instead of two).
            left = budget - chol_bytes
            nystrom_cache = self._nystrom_cache_bytes(n, p, n_val, s, left)
            clock = time.perf_counter()
            # The step below is measured on the preconditioned operator, so approximate eigenpairs are safe here.
            precond, batch = self._preconditioner(
                X_s, n, beta, max(1, left // (4 * (d + 3 * k))), device, nystrom_cache, approximate=True
            )
            phases = {"eigensystem": time.perf_counter() - clock}
            clock = time.perf_counter()
            z64 = Z.to(torch.float64)
            k_zz = kernel(z64, z64)
            chol = _cholesky_with_jitter(k_zz)
            k_zs = (k_zz[:, :s] if s_in_z else kernel(z64, X_s.to(torch.float64))).to(torch.float32)
            del k_zz
            phases["centres' factor"] = time.perf_counter() - clock
            clock = time.perf_counter()
            # The step follows the operator this iteration really applies (see projected_top_eigenvalue).
            probe = _CentresModel(kernel, X_t, Y_t, Z, precond, chol, k_zs, False, block)
            sample = torch.from_numpy(rng.choice(n, size=min(n, STEP_SAMPLE), replace=False)).to(device)
            top = max(projected_top_eigenvalue(probe, X_t[sample]), EIGENVALUE_FLOOR)
            explicit = probe.explicit
            del probe
            phases["step (explicit A, λ)"] = time.perf_counter() - clock
            clock = time.perf_counter()
            if self.batch_size is None:
                batch = max(1, min(critical_batch_size(beta, top), max(1, left // (4 * (d + 3 * k))), n))
            dense_batch = 4 * batch * (p + d + 3 * k) <= left
            spare, dtype = self._precompute_plan(
                lambda size: (n, p, n_val, batch, s, d, k, size), budget, (n + n_val) * p, chol_bytes
            )
            if spare is None:
                model = _CentresModel(kernel, X_t, Y_t, Z, precond, chol, k_zs, dense_batch, block, explicit)
            else:
                z_key = content_key(Z)
                k_xz = self._precomputed_matrix(X_t, Z, content_key(X, device), z_key, spare, dtype)
                k_val = None
                if val is not None:
                    X_val = torch.from_numpy(val[0]).to(device)
                    k_val = self._precomputed_matrix(X_val, Z, content_key(val[0], device), z_key, spare, dtype)
                model = _PrecomputedCentresModel(
                    kernel, X_t, Y_t, Z, precond, chol, k_zs, k_xz, k_val, _workers(device), explicit
                )
            phases["kernel matrices"] = time.perf_counter() - clock
            logger.info(
                "%s: set-up seconds: %s",
                self.progress_task,
                ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items()),
            )

        model.ridge = float(self.ridge)
        self.precomputed_ = spare is not None
        self.kernel_dtype_ = str(dtype).removeprefix("torch.") if spare is not None else None
        self.subsample_size_ = int(X_s.shape[0])
        self.n_components_ = precond.n_components
        self.eigenvalues_ = precond.eigenvalues[: precond.n_components + 1].copy()
        self.batch_size_ = batch
        self.step_top_ = precond.new_top if isinstance(model, _PrecomputedAllPointsModel | _AllPointsModel) else top
        self.step_size_ = step_size(batch, beta, self.step_top_)
        self.centers_ = model.centers
        logger.info(
            "%s: %d points, %d centres, subsample %d, %d components (λ1 %.4g, λ_new %.4g), batch %d, step %.4g "
            "(λ %.4g), %s",
            self.progress_task,
            n,
            model.centers.shape[0],
            self.subsample_size_,
            self.n_components_,
            precond.eigenvalues[0],
            precond.new_top,
            batch,
            self.step_size_,
            self.step_top_,
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

    def _precompute_plan(
        self, sizes: Callable[[int], tuple], budget: int, entries: int, fixed: int = 0
    ) -> tuple[int | None, torch.dtype | None]:
        """(spare, dtype) for the precomputed mode, (None, None) for the blocked one. ``sizes(itemsize)`` gives the
        arguments of :func:`precomputed_bytes` for kernel matrices of that entry size, ``fixed`` the bytes held
        throughout besides (the centres' factors); ``spare`` (:func:`spare_bytes`) is what the budget leaves over
        for the distance cache. ``kernel_dtype="auto"`` takes float32 when it fits together with the
        float32 distances of its ``entries`` (kept for the next fit on the same points: the next subband), else
        float16 (whose float16 distances are kept when they fit). Raises when ``precompute=True`` and nothing
        fits."""
        if self.precompute is False or self.precompute is np.False_:
            return None, None
        names = ["float32", "float16"] if self.kernel_dtype == "auto" else [self.kernel_dtype]

        def needed(itemsize: int) -> int:
            return fixed + precomputed_bytes(*sizes(itemsize))

        for name in names:
            dtype = STORAGE_DTYPES[name]
            size = needed(dtype.itemsize)
            shared = 4 * entries if name == "float32" and len(names) > 1 else 0
            if size + shared <= budget:
                if name != "float32" and self.kernel_dtype == "auto":
                    logger.info(
                        "%s: float32 kernel matrices with their distances (kept for the next subband) need %.2f GiB, "
                        "over the memory budget of %.2f GiB: stored in %s",
                        self.progress_task,
                        (needed(4) + 4 * entries) / 2**30,
                        budget / 2**30,
                        name,
                    )
                return spare_bytes(budget - fixed, *sizes(dtype.itemsize)), dtype
        size = needed(STORAGE_DTYPES[names[-1]].itemsize)
        if isinstance(self.precompute, str):  # "auto"
            logger.info(
                "%s: precomputed kernel matrices need %.2f GiB (%s), over the memory budget of %.2f GiB: blocked "
                "products",
                self.progress_task,
                size / 2**30,
                names[-1],
                budget / 2**30,
            )
            return None, None
        raise SpeechkernError(
            f"precompute=True: the precomputed kernel matrices need {size} bytes ({size / 2**30:.2f} GiB: the "
            f"{names[-1]} kernel matrices of the training and validation points against the centres, the batch rows "
            f"and the set-up buffers) but the memory budget is {budget} bytes ({budget / 2**30:.2f} GiB); raise "
            "memory_budget_gb, use fewer points or centres, or set precompute='auto' to fall back to blocked "
            "products"
        )

    def _precomputed_matrix(
        self, X: torch.Tensor, Z: torch.Tensor, x_key: ContentKey, z_key: ContentKey, spare: int, dtype: torch.dtype
    ) -> torch.Tensor:
        """K(X, Z) stored in ``dtype``. The squared distances come from the shared cache (and are kept there if the
        cache can hold them within ``spare`` bytes); for float32 they are turned into kernel values in a copy when
        shared, in place otherwise (so that no second matrix is held when memory is tight). Reduced-precision
        matrices are filled row block by row block from float16 distances, which are cached within ``spare``."""
        if dtype == torch.float32:
            D, shared = cached_squared_distances(X, Z, max_cache_bytes=spare, x_key=x_key, z_key=z_key)
            return self.kernel_.from_squared_distances(D, inplace=not shared)
        # The float16 distances serve every fit on these points (the subbands, another (γ, σ)): kept when they fit.
        key = ("distances16", x_key, z_key)
        R = DISTANCE_CACHE.get(key)
        if R is None and 2 * X.shape[0] * Z.shape[0] <= spare:
            R = kernels.distance_matrix16(X, Z)
            DISTANCE_CACHE.put(key, R, spare)
        elif R is None:
            logger.info(
                "%s: the float16 distances (%.2f GiB) do not fit the %.2f GiB the budget leaves: not kept for the "
                "next subband (raise memory_budget_gb to share them)",
                self.progress_task,
                2 * X.shape[0] * Z.shape[0] / 2**30,
                max(spare, 0) / 2**30,
            )
        return kernel_matrix(self.kernel_, X, Z, dtype, R)

    def _preconditioner(
        self,
        X_s: torch.Tensor,
        n: int,
        beta: float,
        batch_limit: int,
        device: torch.device,
        cache_bytes: int = 0,
        approximate: bool = False,
    ) -> tuple[Preconditioner, int]:
        """Eigensystem on the subsample (``approximate``: see :func:`nystrom_eigensystem`), q within the memory
        limit, and the batch size."""
        s = X_s.shape[0]
        batch_limit = max(1, int(batch_limit))
        max_q = MAX_COMPONENTS if self.n_components is None else int(self.n_components)
        max_q = min(max_q, s - 1)
        values, vectors = nystrom_eigensystem(self.kernel_, X_s, max_q + 1, cache_bytes, approximate, self.seed)
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

    def predict(self, X: Any) -> np.ndarray:
        """Predictions (n,) for 1-D training targets, else (n × outputs); float64 for float64 X, else float32."""
        check_is_fitted(self, "weights_")
        X = validate_data(self, to_numpy(X), reset=False, dtype=_DTYPES)
        out_dtype = X.dtype
        pred = self.predict_tensor(torch.from_numpy(writable32(X)))
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
    # Persistence (see :mod:`speechkern.eigenpro.state`)

    def to_state(self, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (keys ``prefix + name``, contiguous, on the CPU) and a JSON-able configuration."""
        return state.to_state(self, prefix)

    @classmethod
    def from_state(
        cls, tensors: dict[str, torch.Tensor], config: dict[str, Any], prefix: str = "", device: str | None = None
    ) -> EigenProRegressor:
        """A fitted estimator from :meth:`to_state`'s output; tensors go to ``device`` (default ``"auto"``: CUDA when
        available, else the CPU, whatever device the model was trained on)."""
        return state.from_state(cls, tensors, config, prefix, device)

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the model to one safetensors file (JSON configuration in its header), atomically.

        Refuses to replace an existing file unless ``overwrite``. Returns the path written.
        """
        return state.save(self, path, overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> EigenProRegressor:
        """Read a model written by :meth:`save` (no code from the file is run); ``device`` as in :meth:`from_state`."""
        return state.load(cls, path, device)


# ---------------------------------------------------------------------------------------------------------
# Helpers

_DTYPES = (np.float64, np.float32)


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
