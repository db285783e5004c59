"""Evaluation on the test split: mask MSE, STOI, ESTOI, PESQ, SI-SDR (and accuracy, HIT−FA for binary masks)
for the noisy input, the ideal mask and every trained model, per condition (noise × SNR) as in the paper.

Rows give the mean of per-file values (``mse``, ``hit_fa``, ...) and, for the mask measures, the value pooled over
every T-F unit of the condition as the OSU PNL toolbox reports it (``mse_pooled``, ``hit_fa_pooled``).

Masks are predicted in the main process; resynthesis and the speech metrics run in parallel over files
(joblib worker processes). A file PESQ cannot score is reported in ``problems`` and left out of that mean only.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechkern import audio, dataset, metrics
from speechkern.cache import usable_cache_dir
from speechkern.enhance import apply_mask
from speechkern.errors import SpeechkernError
from speechkern.mixtures import Mixture
from speechkern.models.io import MODEL_NAMES, resume_hint, run_models
from speechkern.models.mask_model import MaskModel
from speechkern.progress import report
from speechkern.recipe import Recipe, load_run_recipe, with_absolute_paths

logger = logging.getLogger(__name__)

SYSTEM_ORDER = ("noisy", "ideal", *MODEL_NAMES)
METRICS = ("mse", "mse_pooled", "stoi", "estoi", "pesq", "pesq_nb", "si_sdr", "accuracy", "hit_fa", "hit_fa_pooled")


def discover_models(run_dir: Path, device: str = "cpu") -> dict[str, dict[str, MaskModel]]:
    """Trained models of a run: name → condition ("all" for multi-condition) → model."""
    found: dict[str, dict[str, MaskModel]] = {}
    models_dir = run_dir / "models"
    if not models_dir.is_dir():
        return found
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        # exists(), not is_file(): a damaged model (a config.json that is a folder) is named by the load, not skipped
        if (folder / "config.json").exists():
            found[folder.name] = {"all": MaskModel.load(folder, device)}
        else:
            per = {c.name: MaskModel.load(c, device) for c in sorted(folder.iterdir()) if (c / "config.json").exists()}
            if per:
                found[folder.name] = per
    return found


def missing_models(
    run_dir: Path, recipe: Recipe, found: dict[str, dict[str, MaskModel]], conditions: list[str]
) -> list[str]:
    """``name/condition`` of every model the run set out to train (:func:`run_models`) and lacks, for each
    training condition ("all" for multi-condition)."""
    wanted = ["all"] if recipe.train.mode == "multi-condition" else conditions
    return [f"{name}/{c}" for name in run_models(run_dir) for c in wanted
            if c not in found.get(name, {}) and "all" not in found.get(name, {})]  # fmt: skip


def model_for(models: dict[str, MaskModel], condition: str) -> MaskModel:
    """The multi-condition model, or the one trained for this condition."""
    if "all" in models:
        return models["all"]
    if condition not in models:
        raise SpeechkernError(f"no model was trained for condition {condition}; trained: {', '.join(models)}")
    return models[condition]


@dataclass
class FileResult:
    """Scores of every system on one test mixture; ``counts``: system → :func:`metrics.mask_counts`."""

    id: str
    condition: str
    scores: dict[str, dict[str, float]]
    problems: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class Evaluation:
    """Per-file results, their means per condition and system, and per-channel mask MSE per system."""

    recipe: Recipe
    files: list[FileResult]
    rows: list[dict]
    channel_mse: dict[str, np.ndarray]
    example_masks: dict[str, dict[str, np.ndarray]]
    problems: list[str]
    missing: list[str] = field(default_factory=list)  # "name/condition" of models the run lacks


def _score_file(mixture: Mixture, masks: dict[str, np.ndarray], configs) -> FileResult:
    import torch

    torch.set_num_threads(1)  # one worker per core
    mix, clean, _ = mixture.build()
    sr = mixture.sr
    scores: dict[str, dict[str, float]] = {}
    problems: list[str] = []
    for system in ["noisy", *masks]:
        processed = mix if system == "noisy" else apply_mask(mix, masks[system], configs)
        s = metrics.speech_scores(clean, processed, sr)
        scores[system] = s.as_dict()
        problems += [f"{mixture.id} {system}: {p}" for p in s.problems]
    return FileResult(mixture.id, mixture.condition, scores, problems)


def evaluate(
    run_dir: str | os.PathLike,
    *,
    workers: int = 0,
    cache_dir: str | os.PathLike | None = "default",
    limit: int = 0,
    examples: int | None = None,
    device: str = "cpu",
) -> Evaluation:
    """Score the noisy input, the ideal mask and every model of ``run_dir`` on its test split.

    workers: processes for resynthesis and metrics (0: one per core); limit: score only the first ``limit`` test
    mixtures (0: all); examples: how many test files keep their masks for the report's figures and audio (default:
    the recipe's). Raises SpeechkernError for any of them that is not a whole number ≥ 0 (a negative ``limit``
    sliced from the end, dropping test files without a word), and for a folder that is no run or has no models.
    """
    for name, value, zero in (("workers", workers, "one per core"), ("limit", limit, "every test mixture"),
                              ("examples", 0 if examples is None else examples, "none")):  # fmt: skip
        if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0):
            raise SpeechkernError(f"{name}={value!r}: expected a whole number ≥ 0 (0: {zero})")
    run_dir = audio.as_path(run_dir, "run_dir")
    if cache_dir not in (None, "default"):
        cache_dir = audio.as_path(cache_dir, "cache_dir")
    if not (run_dir / "recipe.toml").is_file():
        from speechkern.models.select import what_a_run_is

        runs = (p for p in run_dir.parents if (p / "recipe.toml").is_file() and (p / "models").is_dir())
        run = next(runs, None) if run_dir.exists() else None
        if run is not None:  # the run's recipe.toml, a model folder, a file inside the run
            raise SpeechkernError(f"{run_dir}: lies inside the run directory {run}; evaluate that: give {run}")
        left = [name for name in ("models/", "manifests/", "train.log") if (run_dir / name.rstrip("/")).exists()]
        if run_dir.is_dir() and left:  # a run whose recipe.toml was deleted or lost: not "no run", nor another run
            raise SpeechkernError(f"{run_dir}: recipe.toml is missing from this run directory (it holds "
                                  f"{', '.join(left)}); restore recipe.toml from a copy, or write it again by "
                                  "training the recipe the run was trained with, with the same overrides, into "
                                  "this run directory with resume=True (finished models are kept)")  # fmt: skip
        what = "no such run directory" if not run_dir.exists() else "not a run directory (no recipe.toml inside)"
        what = "is a file, not a run directory" if run_dir.is_file() else what
        raise SpeechkernError(f"{run_dir}: {what}; {what_a_run_is(refused=run_dir)}")
    recipe = with_absolute_paths(load_run_recipe(run_dir), run_dir)
    if examples is None:
        examples = recipe.evaluate.examples
    models = discover_models(run_dir, device)
    resume = resume_hint(run_dir)  # the command line names its command
    if not models:  # before the manifests: a recipe folder, or a run stopped early, is left as it is
        raise SpeechkernError(f"{run_dir}: no trained models in models/; train them: {resume}")
    manifests = dataset.build_manifests(recipe, run_dir)
    missing = missing_models(run_dir, recipe, models, sorted({m.condition for m in manifests["train"]}))
    if missing:
        logger.warning("%s: the run is incomplete, no model for %s of the models it set out to train (%s); scoring "
                       "the others. Finish it: %s", run_dir, ", ".join(missing), ", ".join(run_models(run_dir)),
                       resume)  # fmt: skip
    test: list[Mixture] = manifests["test"]
    if limit:
        test = test[:limit]
    dataset.check_sources(run_dir, {"test": test})
    cache = usable_cache_dir(cache_dir)
    fc, tc = recipe.features, recipe.target
    frames = dataset.compute_frames(test, fc, tc, cache, workers, "test", device)
    binary = tc.kind == "ibm"

    # Masks per file and system; mask-level measures against the ideal mask.
    per_file_masks: list[dict[str, np.ndarray]] = []
    mask_scores: list[dict[str, dict[str, float]]] = []
    mask_counts: list[dict[str, dict[str, float]]] = []
    sq_err: dict[str, list[np.ndarray]] = {}
    for i, mixture in enumerate(test):
        span = frames.frames_of(i)
        ideal = frames.targets[span]
        masks = {"ideal": ideal}
        scores: dict[str, dict[str, float]] = {"ideal": {"mse": 0.0}}
        counts = {"ideal": metrics.mask_counts(ideal, ideal)}
        for name, per_condition in models.items():
            if "all" not in per_condition and mixture.condition not in per_condition:
                continue  # a per-condition run missing this condition's model (named in ``missing``): others scored
            model = model_for(per_condition, mixture.condition)
            estimate = model.predict(model.inputs(frames.features[span]))
            masks[name] = model.to_mask(estimate)
            scores[name] = {"mse": metrics.mask_mse(estimate, ideal)}
            if binary:
                scores[name] |= {"accuracy": metrics.binary_accuracy(estimate, ideal),
                                 "hit_fa": metrics.hit_minus_fa(estimate, ideal)}  # fmt: skip
            counts[name] = metrics.mask_counts(estimate, ideal)
            sq_err.setdefault(name, []).append((estimate.astype(np.float64) - ideal) ** 2)
        per_file_masks.append(masks)
        mask_scores.append(scores)
        mask_counts.append(counts)
        report("evaluate/masks", i + 1, len(test), "predicting masks")

    from joblib import delayed

    from speechkern.parallel import process_pool

    jobs = [delayed(_score_file)(m, masks, (fc, tc)) for m, masks in zip(test, per_file_masks, strict=True)]
    workers = min(workers or os.cpu_count() or 1, max(len(jobs), 1))  # no idle processes (workers=99999 hung)
    outputs = process_pool(workers)(jobs) if workers > 1 else (
        job[0](*job[1], **job[2]) for job in jobs
    )  # fmt: skip
    results: list[FileResult] = []
    for j, res in enumerate(outputs):
        results.append(res)
        report("evaluate/metrics", j + 1, len(jobs), "scoring files")
    for res, scores, counts in zip(results, mask_scores, mask_counts, strict=True):
        for system, values in scores.items():
            res.scores[system] |= values
        res.counts = counts
    rows = aggregate(results)
    channel_mse = {name: np.concatenate(errs).mean(axis=0) for name, errs in sq_err.items()}
    examples_out = {test[i].id: per_file_masks[i] for i in range(min(examples, len(test)))}
    problems = [p for r in results for p in r.problems]
    return Evaluation(recipe, results, rows, channel_mse, examples_out, problems, missing)


def aggregate(results: list[FileResult]) -> list[dict]:
    """Mean of each metric per (condition, system), plus an "all" condition over every file; NaNs are skipped
    and counted in ``n_failed``. Mask measures are also pooled over the T-F units of all the group's files
    (``mse_pooled``, ``hit_fa_pooled`` for binary targets; :func:`metrics.aggregate_mask_counts`)."""
    groups: dict[tuple[str, str], list[dict[str, float]]] = {}
    pooled: dict[tuple[str, str], list[dict[str, float]]] = {}
    conditions = sorted({r.condition for r in results})
    for r in results:
        for system, values in r.scores.items():
            keys = [(r.condition, system)] + ([("all", system)] if len(conditions) > 1 else [])
            for key in keys:
                groups.setdefault(key, []).append(values)
                if system in r.counts:
                    pooled.setdefault(key, []).append(r.counts[system])
    order = {s: i for i, s in enumerate(SYSTEM_ORDER)}
    rows = []
    for (condition, system), values in sorted(
        groups.items(), key=lambda kv: (kv[0][0] == "all", kv[0][0], order.get(kv[0][1], 99), kv[0][1])
    ):
        row: dict = {"condition": condition, "system": system, "n_files": len(values)}
        failed = 0
        for metric in METRICS:
            vals = [v[metric] for v in values if metric in v]
            if not vals:
                continue
            good = [v for v in vals if not math.isnan(v)]
            failed = max(failed, len(vals) - len(good))
            row[metric] = float(np.mean(good)) if good else math.nan
        if (condition, system) in pooled:
            values_pooled = metrics.aggregate_mask_counts(pooled[(condition, system)])
            row["mse_pooled"] = values_pooled["mse_pooled"]
            if "hit_fa" in row:
                row["hit_fa_pooled"] = values_pooled["hit_fa_pooled"]
        row["n_failed"] = failed
        rows.append(row)
    return rows
