"""The kernel-scaling benchmark's arrays as plain NumPy files, for benchmarks that fit solvers directly.

The same recipe, talkers, noise halves, validation frames and PCA as ``benchmarks/kernel_scaling.py``
(``recipes/folder`` with ``common_sets``, ``kernel.input_transform = "pca"``, 256 dimensions), built once through
the pipeline's own functions and kept in ``OUT/arrays-<dims>.npz``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from _common import ROOT, require_dev_data


def scaling_arrays(out: Path, dims: int = 256, n_val: int = 30, n_test: int = 40, val_frames: int = 10000) -> dict:
    """X, Y (every training frame), X_val, Y_val of the scaling benchmark, PCA to ``dims`` (0: raw inputs)."""
    path = out / f"arrays-{dims}.npz"
    if path.is_file():
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    from kernel_scaling import common_sets, talker_tree

    from speechkern import pipeline
    from speechkern.cache import usable_cache_dir
    from speechkern.recipe import load_recipe

    require_dev_data()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SPEECHKERN_CACHE", str(out / "cache"))
    args = argparse.Namespace(n_val=n_val, n_test=n_test, val_frames=val_frames)
    sets = [*common_sets(talker_tree(out), args), "train.max_train_frames=0"]
    if dims:
        sets += ["kernel.input_transform=pca", f"kernel.input_dims={dims}"]
    recipe = load_recipe(ROOT / "recipes" / "folder", sets)
    run_dir = out / "arrays-run"
    pipeline.open_run(recipe, run_dir, resume=True)
    manifests, _ = pipeline.training_conditions(recipe, run_dir)
    data = pipeline.training_set(recipe, manifests, "all", usable_cache_dir("default"))
    data = pipeline.kernel_training_set(recipe, data)
    arrays = {"X": data.X, "Y": data.Y, "X_val": data.X_val, "Y_val": data.Y_val}
    tmp = path.with_suffix(".part.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "kernel-scaling")
    a = parser.parse_args()
    arrays = scaling_arrays(a.out, a.dims)
    print({k: v.shape for k, v in arrays.items()})
