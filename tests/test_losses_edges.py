"""Edges of the losses' CrossEntropyLoss contract: low precision, autocast, ignore_index with probabilities, compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from speechkern.losses import RescaledSquareLoss, SquareLoss, SquentropyLoss

MODULES = {
    "square": lambda **kw: SquareLoss(**kw),
    "rescaled": lambda **kw: RescaledSquareLoss(2.0, 10.0, **kw),
    "squentropy": lambda **kw: SquentropyLoss(**kw),
    "cross_entropy": lambda **kw: torch.nn.CrossEntropyLoss(**kw),
}


def logits_of_a_few_hundred(dtype: torch.dtype, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of magnitude 100–180 with random signs: squares near 10⁴, losses near 2·10⁴ per sample."""
    g = torch.Generator().manual_seed(3)
    logits = (torch.rand(n, 6, generator=g) * 80 + 100) * torch.where(torch.rand(n, 6, generator=g) < 0.5, -1, 1)
    return logits.to(dtype), torch.randint(0, 6, (n,), generator=g)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", list(MODULES))
def test_half_precision_logits_give_the_float64_value_rounded(name: str, reduction: str, dtype: torch.dtype) -> None:
    """Logits of 100–300: the float64 loss (computed from the same rounded logits) fits the dtype, so must we."""
    logits, labels = logits_of_a_few_hundred(dtype, n=2 if reduction == "sum" else 8)  # the sum fits float16 too
    module = MODULES[name](reduction=reduction)
    low = logits.clone().requires_grad_(True)
    got = module(low, labels)
    expected = module(logits.double(), labels)
    assert got.dtype == dtype
    assert torch.isfinite(expected).all() and expected.abs().max() < torch.finfo(dtype).max
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=torch.finfo(dtype).eps, atol=0.0)
    got.sum().backward()  # the gradient reaches the half-precision leaf, finite, in its dtype
    assert low.grad.dtype == dtype and torch.isfinite(low.grad).all()


def test_half_precision_loss_beyond_the_range_is_inf_not_nan() -> None:
    """A loss that truly exceeds float16's 65504 rounds to inf, as a float64 value cast to float16 does."""
    logits = torch.tensor([[600.0, -600.0, 500.0]], dtype=torch.float16)
    got = SquareLoss()(logits, torch.tensor([1]))
    assert got.dtype == torch.float16 and torch.isinf(got)


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("input_dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(MODULES)[:3])
def test_autocast_returns_what_cross_entropy_returns(
    name: str, input_dtype: torch.dtype, autocast_dtype: torch.dtype
) -> None:
    logits, labels = logits_of_a_few_hundred(torch.float32)
    logits = logits / 50
    probs = torch.softmax(torch.randn(8, 6, generator=torch.Generator().manual_seed(1)), dim=1)
    module = MODULES[name]()
    x = logits.to(input_dtype)
    with torch.autocast("cpu", dtype=autocast_dtype):
        for target in (labels, probs.to(input_dtype)):
            got = module(x, target)
            assert got.dtype == F.cross_entropy(x, target).dtype
            torch.testing.assert_close(
                got.double(),
                module(x.double(), target.double() if target.is_floating_point() else target),
                rtol=1e-5,
                atol=0.0,
            )
    # outside autocast the input's dtype comes back again
    assert module(x, labels).dtype == input_dtype


@pytest.mark.parametrize("ignore_index", [0, 2, 7])
@pytest.mark.parametrize("name", list(MODULES))
def test_ignore_index_with_probability_targets_raises_as_cross_entropy(name: str, ignore_index: int) -> None:
    logits = torch.randn(4, 5)
    probs = torch.softmax(torch.randn(4, 5), dim=1)
    with pytest.raises(RuntimeError, match="ignore_index"):
        MODULES[name](ignore_index=ignore_index)(logits, probs)
    # a negative ignore_index is inert with probability targets (torch accepts it), and so the default is
    for inert in (-1, -100):
        torch.testing.assert_close(MODULES[name](ignore_index=inert)(logits, probs), MODULES[name]()(logits, probs))


def _assert_same_loss_and_gradient(compiled, module, logits: torch.Tensor, target: torch.Tensor) -> None:
    x = logits.clone().requires_grad_(True)
    got = compiled(x, target)
    got.backward()
    x_ref = logits.clone().requires_grad_(True)
    expected = module(x_ref, target)
    expected.backward()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(x.grad, x_ref.grad)


@pytest.mark.parametrize("name", list(MODULES))
def test_modules_compile_with_fullgraph(name: str) -> None:
    """Dynamo traces each loss as one graph (graph breaks raise with fullgraph=True); the values are unchanged.

    The ``eager`` backend runs dynamo's tracing (where graph breaks are found) without generating code, so this
    stays fast; the inductor backend, forward and backward, is exercised by the slow test below.
    """
    torch._dynamo.reset()
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0, 1.5])
    logits, labels = torch.randn(6, 5), torch.randint(0, 5, (6,))
    probs = torch.softmax(torch.randn(6, 5), dim=1)
    module = MODULES[name](weight=weight, label_smoothing=0.1)
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    for target in (labels, probs):
        _assert_same_loss_and_gradient(compiled, module, logits, target)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODULES)[:3])
def test_modules_compile_with_inductor(name: str) -> None:
    torch._dynamo.reset()
    logits, labels = torch.randn(6, 5), torch.randint(0, 5, (6,))
    module = MODULES[name]()
    compiled = torch.compile(module, fullgraph=True)
    _assert_same_loss_and_gradient(compiled, module, logits, labels)
    half = logits.half() * 100
    torch.testing.assert_close(compiled(half, labels), module(half, labels))
