"""The square, rescaled square and squentropy losses against direct implementations of their formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from speechkern.losses import (
    RescaledSquareLoss,
    SquareLoss,
    SquentropyLoss,
    rescaled_square_loss,
    square_loss,
    squentropy_loss,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# --- direct implementations of SPEC.md §9, one sample at a time ------------------------------------------------


def ref_rescaled(f: torch.Tensor, c: int, t: float, m: float) -> torch.Tensor:
    """(1/C)·(t·(f_c − M)² + Σ_{j≠c} f_j²) for one sample."""
    n = f.shape[0]
    wrong = sum(f[j] ** 2 for j in range(n) if j != c)
    return (t * (f[c] - m) ** 2 + wrong) / n


def ref_squentropy(f: torch.Tensor, c: int, alpha: float) -> torch.Tensor:
    """−log softmax(f)_c + (α/(C−1))·Σ_{j≠c} f_j² for one sample."""
    n = f.shape[0]
    wrong = sum(f[j] ** 2 for j in range(n) if j != c)
    return -(f[c] - torch.logsumexp(f, dim=0)) + alpha / (n - 1) * wrong


LOSSES = {
    "square": (lambda f, y, **kw: square_loss(f, y, **kw), lambda f, c: ref_rescaled(f, c, 1.0, 1.0)),
    "rescaled": (
        lambda f, y, **kw: rescaled_square_loss(f, y, 2.5, 7.0, **kw),
        lambda f, c: ref_rescaled(f, c, 2.5, 7.0),
    ),
    "squentropy": (lambda f, y, **kw: squentropy_loss(f, y, 1.0, **kw), lambda f, c: ref_squentropy(f, c, 1.0)),
    "squentropy_a0.3": (lambda f, y, **kw: squentropy_loss(f, y, 0.3, **kw), lambda f, c: ref_squentropy(f, c, 0.3)),
}


def ref_expectation(ref, f: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Σ_j a_j ℓ_j(f): the loss of a sample with class coefficients a (weight × target probability)."""
    return sum(a[j] * ref(f, j) for j in range(f.shape[0]))


def batch(n: int = 6, c: int = 5, seed: int = 0, dtype=torch.float64, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, c, generator=g, dtype=dtype)).to(device)
    labels = torch.randint(0, c, (n,), generator=g).to(device)
    return logits, labels


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_and_gradient_equal_the_formula(name: str, device: str) -> None:
    loss_fn, ref = LOSSES[name]
    logits, labels = batch(device=device)
    f1 = logits.clone().requires_grad_(True)
    f2 = logits.clone().requires_grad_(True)
    per_sample = loss_fn(f1, labels, reduction="none")
    expected = torch.stack([ref(f2[i], int(labels[i])) for i in range(len(labels))])
    torch.testing.assert_close(per_sample, expected, rtol=1e-12, atol=1e-12)
    per_sample.mean().backward()
    expected.mean().backward()
    torch.testing.assert_close(f1.grad, f2.grad, rtol=1e-12, atol=1e-12)


def test_gradients_match_closed_forms() -> None:
    logits, labels = batch(n=4, c=3)
    n, c = logits.shape
    onehot = F.one_hot(labels, c).double()
    f = logits.clone().requires_grad_(True)
    square_loss(f, labels).backward()
    torch.testing.assert_close(f.grad, 2 * (logits - onehot) / (n * c))
    f = logits.clone().requires_grad_(True)
    rescaled_square_loss(f, labels, 3.0, 5.0).backward()
    torch.testing.assert_close(f.grad, 2 * (onehot * 3.0 * (logits - 5.0) + (1 - onehot) * logits) / (n * c))
    f = logits.clone().requires_grad_(True)
    squentropy_loss(f, labels, alpha=0.7).backward()
    expected = (torch.softmax(logits, 1) - onehot + 0.7 * 2 / (c - 1) * (1 - onehot) * logits) / n
    torch.testing.assert_close(f.grad, expected)


@pytest.mark.parametrize("name", list(LOSSES))
def test_probability_targets_are_the_expected_loss(name: str) -> None:
    loss_fn, ref = LOSSES[name]
    logits, labels = batch()
    probs = torch.softmax(torch.randn(logits.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)), 1)
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5, 0.25], dtype=torch.float64)
    got = loss_fn(logits, probs, weight=weight, reduction="none")
    expected = torch.stack([ref_expectation(ref, logits[i], weight * probs[i]) for i in range(len(logits))])
    torch.testing.assert_close(got, expected)
    # one-hot probabilities give the class-index loss
    onehot = F.one_hot(labels, logits.shape[1]).double()
    torch.testing.assert_close(loss_fn(logits, onehot, reduction="none"), loss_fn(logits, labels, reduction="none"))
    # 'mean' of probability targets divides by the number of samples, as cross_entropy does
    torch.testing.assert_close(loss_fn(logits, probs, weight=weight), got.sum() / len(logits))


