"""EigenPro's convergence on real speech features, against the plain iteration and an exact solve.

Data: clean utterances of ../shared/data/dev mixed with dev noises at 0 dB (random noise file and offset per
utterance, ``speechkern.mixtures.mix_at_snr``); features are the project's defaults (``speechkern.features``:
the complementary set with deltas, normalised with training statistics, ±2 frames of context: 1230 values per
frame, unless ``--kind`` says otherwise); targets the 64-channel cochleagram IRM (``speechkern.targets``).
Training and validation frames come from different utterances.

Three solvers of Kα = Y with the same kernel:

* the exact solution: scikit-learn's ``KernelRidge(kernel="precomputed", alpha=1e-8)`` on the float64 kernel
  matrix (its fit is a float64 Cholesky solve); its time counts the kernel matrix and the solve. Its validation
  MSE is the reference.
* EigenPro 2 (``EigenProRegressor`` with the automatic preconditioner, batch and step size);
* the same iteration without the preconditioner (``n_components=0``): (a) with EigenPro's batch and the
  largest stable step for it, 0.99·2m/(β + (m − 1)·λ₁), so that a step costs the same as EigenPro's; (b) with
  ``--plain-own-batch``, also with EigenPro 2's rules for q = 0, i.e. its own critical batch ⌊β/λ₁⌋ + 1 (a few
  points) and step m/β: thousands of tiny steps per epoch, which run far below the machine's speed. Each stops
  after the epoch in which it has run ``--plain-factor`` times as long as EigenPro took to reach the target (at
  most ``--plain-seconds`` when given; 600 s if EigenPro never got there): not reaching the target by then
  shows that the time ratio exceeds that factor.

For the iterations the script prints the epochs and the seconds (set-up included) until the validation MSE
first comes within 1 % of the exact solution's (at most 1 % above it; an early-stopped iterate may also be
better than the interpolating exact solution), the ratios of the times, and, as a stricter test of
convergence, the first epoch from which the validation MSE stays within ±1 % of the exact solution's.

Usage:
    .venv/bin/python benchmarks/eigenpro_convergence.py [--frames 20000] [--val-frames 4000] [--shape 1.0]
        [--bandwidth auto] [--epochs 8] [--plain-factor 6] [--plain-seconds 0] [--plain-own-batch]
        [--kind complementary] [--cache FILE.npz] [--verbose]

Goal (issue "Kernel engine"): EigenPro within 1 % in ≤ 10 epochs and ≥ 5× less time than the plain iteration.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from pathlib import Path

import numpy as np
import torch
from _common import DEV, require_dev_data

from speechkern import audio
from speechkern.autotune import median_distance_power
from speechkern.eigenpro import EigenProRegressor
from speechkern.features import FeatureConfig, FeatureStats, extract, stack_context
from speechkern.kernels import ExponentialPowerKernel
from speechkern.mixtures import mix_at_snr
from speechkern.targets import Target, compute_target

WITHIN = 0.01  # "within 1 % of the exact solution's validation MSE"


def build_data(
    frames: int, val_frames: int, kind: str, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X, Y, X_val, Y_val): model inputs (frames, dim) float32 and IRM targets (frames, 64) float32."""
    with open(DEV / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    clean = [r["path"] for r in rows if r["kind"] == "clean"]
    noises = [audio.load(DEV / r["path"])[0] for r in rows if r["kind"] == "noise"]
    rng = np.random.default_rng(seed)
    rng.shuffle(clean)
    config = FeatureConfig(kind=kind)
    target = Target()  # IRM, β = 0.5, cochleagram domain

    def collect(paths: list[str], wanted: int) -> tuple[list[np.ndarray], list[np.ndarray], int]:
        feats, masks, used = [], [], 0
        for path in paths:
            if sum(len(m) for m in masks) >= wanted:
                break
            speech, _ = audio.load(DEV / path)
            noise = noises[rng.integers(len(noises))]
            reps = int(np.ceil(len(speech) / len(noise)))
            source = np.tile(noise, reps + 1) if reps > 1 else noise
            offset = int(rng.integers(0, len(source) - len(speech) + 1))
            mixture, scaled, _ = mix_at_snr(speech, source[offset : offset + len(speech)], 0.0)
            feats.append(extract(mixture, config))
            masks.append(compute_target(speech, scaled, target, config).T)
            used += 1
        return feats, masks, used

    train_f, train_m, used = collect(clean, frames)
    val_f, val_m, _ = collect(clean[used:], val_frames)
    stats = FeatureStats.fit(train_f)

    def inputs(feats: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([stack_context(stats.normalize(f), config.context) for f in feats]).astype(np.float32)

    X, Y = inputs(train_f)[:frames], np.concatenate(train_m)[:frames].astype(np.float32)
    Xv, Yv = inputs(val_f)[:val_frames], np.concatenate(val_m)[:val_frames].astype(np.float32)
    return X, Y, Xv, Yv


def time_to_target(model: EigenProRegressor, total_seconds: float, goal: float) -> tuple[int | None, float | None]:
    """First epoch whose validation MSE ≤ goal, and the seconds spent until its end (set-up included)."""
    setup = total_seconds - sum(h["seconds"] for h in model.history_)
    elapsed = setup
    for h in model.history_:
        elapsed += h["seconds"]
        if h["val_mse"] <= goal:
            return h["epoch"], elapsed
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000, help="training frames")
    parser.add_argument("--val-frames", type=int, default=4_000, help="validation frames")
    parser.add_argument("--kind", default="complementary", help="feature set (speechkern.features kinds)")
    parser.add_argument("--shape", type=float, default=1.0, help="kernel shape γ")
    parser.add_argument("--bandwidth", type=float, default=0.0, help="σ; 0 = median of ‖x − z‖^γ")
    parser.add_argument("--epochs", type=int, default=8, help="EigenPro epochs")
    parser.add_argument("--plain-seconds", type=float, default=0.0, help="longest plain run (0: only the factor)")
    parser.add_argument(
        "--plain-factor", type=float, default=6.0, help="stop a plain iteration after this × EigenPro's time"
    )
    parser.add_argument(
        "--plain-own-batch",
        action="store_true",
        help="also run the plain iteration with its own tiny critical batch (slow: thousands of steps per epoch)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where EigenPro runs: cpu or cuda (the exact solve: CPU)")
    parser.add_argument("--cache", type=Path, default=None, help="keep the features in this .npz between runs")
    parser.add_argument("--verbose", action="store_true", help="log every epoch")
    args = parser.parse_args()
    require_dev_data()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")

    started = time.perf_counter()
    if args.cache is not None and args.cache.is_file():
        data = np.load(args.cache)
        X, Y, Xv, Yv = data["X"], data["Y"], data["Xv"], data["Yv"]
        print(f"data: {args.cache} (cached)")
    else:
        X, Y, Xv, Yv = build_data(args.frames, args.val_frames, args.kind, args.seed)
        print(f"data: features and targets computed in {time.perf_counter() - started:.1f} s")
        if args.cache is not None:
            np.savez(args.cache, X=X, Y=Y, Xv=Xv, Yv=Yv)
    n, d = X.shape
    sigma = args.bandwidth or median_distance_power(X, args.shape, seed=args.seed)
    print(
        f"{n} training and {len(Xv)} validation frames, {d} features ({args.kind}), {Y.shape[1]} IRM channels; "
        f"kernel γ = {args.shape:g}, σ = {sigma:.4g}; torch {torch.get_num_threads()} threads"
    )

    # The exact solution (scikit-learn KernelRidge on the precomputed float64 kernel matrix).
    from sklearn.kernel_ridge import KernelRidge

    kernel = ExponentialPowerKernel(args.shape, sigma)
    t0 = time.perf_counter()
    X64 = torch.from_numpy(X).double()
    K = kernel(X64, X64).numpy()
    t_kernel = time.perf_counter() - t0
    t0 = time.perf_counter()
    ridge = KernelRidge(alpha=1e-8, kernel="precomputed").fit(K, Y.astype(np.float64))
    t_solve = time.perf_counter() - t0
    del K
    pred = kernel.mm(torch.from_numpy(Xv).double(), X64, torch.from_numpy(ridge.dual_coef_)).numpy()
    exact_val = float(np.mean((pred - Yv) ** 2))
    goal = (1.0 + WITHIN) * exact_val
    t_exact = t_kernel + t_solve
    print(
        f"exact (KernelRidge, float64 Cholesky): {t_exact:.1f} s (kernel matrix {t_kernel:.1f} s, solve "
        f"{t_solve:.1f} s); validation MSE {exact_val:.5f}; target ≤ {goal:.5f}"
    )

    # EigenPro 2.
    t0 = time.perf_counter()
    ep = EigenProRegressor(args.shape, sigma, epochs=args.epochs, patience=None, seed=args.seed, device=args.device)
    ep.fit(X, Y, Xv, Yv)
    t_ep_total = time.perf_counter() - t0
    ep_epoch, ep_time = time_to_target(ep, t_ep_total, goal)
    print(
        f"EigenPro: q = {ep.n_components_}, batch {ep.batch_size_}, step {ep.step_size_:.4g}, "
        f"set-up {t_ep_total - sum(h['seconds'] for h in ep.history_):.1f} s"
    )
    _print_history("EigenPro", ep)

    # The same iteration without the preconditioner: (a) with EigenPro's batch and the largest stable step for
    # it; (b) on request, with its own automatic batch ⌊β/λ₁⌋ + 1 and step m/β (EigenPro 2's rules with q = 0).
    plains = {}
    # Each runs until it reaches the target or has run longer than plain_factor × EigenPro's time to the target
    # (which already shows the ratio exceeds plain_factor), at most --plain-seconds.
    cap = args.plain_factor * ep_time if ep_time else float(args.plain_seconds or 600.0)
    if args.plain_seconds:
        cap = min(cap, args.plain_seconds)
    variants = [("plain (EigenPro's batch)", ep.batch_size_)]
    if args.plain_own_batch:
        variants.append(("plain (own batch)", None))
    for label, batch in variants:
        t0 = time.perf_counter()
        plain = EigenProRegressor(
            args.shape, sigma, n_components=0, batch_size=batch, epochs=10_000, patience=None,
            max_seconds=cap, seed=args.seed, device=args.device,
        )  # fmt: skip
        plain.fit(X, Y, Xv, Yv)
        total = time.perf_counter() - t0
        plains[label] = (plain, total, *time_to_target(plain, total, goal))
        print(f"{label}: batch {plain.batch_size_}, step {plain.step_size_:.4g} (λ₁ = {plain.eigenvalues_[0]:.4g})")
        _print_history(label, plain)

    print("\nfirst epoch with validation MSE within 1 % of the exact solution's (≤ target):")
    print(f"  {'exact solve (KernelRidge)':<26} {t_exact:8.1f} s")
    print(f"  {'EigenPro':<26} {_reached(ep_epoch, ep_time, ep)}")
    for label, (plain, _total, epoch, seconds) in plains.items():
        print(f"  {label:<26} {_reached(epoch, seconds, plain)}")
    print("first epoch from which the validation MSE stays within ±1 % of the exact solution's:")
    for label, model, total in [("EigenPro", ep, t_ep_total)] + [(k, v[0], v[1]) for k, v in plains.items()]:
        epoch, seconds = settled(model, total, exact_val)
        print(f"  {label:<26} {_reached(epoch, seconds, model)}")
    if ep_time:
        print("ratios (time to reach the target):")
        met = ep_epoch <= 10
        for label, (_plain, total, _epoch, seconds) in plains.items():
            if seconds:
                ratio = seconds / ep_time
                print(f"  {label} / EigenPro: {ratio:.1f}×")
            else:
                ratio = total / ep_time
                print(f"  {label} / EigenPro: > {ratio:.1f}× (the target was not reached within the time cap)")
            met = met and ratio >= 5.0
        print(f"  KernelRidge / EigenPro: {t_exact / ep_time:.1f}×")
        print(f"  goals (≤ 10 epochs, ≥ 5× less time than the plain iteration): {'met' if met else 'NOT met'}")
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")


def settled(model: EigenProRegressor, total_seconds: float, exact: float) -> tuple[int | None, float | None]:
    """First epoch from which every validation MSE lies within ±1 % of ``exact``, and the seconds to its end."""
    setup = total_seconds - sum(h["seconds"] for h in model.history_)
    inside = [abs(h["val_mse"] - exact) <= WITHIN * exact for h in model.history_]
    first = None
    for i in range(len(inside) - 1, -1, -1):
        if not inside[i]:
            break
        first = i
    if first is None:
        return None, None
    return model.history_[first]["epoch"], setup + sum(h["seconds"] for h in model.history_[: first + 1])


def _print_history(name: str, model: EigenProRegressor) -> None:
    rows = [f"{h['epoch']}:{h['val_mse']:.5f}" for h in model.history_]
    shown = rows if len(rows) <= 16 else rows[:8] + ["…"] + rows[-7:]
    print(f"  {name} validation MSE by epoch: {' '.join(shown)}")


def _reached(epoch: int | None, seconds: float | None, model: EigenProRegressor) -> str:
    if epoch is None:
        spent = sum(h["seconds"] for h in model.history_)
        best = min(h["val_mse"] for h in model.history_)
        return f"not reached in {len(model.history_)} epochs ({spent:.1f} s of epochs; best val MSE {best:.5f})"
    return f"{epoch:3d} epochs, {seconds:8.1f} s"


if __name__ == "__main__":
    main()
