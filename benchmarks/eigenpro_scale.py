"""The kernel engine at the scale of all dev frames: time and peak memory of the 4-subband fit on n frames.

Synthetic arrays of the pipeline's shapes (speed work, not quality): 1230 features per frame from a slowly varying
40-dimensional latent state (an AR(1) walk, as speech frames drift) through a random tanh layer plus noise,
standardised like the pipeline's features; 64 IRM-like targets, sigmoids of the same state. The subbands get
16 targets each and, as after autotune, each its own (γ = 1, σ = median ‖x − z‖ × 0.8, 1, 1.25, 1.5).

Two runs in one process, the baseline first:
(a) the former default: EigenPro 2 on ``--baseline-frames`` (20 000) frames drawn from the n;
(b) every frame: the solver of ``speechkern.eigenpro.solver.choose_solver`` (EigenPro 2 or 3 and p, logged), the
    four subbands fitted one after the other in this process (as the pipeline's serial executor does), sharing
    the float16 distances through the distance cache.
Printed per run: the solver, seconds (wall and CPU: on a shared machine the CPU time over the cores is the
better guide to an idle machine's wall time) per subband and in total, validation MSE, and the peak resident
memory of the process (``ru_maxrss``: it includes the data arrays). Autotune is not included (its cost does not
grow with n: it runs on 4000 sampled frames). Report the machine's load (``uptime``) with the figures.

Usage:
    .venv/bin/python benchmarks/eigenpro_scale.py [--frames 300000] [--val-frames 5000] [--epochs 10]
        [--baseline-frames 20000] [--memory-gb 0] [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import time

import numpy as np

from speechkern.autotune import median_distance_power
from speechkern.eigenpro import EigenProRegressor
from speechkern.eigenpro.solver import choose_solver
from speechkern.kernels import available_memory_bytes, clear_distance_cache

FEATURES, OUTPUTS, SUBBANDS, LATENT = 1230, 64, 4, 40


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = np.empty((n, LATENT), dtype=np.float32)
    z[0] = rng.standard_normal(LATENT)
    shocks = rng.standard_normal((n, LATENT)).astype(np.float32)
    for i in range(1, n):  # AR(1) with a correlation of 0.9 from frame to frame
        z[i] = 0.9 * z[i - 1] + 0.44 * shocks[i]
    w = rng.standard_normal((LATENT, FEATURES)).astype(np.float32) / np.sqrt(LATENT)
    X = np.tanh(z @ w)
    X += 0.3 * rng.standard_normal(X.shape, dtype=np.float32)
    X -= X.mean(axis=0)
    X /= X.std(axis=0)
    v = rng.standard_normal((LATENT, OUTPUTS)).astype(np.float32) / np.sqrt(LATENT)
    Y = 1.0 / (1.0 + np.exp(-2.0 * (z @ v)))
    return X, Y.astype(np.float32)


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def fit_subbands(X, Y, X_val, Y_val, centers, sigma, epochs, budget_gb, label) -> dict:
    clear_distance_cache()
    width = OUTPUTS // SUBBANDS
    seconds, vals = [], []
    start, cpu = time.perf_counter(), time.process_time()
    for b, factor in enumerate((0.8, 1.0, 1.25, 1.5)):
        lo, hi = b * width, (b + 1) * width
        t, c = time.perf_counter(), time.process_time()
        est = EigenProRegressor(1.0, sigma * factor, centers=centers, epochs=epochs, memory_budget_gb=budget_gb,
                                progress_task=f"{label}/band-{b}", seed=0)  # fmt: skip
        est.fit(X, Y[:, lo:hi], X_val, Y_val[:, lo:hi])
        seconds.append(time.perf_counter() - t)
        vals.append(min(h["val_mse"] for h in est.history_))
        print(
            f"  {label} band {b}: {seconds[-1]:.1f} s ({time.process_time() - c:.1f} CPU s), {len(est.history_)} "
            f"epochs, val mse {vals[-1]:.5f}, "
            f"batch {est.batch_size_}, {est.kernel_dtype_ or 'blocked'}, peak {peak_gib():.2f} GiB",
            flush=True,
        )
    clear_distance_cache()
    return {
        "seconds": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
        "val_mse": float(np.mean(vals)),
        "peak": peak_gib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300_000)
    parser.add_argument("--val-frames", type=int, default=5_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--baseline-frames", type=int, default=20_000)
    parser.add_argument("--memory-gb", type=float, default=0.0, help="budget of one fit (0: a quarter of free)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("speechkern.eigenpro").setLevel(logging.INFO)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    t = time.perf_counter()
    X_all, Y_all = synthetic(args.frames + args.val_frames, args.seed)
    X, Y = X_all[: args.frames], Y_all[: args.frames]
    X_val, Y_val = X_all[args.frames :].copy(), Y_all[args.frames :].copy()
    del X_all, Y_all
    print(f"data: {X.shape} in {time.perf_counter() - t:.1f} s, peak {peak_gib():.2f} GiB", flush=True)
    sigma = median_distance_power(X[:4000], 1.0, seed=args.seed)
    budget = int(args.memory_gb * 2**30) if args.memory_gb else available_memory_bytes("cpu") // 4
    budget_gb = budget / 2**30

    rows = np.random.default_rng(args.seed).choice(args.frames, size=min(args.baseline_frames, args.frames),
                                                   replace=False)  # fmt: skip
    base = fit_subbands(X[rows], Y[rows], X_val, Y_val, None, sigma, args.epochs, budget_gb, "baseline")
    choice = choose_solver(args.frames, args.val_frames, FEATURES, budget)
    print(f"solver: {choice.reason}", flush=True)
    full = fit_subbands(X, Y, X_val, Y_val, choice.centers, sigma, args.epochs, budget_gb, "all")
    print(
        f"\nbaseline ({len(rows)} frames, EigenPro 2): {base['seconds'] / 60:.2f} min "
        f"({base['cpu'] / 60:.2f} CPU min), val mse {base['val_mse']:.5f}"
    )
    print(
        f"all {args.frames} frames ({choice.solver}, p={choice.centers}): {full['seconds'] / 60:.2f} min "
        f"({full['cpu'] / 60:.2f} CPU min), "
        f"val mse {full['val_mse']:.5f}, peak {full['peak']:.2f} GiB (budget {budget_gb:.1f} GiB per fit)"
    )
    print(
        f"ratios all/baseline: time {full['seconds'] / base['seconds']:.2f}, val mse "
        f"{full['val_mse'] / base['val_mse']:.3f}; load average now {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
