"""Finding the model a user means: a run directory, a model folder, the newest run under ./runs, or the shipped
general model (``speechkern/pretrained/general``, installed with the package)."""

from __future__ import annotations

import os
from pathlib import Path

from speechkern.errors import SpeechkernError
from speechkern.models.io import MaskModel

PREFERENCE = ("kernel", "kernel1", "dnn")
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


def newest_run(root: str | os.PathLike = "runs") -> Path | None:
    """The run directory under ``root`` whose newest model was written last, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    best, best_time = None, -1.0
    for config in root.glob("*/models/**/config.json"):
        run = config.parents[len(config.relative_to(root).parts) - 2]
        mtime = config.stat().st_mtime
        if mtime > best_time:
            best, best_time = run, mtime
    return best


def find_model(
    where: str | os.PathLike | None,
    system: str | None = None,
    condition: str | None = None,
    device: str = "cpu",
) -> tuple[MaskModel, Path]:
    """Load the model at ``where`` (model folder or run directory; None = the newest run under ./runs, else the
    shipped general model, :func:`shipped_model_dir`).

    In a run directory, ``system`` picks kernel, kernel1 or dnn (default: the first present in that order), and
    ``condition`` picks the model of a per-condition run.
    """
    if where is None:
        where = newest_run() or shipped_model_dir()
    path = Path(where)
    if not path.exists():
        raise SpeechkernError(f"{path}: no such run directory or model folder")
    if (path / "config.json").is_file():
        return MaskModel.load(path, device), path
    models = path / "models"
    if not models.is_dir():
        raise SpeechkernError(f"{path}: not a run directory (no models/ inside); train one with `speechkern train`")
    available = [n for n in PREFERENCE if (models / n).is_dir()]
    if not available:
        raise SpeechkernError(f"{path}: holds no trained model yet; finish training with `speechkern train --resume`")
    name = system or available[0]
    if name not in available:
        raise SpeechkernError(f"{path}: has no {name} model; available: {', '.join(available)}")
    folder = models / name
    if not (folder / "config.json").is_file():
        conditions = sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file())
        if condition is None:
            raise SpeechkernError(
                f"{folder}: one model per condition ({', '.join(conditions)}); choose one with --condition"
            )
        if condition not in conditions:
            raise SpeechkernError(f"{folder}: no model for condition {condition}; available: {', '.join(conditions)}")
        folder = folder / condition
    return MaskModel.load(folder, device), folder
