"""Resolution degradations for low-resolution face recognition (MAug, PAug, single-resolution "Aug").

The paper makes the LR copy of a face by bicubic down-sampling to r x r and bicubic up-sampling back to the
input size, i.e. PIL's ``img.resize((r, r), BICUBIC).resize((W, H), BICUBIC)``. This module offers:

- ``degrade_pil``: that reference chain on one PIL image;
- ``degrade``: the same chain on a batch tensor, with a per-sample ``r``, on any device. It reproduces PIL's
  arithmetic (Keys cubic with a = -0.5, antialiased when shrinking, horizontal pass before the vertical
  one, every pass rounded half-up and clamped to 0..255), so a model sees the same pixels whichever
  path made them;
- ``ResolutionSampler`` and ``SAMPLER_PRESETS``: the per-sample draw of r;
- ``random_hflip`` and ``make_pair``: the training step's HR / LR views.

All randomness comes from an explicit CPU ``torch.Generator``, so a run is reproducible given its seed
whatever device the images live on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from types import MappingProxyType
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

# The duplicate-resolution rule lives with the config section it constrains (torch-free), shared here.
from engine.config import check_distinct_resolutions
from engine.errors import ConfigError

__all__ = [
    "SAMPLER_PRESETS",
    "ResolutionSampler",
    "check_distinct_resolutions",
    "degrade",
    "degrade_pil",
    "make_pair",
    "random_hflip",
    "sampler_preset",
]

Size2 = tuple[int, int]


# --------------------------------------------------------------------------------------------------------
# The PIL reference
# --------------------------------------------------------------------------------------------------------


def degrade_pil(img: Image.Image, r: int) -> Image.Image:
    """The reference LR copy: bicubic down to r x r, then bicubic back up to the image's own size.

    ``r >= max(width, height)`` means "full resolution" and returns an unchanged copy.
    """
    _check_r_value(r)
    if r >= max(img.size):
        return img.copy()
    return img.resize((r, r), Image.BICUBIC).resize(img.size, Image.BICUBIC)


# --------------------------------------------------------------------------------------------------------
# Batched degradation
# --------------------------------------------------------------------------------------------------------


def degrade(images: Tensor, r: int | Tensor, size: int | Size2 | None = None) -> Tensor:
    """Degrade a batch to r x r px and bring it back to H x W (or ``size``), matching ``degrade_pil``.

    ``images``: N x C x H x W, uint8 (0..255) or floating point (values on the 0..255 scale), any device.
    ``r``: one resolution for the whole batch, or an integer tensor of N per-sample resolutions (any
    device). ``r >= max(H, W)`` means "full resolution": that sample is not down-sampled (it is returned
    unchanged, or only resized once when ``size`` differs from H x W).
    ``size``: output side (int) or (height, width); default the input's H x W.

    The result has the input's dtype and device. Floating-point input stays floating point but follows
    the uint8 rounding semantics: every resize pass is rounded half-up to an integer and clamped to
    0..255, exactly as PIL does between its passes, so ``degrade(x.float(), r) == degrade(x, r).float()``
    up to the small differences between the two code paths (see below).

    Paths: uint8 on CPU uses torch's native uint8 antialiased-bicubic kernel (fast; measured on
    112 px faces at r = 7..56: mean |diff| to PIL 0.0004-0.009 grey levels, max 2, 3 on about one pixel
    in a million at r = 7). Everything else (CUDA, which has no uint8 bicubic kernel, and float input) runs
    ``torch.nn.functional.interpolate`` in float, one axis at a time with PIL's rounding after each pass
    (mean |diff| below 0.001, mostly bit-exact; max 2, 3 on a few pixels in ten million at r = 7).
    """
    path: Literal["uint8_cpu", "float"] = (
        "uint8_cpu" if images.dtype == torch.uint8 and images.device.type == "cpu" else "float"
    )
    return _degrade(images, r, size, path=path)


def _degrade(images: Tensor, r: int | Tensor, size: int | Size2 | None,
             *, path: Literal["uint8_cpu", "float"]) -> Tensor:
    """``degrade`` with an explicit kernel path; tests use it to run the CUDA-style float path on the CPU."""
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    n, c, h, w = images.shape
    out_hw = _output_size(size, (h, w))
    if path == "uint8_cpu" and (images.dtype != torch.uint8 or images.device.type != "cpu"):
        raise ValueError("the uint8_cpu path needs a uint8 tensor on the CPU")

    per_sample = _resolutions_per_sample(r, n)
    if n == 0:
        return images.new_empty((0, c, *out_hw))
    full = max(h, w)
    # None stands for "no down-sample"; every r >= max(H, W) collapses to it so they form one group.
    groups: dict[int | None, list[int]] = {}
    for i, v in enumerate(per_sample):
        groups.setdefault(None if v >= full else v, []).append(i)
    if list(groups) == [None] and out_hw == (h, w):
        return images.clone()  # full resolution throughout: leave as is (a copy, safe to modify in place)
    # One kernel call per distinct r (a handful per batch) rather than one per image.
    if path == "uint8_cpu":
        return _degrade_groups_uint8_cpu(images, groups, out_hw)
    return _degrade_groups_float(images, groups, out_hw)


def _degrade_groups_float(images: Tensor, groups: dict[int | None, list[int]], out_hw: Size2) -> Tensor:
    """Device-agnostic grouping: gather each group, resize it, concatenate, restore batch order."""
    if len(groups) == 1:
        (key,) = groups
        return _chain_float(images, key, out_hw)
    order: list[int] = []
    parts: list[Tensor] = []
    for key, rows in groups.items():
        order.extend(rows)
        parts.append(_chain_float(images[torch.tensor(rows, device=images.device)], key, out_hw))
    inverse = torch.argsort(torch.tensor(order, device=images.device))
    return torch.cat(parts)[inverse]


def _degrade_groups_uint8_cpu(images: Tensor, groups: dict[int | None, list[int]], out_hw: Size2) -> Tensor:
    """uint8 on the CPU, arranged around two costs measured on a 2-core machine (torch 2.14):

    - torchvision's uint8 kernel is vectorised over interleaved channels; given N x C x H x W memory it
      repacks internally, which costs more than the resize. So the batch is packed channels-last once,
      already sorted by group so that every group is a contiguous slice (no per-group gather);
    - full-size temporaries are often fresh memory the allocator has to fault in page by page: a first
      version with five of them spent two thirds of its time in page faults. Now there are three (packed
      input, up-sampled groups, output); the down-sampled r x r images are tiny.
    """
    n, c, h, w = images.shape
    order = [i for rows in groups.values() for i in rows]
    identity = order == list(range(n))
    idx = torch.tensor(order)
    packed = torch.empty_like(images, memory_format=torch.channels_last)
    for ch in range(c):
        # One channel plane at a time: ~1.7x faster for uint8 than torch's generic permuted copy.
        packed[:, ch] = images[:, ch] if identity else images[:, ch].index_select(0, idx)
    if len(groups) == 1:
        (key,) = groups
        return _chain_uint8_cpu(packed, key, out_hw).contiguous()
    out = images.new_empty((n, c, *out_hw))
    start = 0
    for key, rows in groups.items():
        part = _chain_uint8_cpu(packed[start : start + len(rows)], key, out_hw)
        start += len(rows)
        # Scatter back to batch order and to N x C x H x W in one copy per image: a Python loop, but
        # cheaper than index_copy_ (element-wise on the CPU) followed by a separate format conversion.
        for j, i in enumerate(rows):
            out[i].copy_(part[j])
    return out


def _chain_uint8_cpu(images: Tensor, r: int | None, out_hw: Size2) -> Tensor:
    """uint8 CPU: torch's native antialiased bicubic on uint8 (a = -0.5, PIL-style fixed point, uint8 between
    passes; the kernel torchvision's ``resize`` calls, called directly so that training does not import
    torchvision, 165 MB resident). Fastest on channels-last memory, which it keeps. ``r=None``: no
    down-sample."""
    x = images
    if r is None and tuple(x.shape[-2:]) == out_hw:
        return x.clone()
    if r is not None:
        x = F.interpolate(x, size=(r, r), mode="bicubic", antialias=True)
    return F.interpolate(x, size=tuple(out_hw), mode="bicubic", antialias=True)


def _chain_float(images: Tensor, r: int | None, out_hw: Size2) -> Tensor:
    """Float path (what CUDA runs): interpolate in float with PIL's between-pass rounding. ``r=None``: no
    down-sample.

    ``interpolate(mode="bicubic", antialias=True)`` uses the a = -0.5 Keys kernel with PIL's support
    scaling (without antialias it would use a = -0.75), for up-sampling too. PIL resizes horizontally,
    rounds and clamps to uint8, then resizes vertically and rounds again; doing the two axes in one float
    call instead leaves a mean error of about 0.27 grey levels, doing them in PIL's order with its
    rounding brings it below 0.001.
    """
    out_dtype = images.dtype
    work_dtype = torch.float64 if out_dtype == torch.float64 else torch.float32
    x = images.to(work_dtype)
    if r is not None:
        x = _resize_like_pil(x, (r, r))
    x = _resize_like_pil(x, out_hw)
    return x.to(out_dtype)


def _resize_like_pil(x: Tensor, out_hw: Size2) -> Tensor:
    h, w = out_hw
    if x.shape[-1] != w:
        x = _round_clamp_(F.interpolate(x, size=(x.shape[-2], w), mode="bicubic", antialias=True,
                                        align_corners=False))
    if x.shape[-2] != h:
        x = _round_clamp_(F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False))
    return x


def _round_clamp_(x: Tensor) -> Tensor:
    # PIL rounds half up ((acc + 2^21) >> 22); torch.round rounds half to even, which differs on the
    # exact ties that 2x scale factors produce, so round with floor(x + 0.5).
    return x.add_(0.5).floor_().clamp_(0.0, 255.0)


def _output_size(size: int | Size2 | None, in_hw: Size2) -> Size2:
    if size is None:
        return in_hw
    hw = (size, size) if isinstance(size, Integral) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, Integral) and not isinstance(v, bool) and v >= 1 for v in hw):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return int(hw[0]), int(hw[1])


def _check_r_value(r: object) -> None:
    if isinstance(r, bool) or not isinstance(r, Integral) or r < 1:
        raise ValueError(f"resolution r must be a positive int, got {r!r}")


def _resolutions_per_sample(r: int | Tensor, n: int) -> list[int]:
    if isinstance(r, Tensor):
        if r.dtype.is_floating_point or r.dtype.is_complex or r.dtype == torch.bool:
            raise TypeError(f"per-sample r must be an integer tensor, got {r.dtype}")
        if r.ndim == 0:
            values = [int(r.item())] * n
        elif r.shape != (n,):
            raise ValueError(f"per-sample r must have shape ({n},), got {tuple(r.shape)}")
        else:
            values = r.tolist()  # a few hundred ints; one device sync on CUDA
        for v in set(values):
            _check_r_value(v)
        return values
    _check_r_value(r)
    return [int(r)] * n


# --------------------------------------------------------------------------------------------------------
# Resolution sampling
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolutionSampler:
    """Draws the LR resolution r of each sample from ``resolutions`` with probabilities ``weights / sum``.

    Empty ``resolutions`` (and ``weights``) is valid and means "no LR branch" (the HR-only baseline);
    ``sample`` then refuses to draw. Lists are accepted and stored as tuples.
    """

    resolutions: tuple[int, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        resolutions = tuple(self.resolutions)
        weights = tuple(self.weights)
        if len(resolutions) != len(weights):
            raise ConfigError(f"augment: {len(resolutions)} resolutions but {len(weights)} weights; "
                              "give one weight per resolution")
        for v in resolutions:
            if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
                raise ConfigError(f"augment: resolutions must be positive integers (px), got {v!r}")
        check_distinct_resolutions(resolutions)
        for wgt in weights:
            if isinstance(wgt, bool) or not isinstance(wgt, Real) or not math.isfinite(wgt) or wgt < 0:
                raise ConfigError(f"augment: weights must be finite numbers >= 0, got {wgt!r}")
        if resolutions and sum(weights) <= 0:
            raise ConfigError("augment: weights must not all be zero")
        # Frozen dataclass: normalise through object.__setattr__ (lists from TOML become tuples).
        object.__setattr__(self, "resolutions", tuple(int(v) for v in resolutions))
        object.__setattr__(self, "weights", tuple(float(wgt) for wgt in weights))

    @property
    def has_lr_branch(self) -> bool:
        """False for the empty sampler (the "none" preset): training uses the HR branch only."""
        return bool(self.resolutions)

    @property
    def probabilities(self) -> tuple[float, ...]:
        total = sum(self.weights)
        return tuple(wgt / total for wgt in self.weights)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n resolutions drawn independently with replacement; an int64 CPU tensor of shape (n,)."""
        if not self.has_lr_branch:
            raise ValueError("this ResolutionSampler is empty (no LR branch): there is nothing to sample")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        _check_cpu_generator(generator)
        if n == 0:
            return torch.empty(0, dtype=torch.long)
        probs = torch.tensor(self.weights, dtype=torch.float64)
        idx = torch.multinomial(probs, n, replacement=True, generator=generator)
        return torch.tensor(self.resolutions, dtype=torch.long)[idx]


