"""The exponential power kernel and its products, computed in blocks (SPEC §6).

k(x, z) = exp(−‖x − z‖^γ / σ) with shape γ ∈ (0, 2] (γ = 1 Laplacian, γ = 2 Gaussian) and bandwidth σ > 0;
positive definite for every γ in that range, with k(x, x) = 1.

Two backends compute K(X, Z)·W without ever holding the n × m matrix:

* ``"torch"`` (the default on CPU): tiles of K are formed in one reused buffer. Squared distances come from one
  matrix product of augmented inputs, [x, ‖x‖², 1]·[−2z, 1, ‖z‖²]ᵀ = ‖x − z‖², so the norms cost no extra pass
  over the tile; then clamp at 0, the power γ/2 (skipped for γ = 2, a square root for γ = 1), the scale −1/σ
  and the exponential, all in place while the tile is in cache, and finally the tile's product with the
  matching rows of W is accumulated.
* ``"keops"`` (the default on CUDA): a KeOps LazyTensor reduction ``(-(sqdist ** (γ/2)) / σ).exp() @ W``.

Accuracy of the product form. ‖x‖² + ‖z‖² − 2x·z cancels for nearby points: in float32 the result carries an
error of up to ~6e-7·(‖x‖² + ‖z‖²) (measured for 8–320 features), which the power γ/2 < 1 magnifies: for 256
standardised features a point's distance to itself comes out as up to ~0.02 instead of 0, so k(x, x) falls
short of 1 by ~0.02^γ/σ, differently in every block, which spoils interpolation. Two cheap measures fix it.
Both inputs are first shifted by the mean of Z (distances do not change; the norms, and so the error, shrink
when the features are not centred). And the squared distance is computed as ‖x − z‖² − δ·(‖x‖² + ‖z‖²), with
δ = 8·eps·√(features + 2) a few times the rounding error, folded into the augmented columns at no cost, before
the clamp at 0: coincident points get exactly 0 (k(x, x) = 1), and other distances move by a relative ~1e-5
of the norms, below float32 noise for near points and negligible for the rest. The KeOps backend computes
distances from differences, which needs neither measure; the two backends agree to float32 precision.

CPU threads. The tiles are shared out among ``torch.get_num_threads()`` worker threads that each run torch on
one thread (see :func:`_on_cpu_workers`): on a busy machine this is several times faster than letting every
small operation fork and join torch's own thread team, and on an idle one it is as fast.

Precomputed matrices. When a whole kernel matrix fits in memory, it is cheaper to form it once than to redo its
tiles in every product: :func:`squared_distances` returns the n × m matrix of ‖x − z‖² with exactly the tiles'
numerics (shift by the mean of Z, the slack δ, the clamp at 0), and
:meth:`ExponentialPowerKernel.from_squared_distances` turns such a matrix into kernel values (in place when asked),
so ``kernel.from_squared_distances(squared_distances(X, Z))`` equals ``kernel(X, Z)``. The distances do not
depend on (γ, σ), and the distance product (n·m·features multiply-adds) is by far the dearest part, so
:func:`cached_squared_distances` keeps recent distance matrices in a small process-wide cache
(:data:`DISTANCE_CACHE`) keyed by the *content* of X and Z (shape, dtype, device and a BLAKE2 digest of the
bytes, ~0.1 s per 100 MB): consecutive fits on the same data (the subband models, the autotune evaluations on one
subsample) compute the product once and redo only the elementwise transform. The cache holds at most
``max_entries`` matrices (default 12) and, at each insertion, no more bytes in total than the inserting caller
allows (least recently used entries are dropped to make room; a matrix that does not fit is not kept). Cached
matrices are shared: callers must treat them as read-only and transform a copy. :func:`clear_distance_cache`
empties it, :func:`distance_cache_info` reports hits, misses and the bytes held; a lock makes it thread-safe.
:func:`gathered_mm` multiplies chosen rows of such a precomputed matrix by weights, gathering the rows in
cache-sized chunks on the worker threads, so the gathered block is never written out whole.

Inputs are torch tensors (any device, float32 or float64; NumPy arrays are converted); products are computed in
the inputs' dtype. The solver in :mod:`speechkern.eigenpro` uses float32 for speed and float64 only for the small
eigensystems.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from speechkern.errors import SpeechkernError

BACKENDS = ("auto", "torch", "keops")

# Tile shape on the CPU, per worker thread: a 512 × 2048 float32 tile (4 MiB) keeps the elementwise passes in
# cache while the distance product stays large enough for the BLAS to run near its peak (measured on 2 EPYC
# cores; smaller tiles lose GEMM efficiency, larger ones spill the elementwise passes to memory).
CPU_TILE_ROWS = 512
CPU_TILE_COLS = 2048
# Dense blocks K(X, Z) are filled in row blocks of about this many entries per worker on the CPU, but never
# fewer rows than this (thinner products lose BLAS efficiency).
CPU_DENSE_BLOCK_ENTRIES = 1 << 20
CPU_DENSE_MIN_ROWS = 256
# On a GPU the tile is as large as the memory budget allows, capped at this many entries (1 GiB of float32).
GPU_TILE_MAX_ENTRIES = 1 << 28


def as_tensor(x: Any, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` as a torch tensor on ``device`` (default: where it is) in ``dtype`` (default: float32 unless float64)."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if dtype is None:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.to(device=device if device is not None else x.device, dtype=dtype)


def available_memory_bytes(device: torch.device | str) -> int:
    """Memory free for new tensors on ``device``, in bytes: CUDA's free memory, or the OS's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        # Linux reports MemAvailable (free plus reclaimable cache), the honest figure for new allocations.
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30  # an unknown system: assume 4 GiB


