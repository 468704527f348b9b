"""Training losses: margin classification heads and HR/LR feature-distance losses.

The paper's objective (see ARCHITECTURE.md, "The method the engine implements") is

    L_all = lambda * L_dist(f_hr/|f_hr|, f_lr/|f_lr|) + 1/2 CosFace(f_hr) + 1/2 CosFace(f_lr)

This module holds both halves:

* classification heads (``CosFace``, ``ArcFace``, ``SoftmaxHead``, built by name with
  ``build_head``) that own the class-centre matrix ``W`` and return a mean cross-entropy;
* feature-distance losses (``l1_loss``, ``l2_loss``, ``smooth_l1_loss``, ``logexp_loss``, built
  by name with ``build_distance_loss``) applied to the normalised HR and LR embeddings.

Each head and distance term is declared in ``engine.loss_registry`` (name, description, the config
options its builder reads) and its builder registers here with ``@register_head`` / ``@register_distance``.

Everything is computed in float32, also under ``torch.autocast``: the margins and the LogExp
exponentials are exactly where half precision loses the signal or overflows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import ConfigError
from engine.loss_registry import (
    DISTANCE_REDUCTIONS,
    distance_builders,
    distance_info,
    distance_names,
    head_builders,
    head_info,
    head_names,
    register_distance,
    register_head,
)

__all__ = [
    "ArcFace",
    "CosFace",
    "DISTANCE_LOSSES",
    "DISTANCE_REDUCTIONS",
    "DistanceLoss",
    "HEAD_KINDS",
    "SMOOTH_L1_BETA",
    "SoftmaxHead",
    "build_distance_loss",
    "build_head",
    "l1_loss",
    "l2_loss",
    "logexp_loss",
    "smooth_l1_loss",
]

# --------------------------------------------------------------------------------------------
# Classification heads
# --------------------------------------------------------------------------------------------


def _no_autocast(device: torch.device) -> torch.autocast:
    """A context that switches autocast off for ``device``'s type (we compute in float32)."""
    return torch.autocast(device_type=device.type, enabled=False)


class _Head(nn.Module):
    """Common part of all heads: the class-weight matrix ``W`` (num_classes x embedding_size)."""

    def __init__(self, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        if embedding_size < 1 or num_classes < 1:
            raise ConfigError(
                f"a classification head needs embedding_size >= 1 and num_classes >= 1, "
                f"got {embedding_size} and {num_classes}"
            )
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        # N(0, 0.01^2), as in insightface's partial-fc heads: small, so the first logits are
        # near zero whatever the scale.
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def _check(self, embeddings: Tensor) -> None:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_size:
            raise ValueError(
                f"expected embeddings of shape N x {self.embedding_size}, got {tuple(embeddings.shape)}"
            )

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}"