# Which source each preset follows is part of its meaning (ARCHITECTURE.md: paper and code differ).
SAMPLER_PRESETS: Mapping[str, ResolutionSampler] = MappingProxyType({
    # The paper's MAug: 7 / 14 / 20 px at 1:1:2 (extremely hard / hard / semi-hard).
    "maug": ResolutionSampler((7, 14, 20), (1.0, 1.0, 2.0)),
    # The released training script: 7 px 50 %, 14 px never, 20 px 50 %.
    "maug_code": ResolutionSampler((7, 14, 20), (0.5, 0.0, 0.5)),
    # Earlier work's progressive set (ST-M, "PAug"): 7 / 14 / 28 / 56 px, equally likely.
    "paug": ResolutionSampler((7, 14, 28, 56), (1.0, 1.0, 1.0, 1.0)),
    # The single-resolution ablation ("Aug"): always 14 px.
    "aug14": ResolutionSampler((14,), (1.0,)),
    # The HR-only baseline: no LR branch.
    "none": ResolutionSampler((), ()),
})


def sampler_preset(name: str) -> ResolutionSampler:
    """The preset sampler called ``name``; a ``ConfigError`` naming the known presets otherwise."""
    try:
        return SAMPLER_PRESETS[name]
    except KeyError:
        known = ", ".join(SAMPLER_PRESETS)
        raise ConfigError(f"unknown augmentation preset {name!r}; known: {known}") from None


