"""Capture features of a named layer of any ``torch.nn.Module`` while streaming over a DataLoader.

A forward hook (or pre-hook, for a layer's *input*) copies one batch of activations to the CPU at a time, so the
full feature set is never held twice: :func:`iter_features` yields batch by batch, :func:`capture_features` fills
one preallocated array, and :func:`stream_stats` / :func:`stream_nc_metrics` keep only the float64 sufficient
statistics of :mod:`speechkern.collapse.measures`.

Last-layer features in the neural-collapse sense are the *input* of the final linear classifier: name that layer
with ``which="input"`` (for example ``layer="fc", which="input"`` on a torchvision ResNet).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from speechkern.errors import SpeechkernError

from .measures import FeatureStats, NCMetrics, NearestCentreStats

__all__ = [
    "capture_features",
    "capture_layer",
    "classifier_weights",
    "find_layer",
    "iter_features",
    "stream_nc_metrics",
    "stream_stats",
]

Which = Literal["input", "output"]
Unpack = Callable[[Any], tuple[Any, Any]]


def find_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """The sub-module named ``layer`` (a dotted name from ``model.named_modules()``), or ``layer`` itself."""
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise SpeechkernError(f"the layer {type(layer).__name__} given is not a sub-module of the model.")
        return layer
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [name for name in modules if name]
        shown = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
        raise SpeechkernError(f"the model has no layer named {layer!r}; its layers are: {shown}")
    return modules[layer]


class _StopForward(Exception):
    """Raised by the hook to skip the rest of the forward pass once the features are captured."""


@dataclass
class _Capture:
    value: torch.Tensor | None = None
    calls: int = 0
    stop: bool = False
    _handles: list[Any] = field(default_factory=list)

    def take(self) -> torch.Tensor:
        if self.value is None:
            raise SpeechkernError(
                "the named layer was not called during the forward pass; pick a layer on the path from input to output."
            )
        value, self.value, self.calls = self.value, None, 0
        return value


def _first_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise SpeechkernError(f"the layer produced {type(value).__name__}, not a tensor; capture another layer.")


@contextlib.contextmanager
def capture_layer(
    model: nn.Module, layer: str | nn.Module, *, which: Which = "output", stop: bool = False
) -> Iterator[_Capture]:
    """Hook ``layer`` while the block runs; after each forward call, ``capture.take()`` returns its tensor.

    which: ``"output"`` (the layer's output) or ``"input"`` (its first positional input). Only the first call of
    the layer in a forward pass is kept. stop: abort the forward pass right after the capture (saves the later
    layers' work; the model call then raises an internal exception that :func:`iter_features` swallows).
    The hook is removed when the block ends, even on error.
    """
    if which not in ("input", "output"):
        raise SpeechkernError(f"which must be 'input' or 'output'; got {which!r}.")
    module = find_layer(model, layer)
    capture = _Capture(stop=stop)

    def keep(tensor: torch.Tensor) -> None:
        capture.calls += 1
        if capture.calls == 1:
            capture.value = tensor.detach()
        if capture.stop:
            raise _StopForward

    if which == "input":
        handle = module.register_forward_pre_hook(lambda _m, args: keep(_first_tensor(args)))
    else:
        handle = module.register_forward_hook(lambda _m, _args, out: keep(_first_tensor(out)))
    try:
        yield capture
    finally:
        handle.remove()


def _default_unpack(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) >= 1:
        return batch[0], batch[1] if len(batch) > 1 else None
    raise SpeechkernError(
        f"cannot tell inputs from labels in a batch of type {type(batch).__name__}; pass unpack=lambda b: (x, y)."
    )


def _to_numpy_labels(y: Any) -> NDArray[Any] | None:
    if y is None:
        return None
    if isinstance(y, torch.Tensor):
        return y.detach().cpu().numpy()
    return np.asarray(y)


def iter_features(
    model: nn.Module,
    loader: Iterable[Any],
    layer: str | nn.Module,
    *,
    which: Which = "output",
    device: str | torch.device | None = None,
    unpack: Unpack | None = None,
    stop_early: bool = True,
) -> Iterator[tuple[NDArray[np.float32], NDArray[Any] | None]]:
    """Yield ``(features, labels)`` per batch: features ``(batch, n_features)`` float32 (flattened), labels or None.

    The model runs in eval mode under ``torch.no_grad`` (its train/eval mode is restored afterwards). Batches are
    ``x``, ``(x, y, ...)`` or whatever ``unpack(batch) -> (x, y)`` returns; ``x`` is moved to ``device`` (by
    default the device of the model's first parameter). stop_early: skip the layers after the captured one.
    """
    unpack = unpack or _default_unpack
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with capture_layer(model, layer, which=which, stop=stop_early) as capture, torch.no_grad():
            for batch in loader:
                x, y = unpack(batch)
                if isinstance(x, torch.Tensor):
                    x = x.to(device)
                with contextlib.suppress(_StopForward):
                    model(x)
                h = capture.take()
                feats = h.reshape(h.shape[0], -1).to("cpu", torch.float32).numpy()
                labels = _to_numpy_labels(y)
                if labels is not None and labels.shape[0] != feats.shape[0]:
                    raise SpeechkernError(
                        f"a batch has {labels.shape[0]} labels but {feats.shape[0]} feature rows; "
                        "the captured layer must keep the batch dimension first."
                    )
                yield feats, labels
    finally:
        model.train(was_training)


def _dataset_length(loader: Iterable[Any]) -> int | None:
    dataset = getattr(loader, "dataset", None)
    drop_last = getattr(loader, "drop_last", False)
    try:
        n = len(dataset) if dataset is not None else None  # type: ignore[arg-type]
    except TypeError:
        return None
    return None if n is None or drop_last else n


def capture_features(
    model: nn.Module,
    loader: Iterable[Any],
    layer: str | nn.Module,
    *,
    which: Which = "output",
    device: str | torch.device | None = None,
    unpack: Unpack | None = None,
) -> tuple[NDArray[np.float32], NDArray[Any] | None]:
    """All features ``(n, n_features)`` float32 and labels ``(n,)`` (None when the batches carry none).

    When the loader has a sized dataset (a DataLoader without ``drop_last``) the output array is allocated once
    and filled batch by batch, so the features are held once; otherwise batches are joined at the end.
    """
    n = _dataset_length(loader)
    feats: NDArray[np.float32] | None = None
    chunks: list[NDArray[np.float32]] = []
    labels: list[NDArray[Any]] = []
    has_labels = True
    filled = 0
    for h, y in iter_features(model, loader, layer, which=which, device=device, unpack=unpack):
        if n is not None:
            if feats is None:
                feats = np.empty((n, h.shape[1]), dtype=np.float32)
            if filled + h.shape[0] > n:
                raise SpeechkernError(f"the loader yielded more than its dataset's {n} samples.")
            feats[filled : filled + h.shape[0]] = h
        else:
            chunks.append(h)
        filled += h.shape[0]
        if y is None:
            has_labels = False
        else:
            labels.append(y)
    if n is not None:
        if feats is None or filled != n:
            raise SpeechkernError(f"the loader yielded {filled} samples, not its dataset's {n}.")
    else:
        if not chunks:
            raise SpeechkernError("the loader yielded no batches; check the dataset.")
        feats = np.concatenate(chunks)
    return feats, (np.concatenate(labels) if has_labels and labels else None)


def stream_stats(
    model: nn.Module,
    loader: Iterable[Any],
    layer: str | nn.Module,
    *,
    which: Which = "output",
    classes: Sequence[Any] | None = None,
    covariance: bool = True,
    device: str | torch.device | None = None,
    unpack: Unpack | None = None,
) -> FeatureStats:
    """Float64 per-class statistics of a layer's features over the whole loader (one pass, O(C·d + d²) memory)."""
    stats = FeatureStats(classes, covariance=covariance)
    for h, y in iter_features(model, loader, layer, which=which, device=device, unpack=unpack):
        if y is None:
            raise SpeechkernError("the loader's batches carry no labels; class statistics need (x, y) batches.")
        stats.update(h, y)
    return stats


def classifier_weights(layer: nn.Module) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """``(W, b)`` of a linear classifier layer as float64 arrays (``b`` is None without a bias)."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise SpeechkernError(f"{type(layer).__name__} has no 2-D weight; name an nn.Linear classifier.")
    bias = getattr(layer, "bias", None)
    W = weight.detach().to("cpu", torch.float64).numpy()
    b = bias.detach().to("cpu", torch.float64).numpy() if isinstance(bias, torch.Tensor) else None
    return W, b


def stream_nc_metrics(
    model: nn.Module,
    loader: Iterable[Any],
    classifier: str | nn.Module,
    *,
    layer: str | nn.Module | None = None,
    which: Which = "input",
    classes: Sequence[Any] | None = None,
    device: str | torch.device | None = None,
    unpack: Unpack | None = None,
) -> tuple[NCMetrics, FeatureStats]:
    """NC1–NC4 of a model's last-layer features, streamed; also returns the statistics for further measures.

    classifier: the final linear layer (its name or module); its weight rows follow the class order (labels
    ``0 .. C-1``, or ``classes``). Features default to that layer's input. Two passes over the loader: one for the
    class means and covariance, one for NC4's nearest-class-mean agreement.
    """
    head = find_layer(model, classifier)
    W, b = classifier_weights(head)
    if classes is None:
        classes = list(range(W.shape[0]))
    feature_layer = head if layer is None else layer
    stats = stream_stats(model, loader, feature_layer, which=which, classes=classes, device=device, unpack=unpack)
    agree = NearestCentreStats(stats.means, W, b)
    for h, _ in iter_features(model, loader, feature_layer, which=which, device=device, unpack=unpack):
        agree.update(h)
    return stats.nc_metrics(W, b, agreement=agree.agreement), stats