class _MarginHead(_Head):
    """A head on cosine similarities: both embeddings and rows of ``W`` are L2-normalised."""

    def __init__(self, embedding_size: int, num_classes: int, s: float, m: float) -> None:
        super().__init__(embedding_size, num_classes)
        if not (math.isfinite(s) and s > 0):
            raise ConfigError(f"the logit scale s must be a positive number, got {s}")
        if not (math.isfinite(m) and m >= 0):
            raise ConfigError(f"the margin m must be a non-negative number, got {m}")
        self.s = float(s)
        self.m = float(m)

    def cosine(self, embeddings: Tensor) -> Tensor:
        """cos(theta_j) between each embedding and each class centre, N x C, in float32."""
        self._check(embeddings)
        with _no_autocast(embeddings.device):
            x = F.normalize(embeddings.float(), dim=1)
            w = F.normalize(self.weight.float(), dim=1)
            return F.linear(x, w)

    def logits(self, embeddings: Tensor) -> Tensor:
        """Scaled cosines ``s * cos(theta_j)`` without any margin, N x C (for accuracy / argmax)."""
        return self.s * self.cosine(embeddings)

    def _target_logit(self, cos_target: Tensor) -> Tensor:
        """The margin-penalised target cosine (before scaling); subclasses define it."""
        raise NotImplementedError

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy over the batch with the margin applied to each sample's own class."""
        cos = self.cosine(embeddings)
        labels = labels.long().view(-1, 1)
        with _no_autocast(cos.device):
            target = self._target_logit(cos.gather(1, labels))
            # Replace only the target column; the other classes keep their plain cosine.
            logits = cos.scatter(1, labels, target)
            return F.cross_entropy(self.s * logits, labels.view(-1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, s={self.s}, m={self.m}"


@register_head("cosface")
class CosFace(_MarginHead):
    """CosFace / large-margin cosine loss (Wang et al. 2018), the paper's classification loss.

    L = CE(s * (cos(theta_y) - m), s * cos(theta_j != y)); the paper uses s = 48, m = 0.4.
    """

    def __init__(self, embedding_size: int, num_classes: int, s: float = 48.0, m: float = 0.4) -> None:
        super().__init__(embedding_size, num_classes, s, m)

    def _target_logit(self, cos_target: Tensor) -> Tensor:
        return cos_target - self.m


@register_head("arcface")
class ArcFace(_MarginHead):
    """ArcFace / additive angular margin loss (Deng et al. 2019): target logit s * cos(theta_y + m).

    cos(theta + m) is expanded as cos*cos(m) - sin*sin(m) with sin = sqrt(1 - cos^2), which needs
    no ``acos``. Where theta + m would pass pi the target logit would stop decreasing in theta,
    so (as insightface does with ``easy_margin=False``) it falls back to the CosFace-like
    ``cos(theta) - m * sin(m)``, which is continuous at theta = pi - m and keeps decreasing.
    """

    # cos is clamped to [-1 + eps, 1 - eps] so that sqrt(1 - cos^2) stays away from 0: the
    # derivative of sqrt at 0 is infinite and would turn aligned (theta ~ 0) or opposite
    # (theta ~ pi) embeddings into NaN gradients.
    _EPS = 1e-7

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.5) -> None:
        super().__init__(embedding_size, num_classes, s, m)
        if self.m >= math.pi / 2:
            raise ConfigError(f"the ArcFace margin m must be below pi/2 (radians), got {m}")
        self._cos_m = math.cos(self.m)
        self._sin_m = math.sin(self.m)
        self._cos_limit = math.cos(math.pi - self.m)  # cos(theta) at theta = pi - m
        self._fallback_shift = math.sin(math.pi - self.m) * self.m

    def _target_logit(self, cos_target: Tensor) -> Tensor:
        cos = cos_target.clamp(-1.0 + self._EPS, 1.0 - self._EPS)
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(self._EPS))
        cos_theta_plus_m = cos * self._cos_m - sin * self._sin_m
        return torch.where(cos > self._cos_limit, cos_theta_plus_m, cos - self._fallback_shift)


@register_head("softmax")
class SoftmaxHead(_Head):
    """Plain softmax classifier: bias-free linear logits ``x W^T``, no normalisation, no margin."""

    def logits(self, embeddings: Tensor) -> Tensor:
        """Raw logits ``x W^T``, N x C, in float32."""
        self._check(embeddings)
        with _no_autocast(embeddings.device):
            return F.linear(embeddings.float(), self.weight.float())

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy of the raw logits."""
        logits = self.logits(embeddings)
        with _no_autocast(logits.device):
            return F.cross_entropy(logits, labels.long().view(-1))


# Declared in engine.loss_registry; kept under this name for the callers of engine.losses.
HEAD_KINDS: tuple[str, ...] = head_names()
_HEAD_BUILDERS = head_builders()  # every declared head has its class registered above (KeyError otherwise)


def build_head(
    kind: str,
    embedding_size: int,
    num_classes: int,
    s: float | None = None,
    m: float | None = None,
) -> nn.Module:
    """Build a classification head by name (``"cosface"``, ``"arcface"`` or ``"softmax"``).

    ``s`` / ``m`` of ``None`` keep the head's default (CosFace 48 / 0.4, ArcFace 64 / 0.5).
    A head is given only the options it declares (``head_info(kind).options``): the softmax
    head has neither a scale nor a margin and ignores them.
    """
    key = kind.strip().lower() if isinstance(kind, str) else None
    if key not in _HEAD_BUILDERS:
        raise ConfigError(f"unknown classification head {kind!r}; valid kinds: {', '.join(HEAD_KINDS)}")
    given = {"s": s, "m": m}
    kwargs = {word: float(given[word]) for word in head_info(key).keywords if given[word] is not None}
    return _HEAD_BUILDERS[key](embedding_size, num_classes, **kwargs)


# --------------------------------------------------------------------------------------------
# Feature-distance losses (HR vs LR embeddings)
# --------------------------------------------------------------------------------------------

DistanceLoss = Callable[[Tensor, Tensor], Tensor]
"""A distance loss: (x, y), both N x D, -> scalar tensor."""


def _difference(x: Tensor, y: Tensor) -> Tensor:
    """``x - y`` in float32 after checking that both are N x D (autocast must not halve it)."""
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(
            f"distance losses need two N x D tensors of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    with _no_autocast(x.device):
        return x.float() - y.float()


def l1_loss(x: Tensor, y: Tensor) -> Tensor:
    """Mean absolute difference: mean over samples of (1/D) sum_i |x_i - y_i|."""
    d = _difference(x, y)
    with _no_autocast(d.device):
        # The mean over all N*D elements equals the mean over samples of the per-sample mean.
        return d.abs().mean()


def l2_loss(x: Tensor, y: Tensor) -> Tensor:
    """The paper's L2: mean over samples of 1/(2D) sum_i (x_i - y_i)^2."""
    d = _difference(x, y)
    with _no_autocast(d.device):
        return 0.5 * d.square().mean()


