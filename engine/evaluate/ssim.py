"""SSIM (Wang et al. 2004) on the luma channel, with the usual 11x11 Gaussian window, sigma 1.5.

Used to report how much of the HR image survives each synthesised resolution (Figure 3a).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def _luma(images: Tensor) -> Tensor:
    """uint8/float N x 3 x H x W (0..255) -> float64 N x 1 x H x W, ITU-R BT.601 weights."""
    x = images.double()
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _window(size: int = 11, sigma: float = 1.5, device=None) -> Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM per image of two batches of the same shape (values 0..255); valid-region windows."""
    x, y = _luma(a), _luma(b)
    w = _window(device=x.device)
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    var_x = F.conv2d(x * x, w) - mu_x**2
    var_y = F.conv2d(y * y, w) - mu_y**2
    cov = F.conv2d(x * y, w) - mu_x * mu_y
    num = (2 * mu_x * mu_y + _C1) * (2 * cov + _C2)
    den = (mu_x**2 + mu_y**2 + _C1) * (var_x + var_y + _C2)
    return (num / den).mean(dim=(1, 2, 3))
