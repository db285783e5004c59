"""Square loss, rescaled square loss and squentropy as drop-in PyTorch losses, with calibration measures.

Classifiers trained with the square loss or with squentropy match or beat cross-entropy in accuracy and are often
better calibrated (SPEC.md §9). The losses here follow :class:`torch.nn.CrossEntropyLoss`'s contract, so they
replace it in a training loop without other changes::

    import torch
    from speechkern.losses import SquentropyLoss, expected_calibration_error, reliability_diagram

    criterion = SquentropyLoss()                       # or SquareLoss(), RescaledSquareLoss(t=1, M=10)
    logits = model(x)                                  # (N, C) or (N, C, d1, ...), no softmax
    loss = criterion(logits, y)                        # y: class indices (N, ...) or probabilities like logits
    loss.backward()

    probs = torch.softmax(model(x_test), dim=1)
    ece = expected_calibration_error(probs, y_test, n_bins=15)
    fig = reliability_diagram(probs, y_test)           # matplotlib Figure (Agg); fig.savefig("rel.png")

Functional forms: :func:`square_loss`, :func:`rescaled_square_loss`, :func:`squentropy_loss`.

The losses, for logits ``f ∈ R^C`` of a sample of class ``c``:

- ``SquareLoss()``: ``(1/C)·((f_c − 1)² + Σ_{j≠c} f_j²)``, on raw outputs (no softmax);
- ``RescaledSquareLoss(t, M)``: ``(1/C)·(t·(f_c − M)² + Σ_{j≠c} f_j²)``; ``t = M = 1`` is the square loss;
- ``SquentropyLoss(alpha)``: ``−log softmax(f)_c + (α/(C−1))·Σ_{j≠c} f_j²``; α = 0 is cross-entropy.

Options, the same for every loss and defined as CrossEntropyLoss defines them. A target is a distribution ``p``
over classes — one-hot for a class index, or given directly as probabilities (a floating tensor of the logits'
shape) — and a sample's loss is the expectation ``Σ_j w_j p_j ℓ_j(f)`` of the class-``j`` loss ``ℓ_j``. Hence:

- ``weight`` (C,): a sample of class c counts with weight ``w_c``; ``reduction='mean'`` divides the weighted sum by
  the sum of the weights of the (non-ignored) samples, as CrossEntropyLoss does. With probability targets class
  ``j`` counts with ``w_j p_j`` and 'mean' divides by the number of samples, again as in PyTorch.
- ``ignore_index``: samples with this class index contribute 0 and are left out of the 'mean' denominator.
  Index targets only: with probability targets a value ≥ 0 raises RuntimeError, as CrossEntropyLoss does (a
  negative value, such as the default -100, is inert).
- ``label_smoothing`` ε: the target becomes ``(1 − ε)·p + ε/C``.
- probability targets: for the rescaled square loss this gives ``(1/C)·Σ_k [t·p_k (f_k − M)² + (1 − p_k)·f_k²]``
  (without weights): class k is pulled to M with weight ``t·p_k`` and to 0 with weight ``1 − p_k``; for the square
  loss it equals ``(1/C)·Σ_k (f_k − p_k)²`` up to a constant of the target. All reduce to the index formulas for
  one-hot ``p``.
- ``reduction``: ``'none'`` returns the per-sample losses ``(N, d1, …)``; ``'mean'``, ``'sum'`` as above.

The wrong-class sum ``Σ_{j≠c} f_j²`` is computed with a mask, never as ``Σ_j f_j² − f_c²``, so logits in the
thousands lose no precision in float32. The losses run on any device and dtype: float16 and bfloat16 logits are
computed in float32 and the loss returned in the input's dtype; under autocast the loss is float32, as
cross-entropy's is. They work under ``torch.compile(fullgraph=True)``.

Calibration (:mod:`speechkern.losses.calibration`): top-label ECE with K equal-width bins (bin k holds
``k/K ≤ conf < (k+1)/K``, the last bin also 1.0) and reliability diagrams. Square-loss outputs become probabilities
through the softmax (as reported in the literature and by ``speechkern losses bench``), or through
:func:`square_loss_probabilities`, which inverts the loss's minimiser ``p_k ∝ f_k / (t·M − (t−1)·f_k)``.

``speechkern losses bench`` (:func:`speechkern.losses.bench.run_benchmark`) trains one small network with each
loss on collections of tabular data sets, with their own splits or folds, and compares the losses pairwise
(:mod:`speechkern.losses.comparison`); ``speechkern losses asymptotics`` (:mod:`speechkern.losses.asymptotics`)
predicts the rescaled square loss's accuracy in a high-dimensional limit. See docs/losses.md.
"""

from typing import TYPE_CHECKING

# The exports are imported on first use (PEP 562), so that the light submodules (names) load without torch.
_EXPORTS = {
    "ReliabilityBins": "calibration", "expected_calibration_error": "calibration", "reliability_bins": "calibration",
    "reliability_diagram": "calibration", "square_loss_probabilities": "calibration",
    "RescaledSquareLoss": "square", "SquareLoss": "square", "rescaled_square_loss": "square", "square_loss": "square",
    "SquentropyLoss": "squentropy", "squentropy_loss": "squentropy",
}  # fmt: skip

if TYPE_CHECKING:
    from speechkern.losses.calibration import (
        ReliabilityBins,
        expected_calibration_error,
        reliability_bins,
        reliability_diagram,
        square_loss_probabilities,
    )
    from speechkern.losses.square import RescaledSquareLoss, SquareLoss, rescaled_square_loss, square_loss
    from speechkern.losses.squentropy import SquentropyLoss, squentropy_loss


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'speechkern.losses' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"speechkern.losses.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ReliabilityBins",
    "RescaledSquareLoss",
    "SquareLoss",
    "SquentropyLoss",
    "expected_calibration_error",
    "reliability_bins",
    "reliability_diagram",
    "rescaled_square_loss",
    "square_loss",
    "square_loss_probabilities",
    "squentropy_loss",
]
