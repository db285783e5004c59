"""What the scikit-learn estimators of this package share: multi-output tags and the conversion of tensor inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class MultiOutputTags:
    """Declares that the estimator takes 1-D and 2-D targets (scikit-learn's estimator checks read the tags)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


def to_numpy(a: Any) -> Any:
    """Torch tensors (any device) become NumPy arrays; everything else passes through for sklearn to check."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return a


def writable32(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous, writable float32 array (copied only when needed): what torch.from_numpy wants."""
    return np.require(a, dtype=np.float32, requirements=["C", "W"])
