"""The exact yardstick: the kernel solved exactly against the engine's default solver, on the scaling arrays.

On the arrays of ``benchmarks/kernel_scaling.py`` (every training frame, 10 000 validation frames of held-out
talkers, PCA to 256 dimensions; ``benchmarks/_arrays.py``), for each n training frames (one seeded draw):

* **exact**: one Laplace kernel (γ = 1) for all 64 channels, σ = 2 × the median pairwise distance, w = (K + λI)⁻¹·Y
  by Cholesky for every λ of the engine's grid (``kernel.ridges``); the best validation MSE is the yardstick;
* **engine**: what ``speechkern train`` does by default for a 1-subband and a 4-subband model on the same frames:
  autotune (γ, σ, λ) on its subsamples, then the solver ``kernel.solver = "auto"`` picks (the local machine; one
  leaf, the exact solve, up to 20 000 frames);
* optionally **eigenpro**: the same autotuned kernel trained by the former default (EigenPro 2/3, early stopped);
* optionally **rfm**: the exact solve with the learned metric of ``kernel.input_transform = "rfm"`` (M = I, the
  diagonal and the full AGOP metric, σ and λ re-tuned for each; the best on validation kept).

It prints validation MSE, minutes and the ratio engine / exact per n (goal: within 1 % where the exact solve
fits). Rows are kept in ``OUT/reference.jsonl``, so an interrupted run continues where it stopped.

    .venv/bin/python benchmarks/kernel_reference.py [--n 10000,20000,40000] [--models exact,engine1,engine4]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from _arrays import scaling_arrays
from _common import ROOT


def mse(pred: np.ndarray, Y: np.ndarray) -> float:
    return float(np.mean((pred - Y) ** 2))


def exact_row(X, Y, Xv, Yv, ridges) -> dict:
    import torch

    from speechkern.autotune import median_distance_power
    from speechkern.eigenpro.exact import ridge_path
    from speechkern.kernels import ExponentialPowerKernel

    sigma = 2.0 * median_distance_power(X, 1.0)
    scores = ridge_path(ExponentialPowerKernel(1.0, sigma), *(torch.from_numpy(a) for a in (X, Y, Xv, Yv)), ridges)
    best = int(np.argmin(scores))
    return {"val_mse": float(scores[best]), "sigma": sigma, "ridge": ridges[best],
            "scores": dict(zip(map(str, ridges), map(float, scores), strict=True))}  # fmt: skip


def rfm_row(X, Y, Xv, Yv, ridges) -> dict:
    """The learned metric (``kernel.input_transform = "rfm"``): M = I, the diagonal and the full AGOP metric of an
    exact fit on these n frames, each solved exactly with σ and λ re-tuned; the best on validation is kept."""
    from speechkern.transform import fit_rfm

    tr = fit_rfm(X, Y, Xv, Yv, n_frames=len(X), ridges=tuple(ridges), val_frames=len(Xv))
    scores = {h["metric"]: h["val_mse"] for h in tr.info["history"]}
    return {"val_mse": scores[tr.info["kept"]], "kept": tr.info["kept"], "history": tr.info["history"]}


def engine_row(X, Y, Xv, Yv, subbands: int, solver: str, out: Path, tag: str) -> dict:
    """The pipeline's own autotune and fit on these arrays (SerialExecutor, as ``speechkern train``)."""
    from speechkern import pipeline
    from speechkern.features import FeatureStats
    from speechkern.models.io import split_bands
    from speechkern.parallel import SerialExecutor
    from speechkern.recipe import Recipe

    recipe = Recipe.model_validate({"kernel": {"subbands": subbands, "autotune": True, "solver": solver}})
    data = pipeline.TrainingSet("all", X, Y, Xv, Yv, FeatureStats(np.zeros(1), np.ones(1)))
    budget = pipeline.kernel_budget_bytes(recipe, "cpu")
    choice = pipeline.kernel_solver(recipe, data, "cpu", budget=budget)
    unit = pipeline._KernelUnit(data, "kernel", split_bands(Y.shape[1], subbands), out / "parts",
                                solver=choice.solver, centers=choice.centers, leaf_size=choice.leaf_size,
                                trees=choice.trees, global_centers=choice.global_centers,
                                budget_gb=budget / 2**30)  # fmt: skip
    executor = SerialExecutor()
    run_dir = out / f"engine-{tag}"
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    choices = pipeline._autotune_units(recipe, [unit], run_dir, executor, "cpu")
    tuned = time.perf_counter() - started
    preds, bands = [], []
    for b, (lo, hi) in enumerate(unit.bands):
        c = next(c for j, c in choices.items() if j.subband == b)
        params = {"shape": c.gamma, "bandwidth": c.sigma, **pipeline._kernel_params(recipe, unit, b, "cpu", c.ridge)}
        tensors, config, _ = pipeline.fit_kernel_band(X, Y, Xv, Yv, lo, hi, params)
        from speechkern.eigenpro import estimator_from_state

        preds.append(estimator_from_state(tensors, config, device="cpu").predict(Xv).reshape(len(Xv), -1))
        bands.append({"gamma": c.gamma, "sigma": c.sigma, "ridge": c.ridge})
    seconds = time.perf_counter() - started
    return {"val_mse": mse(np.concatenate(preds, axis=1), Yv), "minutes": seconds / 60, "autotune_minutes": tuned / 60,
            "solver": choice.reason, "bands": bands}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="10000,20000,40000", help="training frame counts")
    parser.add_argument("--models", default="exact,engine1,engine4", help="of exact, engine1, engine4, eigenpro1, rfm")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "kernel-scaling")
    args = parser.parse_args()
    from speechkern.recipe import KernelConfig

    ridges = list(KernelConfig().ridges)
    arrays = scaling_arrays(args.out)
    X_all, Y_all, Xv, Yv = arrays["X"], arrays["Y"], arrays["X_val"], arrays["Y_val"]
    results = args.out / "reference.jsonl"
    done = {}
    if results.is_file():
        for line in results.read_text().splitlines():
            r = json.loads(line)
            done[(r["n"], r["model"])] = r
    table = []
    for n in (int(v) for v in args.n.split(",")):
        rows = np.sort(np.random.default_rng(0).choice(len(X_all), n, replace=False))
        X, Y = np.ascontiguousarray(X_all[rows]), np.ascontiguousarray(Y_all[rows])
        for model in args.models.split(","):
            if (n, model) in done:
                table.append(done[(n, model)])
                continue
            load = os.getloadavg()[0]
            started = time.perf_counter()
            if model in ("exact", "rfm"):
                row = (exact_row if model == "exact" else rfm_row)(X, Y, Xv, Yv, ridges)
                row["minutes"] = (time.perf_counter() - started) / 60
            elif model.startswith("engine"):
                row = engine_row(X, Y, Xv, Yv, int(model[6:]), "auto", args.out, f"{n}-{model}")
            else:  # eigenpro1: the former default solver
                row = engine_row(X, Y, Xv, Yv, int(model[8:]), "eigenpro", args.out, f"{n}-{model}")
            row |= {"n": n, "model": model, "load": f"{load:.1f}→{os.getloadavg()[0]:.1f}"}
            with open(results, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            table.append(row)
            print(f"n={n} {model}: val mse {row['val_mse']:.5f} in {row['minutes']:.1f} min (load {row['load']})",
                  flush=True)  # fmt: skip
    print("\n| n | model | validation MSE | × exact | minutes | load |\n|---|---|---|---|---|---|")
    exact = {r["n"]: r["val_mse"] for r in table if r["model"] == "exact"}
    for r in table:
        ratio = f"{r['val_mse'] / exact[r['n']]:.3f}" if r["n"] in exact else "–"
        print(f"| {r['n']} | {r['model']} | {r['val_mse']:.5f} | {ratio} | {r['minutes']:.1f} | {r['load']} |")


if __name__ == "__main__":
    main()
