"""Throughput of ``ExponentialPowerKernel.mm`` against plain ``torch.matmul`` of the same GEMM shapes.

K(X, Z)·W costs two matrix products, X·Zᵀ (n × d by d × m) and K·W (n × m by m × k), plus the elementwise
kernel evaluation in between. The baseline runs exactly those two products with ``torch.matmul`` (one call each,
the n × m intermediate held whole), so the ratio t_matmul / t_mm says what fraction of GEMM speed the blocked
kernel product keeps: 1.0 would mean the kernel evaluation, the blocking and the memory traffic cost nothing.
The two are timed alternately, each repeat, and the fastest of each is kept, so background load hits both.

Usage:
    .venv/bin/python benchmarks/kernel_mm.py [--n 20000] [--m 20000] [--d 256] [--k 16] [--shape 0.75]
        [--repeats 3] [--dtype float32] [--keops-n 0] [--device cpu|cuda] [--backend torch|keops|auto]

Goal (issue "Kernel engine"): ratio ≥ 0.6 on CPU for n = m = 20 000, d = 256, 16 outputs, γ = 0.75.
"""

from __future__ import annotations

import argparse
import time

import torch

from speechkern.kernels import ExponentialPowerKernel, keops_available


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="rows of X")
    parser.add_argument("--m", type=int, default=20_000, help="rows of Z (centres)")
    parser.add_argument("--d", type=int, default=256, help="features")
    parser.add_argument("--k", type=int, default=16, help="outputs (columns of W)")
    parser.add_argument("--shape", type=float, default=0.75, help="kernel shape γ")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed repeats; the fastest counts")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--keops-n", type=int, default=0, help="also time KeOps on n = m = this many points")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--backend", default="torch", help="torch, keops or auto (KeOps on CUDA)")
    args = parser.parse_args()

    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(args.n, args.d, generator=g, dtype=dtype).to(device)
    Z = torch.randn(args.m, args.d, generator=g, dtype=dtype).to(device)
    W = torch.randn(args.m, args.k, generator=g, dtype=dtype).to(device)
    # a bandwidth near the median of ‖x − z‖^γ keeps the kernel values away from 0 and 1
    bandwidth = float(torch.cdist(X[:200], Z[:200]).pow(args.shape).median())
    kernel = ExponentialPowerKernel(args.shape, bandwidth, backend=args.backend)
    flops = 2.0 * args.n * args.m * (args.d + args.k)  # the two GEMMs; the elementwise work is not counted

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(
        f"torch {torch.__version__}, {where}, backend {kernel.resolve_backend(device)}, {args.dtype}; "
        f"n={args.n} m={args.m} d={args.d} k={args.k} γ={args.shape:g} σ={bandwidth:.4g}"
    )
    _check_accuracy(kernel, X, Z, W)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def matmul() -> None:
        torch.matmul(torch.matmul(X, Z.T), W)
        sync()

    def kernel_mm() -> None:
        kernel.mm(X, Z, W)
        sync()

    matmul()  # warm up allocator and BLAS
    kernel.mm(X[:64], Z, W)
    times: dict[str, list[float]] = {"matmul": [], "kernel.mm": []}
    for _ in range(args.repeats):
        for name, fn in (("matmul", matmul), ("kernel.mm", kernel_mm)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    best = {name: min(values) for name, values in times.items()}
    for name, values in times.items():
        print(
            f"{name:>10}: best {best[name]:.3f} s ({flops / best[name] / 1e9:.1f} GFLOP-equivalents/s); "
            f"all {', '.join(f'{v:.3f}' for v in values)} s"
        )
    ratio = best["matmul"] / best["kernel.mm"]
    goal = "(goal ≥ 0.6 on CPU)" if device.type == "cpu" else "(no goal set on GPU)"
    print(f"ratio kernel.mm / matmul throughput: {ratio:.2f} {goal}")

    if args.keops_n:
        _time_keops(args, bandwidth, dtype, device)


def _check_accuracy(kernel: ExponentialPowerKernel, X: torch.Tensor, Z: torch.Tensor, W: torch.Tensor) -> None:
    """Rows of the blocked product against a float64 evaluation from explicit differences."""
    rows = X[:256]
    distances = torch.cdist(rows.double(), Z.double())
    expected = torch.exp(-distances.pow(kernel.shape) / kernel.bandwidth) @ W.double()
    got = kernel.mm(rows, Z, W).double()
    error = float((got - expected).abs().max() / expected.abs().max())
    print(f"accuracy on 256 rows: max error {error:.2e} of the largest output (float64 reference)")


def _time_keops(args: argparse.Namespace, bandwidth: float, dtype: torch.dtype, device: torch.device) -> None:
    if not keops_available():
        print("KeOps: pykeops does not import here; skipped")
        return
    n = args.keops_n
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, args.d, generator=g, dtype=dtype).to(device)
    Z = torch.randn(n, args.d, generator=g, dtype=dtype).to(device)
    W = torch.randn(n, args.k, generator=g, dtype=dtype).to(device)
    keops = ExponentialPowerKernel(args.shape, bandwidth, backend="keops")
    blocked = ExponentialPowerKernel(args.shape, bandwidth, backend="torch")
    keops.mm(X[:10], Z[:10], W[:10])  # compile outside the timing
    flops = 2.0 * n * n * (args.d + args.k)
    for name, k in (("torch blocks", blocked), ("KeOps", keops)):
        start = time.perf_counter()
        k.mm(X, Z, W)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        print(f"{name:>12} at n = m = {n}: {seconds:.3f} s ({flops / seconds / 1e9:.1f} GFLOP-equivalents/s)")


if __name__ == "__main__":
    main()
