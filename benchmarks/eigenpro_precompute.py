"""EigenPro training with precomputed kernel matrices against the blocked products, on real speech features.

Data: clean utterances of ../shared/data/dev (about 60 of them, taken in a seeded random order until the frames
are there) mixed at 0 dB with speech-shaped noise generated from the training utterances' long-term spectrum
(``speechkern.mixtures``); the project's default features (``FeatureConfig()``: the complementary set with
deltas, normalised with the training statistics, ±2 frames of context: 1230 values per frame) and the 64-channel
cochleagram IRM (``Target()``). Training and validation frames come from different utterances.

Two workloads of the training pipeline, each run with ``precompute=False`` (the blocked products: kernel tiles
recomputed in every product) and ``precompute=True`` (kernel matrices formed once per fit, squared distances
shared between fits through the process-wide cache), the two modes alternating fit by fit so that changes in the
machine's load hit both alike:

(a) the subband models: 4 fits of 16 IRM channels each on the same n training frames (Laplacian kernel, σ the
    median of ‖x − z‖), ``--epochs`` epochs each without early stopping, with validation data;
(b) autotune: 6 short fits (3 epochs) with different (γ, σ) on one subsample of 4000 training and 2000
    validation frames (one band's targets).

The distance cache is emptied before each workload, so the first precomputed fit pays the distance product.
Printed: seconds of every fit and in total per mode, the speed-up (blocked / precomputed) measured in this run,
and the largest relative difference of the final validation MSEs between the modes (float32 rounding: < 1e-3).

Usage:
    .venv/bin/python benchmarks/eigenpro_precompute.py [--frames 20000] [--val-frames 4000] [--epochs 5]
        [--autotune-frames 4000] [--autotune-val-frames 2000] [--autotune-epochs 3] [--skip-subbands]
        [--skip-autotune] [--cache FILE.npz] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
import torch
from _common import DEV, require_dev_data

from speechkern import audio
from speechkern.autotune import median_distance_power
from speechkern.eigenpro import EigenProRegressor
from speechkern.features import FeatureConfig, FeatureStats, extract, stack_context
from speechkern.kernels import clear_distance_cache, distance_cache_info
from speechkern.mixtures import long_term_spectrum, mix_at_snr, speech_shaped_noise
from speechkern.targets import Target, compute_target


def build_data(frames: int, val_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X, Y, X_val, Y_val): normalised, context-stacked features (float32) and IRM targets (frames, 64)."""
    with open(DEV / "manifest.csv", newline="", encoding="utf-8") as f:
        clean = [r["path"] for r in csv.DictReader(f) if r["kind"] == "clean"]
    rng = np.random.default_rng(seed)
    rng.shuffle(clean)
    config, target = FeatureConfig(), Target()
    hop = config.hop_length
    # Take utterances until the frames are there (about 100 frames per second of speech), training ones first.
    speech: list[np.ndarray] = []
    paths = iter(clean)
    for wanted in (frames, val_frames):
        have = 0
        while have < wanted:
            y, _ = audio.load(DEV / next(paths))
            speech.append(y)
            have += len(y) // hop
        if wanted == frames:
            n_train = len(speech)
    spectrum = long_term_spectrum(speech[:n_train])
    feats, masks = [], []
    for i, y in enumerate(speech):
        noise = speech_shaped_noise(spectrum, len(y), seed=seed * 1000 + i)
        mixture, scaled, _ = mix_at_snr(y, noise, 0.0)
        feats.append(extract(mixture, config))
        masks.append(compute_target(y, scaled, target, config).T)
    stats = FeatureStats.fit(feats[:n_train])

    def inputs(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([stack_context(stats.normalize(f), config.context) for f in parts]).astype(np.float32)

    X, Y = inputs(feats[:n_train])[:frames], np.concatenate(masks[:n_train])[:frames].astype(np.float32)
    Xv, Yv = inputs(feats[n_train:])[:val_frames], np.concatenate(masks[n_train:])[:val_frames].astype(np.float32)
    print(f"data: {len(speech)} utterances ({n_train} for training), {len(X)} + {len(Xv)} frames")
    return X, Y, Xv, Yv


def timed_fit(params: dict, precompute: bool, X, Y, Xv, Yv) -> tuple[EigenProRegressor, float]:
    started = time.perf_counter()
    est = EigenProRegressor(precompute=precompute, **params).fit(X, Y, Xv, Yv)
    return est, time.perf_counter() - started


def compare(title: str, fits: list[tuple[str, dict, tuple]]) -> None:
    """Run every fit in both modes, alternating; print times, the speed-up and the agreement of the results."""
    clear_distance_cache()
    cache_before = distance_cache_info()
    load_before = os.getloadavg()[0]
    seconds = {False: [], True: []}
    worst = 0.0
    print(f"\n{title}")
    print(f"{'fit':<28} {'blocked s':>10} {'precomp. s':>10} {'ratio':>7} {'val MSE blocked':>16} {'precomputed':>12}")
    for name, params, data in fits:
        results = {}
        for mode in (True, False):  # precomputed first: the first fit of a workload pays the distance product
            results[mode] = timed_fit(params, mode, *data)
            seconds[mode].append(results[mode][1])
        (blocked, t_b), (pre, t_p) = results[False], results[True]
        assert pre.precomputed_ and not blocked.precomputed_, "precomputed mode did not fit the memory budget"
        v_b, v_p = blocked.history_[-1]["val_mse"], pre.history_[-1]["val_mse"]
        worst = max(worst, abs(v_b - v_p) / abs(v_b))
        print(f"{name:<28} {t_b:>10.2f} {t_p:>10.2f} {t_b / t_p:>6.1f}× {v_b:>16.6f} {v_p:>12.6f}")
    total_b, total_p = sum(seconds[False]), sum(seconds[True])
    info = distance_cache_info()
    print(
        f"{'total':<28} {total_b:>10.2f} {total_p:>10.2f} {total_b / total_p:>6.1f}×   "
        f"(largest relative difference of the final validation MSEs: {worst:.1e})"
    )
    print(
        f"distance cache: {info.hits - cache_before.hits} hits, {info.misses - cache_before.misses} distance "
        f"products, {info.bytes / 2**30:.2f} GiB held; load average {load_before:.1f} → {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000, help="training frames n")
    parser.add_argument("--val-frames", type=int, default=4_000, help="validation frames")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each subband fit")
    parser.add_argument("--autotune-frames", type=int, default=4_000, help="training subsample of the autotune fits")
    parser.add_argument("--autotune-val-frames", type=int, default=2_000, help="validation subsample of autotune")
    parser.add_argument("--autotune-epochs", type=int, default=3, help="epochs of each autotune fit")
    parser.add_argument("--skip-subbands", action="store_true", help="skip workload (a)")
    parser.add_argument("--skip-autotune", action="store_true", help="skip workload (b)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="keep the features in this .npz between runs")
    args = parser.parse_args()
    require_dev_data()

    started = time.perf_counter()
    if args.cache is not None and args.cache.is_file():
        data = np.load(args.cache)
        X, Y, Xv, Yv = data["X"], data["Y"], data["Xv"], data["Yv"]
        print(f"data: {args.cache} (cached)")
    else:
        X, Y, Xv, Yv = build_data(args.frames, args.val_frames, args.seed)
        print(f"data: features and targets computed in {time.perf_counter() - started:.1f} s")
        if args.cache is not None:
            np.savez(args.cache, X=X, Y=Y, Xv=Xv, Yv=Yv)
    X, Y, Xv, Yv = X[: args.frames], Y[: args.frames], Xv[: args.val_frames], Yv[: args.val_frames]
    n, d = X.shape
    sigma = median_distance_power(X, 1.0, seed=args.seed)
    print(
        f"{n} training and {len(Xv)} validation frames, {d} features, {Y.shape[1]} IRM channels; torch "
        f"{torch.get_num_threads()} threads; σ (median ‖x − z‖) = {sigma:.4g}; load average {os.getloadavg()[0]:.1f}"
    )

    if not args.skip_subbands:
        bands = [(lo, lo + Y.shape[1] // 4) for lo in range(0, Y.shape[1], Y.shape[1] // 4)]
        fits = []
        for b, (lo, hi) in enumerate(bands):
            params = {"shape": 1.0, "bandwidth": sigma, "epochs": args.epochs, "patience": None, "seed": args.seed}
            fits.append((f"band {b} (channels {lo}–{hi - 1})", params, (X, Y[:, lo:hi], Xv, Yv[:, lo:hi])))
        compare(f"(a) 4 subband fits, n = {n}, {args.epochs} epochs each", fits)

    if not args.skip_autotune:
        rng = np.random.default_rng(args.seed + 10)
        rows = np.sort(rng.choice(n, size=min(n, args.autotune_frames), replace=False))
        vrows = np.sort(rng.choice(len(Xv), size=min(len(Xv), args.autotune_val_frames), replace=False))
        sample = (X[rows], Y[rows, :16], Xv[vrows], Yv[vrows, :16])
        fits = []
        for gamma in (0.5, 1.0, 2.0):
            scale = median_distance_power(sample[0], gamma, seed=args.seed)
            for factor in (0.5, 2.0):
                params = {"shape": gamma, "bandwidth": factor * scale, "epochs": args.autotune_epochs,
                          "patience": None, "seed": args.seed}  # fmt: skip
                fits.append((f"γ = {gamma:g}, σ = {factor * scale:.4g}", params, sample))
        compare(f"(b) 6 autotune fits, {len(rows)} + {len(vrows)} frames, {args.autotune_epochs} epochs", fits)


if __name__ == "__main__":
    main()
