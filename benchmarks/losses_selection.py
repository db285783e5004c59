"""The losses bench under each selection rule: squentropy against cross-entropy on the bundled sets.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/losses_selection.py [--seeds 5] [--epochs 100] \
        [--rules accuracy-earliest,last] [--out runs/losses-selection]

Runs ``speechkern losses bench`` (the library call) once per rule on the five built-in sets and prints, per rule,
the paired comparison (wins/ties/losses over sets), the mean accuracy and ECE of both losses, and the epochs the
rule kept. The results are recorded in docs/losses.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from speechkern.losses import bench

LOSSES = ("cross_entropy", "squentropy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--rules", default=",".join(bench.SELECTION_RULES))
    parser.add_argument("--datasets", default=",".join(bench.BUILTIN_DATASETS))
    parser.add_argument("--out", type=Path, default=Path("runs/losses-selection"))
    args = parser.parse_args()
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average); {args.seeds} seeds, {args.epochs} epochs")
    header = (
        "| selection | acc CE | acc SQ | SQ acc ≥ CE | ECE CE | ECE SQ | SQ ECE < CE "
        "| epoch kept: median | ≤ 5 | time |"
    )
    rows = []
    per_set: list[str] = []
    for rule in rules:
        config = bench.BenchConfig(seeds=args.seeds, epochs=args.epochs, selection=rule)
        t0 = time.perf_counter()
        result = bench.run_benchmark(args.out / rule, config, datasets=datasets, losses=LOSSES)
        seconds = time.perf_counter() - t0
        mean = {
            (loss, metric): np.mean([getattr(r, f"{metric}_mean") for r in result.summary if r.loss == loss])
            for loss in LOSSES
            for metric in ("accuracy", "ece")
        }
        acc, ece = result.comparisons
        epochs = np.asarray([r.epoch for r in result.runs])
        rows.append(
            f"| {rule} | {100 * mean['cross_entropy', 'accuracy']:.2f} | {100 * mean['squentropy', 'accuracy']:.2f} "
            f"| {acc.wins + acc.ties}/{acc.n_datasets} (W/T/L {acc.wins}/{acc.ties}/{acc.losses}) "
            f"| {100 * mean['cross_entropy', 'ece']:.2f} | {100 * mean['squentropy', 'ece']:.2f} "
            f"| {ece.wins}/{ece.n_datasets} | {np.median(epochs):g} | {np.mean(epochs <= 5):.0%} | {seconds:.0f} s |"
        )
        for row in result.summary:
            per_set.append(
                f"| {rule} | {row.dataset} | {row.loss} | {100 * row.accuracy_mean:.2f} | {100 * row.ece_mean:.2f} "
                f"| {bench.format_epochs(row)} |"
            )
        print(rows[-1], f"load {os.getloadavg()[0]:.2f}", flush=True)
    print()
    print(header)
    print("|---|---:|---:|---|---:|---:|---|---:|---:|---:|")
    print("\n".join(rows))
    print()
    print("| selection | set | loss | accuracy (%) | ECE (%) | epoch kept |")
    print("|---|---|---|---:|---:|---|")
    print("\n".join(per_set))
    print(f"\nload after: {os.getloadavg()[0]:.2f} (1-min average)")


if __name__ == "__main__":
    main()
