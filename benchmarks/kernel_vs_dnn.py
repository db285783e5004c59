"""Kernel machine against the DNN baseline on real speech: validation MSE and training time in one run.

Trains, on ../shared/data/dev clean speech mixed at 0 dB with generated speech-shaped noise and babble (at least
20 minutes of training speech), the subband kernel machine (4 subbands, autotuned), the single-kernel machine
(1 subband, autotuned) and the DNN baseline, all on the same frames and features, through the folder recipe.
Prints validation MSE and minutes for each, and the two ratios the paper's claims translate to:

* kernel MSE below the DNN's (both kernel machines);
* the 1-subband kernel trains at least 3× faster than the DNN reaches its best validation loss.

    .venv/bin/python benchmarks/kernel_vs_dnn.py [--n-train 250] [--frames 20000] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DEV, ROOT, require_dev_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=250, help="training utterances (≈5–7 s each)")
    parser.add_argument("--frames", type=int, default=20000, help="training frames drawn for every model")
    parser.add_argument("--out", type=Path, default=None, help="run directory [default: a temporary folder]")
    parser.add_argument("--extra", action="append", default=[], help="more --set KEY=VALUE for the recipe")
    args = parser.parse_args()
    require_dev_data()
    out = args.out or Path(tempfile.mkdtemp(prefix="speechkern-kernel-vs-dnn-")) / "run"
    os.environ.setdefault("SPEECHKERN_CACHE", str(out.parent / "cache"))
    sets = [
        f"data.clean_dir={DEV / 'clean'}", 'data.noises=["ssn", "babble"]', "data.snrs=[0]", "data.pairing=one",
        f"data.n_train={args.n_train}", "data.n_val=20", "data.n_test=10", f"train.max_train_frames={args.frames}",
        *args.extra,
    ]  # fmt: skip
    argv = [sys.executable, "-m", "speechkern_cli.main", "train", str(ROOT / "recipes" / "folder"), "--out", str(out),
            "--models", "kernel,kernel1,dnn", "--overwrite", "--quiet"]  # fmt: skip
    for item in sets:
        argv += ["--set", item]
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    wall = time.perf_counter() - started
    rows = {r["model"]: r for r in json.loads((out / "training_time.json").read_text())["rows"]}
    manifest = [json.loads(line) for line in (out / "manifests" / "train.jsonl").read_text().splitlines()]
    speech_min = sum(m["n_samples"] / m["sr"] for m in manifest) / 60
    print(f"\ntraining speech: {speech_min:.1f} min in {len(manifest)} mixtures; whole run {wall / 60:.1f} min")
    print("| model | subbands | validation MSE | fit minutes | autotune minutes | epochs |")
    print("|---|---|---|---|---|---|")
    for name in ("kernel", "kernel1", "dnn"):
        r = rows[name]
        print(f"| {name} | {r['subbands']} | {r['val_mse']:.5f} | {r['minutes']:.2f} | "
              f"{r.get('autotune_minutes', 0):.2f} | {r['epochs']} |")  # fmt: skip
    dnn_best = rows["dnn"].get("minutes_to_best", rows["dnn"]["minutes"])
    k1 = rows["kernel1"]
    for name in ("kernel", "kernel1"):
        ratio = rows[name]["val_mse"] / rows["dnn"]["val_mse"]
        print(f"{name} MSE / DNN MSE = {ratio:.3f}  (goal < 1)")
    print(f"DNN minutes to its best epoch / kernel1 fit minutes = {dnn_best / max(k1['minutes'], 1e-9):.1f}  "
          f"(goal ≥ 3); including kernel1's autotune: "
          f"{dnn_best / max(k1['minutes'] + k1.get('autotune_minutes', 0), 1e-9):.1f}")  # fmt: skip
    print(f"run directory: {out}")


if __name__ == "__main__":
    main()
