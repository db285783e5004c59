"""Tiled products of points: squared distances from augmented inputs, dense fills, products with precomputed
matrices, and the CPU worker threads that share the tiles."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from speechkern.errors import SpeechkernError
from speechkern.kernels.memory import CPU_DENSE_BLOCK_ENTRIES, CPU_DENSE_MIN_ROWS

if TYPE_CHECKING:
    from speechkern.kernels.kernel import ExponentialPowerKernel


def as_tensor(x: Any, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` as a torch tensor on ``device`` (default: where it is) in ``dtype`` (default: float32 unless float64)."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if dtype is None:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.to(device=device if device is not None else x.device, dtype=dtype)


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
    augmented inputs, clamp at 0; see docs/engine.md), in row blocks shared among the CPU worker threads, so
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
    """δ: a few times the relative rounding error of the product-form squared distance (see docs/engine.md)."""
    return 8.0 * torch.finfo(dtype).eps * math.sqrt(n_features + 2)
