"""SSIM in bounded chunks (issue 10, item 7): the same numbers as one pass over the batch, the standard
definition, and a working memory that does not grow with the number of images.

The reference is scikit-image's ``structural_similarity(im1, im2, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)`` (K1 = 0.01, K2 = 0.03), i.e. Wang et al. 2004. scikit-image
is not installed here, so ``reference_ssim`` transcribes its algorithm (skimage/metrics/
_structural_similarity.py) on top of ``scipy.ndimage.gaussian_filter``, the filter it calls; it is applied to
the BT.601 luma the engine measures SSIM on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from engine.augment import degrade
from engine.data.synthetic import render_face
from engine.evaluate.ssim import ssim, ssim_degraded

ROOT = Path(__file__).resolve().parents[1]


def faces(n: int, size: int = 32) -> torch.Tensor:
    """n synthetic faces, uint8 N x 3 x S x S: smooth regions and edges, unlike uniform noise."""
    return torch.stack([torch.from_numpy(render_face(0, k % 5, k, size)).permute(2, 0, 1) for k in range(n)])


def reference_ssim(im1: np.ndarray, im2: np.ndarray) -> float:
    """skimage.metrics.structural_similarity(im1, im2, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255) for 2-D float images, transcribed."""
    sigma, truncate = 1.5, 3.5  # truncate 3.5 gives the 11-tap window of Wang et al.
    win_size = 2 * int(truncate * sigma + 0.5) + 1
    im1, im2 = im1.astype(np.float64), im2.astype(np.float64)

    def filt(x):
        return gaussian_filter(x, sigma=sigma, truncate=truncate)

    ux, uy = filt(im1), filt(im2)
    uxx, uyy, uxy = filt(im1 * im1), filt(im2 * im2), filt(im1 * im2)
    cov_norm = 1.0  # use_sample_covariance=False: population covariance, as Wang et al.
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2  # no padding_mode: the border the filter padded is cropped
    return float(s[pad:-pad, pad:-pad].mean(dtype=np.float64))


def luma(images: torch.Tensor) -> np.ndarray:
    """ITU-R BT.601 luma, float64 and unrounded: N x H x W."""
    x = images.numpy().astype(np.float64)
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def conv2d_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The pre-chunking implementation (one 11 x 11 conv2d over the whole batch), kept as the oracle for
    "the same numbers"."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
    x, y = (a.double() * w).sum(1, keepdim=True), (b.double() * w).sum(1, keepdim=True)
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).view(1, 1, 11, 11)
    mu_x, mu_y = F.conv2d(x, win), F.conv2d(y, win)
    var_x, var_y = F.conv2d(x * x, win) - mu_x**2, F.conv2d(y * y, win) - mu_y**2
    cov = F.conv2d(x * y, win) - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    hr = faces(10)
    noise = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    hr = torch.cat([hr, noise])  # 13 images: chunk sizes below do not divide it
    return hr, degrade(hr, 8)


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 12, 13, 64])
def test_chunked_equals_one_pass(batch, chunk_size):
    hr, lr = batch
    one_pass = ssim(hr, lr, chunk_size=len(hr))
    assert one_pass.shape == (len(hr),) and one_pass.dtype == torch.float64
    torch.testing.assert_close(ssim(hr, lr, chunk_size=chunk_size), one_pass, rtol=0, atol=1e-12)
    # ... and both equal the former whole-batch conv2d computation.
    torch.testing.assert_close(one_pass, conv2d_ssim(hr, lr), rtol=0, atol=1e-12)


def test_degrading_in_chunks_changes_nothing(batch):
    hr, lr = batch
    torch.testing.assert_close(ssim_degraded(hr, 8, chunk_size=4), ssim(hr, lr), rtol=0, atol=1e-12)


def test_matches_the_standard_ssim(batch):
    hr, lr = batch
    y_hr, y_lr = luma(hr), luma(lr)
    expected = [reference_ssim(p, q) for p, q in zip(y_hr, y_lr, strict=True)]
    got = ssim(hr, lr, chunk_size=4).tolist()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    assert 0.0 < min(got) and max(got) < 1.0
    # Identical images: exactly the maximum; float input on the 0..255 scale reads like uint8.
    np.testing.assert_allclose(ssim(hr, hr).numpy(), 1.0, rtol=0, atol=1e-12)
    torch.testing.assert_close(ssim(hr.float(), lr.float()), ssim(hr, lr), rtol=0, atol=1e-12)


def test_rejects_what_it_cannot_measure():
    x = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="one shape"):
        ssim(x, x[:1])
    with pytest.raises(ValueError, match="at least 11"):
        ssim(x[..., :10, :10], x[..., :10, :10])
    with pytest.raises(ValueError, match="chunk_size"):
        ssim(x, x, chunk_size=0)


# The lowres_lfw / Figure 3a SSIM step on 3,000 LFW-sized pairs, in a fresh process: peak RSS over what the
# process held once the images were built. Address space is capped at +1 GiB so an implementation that is
# not bounded fails fast here instead of taking the machine's memory (the former code asked for ~30 GB).
MEMORY_PROBE = r"""
import json, re, resource, sys
import torch
from engine.analysis.resolution import ssim_per_resolution
n, size = int(sys.argv[1]), int(sys.argv[2])
images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
vm = int(re.search(r"VmSize:\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.RLIM_INFINITY))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
quality = ssim_per_resolution(images, [7, 112])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"extra_mib": (after - before) / 1024, "ssim7": quality[7], "ssim112": quality[112]}))
"""
PAIRS, SIZE = 3000, 112
BOUND_MIB = 256  # measured ~100-180 MiB with chunks of 64; the former code needed ~10 MiB per image


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmSize from /proc")
def test_memory_does_not_grow_with_the_number_of_pairs():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(PAIRS), str(SIZE)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["extra_mib"] < BOUND_MIB, out
    assert out["ssim112"] == 1.0 and 0.0 < out["ssim7"] < 0.2, out
