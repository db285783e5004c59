"""Kernel machines against the DNN as the training set grows: held-out talkers, held-out noise halves.

All of ../shared/data/dev/clean, one folder per talker (from manifest.csv), mixed at 0 dB with the dev noise
recordings through the folder recipe: training and validation mixtures take noise from the first half of each
recording, test mixtures from the second half, and validation and test talkers are never trained on
(``data.split_by = "talker"``). For each n (training frames drawn for every model) it trains the 4-subband kernel
machine, the 1-subband one and the DNN (every optimiser variant given; the one with the lowest validation MSE is
the DNN's result), each in its own ``speechkern train`` process, then scores the test split. Per n and model it
prints validation MSE, test MSE, test STOI and PESQ (wide-band), training minutes (autotune and input transform
included; the DNN's to its best epoch too), and the peak memory of the training process.

    .venv/bin/python benchmarks/kernel_scaling.py [--n 20000,50000,100000,200000,all] [--models kernel,kernel1,dnn]
        [--tag NAME --extra KEY=VALUE ...] [--every-model KEY=VALUE ...] [--out DIR]

Rows already measured in ``DIR/results.jsonl`` are reused, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import DEV, ROOT, require_dev_data

DEFAULT_N = "20000,50000,100000,200000,all"
DNN_VARIANTS = "adam:0.001,adagrad-momentum:0.0015,adagrad-momentum:0.01"


def talker_tree(out: Path) -> Path:
    """``out/clean/<talker>/<file>`` symbolic links to the dev speech, one folder per talker of manifest.csv."""
    root = out / "clean"
    with open(DEV / "manifest.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["kind"] != "clean":
                continue
            talker = "".join(c if c.isalnum() or c in "-_" else "_" for c in row["speaker_or_type"]) or "unknown"
            link = root / talker / Path(row["path"]).name
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to((DEV / row["path"]).resolve())
    return root


def common_sets(clean: Path, args) -> list[str]:
    return [
        f"data.clean_dir={clean}", f"data.noise_dir={DEV / 'noise'}", 'data.noises=["dir"]', "data.snrs=[0]",
        "data.pairing=one", "data.test_pairing=one", "data.split_by=talker", "data.n_train=0",
        f"data.n_val={args.n_val}", f"data.n_test={args.n_test}", f"train.max_val_frames={args.val_frames}",
    ]  # fmt: skip


def train(run_dir: Path, model: str, sets: list[str]) -> tuple[float, float]:
    """One ``speechkern train`` process for one model; returns (wall seconds, peak resident memory in GB)."""
    argv = [sys.executable, "-m", "speechkern_cli.main", "train", str(ROOT / "recipes" / "folder"), "--out",
            str(run_dir), "--models", model, "--resume", "--quiet"]  # fmt: skip
    for item in sets:
        argv += ["--set", item]
    started = time.perf_counter()
    proc = subprocess.Popen(argv)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"speechkern train failed ({proc.returncode}) for {model} in {run_dir}")
    return time.perf_counter() - started, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def timing_row(run_dir: Path, model: str) -> dict:
    """The model's row of the run's training-time table, with the training frame count from train.log."""
    rows = json.loads((run_dir / "training_time.json").read_text())["rows"]
    row = next(r for r in rows if r["model"] == model)
    found = re.findall(r"(\d+) training frames of (\d+)", (run_dir / "train.log").read_text(errors="replace"))
    if found:
        row["frames"], row["frames_available"] = int(found[-1][0]), int(found[-1][1])
    return row


def test_scores(run_dir: Path, model: str) -> dict:
    """Test-split MSE (over every T-F unit) and mean STOI/PESQ of one model of a run, via speechkern.evaluate."""
    from speechkern.evaluate import evaluate

    ev = evaluate(run_dir, examples=0)
    files = [f.scores for f in ev.files]

    def mean(system: str, metric: str) -> float:
        values = [s[system][metric] for s in files if np.isfinite(s[system].get(metric, np.nan))]
        return float(np.mean(values)) if values else float("nan")

    return {"test_mse": float(ev.channel_mse[model].mean()), "stoi": mean(model, "stoi"),
            "pesq": mean(model, "pesq"), "noisy_stoi": mean("noisy", "stoi"), "noisy_pesq": mean("noisy", "pesq"),
            "test_files": len(files)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default=DEFAULT_N, help=f"training frame counts, 'all' = every frame [{DEFAULT_N}]")
    parser.add_argument("--models", default="kernel,kernel1,dnn", help="of kernel, kernel1, dnn")
    parser.add_argument("--dnn-variants", default=DNN_VARIANTS, help="OPTIMIZER:LEARNING_RATE pairs for the DNN; the "
                        "lowest validation MSE wins [%(default)s]")  # fmt: skip
    parser.add_argument("--n-val", type=int, default=30, help="validation utterances (whole talkers)")
    parser.add_argument("--n-test", type=int, default=40, help="test utterances (whole talkers)")
    parser.add_argument("--val-frames", type=int, default=10000, help="validation frames for early stopping")
    parser.add_argument("--tag", default="", help="name of this variant (with --extra); rows are kept per tag")
    parser.add_argument("--extra", action="append", default=[], help="more --set KEY=VALUE for the kernel models")
    parser.add_argument("--every-model", action="append", default=[], metavar="KEY=VALUE",
                        help="more --set KEY=VALUE for every model, the DNN too (such as the features); with its own "
                             "--out, since rows are kept per n, model and tag")  # fmt: skip
    parser.add_argument("--no-test", action="store_true", help="skip the test-split scores (validation only)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "kernel-scaling", help="[%(default)s]")
    args = parser.parse_args()
    require_dev_data()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SPEECHKERN_CACHE", str(args.out / "cache"))
    clean = talker_tree(args.out)
    base = common_sets(clean, args) + args.every_model
    results_file = args.out / "results.jsonl"
    done = {}
    if results_file.is_file():
        for line in results_file.read_text().splitlines():
            r = json.loads(line)
            done[(r["n"], r["model"], r.get("tag", ""))] = r
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    table = []
    for n_text in args.n.split(","):
        n = 0 if n_text.strip() == "all" else int(n_text)
        label = "all" if n == 0 else str(n)
        for model in models:
            key = (label, model, args.tag if model != "dnn" else "")
            if key in done:
                table.append(done[key])
                continue
            load_before = os.getloadavg()[0]
            if model == "dnn":
                row = dnn_row(args, base, n, label)
            else:
                run_dir = args.out / f"n{label}{'-' + args.tag if args.tag else ''}"
                wall, peak = train(run_dir, model, [*base, f"train.max_train_frames={n}", *args.extra])
                t = timing_row(run_dir, model)
                minutes = t["minutes"] + t.get("autotune_minutes", 0.0) + t.get("transform_minutes", 0.0)
                row = {"n": label, "model": model, "tag": args.tag, "frames": t.get("frames"), "val_mse": t["val_mse"],
                       "train_minutes": round(minutes, 3), "autotune_minutes": t.get("autotune_minutes", 0.0),
                       "epochs": t["epochs"], "centers": t.get("centers"), "solver": t.get("solver"),
                       "leaves": t.get("leaves"), "wall_minutes": round(wall / 60, 3),
                       "peak_gb": round(peak, 2), "run_dir": str(run_dir), "extra": args.extra}  # fmt: skip
                if not args.no_test:
                    row |= test_scores(run_dir, model)
            row["load_before"], row["load_after"] = round(load_before, 2), round(os.getloadavg()[0], 2)
            with open(results_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            table.append(row)
            print_table(table)
    print_table(table)
    print_ratios(table)


def dnn_row(args, base: list[str], n: int, label: str) -> dict:
    """Train every DNN variant on the same frames; the lowest validation MSE is the DNN's result."""
    variants = []
    for item in args.dnn_variants.split(","):
        optimizer, lr = item.split(":")
        run_dir = args.out / f"n{label}-dnn-{optimizer}-{lr}"
        sets = [*base, f"train.max_train_frames={n}", f"dnn.optimizer={optimizer}", f"dnn.learning_rate={lr}"]
        wall, peak = train(run_dir, "dnn", sets)
        t = timing_row(run_dir, "dnn")
        variants.append({"variant": item, "run_dir": str(run_dir), "frames": t.get("frames"),
                         "val_mse": t["val_mse"], "epochs": t["epochs"],
                         "best_epoch": t.get("best_epoch"), "train_minutes": round(t["minutes"], 3),
                         "minutes_to_best": t.get("minutes_to_best", t["minutes"]), "wall_minutes": round(wall / 60, 3),
                         "peak_gb": round(peak, 2)})  # fmt: skip
        print(f"dnn {item} at n={label}: val mse {t['val_mse']:.5f}, {t['epochs']} epochs, {t['minutes']:.2f} min")
    best = min(variants, key=lambda v: v["val_mse"])
    row = {"n": label, "model": "dnn", "tag": best["variant"], **{k: v for k, v in best.items() if k != "variant"},
           "variants": variants}  # fmt: skip
    if not args.no_test:
        row |= test_scores(Path(best["run_dir"]), "dnn")
    return row


