"""Training orchestration: a recipe becomes a run directory, step by step, resumable at every step.

Steps and what makes each resumable: the manifests are written once and read back; features and targets are
cached by content; every autotune evaluation is appended to ``autotune.jsonl``; each finished subband model
is saved before the next starts; the DNN saves a checkpoint after every epoch; a finished model is not retrained.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechkern import dataset
from speechkern.autotune import EvaluationLog, SigmaGrid, autotune, median_distance_power
from speechkern.cache import default_cache_dir
from speechkern.device import resolve_device
from speechkern.errors import SpeechkernError
from speechkern.features import FeatureStats
from speechkern.models.io import MaskModel, split_bands
from speechkern.recipe import Recipe, load_recipe

logger = logging.getLogger(__name__)

MODEL_NAMES = ("kernel", "kernel1", "dnn")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def open_run(recipe: Recipe, run_dir: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Create the run directory, or reopen it for ``resume``; never touch an existing run without a flag."""
    recipe_file = run_dir / "recipe.toml"
    if run_dir.exists() and any(run_dir.iterdir()):
        if overwrite:
            shutil.rmtree(run_dir)
        elif resume:
            if recipe_file.is_file():
                stored = load_recipe(recipe_file)
                if stored != recipe:
                    key = _first_difference(stored.model_dump(), recipe.model_dump())
                    raise SpeechkernError(
                        f"{run_dir}: was started with a different recipe ({key} differs); resume with the same "
                        "recipe and --set options, or pass --overwrite to start again"
                    )
        else:
            raise SpeechkernError(
                f"{run_dir}: a run exists there already; pass --resume to continue it or --overwrite to start again"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(recipe_file, recipe.to_toml())


def _first_difference(a: dict, b: dict, prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
                return _first_difference(a[key], b[key], f"{prefix}{key}.")
            return f"{prefix}{key}"
    return prefix.rstrip(".") or "?"


@dataclass
class TrainingSet:
    """Model inputs and targets of one training condition, shared by every model trained on it."""

    condition: str
    X: np.ndarray
    Y: np.ndarray
    X_val: np.ndarray
    Y_val: np.ndarray
    stats: FeatureStats


@dataclass
class ModelTiming:
    """One row of the training-time table (SPEC §8, the paper's Table 6.4)."""

    model: str
    condition: str
    subbands: int
    minutes: float
    epochs: int
    val_mse: float
    extra: dict = field(default_factory=dict)


def training_sets(recipe: Recipe, run_dir: Path, cache_dir: Path | None) -> list[TrainingSet]:
    """Inputs and targets for each model to train: one set (multi-condition) or one per condition."""
    manifests = dataset.build_manifests(recipe, run_dir)
    fc, tc, tr = recipe.features, recipe.target, recipe.train
    train = dataset.compute_frames(manifests["train"], fc, tc, cache_dir, tr.workers, "train")
    val = dataset.compute_frames(manifests["val"], fc, tc, cache_dir, tr.workers, "val")
    if tr.mode == "multi-condition":
        groups = {"all": (train, val)}
    else:
        groups = {c: (_subset(train, c), _subset(val, c)) for c in sorted({m.condition for m in train.mixtures})}
    out = []
    for condition, (tr_data, va_data) in groups.items():
        stats = FeatureStats.fit(tr_data.features)
        rows = dataset.sample_rows(len(tr_data), tr.max_train_frames, recipe.data.seed)
        vrows = dataset.sample_rows(len(va_data), tr.max_val_frames, recipe.data.seed + 1)
        out.append(
            TrainingSet(
                condition=condition,
                X=dataset.model_inputs(tr_data, stats, fc.context, rows),
                Y=tr_data.targets[rows],
                X_val=dataset.model_inputs(va_data, stats, fc.context, vrows),
                Y_val=va_data.targets[vrows],
                stats=stats,
            )
        )
        logger.info("condition %s: %d training frames of %d, %d validation frames, %d inputs, %d outputs",
                    condition, len(rows), len(tr_data), len(vrows), out[-1].X.shape[1], out[-1].Y.shape[1])  # fmt: skip
    return out


def _subset(data: dataset.FrameData, condition: str) -> dataset.FrameData:
    keep = [i for i, m in enumerate(data.mixtures) if m.condition == condition]
    spans = [data.frames_of(i) for i in keep]
    lengths = [s.stop - s.start for s in spans]
    return dataset.FrameData(
        features=np.concatenate([data.features[s] for s in spans]),
        targets=np.concatenate([data.targets[s] for s in spans]),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        mixtures=[data.mixtures[i] for i in keep],
    )


def model_dir(run_dir: Path, name: str, condition: str) -> Path:
    """``models/<name>`` for a multi-condition model, ``models/<name>/<condition>`` per condition."""
    base = run_dir / "models" / name
    return base if condition == "all" else base / condition


def train_kernel(
    recipe: Recipe, data: TrainingSet, run_dir: Path, n_subbands: int, name: str, device: str
) -> tuple[MaskModel, ModelTiming]:
    """The subband kernel machine: per block of mask channels, autotune (if asked) and fit EigenPro."""
    from speechkern.eigenpro import EigenProRegressor

    kc = recipe.kernel
    bands = split_bands(data.Y.shape[1], n_subbands)
    parts = run_dir / "models" / f".{name}-parts" / data.condition
    log = EvaluationLog(run_dir / "autotune.jsonl")
    estimators, band_info = [], []
    started = time.perf_counter()
    for b, (lo, hi) in enumerate(bands):
        part = parts / f"band-{b}"
        info_file = parts / f"band-{b}.json"
        if info_file.is_file():  # finished in an earlier, interrupted run
            estimators.append(EigenProRegressor.load(part))
            band_info.append(json.loads(info_file.read_text()))
            logger.info("%s band %d/%d: reusing the model finished earlier", name, b + 1, len(bands))
            continue
        band_started = time.perf_counter()
        if kc.autotune:
            choice = autotune_band(recipe, data, lo, hi, b, n_subbands, log, device)
            gamma, sigma = choice.gamma, choice.sigma
        else:
            gamma, sigma = kc.shape, kc.bandwidth
        est = EigenProRegressor(
            shape=gamma, bandwidth=sigma, centers=kc.centers or None, epochs=kc.epochs, patience=kc.patience,
            device=device, seed=recipe.data.seed, progress_task=f"{name}/{data.condition}/band-{b}",
        )  # fmt: skip
        est.fit(data.X, data.Y[:, lo:hi], data.X_val, data.Y_val[:, lo:hi])
        info = {
            "band": [lo, hi], "gamma": gamma, "sigma": sigma, "epochs": len(est.history_),
            "best_epoch": est.best_epoch_, "val_mse": min(h["val_mse"] for h in est.history_),
            "seconds": time.perf_counter() - band_started,
        }  # fmt: skip
        parts.mkdir(parents=True, exist_ok=True)
        est.save(part)
        write_text_atomic(info_file, json.dumps(info))
        estimators.append(est)
        band_info.append(info)
        logger.info("%s band %d/%d: gamma %.3g sigma %.4g, %d epochs, val mse %.5f, %.1f s", name, b + 1,
                    len(bands), gamma, sigma, info["epochs"], info["val_mse"], info["seconds"])  # fmt: skip
    minutes = sum(i["seconds"] for i in band_info) / 60.0
    model = MaskModel("kernel", recipe.features, recipe.target, data.stats, bands, estimators,
                      {"bands": band_info, "condition": data.condition, "name": name})  # fmt: skip
    val_mse = _val_mse(model, data)
    model.info["val_mse"] = val_mse
    model.save(model_dir(run_dir, name, data.condition), overwrite=True)
    shutil.rmtree(parts, ignore_errors=True)
    logger.info("%s trained in %.1f s (this run) for condition %s", name, time.perf_counter() - started,
                data.condition)  # fmt: skip
    timing = ModelTiming(name, data.condition, n_subbands, minutes, max(i["epochs"] for i in band_info), val_mse)
    return model, timing


def autotune_band(recipe: Recipe, data: TrainingSet, lo: int, hi: int, band: int, n_subbands: int,
                  log: EvaluationLog, device: str):  # fmt: skip
    """Algorithm 1 for one block of channels, on subsamples of the training and validation frames."""
    from speechkern.eigenpro import EigenProRegressor

    kc = recipe.kernel
    rows = dataset.sample_rows(len(data.X), kc.autotune_train_frames, recipe.data.seed + 10 + band)
    vrows = dataset.sample_rows(len(data.X_val), kc.autotune_val_frames, recipe.data.seed + 20 + band)
    Xa, Ya = data.X[rows], data.Y[rows, lo:hi]
    Xv, Yv = data.X_val[vrows], data.Y_val[vrows, lo:hi]

    def cv(gamma: float, sigma: float) -> float:
        est = EigenProRegressor(shape=gamma, bandwidth=sigma, epochs=kc.autotune_epochs, patience=kc.patience,
                                device=device, seed=recipe.data.seed, progress_task="autotune")  # fmt: skip
        est.fit(Xa, Ya, Xv, Yv)
        return min(h["val_mse"] for h in est.history_)

    def grids(gamma: float) -> SigmaGrid:
        steps = kc.sigma_steps_per_octave
        if kc.sigma_low > 0 and kc.sigma_high > kc.sigma_low:
            return SigmaGrid.between(kc.sigma_low, kc.sigma_high, steps)
        return SigmaGrid.around(median_distance_power(Xa, gamma, seed=recipe.data.seed), steps=steps)

    return autotune(cv, kc.gammas, grids, log, band, n_subbands, data.condition)


def train_dnn(recipe: Recipe, data: TrainingSet, run_dir: Path, device: str) -> tuple[MaskModel, ModelTiming]:
    """The DNN baseline on the same inputs and targets; resumes from its per-epoch checkpoint."""
    from speechkern.models.dnn import DNNRegressor

    dc = recipe.dnn
    checkpoint = run_dir / "models" / ".dnn-checkpoint" / data.condition / "checkpoint"
    started = time.perf_counter()
    est = DNNRegressor(hidden=list(dc.hidden), dropout=dc.dropout, epochs=dc.epochs, batch_size=dc.batch_size,
                       learning_rate=dc.learning_rate, patience=dc.patience, device=device, seed=recipe.data.seed,
                       progress_task=f"dnn/{data.condition}")  # fmt: skip
    est.fit(data.X, data.Y, data.X_val, data.Y_val, checkpoint=checkpoint)
    seconds = sum(h["seconds"] for h in est.history_)
    best_seconds = sum(h["seconds"] for h in est.history_ if h["epoch"] <= est.best_epoch_)
    model = MaskModel("dnn", recipe.features, recipe.target, data.stats, [(0, data.Y.shape[1])], [est],
                      {"condition": data.condition, "name": "dnn", "epochs": len(est.history_),
                       "best_epoch": est.best_epoch_, "seconds": seconds, "seconds_to_best": best_seconds})  # fmt: skip
    model.info["val_mse"] = _val_mse(model, data)
    model.save(model_dir(run_dir, "dnn", data.condition), overwrite=True)
    shutil.rmtree(checkpoint.parent, ignore_errors=True)
    logger.info("dnn trained in %.1f s (this run), %d epochs, best %d", time.perf_counter() - started,
                len(est.history_), est.best_epoch_)  # fmt: skip
    timing = ModelTiming("dnn", data.condition, 1, seconds / 60.0, len(est.history_), model.info["val_mse"],
                         {"minutes_to_best": best_seconds / 60.0, "best_epoch": est.best_epoch_})  # fmt: skip
    return model, timing


def _val_mse(model: MaskModel, data: TrainingSet) -> float:
    return float(np.mean((model.predict(data.X_val) - data.Y_val) ** 2))


@dataclass
class TrainSummary:
    run_dir: Path
    timings: list[ModelTiming]
    skipped: list[str]


def train(
    recipe: Recipe,
    run_dir: str | os.PathLike,
    *,
    models: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    cache_dir: str | os.PathLike | None = "default",
    device: str | None = None,
) -> TrainSummary:
    """Train the recipe's models into ``run_dir`` (see ARCHITECTURE.md for the layout)."""
    run_dir = Path(run_dir)
    names = list(models or recipe.train.models)
    for n in names:
        if n not in MODEL_NAMES:
            raise SpeechkernError(f"model {n!r}: expected one of {', '.join(MODEL_NAMES)}")
    device_name = str(resolve_device(device or recipe.train.device))
    open_run(recipe, run_dir, resume=resume, overwrite=overwrite)
    cache = default_cache_dir() if cache_dir == "default" else (None if cache_dir is None else Path(cache_dir))
    logger.info("run %s: recipe %s, models %s, device %s", run_dir, recipe.name, ", ".join(names), device_name)
    timings = _read_timings(run_dir)
    skipped = []
    for data in training_sets(recipe, run_dir, cache):
        for name in names:
            if (model_dir(run_dir, name, data.condition) / "config.json").is_file():
                skipped.append(f"{name}/{data.condition}")
                logger.info("%s for %s: finished in an earlier run, kept", name, data.condition)
                continue
            if name == "dnn":
                _, timing = train_dnn(recipe, data, run_dir, device_name)
            else:
                subbands = 1 if name == "kernel1" else recipe.kernel.subbands
                _, timing = train_kernel(recipe, data, run_dir, subbands, name, device_name)
            timings = [t for t in timings if (t.model, t.condition) != (timing.model, timing.condition)] + [timing]
            write_timings(run_dir, timings)
    return TrainSummary(run_dir, timings, skipped)


TIMING_FIELDS = ("model", "condition", "subbands", "minutes", "epochs", "val_mse")


def write_timings(run_dir: Path, timings: list[ModelTiming]) -> None:
    """The training-time table as Markdown, CSV and JSON (``training_time.*`` in the run directory)."""
    rows = [{"model": t.model, "condition": t.condition, "subbands": t.subbands, "minutes": round(t.minutes, 3),
             "epochs": t.epochs, "val_mse": t.val_mse, **t.extra} for t in timings]  # fmt: skip
    write_text_atomic(run_dir / "training_time.json", json.dumps({"rows": rows}, indent=2))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TIMING_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(run_dir / "training_time.csv", buf.getvalue())
    lines = ["| model | condition | subbands | minutes | epochs | validation MSE |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['condition']} | {r['subbands']} | {r['minutes']:.2f} | {r['epochs']} | "
              f"{r['val_mse']:.5f} |" for r in rows]  # fmt: skip
    write_text_atomic(run_dir / "training_time.md", "\n".join(lines) + "\n")


def _read_timings(run_dir: Path) -> list[ModelTiming]:
    path = run_dir / "training_time.json"
    if not path.is_file():
        return []
    out = []
    for r in json.loads(path.read_text())["rows"]:
        extra = {k: v for k, v in r.items() if k not in TIMING_FIELDS}
        out.append(ModelTiming(r["model"], r["condition"], r["subbands"], r["minutes"], r["epochs"], r["val_mse"],
                               extra))  # fmt: skip
    return out