# Default threshold of ``smooth_l1_loss`` (config ``loss.beta``). Not torch's SmoothL1Loss default of 1:
# the loss is applied to L2-normalised embeddings, whose coordinate differences are all far below 1
# (sum_i d_i^2 = |x - y|^2 <= 4, so a 512-d pair has an rms |d_i| of at most 2/sqrt(512) ~ 0.088),
# and with beta = 1 every |d_i| < beta: smooth L1 is then 0.5 d^2 / beta everywhere, i.e. exactly
# ``l2_loss``. The released code (hurricanelx/LRFR) has no smooth L1 to copy a value from (its
# distances are LogExp, L1 and L2). A pair with cosine similarity c has rms |d_i| = sqrt(2 (1 - c) / D):
# 0.014 at c = 0.95, 0.020 at c = 0.9, 0.044 at c = 0.5 for D = 512. beta = 0.02 sits inside that range,
# so coordinates of well-aligned HR/LR pairs stay in the quadratic (L2) zone while the larger
# differences of poorly aligned ones get the bounded L1 gradient, which is what makes it a Huber loss.
SMOOTH_L1_BETA = 0.02


def _check_beta(beta: float) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ConfigError(f"the smooth-L1 threshold beta must be a number > 0, got {beta!r}")
    return float(beta)


def smooth_l1_loss(x: Tensor, y: Tensor, beta: float = SMOOTH_L1_BETA) -> Tensor:
    """``torch.nn.functional.smooth_l1_loss`` (Huber-like, threshold ``beta``), mean over all elements.

    Per coordinate ``0.5 d^2 / beta`` for ``|d| < beta``, else ``|d| - 0.5 beta``. The default is
    ``SMOOTH_L1_BETA``, not torch's 1, which on unit-normalised embeddings equals ``l2_loss``.
    """
    beta = _check_beta(beta)
    d = _difference(x, y)
    with _no_autocast(d.device):
        return F.smooth_l1_loss(d, torch.zeros_like(d), beta=beta)


# Above this largest exponent a = |d|^p the sum of expm1 terms is evaluated in log-sum-exp form.
# At 20, expm1(20) ~ 4.9e8, so even 1e20 coordinates summed stay far below float32's 3.4e38, and
# the log-sum-exp form is already exact to float32 precision (its result is >= a_max >= 20).
_LOGEXP_SWITCH = 20.0


