"""Training losses: margin classification heads and HR/LR feature-distance losses.

The paper's objective (see ``/work/shared/DESIGN.md``) is

    L_all = lambda * L_dist(f_hr/|f_hr|, f_lr/|f_lr|) + 1/2 CosFace(f_hr) + 1/2 CosFace(f_lr)

This module holds both halves:

* classification heads (``CosFace``, ``ArcFace``, ``SoftmaxHead``, built by name with
  ``build_head``) that own the class-centre matrix ``W`` and return a mean cross-entropy;
* feature-distance losses (``l1_loss``, ``l2_loss``, ``smooth_l1_loss``, ``logexp_loss``, built
  by name with ``build_distance_loss``) applied to the normalised HR and LR embeddings.

Everything is computed in float32, also under ``torch.autocast``: the margins and the LogExp
exponentials are exactly where half precision loses the signal or overflows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.errors import ConfigError

__all__ = [
    "ArcFace",
    "CosFace",
    "DISTANCE_LOSSES",
    "DISTANCE_REDUCTIONS",
    "DistanceLoss",
    "HEAD_KINDS",
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


class CosFace(_MarginHead):
    """CosFace / large-margin cosine loss (Wang et al. 2018), the paper's classification loss.

    L = CE(s * (cos(theta_y) - m), s * cos(theta_j != y)); the paper uses s = 48, m = 0.4.
    """

    def __init__(self, embedding_size: int, num_classes: int, s: float = 48.0, m: float = 0.4) -> None:
        super().__init__(embedding_size, num_classes, s, m)

    def _target_logit(self, cos_target: Tensor) -> Tensor:
        return cos_target - self.m


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


HEAD_KINDS: tuple[str, ...] = ("cosface", "arcface", "softmax")


def build_head(
    kind: str,
    embedding_size: int,
    num_classes: int,
    s: float | None = None,
    m: float | None = None,
) -> nn.Module:
    """Build a classification head by name (``"cosface"``, ``"arcface"`` or ``"softmax"``).

    ``s`` / ``m`` of ``None`` keep the head's default (CosFace 48 / 0.4, ArcFace 64 / 0.5).
    The softmax head has neither a scale nor a margin and ignores them.
    """
    key = kind.strip().lower() if isinstance(kind, str) else kind
    if key == "softmax":
        return SoftmaxHead(embedding_size, num_classes)
    if key in ("cosface", "arcface"):
        cls = CosFace if key == "cosface" else ArcFace
        kwargs: dict[str, float] = {}
        if s is not None:
            kwargs["s"] = float(s)
        if m is not None:
            kwargs["m"] = float(m)
        return cls(embedding_size, num_classes, **kwargs)
    raise ConfigError(f"unknown classification head {kind!r}; valid kinds: {', '.join(HEAD_KINDS)}")


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


def smooth_l1_loss(x: Tensor, y: Tensor, beta: float = 1.0) -> Tensor:
    """``torch.nn.functional.smooth_l1_loss`` (Huber-like, threshold ``beta``), mean over all elements."""
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


DISTANCE_REDUCTIONS: tuple[str, ...] = ("sample", "batch")


def logexp_loss(x: Tensor, y: Tensor, p: float = 1, reduction: str = "sample") -> Tensor:
    """The paper's LogExp feature-distance loss (Eq. 3), mean over samples.

    ``reduction="sample"`` (the paper, Eq. 3), per sample with d = x - y of length D:

        L = 1/(p D) * log(1 + sum_i (exp(|d_i|^p) - 1)),   then the mean over the N samples.

    Its gradient is Eq. 4,

        dL/dx_i = 1/(p D) * p |d_i|^(p-1) sign(d_i) exp(|d_i|^p) / (1 + sum_j (exp(|d_j|^p) - 1)),

    (divided further by N for the batch mean): a softmax-like weighting that concentrates the
    gradient on the coordinates with the largest differences.

    ``reduction="batch"`` is the released code's form: a single log over all N*D coordinates,
    divided by p*B with B = N the batch size,

        L = 1/(p B) * log(1 + sum_{b,i} (exp(|d_bi|^p) - 1)),

    whose gradient scale (and value) therefore depends on the batch size.

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
        return _log1p_sum_expm1(a.reshape(1, -1)).squeeze(0) / (p * n)


DISTANCE_LOSSES: tuple[str, ...] = ("none", "l1", "l2", "smoothl1", "logexp")


def build_distance_loss(name: str, p: float = 1, reduction: str = "sample") -> DistanceLoss | None:
    """The HR/LR feature-distance term by name: ``"none"`` (returns ``None``), ``"l1"``, ``"l2"``,
    ``"smoothl1"`` or ``"logexp"``.

    ``p`` and ``reduction`` parametrise LogExp (Eq. 3 per sample, or the released code's
    whole-batch form); the other losses have no such parameters and ignore them, but an
    unknown ``reduction`` is rejected for every name so a typo never passes silently.
    """
    if reduction not in DISTANCE_REDUCTIONS:
        raise ConfigError(
            f"unknown distance-loss reduction {reduction!r}; valid reductions: {', '.join(DISTANCE_REDUCTIONS)}"
        )
    key = name.strip().lower() if isinstance(name, str) else name
    if key == "none":
        return None
    if key == "l1":
        return l1_loss
    if key == "l2":
        return l2_loss
    if key == "smoothl1":
        return smooth_l1_loss
    if key == "logexp":
        return functools.partial(logexp_loss, p=_check_p(p), reduction=reduction)
    raise ConfigError(f"unknown distance loss {name!r}; valid names: {', '.join(DISTANCE_LOSSES)}")
