"""The process-wide cache of squared-distance matrices keyed by content, and the precomputed matrices built
from distances (float16 distances, kernel matrices in a storage dtype)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from speechkern.kernels.memory import CPU_DENSE_BLOCK_ENTRIES, CPU_DENSE_MIN_ROWS
from speechkern.kernels.tiles import PreparedPoints, _paired_inputs, as_tensor, squared_distances

if TYPE_CHECKING:
    from speechkern.kernels.kernel import ExponentialPowerKernel


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