def test_square_loss_with_probabilities_is_distance_to_p_up_to_a_constant() -> None:
    logits, _ = batch(c=4)
    probs = torch.softmax(torch.randn(logits.shape, dtype=torch.float64), 1)
    f = logits.clone().requires_grad_(True)
    got = square_loss(f, probs, reduction="none")
    direct = ((f - probs) ** 2).mean(1) + (probs * (1 - probs)).mean(1)
    torch.testing.assert_close(got, direct)
    grad_got = torch.autograd.grad(got.sum(), f, retain_graph=True)[0]
    grad_direct = torch.autograd.grad(((f - probs) ** 2).mean(1).sum(), f)[0]
    torch.testing.assert_close(grad_got, grad_direct)


@pytest.mark.parametrize("name", list(LOSSES))
def test_label_smoothing_is_the_smoothed_target_distribution(name: str) -> None:
    loss_fn, ref = LOSSES[name]
    logits, labels = batch()
    c = logits.shape[1]
    eps = 0.2
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5, 0.25], dtype=torch.float64)
    smoothed = (1 - eps) * F.one_hot(labels, c).double() + eps / c
    got = loss_fn(logits, labels, weight=weight, label_smoothing=eps, reduction="none")
    expected = torch.stack([ref_expectation(ref, logits[i], weight * smoothed[i]) for i in range(len(labels))])
    torch.testing.assert_close(got, expected)
    # 'mean' still divides by the target classes' weights, as CrossEntropyLoss does with label smoothing
    torch.testing.assert_close(
        loss_fn(logits, labels, weight=weight, label_smoothing=eps), got.sum() / weight[labels].sum()
    )
    # smoothing of probability targets: (1 − ε)·p + ε/C
    probs = torch.softmax(logits.flip(0), 1)
    torch.testing.assert_close(
        loss_fn(logits, probs, label_smoothing=eps), loss_fn(logits, (1 - eps) * probs + eps / c)
    )


@pytest.mark.parametrize("name", list(LOSSES))
def test_reduction_weight_and_ignore_index_behave_like_cross_entropy(name: str) -> None:
    loss_fn, _ = LOSSES[name]
    logits, labels = batch(n=8)
    labels[[1, 5]] = -1
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5, 0.25], dtype=torch.float64)
    kept = labels != -1

    for fn in (loss_fn, F.cross_entropy):  # the same identities hold for cross-entropy itself
        none = fn(logits, labels, weight=weight, ignore_index=-1, reduction="none")
        unweighted = fn(logits, labels, ignore_index=-1, reduction="none")
        assert none.shape == labels.shape
        assert torch.all(none[~kept] == 0)
        torch.testing.assert_close(none[kept], weight[labels[kept]] * unweighted[kept])
        torch.testing.assert_close(fn(logits, labels, weight=weight, ignore_index=-1, reduction="sum"), none.sum())
        mean = fn(logits, labels, weight=weight, ignore_index=-1)
        torch.testing.assert_close(mean, none.sum() / weight[labels[kept]].sum())
        torch.testing.assert_close(mean, fn(logits[kept], labels[kept], weight=weight))
        torch.testing.assert_close(fn(logits, labels, ignore_index=-1), unweighted[kept].mean())
        all_ignored = fn(logits, torch.full_like(labels, -1), ignore_index=-1)
        assert math.isnan(all_ignored.item())


@pytest.mark.parametrize("name", list(LOSSES))
def test_spatial_inputs_equal_flattened_samples(name: str) -> None:
    loss_fn, _ = LOSSES[name]
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 2, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (3, 2, 5), generator=g)
    labels[0, 1, 2] = -100
    flat_logits = logits.movedim(1, -1).reshape(-1, 4)
    flat_labels = labels.reshape(-1)
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    none = loss_fn(logits, labels, weight=weight, reduction="none", label_smoothing=0.1)
    assert none.shape == (3, 2, 5)
    torch.testing.assert_close(
        none.reshape(-1), loss_fn(flat_logits, flat_labels, weight=weight, reduction="none", label_smoothing=0.1)
    )
    torch.testing.assert_close(loss_fn(logits, labels, weight=weight), loss_fn(flat_logits, flat_labels, weight=weight))
    probs = torch.softmax(torch.randn(logits.shape, generator=g, dtype=torch.float64), 1)
    flat_probs = probs.movedim(1, -1).reshape(-1, 4)
    torch.testing.assert_close(loss_fn(logits, probs), loss_fn(flat_logits, flat_probs))


@pytest.mark.parametrize("name", list(LOSSES))
def test_unbatched_input(name: str) -> None:
    loss_fn, ref = LOSSES[name]
    logits, labels = batch(n=1)
    got = loss_fn(logits[0], labels[0], reduction="none")
    assert got.shape == ()
    torch.testing.assert_close(got, ref(logits[0], int(labels[0])))


