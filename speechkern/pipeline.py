"""Training orchestration: a recipe becomes a run directory, step by step, resumable at every step.

Steps and what makes each resumable: the manifests are written once and read back; features and targets are
cached by content; every autotune evaluation is appended to ``autotune.jsonl``; each finished subband model
is saved before the next starts; the DNN saves a checkpoint after every epoch; a finished model is not retrained.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechkern import dataset
from speechkern.autotune import EvaluationLog, SigmaGrid, median_distance_power
from speechkern.cache import usable_cache_dir
from speechkern.device import resolve_device
from speechkern.errors import SpeechkernError
from speechkern.features import FeatureStats
from speechkern.mixtures import Mixture
from speechkern.models.io import MODEL_NAMES, MaskModel, split_bands
from speechkern.outputs import write_text
from speechkern.progress import report
from speechkern.recipe import Recipe, inert_settings, load_run_recipe, with_absolute_paths
from speechkern.transform import InputTransform, fit_transform

logger = logging.getLogger(__name__)

POOLED_CONDITION = "all"  # the condition of a multi-condition run's one model (every mixture)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a run directory while training it; a second process is refused.

    The lock is ``.<name>.lock`` beside the run directory (so --overwrite can delete the directory itself); the
    operating system releases it when the process ends, however it ends, and a normal end removes the file.
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f".{run_dir.name}.lock"
    while True:
        handle = open(path, "a+")  # noqa: SIM115 (closed below, after the lock is released)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise SpeechkernError(
                f"{run_dir}: another speechkern process is training this run; wait for it or train into another "
                "run directory"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break  # else the holder removed the file as it finished: lock the new one
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still holding the lock, so no process can lock the removed file unnoticed
        handle.close()


def open_run(recipe: Recipe, run_dir: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Create the run directory, or reopen it for ``resume``; never touch an existing run without a flag, nor, with
    one, a folder with files that is no run (:func:`is_run`: a project, a recipe folder)."""
    recipe_file = run_dir / "recipe.toml"
    check_not_inside_run(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        if overwrite or resume:
            check_not_foreign(run_dir)
        if overwrite:
            shutil.rmtree(run_dir)
        elif resume:
            if recipe_file.is_file():
                stored = with_absolute_paths(load_run_recipe(run_dir), run_dir)
                if stored != recipe:
                    key = _first_difference(stored.model_dump(), recipe.model_dump())
                    raise SpeechkernError(
                        f"{run_dir}: was started with a different recipe ({key} differs); resume with the same "
                        "recipe and overrides, or pass overwrite=True to start again"
                    )
            _remove_leftovers(run_dir)
        else:
            raise SpeechkernError(
                f"{run_dir}: a run exists there already; pass resume=True to continue it or overwrite=True to start "
                "again"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(recipe_file, recipe.to_toml())


def is_run(folder: Path) -> bool:
    """What training leaves in a run directory: train.log (the command line's, from its first moment), then the
    resolved recipe with the manifests and models."""
    return (folder / "train.log").is_file() or (
        (folder / "recipe.toml").is_file() and any((folder / name).is_dir() for name in ("manifests", "models"))
    )


def check_not_inside_run(run_dir: Path) -> None:
    """Refuse a run directory inside another run (its models/ or report/, say): the outer run's overwrite deletes it,
    and the outer run's models/ gains a folder that is no model."""
    path = Path(os.path.abspath(run_dir))
    outer = next((p for p in path.parents if (p / "recipe.toml").is_file() and (p / "train.log").is_file()
                  and any((p / name).is_dir() for name in ("manifests", "models"))), None)  # fmt: skip
    if outer is not None:
        raise SpeechkernError(f"{run_dir}: lies inside the run directory {outer}, which overwrite=True (training it "
                              f"again) deletes with it; choose a run directory outside {outer}")  # fmt: skip


def check_not_foreign(run_dir: Path) -> None:
    """Refuse a folder with files that is no run (:func:`is_run`: a project, a recipe folder), which overwrite
    would delete and resume fill."""
    if run_dir.is_dir() and any(run_dir.iterdir()) and not is_run(run_dir):
        raise SpeechkernError(f"{run_dir}: holds files but is not a run directory (no train.log, nor recipe.toml "
                              "with manifests/ or models/), so resume and overwrite leave it alone; choose another "
                              "run directory")  # fmt: skip


_MODEL_TMP = re.compile(r"^\..+\.[a-z0-9_]{8}$")  # MaskModel.save's temporary folder: .<name>.<mkdtemp suffix>


def _remove_leftovers(run_dir: Path) -> None:
    """Temporary files and model folders of a process killed mid-write (atomic writes are not yet renamed)."""
    for path in run_dir.rglob(".*.part"):
        with contextlib.suppress(OSError):
            path.unlink()
    models = run_dir / "models"
    if models.is_dir():
        folders = [models, *(p for p in models.iterdir() if p.is_dir() and not _MODEL_TMP.match(p.name))]
        for tmp in [p for folder in folders for p in folder.iterdir() if p.is_dir() and _MODEL_TMP.match(p.name)]:
            shutil.rmtree(tmp, ignore_errors=True)


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
    transform: InputTransform | None = None  # already applied to X and X_val


def kernel_training_set(recipe: Recipe, data: TrainingSet, keep: Path | None = None) -> TrainingSet:
    """The kernel models' view of ``data``: inputs mapped by ``kernel.input_transform`` (fitted on ``data.X``).

    keep: a file the fitted transform is written to, and read back from when it exists, so a resumed run's
    remaining subbands see the inputs its finished ones were trained on (and the RFM metric is not learned twice).
    A kept file that is damaged or was fitted on other settings or data is fitted again, unless subband parts
    finished on it (``<keep>/../../.<model>-parts/<condition>``): then SpeechkernError says which files to delete.
    """
    kc = recipe.kernel
    if kc.input_transform == "none":
        return data
    fitted_with = {"kind": kc.input_transform, "input_dims": kc.input_dims, "shape": kc.shape,
                   "rfm_frames": kc.rfm_frames, "rfm_iterations": kc.rfm_iterations, "rfm_diagonal": kc.rfm_diagonal,
                   "rfm_agop_frames": kc.rfm_agop_frames,
                   "seed": recipe.data.seed, "frames": len(data.X), "inputs": int(data.X.shape[1]),
                   "val_frames": len(data.X_val)}  # fmt: skip
    transform = None if keep is None else _kept_transform(keep, fitted_with, data.condition)
    if transform is None:
        started = time.perf_counter()
        try:
            transform = fit_transform(kc.input_transform, data.X, data.Y, data.X_val, data.Y_val, dims=kc.input_dims,
                                      shape=kc.shape, rfm_frames=kc.rfm_frames, rfm_iterations=kc.rfm_iterations,
                                      rfm_diagonal=kc.rfm_diagonal, rfm_agop_frames=kc.rfm_agop_frames,
                                      seed=recipe.data.seed)  # fmt: skip
        except SpeechkernError as err:
            raise SpeechkernError(f"condition {data.condition}: {err}") from None
        transform.info["seconds"] = round(time.perf_counter() - started, 3)
        transform.info["fitted_with"] = fitted_with
        logger.info("input transform %s for %s: %d → %d dimensions in %.1f s", transform.kind, data.condition,
                    transform.in_dim, transform.out_dim, transform.info["seconds"])  # fmt: skip
        if keep is not None:
            transform.save(keep)
    return TrainingSet(data.condition, transform.apply(data.X), data.Y, transform.apply(data.X_val), data.Y_val,
                       data.stats, transform)  # fmt: skip


def _kept_transform(keep: Path, fitted_with: dict, condition: str) -> InputTransform | None:
    """The transform kept at ``keep`` when it loads and was fitted with ``fitted_with``; None to fit it (again)."""
    models = keep.parent.parent
    parts = [
        p / condition
        for p in (models.iterdir() if models.is_dir() else ())
        if p.name.startswith(".") and p.name.endswith("-parts") and any((p / condition).glob("band-*.json"))
    ]
    if not keep.is_file():
        if not parts:
            return None
        problem = "is missing"
    else:
        try:
            transform = InputTransform.load(keep)
        except SpeechkernError as err:
            problem = err.reason  # "is ...": the message below names the file
        else:
            problem = _transform_mismatch(transform, fitted_with)
            if problem is None:
                logger.info("input transform %s for %s: fitted in an earlier run, kept", transform.kind, condition)
                return transform
    if parts:
        raise SpeechkernError(f"{keep}: the kept input transform {problem}, but the subbands finished in "
                              f"{', '.join(map(str, parts))} were trained on it; delete those folders and the file "
                              "to train them again, or train with --overwrite")  # fmt: skip
    logger.warning("%s: the kept input transform %s; fitting it again", keep, problem)
    return None


def _transform_mismatch(transform: InputTransform, fitted_with: dict) -> str | None:
    """How ``transform`` differs from one fitted with ``fitted_with`` (None: it may be one)."""
    kind, inputs, dims = fitted_with["kind"], fitted_with["inputs"], fitted_with["input_dims"]
    if transform.kind != kind:
        return f"is of kind {transform.kind}, not kernel.input_transform = {kind}"
    if transform.in_dim != inputs:
        return f"takes {transform.in_dim} inputs, the features give {inputs}"
    if kind != "rfm" and transform.out_dim != (dims or inputs):
        return f"gives {transform.out_dim} dimensions, not kernel.input_dims = {dims}"
    stored = transform.info.get("fitted_with")  # absent from files kept before it was recorded
    if stored is not None and stored != fitted_with:
        key = _first_difference(stored, fitted_with) if isinstance(stored, dict) else "fitted_with"
        was = stored.get(key) if isinstance(stored, dict) else stored
        return f"was fitted with {key} = {was}, not {fitted_with.get(key)}"
    return None


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


def training_conditions(recipe: Recipe, run_dir: Path) -> tuple[dict[str, list[Mixture]], list[str]]:
    """The run's manifests, and the conditions that get models of their own ("all" for multi-condition)."""
    manifests = dataset.build_manifests(recipe, run_dir)
    dataset.check_sources(run_dir, {s: manifests[s] for s in ("train", "val")})  # a resumed run's data moved since
    if recipe.train.mode == "multi-condition":
        return manifests, [POOLED_CONDITION]
    return manifests, sorted({m.condition for m in manifests["train"]})


def training_set(
    recipe: Recipe, manifests: dict[str, list[Mixture]], condition: str, cache_dir: Path | None, device: str = "cpu"
) -> TrainingSet:
    """Model inputs and targets of one condition ("all": every mixture), built from the feature cache.

    Built one condition at a time, so a per-condition recipe holds one condition's frames in memory, not all.
    """
    fc, tc, tr = recipe.features, recipe.target, recipe.train

    def frames(split: str) -> dataset.FrameData:
        rows = [m for m in manifests[split] if condition in (POOLED_CONDITION, m.condition)]
        if not rows:
            raise SpeechkernError(f"condition {condition}: no {split} mixtures; check the recipe's data section")
        return dataset.compute_frames(rows, fc, tc, cache_dir, tr.workers, f"{split} {condition}", device)

    train, val = frames("train"), frames("val")
    stats = FeatureStats.fit(train.features)
    rows = dataset.sample_rows(len(train), tr.max_train_frames, recipe.data.seed)
    vrows = dataset.sample_rows(len(val), tr.max_val_frames, recipe.data.seed + 1)
    data = TrainingSet(
        condition=condition,
        X=dataset.model_inputs(train, stats, fc.context, rows),
        Y=train.targets[rows],
        X_val=dataset.model_inputs(val, stats, fc.context, vrows),
        Y_val=val.targets[vrows],
        stats=stats,
    )
    logger.info("condition %s: %d training frames of %d, %d validation frames, %d inputs, %d outputs",
                condition, len(rows), len(train), len(vrows), data.X.shape[1], data.Y.shape[1])  # fmt: skip
    return data


def model_dir(run_dir: Path, name: str, condition: str) -> Path:
    """``models/<name>`` for a multi-condition model, ``models/<name>/<condition>`` per condition."""
    base = run_dir / "models" / name
    return base if condition == POOLED_CONDITION else base / condition


# ---------------------------------------------------------------------------------------------------------
# Units of work. Each runs anywhere (this process or a Ray worker): it takes arrays and settings and returns
# plain results; only the driver below writes into the run directory.


def fit_kernel_band(X, Y, X_val, Y_val, lo: int, hi: int, params: dict, executor=None) -> tuple[dict, dict, float]:
    """Fit the kernel machine on channels ``[lo, hi)``: ``params["solver"]`` "local" (a
    :class:`~speechkern.eigenpro.LocalKernelRegressor`, its leaves solved by ``executor`` when given) or
    "eigenpro" (an EigenProRegressor), the rest its parameters. Returns the estimator's state and the seconds it
    took."""
    from speechkern.eigenpro import EigenProRegressor, LocalKernelRegressor

    started = time.perf_counter()
    params = dict(params)
    cls = LocalKernelRegressor if params.pop("solver") == "local" else EigenProRegressor
    where = {} if executor is None else {"executor": executor}
    est = cls(**params).fit(X, Y[:, lo:hi], X_val, Y_val[:, lo:hi], **where)
    tensors, config = est.to_state()
    return tensors, config, time.perf_counter() - started


def validate_kernel(X, Y, X_val, Y_val, gamma: float, sigma: float, params: dict, groups: list | None = None):
    """Autotune's cv(γ, σ) and the seconds it took. With ``params["ridges"]`` (the exact solver): the best
    validation MSE of exact ridge solves over those λ, and that λ; otherwise the best validation MSE of a short
    EigenPro fit (λ None). Returns ``(loss, seconds, λ)``; with ``groups`` (the exact solver only: column ranges of
    Y, the subbands of one model) one such triple per group from one set of solves, the seconds shared out."""
    import torch

    from speechkern.eigenpro import EigenProRegressor
    from speechkern.eigenpro.exact import ridge_path
    from speechkern.kernels import ExponentialPowerKernel

    started = time.perf_counter()
    params = dict(params)
    ridges = params.pop("ridges", None)
    if ridges:
        device = resolve_device(params.get("device", "auto"))
        X, Y, X_val, Y_val = (torch.from_numpy(np.require(a, np.float32, ["C"])).to(device)
                              for a in (X, Y, X_val, Y_val))  # fmt: skip
        scores = ridge_path(ExponentialPowerKernel(gamma, sigma), X, Y, X_val, Y_val, ridges, groups=groups)
        seconds = time.perf_counter() - started
        if groups is not None:
            best = np.argmin(scores, axis=0)
            return [(float(scores[b, g]), seconds / len(groups), float(ridges[b])) for g, b in enumerate(best)]
        best = int(np.argmin(scores))
        return float(scores[best]), seconds, float(ridges[best])
    est = EigenProRegressor(shape=gamma, bandwidth=sigma, **params).fit(X, Y, X_val, Y_val)
    return min(h["val_mse"] for h in est.history_), time.perf_counter() - started, None


def fit_dnn(X, Y, X_val, Y_val, params: dict, checkpoint: str | None) -> tuple[dict, dict, float]:
    """Fit the DNN baseline (resuming from ``checkpoint`` if one is there); returns its state and seconds."""
    from speechkern.models.dnn import DNNRegressor

    started = time.perf_counter()
    est = DNNRegressor(**params).fit(X, Y, X_val, Y_val, checkpoint=checkpoint)
    tensors, config = est.to_state()
    return tensors, config, time.perf_counter() - started


def _run_unit(kind: str, *args):
    if kind == "dnn":  # the kernel fits' cached distance matrices are of no use to the DNN: free the memory
        from speechkern.kernels import clear_distance_cache

        clear_distance_cache()
    return {"kernel": fit_kernel_band, "dnn": fit_dnn}[kind](*args)


@dataclass
class _KernelUnit:
    """A subband kernel machine to train for one condition: its bands and where their parts are kept."""

    data: TrainingSet
    name: str
    bands: list[tuple[int, int]]
    parts: Path
    info: dict[int, dict] = field(default_factory=dict)
    estimators: dict[int, object] = field(default_factory=dict)
    solver: str = "local"  # "local" (leaves solved exactly), else EigenPro ("eigenpro2", "eigenpro3")
    centers: int | None = None  # EigenPro 3 centres; None: every frame a centre
    leaf_size: int | None = None  # the local solver's largest leaf
    trees: int = 1  # the local solver's averaged trees
    global_centers: int = 0  # the local solver's global machine (0: none)
    budget_gb: float | None = None  # memory budget the solver was chosen for (set with it); every band keeps to it

    def pending(self) -> list[int]:
        return [b for b in range(len(self.bands)) if b not in self.info]


def kernel_budget_bytes(recipe: Recipe, device: str) -> int:
    """Memory budget of one kernel fit: ``kernel.memory_gb``, or a third of the device's available memory."""
    from speechkern.kernels import available_memory_bytes, check_budget_gb, default_budget_bytes

    if recipe.kernel.memory_gb > 0:  # more than the machine has would plan solves that end in an OOM kill
        where = resolve_device(device)
        budget = check_budget_gb("kernel.memory_gb", recipe.kernel.memory_gb, where, "give 0")
        available = available_memory_bytes(where)
        if budget > available:  # memory may yet be freed (another job ending): said, not refused
            logger.warning("kernel.memory_gb=%g: more than the %.1f GiB of memory available now; the fits may swap "
                           "or be killed unless memory is freed (0: a third of what is available)",
                           recipe.kernel.memory_gb, available / 2**30)  # fmt: skip
        return budget
    return default_budget_bytes(resolve_device(device))


def kernel_solver(recipe: Recipe, data: TrainingSet, device: str, name: str = "kernel", budget: int | None = None):
    """The solver (:func:`~speechkern.eigenpro.solver.choose_solver`) for this training set (logged) under
    ``budget`` bytes (default :func:`kernel_budget_bytes`)."""
    from speechkern.eigenpro.solver import choose_solver

    kc = recipe.kernel
    budget = kernel_budget_bytes(recipe, device) if budget is None else budget
    choice = choose_solver(len(data.X), len(data.X_val), data.X.shape[1], budget, kc.solver, kc.centers,
                           kc.leaf_size, kc.leaf_centers, kc.trees, kc.global_centers, kc.global_frames)  # fmt: skip
    logger.info("%s %s: %s", name, data.condition, choice.reason)
    return choice


def _kernel_params(recipe: Recipe, unit: _KernelUnit, band: int, device: str, ridge: float | None) -> dict:
    kc = recipe.kernel
    common = {"device": device, "memory_budget_gb": unit.budget_gb, "seed": recipe.data.seed,
              "progress_task": f"{unit.name}/{unit.data.condition}/band-{band}"}  # fmt: skip
    if unit.solver == "local":
        return {"solver": "local", "leaf_size": unit.leaf_size, "ridge": kc.ridge if ridge is None else ridge,
                "leaf_centers": kc.leaf_centers, "trees": unit.trees, "global_centers": unit.global_centers,
                "global_frames": kc.global_frames, "centers_dtype": kc.centers_dtype, **common}  # fmt: skip
    return {"solver": "eigenpro", "centers": unit.centers, "epochs": kc.epochs, "patience": kc.patience,
            "ridge": kc.eigenpro_ridge, **common}  # fmt: skip


def _autotune_units(recipe: Recipe, units: list[_KernelUnit], run_dir: Path, executor, device: str) -> dict:
    """Algorithm 1 for every unfinished band of every kernel unit, evaluations spread over the executor.

    The subbands of an exact-solver unit share one subsample of its frames (the inputs are the same for every
    subband), so their σ grids coincide and one set of exact solves at a (γ, σ) scores every subband at once:
    each search gets the others' points for free (a 4-subband search evaluated about 100 points, 32 distinct)."""
    from speechkern.autotune import Request, TuneJob, autotune_jobs

    kc = recipe.kernel
    jobs, samples, together = [], {}, {}
    for u, unit in enumerate(units):
        solved_exactly = unit.solver == "local"
        shared = None
        for b in unit.pending():
            lo, hi = unit.bands[b]
            job = TuneJob(b, len(unit.bands), unit.data.condition, "exact" if solved_exactly else "eigenpro")
            seed = recipe.data.seed + (0 if solved_exactly else b)  # one subsample for all subbands of an exact unit
            rows = dataset.sample_rows(len(unit.data.X), kc.autotune_train_frames, seed + 10)
            vrows = dataset.sample_rows(len(unit.data.X_val), kc.autotune_val_frames, seed + 20)
            if solved_exactly:
                if shared is None:
                    arrays = (unit.data.X[rows], unit.data.Y[rows], unit.data.X_val[vrows], unit.data.Y_val[vrows])
                    shared = (arrays[0], tuple(executor.share(a) for a in arrays))
                    together[u] = []
                together[u].append(job)
                samples[job] = (shared[0], shared[1], (lo, hi), u)
            else:
                arrays = (unit.data.X[rows], unit.data.Y[rows, lo:hi], unit.data.X_val[vrows],
                          unit.data.Y_val[vrows, lo:hi])  # fmt: skip
                samples[job] = (arrays[0], tuple(executor.share(a) for a in arrays), None, None)
            jobs.append(job)
    if not jobs:
        return {}
    params = {"epochs": kc.autotune_epochs, "patience": kc.patience, "device": device, "seed": recipe.data.seed,
              "progress_task": "autotune"}  # fmt: skip
    exact = {"ridges": list(kc.ridges), "device": device}

    def grids(job, gamma: float) -> SigmaGrid:
        if kc.sigma_low > 0 and kc.sigma_high > kc.sigma_low:
            return SigmaGrid.between(kc.sigma_low, kc.sigma_high, kc.sigma_steps_per_octave)
        scale = median_distance_power(samples[job][0], gamma, seed=recipe.data.seed)
        if not scale > 0:
            raise SpeechkernError(
                f"condition {job.condition}, subband {job.subband + 1}: the training frames autotune sampled are all "
                "the same (silent or constant audio?), so no kernel bandwidth can be chosen; check the training "
                "audio, or give kernel.sigma_low and kernel.sigma_high"
            )
        return SigmaGrid.around(scale, steps=kc.sigma_steps_per_octave)

    done = {"n": 0}

    def evaluate(requests):
        calls, answers = [], []  # answers[i]: the requests call i's result is for
        merged: dict[tuple, int] = {}
        for r in requests:
            _, arrays, _, unit = samples[r.job]
            if unit is None:
                calls.append(((*arrays, r.gamma, r.sigma, params), {}))
                answers.append([r])
                continue
            key = (unit, r.gamma, r.sigma)
            if key not in merged:  # every subband of the unit, asked for or not: each search may use the point
                merged[key] = len(calls)
                group = together[unit]
                calls.append(((*arrays, r.gamma, r.sigma, exact), {"groups": [samples[j][2] for j in group]}))
                answers.append([Request(j, r.gamma, r.sigma, r.grid_index) for j in group])
        for index, result in executor.run(validate_kernel, calls):
            for r, (loss, seconds, ridge) in zip(answers[index], result if isinstance(result, list) else [result],
                                                 strict=True):  # fmt: skip
                done["n"] += 1
                report("autotune", done["n"], None, "autotune evaluations", band=r.job.subband, gamma=r.gamma,
                       sigma=r.sigma, val_mse=loss, **({} if ridge is None else {"ridge": ridge}))  # fmt: skip
                yield (r, loss, seconds) if ridge is None else (r, loss, seconds, ridge)

    log = EvaluationLog(run_dir / "autotune.jsonl")
    choices = autotune_jobs(jobs, kc.gammas, grids, evaluate, log)
    for job, choice in choices.items():
        logger.info("autotune %s band %d/%d: gamma %g sigma %.4g%s (val mse %.5f) after %d evaluations",
                    job.condition, job.subband + 1, job.n_subbands, choice.gamma, choice.sigma,
                    "" if choice.ridge is None else f" ridge {choice.ridge:g}", choice.val_loss,
                    len(choice.evaluations))  # fmt: skip
    return choices


def _finish_kernel(recipe: Recipe, unit: _KernelUnit, run_dir: Path) -> ModelTiming:
    """Assemble the finished bands into one model, save it, and drop the parts."""
    infos = [unit.info[b] for b in range(len(unit.bands))]
    estimators = [unit.estimators[b] for b in range(len(unit.bands))]
    model = MaskModel("kernel", recipe.features, recipe.target, unit.data.stats, unit.bands, estimators,
                      {"bands": infos, "condition": unit.data.condition, "name": unit.name},
                      transform=unit.data.transform)  # fmt: skip
    model.info["val_mse"] = _val_mse(model, unit.data)
    model.save(model_dir(run_dir, unit.name, unit.data.condition), overwrite=True)
    shutil.rmtree(unit.parts, ignore_errors=True)
    with contextlib.suppress(OSError):
        unit.parts.parent.rmdir()  # the parts folder of the last condition
    autotune_s = sum(i.get("autotune_seconds", 0.0) for i in infos)
    extra = {"autotune_minutes": round(autotune_s / 60.0, 3), "centers": int(estimators[0].centers_.shape[0]),
             "solver": unit.solver, "leaves": int(getattr(estimators[0], "n_leaves_", 1)),
             "trees": int(getattr(estimators[0], "n_trees_", 1)),
             "global_centers": len(getattr(estimators[0], "global_centers_", ()))}  # fmt: skip
    if unit.data.transform is not None:
        extra |= {"input_transform": unit.data.transform.kind, "input_dims": unit.data.transform.out_dim,
                  "transform_minutes": round(unit.data.transform.info.get("seconds", 0.0) / 60.0, 3)}  # fmt: skip
    minutes = sum(i["seconds"] for i in infos) / 60.0
    logger.info("%s for %s: %.1f min, val mse %.5f", unit.name, unit.data.condition, minutes, model.info["val_mse"])
    return ModelTiming(unit.name, unit.data.condition, len(unit.bands), minutes, max(i["epochs"] for i in infos),
                       model.info["val_mse"], extra)  # fmt: skip


def _finish_dnn(recipe: Recipe, data: TrainingSet, run_dir: Path, tensors: dict, config: dict) -> ModelTiming:
    from speechkern.models.dnn import DNNRegressor

    est = DNNRegressor.from_state(tensors, config)
    seconds = sum(h["seconds"] for h in est.history_)
    best_seconds = sum(h["seconds"] for h in est.history_ if h["epoch"] <= est.best_epoch_)
    model = MaskModel("dnn", recipe.features, recipe.target, data.stats, [(0, data.Y.shape[1])], [est],
                      {"condition": data.condition, "name": "dnn", "epochs": len(est.history_),
                       "best_epoch": est.best_epoch_, "seconds": seconds, "seconds_to_best": best_seconds})  # fmt: skip
    model.info["val_mse"] = _val_mse(model, data)
    model.save(model_dir(run_dir, "dnn", data.condition), overwrite=True)
    checkpoints = run_dir / "models" / ".dnn-checkpoint"
    shutil.rmtree(checkpoints / data.condition, ignore_errors=True)
    with contextlib.suppress(OSError):
        checkpoints.rmdir()  # after the last condition
    logger.info("dnn for %s: %d epochs (best %d), %.1f min, val mse %.5f", data.condition, len(est.history_),
                est.best_epoch_, seconds / 60, model.info["val_mse"])  # fmt: skip
    return ModelTiming("dnn", data.condition, 1, seconds / 60.0, len(est.history_), model.info["val_mse"],
                       {"minutes_to_best": round(best_seconds / 60.0, 3), "best_epoch": est.best_epoch_})  # fmt: skip


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
    executor=None,
) -> TrainSummary:
    """Train the recipe's models into ``run_dir`` (see ARCHITECTURE.md for the layout).

    executor: where the work runs (:class:`speechkern.parallel.SerialExecutor` by default, or a
    :class:`~speechkern.parallel.RayExecutor`); the run directory comes out the same either way.
    """
    run_dir = Path(run_dir)
    recipe = with_absolute_paths(recipe)  # the run's recipe.toml reads the same from any working directory
    if models is not None and not list(models):  # an empty list is no choice; None is the recipe's
        raise SpeechkernError(f"models {list(models)!r}: an empty list trains nothing; give one or more of "
                              f"{', '.join(MODEL_NAMES)}, or None for the recipe's "
                              f"{', '.join(recipe.train.models)}")  # fmt: skip
    names = list(dict.fromkeys(models or recipe.train.models))  # once each: a repeat crashed autotune (KeyError)
    for n in names:
        if n not in MODEL_NAMES:
            raise SpeechkernError(f"model {n!r}: expected one of {', '.join(MODEL_NAMES)}")
    device_name = device or recipe.train.device
    resolved = str(resolve_device(device_name))  # fail early on a device that is not there
    if any(n.startswith("kernel") for n in names) and recipe.kernel.memory_gb > 0:
        from speechkern.kernels import check_budget_gb  # and on a budget the machine cannot hold, before the features

        check_budget_gb("kernel.memory_gb", recipe.kernel.memory_gb, resolved, "give 0")
    with run_lock(run_dir):
        open_run(recipe, run_dir, resume=resume, overwrite=overwrite)
        try:
            return _train_locked(recipe, run_dir, names, resolved, device_name, cache_dir, executor)
        except KeyboardInterrupt:
            logger.info("interrupted: finished models, subband parts and DNN epochs are kept; resume=True continues")
            raise


def _train_locked(recipe: Recipe, run_dir: Path, names: list[str], resolved: str, device_name: str, cache_dir,
                  executor) -> TrainSummary:  # fmt: skip
    from speechkern.parallel import SerialExecutor

    cache = usable_cache_dir(cache_dir)
    executor = executor or SerialExecutor()
    logger.info("run %s: recipe %s, models %s, device %s, executor %s", run_dir, recipe.name, ", ".join(names),
                device_name, executor.name)  # fmt: skip
    if any(name.startswith("kernel") for name in names):
        for note in inert_settings(recipe):
            logger.warning("%s", note)
    timings = _read_timings(run_dir)
    skipped: list[str] = []

    def record(timing: ModelTiming) -> None:
        nonlocal timings
        timings = [t for t in timings if (t.model, t.condition) != (timing.model, timing.condition)] + [timing]
        write_timings(run_dir, timings)

    manifests, conditions = training_conditions(recipe, run_dir)
    for condition in conditions:
        todo = [n for n in names if not _kept(recipe, model_dir(run_dir, n, condition), f"{n} for {condition}")]
        for name in sorted(set(names) - set(todo)):
            skipped.append(f"{name}/{condition}")
            logger.info("%s for %s: finished in an earlier run, kept", name, condition)
        if todo:
            data = training_set(recipe, manifests, condition, cache, resolved)
            for timing in _train_condition(recipe, data, todo, run_dir, executor, device_name):
                record(timing)
    return TrainSummary(run_dir, timings, skipped)


def _kept(recipe: Recipe, folder: Path, what: str) -> bool:
    """Whether a model finished by an earlier run is there, loads, and was trained with this recipe's settings."""
    if not (folder / "config.json").is_file():
        return False
    try:
        model = MaskModel.load(folder)
    except SpeechkernError as err:
        logger.warning("%s: the model kept from an earlier run does not load (%s); training it again", what, err)
        return False
    if model.feature_config != recipe.features or model.target_config != recipe.target:
        logger.warning("%s: the model in %s was trained with other features or targets; training it again", what,
                       folder)  # fmt: skip
        return False
    return True


def _kept_band(unit: _KernelUnit, b: int) -> bool:
    """Load band ``b`` of ``unit`` finished by an interrupted run into the unit; False when it is absent or broken."""
    from speechkern.eigenpro import load_estimator

    info_file = unit.parts / f"band-{b}.json"
    if not info_file.is_file():
        return False
    lo, hi = unit.bands[b]
    n_inputs = unit.data.X.shape[1]  # after the kernel models' input transform, if any
    try:
        info = json.loads(info_file.read_text())
        est = load_estimator(unit.parts / f"band-{b}")
        if not isinstance(info, dict) or (est.n_features_in_, est.n_outputs_) != (n_inputs, hi - lo):
            raise SpeechkernError(f"it maps {est.n_features_in_} inputs to {est.n_outputs_} channels, not "
                                  f"{n_inputs} to {hi - lo}")  # fmt: skip
    except (SpeechkernError, OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("%s %s band %d/%d: the part kept from an earlier run does not load (%s); training it again",
                       unit.name, unit.data.condition, b + 1, len(unit.bands), err)  # fmt: skip
        return False
    unit.info[b], unit.estimators[b] = info, est
    return True


def _train_condition(recipe: Recipe, data: TrainingSet, names: list[str], run_dir: Path, executor, device: str):
    """Train the named models on one condition's data; yields a timing row as each model is finished.

    Autotune evaluations run first (in parallel rounds), then every unfinished subband fit and the DNN run as
    one batch of independent tasks on the executor.
    """
    from speechkern.eigenpro import LocalKernelRegressor, estimator_from_state

    kernel_units: list[_KernelUnit] = []
    kernel_names = [n for n in names if n != "dnn"]
    keep = run_dir / "models" / ".kernel-transform" / f"{data.condition}.safetensors"
    kdata = kernel_training_set(recipe, data, keep) if kernel_names else data
    for name in kernel_names:
        n_subbands = 1 if name == "kernel1" else recipe.kernel.subbands
        unit = _KernelUnit(kdata, name, split_bands(data.Y.shape[1], n_subbands),
                           run_dir / "models" / f".{name}-parts" / data.condition)  # fmt: skip
        for b in range(len(unit.bands)):  # bands finished by an interrupted run
            if _kept_band(unit, b):
                logger.info("%s %s band %d/%d: finished in an earlier run, kept", name, data.condition, b + 1,
                            len(unit.bands))  # fmt: skip
        if unit.pending():
            # One budget, measured once: the solver's choice and every band's fit agree on it (free memory shrinks as
            # the fits run, and a budget re-measured per band would no longer hold the distances they share).
            kept = next(iter(unit.estimators.values()), None)
            if kept is not None and kept.memory_budget_gb is not None:  # a resumed run: as its finished bands
                local = isinstance(kept, LocalKernelRegressor)
                unit.solver = "local" if local else "eigenpro"
                unit.centers, unit.leaf_size = (None, kept.leaf_size) if local else (kept.centers, None)
                unit.trees = kept.trees if local else 1
                unit.global_centers = kept.global_centers if local else 0
                unit.budget_gb = float(kept.memory_budget_gb)
                what = (f"leaves of at most {unit.leaf_size} frames, a global machine of {unit.global_centers} "
                        "centres" if local else
                        f"{unit.centers} centres" if unit.centers else "every frame a centre")  # fmt: skip
                logger.info("%s %s: the remaining bands keep the finished bands' solver and budget (%s, %.2f GiB)",
                            name, data.condition, what, unit.budget_gb)  # fmt: skip
            else:
                budget = kernel_budget_bytes(recipe, device)
                choice = kernel_solver(recipe, kdata, device, name, budget)  # for the kernel's inputs
                unit.solver, unit.centers, unit.leaf_size = choice.solver, choice.centers, choice.leaf_size
                unit.trees, unit.global_centers = choice.trees, choice.global_centers
                unit.budget_gb = budget / 2**30
            kernel_units.append(unit)
        else:
            yield _finish_kernel(recipe, unit, run_dir)

    choices = _autotune_units(recipe, kernel_units, run_dir, executor, device) if recipe.kernel.autotune else {}

    # On Ray, a band of a local machine with several leaves is fitted here and its leaves run as tasks (one band
    # task would solve them one after the other); every other band, and the DNN, is a task.
    from speechkern.eigenpro.local import tree_depth

    bands = []
    for unit in kernel_units:
        for b in unit.pending():
            lo, hi = unit.bands[b]
            choice = next((c for j, c in choices.items() if (j.subband, j.n_subbands, j.condition) ==
                           (b, len(unit.bands), unit.data.condition)), None)  # fmt: skip
            gamma, sigma = (choice.gamma, choice.sigma) if choice else (recipe.kernel.shape, recipe.kernel.bandwidth)
            params = {"shape": gamma, "bandwidth": sigma,
                      **_kernel_params(recipe, unit, b, device, choice.ridge if choice else None)}  # fmt: skip
            autotune_s = sum(e.seconds for e in choice.evaluations) if choice else 0.0
            extra = {"band": [lo, hi], "gamma": gamma, "sigma": sigma, "ridge": params["ridge"],
                     "autotune_seconds": autotune_s}  # fmt: skip
            here = executor.name == "ray" and unit.solver == "local" and tree_depth(len(kdata.X), unit.leaf_size) > 0
            bands.append((here, (unit, b, extra), (lo, hi, params)))
    calls = [("kernel", lo, hi, params) for here, _, (lo, hi, params) in bands if not here]
    targets = [target for here, target, _ in bands if not here]
    if calls:
        kshared = tuple(executor.share(a) for a in (kdata.X, kdata.Y, kdata.X_val, kdata.Y_val))
        calls = [((kind, *kshared, lo, hi, params), {}) for kind, lo, hi, params in calls]
    if "dnn" in names:
        dc = recipe.dnn
        params = {"hidden": list(dc.hidden), "dropout": dc.dropout, "epochs": dc.epochs, "batch_size": dc.batch_size,
                  "learning_rate": dc.learning_rate, "patience": dc.patience, "optimizer": dc.optimizer,
                  "device": device, "seed": recipe.data.seed, "progress_task": f"dnn/{data.condition}"}  # fmt: skip
        checkpoint = run_dir / "models" / ".dnn-checkpoint" / data.condition / "checkpoint"
        shared = tuple(executor.share(a) for a in (data.X, data.Y, data.X_val, data.Y_val))
        calls.append((("dnn", *shared, params, str(checkpoint)), {}))
        targets.append((None, None, None))

    def band_done(unit: _KernelUnit, b: int, extra: dict, tensors: dict, config: dict, seconds: float):
        est = estimator_from_state(tensors, config, device="cpu")
        info = {**extra, "epochs": len(est.history_), "best_epoch": est.best_epoch_,
                "val_mse": min(h["val_mse"] for h in est.history_), "seconds": seconds}  # fmt: skip
        unit.parts.mkdir(parents=True, exist_ok=True)
        est.save(unit.parts / f"band-{b}", overwrite=True)
        write_text(unit.parts / f"band-{b}.json", json.dumps(info))
        unit.info[b], unit.estimators[b] = info, est
        logger.info("%s %s band %d/%d: gamma %g sigma %.4g, %d epochs, val mse %.5f, %.1f s", unit.name,
                    unit.data.condition, b + 1, len(unit.bands), info["gamma"], info["sigma"], info["epochs"],
                    info["val_mse"], seconds)  # fmt: skip
        if not unit.pending():
            yield _finish_kernel(recipe, unit, run_dir)

    total = len(calls) + sum(here for here, _, _ in bands)
    results = executor.run(_run_unit, calls)  # on Ray the tasks start now, beside the bands fitted here
    done = 0
    for here, (unit, b, extra), (lo, hi, params) in bands:
        if here:
            yield from band_done(unit, b, extra, *fit_kernel_band(kdata.X, kdata.Y, kdata.X_val, kdata.Y_val, lo,
                                                                  hi, params, executor))  # fmt: skip
            done += 1
            report(f"train/{data.condition}", done, total, f"fits for {data.condition}", milestone=True)
    for index, (tensors, config, seconds) in results:
        unit, b, extra = targets[index]
        if unit is None:
            yield _finish_dnn(recipe, data, run_dir, tensors, config)
        else:
            yield from band_done(unit, b, extra, tensors, config, seconds)
        done += 1
        report(f"train/{data.condition}", done, total, f"fits for {data.condition}", milestone=True)
    from speechkern.kernels import clear_distance_cache

    clear_distance_cache()  # the next condition has other data


TIMING_FIELDS = ("model", "condition", "subbands", "minutes", "epochs", "val_mse")


def write_timings(run_dir: Path, timings: list[ModelTiming]) -> None:
    """The training-time table as Markdown, CSV and JSON (``training_time.*`` in the run directory)."""
    rows = [{"model": t.model, "condition": t.condition, "subbands": t.subbands, "minutes": round(t.minutes, 3),
             "epochs": t.epochs, "val_mse": t.val_mse, **t.extra} for t in timings]  # fmt: skip
    write_text(run_dir / "training_time.json", json.dumps({"rows": rows}, indent=2))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=(*TIMING_FIELDS, "autotune_minutes", "transform_minutes"),
                            extrasaction="ignore")  # fmt: skip
    writer.writeheader()
    writer.writerows(rows)
    write_text(run_dir / "training_time.csv", buf.getvalue())
    # autotune and input-transform minutes beside fit minutes: the fit time alone hides the kernel search and the
    # learned metric's exact fits
    lines = ["| model | condition | subbands | fit minutes | autotune minutes | transform minutes | epochs | "
             "validation MSE |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['model']} | {r['condition']} | {r['subbands']} | {r['minutes']:.2f} | "
              f"{format_minutes(r.get('autotune_minutes'))} | {format_minutes(r.get('transform_minutes'))} | "
              f"{r['epochs']} | {r['val_mse']:.5f} |" for r in rows]  # fmt: skip
    write_text(run_dir / "training_time.md", "\n".join(lines) + "\n")


def format_minutes(minutes: float | None) -> str:
    """Minutes with two decimals, or "–" where a model has no such step (the training-time tables)."""
    return "–" if minutes is None else f"{minutes:.2f}"


def _read_timings(run_dir: Path) -> list[ModelTiming]:
    path = run_dir / "training_time.json"
    if not path.is_file():
        return []
    out = []
    try:
        for r in json.loads(path.read_text())["rows"]:
            extra = {k: v for k, v in r.items() if k not in TIMING_FIELDS}
            out.append(ModelTiming(r["model"], r["condition"], r["subbands"], r["minutes"], r["epochs"], r["val_mse"],
                                   extra))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("%s: unreadable (%s); the table starts again with the models trained now", path, err)
        return []
    return out
