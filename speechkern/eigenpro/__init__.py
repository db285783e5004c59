"""Kernel regression solvers (SPEC §6): EigenPro 2 (every point a centre) and EigenPro 3 (p centres, all points),
the exact ridge solve, and local machines (leaves of a median-split tree, each solved exactly).

Design notes: docs/engine.md.
"""

from speechkern.eigenpro.estimator import EigenProRegressor, precomputed_bytes, spare_bytes
from speechkern.eigenpro.local import LocalKernelRegressor
from speechkern.eigenpro.loop import DivergenceError, train_check_size
from speechkern.eigenpro.preconditioner import (
    DAMPING,
    MAX_COMPONENTS,
    Preconditioner,
    critical_batch_size,
    default_subsample_size,
    step_size,
)
from speechkern.eigenpro.state import FORMAT, FORMAT_VERSION

__all__ = [
    "DAMPING",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_COMPONENTS",
    "DivergenceError",
    "EigenProRegressor",
    "LocalKernelRegressor",
    "Preconditioner",
    "critical_batch_size",
    "default_subsample_size",
    "estimator_from_state",
    "load_estimator",
    "precomputed_bytes",
    "spare_bytes",
    "step_size",
    "train_check_size",
]


def estimator_from_state(tensors, config, prefix: str = "", device: str | None = None):
    """The fitted kernel estimator (EigenPro or local) that ``to_state`` wrote, by the format its config names."""
    from speechkern.eigenpro import local

    cls = LocalKernelRegressor if config.get("format") == local.FORMAT else EigenProRegressor
    return cls.from_state(tensors, config, prefix, device)


def load_estimator(path, device: str | None = None):
    """A kernel estimator (EigenPro or local) written by its ``save``, whichever kind the file holds."""
    import json

    from speechkern.eigenpro import state
    from speechkern.errors import SpeechkernError

    tensors, metadata = state.read_safetensors(path)
    if state.METADATA_KEY not in metadata:
        raise SpeechkernError(f"model file {path} has no speechkern configuration; was it written by save()?")
    return estimator_from_state(tensors, json.loads(metadata[state.METADATA_KEY]), device=device)
