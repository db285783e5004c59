"""Squentropy: cross-entropy plus the mean square of the wrong-class logits, as a drop-in PyTorch loss.

For logits ``f ∈ R^C`` of a sample of class ``c`` (SPEC.md §9), rescaled squentropy is

    −log softmax(f)_c + (α/(C−1))·Σ_{j≠c} f_j²;

``α = 1`` is squentropy and ``α = 0`` is cross-entropy. The cross-entropy term is
:func:`torch.nn.functional.cross_entropy` itself, so ``weight``, ``ignore_index``, ``label_smoothing`` and
probability targets mean exactly what they mean there; the square term follows the same definition (a sample's
loss is ``Σ_j w_j p_j ℓ_j(f)`` for the smoothed target distribution ``p``, see :mod:`speechkern.losses._targets`):

    CE(f, p; w) + (α/(C−1))·Σ_k (Σ_{j≠k} w_j p_j)·f_k².
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from speechkern.losses import _targets
from speechkern.losses.square import _WeightedLoss


def squentropy_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Rescaled squentropy ``−log softmax(f)_c + (α/(C−1))·Σ_{j≠c} f_j²`` (needs C ≥ 2).

    input: logits ``(N, C)``, ``(N, C, d1, …)`` or unbatched ``(C,)``, any floating dtype and device.
    target: class indices ``(N, d1, …)`` (integer dtype) or class probabilities of the input's shape (floating).
    alpha: finite weight α ≥ 0 of the wrong-class square term; 0 gives cross-entropy.
    weight, ignore_index, reduction, label_smoothing: as :func:`torch.nn.functional.cross_entropy` (``'mean'``
        divides by the summed class weights of the non-ignored samples, or by ``N·d1·…`` for probability targets;
        ``ignore_index ≥ 0`` with probability targets raises RuntimeError, as there).

    Returns the loss in the input's dtype (float32 under autocast, as cross-entropy); float16 and bfloat16
    logits are computed in float32. Works under ``torch.compile(fullgraph=True)``.
    """
    _targets.check_options(reduction, label_smoothing)
    alpha = _targets.check_scale("alpha", alpha, non_negative=True)
    input, out_dtype = _targets.working_precision(input)
    input, target, batched = _targets.as_batch(input, target)
    n_classes = input.shape[1]
    if n_classes < 2:
        raise ValueError(f"squentropy needs at least 2 classes, got input of shape {tuple(input.shape)}")
    coeffs = _targets.coefficients(input, target, weight, ignore_index, label_smoothing)
    if weight is not None:
        weight = weight.to(dtype=input.dtype)
    target = target.to(input.dtype) if target.is_floating_point() else target.long()
    cross_entropy = F.cross_entropy(
        input, target, weight=weight, ignore_index=ignore_index, reduction="none", label_smoothing=label_smoothing
    )
    per_sample = cross_entropy
    if alpha:
        # the masked wrong-class sum (coefficients b), never Σ f² − f_c², which cancels for large f_c in float32
        square = (coeffs.b * input.square()).sum(dim=1)
        per_sample = cross_entropy + (alpha / (n_classes - 1)) * square
    return _targets.reduce(per_sample, coeffs, reduction, batched, out_dtype)


class SquentropyLoss(_WeightedLoss):
    """Rescaled squentropy ``−log softmax(f)_c + (α/(C−1))·Σ_{j≠c} f_j²``; see :func:`squentropy_loss`.

    ``SquentropyLoss(alpha=0)`` computes the same as :class:`torch.nn.CrossEntropyLoss` with the same options.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        weight: torch.Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, ignore_index, reduction, label_smoothing)
        self.alpha = _targets.check_scale("alpha", alpha, non_negative=True)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return squentropy_loss(input, target, self.alpha, **self._options())

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, {super().extra_repr()}"
