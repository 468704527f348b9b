"""Tests for engine.losses: LogExp (Eq. 3 / Eq. 4) against float64 references, the simple
distances against hand formulas, and the margin heads against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.errors import ConfigError
from engine.losses import (
    ArcFace,
    CosFace,
    SoftmaxHead,
    build_distance_loss,
    build_head,
    l1_loss,
    l2_loss,
    logexp_loss,
    smooth_l1_loss,
)

# --------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------


def naive_logexp64(x: torch.Tensor, y: torch.Tensor, p: float, reduction: str) -> torch.Tensor:
    """Eq. 3 written literally, in float64 (exact enough for the small/moderate inputs used)."""
    a = (x.double() - y.double()).abs() ** p
    n, dim = a.shape
    if reduction == "sample":
        return (torch.log(1 + (torch.exp(a) - 1).sum(dim=1)) / (p * dim)).mean()
    return torch.log(1 + (torch.exp(a) - 1).sum()) / (p * n)


def eq4_grad_x(x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    """Eq. 4 in closed form (float64), divided by N for the mean over samples."""
    d = x.double() - y.double()
    a = d.abs() ** p
    n, dim = d.shape
    denom = 1 + (torch.exp(a) - 1).sum(dim=1, keepdim=True)
    return p * d.abs() ** (p - 1) * torch.sign(d) * torch.exp(a) / denom / (p * dim) / n


def grad_x(fn, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    value = fn(x, y)
    (g,) = torch.autograd.grad(value, x)
    return value.detach(), g


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# --------------------------------------------------------------------------------------------
# LogExp: values and gradients at small and moderate inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("reduction", ["sample", "batch"])
@pytest.mark.parametrize("scale", [0.05, 1.0, 3.0])
def test_logexp_value_and_grad_match_float64_autograd(gen, p, reduction, scale):
    x = scale * torch.randn(6, 16, generator=gen)
    y = scale * torch.randn(6, 16, generator=gen)

    value, g = grad_x(lambda a, b: logexp_loss(a, b, p=p, reduction=reduction), x, y)
    assert value.dtype == torch.float32

    x64 = x.double().requires_grad_(True)
    ref = naive_logexp64(x64, y, p, reduction)
    (g_ref,) = torch.autograd.grad(ref, x64)

    torch.testing.assert_close(value.double(), ref.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g.double(), g_ref, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("p", [1, 2])
def test_logexp_gradient_is_eq4(gen, p):
    x = torch.randn(5, 32, generator=gen)
    y = torch.randn(5, 32, generator=gen)
    _, g = grad_x(lambda a, b: logexp_loss(a, b, p=p), x, y)
    torch.testing.assert_close(g.double(), eq4_grad_x(x, y, p), rtol=1e-4, atol=1e-10)


def test_logexp_gradient_wrt_y_is_minus_gradient_wrt_x(gen):
    x = torch.randn(3, 8, generator=gen)
    y = torch.randn(3, 8, generator=gen).requires_grad_(True)
    (gy,) = torch.autograd.grad(logexp_loss(x, y, p=2), y)
    torch.testing.assert_close(gy.double(), -eq4_grad_x(x, y.detach(), 2), rtol=1e-4, atol=1e-10)


def test_logexp_p1_zero_difference_has_zero_subgradient():
    x = torch.zeros(2, 4, requires_grad=True)
    loss = logexp_loss(x, torch.zeros(2, 4), p=1)
    (g,) = torch.autograd.grad(loss, x)
    assert loss.item() == 0.0
    assert torch.equal(g, torch.zeros_like(g))


def test_logexp_non_integer_p_matches_reference(gen):
    x = torch.randn(4, 8, generator=gen)
    y = torch.randn(4, 8, generator=gen)
    torch.testing.assert_close(
        logexp_loss(x, y, p=1.5).double(), naive_logexp64(x, y, 1.5, "sample"), rtol=1e-5, atol=1e-7
    )


# --------------------------------------------------------------------------------------------
# LogExp: tiny and huge differences
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("reduction", ["sample", "batch"])
def test_logexp_tiny_differences_keep_relative_precision(gen, p, reduction):
    # d = x - y is exact here (y = 0), so the only error is in the loss itself. A naive float32
    # exp(a) - 1 would round a = 1e-12 (p = 2) to 0 and the loss with it.
    x = 1e-6 * torch.randn(4, 64, generator=gen)
    y = torch.zeros(4, 64)
    value, g = grad_x(lambda a, b: logexp_loss(a, b, p=p, reduction=reduction), x, y)
    x64 = x.double().requires_grad_(True)
    ref = naive_logexp64(x64, y, p, reduction)
    (g_ref,) = torch.autograd.grad(ref, x64)
    assert value.item() > 0
    torch.testing.assert_close(value.double(), ref.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(g.double(), g_ref, rtol=1e-4, atol=0)


@pytest.mark.parametrize(
    ("p", "big"),
    [(1, 50.0), (1, 1e3), (1, 1e4), (1, 1e6), (2, 100.0), (2, 1e3)],
)
def test_logexp_large_differences_are_finite_and_match_asymptote(gen, p, big):
    n, dim = 3, 16
    x = 0.1 * torch.randn(n, dim, generator=gen)
    y = torch.zeros(n, dim)
    x[:, 3] = big  # one dominant coordinate per sample, a = big^p
    value, g = grad_x(lambda a, b: logexp_loss(a, b, p=p), x, y)
    assert torch.isfinite(value) and torch.isfinite(g).all()

    # log(1 + sum(exp(a_i) - 1)) = a_max + log(1 + sum_{i != max} expm1(a_i) exp(-a_max) ...),
    # so L = a_max / (p D) + (something below D exp(-a_max) / (p D)), i.e. a_max/(pD) in float32.
    a_max = big**p
    expected = a_max / (p * dim)
    assert value.item() == pytest.approx(expected, rel=1e-6)

    # Eq. 4: the dominant coordinate takes (almost) the whole softmax weight, so its gradient is
    # |d|^(p-1) / (D N); the others ~exp(a_i - a_max) ~ 0.
    assert g[:, 3].double().tolist() == pytest.approx([big ** (p - 1) / (dim * n)] * n, rel=1e-5)
    others = torch.cat([g[:, :3], g[:, 4:]], dim=1)
    assert others.abs().max().item() < 1e-12


@pytest.mark.parametrize("p", [1, 2])
def test_logexp_batch_reduction_large_is_finite(p):
    x = torch.zeros(4, 8)
    x[0, 0] = 1e4 if p == 1 else 100.0
    x[2, 5] = -(1e4 if p == 1 else 100.0)
    value, g = grad_x(lambda a, b: logexp_loss(a, b, p=p, reduction="batch"), x, torch.zeros(4, 8))
    assert torch.isfinite(value) and torch.isfinite(g).all()
    # Two equal dominant terms a = 1e4 (1e4^1 or 100^2): log(2 e^a + ...) = a + log 2, over p * B.
    a = 1e4
    assert value.item() == pytest.approx((a + math.log(2)) / (p * 4), rel=1e-6)


def test_logexp_rows_on_both_sides_of_the_switch_in_one_batch(gen):
    # One row handled by the log1p/expm1 form, one by the log-sum-exp form: no NaN leaks from
    # the branch each row does not use.
    x = torch.zeros(2, 8)
    x[0] = 0.01 * torch.randn(8, generator=gen)
    x[1, 0] = 500.0
    value, g = grad_x(lambda a, b: logexp_loss(a, b, p=1), x, torch.zeros(2, 8))
    assert torch.isfinite(g).all()
    ref_row0 = naive_logexp64(x[:1], torch.zeros(1, 8), 1, "sample").item()
    assert value.item() == pytest.approx((ref_row0 + 500.0 / 8) / 2, rel=1e-6)
    torch.testing.assert_close(g[:1].double(), eq4_grad_x(x[:1], torch.zeros(1, 8), 1) / 2, rtol=1e-4, atol=0)


def test_logexp_is_continuous_across_the_branch_switch():
    values = []
    for a in (19.999, 20.0, 20.001):
        x = torch.zeros(1, 8)
        x[0, 0] = a
        values.append(logexp_loss(x, torch.zeros(1, 8), p=1).item())
    # The value rises by ~0.001/8 per step; no jump at the switch.
    assert values[0] < values[1] < values[2]
    assert values[2] - values[0] == pytest.approx(0.002 / 8, rel=1e-2)


# --------------------------------------------------------------------------------------------
# LogExp: the released code's batch reduction
# --------------------------------------------------------------------------------------------


def test_logexp_batch_reduction_depends_on_batch_size(gen):
    x = 0.2 * torch.randn(4, 8, generator=gen)
    y = 0.2 * torch.randn(4, 8, generator=gen)
    xx, yy = torch.cat([x, x]), torch.cat([y, y])

    # Per-sample form: duplicating the batch changes neither the value nor (per copy) the
    # direction; each copy gets half the gradient because the mean runs over twice as many rows.
    v1, g1 = grad_x(lambda a, b: logexp_loss(a, b, p=1), x, y)
    v2, g2 = grad_x(lambda a, b: logexp_loss(a, b, p=1), xx, yy)
    torch.testing.assert_close(v2, v1)
    torch.testing.assert_close(g2[:4] * 2, g1)

    # Batch form: L(B) = log(1 + S) / (pB); duplicated, L(2B) = log(1 + 2S) / (2pB), and each
    # copy's gradient is (1/(2pB)) * exp(a) / (1 + 2S) instead of (1/(pB)) * exp(a) / (1 + S).
    vb1, gb1 = grad_x(lambda a, b: logexp_loss(a, b, p=1, reduction="batch"), x, y)
    vb2, gb2 = grad_x(lambda a, b: logexp_loss(a, b, p=1, reduction="batch"), xx, yy)
    s = torch.expm1((x - y).double().abs()).sum()
    assert vb1.item() == pytest.approx(math.log1p(s.item()) / 4, rel=1e-6)
    assert vb2.item() == pytest.approx(math.log1p(2 * s.item()) / 8, rel=1e-6)
    ratio = (1 + s) / (2 * (1 + 2 * s))
    torch.testing.assert_close(gb2[:4].double(), gb1.double() * ratio, rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(gb2[4:], gb2[:4])


# --------------------------------------------------------------------------------------------
# L1, L2, SmoothL1
# --------------------------------------------------------------------------------------------


def test_simple_distances_match_hand_formulas():
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 3.0]])
    y = torch.tensor([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0]])
    # d = [[1, -2, 0.5], [-0.25, 0, 3]], D = 3
    assert l1_loss(x, y).item() == pytest.approx(((1 + 2 + 0.5) / 3 + (0.25 + 0 + 3) / 3) / 2)
    assert l2_loss(x, y).item() == pytest.approx(((1 + 4 + 0.25) / 6 + (0.0625 + 0 + 9) / 6) / 2)
    # SmoothL1 (beta 1): 0.5 d^2 for |d| < 1, |d| - 0.5 otherwise; mean over all 6 elements.
    terms = [0.5, 1.5, 0.125, 0.03125, 0.0, 2.5]
    assert smooth_l1_loss(x, y, beta=1.0).item() == pytest.approx(sum(terms) / 6)
    assert smooth_l1_loss(x, y, beta=2.0).item() == pytest.approx(F.smooth_l1_loss(x, y, beta=2.0).item())


def test_distances_compute_in_float32_from_half_inputs():
    x = torch.full((2, 4), 0.5, dtype=torch.float16)
    y = torch.zeros(2, 4, dtype=torch.float16)
    for fn in (l1_loss, l2_loss, smooth_l1_loss, logexp_loss):
        assert fn(x, y).dtype == torch.float32


def test_distance_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        l1_loss(torch.zeros(2, 3), torch.zeros(2, 4))


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


def test_cosface_loss_matches_hand_computation(gen):
    head = CosFace(8, 5, s=48.0, m=0.4)
    emb = torch.randn(4, 8, generator=gen)
    labels = torch.tensor([0, 3, 3, 1])
    cos = F.normalize(emb.double(), dim=1) @ F.normalize(head.weight.detach().double(), dim=1).T
    expected = 0.0
    for i, lab in enumerate(labels.tolist()):
        z = 48.0 * cos[i].clone()
        z[lab] = 48.0 * (cos[i, lab] - 0.4)
        expected += (torch.logsumexp(z, 0) - z[lab]).item()
    assert head(emb, labels).item() == pytest.approx(expected / 4, rel=1e-5)
    torch.testing.assert_close(head.logits(emb).double(), 48.0 * cos, rtol=1e-5, atol=1e-5)


def test_arcface_loss_matches_hand_computation(gen):
    head = ArcFace(8, 5, s=64.0, m=0.5)
    emb = torch.randn(3, 8, generator=gen)
    labels = torch.tensor([4, 0, 2])
    cos = F.normalize(emb.double(), dim=1) @ F.normalize(head.weight.detach().double(), dim=1).T
    expected = 0.0
    for i, lab in enumerate(labels.tolist()):
        theta = math.acos(cos[i, lab].item())
        z = 64.0 * cos[i].clone()
        if theta + 0.5 <= math.pi:
            z[lab] = 64.0 * math.cos(theta + 0.5)
        else:  # insightface's fallback beyond pi - m
            z[lab] = 64.0 * (cos[i, lab] - math.sin(0.5) * 0.5)
        expected += (torch.logsumexp(z, 0) - z[lab]).item()
    assert head(emb, labels).item() == pytest.approx(expected / 3, rel=1e-4)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_arcface_finite_for_aligned_and_opposite_embeddings(sign):
    head = ArcFace(8, 4)
    # One-hot class centres and embeddings make cos(theta) exactly +-1 in float32, where
    # d sqrt(1 - cos^2) / d cos is infinite without the clamps.
    with torch.no_grad():
        head.weight.copy_(torch.eye(4, 8))
    labels = torch.tensor([0, 1, 2, 3])
    emb = (sign * head.weight.detach().clone() * 7.0).requires_grad_(True)
    loss = head(emb, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()
    # Hand value: target cosine +-1 -> cos(0 + m), or (theta = pi is beyond pi - m) the
    # fallback -1 - m sin(m); the other classes keep their plain cosine.
    cos = F.normalize(emb.detach().double(), dim=1) @ F.normalize(head.weight.detach().double(), dim=1).T
    z = 64.0 * cos
    target = math.cos(0.5) if sign > 0 else -1.0 - 0.5 * math.sin(0.5)
    z[range(4), range(4)] = 64.0 * target
    assert loss.item() == pytest.approx(F.cross_entropy(z, labels).item(), rel=1e-4, abs=1e-4)


def test_margin_heads_compute_in_float32_under_autocast(gen):
    head = CosFace(8, 5)
    emb = torch.randn(4, 8, generator=gen).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = head(emb, torch.tensor([0, 1, 2, 3]))
        logits = head.logits(emb)
    assert loss.dtype == torch.float32 and logits.dtype == torch.float32


@pytest.mark.parametrize("kind", ["cosface", "arcface", "softmax"])
def test_heads_logits_shape_and_loss_is_scalar(gen, kind):
    head = build_head(kind, 16, 7)
    emb = torch.randn(5, 16, generator=gen)
    assert head.logits(emb).shape == (5, 7)
    loss = head(emb, torch.tensor([0, 1, 2, 3, 6]))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert head.weight.shape == (7, 16)
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.3)


def test_softmax_head_is_plain_linear_cross_entropy(gen):
    head = SoftmaxHead(6, 3)
    emb = torch.randn(4, 6, generator=gen)
    labels = torch.tensor([0, 2, 1, 1])
    logits = emb @ head.weight.detach().T
    torch.testing.assert_close(head.logits(emb), logits)
    assert head(emb, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def test_build_head_defaults_and_overrides():
    cos = build_head("cosface", 4, 2)
    arc = build_head("arcface", 4, 2)
    assert isinstance(cos, CosFace) and (cos.s, cos.m) == (48.0, 0.4)
    assert isinstance(arc, ArcFace) and (arc.s, arc.m) == (64.0, 0.5)
    custom = build_head("cosface", 4, 2, s=16, m=None)
    assert (custom.s, custom.m) == (16.0, 0.4)
    assert isinstance(build_head("softmax", 4, 2), SoftmaxHead)


def test_build_head_errors():
    with pytest.raises(ConfigError, match="cosface, arcface, softmax"):
        build_head("sphereface", 4, 2)
    with pytest.raises(ConfigError):
        build_head("cosface", 4, 2, s=-1.0)
    with pytest.raises(ConfigError):
        build_head("arcface", 4, 2, m=2.0)


def test_build_distance_loss(gen):
    assert build_distance_loss("none") is None
    x = torch.randn(3, 4, generator=gen)
    y = torch.randn(3, 4, generator=gen)
    assert build_distance_loss("l1")(x, y) == l1_loss(x, y)
    assert build_distance_loss("l2")(x, y) == l2_loss(x, y)
    assert build_distance_loss("smoothl1")(x, y) == smooth_l1_loss(x, y)
    fn = build_distance_loss("logexp", p=2, reduction="batch")
    assert fn(x, y) == logexp_loss(x, y, p=2, reduction="batch")


def test_build_distance_loss_errors():
    with pytest.raises(ConfigError, match="none, l1, l2, smoothl1, logexp"):
        build_distance_loss("cosine")
    with pytest.raises(ConfigError, match="sample, batch"):
        build_distance_loss("logexp", reduction="mean")
    with pytest.raises(ConfigError, match=">= 1"):
        build_distance_loss("logexp", p=0.5)
    with pytest.raises(ConfigError):
        logexp_loss(torch.zeros(1, 2), torch.zeros(1, 2), p=0)
