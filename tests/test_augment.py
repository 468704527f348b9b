"""engine.augment: batched degradation vs the PIL reference chain, resolution sampling, flips, pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from engine.augment import (
    SAMPLER_PRESETS,
    ResolutionSampler,
    _degrade,
    degrade,
    degrade_pil,
    make_pair,
    random_hflip,
    sampler_preset,
)
from engine.errors import ConfigError

RESOLUTIONS = (7, 14, 20, 28, 56)


def _face_like(rng: np.random.Generator, size: int = 112, mode: str = "RGB") -> Image.Image:
    """A smooth-plus-textured test image: blurred colour noise (skin-like shading), hard edges and shapes
    (eyes, mouth, hair line), then fine grain. Resampling errors show up on both kinds of content."""
    channels = 3 if mode == "RGB" else 1
    noise = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
    base = Image.fromarray(noise if channels == 3 else noise[..., 0]).filter(ImageFilter.GaussianBlur(3))
    arr = np.asarray(base).astype(np.float32)
    arr = (arr - arr.mean()) * 5 + rng.uniform(90, 170)  # stretch the contrast of the blurred noise
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode)
    draw = ImageDraw.Draw(img)
    fill = lambda: tuple(int(v) for v in rng.integers(0, 256, channels))  # noqa: E731
    draw.rectangle([0, 0, size, int(size * rng.uniform(0.1, 0.3))], fill=fill())
    for cx in (0.33, 0.67):
        x, y = int(size * cx), int(size * 0.45)
        draw.ellipse([x - 8, y - 5, x + 8, y + 5], fill=fill())
    draw.line([int(size * 0.3), int(size * 0.75), int(size * 0.7), int(size * 0.78)], fill=fill(), width=3)
    grain = rng.normal(0, 8, np.asarray(img).shape)
    return Image.fromarray(np.clip(np.asarray(img) + grain, 0, 255).astype(np.uint8), mode)


def _to_tensor(imgs: list[Image.Image]) -> torch.Tensor:
    arrs = [np.asarray(im) for im in imgs]
    arrs = [a[..., None] if a.ndim == 2 else a for a in arrs]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def faces() -> tuple[list[Image.Image], torch.Tensor]:
    rng = np.random.default_rng(1234)
    imgs = [_face_like(rng) for _ in range(6)]
    return imgs, _to_tensor(imgs)


def _pil_reference(imgs: list[Image.Image], r: int) -> torch.Tensor:
    return _to_tensor([degrade_pil(im, r) for im in imgs])


def _diff(a: torch.Tensor, b: torch.Tensor) -> tuple[int, float]:
    d = (a.to(torch.int32) - b.to(torch.int32)).abs()
    return int(d.max()), float(d.float().mean())


# ---------------------------------------------------------------------------------------------------------
# degrade vs PIL
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", RESOLUTIONS)
def test_uint8_cpu_path_matches_pil(faces, r):
    imgs, batch = faces
    out = degrade(batch, r)
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    max_d, mean_d = _diff(out, _pil_reference(imgs, r))
    assert max_d <= 2, (r, max_d)
    assert mean_d < 0.05, (r, mean_d)


@pytest.mark.parametrize("r", RESOLUTIONS)
def test_float_path_matches_pil(faces, r):
    """The path CUDA takes (float interpolate with PIL's between-pass rounding), run on the CPU."""
    imgs, batch = faces
    ref = _pil_reference(imgs, r)
    out_f = _degrade(batch.float(), r, None, path="float")
    assert out_f.dtype == torch.float32
    assert torch.equal(out_f, out_f.round()) and out_f.min() >= 0 and out_f.max() <= 255
    max_d, mean_d = _diff(out_f, ref)
    assert max_d <= 2, (r, max_d)
    assert mean_d < 0.1, (r, mean_d)
    # uint8 input on the float path (what uint8 on CUDA does) gives the same pixels back as uint8.
    out_u = _degrade(batch, r, None, path="float")
    assert out_u.dtype == torch.uint8
    assert torch.equal(out_u, out_f.to(torch.uint8))


def test_float_input_keeps_float_dtype(faces):
    _, batch = faces
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        out = degrade(batch.to(dtype), 14)
        assert out.dtype == dtype and out.shape == batch.shape
    out = degrade(batch.float(), 14)
    assert _diff(out, degrade(batch, 14))[0] <= 2


def test_per_sample_r_equals_per_image_calls(faces):
    _, batch = faces
    r = torch.tensor([7, 14, 20, 112, 7, 56])
    for path in ("uint8_cpu", "float"):
        out = _degrade(batch, r, None, path=path)
        for i, ri in enumerate(r.tolist()):
            assert torch.equal(out[i], _degrade(batch[i : i + 1], ri, None, path=path)[0]), (path, i)
    assert torch.equal(degrade(batch, r), _degrade(batch, r, None, path="uint8_cpu"))


def test_full_resolution_is_left_unchanged(faces):
    _, batch = faces
    for r in (112, 113, 1000):
        out = degrade(batch, r)
        assert torch.equal(out, batch) and out.data_ptr() != batch.data_ptr()
    assert torch.equal(degrade(batch, torch.full((len(batch),), 112)), batch)
    assert torch.equal(degrade(batch.float(), 200), batch.float())
    # Mixed: the r >= H samples come back untouched, the others are degraded.
    out = degrade(batch, torch.tensor([112, 7, 112, 14, 500, 20]))
    assert torch.equal(out[[0, 2, 4]], batch[[0, 2, 4]])
    assert not torch.equal(out[1], batch[1])


def test_output_size(faces):
    imgs, batch = faces
    out = degrade(batch, 14, size=56)
    assert out.shape == (len(batch), 3, 56, 56) and out.dtype == torch.uint8
    ref = _to_tensor([im.resize((14, 14), Image.BICUBIC).resize((56, 56), Image.BICUBIC) for im in imgs])
    # torchvision's uint8 kernel rounds its fixed-point weights a little differently from PIL's; on a 4x
    # up-sample that reaches 3 grey levels on a handful of pixels (measured: 163 of 56k, mean 0.003).
    max_d, mean_d = _diff(out, ref)
    assert max_d <= 3 and mean_d < 0.05
    assert _diff(_degrade(batch, 14, 56, path="float"), ref)[0] <= 2
    assert degrade(batch, torch.tensor([7, 14, 20, 7, 14, 20]), size=(64, 48)).shape == (6, 3, 64, 48)
    # Full resolution with another output size: a single resize.
    ref_full = _to_tensor([im.resize((56, 56), Image.BICUBIC) for im in imgs])
    assert _diff(degrade(batch, 112, size=56), ref_full)[0] <= 2


def test_grey_and_non_square_images():
    """ORL-style 92 x 112 grey faces: down to r x r and back to 112 x 92."""
    rng = np.random.default_rng(7)
    imgs = [_face_like(rng, size=112, mode="L").crop((10, 0, 102, 112)) for _ in range(3)]
    batch = _to_tensor(imgs)
    assert batch.shape == (3, 1, 112, 92)
    for r in (7, 20):
        ref = _pil_reference(imgs, r)
        for path in ("uint8_cpu", "float"):
            out = _degrade(batch, r, None, path=path)
            assert out.shape == batch.shape
            max_d, mean_d = _diff(out, ref)
            assert max_d <= 2 and mean_d < 0.1, (r, path, max_d, mean_d)


def test_empty_batch():
    empty = torch.zeros(0, 3, 112, 112, dtype=torch.uint8)
    assert degrade(empty, 14).shape == (0, 3, 112, 112)
    assert degrade(empty, torch.zeros(0, dtype=torch.long), size=56).shape == (0, 3, 56, 56)


def test_degrade_rejects_bad_arguments(faces):
    _, batch = faces
    with pytest.raises(ValueError):
        degrade(batch, 0)
    with pytest.raises(ValueError):
        degrade(batch, torch.tensor([7, 14]))  # wrong length
    with pytest.raises(ValueError):
        degrade(batch, torch.tensor([7, 14, 20, 0, 7, 7]))
    with pytest.raises(TypeError):
        degrade(batch, torch.tensor([7.0] * 6))
    with pytest.raises(ValueError):
        degrade(batch[0], 14)  # C x H x W, not a batch
    with pytest.raises(TypeError):
        degrade(batch.to(torch.int32), 14)
    with pytest.raises(ValueError):
        degrade(batch, 14, size=0)
    with pytest.raises(ValueError):
        degrade_pil(Image.new("RGB", (112, 112)), 0)


def test_degrade_pil_full_resolution_is_a_copy():
    img = Image.new("RGB", (112, 112), (10, 20, 30))
    out = degrade_pil(img, 112)
    assert out is not img and out.tobytes() == img.tobytes()
    assert degrade_pil(img, 14).size == (112, 112)


# ---------------------------------------------------------------------------------------------------------
# ResolutionSampler
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["maug", "maug_code", "paug", "aug14"])
def test_sampler_proportions(name):
    sampler = SAMPLER_PRESETS[name]
    n = 40_000
    draws = sampler.sample(n, torch.Generator().manual_seed(99))
    assert draws.dtype == torch.long and draws.shape == (n,)
    assert set(draws.unique().tolist()) <= set(sampler.resolutions)
    for res, p in zip(sampler.resolutions, sampler.probabilities, strict=True):
        count = int((draws == res).sum())
        if p == 0:
            assert count == 0, (name, res)  # a zero-weight resolution is never drawn
            continue
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(count - n * p) <= 4 * sigma + 1e-9, (name, res, count, n * p)


