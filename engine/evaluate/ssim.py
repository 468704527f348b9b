"""SSIM (Wang et al. 2004) on the luma channel, with the usual 11x11 Gaussian window, sigma 1.5.

Used to report how much of the HR image survives each synthesised resolution (Figure 3a).

The variant: the luma Y' = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601, kept in float64, not rounded)
of images on the 0..255 scale; a normalised 11-tap Gaussian (sigma 1.5) applied separably; means,
variances and the covariance weighted by it (population covariance, no N/(N-1)); C1 = (0.01 * 255)^2,
C2 = (0.03 * 255)^2; the SSIM map over the valid region only (no padding: the 5-px border is left out)
and its mean per image. That is ``skimage.metrics.structural_similarity(y1, y2, gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=255)`` on the luma images.

Memory: images are processed ``chunk_size`` at a time and the window is applied as two 1-D passes of
shifted sums (no im2col buffer), so the working memory is bounded by the chunk (about 100 MB for 64
images of 112 px, measured as peak RSS) whatever the number of images. The previous single ``conv2d``
over the whole batch unfolded 121 values per output pixel: about 10 MB per 112 px image, 30 GB for
3,000 LFW pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine.augment import degrade

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
WINDOW = 11
SIGMA = 1.5
# Images per chunk: about 100 MB of working memory at 112 px (larger chunks were not faster on a CPU).
CHUNK_SIZE = 64


def _luma(images: Tensor) -> Tensor:
    """uint8/float N x 3 x H x W (0..255) -> float64 N x 1 x H x W, ITU-R BT.601 weights."""
    x = images.double()
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _gaussian(size: int = WINDOW, sigma: float = SIGMA) -> list[float]:
    """The normalised 1-D Gaussian taps; the 2-D window is their outer product."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).tolist()


def _filter_valid(x: Tensor, taps: list[float]) -> Tensor:
    """Separable 'valid' correlation of ... x H x W with the window ``taps`` (x) ``taps``."""
    k = len(taps)
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    rows = x[..., 0:h, :] * taps[0]
    for i in range(1, k):
        rows.add_(x[..., i:i + h, :], alpha=taps[i])
    out = rows[..., 0:w] * taps[0]
    for i in range(1, k):
        out.add_(rows[..., i:i + w], alpha=taps[i])
    return out


def _ssim_chunk(a: Tensor, b: Tensor, taps: list[float]) -> Tensor:
    x, y = _luma(a), _luma(b)
    mu_x, mu_y = _filter_valid(x, taps), _filter_valid(y, taps)
    var_x = _filter_valid(x * x, taps) - mu_x**2
    var_y = _filter_valid(y * y, taps) - mu_y**2
    cov = _filter_valid(x * y, taps) - mu_x * mu_y
    num = (2 * mu_x * mu_y + _C1) * (2 * cov + _C2)
    den = (mu_x**2 + mu_y**2 + _C1) * (var_x + var_y + _C2)
    return (num / den).mean(dim=(1, 2, 3))


def _check(a: Tensor, b: Tensor, chunk_size: int) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two N x C x H x W batches of one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if min(a.shape[-2:]) < WINDOW:
        raise ValueError(f"ssim needs images of at least {WINDOW} x {WINDOW} px, got {tuple(a.shape[-2:])}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def ssim(a: Tensor, b: Tensor, chunk_size: int = CHUNK_SIZE) -> Tensor:
    """Mean SSIM per image (float64, N) of two batches of the same shape (values 0..255); valid-region
    windows. Computed ``chunk_size`` images at a time: the result does not depend on it."""
    _check(a, b, chunk_size)
    taps = _gaussian()
    out = torch.empty(a.shape[0], dtype=torch.float64, device=a.device)
    for start in range(0, a.shape[0], chunk_size):
        stop = start + chunk_size
        out[start:stop] = _ssim_chunk(a[start:stop], b[start:stop], taps)
    return out


def ssim_degraded(images: Tensor, r: int, chunk_size: int = CHUNK_SIZE) -> Tensor:
    """``ssim(images, degrade(images, r))``, degrading one chunk at a time (no degraded copy of the
    whole batch is held)."""
    _check(images, images, chunk_size)
    out = torch.empty(images.shape[0], dtype=torch.float64, device=images.device)
    for start in range(0, images.shape[0], chunk_size):
        part = images[start:start + chunk_size]
        out[start:start + chunk_size] = ssim(part, degrade(part, r), chunk_size)
    return out