def _log1p_sum_expm1(a: Tensor) -> Tensor:
    """log(1 + sum_i (exp(a_i) - 1)) over the last dim of ``a >= 0``, without overflow.

    Two algebraically equal forms, chosen per row by the largest exponent M = max_i a_i:

    * M <= _LOGEXP_SWITCH: ``log1p(sum expm1(a))`` keeps full relative precision for tiny a
      (a naive ``exp(a) - 1`` of a = 1e-12 rounds to 0 in float32);
    * M >  _LOGEXP_SWITCH: ``M + log(sum exp(a_i - M) - (D - 1) exp(-M))``, where every
      exponential is <= 1 and the log's argument is >= 1 (the max term alone contributes 1),
      so nothing overflows for any finite a.

    ``torch.where`` differentiates both forms for every row, so the inputs of the first form are
    clamped to the switch value: its (unused) values and gradients stay finite and the zero
    weight ``where`` gives them cannot become 0 * inf = NaN. The second form is finite everywhere.
    """
    m = a.amax(dim=-1, keepdim=True).detach()  # any constant works in the identity; detach it
    small = torch.log1p(torch.expm1(a.clamp_max(_LOGEXP_SWITCH)).sum(dim=-1))
    others = a.shape[-1] - 1
    large = m.squeeze(-1) + torch.log((a - m).exp().sum(dim=-1) - others * (-m.squeeze(-1)).exp())
    return torch.where(m.squeeze(-1) > _LOGEXP_SWITCH, large, small)


def _check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 1:
        raise ConfigError(f"the LogExp exponent p must be a number >= 1 (the paper uses 1 or 2), got {p!r}")
    return float(p)


def _world_size() -> int:
    """Ranks in the default process group; 1 when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _AllReduceSum(torch.autograd.Function):
    """``all_reduce(SUM)`` with autograd: every rank gets the sum, and in backward each rank's
    input receives the sum over ranks of the gradients arriving at the output.

    That is the derivative of the sum of all ranks' losses, so under DDP (which then averages
    the parameter gradients over the W ranks) a loss that every rank computes identically from
    the summed tensor gets exactly the gradient of that one loss. Written out rather than taken
    from ``torch.distributed.nn.functional.all_reduce`` (the same maths), which is deprecated.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def _batch_logexp_all_ranks(a: Tensor, p: float) -> Tensor:
    """The whole-batch LogExp over every rank's ``a = |d|^p``: log(1 + sum_{ranks,b,i} expm1(a)) / (p N).

    N is the global batch size (the sum of the ranks' row counts, so unequal shards are fine). The
    value is the same on every rank and equals the single-process form on the concatenated batch.

    Both forms of ``_log1p_sum_expm1`` are reduced in one collective, the choice between them
    made by the global largest exponent M (itself an all-reduce of the detached local maxima):

    * ``log1p(sum expm1(min(a, switch)))`` for M <= _LOGEXP_SWITCH;
    * ``M + log(exp(-M) + sum (exp(a - M) - exp(-M)))`` for M > _LOGEXP_SWITCH, whose argument is
      >= 1 exactly (the term of the largest a is 1 - exp(-M)) and is clamped at 0.5, so float
      cancellation in the unused branch can never reach log(<= 0) and turn ``where``'s zero
      gradient into NaN.
    """
    flat = a.reshape(-1)
    m = flat.detach().amax() if flat.numel() else flat.new_zeros(())
    m = m.clone()
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    small = torch.expm1(flat.clamp_max(_LOGEXP_SWITCH)).sum()
    large = (flat - m).exp().sum() - flat.numel() * (-m).exp()
    rows = flat.new_tensor(float(a.shape[0]))
    total = _AllReduceSum.apply(torch.stack([small, large, rows]))
    small_form = torch.log1p(total[0])
    large_form = m + torch.log((total[1] + (-m).exp()).clamp_min(0.5))
    return torch.where(m > _LOGEXP_SWITCH, large_form, small_form) / (p * total[2].detach())


