"""Target handling shared by the losses: class-index or probability targets turned into per-class coefficients.

Every loss here is defined through ``ℓ_j(f)``, the loss of the logits ``f`` when the class is ``j``. A target is a
distribution ``p`` over classes (one-hot for a class index, smoothed by ``label_smoothing``), weighted per class by
``weight``; the loss of a sample is the expectation ``Σ_j w_j p_j ℓ_j(f)``, exactly how
:func:`torch.nn.functional.cross_entropy` defines its probability targets, weights and label smoothing. Because
the losses are sums over classes of a "target-class" term and a "wrong-class" term, that expectation needs two
coefficients per class and sample:

- ``a_k = w_k p_k``: the weight of class ``k`` as the target class;
- ``b_k = Σ_{j≠k} w_j p_j``: the weight of class ``k`` as a wrong class.

For class-index targets ``b`` is built from the one-hot *mask* (``w_c`` on every class but ``c``), so a logit never
enters a difference: the wrong-class sum is never formed as ``Σ_j f_j² − f_c²``, which cancels in float32. Only
for probability targets is ``b`` formed as ``Σ_j a_j − a_k``, a difference of target values, not of logits.
"""

from __future__ import annotations

import math

import torch

REDUCTIONS = ("none", "mean", "sum")


class Coefficients:
    """The target of a batch as class coefficients, in the layout of the logits ``(N, C, d…)``.

    a, b: target-class and wrong-class coefficients (see the module docstring), shape of the logits.
    denominator: what ``reduction='mean'`` divides the summed loss by — the summed target-class weight of the
    non-ignored samples for index targets, the number of samples ``N·d…`` for probability targets (both as in
    CrossEntropyLoss).
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, denominator: torch.Tensor) -> None:
        self.a = a
        self.b = b
        self.denominator = denominator


def check_options(reduction: str, label_smoothing: float) -> None:
    """Validate the options every loss shares (before any tensor work)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not valid; use one of {', '.join(map(repr, REDUCTIONS))}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing={label_smoothing} is out of range; use a value in [0, 1]")


def check_scale(name: str, value: float, *, positive: bool = False, non_negative: bool = False) -> float:
    """``value`` as a finite float (> 0 with ``positive``, ≥ 0 with ``non_negative``), else ValueError naming it.

    A non-finite t, M or α gives a NaN or infinite loss on every batch, so it is refused up front.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a number") from None
    if not math.isfinite(number) or (positive and number <= 0) or (non_negative and number < 0):
        need = "a positive" if positive else "a non-negative" if non_negative else "a"
        raise ValueError(f"{name}={value!r} is out of range; use {need} finite number")
    return number


def working_precision(input: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
    """The logits in the precision the loss is computed in, and the dtype the loss is returned in.

    float16 and bfloat16 logits are computed in float32: a logit of a few hundred squares to tens of thousands,
    past float16's partial sums (and its 65504 maximum before the division by C), while the loss itself fits.
    The result has the input's dtype, except under autocast on the input's device, where it is float32 (float64
    input stays float64) — what :func:`torch.nn.functional.cross_entropy`, an autocast-to-float32 op, returns.
    """
    out_dtype = input.dtype
    if input.dtype != torch.float64 and torch.is_autocast_enabled(input.device.type):
        out_dtype = torch.float32
    if input.dtype in (torch.float16, torch.bfloat16):
        input = input.float()
    return input, out_dtype


def as_batch(input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Give an unbatched input ``(C,)`` (target ``()`` or ``(C,)``) a batch axis; the flag says whether the input
    was batched already (False: a batch axis was added, and :func:`reduce` removes it again)."""
    if not input.is_floating_point():
        raise ValueError(f"input must hold floating-point logits, got dtype {input.dtype}")
    if input.dim() == 0:
        raise ValueError("input must have a class axis: shape (C,), (N, C) or (N, C, d1, ...)")
    if input.dim() == 1:
        return input.unsqueeze(0), target.unsqueeze(0), False
    return input, target, True