def test_presets():
    assert SAMPLER_PRESETS["maug"] == ResolutionSampler((7, 14, 20), (1, 1, 2))
    assert SAMPLER_PRESETS["maug"].probabilities == (0.25, 0.25, 0.5)
    assert SAMPLER_PRESETS["maug_code"].probabilities == (0.5, 0.0, 0.5)
    assert SAMPLER_PRESETS["paug"].resolutions == (7, 14, 28, 56)
    assert SAMPLER_PRESETS["aug14"].resolutions == (14,)
    assert not SAMPLER_PRESETS["none"].has_lr_branch and SAMPLER_PRESETS["maug"].has_lr_branch
    assert sampler_preset("paug") is SAMPLER_PRESETS["paug"]
    with pytest.raises(ConfigError, match="maug"):
        sampler_preset("mixup")


def test_sampler_is_deterministic_under_a_seed():
    s = SAMPLER_PRESETS["maug"]
    a = s.sample(500, torch.Generator().manual_seed(3))
    b = s.sample(500, torch.Generator().manual_seed(3))
    c = s.sample(500, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert s.sample(0, torch.Generator()).shape == (0,)


@pytest.mark.parametrize(
    ("resolutions", "weights"),
    [
        ((7, 14), (1.0,)),  # length mismatch
        ((7, 14), (1.0, -1.0)),  # negative weight
        ((7, 14), (0.0, 0.0)),  # all zero
        ((0, 14), (1.0, 1.0)),  # non-positive resolution
        ((7.5, 14), (1.0, 1.0)),  # non-integer resolution
        ((True, 14), (1.0, 1.0)),  # a bool is not a resolution
        ((7, 14), (float("nan"), 1.0)),
        ((7, 14), (float("inf"), 1.0)),
        ((7, 7), (1.0, 1.0)),  # duplicates
        ((7,), ("1",)),
    ],
)
def test_sampler_validation(resolutions, weights):
    with pytest.raises(ConfigError):
        ResolutionSampler(resolutions, weights)


def test_sampler_normalises_and_empty_refuses_to_sample():
    s = ResolutionSampler([7, 20], [1, 3])  # lists, as a TOML config gives them
    assert s.resolutions == (7, 20) and s.weights == (1.0, 3.0)
    empty = ResolutionSampler((), ())
    with pytest.raises(ValueError):
        empty.sample(4, torch.Generator())


# ---------------------------------------------------------------------------------------------------------
# Flips and make_pair
# ---------------------------------------------------------------------------------------------------------


def _distinct_from_mirror(n: int, h: int = 4, w: int = 8) -> torch.Tensor:
    """Random images none of which equals its own mirror image, so a flip is always detectable."""
    x = torch.randint(0, 256, (n, 3, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, -1] = 0, 255
    return x


def _flipped(view: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Per sample: True if ``view`` is the mirror of ``src``; asserts it is one or the other."""
    same = (view == src).flatten(1).all(1)
    mirror = (view == src.flip(-1)).flatten(1).all(1)
    assert bool((same ^ mirror).all())
    return mirror


def test_random_hflip():
    x = _distinct_from_mirror(4000)
    g = torch.Generator().manual_seed(5)
    assert torch.equal(random_hflip(x, g, p=0.0), x)
    assert torch.equal(random_hflip(x, g, p=1.0), x.flip(-1))
    frac = float(_flipped(random_hflip(x, g), x).float().mean())
    assert abs(frac - 0.5) <= 4 * math.sqrt(0.25 / len(x))
    with pytest.raises(ValueError):
        random_hflip(x, g, p=1.5)


def test_make_pair_flips_are_independent():
    n = 4000
    x = _distinct_from_mirror(n)
    # A resolution >= the image size leaves the LR copy undegraded, so its flip can be read off exactly.
    hr_view, lr_view, r = make_pair(x, ResolutionSampler((8,), (1.0,)), torch.Generator().manual_seed(11))
    assert torch.equal(r, torch.full((n,), 8))
    hr_flip, lr_flip = _flipped(hr_view, x), _flipped(lr_view, x)
    tol = 4 * math.sqrt(0.25 / n)
    for frac in (hr_flip.float().mean(), lr_flip.float().mean(), (hr_flip != lr_flip).float().mean()):
        assert abs(float(frac) - 0.5) <= tol


def test_make_pair_shapes_determinism_and_degradation(faces):
    _, batch = faces
    batch = batch.repeat(4, 1, 1, 1)  # 24 faces
    sampler = SAMPLER_PRESETS["maug"]
    hr_view, lr_view, r = make_pair(batch, sampler, torch.Generator().manual_seed(2024))
    assert hr_view.shape == lr_view.shape == batch.shape
    assert hr_view.dtype == lr_view.dtype == torch.uint8
    assert r.shape == (len(batch),) and r.dtype == torch.long and set(r.tolist()) <= {7, 14, 20}
    again = make_pair(batch, sampler, torch.Generator().manual_seed(2024))
    assert all(torch.equal(a, b) for a, b in zip((hr_view, lr_view, r), again, strict=True))
    other = make_pair(batch, sampler, torch.Generator().manual_seed(2025))
    assert not all(torch.equal(a, b) for a, b in zip((hr_view, lr_view, r), other, strict=True))
    _flipped(hr_view, batch)
    # Per-sample r is checked against per-image calls above, so the batched degrade is the reference here.
    plain, mirrored = degrade(batch, r), degrade(batch.flip(-1), r)
    for i in range(len(batch)):
        assert torch.equal(lr_view[i], plain[i]) or torch.equal(lr_view[i], mirrored[i]), i


def test_make_pair_without_lr_branch_raises(faces):
    _, batch = faces
    with pytest.raises(ValueError, match="LR branch"):
        make_pair(batch, SAMPLER_PRESETS["none"], torch.Generator())
