"""Finding the model a user means: a run directory, a model folder, the newest run under ./runs, or the shipped
general model (``speechkern/pretrained/general``, installed with the package)."""

from __future__ import annotations

import os
from pathlib import Path

from speechkern.errors import SpeechkernError
from speechkern.models.io import MODEL_NAMES, MaskModel
from speechkern.outputs import write_text

PREFERENCE = MODEL_NAMES  # a run's first finished model, in this order, when none is named
SHIPPED = Path(__file__).resolve().parents[1] / "pretrained" / "general"


def shipped_model_dir() -> Path:
    """The folder of the general model shipped inside the package (recipes/general; CC BY 4.0, see its
    ATTRIBUTION.md); a SpeechkernError if this installation lacks it."""
    if not (SHIPPED / "config.json").is_file():
        raise SpeechkernError(
            f"{SHIPPED}: the shipped general model is missing from this installation; reinstall speechkern, "
            "train a model with `speechkern train recipes/demo`, or pass --model"
        )
    return SHIPPED


INDEX = "index.txt"  # runs trained elsewhere (train --out): one absolute path per line, in runs/index.txt


def record_run(run_dir: str | os.PathLike, root: str | os.PathLike = "runs") -> Path | None:
    """Note a run directory outside ``root`` in ``root/index.txt``, so that "the newest run" can find it.

    Runs directly under ``root`` need no entry (they are found by listing ``root``); returns the index file
    written, or None.
    """
    run_dir, root = Path(run_dir).resolve(), Path(root)
    if run_dir.parent == root.resolve():
        return None
    entries = _indexed_runs(root)
    if run_dir in entries:
        return None
    root.mkdir(parents=True, exist_ok=True)
    return write_text(root / INDEX, "".join(f"{p}\n" for p in [*entries, run_dir]))


def _indexed_runs(root: Path) -> list[Path]:
    index = root / INDEX
    if not index.is_file():
        return []
    lines = index.read_text(encoding="utf-8", errors="replace").splitlines()
    return list(dict.fromkeys(Path(line.strip()) for line in lines if line.strip()))


def _is_folder(path: Path) -> bool:
    """Whether a line of runs/index.txt names a folder: a damaged line (a name too long for the file system, one
    it cannot look at) names none, instead of stopping every command that looks for the newest run."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _newest_model_time(run: Path) -> float:
    """Modification time of the run's newest finished model (hidden folders of unfinished parts excluded)."""
    models = run / "models"
    times = [
        config.stat().st_mtime
        for config in models.glob("**/config.json")
        if not any(part.startswith(".") for part in config.relative_to(models).parts)
    ]
    return max(times, default=-1.0)


def newest_run(root: str | os.PathLike = "runs", besides: str | os.PathLike | None = None) -> Path | None:
    """The run directory whose newest model was written last, or None.

    Looks at the folders of ``root`` and at the runs listed in ``root/index.txt`` (runs trained with --out), other
    than ``besides`` (a folder just refused, which is no answer to the question of where a run is).
    """
    root = Path(root)
    candidates = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    candidates += [p for p in _indexed_runs(root) if _is_folder(p)]
    if besides is not None:
        refused = Path(besides).resolve()
        candidates = [p for p in candidates if p.resolve() != refused]
    best, best_time = None, -1.0
    for run in candidates:
        mtime = _newest_model_time(run)
        if mtime > best_time:
            best, best_time = run, mtime
    return best


def what_a_run_is(root: str | os.PathLike = "runs", refused: str | os.PathLike | None = None) -> str:
    """What a run directory holds and how to get one (the newest run under ``root`` other than the folder
    ``refused``, else how to train one), for errors about a folder that is not a run."""
    newest = newest_run(root, besides=refused)
    nearby = f"the newest one here is {newest}; or " if newest is not None else ""
    return (
        "a run directory is what `speechkern train RECIPE` writes: recipe.toml, manifests/ and models/, in "
        f"runs/<recipe name> (or the --out folder); {nearby}make one with `speechkern train recipes/demo`"
    )