def coefficients(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
) -> Coefficients:
    """Class coefficients ``a``, ``b`` and the 'mean' denominator for logits ``(N, C, d…)``.

    target: class indices ``(N, d…)`` of an integer dtype (``ignore_index`` marks samples left out), or class
    probabilities of the logits' shape and a floating dtype.

    Raises RuntimeError for probability targets with ``ignore_index ≥ 0`` (as cross_entropy does), ValueError for
    a weight, target shape or target dtype that does not fit the logits.
    weight: per-class weights ``(C,)`` or None for ones.
    """
    n_classes = input.shape[1]
    shape = [1] * input.dim()
    shape[1] = n_classes
    if weight is not None:
        if weight.dim() != 1 or weight.shape[0] != n_classes:
            raise ValueError(
                f"weight must have shape ({n_classes},) for {n_classes} classes, got {tuple(weight.shape)}"
            )
        w = weight.to(dtype=input.dtype).reshape(shape)
    else:
        w = None
    eps = float(label_smoothing)

    if target.is_floating_point():
        if ignore_index >= 0:
            # the exception type and condition of torch.nn.functional.cross_entropy (a negative index is inert)
            raise RuntimeError(
                f"ignore_index={ignore_index} is not supported for probability (floating-point) targets, as in "
                "torch.nn.CrossEntropyLoss; give class indices, or leave ignore_index at a negative value such as "
                "the default -100"
            )
        if target.shape != input.shape:
            raise ValueError(
                f"probability targets must have the input's shape {tuple(input.shape)}, got {tuple(target.shape)}"
            )
        p = target.to(input.dtype)
        if eps > 0:
            p = p * (1.0 - eps) + eps / n_classes
        a = p if w is None else w * p
        b = a.sum(dim=1, keepdim=True) - a  # a difference of target values only, never of logits
        denominator = torch.tensor(input.numel() // max(n_classes, 1), dtype=input.dtype, device=input.device)
        return Coefficients(a, b, denominator)

    if target.dtype == torch.bool or target.is_complex():
        raise ValueError(f"target must hold class indices (an integer dtype) or probabilities, got {target.dtype}")
    if target.shape != input.shape[:1] + input.shape[2:]:
        raise ValueError(
            f"class-index targets must have shape {tuple(input.shape[:1] + input.shape[2:])} for input of shape "
            f"{tuple(input.shape)}, got {tuple(target.shape)}"
        )
    target = target.long()
    valid = (target != ignore_index).unsqueeze(1)  # (N, 1, d…)
    safe = torch.where(valid.squeeze(1), target, torch.zeros_like(target))
    # scatter_ refuses an index outside [0, C) (on CUDA with a device-side assert), as cross_entropy does.
    onehot = torch.zeros_like(input).scatter_(1, safe.unsqueeze(1), 1.0) * valid
    wrong = (1.0 - onehot) * valid  # the mask of wrong classes; zero for ignored samples
    if w is None:
        w_target = valid.to(input.dtype)  # (N, 1, d…)
        a, b = onehot, wrong
    else:
        w_target = (onehot * w).sum(dim=1, keepdim=True)
        a, b = w_target * onehot, w_target * wrong
    if eps > 0:
        ones = torch.ones(shape, dtype=input.dtype, device=input.device) if w is None else w
        # the uniform part of the smoothed target: class k is the target with weight w_k, a wrong class with Σ_{j≠k} w_j
        others = ones.sum(dim=1, keepdim=True) - ones
        a = (1.0 - eps) * a + (eps / n_classes) * ones * valid
        b = (1.0 - eps) * b + (eps / n_classes) * others * valid
    return Coefficients(a, b, w_target.sum())


def reduce(
    per_sample: torch.Tensor, coeffs: Coefficients, reduction: str, batched: bool, out_dtype: torch.dtype
) -> torch.Tensor:
    """Apply ``reduction`` to per-sample losses ``(N, d…)`` as CrossEntropyLoss does; the result in ``out_dtype``."""
    if reduction == "none":
        result = per_sample if batched else per_sample.squeeze(0)
    elif reduction == "sum":
        result = per_sample.sum()
    else:
        result = per_sample.sum() / coeffs.denominator
    return result.to(out_dtype)
