"""EigenPro kernel regression (SPEC §6): EigenPro 2 (every point a centre) and EigenPro 3 (p centres, all points).

Design notes: docs/engine.md.
"""

from speechkern.eigenpro.estimator import EigenProRegressor, precomputed_bytes, spare_bytes
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
    "Preconditioner",
    "critical_batch_size",
    "default_subsample_size",
    "precomputed_bytes",
    "spare_bytes",
    "step_size",
    "train_check_size",
]
