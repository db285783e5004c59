"""Which inputs suit the kernel: validation MSE of one kernel fit per input map and bandwidth, on held-out talkers.

The data of ``kernel_scaling.py`` (all dev speech, whole talkers held out, dev noises at 0 dB; the same recipe and
feature cache): ``--frames`` training frames, its 10 000 validation frames, all 64 mask channels in one subband.
For each input map (the 1230 standardised context features as they are, or ``kernel.input_transform`` kinds with
their dims) it fits EigenPro 3 with ``--centers`` centres and the Laplace kernel (γ = 1; what autotune picks on
these features) at σ = ½, 1 and 2 × the median distance between training frames (autotune's
``median_distance_power``), and prints each validation MSE (the best epoch's) and the fit's seconds. Decided on
validation only: test talkers are never looked at.

    .venv/bin/python benchmarks/kernel_inputs.py [--frames 20000] [--centers 4000]
        [--inputs none,pca:256,whiten:256] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import ROOT, require_dev_data
from kernel_scaling import common_sets, talker_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000, help="training frames [%(default)s]")
    parser.add_argument("--centers", type=int, default=4000, help="EigenPro 3 centres [%(default)s]")
    parser.add_argument("--inputs", default="none,pca:256,whiten:256", help="none or KIND:DIMS, comma-separated")
    parser.add_argument("--n-val", type=int, default=30)
    parser.add_argument("--n-test", type=int, default=40)
    parser.add_argument("--val-frames", type=int, default=10000)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "kernel-scaling", help="[%(default)s]")
    args = parser.parse_args()
    require_dev_data()
    os.environ.setdefault("SPEECHKERN_CACHE", str(args.out / "cache"))
    from speechkern import pipeline
    from speechkern.autotune import median_distance_power
    from speechkern.eigenpro import EigenProRegressor
    from speechkern.recipe import load_recipe
    from speechkern.transform import fit_transform

    run_dir = args.out / "inputs"
    run_dir.mkdir(parents=True, exist_ok=True)
    sets = [*common_sets(talker_tree(args.out), args), f"train.max_train_frames={args.frames}"]
    recipe = load_recipe(ROOT / "recipes" / "folder" / "recipe.toml", sets)
    manifests, _ = pipeline.training_conditions(recipe, run_dir)
    data = pipeline.training_set(recipe, manifests, "all", Path(os.environ["SPEECHKERN_CACHE"]))
    print(f"{len(data.X)} training frames, {len(data.X_val)} validation frames, {data.X.shape[1]} inputs", flush=True)
    print("\n| inputs | dims | σ / median distance | σ | validation MSE | fit s |\n|---|---|---|---|---|---|")
    for spec in args.inputs.split(","):
        kind, _, dims = spec.strip().partition(":")
        if kind == "none":
            X, X_val = data.X, data.X_val
        else:
            transform = fit_transform(kind, data.X, data.Y, dims=int(dims or 0), seed=recipe.data.seed)
            X, X_val = transform.apply(data.X), transform.apply(data.X_val)
        median = median_distance_power(X, 1.0, seed=recipe.data.seed)  # the scale autotune's σ grid starts from
        for factor in (0.5, 1.0, 2.0):
            started = time.perf_counter()
            est = EigenProRegressor(1.0, factor * median, centers=min(args.centers, len(X)), epochs=8, patience=2,
                                    seed=recipe.data.seed)  # fmt: skip
            est.fit(X, data.Y, X_val, data.Y_val)
            best = min(h["val_mse"] for h in est.history_)
            print(f"| {spec} | {X.shape[1]} | {factor:g} | {factor * median:.2f} | {best:.5f} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
