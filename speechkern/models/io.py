"""Reading, writing and checking mask model folders: ``config.json`` plus ``weights.safetensors``, no pickle.

:func:`save_model` writes a :class:`~speechkern.models.mask_model.MaskModel` atomically; :func:`load_model`
reads JSON and tensors only (no code from the file is run) and checks the configuration against the weights'
shapes before any estimator is built. ``MaskModel`` and ``split_bands`` are re-exported from here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

import speechkern
from speechkern.device import resolve_device
from speechkern.eigenpro.state import read_safetensors
from speechkern.errors import SpeechkernError
from speechkern.features import FeatureConfig, FeatureStats, base_dim, input_dim
from speechkern.models.mask_model import MaskModel, _predict_estimators, split_bands
from speechkern.outputs import _UMASK
from speechkern.postfilter import GuardConfig
from speechkern.targets import TargetConfig, mask_units
from speechkern.transform import InputTransform

__all__ = ["FORMAT", "FORMAT_VERSION", "MaskModel", "_predict_estimators", "load_model", "save_model", "split_bands"]

FORMAT = "speechkern-mask-model"
MODEL_FILES = ("config.json", "weights.safetensors")  # what save_model writes; other files of a folder are kept
# 2: features see the waveform at a fixed RMS level; 3: local kernel machines; 4: a model's own clean-input guard
FORMAT_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)
# Bump when feature extraction changes what it computes: models trained before then are refused by enhance.
FEATURES_VERSION = 2


def _estimator_classes() -> dict[str, Any]:
    from speechkern.eigenpro import EigenProRegressor, LocalKernelRegressor
    from speechkern.models.dnn import DNNRegressor

    return {"eigenpro": EigenProRegressor, "local": LocalKernelRegressor, "dnn": DNNRegressor}


def _estimator_kind(estimator: Any) -> str:
    for kind, cls in _estimator_classes().items():
        if isinstance(estimator, cls):
            return kind
    raise TypeError(f"no on-disk form for {type(estimator).__name__}")


def save_model(model: MaskModel, folder: str | os.PathLike, overwrite: bool = False) -> None:
    """Write ``model`` as ``config.json`` and ``weights.safetensors``, atomically (a temporary folder renamed into
    place; the folder it replaces is moved aside until then). Other files of a replaced folder (a model's
    ATTRIBUTION.md, notes) are kept.

    Tensors shared by several estimators (the subband models' common centres) are stored once.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SpeechkernError(f"{folder}: is a file, not a model folder; choose another name for the model, or move "
                              "the file away")  # fmt: skip
    if folder.exists() and not overwrite:
        raise SpeechkernError(f"{folder}: a model is there already; pass overwrite=True to replace it")
    tensors: dict[str, torch.Tensor] = {
        "stats.mean": torch.as_tensor(np.asarray(model.stats.mean)),
        "stats.std": torch.as_tensor(np.asarray(model.stats.std)),
    }
    if model.transform is not None:
        tensors["transform.matrix"] = torch.as_tensor(model.transform.matrix)
    seen: dict[str, str] = {}
    estimators = []
    for i, est in enumerate(model.estimators):
        est_tensors, est_config = est.to_state()
        aliases = {}
        for key, value in est_tensors.items():
            value = value.detach().cpu().contiguous()
            digest = hashlib.sha256(value.numpy().tobytes()).hexdigest() + str(value.dtype) + str(value.shape)
            if digest in seen:
                aliases[key] = seen[digest]
            else:
                name = f"est{i}.{key}"
                tensors[name] = value
                seen[digest] = name
                aliases[key] = name
        estimators.append({"kind": _estimator_kind(est), "config": est_config, "tensors": aliases})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "features_version": FEATURES_VERSION,
        "speechkern_version": speechkern.__version__,
        "kind": model.kind,
        "features": model.feature_config.model_dump(mode="json"),
        "target": model.target_config.model_dump(mode="json"),
        "bands": [list(b) for b in model.bands],
        "transform": None if model.transform is None else model.transform.to_config(),
        "clean_guard": None if model.clean_guard is None else model.clean_guard.model_dump(mode="json"),
        "estimators": estimators,
        "info": model.info,
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp's folders are private; a model folder is not
        save_file(tensors, str(tmp / "weights.safetensors"), metadata={CONFIG_KEY: _signed(config)})
        (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        for written in tmp.iterdir():
            os.chmod(written, 0o666 & ~_UMASK)  # safetensors writes its files as 0600
        for kept in folder.iterdir() if folder.is_dir() else ():
            if kept.name not in MODEL_FILES:
                (shutil.copytree if kept.is_dir() else shutil.copy2)(kept, tmp / kept.name)
        # the old model is moved aside, not deleted, until the new one is in place: a failed or interrupted
        # rename leaves one of the two at ``folder``
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent)) if folder.exists() else None
        if old is not None:
            old.rmdir()  # a free name beside the folder (a rename onto a folder fails on Windows)
            os.replace(folder, old)
        try:
            os.replace(tmp, folder)
        except BaseException:
            if old is not None:
                os.replace(old, folder)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def load_model(folder: str | os.PathLike, device: str = "cpu") -> MaskModel:
    """Read a model folder; refuses models whose format or feature code differs from this version's.

    The configuration is checked against the weights' shapes before any estimator is built, so a damaged or
    edited folder gives one :class:`SpeechkernError` naming the folder and the problem, never a traceback or
    an allocation larger than the weights file.
    """
    folder = Path(folder)
    device = str(resolve_device(device))  # an unknown or absent device is the option's fault, not the folder's
    config_path = folder / "config.json"
    if config_path.is_dir():
        raise SpeechkernError(f"{folder}: config.json is a folder, not a file; {_remedy(folder)}")
    if not config_path.is_file():
        raise SpeechkernError(f"{folder}: no model here (config.json missing); train one with `speechkern train`")
    config = _read_config(folder)
    if config.get("format") == FORMAT and config.get("format_version") == 1:
        raise SpeechkernError(
            f"{folder}: model format v1 (speechkern {config.get('speechkern_version')}) computes features at the "
            "recording's own level and mis-scales quieter or louder input; retrain it with this speechkern"
        )
    if config.get("format") == FORMAT and isinstance(config.get("format_version"), int) \
            and config["format_version"] > FORMAT_VERSION:  # fmt: skip
        if config.get("speechkern_version") == speechkern.__version__:  # not newer: the number was edited
            raise SpeechkernError(
                f"{folder}: model format v{config['format_version']} is beyond the v{FORMAT_VERSION} that speechkern "
                f"{speechkern.__version__} (the version the file names) writes, so config.json was edited; "
                f"{_remedy(folder)}"
            )
        raise SpeechkernError(
            f"{folder}: model format v{config['format_version']} was written by a newer speechkern "
            f"({config.get('speechkern_version')}) than this one ({speechkern.__version__}); upgrade speechkern"
        )
    if config.get("format") != FORMAT or config.get("format_version") not in READABLE_VERSIONS:
        raise SpeechkernError(
            f"{folder}: model format {config.get('format')} v{config.get('format_version')} is not "
            f"{FORMAT} v{FORMAT_VERSION}; retrain it with this version of speechkern"
        )
    if config.get("features_version") != FEATURES_VERSION:
        raise SpeechkernError(
            f"{folder}: trained with feature code v{config.get('features_version')} (speechkern "
            f"{config.get('speechkern_version')}), but this speechkern {speechkern.__version__} computes "
            f"features v{FEATURES_VERSION}; "
            + (
                "upgrade speechkern"
                if isinstance(config.get("features_version"), int) and config["features_version"] > FEATURES_VERSION
                else "retrain the model"
            )
        )
    tensors, metadata = _read_weights(folder)
    try:
        return _from_checked(config, tensors, metadata, device)
    except _Damaged as err:
        raise SpeechkernError(f"{folder}: {err}; {_remedy(folder)}") from None
    except torch.OutOfMemoryError:  # a sound model on a full device: not the folder's fault
        size = sum(t.nbytes for t in tensors.values())
        raise SpeechkernError(
            f"{folder}: the model ({size / 2**20:.0f} MiB of weights) does not fit the free memory of {device}; "
            "free that device or choose another (device='cpu')"
        ) from None


