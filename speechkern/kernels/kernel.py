"""The exponential power kernel k(x, z) = exp(−‖x − z‖^γ / σ) and its blocked products (SPEC §6)."""

from __future__ import annotations

import math
from typing import Any

import torch

from speechkern.errors import SpeechkernError
from speechkern.kernels.keops import keops_available, keops_mm
from speechkern.kernels.memory import (
    CPU_DENSE_BLOCK_ENTRIES,
    CPU_TILE_COLS,
    CPU_TILE_ROWS,
    GPU_TILE_MAX_ENTRIES,
    default_budget_bytes,
)
from speechkern.kernels.tiles import (
    PreparedPoints,
    _cpu_workers,
    _fill_dense,
    _left_augmented,
    _on_cpu_workers,
    _paired_inputs,
    as_tensor,
    prepare_points,
)

BACKENDS = ("auto", "torch", "keops")


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
        Upper bound on the bytes one product's work buffer may take; default a third of the device's free
        memory (:func:`~speechkern.kernels.memory.default_budget_bytes`), capped by the cache-friendly tile on the CPU.
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
            budget = self.memory_budget_bytes or default_budget_bytes(device)
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
        return keops_mm(X, Z, W, self.shape, self.bandwidth)