def configure_keops_cache() -> str:
    """Point KeOps' compile cache at a writable folder before pykeops is imported; returns the folder.

    ``$KEOPS_CACHE_FOLDER`` wins when set; otherwise ``<speechkern cache>/keops`` (``$SPEECHKERN_CACHE`` or
    ``~/.cache/speechkern``), or a temporary folder when that is not writable (a read-only home in a container).
    """
    folder = os.environ.get("KEOPS_CACHE_FOLDER")
    if not folder:
        from speechkern.cache import default_cache_dir

        folder = str(default_cache_dir() / "keops")
        try:
            os.makedirs(folder, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise PermissionError(folder)
        except OSError:
            import tempfile

            folder = tempfile.mkdtemp(prefix="speechkern-keops-")
        os.environ["KEOPS_CACHE_FOLDER"] = folder
    return folder


def keops_available() -> bool:
    """True when pykeops imports (it compiles its formulas on first use, which needs a C++ compiler)."""
    configure_keops_cache()
    try:
        import pykeops.torch  # noqa: F401
    except Exception:  # pykeops raises a variety of errors when its toolchain is missing
        return False
    return True


class ExponentialPowerKernel:
    """The exponential power kernel exp(−‖x − z‖^γ / σ) with blocked products.

    Parameters
    ----------
    shape:
        γ ∈ (0, 2]; 1 is the Laplacian kernel, 2 the Gaussian.
    bandwidth:
        σ > 0, in the units of ‖x − z‖^γ (the exponent divides the powered distance, not the distance).
    backend:
        ``"torch"`` (blocked dense tiles), ``"keops"`` (KeOps LazyTensors) or ``"auto"``: KeOps when the tensors
        are on a CUDA device and pykeops imports, else torch.
    memory_budget_bytes:
        Upper bound on the bytes one product's work buffer may take; default a quarter of the device's free
        memory, capped by the cache-friendly tile on the CPU.
    """

    def __init__(
        self,
        shape: float = 1.0,
        bandwidth: float = 1.0,
        backend: str = "auto",
        memory_budget_bytes: int | None = None,
    ) -> None:
        shape, bandwidth = float(shape), float(bandwidth)
        if not (0.0 < shape <= 2.0):
            raise SpeechkernError(f"kernel shape γ = {shape:g}: expected 0 < γ ≤ 2 (1 Laplacian, 2 Gaussian)")
        if not (math.isfinite(bandwidth) and bandwidth > 0.0):
            raise SpeechkernError(f"kernel bandwidth σ = {bandwidth:g}: expected a finite number above 0")
        if backend not in BACKENDS:
            raise SpeechkernError(f"kernel backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if memory_budget_bytes is not None and memory_budget_bytes <= 0:
            raise SpeechkernError(f"memory budget {memory_budget_bytes} bytes: expected a positive number")
        self.shape = shape
        self.bandwidth = bandwidth
        self.backend = backend
        self.memory_budget_bytes = memory_budget_bytes

    # ------------------------------------------------------------------------------------------------------
    # Description

    def __repr__(self) -> str:
        return f"ExponentialPowerKernel(shape={self.shape:g}, bandwidth={self.bandwidth:g}, backend={self.backend!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExponentialPowerKernel) and self.to_config() == other.to_config()

    def __hash__(self) -> int:
        return hash((self.shape, self.bandwidth, self.backend))

    @property
    def max_diagonal(self) -> float:
        """β = max_x k(x, x); 1 for this kernel, since k(x, x) = exp(0)."""
        return 1.0

    def diag(self, X: Any) -> torch.Tensor:
        """k(x_i, x_i) for every row of X: all ones."""
        X = as_tensor(X)
        return torch.ones(X.shape[0], dtype=X.dtype, device=X.device)

    def to_config(self) -> dict[str, Any]:
        """JSON-able parameters; :meth:`from_config` rebuilds the kernel."""
        return {"name": "exponential_power", "shape": self.shape, "bandwidth": self.bandwidth, "backend": self.backend}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ExponentialPowerKernel:
        """The kernel described by :meth:`to_config`'s output."""
        if config.get("name", "exponential_power") != "exponential_power":
            raise SpeechkernError(f"kernel {config.get('name')!r}: only 'exponential_power' is known")
        return cls(float(config["shape"]), float(config["bandwidth"]), str(config.get("backend", "auto")))

    def resolve_backend(self, device: torch.device | str) -> str:
        """The backend that will run on ``device``: ``"torch"`` or ``"keops"``."""
        if self.backend != "auto":
            return self.backend
        return "keops" if torch.device(device).type == "cuda" and keops_available() else "torch"

    # ------------------------------------------------------------------------------------------------------
    # Products

    def prepare(self, Z: Any) -> PreparedPoints:
        """Precompute what every product against the points Z needs (their shift and augmented copy).

        Pass the result wherever Z is expected, to avoid redoing this O(m·features) work in repeated products
        against the same points (the solver does so with its centres).
        """
        return prepare_points(Z)

    def __call__(self, X: Any, Z: Any) -> torch.Tensor:
        """The dense block K(X, Z), shape (n, m), in the promoted dtype of X and Z, on Z's device.

        Meant for blocks that fit in memory (subsamples, batches); for K(X, Z)·W use :meth:`mm`.
        Both backends return the same dense block, computed with torch.
        """
        X, prepared = _paired_inputs(X, Z)
        out = torch.empty(X.shape[0], prepared.size, dtype=X.dtype, device=X.device)
        _fill_dense(X, prepared, out, self._finish_tile)
        return out

    def from_squared_distances(
        self, D: torch.Tensor, *, inplace: bool = False, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Kernel values exp(−D^(γ/2)/σ) from squared distances D (any shape, e.g. :func:`squared_distances`).

        With ``inplace`` D itself is overwritten and returned (no second matrix is allocated); otherwise the values
        go to ``out`` (same shape and dtype as D) or a new tensor, and D is left untouched, as a shared (cached)
        matrix must be. Applies the same clamp, power, scale and exponential as the tiles of :meth:`mm`, so
        ``kernel.from_squared_distances(squared_distances(X, Z))`` equals ``kernel(X, Z)``. On the CPU the work
        is shared among the worker threads in cache-sized row blocks (one read and one write of the matrix).
        """
        if inplace:
            if out is not None and out.data_ptr() != D.data_ptr():
                raise SpeechkernError("from_squared_distances: give either inplace=True or out, not both")
            target = D
        elif out is None:
            target = torch.empty_like(D, memory_format=torch.contiguous_format)
        else:
            if out.shape != D.shape or out.dtype != D.dtype or out.device != D.device:
                raise SpeechkernError(
                    f"from_squared_distances: out is {tuple(out.shape)} {out.dtype} on {out.device}; expected "
                    f"{tuple(D.shape)} {D.dtype} on {D.device}"
                )
            target = out
        if not D.numel():
            return target
        if D.device.type != "cpu" or D.ndim != 2 or not (D.is_contiguous() and target.is_contiguous()):
            if target is not D:
                torch.clamp_min(D, 0.0, out=target)
            self._finish_tile(target)
            return target
        rows = max(1, CPU_DENSE_BLOCK_ENTRIES // max(1, D.shape[1]))

        def transform(starts: list[int]) -> None:
            for i in starts:
                block = target[i : i + rows]
                if target is not D:
                    torch.clamp_min(D[i : i + rows], 0.0, out=block)
                self._finish_tile(block)

        _on_cpu_workers(list(range(0, D.shape[0], rows)), transform)
        return target

    def mm(
        self,
        X: Any,
        Z: Any,
        W: Any,
        block_size: int | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """K(X, Z) @ W, shape (n, k) (or (n,) for a 1-D W), without forming K(X, Z).

        Z may be a :class:`PreparedPoints` from :meth:`prepare`. ``block_size`` bounds the number of kernel
        entries held at once (the tile is about that many entries); default: a cache-sized tile on the CPU, a
        quarter of free memory (at most 2^28 entries) on a GPU. ``out``, when given, receives the result.
        """
        X, prepared = self._inputs(X, Z)
        W = as_tensor(W, device=X.device, dtype=X.dtype)
        vector = W.ndim == 1
        W2 = W.unsqueeze(1) if vector else W
        if W2.ndim != 2 or W2.shape[0] != prepared.size:
            raise SpeechkernError(f"kernel product: W has shape {tuple(W.shape)}, expected ({prepared.size}, k)")
        if out is None:
            out = torch.empty((X.shape[0],) if vector else (X.shape[0], W2.shape[1]), dtype=X.dtype, device=X.device)
        target = out.unsqueeze(1) if out.ndim == 1 else out
        if target.shape != (X.shape[0], W2.shape[1]):
            raise SpeechkernError(
                f"kernel product: out has shape {tuple(out.shape)}, expected {(X.shape[0], W2.shape[1])}"
            )
        if X.shape[0] == 0 or W2.shape[1] == 0:
            return out
        if prepared.size == 0:
            target.zero_()
            return out
        if self.resolve_backend(X.device) == "keops":
            target.copy_(self._mm_keops(X, prepared.points, W2))
        elif target.is_contiguous():
            self._mm_torch(X, prepared, W2, target, block_size)
        else:  # the tiles are written with out= products, which need contiguous rows
            result = torch.empty(target.shape, dtype=X.dtype, device=X.device)
            self._mm_torch(X, prepared, W2, result, block_size)
            target.copy_(result)
        return out

    def _inputs(self, X: Any, Z: Any) -> tuple[torch.Tensor, PreparedPoints]:
        """X and prepared Z in one dtype (float64 if either is) on Z's device."""
        return _paired_inputs(X, Z)

    def _tile_shape(self, n: int, m: int, device: torch.device, block_size: int | None) -> tuple[int, int]:
        """Rows and columns of one tile of K (each CPU worker thread holds one)."""
        itemsize = 8  # plan for the wider dtype; float32 simply uses half
        if block_size is None:
            budget = self.memory_budget_bytes or available_memory_bytes(device) // 4
            cap = GPU_TILE_MAX_ENTRIES if device.type == "cuda" else CPU_TILE_ROWS * CPU_TILE_COLS
            entries = max(1, min(cap, budget // itemsize // max(1, torch.get_num_threads())))
        else:
            if block_size <= 0:
                raise SpeechkernError(f"block_size {block_size}: expected a positive number of kernel entries")
            entries = int(block_size)
        # Wide tiles favour the product with W; the row count is capped so a CPU tile stays cache-sized.
        cols = min(m, max(1, entries // min(n, CPU_TILE_ROWS)))
        rows = min(n, max(1, entries // cols))
        return rows, cols

    def _mm_torch(
        self, X: torch.Tensor, prepared: PreparedPoints, W: torch.Tensor, out: torch.Tensor, block_size: int | None
    ) -> None:
        n, m, k = X.shape[0], prepared.size, W.shape[1]
        rows, cols = self._tile_shape(n, m, X.device, block_size)
        x_aug = _left_augmented(X, prepared)
        z_aug = prepared.augmented

        def accumulate(row_starts: list[int], col_range: tuple[int, int], target: torch.Tensor) -> None:
            """target[rows] = Σ over the column tiles in col_range of K(tile)·W(tile), one reused buffer."""
            buffer = torch.empty(rows * cols, dtype=X.dtype, device=X.device)
            for i in row_starts:
                r = min(rows, n - i)
                acc = target[i : i + r]
                for j in range(col_range[0], col_range[1], cols):
                    c = min(cols, col_range[1] - j)
                    tile = buffer[: r * c].view(r, c)
                    torch.mm(x_aug[i : i + r], z_aug[j : j + c].T, out=tile)
                    self._finish_tile(tile)
                    if j == col_range[0]:
                        torch.mm(tile, W[j : j + c], out=acc)
                    else:
                        acc.addmm_(tile, W[j : j + c])

        row_starts = list(range(0, n, rows))
        col_tiles = list(range(0, m, cols))
        workers = _cpu_workers(X.device)
        if workers <= 1 or len(row_starts) >= workers or len(col_tiles) < workers:
            # Row blocks over the workers (or everything on one): each writes its own rows of out.
            _on_cpu_workers(row_starts, lambda starts: accumulate(starts, (0, m), out))
            return
        # Few rows, many columns (a small batch against many points): each worker sums over its share of the
        # column tiles into its own (n × k) partial result, and the partial results are added.
        bounds = [col_tiles[len(col_tiles) * w // workers] for w in range(workers)] + [m]
        partials = [torch.empty(n, k, dtype=X.dtype, device=X.device) for _ in range(workers)]
        ranges = [(bounds[w], bounds[w + 1], partials[w]) for w in range(workers)]
        _on_cpu_workers(ranges, lambda parts: [accumulate(row_starts, (a, b), t) for a, b, t in parts])
        torch.sum(torch.stack(partials), dim=0, out=out)

    def _finish_tile(self, tile: torch.Tensor) -> None:
        """Squared distances → kernel values, in place."""
        tile.clamp_min_(0.0)
        if self.shape == 1.0:
            tile.sqrt_()
        elif self.shape != 2.0:
            tile.pow_(self.shape / 2.0)
        tile.mul_(-1.0 / self.bandwidth)
        tile.exp_()

    def _mm_keops(self, X: torch.Tensor, Z: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        try:
            configure_keops_cache()
            from pykeops.torch import LazyTensor
        except Exception as exc:  # pykeops missing or broken toolchain
            raise SpeechkernError(
                f"kernel backend 'keops': pykeops cannot be used here ({exc}); choose backend='torch'"
            ) from exc
        x = LazyTensor(X.contiguous()[:, None, :])
        z = LazyTensor(Z.to(X.dtype).contiguous()[None, :, :])
        d2 = x.sqdist(z)
        if self.shape == 2.0:
            powered = d2
        elif self.shape == 1.0:
            powered = d2.sqrt()
        else:
            powered = d2 ** (self.shape / 2.0)  # a float exponent is a runtime parameter: no recompilation
        K = (-powered / self.bandwidth).exp()
        return K @ W.contiguous()


@dataclass(frozen=True)
class PreparedPoints:
    """Points Z ready for kernel products: ``points`` (m × features), ``shift`` (their mean) and ``augmented``
    ([−2(z − μ), 1, (1 − δ)‖z − μ‖²], m × (features + 2)). Built by :meth:`ExponentialPowerKernel.prepare`."""

    points: torch.Tensor
    shift: torch.Tensor
    augmented: torch.Tensor

    @property
    def size(self) -> int:
        """Number of points."""
        return int(self.points.shape[0])


def prepare_points(Z: Any) -> PreparedPoints:
    """Z (m × features) shifted by its mean and augmented for distance products (see :class:`PreparedPoints`).

    Independent of the kernel's parameters; :meth:`ExponentialPowerKernel.prepare` and :func:`squared_distances`
    both use it.
    """
    if isinstance(Z, PreparedPoints):
        return Z
    Z = as_tensor(Z)
    if Z.ndim != 2:
        raise SpeechkernError(f"kernel inputs must be 2-D (points × features); got {Z.ndim}-D")
    shift = Z.mean(dim=0) if Z.shape[0] else torch.zeros(Z.shape[1], dtype=Z.dtype, device=Z.device)
    zc = Z - shift
    keep = 1.0 - _distance_slack(Z.dtype, Z.shape[1])
    sq = torch.einsum("ij,ij->i", zc, zc).unsqueeze(1).mul_(keep)
    augmented = torch.cat([zc.mul_(-2.0), torch.ones_like(sq), sq], dim=1)
    return PreparedPoints(points=Z, shift=shift, augmented=augmented)


def squared_distances(X: Any, Z: Any, out: torch.Tensor | None = None) -> torch.Tensor:
    """The n × m matrix of ‖x − z‖² (clamped at 0), in the promoted dtype of X and Z, on Z's device.

    Computed exactly as the kernel's tiles compute them (shift by the mean of Z, slack δ, one product of
    augmented inputs, clamp at 0; see the module notes), in row blocks shared among the CPU worker threads, so
    :meth:`ExponentialPowerKernel.from_squared_distances` of the result equals the kernel's dense block. Z may be
    a :class:`PreparedPoints`. ``out`` (n × m, contiguous), when given, receives the result.
    """
    X, prepared = _paired_inputs(X, Z)
    shape = (X.shape[0], prepared.size)
    if out is None:
        out = torch.empty(shape, dtype=X.dtype, device=X.device)
    elif out.shape != shape or out.dtype != X.dtype or out.device != X.device or not out.is_contiguous():
        raise SpeechkernError(
            f"squared_distances: out is {tuple(out.shape)} {out.dtype} on {out.device}; expected a contiguous "
            f"{shape} {X.dtype} tensor on {X.device}"
        )
    _fill_dense(X, prepared, out, lambda block: block.clamp_min_(0.0))
    return out


def shared_center_products(
    X: Any, centers: Any, kernels: list[ExponentialPowerKernel], weights: list[torch.Tensor]
) -> list[torch.Tensor]:
    """K_i(X, Z)·W_i for several kernels on the same centres Z (the subband models'): one distance product per
    block of rows, shared by every kernel, then each kernel's powers, exponential and weights while the block is
    in cache.

    X: (n × features); centers: Z (m × features) or its :func:`prepare_points`; kernels and weights (m × k_i)
    paired. Returns one (n × k_i) tensor per kernel, in Z's dtype and on its device; each equals
    ``kernels[i].mm(X, Z, weights[i])`` to rounding. On the CPU the row blocks are shared among the worker threads.
    """
    X, prepared = _paired_inputs(X, centers)
    if len(kernels) != len(weights):
        raise SpeechkernError(f"{len(kernels)} kernels but {len(weights)} weight matrices; expected one each")
    n, m = X.shape[0], prepared.size
    outs = [torch.empty((n, w.shape[1]), dtype=X.dtype, device=X.device) for w in weights]
    if not n:
        return outs
    z_aug = prepared.augmented
    on_cpu = X.device.type == "cpu"
    rows = max(CPU_DENSE_MIN_ROWS, CPU_DENSE_BLOCK_ENTRIES // m) if on_cpu else max(1, (1 << 26) // m)
    rows = min(rows, n)
    shapes = sorted({k.shape for k in kernels})

    features = X.shape[1]
    keep = 1.0 - _distance_slack(X.dtype, features)

    def fill(starts: list[int]) -> None:
        dist = torch.empty((rows, m), dtype=X.dtype, device=X.device)
        powered = torch.empty_like(dist) if any(s != 2.0 for s in shapes) else dist
        values = torch.empty_like(dist)
        x_aug = torch.empty((rows, features + 2), dtype=X.dtype, device=X.device)
        x_aug[:, features + 1] = 1.0
        for i in starts:
            r = min(rows, n - i)
            d, p, k_block, xa = dist[:r], powered[:r], values[:r], x_aug[:r]
            xc = torch.sub(X[i : i + r], prepared.shift, out=xa[:, :features])  # _left_augmented, in place
            xa[:, features] = torch.einsum("ij,ij->i", xc, xc).mul_(keep)
            torch.mm(xa, z_aug.T, out=d)
            d.clamp_min_(0.0)
            for shape in shapes:
                if shape == 1.0:
                    torch.sqrt(d, out=p)
                elif shape != 2.0:
                    torch.pow(d, shape / 2.0, out=p)
                source = d if shape == 2.0 else p
                for kernel, w, out in zip(kernels, weights, outs, strict=True):
                    if kernel.shape == shape:
                        torch.mul(source, -1.0 / kernel.bandwidth, out=k_block)
                        k_block.exp_()
                        torch.mm(k_block, w.to(dtype=X.dtype), out=out[i : i + r])

    with torch.no_grad():
        if on_cpu:
            _on_cpu_workers(list(range(0, n, rows)), fill)
        else:
            fill(list(range(0, n, rows)))
    return outs


def _paired_inputs(X: Any, Z: Any) -> tuple[torch.Tensor, PreparedPoints]:
    """X and prepared Z in one dtype (float64 if either is) on Z's device."""
    if isinstance(Z, PreparedPoints):
        prepared = Z
    else:
        Zt = as_tensor(Z)
        Xt = as_tensor(X)
        if Xt.dtype == torch.float64 and Zt.dtype != torch.float64:
            Zt = Zt.to(torch.float64)
        prepared = prepare_points(Zt)
    X = as_tensor(X, device=prepared.augmented.device, dtype=prepared.augmented.dtype)
    if X.ndim != 2:
        raise SpeechkernError(f"kernel inputs must be 2-D (points × features); got {X.ndim}-D")
    if X.shape[1] != prepared.points.shape[1]:
        raise SpeechkernError(
            f"kernel inputs have {X.shape[1]} and {prepared.points.shape[1]} features; expected the same number"
        )
    return X, prepared


def _left_augmented(X: torch.Tensor, prepared: PreparedPoints) -> torch.Tensor:
    """[x − μ, (1 − δ)‖x − μ‖², 1]: its product with the prepared points is the (slackened) squared distance."""
    xc = X - prepared.shift
    keep = 1.0 - _distance_slack(X.dtype, X.shape[1])
    sq = torch.einsum("ij,ij->i", xc, xc).unsqueeze(1).mul_(keep)
    return torch.cat([xc, sq, torch.ones_like(sq)], dim=1)


def _fill_dense(
    X: torch.Tensor, prepared: PreparedPoints, out: torch.Tensor, finish: Callable[[torch.Tensor], Any]
) -> None:
    """out (n × m, contiguous) = finish(squared distances), one distance product per row block, each block finished
    while it is in cache; on the CPU the row blocks are shared among the worker threads."""
    n, m = out.shape
    if not out.numel():
        return
    x_aug, z_aug = _left_augmented(X, prepared), prepared.augmented
    if X.device.type != "cpu":
        torch.mm(x_aug, z_aug.T, out=out)
        finish(out)
        return
    rows = max(CPU_DENSE_MIN_ROWS, CPU_DENSE_BLOCK_ENTRIES // m)

    def fill(starts: list[int]) -> None:
        for i in starts:
            block = out[i : i + rows]
            torch.mm(x_aug[i : i + rows], z_aug.T, out=block)
            finish(block)

    _on_cpu_workers(list(range(0, n, rows)), fill)


# ---------------------------------------------------------------------------------------------------------
# A process-wide cache of squared-distance matrices

ContentKey = tuple[tuple[int, ...], str, str, str]


def content_key(a: Any, device: torch.device | str | None = None) -> ContentKey:
    """(shape, dtype, device, BLAKE2 digest of the bytes) of an array or tensor: equal keys mean equal content.

    ``device`` names where the data will be used (default: the tensor's device, the CPU for NumPy arrays), so the
    same values on two devices get two keys. Tensors off the CPU are copied to the host to be hashed.
    """
    if isinstance(a, torch.Tensor):
        where = str(torch.device(device)) if device is not None else str(a.device)
        dtype = str(a.dtype).removeprefix("torch.")
        host = a.detach().to("cpu").contiguous().numpy()
    else:
        host = np.ascontiguousarray(a)
        where = str(torch.device(device)) if device is not None else "cpu"
        dtype = str(host.dtype)
    digest = hashlib.blake2b(memoryview(host).cast("B"), digest_size=16).hexdigest()
    return tuple(int(v) for v in host.shape), dtype, where, digest


@dataclass(frozen=True)
class DistanceCacheInfo:
    """Statistics of the :class:`DistanceCache`: lookups that found their matrix (``hits``) or not (``misses``,
    each followed by a distance product), matrices and bytes held now, and the entry limit."""

    hits: int
    misses: int
    entries: int
    bytes: int
    max_entries: int


class DistanceCache:
    """A small, thread-safe, least-recently-used cache of squared-distance matrices keyed by their inputs' content.

    Bounded twice: at most ``max_entries`` matrices (0 disables the cache), and each insertion is given the most
    bytes the cache may hold in total afterwards (the inserting caller's spare memory budget): older entries are
    dropped to make room, and a matrix larger than that allowance is not kept at all. Cached matrices are shared
    with every caller that finds them and must never be modified in place.
    """

    def __init__(self, max_entries: int = 12) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get(self, key: tuple) -> torch.Tensor | None:
        """The matrix stored under ``key`` (now the most recently used), or None (counted as a miss)."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self._misses += 1
                return None
            self._hits += 1
            self._entries.move_to_end(key)
            return found

    def put(self, key: tuple, matrix: torch.Tensor, max_bytes: int) -> bool:
        """Keep ``matrix`` under ``key`` if the cache can then hold at most ``max_bytes`` in total (dropping the
        least recently used entries as needed); returns whether it was kept."""
        size = matrix.nbytes
        with self._lock:
            self._entries.pop(key, None)
            if self.max_entries <= 0 or size > max_bytes:
                return False
            held = sum(t.nbytes for t in self._entries.values())
            while self._entries and (len(self._entries) >= self.max_entries or held + size > max_bytes):
                _, dropped = self._entries.popitem(last=False)
                held -= dropped.nbytes
            self._entries[key] = matrix
            return True

    def clear(self) -> None:
        """Drop every matrix (the statistics are kept)."""
        with self._lock:
            self._entries.clear()

    def info(self) -> DistanceCacheInfo:
        """Current statistics."""
        with self._lock:
            return DistanceCacheInfo(
                hits=self._hits,
                misses=self._misses,
                entries=len(self._entries),
                bytes=sum(t.nbytes for t in self._entries.values()),
                max_entries=self.max_entries,
            )


DISTANCE_CACHE = DistanceCache()
"""The process-wide cache used by :func:`cached_squared_distances` (and so by EigenPro's precomputed mode)."""


def clear_distance_cache() -> None:
    """Free every squared-distance matrix held by :data:`DISTANCE_CACHE` (e.g. after the kernel models are trained)."""
    DISTANCE_CACHE.clear()


def distance_cache_info() -> DistanceCacheInfo:
    """Hits, misses, entries and bytes of :data:`DISTANCE_CACHE`."""
    return DISTANCE_CACHE.info()


def cached_squared_distances(
    X: Any,
    Z: Any,
    *,
    max_cache_bytes: int,
    x_key: ContentKey | None = None,
    z_key: ContentKey | None = None,
    cache: DistanceCache | None = None,
) -> tuple[torch.Tensor, bool]:
    """:func:`squared_distances` of X and Z, taken from the cache when an earlier call computed them.

    Returns ``(D, shared)``. ``shared`` is True when D is held by the cache (found there, or kept there now): it
    must then be treated as read-only (transform a copy, e.g. ``from_squared_distances(D)``). When False, D is
    the caller's own and may be overwritten (``from_squared_distances(D, inplace=True)``), so that no second
    matrix is allocated. ``max_cache_bytes`` bounds the bytes the cache may hold after keeping a newly computed D
    (0: never keep it). ``x_key``/``z_key`` are :func:`content_key` values of X and Z when the caller has them.
    """
    cache = DISTANCE_CACHE if cache is None else cache
    z_device = Z.points.device if isinstance(Z, PreparedPoints) else None
    x_key = x_key if x_key is not None else content_key(X, z_device)
    if z_key is None:
        z_key = content_key(Z.points if isinstance(Z, PreparedPoints) else Z)
    key = ("squared_distances", x_key, z_key)
    found = cache.get(key)
    if found is not None:
        return found, True
    D = squared_distances(X, Z)
    return D, cache.put(key, D, max_cache_bytes)


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def distance_matrix16(X: Any, Z: Any) -> torch.Tensor:
    """The n × m matrix of distances ‖x − z‖ (not squared) in float16, built in row blocks from
    :func:`squared_distances`: the part of every kernel matrix on these points that does not depend on (γ, σ), at
    a quarter of the float64 size. float16 keeps a relative 2⁻¹¹ of each distance and reaches 65504, beyond any
    distance between standardised features."""
    X, prepared = _paired_inputs(X, Z)
    n, m = X.shape[0], prepared.size
    out = torch.empty(n, m, dtype=torch.float16, device=prepared.points.device)
    rows = max(CPU_DENSE_MIN_ROWS, (16 * CPU_DENSE_BLOCK_ENTRIES) // max(1, m))
    for i in range(0, n, rows):
        out[i : i + rows].copy_(squared_distances(X[i : i + rows], prepared).sqrt_())
    return out


def kernel_matrix(
    kernel: ExponentialPowerKernel,
    X: Any,
    Z: Any,
    dtype: torch.dtype = torch.float32,
    R: torch.Tensor | None = None,
) -> torch.Tensor:
    """K(X, Z) (n × m) stored in ``dtype`` (float32, float16 or bfloat16), built in row blocks so that only one
    float32 block is alive besides the result.

    float32: equal to ``kernel(X, Z)``. Reduced precision: the kernel of the float16 distances of
    :func:`distance_matrix16` (``R``, n × m, when the caller has them, e.g. from the distance cache; else
    computed block by block), rounded to ``dtype``. Both ways give the same matrix bit for bit, so fits that
    share R equal fits that do not. float16 keeps kernel values in [0, 1] to an absolute 2⁻¹² (plus the
    distances' relative 2⁻¹¹ times γ·‖x − z‖^γ/σ), bfloat16 to 2⁻⁹: the price of a quarter of the memory.
    """
    prepared = Z if isinstance(Z, PreparedPoints) else kernel.prepare(as_tensor(Z))
    X = as_tensor(X, device=prepared.points.device)
    n, m = X.shape[0], prepared.size
    out = torch.empty(n, m, dtype=dtype, device=prepared.points.device)
    rows = max(CPU_DENSE_MIN_ROWS, (16 * CPU_DENSE_BLOCK_ENTRIES) // max(1, m))
    for i in range(0, n, rows):
        if dtype == torch.float32:
            block = kernel(X[i : i + rows], prepared)
        else:
            r = R[i : i + rows] if R is not None else squared_distances(X[i : i + rows], prepared).sqrt_().half()
            block = kernel.from_squared_distances(r.float().square_(), inplace=True)
        out[i : i + rows].copy_(block)
    return out


def gathered_mm(
    K: torch.Tensor,
    W: torch.Tensor,
    rows: torch.Tensor | None = None,
    columns: torch.Tensor | None = None,
    workers: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """K[rows] @ W for a precomputed matrix K (n × m) and W (m × k), and K[rows][:, columns] when ``columns`` is
    given (else None); ``rows`` None means every row. Both results are in W's dtype; K may be stored in a lower
    precision (float16, bfloat16), its rows are widened chunk by chunk.

    On the CPU the rows are gathered in cache-sized chunks (about :data:`CPU_DENSE_BLOCK_ENTRIES` entries) that are
    multiplied while in cache, so K's rows are read from memory once and the m-wide gathered block is never
    written out; the chunks are shared among ``workers`` threads (default ``torch.get_num_threads()``), each running
    torch on one thread, as in the kernel products.
    """
    n_rows = K.shape[0] if rows is None else rows.numel()
    out = torch.empty(n_rows, W.shape[1], dtype=W.dtype, device=K.device)
    sub = None if columns is None else torch.empty(n_rows, columns.numel(), dtype=W.dtype, device=K.device)
    if not n_rows:
        return out, sub
    widen = K.dtype != W.dtype
    if K.device.type != "cpu" or not K.is_contiguous():
        block = K if rows is None else K.index_select(0, rows)
        block = block.to(W.dtype)
        torch.mm(block, W, out=out)
        if columns is not None:
            torch.index_select(block, 1, columns, out=sub)
        return out, sub
    chunk = max(1 if rows is not None else CPU_DENSE_MIN_ROWS, CPU_DENSE_BLOCK_ENTRIES // max(1, K.shape[1]))

    def work(starts: list[int]) -> None:
        size = min(chunk, n_rows) * K.shape[1]
        buffer = None if rows is None else torch.empty(size, dtype=K.dtype)
        wide = torch.empty(size, dtype=W.dtype) if widen else None
        for i in starts:
            if rows is None:
                block = K[i : i + chunk]
            else:
                r = rows[i : i + chunk]
                block = buffer[: r.numel() * K.shape[1]].view(r.numel(), K.shape[1])
                torch.index_select(K, 0, r, out=block)
            if widen:
                block = wide[: block.numel()].view(block.shape).copy_(block)
            torch.mm(block, W, out=out[i : i + chunk])
            if columns is not None:
                torch.index_select(block, 1, columns, out=sub[i : i + chunk])

    _on_cpu_workers(list(range(0, n_rows, chunk)), work, workers)
    return out, sub


def transposed_mm(K: torch.Tensor, R: torch.Tensor, workers: int | None = None) -> torch.Tensor:
    """Kᵀ @ R for a precomputed matrix K (n × m, any float dtype) and R (n × k): (m × k) in R's dtype.

    On the CPU row chunks of K are widened to R's dtype in cache and their products summed per worker thread, so
    K is read once; elsewhere one product.
    """
    if K.device.type != "cpu" or not K.is_contiguous():
        return K.to(R.dtype).T @ R
    chunk = max(CPU_DENSE_MIN_ROWS, CPU_DENSE_BLOCK_ENTRIES // max(1, K.shape[1]))
    starts = list(range(0, K.shape[0], chunk))
    partial: list[torch.Tensor] = []
    lock = threading.Lock()

    def work(share: list[int]) -> None:
        acc = torch.zeros(K.shape[1], R.shape[1], dtype=R.dtype)
        wide = torch.empty(chunk * K.shape[1], dtype=R.dtype) if K.dtype != R.dtype else None
        for i in share:
            block = K[i : i + chunk]
            if wide is not None:
                block = wide[: block.numel()].view(block.shape).copy_(block)
            acc.addmm_(block.T, R[i : i + chunk])
        with lock:
            partial.append(acc)

    _on_cpu_workers(starts, work, workers)
    total = partial[0]
    for extra in partial[1:]:
        total += extra
    return total


def as_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 (a reduced-precision kernel block widened; float32 passed through, float64 kept)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _cpu_workers(device: torch.device) -> int:
    """How many worker threads share a product on ``device``: torch's CPU thread count, 1 elsewhere."""
    return max(1, torch.get_num_threads()) if device.type == "cpu" else 1


def _on_cpu_workers(items: list, body: Callable[[list], Any], workers: int | None = None) -> None:
    """Run ``body`` on interleaved shares of ``items``, one share per worker thread, each with single-threaded torch.

    Why: on the CPU every tile costs two BLAS calls and four elementwise passes; run with torch's own thread team,
    each of these is a parallel region whose threads must all be scheduled at once, and on a busy 2-core machine
    that cost a scheduler slice per region (kernel.mm ran 8× slower under a load of 3, matmul 2×). Independent
    single-threaded workers never wait for each other, are as fast on an idle machine and degrade only in
    proportion to the load. torch's thread count is set to 1 meanwhile and restored afterwards. ``workers``
    overrides the number of threads (default ``torch.get_num_threads()``).
    """
    workers = min(max(1, torch.get_num_threads() if workers is None else workers), len(items))
    if workers <= 1:
        body(items)
        return
    before = torch.get_num_threads()

    def run(share: list) -> None:
        torch.set_num_threads(1)  # in this thread too: OpenMP keeps its thread count per thread
        body(share)

    try:
        torch.set_num_threads(1)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="speechkern-kernel") as pool:
            for future in [pool.submit(run, items[w::workers]) for w in range(workers)]:
                future.result()
    finally:
        torch.set_num_threads(before)


def _distance_slack(dtype: torch.dtype, n_features: int) -> float:
    """δ: a few times the relative rounding error of the product-form squared distance (see the module notes)."""
    return 8.0 * torch.finfo(dtype).eps * math.sqrt(n_features + 2)
