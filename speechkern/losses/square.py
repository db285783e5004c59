"""Square loss and rescaled square loss on raw network outputs (no softmax), as drop-in PyTorch losses.

For outputs ``f ∈ R^C`` of a sample of class ``c`` (SPEC.md §9):

- square loss: ``(1/C)·((f_c − 1)² + Σ_{j≠c} f_j²)``;
- rescaled square loss: ``(1/C)·(t·(f_c − M)² + Σ_{j≠c} f_j²)``; ``t = M = 1`` is the square loss.

The options follow :class:`torch.nn.CrossEntropyLoss` (see :mod:`speechkern.losses._targets` for the shared
definition): with a target distribution ``p`` (one-hot for a class index, smoothed by ``label_smoothing``) and
class weights ``w``, a sample's loss is ``Σ_j w_j p_j ℓ_j(f)``, i.e.

    (1/C)·Σ_k [ t·w_k p_k·(f_k − M)² + (Σ_{j≠k} w_j p_j)·f_k² ].

Without weights, that is ``(1/C)·Σ_k [t·p_k·(f_k − M)² + (1 − p_k)·f_k²]`` for a distribution ``p``: class ``k`` is
pulled towards ``M`` with weight ``t·p_k`` and towards 0 with weight ``1 − p_k``. For the square loss it differs
from ``(1/C)·Σ_k (f_k − p_k)²`` only by ``(1/C)·Σ_k p_k(1 − p_k)``, a constant of the target, so it has the same
gradient and minimiser ``f = p``.
"""

from __future__ import annotations

import torch
from torch import nn

from speechkern.losses import _targets


def rescaled_square_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    t: float = 1.0,
    M: float = 1.0,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Rescaled square loss ``(1/C)·(t·(f_c − M)² + Σ_{j≠c} f_j²)`` of raw outputs.

    input: outputs ``(N, C)``, ``(N, C, d1, …)`` or unbatched ``(C,)``, any floating dtype and device.
    target: class indices ``(N, d1, …)`` (integer dtype) or class probabilities of the input's shape (floating).
    t: weight of the target-class term (finite, > 0); M: the (finite) value the target-class output is pulled to.
    weight: per-class weights ``(C,)``; a sample's loss is scaled by the weight of its class, and ``'mean'``
        divides by the summed weights of the non-ignored samples (for probability targets: by ``N·d1·…``).
    ignore_index: class index whose samples contribute nothing. Index targets only: with probability targets a
        value ≥ 0 raises RuntimeError, as in PyTorch (a negative value such as the default -100 is inert).
    reduction: ``'none'`` (per-sample losses ``(N, d1, …)``), ``'mean'`` or ``'sum'``.
    label_smoothing: ε in [0, 1]; the target becomes ``(1 − ε)·p + ε/C``.

    Returns the loss in the input's dtype (float32 under autocast, as cross-entropy); float16 and bfloat16
    logits are computed in float32. Works under ``torch.compile(fullgraph=True)``.
    Raises ValueError for an invalid option (a non-finite t or M among them) or a target that does not fit the
    input, RuntimeError for ``ignore_index ≥ 0`` with probability targets.
    """
    _targets.check_options(reduction, label_smoothing)
    t = _targets.check_scale("t", t, positive=True)
    M = _targets.check_scale("M", M)
    input, out_dtype = _targets.working_precision(input)
    input, target, batched = _targets.as_batch(input, target)
    coeffs = _targets.coefficients(input, target, weight, ignore_index, label_smoothing)
    n_classes = input.shape[1]
    target_term = coeffs.a * (input - M).square()
    wrong_term = coeffs.b * input.square()  # masked wrong-class sum, never Σ f² − f_c²
    per_sample = (t * target_term + wrong_term).sum(dim=1) / n_classes
    return _targets.reduce(per_sample, coeffs, reduction, batched, out_dtype)


def square_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Square loss ``(1/C)·((f_c − 1)² + Σ_{j≠c} f_j²)`` of raw outputs; options as :func:`rescaled_square_loss`."""
    return rescaled_square_loss(
        input,
        target,
        1.0,
        1.0,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


class _WeightedLoss(nn.Module):
    """The options every loss module shares; ``weight`` is a buffer, so ``.to(device)`` moves it."""

    weight: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        _targets.check_options(reduction, label_smoothing)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing

    def _options(self) -> dict:
        """The keyword options of the functional forms, as this module holds them."""
        return {"weight": self.weight, "ignore_index": self.ignore_index, "reduction": self.reduction,
                "label_smoothing": self.label_smoothing}  # fmt: skip

    def extra_repr(self) -> str:
        parts = [f"reduction={self.reduction!r}"]
        if self.ignore_index != -100:
            parts.append(f"ignore_index={self.ignore_index}")
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing}")
        if self.weight is not None:
            parts.append("weight=tensor")
        return ", ".join(parts)


class RescaledSquareLoss(_WeightedLoss):
    """Rescaled square loss ``(1/C)·(t·(f_c − M)² + Σ_{j≠c} f_j²)`` on raw outputs; see :func:`rescaled_square_loss`.

    Published settings: ``t=1, M=15`` for 42–52 classes, ``t=15, M=30`` for 1000 classes, ``t=1, M=10`` for
    CIFAR-10/100; ``t = M = 1`` is :class:`SquareLoss`.
    """

    def __init__(
        self,
        t: float = 1.0,
        M: float = 1.0,
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, ignore_index, reduction, label_smoothing)
        self.t = _targets.check_scale("t", t, positive=True)
        self.M = _targets.check_scale("M", M)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return rescaled_square_loss(input, target, self.t, self.M, **self._options())

    def extra_repr(self) -> str:
        return f"t={self.t:g}, M={self.M:g}, {super().extra_repr()}"


class SquareLoss(RescaledSquareLoss):
    """Square loss ``(1/C)·((f_c − 1)² + Σ_{j≠c} f_j²)`` on raw outputs (no softmax); see :func:`square_loss`."""

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(1.0, 1.0, weight, ignore_index, reduction, label_smoothing)

    def extra_repr(self) -> str:
        return _WeightedLoss.extra_repr(self)