def logexp_loss(x: Tensor, y: Tensor, p: float = 1, reduction: str = "sample", gather: bool = True) -> Tensor:
    """The paper's LogExp feature-distance loss (Eq. 3), mean over samples.

    ``reduction="sample"`` (the paper, Eq. 3), per sample with d = x - y of length D:

        L = 1/(p D) * log(1 + sum_i (exp(|d_i|^p) - 1)),   then the mean over the N samples.

    Its gradient is Eq. 4,

        dL/dx_i = 1/(p D) * p |d_i|^(p-1) sign(d_i) exp(|d_i|^p) / (1 + sum_j (exp(|d_j|^p) - 1)),

    (divided further by N for the batch mean): a softmax-like weighting that concentrates the
    gradient on the coordinates with the largest differences.

    ``reduction="batch"`` is the released code's form (hurricanelx/LRFR ``src/metrics.py``,
    ``ExpDist``): a single log over all N*D coordinates, divided by p*B with B = N the batch size,

        L = 1/(p B) * log(1 + sum_{b,i} (exp(|d_bi|^p) - 1)),

    whose gradient scale (and value) therefore depends on the batch size. The released script
    computes it on the whole batch (``nn.DataParallel`` gathers the embeddings on one GPU). Under
    DDP each rank holds only its shard, and one log per shard is a different loss (its gradient
    ~W times the released one for W ranks), so with ``gather`` (the default) and an initialised
    process group of W > 1 ranks the sums inside the log and the row counts are all-reduced, with
    autograd through every rank's own part: each rank's value is the whole-batch loss, and after
    DDP's gradient averaging the gradient is the whole-batch gradient. Every rank must then call
    it (and backward) at the same step. ``gather=False`` keeps the per-rank form. The per-sample
    form needs no gathering: with equal shards (as the trainer's) DDP's average of the ranks' means
    is the global mean.

    Computed in float32 and overflow-free for any finite ``|d|^p`` (see ``_log1p_sum_expm1``).
    """
    p = _check_p(p)
    if reduction not in DISTANCE_REDUCTIONS:
        raise ConfigError(
            f"unknown LogExp reduction {reduction!r}; valid reductions: {', '.join(DISTANCE_REDUCTIONS)}"
        )
    d = _difference(x, y)
    with _no_autocast(d.device):
        # abs() for p = 1 gives the subgradient 0 at d = 0; pow for p > 1 has derivative 0 there.
        a = d.abs() if p == 1.0 else d.abs().pow(p)
        n, dim = a.shape
        if reduction == "sample":
            return _log1p_sum_expm1(a).mean() / (p * dim)
        if gather and _world_size() > 1:
            return _batch_logexp_all_ranks(a, p)
        return _log1p_sum_expm1(a.reshape(1, -1)).squeeze(0) / (p * n)


# The builders of the declared distance terms (engine.loss_registry): each takes exactly its declared
# options as keywords and returns the loss function, or None for no term.


@register_distance("none")
def _no_distance() -> None:
    return None  # the trainer then adds no distance term (and does not weight one by loss.lambda)


@register_distance("l1")
def _l1() -> DistanceLoss:
    return l1_loss


@register_distance("l2")
def _l2() -> DistanceLoss:
    return l2_loss


@register_distance("smoothl1")
def _smooth_l1(beta: float) -> DistanceLoss:
    return functools.partial(smooth_l1_loss, beta=beta)


@register_distance("logexp")
def _logexp(p: float, reduction: str) -> DistanceLoss:
    return functools.partial(logexp_loss, p=_check_p(p), reduction=reduction)


# Declared in engine.loss_registry; kept under this name for the callers of engine.losses.
DISTANCE_LOSSES: tuple[str, ...] = distance_names()
_DISTANCE_BUILDERS = distance_builders()  # every declared term has its builder above (KeyError otherwise)


def build_distance_loss(
    name: str, p: float = 1, reduction: str = "sample", beta: float = SMOOTH_L1_BETA
) -> DistanceLoss | None:
    """The HR/LR feature-distance term by name: ``"none"`` (returns ``None``), ``"l1"``, ``"l2"``,
    ``"smoothl1"`` or ``"logexp"``.

    ``p`` and ``reduction`` parametrise LogExp (Eq. 3 per sample, or the released code's
    whole-batch form, gathered over DDP ranks); ``beta`` is smooth L1's threshold. Each term is
    given only the options it declares (``distance_info(name).options``), but an unknown
    ``reduction`` or a ``beta <= 0`` is rejected for every name so a typo never passes silently.
    """
    if reduction not in DISTANCE_REDUCTIONS:
        raise ConfigError(
            f"unknown distance-loss reduction {reduction!r}; valid reductions: {', '.join(DISTANCE_REDUCTIONS)}"
        )
    beta = _check_beta(beta)
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in _DISTANCE_BUILDERS:
        raise ConfigError(f"unknown distance loss {name!r}; valid names: {', '.join(DISTANCE_LOSSES)}")
    given = {"p": p, "reduction": reduction, "beta": beta}
    return _DISTANCE_BUILDERS[key](**{word: given[word] for word in distance_info(key).keywords})
