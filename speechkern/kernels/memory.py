"""Memory planning for the kernel products: the memory free on a device, and the tile and block sizes."""

from __future__ import annotations

import os

import torch

from speechkern.errors import SpeechkernError

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


# Share of the available memory one kernel fit may plan for when no budget is given. A third holds the exact solve
# of 40 000 points (its float32 K, 6 GiB, factorised in place) on a machine with 18 GiB available, with its
# validation kernel and the features beside it (peak measured in benchmarks/RESULTS.md, "Solved kernels").
DEFAULT_BUDGET_SHARE = 1 / 3


def default_budget_bytes(device: torch.device | str) -> int:
    """The memory budget of one kernel fit when none is given: :data:`DEFAULT_BUDGET_SHARE` of
    :func:`available_memory_bytes`, in bytes."""
    return int(available_memory_bytes(device) * DEFAULT_BUDGET_SHARE)


def total_memory_bytes(device: torch.device | str) -> int:
    """All the memory of ``device``, in bytes: the GPU's, or the machine's physical RAM (64 GiB where unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        _free, total = torch.cuda.mem_get_info(device)
        return int(total)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 64 << 30


def check_budget_gb(name: str, gb: float, device: torch.device | str, default: str = "leave it unset") -> int:
    """``gb`` GiB in bytes, refused (SpeechkernError naming ``name``) when it is more than the whole memory of
    ``device``: such a budget plans exact solves and tiles the machine cannot hold, which end in swap or the
    out-of-memory killer. ``default``: how to ask for the default budget (a third of the available memory)."""
    have = total_memory_bytes(device)
    if not float(gb) * 2**30 <= have:  # inf too
        where = "GPU" if torch.device(device).type == "cuda" else "machine"
        raise SpeechkernError(f"{name}={float(gb):g}: more than the {have / 2**30:.1f} GiB of memory of this {where} "
                              f"({available_memory_bytes(device) / 2**30:.1f} GiB available now); give a budget "
                              f"below what is available, or {default} for a third of it")  # fmt: skip
    return int(float(gb) * 2**30)


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
