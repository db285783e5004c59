"""The mask model: features of a waveform, the estimators per band of mask channels, and the mask they predict.

A :class:`MaskModel` is everything ``enhance`` and ``evaluate`` need: the feature and target configuration it
was trained with, the feature normalisation statistics, and one estimator per block of mask channels (one
block for the DNN and the single-kernel model, b blocks for the subband kernel machine). Its files are read and
written by :mod:`speechkern.models.io`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from speechkern import features as feature_extraction
from speechkern.errors import SpeechkernError
from speechkern.features import FeatureConfig, FeatureStats, stack_context
from speechkern.postfilter import GuardConfig
from speechkern.targets import TargetConfig
from speechkern.transform import InputTransform


def waveform_features(
    y: np.ndarray, sr: int, feature_config: FeatureConfig, device: str = "cpu", gain: float | None = None
) -> np.ndarray:
    """Per-frame features (n_frames, base_dim) of a mono waveform ``y`` (n_samples,) sampled at ``sr`` Hz.

    The one feature computation of training, ``evaluate`` and ``enhance``: :func:`speechkern.features.extract`
    after scaling ``y`` by ``gain`` (default :func:`speechkern.features.level_gain` of ``y``, so the features see
    the waveform at ``feature_config.level_dbfs``). Raises :class:`SpeechkernError` when ``sr`` is not the
    configuration's rate (resample first, e.g. :func:`speechkern.audio.resample`).
    """
    if int(sr) != feature_config.sr:
        raise SpeechkernError(
            f"waveform at {sr} Hz: the features expect {feature_config.sr} Hz; resample it to {feature_config.sr} Hz"
        )
    return feature_extraction.extract(y, feature_config, device=device, gain=gain)


def split_bands(n_units: int, n_bands: int) -> list[tuple[int, int]]:
    """``n_bands`` contiguous blocks ``[lo, hi)`` covering ``n_units`` channels, sizes differing by at most 1."""
    if not 1 <= n_bands <= n_units:
        raise SpeechkernError(f"subbands = {n_bands}: must be between 1 and the {n_units} mask channels")
    edges = np.linspace(0, n_units, n_bands + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _predict_estimators(estimators: list[Any], inputs: np.ndarray, prepared: dict | None = None) -> list[np.ndarray]:
    """Each estimator's float32 predictions for ``inputs`` (n, d). Kernel estimators that share their centres (the
    subband models') share one matrix of squared distances per block of rows, the larger part of the work
    (:func:`speechkern.kernels.shared_center_products`; equal to each estimator's own ``predict`` to float32
    rounding). ``prepared``: a dict in which the centres' :func:`~speechkern.kernels.prepare_points` are kept
    between calls."""
    from speechkern.eigenpro import EigenProRegressor, LocalKernelRegressor
    from speechkern.eigenpro.local import predict_local, same_partition
    from speechkern.kernels import prepare_points, shared_center_products

    out: list[np.ndarray | None] = [None] * len(estimators)
    local = [i for i, e in enumerate(estimators) if isinstance(e, LocalKernelRegressor)]
    while local:  # local machines on one partition (the subbands of one training set) route and measure once
        members = [i for i in local if same_partition(estimators[local[0]], estimators[i])]
        X = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        for i, pred in zip(members, predict_local([estimators[i] for i in members], X), strict=True):
            out[i] = pred.cpu().numpy()
        local = [i for i in local if i not in members]
    groups: dict[tuple, list[int]] = {}
    for i, est in enumerate(estimators):
        if isinstance(est, EigenProRegressor) and getattr(est, "n_features_in_", None) == inputs.shape[1]:
            groups.setdefault((est.centers_.data_ptr(), tuple(est.centers_.shape), est.centers_.device), []).append(i)
    cache = {} if prepared is None else prepared
    for key, members in ((k, m) for k, m in groups.items() if len(m) > 1):
        Z = estimators[members[0]].centers_
        if key not in cache:
            cache[key] = prepare_points(Z)
        X = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(Z.device)
        preds = shared_center_products(
            X, cache[key], [estimators[i].kernel_ for i in members], [estimators[i].weights_ for i in members]
        )
        for i, pred in zip(members, preds, strict=True):
            out[i] = pred.cpu().numpy()
    return [
        np.asarray(e.predict(inputs), dtype=np.float32) if o is None else o
        for e, o in zip(estimators, out, strict=True)
    ]


@dataclass
class MaskModel:
    """A trained mask estimator with its feature pipeline.

    kind: "kernel" or "dnn"; bands: channel blocks ``[lo, hi)``, one estimator each, in channel order;
    info: training facts (timings, chosen kernels, epochs) kept in config.json; transform: the linear map applied
    to the normalised, context-stacked inputs before the estimators (:mod:`speechkern.transform`), or None;
    clean_guard: the model's own clean-input guard (:class:`speechkern.postfilter.GuardConfig`), or None for the
    default.
    """

    kind: str
    feature_config: FeatureConfig
    target_config: TargetConfig
    stats: FeatureStats
    bands: list[tuple[int, int]]
    estimators: list[Any]
    info: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"  # where the estimators live; enhance computes features there too
    transform: InputTransform | None = None
    clean_guard: GuardConfig | None = None  # None: speechkern.postfilter's default guard
    _prepared: dict = field(default_factory=dict, repr=False, compare=False)  # centres ready for products

    @property
    def n_units(self) -> int:
        return self.bands[-1][1]

    def features(self, y: np.ndarray, sr: int, gain: float | None = None) -> np.ndarray:
        """Per-frame features (n_frames, base_dim) of a mono waveform at ``sr`` Hz, computed on the model's device
        (:func:`waveform_features` with the model's feature configuration)."""
        return waveform_features(y, sr, self.feature_config, device=self.device, gain=gain)

    def inputs(self, features: np.ndarray) -> np.ndarray:
        """Model inputs from raw per-frame features (n_frames, base_dim): normalised, context stacked, transformed."""
        stacked = stack_context(self.stats.normalize(features), self.feature_config.context)
        return stacked if self.transform is None else self.transform.apply(stacked)

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Real-valued mask estimates (n_frames, n_units), clipped to [0, 1], bands reassembled in order."""
        parts = [part.reshape(len(inputs), -1) for part in _predict_estimators(self.estimators, inputs, self._prepared)]
        for (lo, hi), part in zip(self.bands, parts, strict=True):
            if part.shape[1] != hi - lo:
                raise RuntimeError(f"band [{lo}, {hi}) predicted {part.shape[1]} channels")
        return np.clip(np.concatenate(parts, axis=1), 0.0, 1.0)

    def to_mask(self, estimate: np.ndarray) -> np.ndarray:
        """The mask to apply from an estimate (n_frames, n_units): binary masks thresholded at 0.5, ratio masks as
        estimated."""
        return (estimate >= 0.5).astype(np.float32) if self.target_config.kind == "ibm" else estimate

    def mask(self, features: np.ndarray) -> np.ndarray:
        """The mask to apply (n_frames, n_units) for raw per-frame features (see :meth:`to_mask`)."""
        return self.to_mask(self.predict(self.inputs(features)))

    def save(self, folder: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the model folder atomically (:func:`speechkern.models.io.save_model`)."""
        from speechkern.models.io import save_model

        save_model(self, folder, overwrite)

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str = "cpu") -> MaskModel:
        """Read and check a model folder (:func:`speechkern.models.io.load_model`)."""
        from speechkern.models.io import load_model

        return load_model(folder, device)