@pytest.mark.parametrize("device", DEVICES)
def test_squentropy_with_alpha_zero_is_cross_entropy(device: str) -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 4, 3, generator=g).to(device)
    labels = torch.randint(0, 4, (5, 3), generator=g).to(device)
    labels[2, 1] = 3
    labels[4, 0] = -100
    probs = torch.softmax(torch.randn(5, 4, 3, generator=g), 1).to(device)
    weight = torch.tensor([0.3, 1.0, 2.0, 0.7], device=device)
    for target in (labels, probs):
        for kwargs in ({}, {"weight": weight}, {"label_smoothing": 0.15}, {"weight": weight, "label_smoothing": 0.3}):
            for reduction in ("none", "mean", "sum"):
                got = SquentropyLoss(alpha=0.0, reduction=reduction, **kwargs).to(device)(logits, target)
                expected = torch.nn.CrossEntropyLoss(reduction=reduction, **kwargs)(logits, target)
                torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_float32_logits_near_3000_lose_no_precision() -> None:
    """f_c ≈ 3000 and small wrong-class logits: Σ f² − f_c² would round the wrong-class sum away in float32."""
    logits = torch.tensor(
        [[3000.0, 0.5, -0.25, 1.0], [-0.75, 2999.5, 0.125, 0.5], [2.0, -1.5, 0.25, 3000.25]], dtype=torch.float32
    )
    labels = torch.tensor([0, 1, 3])
    cases = [
        (lambda f: squentropy_loss(f, labels, reduction="none"), 1e-6),
        (lambda f: rescaled_square_loss(f, labels, 1.0, 3000.0, reduction="none"), 1e-6),
        (lambda f: square_loss(f, labels, reduction="none"), 1e-6),
        (lambda f: rescaled_square_loss(f, labels, 15.0, 30.0, reduction="none"), 1e-6),
        (
            lambda f: squentropy_loss(
                f,
                labels,
                weight=torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=f.dtype),
                label_smoothing=0.1,
                reduction="none",
            ),
            1e-6,
        ),
    ]
    for loss_fn, rtol in cases:
        f32 = logits.clone().requires_grad_(True)
        f64 = logits.double().requires_grad_(True)
        got, expected = loss_fn(f32), loss_fn(f64)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, rtol=rtol, atol=0.0)
        got.sum().backward()
        expected.sum().backward()
        torch.testing.assert_close(f32.grad.double(), f64.grad, rtol=rtol, atol=1e-6)
    # the exact wrong-class term survives (squentropy: CE ≈ 0, penalty (0.25 + 0.0625 + 1)/3)
    assert squentropy_loss(logits[:1], labels[:1]).item() == pytest.approx(1.3125 / 3, rel=1e-6)
    # ... which the cancelling form Σ f² − f_c² does not get right in float32: the test can tell them apart
    naive = ((logits[:1] ** 2).sum() - logits[0, 0] ** 2) / 3
    assert abs(naive.item() - 1.3125 / 3) > 1e-2


def test_modules_match_functions_and_move_their_weight() -> None:
    logits, labels = batch(c=5)
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5, 0.25], dtype=torch.float64)
    pairs = [
        (
            SquareLoss(weight=weight, ignore_index=2, label_smoothing=0.1),
            square_loss(logits, labels, weight=weight, ignore_index=2, label_smoothing=0.1),
        ),
        (
            RescaledSquareLoss(15, 30, weight=weight, reduction="sum"),
            rescaled_square_loss(logits, labels, 15, 30, weight=weight, reduction="sum"),
        ),
        (SquentropyLoss(0.5, reduction="none"), squentropy_loss(logits, labels, 0.5, reduction="none")),
    ]
    for module, expected in pairs:
        torch.testing.assert_close(module(logits, labels), expected)
    module = SquareLoss(weight=weight)
    assert "weight" in dict(module.named_buffers())
    assert module.float().weight.dtype == torch.float32
    assert "t=15, M=30" in repr(RescaledSquareLoss(15, 30))
    torch.testing.assert_close(RescaledSquareLoss()(logits, labels), SquareLoss()(logits, labels))


def test_bad_arguments_are_refused() -> None:
    logits, labels = batch(c=5)
    with pytest.raises(ValueError, match="reduction"):
        SquareLoss(reduction="average")
    with pytest.raises(ValueError, match="label_smoothing"):
        squentropy_loss(logits, labels, label_smoothing=1.5)
    with pytest.raises(ValueError, match="t=0"):
        RescaledSquareLoss(t=0.0)
    with pytest.raises(ValueError, match="alpha"):
        SquentropyLoss(alpha=-1)
    with pytest.raises(ValueError, match="weight must have shape"):
        square_loss(logits, labels, weight=torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="class-index targets must have shape"):
        square_loss(logits, labels[:3])
    with pytest.raises(ValueError, match="probability targets"):
        squentropy_loss(logits, torch.rand(6, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2 classes"):
        squentropy_loss(logits[:, :1], torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="floating-point"):
        square_loss(labels.view(-1, 1), labels)
    with pytest.raises(RuntimeError):  # a class index outside [0, C), as cross_entropy refuses it
        square_loss(logits, torch.full_like(labels, 7))
