"""Neural-collapse measures on last-layer features, feature capture from torch models, and experiments (SPEC §10).

Measures (arrays ``H`` samples × features with labels ``y``): :func:`train_variance`, :func:`strong_test_variance`,
:func:`weak_test_variance`, :func:`nc_metrics`; their streaming counterparts :class:`FeatureStats` and
:class:`NearestCentreStats`. Capture: :func:`capture_features`, :func:`iter_features`, :func:`stream_stats`,
:func:`stream_nc_metrics`. The experiments behind ``speechkern collapse run`` live in
:mod:`speechkern.collapse.experiments` (imported on demand: it needs scikit-learn's datasets and matplotlib).
"""

from .capture import (
    capture_features,
    capture_layer,
    classifier_weights,
    find_layer,
    iter_features,
    stream_nc_metrics,
    stream_stats,
)
from .measures import (
    ClassStats,
    FeatureStats,
    NCMetrics,
    NearestCentreStats,
    class_stats,
    kmeans_centers,
    nc_metrics,
    stack_stats,
    strong_test_variance,
    train_variance,
    weak_test_variance,
)

__all__ = [
    "ClassStats",
    "FeatureStats",
    "NCMetrics",
    "NearestCentreStats",
    "capture_features",
    "capture_layer",
    "class_stats",
    "classifier_weights",
    "find_layer",
    "iter_features",
    "kmeans_centers",
    "nc_metrics",
    "stack_stats",
    "stream_nc_metrics",
    "stream_stats",
    "strong_test_variance",
    "train_variance",
    "weak_test_variance",
]
