"""Saving and loading fitted kernel models without pickle: safetensors tensors plus a JSON configuration (the
estimator's own ``to_state``/``from_state``, one file)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from speechkern.device import resolve_device
from speechkern.errors import SpeechkernError
from speechkern.kernels import ExponentialPowerKernel
from speechkern.outputs import atomic_write

FORMAT = "speechkern.eigenpro"
FORMAT_VERSION = 1
METADATA_KEY = "speechkern"  # safetensors header key that holds the JSON configuration


def to_state(est, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (keys ``prefix + name``, contiguous, on the CPU) and a JSON-able configuration."""
    check_is_fitted(est, "weights_")
    params = est.get_params()
    centers_param = params["centers"]
    if centers_param is not None and not isinstance(centers_param, (int, np.integer)):
        params["centers"] = "array"  # the centres themselves are saved as a tensor
    elif isinstance(centers_param, np.integer):
        params["centers"] = int(centers_param)
    tensors = {
        f"{prefix}centers": est.centers_.detach().to("cpu", torch.float32).contiguous(),
        f"{prefix}weights": est.weights_.detach().to("cpu", torch.float32).contiguous(),
        f"{prefix}eigenvalues": torch.from_numpy(np.ascontiguousarray(est.eigenvalues_, dtype=np.float64)),
    }
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "params": _jsonable(params),
        "kernel": est.kernel_.to_config(),
        "n_features_in": int(est.n_features_in_),
        "n_outputs": int(est.n_outputs_),
        "y_ndim": int(est.y_ndim_),
        "history": _jsonable(est.history_),
        "best_epoch": int(est.best_epoch_),
        "batch_size": int(est.batch_size_),
        "step_size": float(est.step_size_),
        "n_components": int(est.n_components_),
        "subsample_size": int(est.subsample_size_),
        "restarts": int(est.restarts_),
        "precomputed": bool(getattr(est, "precomputed_", False)),
    }
    return tensors, config


def from_state(
    cls, tensors: dict[str, torch.Tensor], config: dict[str, Any], prefix: str = "", device: str | None = None
) -> Any:
    """A fitted estimator from :meth:`to_state`'s output; tensors go to ``device`` (default ``"auto"``: CUDA when
    available, else the CPU, whatever device the model was trained on)."""
    if config.get("format") != FORMAT:
        raise SpeechkernError(f"model state of format {config.get('format')!r}: expected {FORMAT!r}")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise SpeechkernError(
            f"model state version {config.get('format_version')} is newer than this speechkern understands "
            f"({FORMAT_VERSION}); upgrade speechkern"
        )
    missing = [name for name in ("centers", "weights", "eigenvalues") if f"{prefix}{name}" not in tensors]
    if missing:
        raise SpeechkernError(f"model state lacks the tensors {', '.join(prefix + m for m in missing)}")
    params = dict(config["params"])
    if params.get("centers") == "array":
        params["centers"] = tensors[f"{prefix}centers"].numpy().copy()
    est = cls(**params)
    dev = resolve_device(device if device is not None else "auto")
    est.kernel_ = ExponentialPowerKernel.from_config(config["kernel"])
    est.centers_ = tensors[f"{prefix}centers"].to(dev, torch.float32).contiguous()
    est.weights_ = tensors[f"{prefix}weights"].to(dev, torch.float32).contiguous()
    est.eigenvalues_ = tensors[f"{prefix}eigenvalues"].numpy().astype(np.float64)
    est.n_features_in_ = int(config["n_features_in"])
    est.n_outputs_ = int(config["n_outputs"])
    est.y_ndim_ = int(config["y_ndim"])
    est.history_ = list(config["history"])
    est.best_epoch_ = int(config["best_epoch"])
    est.batch_size_ = int(config["batch_size"])
    est.step_size_ = float(config["step_size"])
    est.n_components_ = int(config["n_components"])
    est.subsample_size_ = int(config["subsample_size"])
    est.restarts_ = int(config["restarts"])
    est.precomputed_ = bool(config.get("precomputed", False))
    if est.centers_.shape != (est.weights_.shape[0], est.n_features_in_) or est.weights_.shape[1] != est.n_outputs_:
        raise SpeechkernError(
            f"model state is inconsistent: centres {tuple(est.centers_.shape)}, weights "
            f"{tuple(est.weights_.shape)}, {est.n_features_in_} features, {est.n_outputs_} outputs"
        )
    return est


def save(est, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the model to one safetensors file (JSON configuration in its header), atomically.

    Refuses to replace an existing file unless ``overwrite``. Returns the path written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise SpeechkernError(f"{path} exists; pass overwrite=True to replace it")
    tensors, config = est.to_state()
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(config)}))


def load(cls, path: str | os.PathLike, device: str | None = None) -> Any:
    """Read a model written by :meth:`save` (no code from the file is run); ``device`` as in :meth:`from_state`."""
    path = Path(path)
    if path.is_dir():
        raise SpeechkernError(f"{path} is a folder; expected the model file that save() wrote (a mask model folder "
                              "is read with speechkern.models.io.load_model)")  # fmt: skip
    if not path.is_file():
        raise SpeechkernError(f"model file {path} not found")
    tensors, metadata = read_safetensors(path)
    if METADATA_KEY not in metadata:
        raise SpeechkernError(f"model file {path} has no speechkern configuration; was it written by save()?")
    return cls.from_state(tensors, json.loads(metadata[METADATA_KEY]), device=device)


def _jsonable(obj: Any) -> Any:
    """Plain JSON types from NumPy scalars and containers."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _package_version() -> str:
    from speechkern import __version__

    return __version__


def read_safetensors(path: str | os.PathLike, name: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Every tensor of a safetensors file and its metadata (no code from the file is run).

    Raises :class:`~speechkern.errors.SpeechkernError` naming the file (or ``name``) when it is truncated or damaged.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    except Exception as exc:  # safetensors raises its own error types for truncated or damaged files
        reason = f"is damaged or truncated ({exc})"
        raise SpeechkernError(f"{name or path} {reason}", reason) from None
    return tensors, metadata