def _from_checked(config: dict, tensors: dict[str, torch.Tensor], metadata: dict, device: str) -> MaskModel:
    saved = metadata.get(CONFIG_KEY)
    if saved is not None:  # the configuration written with the weights: config.json must not differ from it
        try:
            reference = json.loads(saved)
        except ValueError:
            raise _Damaged("weights.safetensors holds an unreadable configuration copy") from None
        if _signed(config) != saved:
            key = _first_difference(reference, _without_info(config))
            raise _Damaged(f"config.json was edited after training ({key})")
    # a flipped bit or a hand edit: NaN weights load, then give NaN masks (or silently other routes) later
    broken = [key for key, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if broken:
        raise _Damaged(f"weights.safetensors: {', '.join(sorted(broken))} hold(s) NaN or infinite values")
    missing = [k for k in ("kind", "features", "target", "bands", "estimators") if k not in config]
    if missing:
        raise _Damaged(f"config.json lacks {', '.join(missing)}")
    feature_config = _validated(FeatureConfig, config["features"], "features")
    target_config = _validated(TargetConfig, config["target"], "target")
    bands = _checked_bands(config["bands"], mask_units(target_config, feature_config))
    entries = config["estimators"]
    if not isinstance(entries, list) or len(entries) != len(bands):
        raise _Damaged(f"config.json has {len(bands)} bands but {_count(entries)} estimators")
    kind = config["kind"]
    expected_kind = {"kernel": ("eigenpro", "local"), "dnn": ("dnn",)}.get(kind)
    if expected_kind is None:
        raise _Damaged(f"config.json: kind {kind!r} is not 'kernel' or 'dnn'")
    for name in ("stats.mean", "stats.std"):
        if name not in tensors or tensors[name].shape != (base_dim(feature_config),):
            shape = tuple(tensors[name].shape) if name in tensors else "missing"
            raise _Damaged(f"{name} is {shape}, but the features give {base_dim(feature_config)} values per frame")
    n_inputs = input_dim(feature_config)
    transform = None
    if config.get("transform"):
        if "transform.matrix" not in tensors:
            raise _Damaged("config.json names an input transform but weights.safetensors has no transform.matrix")
        try:
            transform = InputTransform.from_state(tensors["transform.matrix"], config["transform"])
        except (SpeechkernError, KeyError, TypeError, ValueError) as err:
            raise _Damaged(f"the input transform cannot be rebuilt ({type(err).__name__}: {err})") from None
        if transform.in_dim != n_inputs:
            raise _Damaged(f"the input transform takes {transform.in_dim} inputs, the features give {n_inputs}")
        n_inputs = transform.out_dim
    guard = config.get("clean_guard")
    guard = None if guard is None else _validated(GuardConfig, guard, "clean_guard")
    classes = _estimator_classes()
    estimators = []
    for i, (entry, (lo, hi)) in enumerate(zip(entries, bands, strict=True)):
        where = f"estimator {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise _Damaged(f"config.json: {where} is not an object with a config")
        if entry.get("kind") not in expected_kind:
            raise _Damaged(f"config.json: {where} is of kind {entry.get('kind')!r}, a {kind} model needs "
                           f"{' or '.join(map(repr, expected_kind))}")  # fmt: skip
        names = entry.get("tensors")
        if not isinstance(names, dict) or any(not isinstance(v, str) or v not in tensors for v in names.values()):
            raise _Damaged(f"config.json: {where} names tensors that weights.safetensors does not hold")
        own = {key: tensors[name] for key, name in names.items()}
        check = {"dnn": _check_dnn, "eigenpro": _check_eigenpro, "local": _check_local}[entry["kind"]]
        check(own, entry["config"], n_inputs, hi - lo, where)
        try:
            estimators.append(classes[entry["kind"]].from_state(own, entry["config"], device=device))
        except torch.OutOfMemoryError:
            raise
        except (SpeechkernError, KeyError, TypeError, ValueError, RuntimeError) as err:
            raise _Damaged(f"{where} cannot be rebuilt ({type(err).__name__}: {err})") from None
    try:
        stats = FeatureStats(mean=tensors["stats.mean"].numpy(), std=tensors["stats.std"].numpy())
    except SpeechkernError as err:
        raise _Damaged(str(err)) from None
    info = config.get("info", {})
    return MaskModel(
        kind=kind,
        feature_config=feature_config,
        target_config=target_config,
        stats=stats,
        bands=bands,
        estimators=estimators,
        info=info if isinstance(info, dict) else {},
        device=str(resolve_device(device)),
        transform=transform,
        clean_guard=guard,
    )


# -- validation of a model folder ---------------------------------------------------------------------------

CONFIG_KEY = "speechkern.config"
"""Metadata key of weights.safetensors holding a copy of config.json (less ``info``), to detect edits."""


class _Damaged(Exception):
    """A problem with a model folder's contents; :meth:`MaskModel.load` adds the folder and the remedy."""


MODEL_NAMES = ("kernel", "kernel1", "dnn")  # the models a run may train, in the order reports list them


def run_models(run_dir: Path) -> list[str]:
    """The models a run set out to train, in the reports' order (:data:`MODEL_NAMES`): those the last ``speechkern
    train`` of it asked for (train.log), those it finished (training_time.json) and those with a folder in models/
    (finished, or parts and checkpoints of one under way). Not the recipe's: ``--models`` trains fewer."""
    names: set[str] = set()
    log = run_dir / "train.log"
    if log.is_file():
        with contextlib.suppress(OSError):
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                found = re.search(r": recipe .*?, models (.+?), device ", line)
                if found:  # the last request: a resume may ask for fewer than the first run did
                    names = {m.strip() for m in found.group(1).split(",")}
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        rows = json.loads((run_dir / "training_time.json").read_text(encoding="utf-8"))["rows"]
        names |= {r["model"] for r in rows if isinstance(r.get("model"), str)}
    models_dir = run_dir / "models"
    if models_dir.is_dir():
        for p in models_dir.iterdir():
            names.add(p.name.removeprefix(".").removesuffix("-parts").removesuffix("-checkpoint"))
    return [n for n in MODEL_NAMES if n in names]


def resume_hint(run: Path) -> str:
    """``resume the run RUN (resume=True)``, with ``models=[...]`` where the run set out to train other models
    than its recipe names (``speechkern train --models dnn``): resuming without it would train those too."""
    names = run_models(run)
    try:
        wanted = tomllib.loads((run / "recipe.toml").read_text(encoding="utf-8-sig"))["train"]["models"]
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        wanted = None
    asked = f", models={names!r}" if names and wanted is not None and set(names) != set(wanted) else ""
    return f"resume the run {run} (resume=True{asked})"


def _remedy(folder: Path) -> str:
    for run in (folder.parent.parent, folder.parent.parent.parent):  # models/<name> or models/<name>/<condition>
        if (run / "recipe.toml").is_file() and folder.is_relative_to(run / "models"):
            return f"retrain it: {resume_hint(run)}"
    return "restore the folder from a copy or retrain the model with `speechkern train`"


def _read_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise SpeechkernError(f"{folder}: config.json cannot be read ({err}); {_remedy(folder)}") from None
    except json.JSONDecodeError as err:
        raise SpeechkernError(f"{folder}: config.json is not valid JSON ({err}); {_remedy(folder)}") from None
    if not isinstance(config, dict):
        raise SpeechkernError(f"{folder}: config.json holds no JSON object; {_remedy(folder)}")
    return config


def _read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = folder / "weights.safetensors"
    if path.is_dir():
        raise SpeechkernError(f"{folder}: weights.safetensors is a folder, not a file; {_remedy(folder)}")
    if not path.is_file():
        raise SpeechkernError(f"{folder}: weights.safetensors is missing; {_remedy(folder)}")
    try:
        return read_safetensors(path, name=f"{folder}: weights.safetensors")
    except SpeechkernError as err:
        raise SpeechkernError(f"{err}; {_remedy(folder)}") from None


def _without_info(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "info"}


def _signed(config: dict) -> str:
    return json.dumps(_without_info(config), sort_keys=True)


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    """Where ``b`` first differs from ``a``: a dotted key path (list items by index) and both values, shortened."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{prefix}{key} ({'added' if key in b else 'removed'})"
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], f"{prefix}{key}.")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{prefix}{i}.")

    def short(value: Any) -> str:
        text = json.dumps(value)
        return text if len(text) <= 40 else text[:37] + "..."

    return f"{prefix.rstrip('.') or 'the configuration'} = {short(b)}, trained with {short(a)}"


def _validated(model: type, value: Any, section: str):
    try:
        return model.model_validate(value)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join([section, *(str(p) for p in first["loc"])])
        if first["type"] == "extra_forbidden":
            raise _Damaged(f"config.json: unknown key {key!r}") from None
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a check across fields: the input is the whole section
            raise _Damaged(f"config.json: {key}: {message}") from None
        raise _Damaged(f"config.json: {key} = {json.dumps(first.get('input'), default=str)}: {message}") from None


def _count(value: Any) -> int | str:
    return len(value) if isinstance(value, list) else "no list of"


def _checked_bands(bands: Any, n_units: int) -> list[tuple[int, int]]:
    ok = isinstance(bands, list) and bands and all(
        isinstance(b, list) and len(b) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in b)
        for b in bands
    )  # fmt: skip
    if ok:
        edges = [bands[0][0]] + [b[1] for b in bands]
        ok = edges[0] == 0 and all(b[0] < b[1] for b in bands) and all(
            bands[i][1] == bands[i + 1][0] for i in range(len(bands) - 1)
        )  # fmt: skip
    if not ok or bands[-1][1] != n_units:
        raise _Damaged(f"config.json: bands {json.dumps(bands)} do not split the target's {n_units} mask channels "
                       "into contiguous blocks")  # fmt: skip
    return [(int(a), int(b)) for a, b in bands]


def _shape(tensors: dict[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    return tuple(tensors[key].shape) if key in tensors else None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_eigenpro(tensors: dict[str, torch.Tensor], config: dict, n_inputs: int, n_outputs: int, where: str) -> None:
    """Centres (m, n_inputs), weights (m, n_outputs), eigenvalues (q,), and the config's sizes agreeing."""
    centers, weights, eig = (_shape(tensors, k) for k in ("centers", "weights", "eigenvalues"))
    if centers is None or weights is None or eig is None or len(eig) != 1:
        raise _Damaged(f"{where}: the kernel machine needs centres, weights and eigenvalues tensors")
    if len(centers) != 2 or centers[1] != n_inputs:
        raise _Damaged(f"{where}: centres are {centers}, but the features give {n_inputs} inputs per frame")
    if weights != (centers[0], n_outputs):
        raise _Damaged(f"{where}: weights are {weights}, expected ({centers[0]}, {n_outputs}) for its band")
    if config.get("n_features_in") != n_inputs or config.get("n_outputs") != n_outputs:
        raise _Damaged(f"{where}: n_features_in {config.get('n_features_in')} and n_outputs {config.get('n_outputs')}"
                       f" do not match the weights ({n_inputs}, {n_outputs})")  # fmt: skip
    if not isinstance(config.get("params"), dict) or not isinstance(config.get("kernel"), dict):
        raise _Damaged(f"{where}: its config lacks params or kernel")


def _check_local(tensors: dict[str, torch.Tensor], config: dict, n_inputs: int, n_outputs: int, where: str) -> None:
    """Centres (n, n_inputs), weights (n, n_outputs), and per tree (``n_trees`` of the config, 1 before there
    were several) 2^depth − 1 splits and 2^depth leaves, with one more leaf offset in all."""
    centers, weights, offsets, directions = (
        _shape(tensors, k) for k in ("centers", "weights", "leaf_offsets", "split_directions")
    )
    if centers is None or weights is None or offsets is None or directions is None:
        raise _Damaged(f"{where}: the local kernel machine needs centres, weights, leaf offsets and split directions")
    if len(centers) != 2 or centers[1] != n_inputs or weights != (centers[0], n_outputs):
        raise _Damaged(f"{where}: centres {centers} and weights {weights} do not fit {n_inputs} inputs and "
                       f"{n_outputs} channels")  # fmt: skip
    trees = config.get("n_trees", 1)
    leaves = (offsets[0] - 1) // trees if isinstance(trees, int) and trees >= 1 and len(offsets) == 1 else 0
    if leaves < 1 or leaves * trees != offsets[0] - 1 or directions != (trees * (leaves - 1), n_inputs):
        raise _Damaged(f"{where}: {directions} split directions do not fit {offsets} leaf offsets")
    if config.get("n_features_in") != n_inputs or config.get("n_outputs") != n_outputs:
        raise _Damaged(f"{where}: n_features_in {config.get('n_features_in')} and n_outputs {config.get('n_outputs')}"
                       f" do not match the weights ({n_inputs}, {n_outputs})")  # fmt: skip


def _check_dnn(tensors: dict[str, torch.Tensor], config: dict, n_inputs: int, n_outputs: int, where: str) -> None:
    """Each layer's weight (out, in) and bias (out,) as ``params.hidden`` says, before any layer is allocated."""
    params = config.get("params")
    hidden = params.get("hidden") if isinstance(params, dict) else None
    if not isinstance(hidden, list) or not all(_positive_int(h) for h in hidden):
        raise _Damaged(f"{where}: params.hidden = {json.dumps(hidden)}, expected a list of layer sizes")
    if config.get("n_features_in") != n_inputs or config.get("n_outputs") != n_outputs:
        raise _Damaged(f"{where}: n_features_in {config.get('n_features_in')} and n_outputs {config.get('n_outputs')}"
                       f" do not match the features and band ({n_inputs}, {n_outputs})")  # fmt: skip
    sizes = [*hidden, n_outputs]
    expected, width = {}, n_inputs
    for i, size in enumerate(sizes):  # build_mlp: Linear, ReLU, Dropout per hidden layer, then Linear, Sigmoid
        expected[f"{3 * i}.weight"], expected[f"{3 * i}.bias"] = (size, width), (size,)
        width = size
    for key, shape in expected.items():
        if _shape(tensors, key) != shape:
            layer = int(key.split(".")[0]) // 3
            raise _Damaged(f"{where}: layer {layer + 1} {key.split('.')[1]} is {_shape(tensors, key)} in the weights, "
                           f"but params.hidden = {hidden} asks for {shape}")  # fmt: skip
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise _Damaged(f"{where}: the weights hold layers ({', '.join(extra)}) that params.hidden = {hidden} lacks")