# --------------------------------------------------------------------------------------------------------
# Flips and the training pair
# --------------------------------------------------------------------------------------------------------


def random_hflip(images: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    """Flip each sample of an N x C x H x W batch left-right with probability ``p``, independently.

    The mask is drawn on the CPU from ``generator`` (so results do not depend on the device) and moved
    to the images' device. Always returns a new tensor.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    _check_cpu_generator(generator)
    mask = torch.rand(images.shape[0], generator=generator) < p
    mask = mask.to(images.device).view(-1, 1, 1, 1)
    return torch.where(mask, images.flip(-1), images)


def make_pair(hr: Tensor, sampler: ResolutionSampler,
              generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """The training step's augmentation: ``(hr_view, lr_view, r)`` for a uint8 N x 3 x H x W batch.

    - ``hr_view``: ``hr`` with a random horizontal flip per sample;
    - ``lr_view``: ``hr`` with its own, independent random flip, then ``degrade``-d to the per-sample r;
    - ``r``: the drawn resolutions, an int64 CPU tensor of shape (N,).

    The HR and LR copies are flipped independently, as in the released code (so about half the pairs
    show mirror images of each other). Draw order is HR flip mask, LR flip mask, resolutions, all from
    ``generator``: the same generator state gives identical outputs on any device. (float input is also
    accepted, with ``degrade``'s float semantics.)
    """
    if not sampler.has_lr_branch:
        raise ValueError("make_pair needs a sampler with resolutions; the 'none' preset has no LR branch "
                         "(flip the HR batch with random_hflip instead)")
    hr_view = random_hflip(hr, generator)
    lr_src = random_hflip(hr, generator)
    r = sampler.sample(hr.shape[0], generator)
    return hr_view, degrade(lr_src, r), r


def _check_cpu_generator(generator: torch.Generator) -> None:
    # Draws happen on the CPU so that a seed gives the same augmentation on every device.
    if generator.device.type != "cpu":
        raise ValueError(f"augmentation draws need a CPU torch.Generator, got one on {generator.device}")
