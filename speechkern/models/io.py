"""The on-disk mask model: ``config.json`` plus ``weights.safetensors`` in one folder, no pickle.

A :class:`MaskModel` is everything ``enhance`` and ``evaluate`` need: the feature and target configuration it
was trained with, the feature normalisation statistics, and one estimator per block of mask channels (one
block for the DNN and the single-kernel model, b blocks for the subband kernel machine). Loading reads JSON and
tensors only; no code from the file is run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import speechkern
from speechkern.device import resolve_device
from speechkern.errors import SpeechkernError
from speechkern.features import FeatureConfig, FeatureStats, stack_context
from speechkern.targets import TargetConfig

FORMAT = "speechkern-mask-model"
FORMAT_VERSION = 2  # 2: features see the waveform at a fixed RMS level (FeatureConfig.level_dbfs)
# Bump when feature extraction changes what it computes: models trained before then are refused by enhance.
FEATURES_VERSION = 2


def _estimator_classes() -> dict[str, Any]:
    from speechkern.eigenpro import EigenProRegressor
    from speechkern.models.dnn import DNNRegressor

    return {"eigenpro": EigenProRegressor, "dnn": DNNRegressor}


def _estimator_kind(estimator: Any) -> str:
    for kind, cls in _estimator_classes().items():
        if isinstance(estimator, cls):
            return kind
    raise TypeError(f"no on-disk form for {type(estimator).__name__}")


def split_bands(n_units: int, n_bands: int) -> list[tuple[int, int]]:
    """``n_bands`` contiguous blocks ``[lo, hi)`` covering ``n_units`` channels, sizes differing by at most 1."""
    if not 1 <= n_bands <= n_units:
        raise SpeechkernError(f"subbands = {n_bands}: must be between 1 and the {n_units} mask channels")
    edges = np.linspace(0, n_units, n_bands + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


@dataclass
class MaskModel:
    """A trained mask estimator with its feature pipeline.

    kind: "kernel" or "dnn"; bands: channel blocks ``[lo, hi)``, one estimator each, in channel order;
    info: training facts (timings, chosen kernels, epochs) kept in config.json.
    """

    kind: str
    feature_config: FeatureConfig
    target_config: TargetConfig
    stats: FeatureStats
    bands: list[tuple[int, int]]
    estimators: list[Any]
    info: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"  # where the estimators live; enhance computes features there too

    @property
    def n_units(self) -> int:
        return self.bands[-1][1]

    def inputs(self, features: np.ndarray) -> np.ndarray:
        """Model inputs from raw per-frame features (n_frames, base_dim): normalised, context stacked."""
        return stack_context(self.stats.normalize(features), self.feature_config.context)

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Real-valued mask estimates (n_frames, n_units), clipped to [0, 1], bands reassembled in order."""
        parts = [np.asarray(est.predict(inputs), dtype=np.float32).reshape(len(inputs), -1) for est in self.estimators]
        for (lo, hi), part in zip(self.bands, parts, strict=True):
            if part.shape[1] != hi - lo:
                raise RuntimeError(f"band [{lo}, {hi}) predicted {part.shape[1]} channels")
        return np.clip(np.concatenate(parts, axis=1), 0.0, 1.0)

    def mask(self, features: np.ndarray) -> np.ndarray:
        """The mask to apply (n_frames, n_units): binary masks thresholded at 0.5, ratio masks as estimated."""
        estimate = self.predict(self.inputs(features))
        return (estimate >= 0.5).astype(np.float32) if self.target_config.kind == "ibm" else estimate

    # -- persistence ---------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike, overwrite: bool = False) -> None:
        """Write ``config.json`` and ``weights.safetensors`` atomically (a temporary folder renamed into place).

        Tensors shared by several estimators (the subband models' common centres) are stored once.
        """
        folder = Path(folder)
        if folder.exists() and not overwrite:
            raise SpeechkernError(f"{folder}: a model is there already; pass --overwrite to replace it")
        tensors: dict[str, torch.Tensor] = {
            "stats.mean": torch.as_tensor(np.asarray(self.stats.mean)),
            "stats.std": torch.as_tensor(np.asarray(self.stats.std)),
        }
        seen: dict[str, str] = {}
        estimators = []
        for i, est in enumerate(self.estimators):
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
            "kind": self.kind,
            "features": self.feature_config.model_dump(mode="json"),
            "target": self.target_config.model_dump(mode="json"),
            "bands": [list(b) for b in self.bands],
            "estimators": estimators,
            "info": self.info,
        }
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            save_file(tensors, str(tmp / "weights.safetensors"))
            (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str = "cpu") -> MaskModel:
        """Read a model folder; refuses models whose format or feature code differs from this version's."""
        folder = Path(folder)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise SpeechkernError(f"{folder}: no model here (config.json missing); train one with `speechkern train`")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("format") == FORMAT and config.get("format_version") == 1:
            raise SpeechkernError(
                f"{folder}: model format v1 (speechkern {config.get('speechkern_version')}) computes features at the "
                "recording's own level and mis-scales quieter or louder input; retrain it with this speechkern"
            )
        if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
            raise SpeechkernError(
                f"{folder}: model format {config.get('format')} v{config.get('format_version')} is not "
                f"{FORMAT} v{FORMAT_VERSION}; retrain it with this version of speechkern"
            )
        if config.get("features_version") != FEATURES_VERSION:
            raise SpeechkernError(
                f"{folder}: trained with feature code v{config.get('features_version')} (speechkern "
                f"{config.get('speechkern_version')}), but this speechkern {speechkern.__version__} computes "
                f"features v{FEATURES_VERSION}; retrain the model"
            )
        tensors = load_file(str(folder / "weights.safetensors"))
        classes = _estimator_classes()
        estimators = []
        for entry in config["estimators"]:
            own = {key: tensors[name] for key, name in entry["tensors"].items()}
            estimators.append(classes[entry["kind"]].from_state(own, entry["config"], device=device))
        stats = FeatureStats(mean=tensors["stats.mean"].numpy(), std=tensors["stats.std"].numpy())
        return cls(
            kind=config["kind"],
            feature_config=FeatureConfig.model_validate(config["features"]),
            target_config=TargetConfig.model_validate(config["target"]),
            stats=stats,
            bands=[tuple(b) for b in config["bands"]],
            estimators=estimators,
            info=config.get("info", {}),
            device=str(resolve_device(device)),
        )
