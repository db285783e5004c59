"""The exponential power kernel and its products, computed in blocks (SPEC §6); docs/engine.md explains the parts.

``kernel``: :class:`ExponentialPowerKernel`. ``tiles``: distances and products in tiles on the CPU worker threads.
``keops``: the KeOps backend. ``distance_cache``: the cache of distance matrices and the precomputed matrices.
``memory``: free memory and tile sizes.
"""

from speechkern.kernels.distance_cache import (
    DISTANCE_CACHE,
    STORAGE_DTYPES,
    ContentKey,
    DistanceCache,
    DistanceCacheInfo,
    cached_squared_distances,
    clear_distance_cache,
    content_key,
    distance_cache_info,
    distance_matrix16,
    kernel_matrix,
)
from speechkern.kernels.keops import configure_keops_cache, keops_available, keops_mm
from speechkern.kernels.kernel import BACKENDS, ExponentialPowerKernel
from speechkern.kernels.memory import (
    CPU_DENSE_BLOCK_ENTRIES,
    CPU_DENSE_MIN_ROWS,
    CPU_TILE_COLS,
    CPU_TILE_ROWS,
    GPU_TILE_MAX_ENTRIES,
    available_memory_bytes,
    check_budget_gb,
    default_budget_bytes,
    total_memory_bytes,
)
from speechkern.kernels.tiles import (
    PreparedPoints,
    as_float32,
    as_tensor,
    gathered_mm,
    prepare_points,
    shared_center_products,
    squared_distances,
    transposed_mm,
)

__all__ = [
    "BACKENDS",
    "CPU_DENSE_BLOCK_ENTRIES",
    "CPU_DENSE_MIN_ROWS",
    "CPU_TILE_COLS",
    "CPU_TILE_ROWS",
    "DISTANCE_CACHE",
    "GPU_TILE_MAX_ENTRIES",
    "STORAGE_DTYPES",
    "ContentKey",
    "DistanceCache",
    "DistanceCacheInfo",
    "ExponentialPowerKernel",
    "PreparedPoints",
    "as_float32",
    "as_tensor",
    "available_memory_bytes",
    "check_budget_gb",
    "default_budget_bytes",
    "total_memory_bytes",
    "cached_squared_distances",
    "clear_distance_cache",
    "configure_keops_cache",
    "content_key",
    "distance_cache_info",
    "distance_matrix16",
    "gathered_mm",
    "keops_available",
    "keops_mm",
    "kernel_matrix",
    "prepare_points",
    "shared_center_products",
    "squared_distances",
    "transposed_mm",
]