def print_table(table: list[dict]) -> None:
    print("\n| n | model | variant | validation MSE | test MSE | STOI | PESQ | training min | DNN min to best | "
          "peak GB | load |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        fmt = _formatter(r)
        print(f"| {r['n']} | {r['model']} | {r.get('tag') or '–'} | {fmt('val_mse', '.5f')} | {fmt('test_mse', '.5f')} "
              f"| {fmt('stoi', '.3f')} | {fmt('pesq', '.2f')} | {fmt('train_minutes', '.2f')} | "
              f"{fmt('minutes_to_best', '.2f')} | {fmt('peak_gb', '.2f')} | "
              f"{r.get('load_before', 0):.1f}→{r.get('load_after', 0):.1f} |")  # fmt: skip


def _formatter(row: dict):
    def fmt(key: str, spec: str) -> str:
        value = row.get(key)
        missing = value is None or (isinstance(value, float) and not np.isfinite(value))
        return "–" if missing else format(value, spec)

    return fmt


def print_ratios(table: list[dict]) -> None:
    """Kernel / DNN ratios per n (goal: MSE ratios < 1, STOI/PESQ differences ≥ 0)."""
    by_n: dict[str, dict[str, dict]] = {}
    for r in table:
        by_n.setdefault(r["n"], {})[r["model"] + (f"[{r['tag']}]" if r["model"] != "dnn" and r.get("tag") else "")] = r
    for n, rows in by_n.items():
        dnn = rows.get("dnn")
        if not dnn:
            continue
        for name, r in rows.items():
            if name == "dnn":
                continue
            parts = [f"val MSE ×{r['val_mse'] / dnn['val_mse']:.3f}"]
            if "test_mse" in r and "test_mse" in dnn:
                parts += [f"test MSE ×{r['test_mse'] / dnn['test_mse']:.3f}", f"STOI {r['stoi'] - dnn['stoi']:+.3f}",
                          f"PESQ {r['pesq'] - dnn['pesq']:+.2f}"]  # fmt: skip
            parts.append(f"time ×{r['train_minutes'] / max(dnn.get('minutes_to_best') or 1e-9, 1e-9):.2f} of the "
                         "DNN's to its best epoch")  # fmt: skip
            print(f"n={n} {name} vs DNN: " + ", ".join(parts))


if __name__ == "__main__":
    main()