def find_model(
    where: str | os.PathLike | None,
    system: str | None = None,
    condition: str | None = None,
    device: str = "cpu",
) -> tuple[MaskModel, Path]:
    """Load the model at ``where`` (model folder or run directory; None = the newest run under ./runs, else the
    shipped general model, :func:`shipped_model_dir`).

    In a run directory, ``system`` picks kernel, kernel1 or dnn (default: the first present in that order), and
    ``condition`` picks the model of a per-condition run. An empty ``system`` or ``condition`` (an unset variable
    in a script) is refused, not read as none given (--system '' took the default, --condition '' was "not
    trained on ").
    """
    for name, value in (("system", system), ("condition", condition)):
        if value is not None and not str(value).strip():
            choices = ", ".join(PREFERENCE) if name == "system" else "a condition such as ssn_0dB"
            raise SpeechkernError(f"--{name} {value!r}: empty; expected {choices}, or leave the option out")
    if where is None:
        where = newest_run()
        if where is None:
            try:
                where = shipped_model_dir()
            except SpeechkernError as err:
                raise SpeechkernError(
                    f"no trained model in {Path('runs').resolve()} nor in the runs listed in runs/{INDEX}, and {err}"
                ) from None
    path = Path(where)
    if not path.exists():
        raise SpeechkernError(f"{path}: no such run directory or model folder; {what_a_run_is(refused=path)}")
    if path.is_file():
        folder = f", {path.parent}" if path.name == "config.json" else ""
        raise SpeechkernError(f"{path}: is a file; give the folder that holds it{folder} (a model folder with "
                              "config.json, or a run directory)")  # fmt: skip
    if (path / "config.json").is_file():
        given = [f"--{name} {value}" for name, value in (("system", system), ("condition", condition)) if value]
        if given:
            raise SpeechkernError(f"{path}: is a single model folder, so {' and '.join(given)} does not apply; "
                                  "give a run directory to choose among its models, or drop the option")  # fmt: skip
        return MaskModel.load(path, device), path
    if path.parent.name == "models" and _condition_models(path):  # RUN/models/NAME of a per-condition run
        if system is not None and system != path.name:
            raise SpeechkernError(
                f"{path}: is the {path.name} model of a run, so --system {system} does not apply; give the run "
                f"directory {path.parent.parent} to choose among its models"
            )
        return _condition_model(path, condition, device)
    models = path / "models"
    if not models.is_dir():
        raise SpeechkernError(f"{path}: not a run directory or model folder (no models/ or config.json inside); "
                              f"{what_a_run_is(refused=path)}")  # fmt: skip
    started = [n for n in PREFERENCE if (models / n).is_dir()]
    # by default the first finished model: an empty or unfinished models/kernel was chosen over a finished dnn
    available = [n for n in started if (models / n / "config.json").is_file() or _condition_models(models / n)]
    if not started:
        raise SpeechkernError(f"{path}: holds no trained model yet; finish training with `speechkern train --resume`")
    name = system or (available or started)[0]  # none finished: the first one's folder says what it lacks
    if name not in started:
        raise SpeechkernError(f"{path}: has no {name} model; available: {', '.join(available) or 'none finished'}")
    return _condition_model(models / name, condition, device)


def _condition_models(folder: Path) -> list[str]:
    """The conditions of a per-condition model folder (RUN/models/NAME/CONDITION/config.json), sorted."""
    return sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file()) if folder.is_dir() else []


def _condition_model(folder: Path, condition: str | None, device: str) -> tuple[MaskModel, Path]:
    """The model of RUN/models/NAME (``folder``) for ``condition``: its one multi-condition model (which must have
    been trained on ``condition`` when one is named, :func:`check_condition`), or the condition's own model."""
    if (folder / "config.json").is_file():
        if condition is not None:
            check_condition(folder, condition)
        return MaskModel.load(folder, device), folder
    conditions = _condition_models(folder)
    if not conditions:
        raise SpeechkernError(f"{folder}: holds no finished model (no config.json in it or in a condition's "
                              "folder); finish training with `speechkern train --resume`")  # fmt: skip
    if condition is None and len(conditions) == 1:
        condition = conditions[0]  # one condition: nothing to choose
    if condition is None:
        raise SpeechkernError(
            f"{folder}: one model per condition ({', '.join(conditions)}); choose one with --condition"
        )
    if condition not in conditions:
        raise SpeechkernError(f"{folder}: no model for condition {condition}; available: {', '.join(conditions)}")
    return MaskModel.load(folder / condition, device), folder / condition


def check_condition(folder: str | os.PathLike, condition: str) -> None:
    """Refuse a ``condition`` that the multi-condition model in ``folder`` (RUN/models/NAME) was not trained on,
    naming the conditions it was (the run's training manifest, RUN/manifests/train.jsonl); one it was trained on
    selects that model, the only one. Raises :class:`~speechkern.errors.SpeechkernError`."""
    from speechkern.mixtures import read_manifest
    from speechkern.pipeline import POOLED_CONDITION

    if condition == POOLED_CONDITION:  # the model's own name
        return
    folder = Path(folder)
    manifest = folder.parent.parent / "manifests" / "train.jsonl"
    try:
        conditions = sorted({m.condition for m in read_manifest(manifest)})
    except SpeechkernError:
        conditions = []
    if condition not in conditions:
        drop = "drop --condition (the model serves every condition)"
        named = ", ".join(conditions[:5]) + (f" and {len(conditions) - 5} more" if len(conditions) > 5 else "")
        hint = f"give one of {named} or {drop}" if conditions else f"{manifest} is unreadable; {drop}"
        raise SpeechkernError(f"--condition {condition}: {folder} is one multi-condition model, not trained on "
                              f"{condition}; {hint}")  # fmt: skip
