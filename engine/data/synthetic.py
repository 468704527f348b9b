"""Synthetic cartoon faces: a deterministic, dependency-free stand-in for a face dataset.

Why it exists: the ``tiny`` preset must train and evaluate on a CPU in minutes without downloading
anything, and it must still show the paper's effect (an HR-only model collapses at 7 px, multi-resolution
training recovers much of it). So identity is spread over three spatial scales:

* coarse (survives 7 px): face outline, hair mass and hairline, skin and hair colour - colours come from a
  deliberately narrow palette and are blurred by lighting nuisances, so colour alone does not identify;
* mid (survives 14-20 px, partly 7 px): eye spacing/height/size/tilt, brows, nose, mouth, ears, facial hair;
* fine (gone well before 7 px): a skin micro-texture (grating, cross-hatch or pores) with identity-specific
  period/orientation/phase, freckles and moles at fixed face-relative positions, fine wrinkles, iris rings.

Every image is a pure function of ``(seed, identity, sample)``: identity parameters come from
``np.random.default_rng([seed, identity])`` and per-image nuisances (pose, lighting, expression, noise,
occluders, background) from ``np.random.default_rng([seed, identity, sample, 1])``.

Drawing happens with PIL at twice the output size and is box-reduced (cheap antialiasing). The part of
the drawing that depends only on the identity is cached, which makes repeated identities cheap.
Bump ``GENERATOR_VERSION`` whenever the pictures change, so materialised caches are regenerated.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from engine.data.atomic import build_atomically

GENERATOR_NAME = "lrfr-synthetic-faces"
GENERATOR_VERSION = 2
MANIFEST = "manifest.json"

# All geometry below is written in the coordinates of a 112 x 112 image and scaled to the canvas.
_REF = 112.0
# Supersampling factor: draw at 2x, then Image.reduce(2) (a box filter) for antialiased edges.
_SS = 2

# Narrow palettes: neighbouring identities share colours, lighting nuisances blur the rest.
_SKIN_LIGHT = np.array([232.0, 196.0, 168.0])
_SKIN_DARK = np.array([204.0, 158.0, 128.0])
_HAIR = np.array(
    [[38, 30, 26], [58, 42, 32], [78, 54, 38], [46, 40, 40], [90, 64, 44], [66, 48, 42]], dtype=np.float64
)
_IRIS = np.array([[70, 48, 30], [50, 80, 110], [70, 96, 60], [96, 96, 100], [40, 30, 24]], dtype=np.float64)


def _rgb(c: np.ndarray | tuple[float, ...]) -> tuple[int, int, int]:
    a = np.clip(np.asarray(c, dtype=np.float64), 0, 255)
    return int(a[0]), int(a[1]), int(a[2])


@dataclass(frozen=True)
class _Identity:
    """Everything that depends on (seed, identity) only, in 112-px reference coordinates."""

    cx: float
    cy: float
    face_w: float  # half-width of the face outline
    face_h: float  # half-height
    squareness: float  # superellipse exponent: 2 = ellipse, higher = squarer
    jaw_taper: float  # how much the lower half narrows towards the chin
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_top: float  # hair volume above the head
    hair_side: float  # extra hair width beside the face
    hair_length: float  # how far down the sides the hair reaches (relative to cy)
    hairline: float  # forehead hairline height (relative to the top of the face)
    hairline_kind: int  # 0 rounded fringe, 1 parted left, 2 parted right, 3 widow's peak, 4 receding
    hairline_amount: float
    eye_dx: float
    eye_dy: float  # relative to cy (negative = above)
    eye_w: float
    eye_h: float
    eye_tilt: float  # radians; outer corners up when positive
    eye_almond: bool
    iris: tuple[int, int, int]
    iris_ring: bool
    brow_gap: float
    brow_len: float
    brow_thick: float
    brow_angle: float
    brow_arch: float
    nose_len: float
    nose_w: float
    nose_kind: int
    mouth_dy: float
    mouth_w: float
    mouth_curve: float
    lip_thick: float
    lip: tuple[int, int, int]
    ear_dy: float
    ear_rx: float
    ear_ry: float
    beard_kind: int  # 0 none, 1 moustache, 2 goatee, 3 stubble
    texture_kind: int  # 0 grating, 1 cross-hatch, 2 pores
    texture_period: float
    texture_angle: float
    texture_phase: float
    texture_amp: float
    texture_seed: int
    moles: tuple[tuple[float, float, float, float], ...]  # (u, v) in the unit face disc, radius, darkness
    wrinkles: tuple[tuple[float, float, float, float], ...]  # forehead arcs: (v, half-length, bend, width)


def _identity_params(seed: int, identity: int) -> _Identity:
    r = np.random.default_rng([seed, identity])
    u = r.uniform
    skin = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * u(0, 1) + r.normal(0, 3, 3)
    hair = _HAIR[r.integers(len(_HAIR))] + r.normal(0, 6, 3)
    face_h = u(38, 45)
    n_moles = int(r.integers(5, 28))
    moles = []
    for _ in range(n_moles):
        # Uniform in the unit disc, kept off the outline so the pose crop does not cut them.
        rad, ang = 0.85 * math.sqrt(u(0, 1)), u(0, 2 * math.pi)
        moles.append((rad * math.cos(ang), rad * math.sin(ang), u(0.45, 1.2), u(0.55, 0.8)))
    wrinkles = tuple((u(-0.62, -0.42), u(5, 12), u(-1.5, 1.5), u(0.5, 0.9)) for _ in range(int(r.integers(0, 4))))
    return _Identity(
        cx=56 + u(-1.5, 1.5),
        cy=62 + u(-2, 2),
        face_w=u(28, 37),
        face_h=face_h,
        squareness=u(2.0, 3.4),
        jaw_taper=u(0.0, 0.4),
        skin=_rgb(skin),
        hair=_rgb(hair),
        hair_top=u(2, 12),
        hair_side=u(1.5, 7),
        hair_length=u(-12, 40),
        hairline=u(9, 19),
        hairline_kind=int(r.integers(5)),
        hairline_amount=u(3, 9),
        eye_dx=u(11, 18),
        eye_dy=-u(6, 15),
        eye_w=u(4.0, 7.0),
        eye_h=u(2.2, 4.2),
        eye_tilt=math.radians(u(-12, 12)),
        eye_almond=bool(r.integers(2)),
        iris=_rgb(_IRIS[r.integers(len(_IRIS))] + r.normal(0, 6, 3)),
        iris_ring=bool(r.integers(2)),
        brow_gap=u(4.5, 9),
        brow_len=u(8, 14),
        brow_thick=u(1.2, 3.2),
        brow_angle=math.radians(u(-16, 16)),
        brow_arch=u(-1.0, 2.5),
        nose_len=u(8, 17),
        nose_w=u(3.5, 8.5),
        nose_kind=int(r.integers(4)),
        mouth_dy=u(17, 27),
        mouth_w=u(6, 13),
        mouth_curve=u(-2.5, 3.5),
        lip_thick=u(1.0, 2.6),
        lip=_rgb(skin * np.array([0.78, 0.55, 0.55]) + r.normal(0, 5, 3)),
        ear_dy=u(-9, 3),
        ear_rx=u(3.5, 6.5),
        ear_ry=u(6, 10),
        beard_kind=int(r.choice(4, p=[0.55, 0.15, 0.15, 0.15])),
        texture_kind=int(r.integers(3)),
        texture_period=u(2.6, 4.5),
        texture_angle=u(0, math.pi),
        texture_phase=u(0, 2 * math.pi),
        texture_amp=u(7, 13),
        texture_seed=int(r.integers(2**31)),
        moles=tuple(moles),
        wrinkles=wrinkles,
    )


def _face_outline(p: _Identity, k: float, n: int = 56) -> list[tuple[float, float]]:
    """Superellipse outline whose lower half narrows towards the chin (jaw shape)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / p.squareness
    x = p.face_w * np.sign(c) * np.abs(c) ** e
    y = p.face_h * np.sign(s) * np.abs(s) ** e
    lower = y > 0
    x[lower] *= 1.0 - p.jaw_taper * (y[lower] / p.face_h) ** 2
    return [(float((p.cx + xi) * k), float((p.cy + yi) * k)) for xi, yi in zip(x, y, strict=True)]


def _hairline_y(p: _Identity, dx: np.ndarray) -> np.ndarray:
    """Where the hair ends on the forehead, as a function of the horizontal offset from the face centre."""
    top = p.cy - p.face_h
    x = dx / p.face_w
    base = top + p.hairline
    a = p.hairline_amount
    if p.hairline_kind == 0:  # rounded fringe, lower at the temples
        y = base + a * x**2
    elif p.hairline_kind in (1, 2):  # side parting: slanted fringe
        sign = 1.0 if p.hairline_kind == 1 else -1.0
        y = base + 0.5 * a + sign * a * x
    elif p.hairline_kind == 3:  # widow's peak
        y = base + a * (1.0 - np.minimum(np.abs(x) * 3.0, 1.0)) - 0.3 * a
    else:  # receding: high in the middle, low at the temples
        y = base - a + 2.2 * a * x**2
    return y


def _texture(p: _Identity, box: tuple[int, int, int, int], k: float) -> np.ndarray:
    """Identity-specific high-frequency skin pattern over canvas box (x0, y0, x1, y1), zero-mean, grey levels.

    The pattern is anchored to the canvas (hence to the face, which is drawn before the pose), so it is
    the same for every image of the identity.
    """
    x0, y0, x1, y1 = box
    if p.texture_kind == 2:  # pores: a fixed random field at reference-pixel resolution
        pr = np.random.default_rng(p.texture_seed)
        n = int(_REF) + 1
        field = pr.standard_normal((n, n)).astype(np.float32)
        rows = np.minimum((np.arange(y0, y1) / k).astype(np.intp), n - 1)
        cols = np.minimum((np.arange(x0, x1) / k).astype(np.intp), n - 1)
        return p.texture_amp * 0.6 * field[np.ix_(rows, cols)]
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) / np.float32(k)  # in reference pixels
    f = np.float32(2 * np.pi / p.texture_period)
    ca, sa = math.cos(p.texture_angle), math.sin(p.texture_angle)
    pat = np.cos(f * (xx * ca + yy * sa) + p.texture_phase)
    if p.texture_kind == 1:  # cross-hatch: a second grating at a right angle
        pat = 0.5 * (pat + np.cos(f * (xx * -sa + yy * ca) + 2.0 * p.texture_phase))
    return p.texture_amp * pat


@lru_cache(maxsize=256)
def _identity_layer(seed: int, identity: int, size: int) -> tuple[_Identity, Image.Image]:
    """RGBA drawing of everything that does not change between images of one identity.

    Eyes and mouth are left out: expression changes them per image. Callers must copy the image.
    """
    p = _identity_params(seed, identity)
    S = size * _SS
    k = S / _REF
    layer = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    hair = (*p.hair, 255)
    skin_dark = _rgb(np.array(p.skin) * 0.82)

    # Back hair: a cap around the head plus, for long hair, a curtain down the sides.
    hw, top = p.face_w + p.hair_side, p.cy - p.face_h - p.hair_top
    d.ellipse([(p.cx - hw) * k, top * k, (p.cx + hw) * k, (p.cy + p.face_h * 0.4) * k], fill=hair)
    if p.hair_length > 0:
        d.rectangle([(p.cx - hw) * k, p.cy * k, (p.cx + hw) * k, (p.cy + p.hair_length) * k], fill=hair)

    # Ears, then the face over them.
    for side in (-1, 1):
        ex = p.cx + side * (p.face_w - 0.5)
        ey = p.cy + p.ear_dy
        d.ellipse([(ex - p.ear_rx) * k, (ey - p.ear_ry) * k, (ex + p.ear_rx) * k, (ey + p.ear_ry) * k],
                  fill=(*skin_dark, 255))
    outline = _face_outline(p, k)
    d.polygon(outline, fill=(*p.skin, 255))

    # Skin micro-texture, only inside the face outline (fine cue: invisible at 7-14 px).
    mask_img = Image.new("L", (S, S), 0)
    ImageDraw.Draw(mask_img).polygon(outline, fill=255)
    x0, y0, x1, y1 = mask_img.getbbox() or (0, 0, S, S)
    arr = np.array(layer)
    region = arr[y0:y1, x0:x1, :3].astype(np.float32)
    tex = _texture(p, (x0, y0, x1, y1), k)
    inside = (np.asarray(mask_img)[y0:y1, x0:x1] > 0)[..., None]
    region = np.where(inside, region + tex[..., None], region)
    arr[y0:y1, x0:x1, :3] = np.clip(region, 0, 255).astype(np.uint8)
    layer = Image.fromarray(arr, "RGBA")
    d = ImageDraw.Draw(layer)

    # Freckles and moles at fixed face-relative positions (fine cue).
    for mu, mv, mr, dark in p.moles:
        mx, my = p.cx + mu * p.face_w, p.cy + mv * p.face_h
        d.ellipse([(mx - mr) * k, (my - mr) * k, (mx + mr) * k, (my + mr) * k],
                  fill=(*_rgb(np.array(p.skin) * dark), 255))
    # Fine forehead wrinkles.
    wcol = (*_rgb(np.array(p.skin) * 0.8), 255)
    for v, half, bend, width in p.wrinkles:
        wy = p.cy + v * p.face_h
        pts = [((p.cx + t * half) * k, (wy + bend * (1 - t * t)) * k) for t in np.linspace(-1, 1, 7)]
        d.line(pts, fill=wcol, width=max(1, round(width * k)))

    # Nose.
    ny0, ny1 = p.cy - 2, p.cy - 2 + p.nose_len
    ncol = (*_rgb(np.array(p.skin) * 0.68), 255)
    lw = max(1, round(0.9 * k))
    if p.nose_kind == 0:  # bridge line and two nostrils
        d.line([(p.cx * k, ny0 * k), (p.cx * k, (ny1 - 2) * k)], fill=ncol, width=lw)
        for side in (-1, 1):
            nx = p.cx + side * p.nose_w * 0.45
            d.ellipse([(nx - 1.1) * k, (ny1 - 1.1) * k, (nx + 1.1) * k, (ny1 + 1.1) * k], fill=ncol)
    elif p.nose_kind == 1:  # triangle
        d.line([(p.cx * k, ny0 * k), ((p.cx - p.nose_w / 2) * k, ny1 * k), ((p.cx + p.nose_w / 2) * k, ny1 * k)],
               fill=ncol, width=lw)
    elif p.nose_kind == 2:  # "L" nose
        d.line([(p.cx * k, ny0 * k), ((p.cx - 1) * k, ny1 * k), ((p.cx + p.nose_w / 2) * k, ny1 * k)],
               fill=ncol, width=lw, joint="curve")
    else:  # rounded tip
        d.arc([(p.cx - p.nose_w / 2) * k, (ny1 - p.nose_w / 2) * k, (p.cx + p.nose_w / 2) * k,
               (ny1 + p.nose_w / 3) * k], 10, 170, fill=ncol, width=lw)

    # Facial hair (mid-scale cue), under the mouth that is drawn per image.
    my = p.cy + p.mouth_dy
    bcol = (*p.hair, 255)
    if p.beard_kind == 1:  # moustache
        d.polygon([((p.cx - p.mouth_w - 1) * k, (my - 1) * k), (p.cx * k, (my - 4.5) * k),
                   ((p.cx + p.mouth_w + 1) * k, (my - 1) * k), (p.cx * k, (my - 2) * k)], fill=bcol)
    elif p.beard_kind == 2:  # goatee
        d.ellipse([(p.cx - 4) * k, (my + 3) * k, (p.cx + 4) * k, (my + 11) * k], fill=bcol)
    elif p.beard_kind == 3:  # stubble: dense fixed dots on the lower face (fine cue)
        sr = np.random.default_rng(p.texture_seed + 1)
        n = 220
        xs = p.cx + sr.uniform(-1, 1, n) * p.face_w * 0.8
        ys = p.cy + p.nose_len + sr.uniform(0, 1, n) * (p.face_h - p.nose_len)
        face_mask = np.asarray(mask_img)
        for x, y in zip(xs, ys, strict=True):
            if face_mask[min(S - 1, int(y * k)), min(S - 1, int(x * k))]:
                d.point([(x * k, y * k)], fill=bcol)

    # Front hair: the region between the top of the hair cap and the hairline.
    xs = np.linspace(-hw, hw, 33)
    cap_ry = p.cy + p.face_h * 0.4 - top
    cap_cy = top + cap_ry / 2
    half = np.sqrt(np.clip(1 - (xs / hw) ** 2, 0, 1)) * cap_ry / 2
    upper = cap_cy - half
    lower = np.minimum(_hairline_y(p, xs), cap_cy + half)
    lower = np.maximum(lower, upper)
    pts = [((p.cx + x) * k, y * k) for x, y in zip(xs, lower, strict=True)]
    pts += [((p.cx + x) * k, y * k) for x, y in zip(xs[::-1], upper[::-1], strict=True)]
    d.polygon(pts, fill=hair)

    # Brows (mid-scale), coloured like the hair.
    bcol2 = (*_rgb(np.array(p.hair) * 0.9), 255)
    for side in (-1, 1):
        bx, by = p.cx + side * p.eye_dx, p.cy + p.eye_dy - p.brow_gap
        ts = np.linspace(-1, 1, 5)
        # Inner end (towards the nose) up or down by brow_angle; arch lifts the middle.
        pts = [
            ((bx + t * p.brow_len / 2) * k,
             (by - side * t * math.tan(p.brow_angle) * p.brow_len / 2 - p.brow_arch * (1 - t * t)) * k)
            for t in ts
        ]
        d.line(pts, fill=bcol2, width=max(1, round(p.brow_thick * k)), joint="curve")
    return p, layer


def _draw_eyes_mouth(d: ImageDraw.ImageDraw, p: _Identity, k: float, openness: float,
                     smile: float, mouth_open: float) -> None:
    """The expression-dependent parts: eye openness, mouth curvature and opening."""
    dark = (40, 28, 24, 255)
    for side in (-1, 1):
        ex, ey = p.cx + side * p.eye_dx, p.cy + p.eye_dy
        eh = max(0.35, p.eye_h * openness)
        ca, sa = math.cos(side * p.eye_tilt), math.sin(side * p.eye_tilt)
        ts = np.linspace(0, 2 * math.pi, 16, endpoint=False)
        pts = []
        for t in ts:
            x, y = p.eye_w * math.cos(t), eh * math.sin(t)
            if p.eye_almond:  # pointed corners
                y *= abs(math.sin(t)) ** 0.3
            # tilt: outer corner up (side * tilt), rotate about the eye centre
            pts.append(((ex + x * ca + y * sa) * k, (ey - x * sa + y * ca) * k))
        d.polygon(pts, fill=(245, 245, 240, 255), outline=dark)
        ir = min(p.eye_h * 0.8, eh)
        if ir > 0.6:
            d.ellipse([(ex - ir) * k, (ey - ir) * k, (ex + ir) * k, (ey + ir) * k], fill=(*p.iris, 255))
            if p.iris_ring:  # fine cue: a dark limbal ring
                d.ellipse([(ex - ir) * k, (ey - ir) * k, (ex + ir) * k, (ey + ir) * k], outline=dark)
            pr = ir * 0.45
            d.ellipse([(ex - pr) * k, (ey - pr) * k, (ex + pr) * k, (ey + pr) * k], fill=(15, 12, 12, 255))
        else:
            d.line([pts[0], pts[8]], fill=dark, width=max(1, round(0.8 * k)))

    mx, my = p.cx, p.cy + p.mouth_dy
    curve = p.mouth_curve + smile
    ts = np.linspace(-1, 1, 9)
    # Corners rise by `curve` for a smile; the middle stays put.
    top = [((mx + t * p.mouth_w) * k, (my - curve * t * t) * k) for t in ts]
    if mouth_open > 0.5:
        bottom = [((mx + t * p.mouth_w) * k, (my - curve * t * t + mouth_open * (1 - t * t)) * k)
                  for t in ts[::-1]]
        d.polygon(top + bottom, fill=(70, 20, 25, 255), outline=(*p.lip, 255))
    d.line(top, fill=(*p.lip, 255), width=max(1, round(p.lip_thick * k)), joint="curve")


def _background(r: np.random.Generator, S: int) -> Image.Image:
    colour = r.uniform(20, 235, 3)
    kind = int(r.integers(4))
    if kind == 0:  # flat
        return Image.new("RGB", (S, S), _rgb(colour))
    if kind == 1:  # vertical or horizontal gradient
        ramp = np.linspace(-1, 1, S, dtype=np.float32)[:, None, None] * r.uniform(-50, 50, 3).astype(np.float32)
        arr = np.clip(colour.astype(np.float32) + ramp, 0, 255).astype(np.uint8)
        arr = np.broadcast_to(arr, (S, S, 3)) if r.integers(2) else np.broadcast_to(arr.transpose(1, 0, 2), (S, S, 3))
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    img = Image.new("RGB", (S, S), _rgb(colour))
    d = ImageDraw.Draw(img)
    other = _rgb(colour + r.uniform(-60, 60, 3))
    if kind == 2:  # stripes
        step = int(r.integers(8, 30)) * _SS
        for x in range(int(r.integers(step)), S, step):
            d.rectangle([x, 0, x + step // 2, S], fill=other)
    else:  # blotches
        for _ in range(6):
            x, y, rad = r.uniform(0, S), r.uniform(0, S), r.uniform(0.05, 0.25) * S
            d.ellipse([x - rad, y - rad, x + rad, y + rad], fill=other)
    return img


def render_face(seed: int, identity: int, sample: int, size: int = 112) -> np.ndarray:
    """Render one face as a ``(size, size, 3)`` uint8 RGB array; a pure function of its arguments."""
    if min(seed, identity, sample) < 0:
        raise ValueError(f"seed, identity and sample must be >= 0, got {(seed, identity, sample)}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    p, ident = _identity_layer(seed, identity, size)
    r = np.random.default_rng([seed, identity, sample, 1])
    S = size * _SS
    k = S / _REF

    # Expression.
    openness = 0.12 if r.uniform() < 0.04 else r.uniform(0.6, 1.15)
    smile = float(np.clip(r.normal(0, 1.3), -2.5, 2.5))
    mouth_open = r.uniform(1.5, 5) if r.uniform() < 0.15 else 0.0
    face = ident.copy()
    d = ImageDraw.Draw(face)
    _draw_eyes_mouth(d, p, k, openness, smile, mouth_open)

    # Occasional occluder, in face coordinates so it moves with the pose.
    occ = r.uniform()
    if occ < 0.05:  # glasses: two frames and a bridge, sometimes tinted
        tint = r.uniform() < 0.4
        fcol = _rgb(r.uniform(10, 90, 3))
        gw, gh = p.eye_w + 2.5, p.eye_h + 3
        ey = p.cy + p.eye_dy
        for side in (-1, 1):
            ex = p.cx + side * p.eye_dx
            box = [(ex - gw) * k, (ey - gh) * k, (ex + gw) * k, (ey + gh) * k]
            if tint:
                d.rectangle(box, fill=(30, 30, 40, 255))
            d.rectangle(box, outline=(*fcol, 255), width=max(1, round(1.0 * k)))
        d.line([((p.cx - p.eye_dx + gw) * k, ey * k), ((p.cx + p.eye_dx - gw) * k, ey * k)],
               fill=(*fcol, 255), width=max(1, round(1.0 * k)))
    elif occ < 0.09:  # a random rectangle (hand, microphone, sticker...)
        w, h = r.uniform(12, 34, 2)
        x, y = r.uniform(15, 97 - w), r.uniform(30, 105 - h)
        d.rectangle([x * k, y * k, (x + w) * k, (y + h) * k], fill=(*_rgb(r.uniform(0, 255, 3)), 255))

    # Pose: rotation about the face centre, scale and shift. PIL wants the output->input mapping.
    angle = math.radians(r.uniform(-8, 8))
    scale = r.uniform(0.94, 1.06)
    tx, ty = r.uniform(-3, 3, 2) * k
    cxk, cyk = p.cx * k, p.cy * k
    ca, sa = math.cos(angle) / scale, math.sin(angle) / scale
    # input = C + R(-angle)/scale * (output - C - t)
    a, b, e_ = ca, sa, ca
    c_ = -sa
    ox, oy = cxk + tx, cyk + ty
    coeffs = (a, b, cxk - a * ox - b * oy, c_, e_, cyk - c_ * ox - e_ * oy)
    # NEAREST at 2x followed by the 2x box reduction is as smooth as BILINEAR here and ~15x cheaper.
    face = face.transform((S, S), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.NEAREST)

    img = _background(r, S)
    img.paste(face, (0, 0), face)
    img = img.reduce(_SS)

    # Lighting: brightness, contrast, a directional shading ramp and a slight colour cast; then noise.
    arr = np.asarray(img, dtype=np.float32)
    gain = r.uniform(0.78, 1.18) * r.uniform(0.95, 1.05, 3).astype(np.float32)
    contrast = r.uniform(0.8, 1.15)
    theta = r.uniform(0, 2 * math.pi)
    strength = r.uniform(0, 0.3)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    shade = 1.0 + strength * (math.cos(theta) * ramp[None, :] + math.sin(theta) * ramp[:, None])
    mean = arr.mean()
    arr = ((arr - mean) * contrast + mean) * shade[..., None] * gain
    # Uniform noise with the given standard deviation: 5x cheaper than Gaussian, looks the same.
    sigma = np.float32(r.uniform(1, 6) * math.sqrt(12.0))
    arr += (r.random(arr.shape, dtype=np.float32) - np.float32(0.5)) * sigma
    return np.clip(arr, 0, 255).astype(np.uint8)


class SyntheticFaceDataset(Dataset):
    """Renders faces on the fly: item ``i`` is sample ``i % n`` of identity ``first_identity + i // n``.

    Labels are ``0 .. num_identities - 1`` (relative to ``first_identity``), matching what
    ``ImageFolderDataset`` gives for a materialised copy of the same faces.
    """

    def __init__(self, num_identities: int, images_per_identity: int, seed: int, first_identity: int = 0,
                 size: int = 112) -> None:
        if num_identities < 1 or images_per_identity < 1:
            raise ValueError("num_identities and images_per_identity must be >= 1")
        self.num_identities = num_identities
        self.images_per_identity = images_per_identity
        self.seed = seed
        self.first_identity = first_identity
        self.size = size

    @property
    def num_classes(self) -> int:
        return self.num_identities

    def __len__(self) -> int:
        return self.num_identities * self.images_per_identity

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        label, sample = divmod(index, self.images_per_identity)
        arr = render_face(self.seed, self.first_identity + label, sample, self.size)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), label


@dataclass(frozen=True)
class SyntheticFaces:
    """Writes synthetic faces as an image folder ``root/<identity:05d>/<sample:03d>.png``, cached.

    ``materialise`` returns at once when ``root`` already holds a complete set for the same parameters
    and generator version. It builds into a temporary sibling folder and renames it into place, so an
    interrupted run never leaves something that looks complete.
    """

    size: int = 112

    def manifest(self, num_identities: int, images_per_identity: int, seed: int, first_identity: int) -> dict:
        return {
            "generator": GENERATOR_NAME,
            "version": GENERATOR_VERSION,
            "seed": seed,
            "num_identities": num_identities,
            "images_per_identity": images_per_identity,
            "first_identity": first_identity,
            "size": self.size,
        }

    def is_complete(self, root: Path, expected: dict) -> bool:
        try:
            found = json.loads((root / MANIFEST).read_text())
        except (OSError, ValueError):
            return False
        if found != expected:
            return False
        # Cheap check that nobody deleted files since (one listing per identity).
        first, n, per = expected["first_identity"], expected["num_identities"], expected["images_per_identity"]
        for ident in range(first, first + n):
            try:
                if len(os.listdir(root / f"{ident:05d}")) != per:
                    return False
            except OSError:
                return False
        return True

    def materialise(self, root: Path | str, num_identities: int, images_per_identity: int, seed: int,
                    first_identity: int = 0) -> Path:
        root = Path(root)
        if num_identities < 1 or images_per_identity < 1 or first_identity < 0:
            raise ValueError("num_identities and images_per_identity must be >= 1, first_identity >= 0")
        if images_per_identity > 1000:
            raise ValueError("images_per_identity must be <= 1000 (file names have 3 digits)")
        expected = self.manifest(num_identities, images_per_identity, seed, first_identity)
        if self.is_complete(root, expected):
            return root

        def build(tmp: Path) -> None:
            for ident in range(first_identity, first_identity + num_identities):
                folder = tmp / f"{ident:05d}"
                folder.mkdir()
                for sample in range(images_per_identity):
                    arr = render_face(seed, ident, sample, self.size)
                    # compress_level=1: these are caches, speed matters more than bytes.
                    Image.fromarray(arr, "RGB").save(folder / f"{sample:03d}.png", compress_level=1)
            # The manifest is the completion marker: written last, inside the folder being renamed.
            (tmp / MANIFEST).write_text(json.dumps(expected, indent=2))

        # Another process that finished first keeps its (identical) cache.
        return build_atomically(root, build, "the synthetic face cache",
                                keep_existing=lambda path: self.is_complete(path, expected))


def materialise(root: Path | str, num_identities: int, images_per_identity: int, seed: int,
                first_identity: int = 0, size: int = 112) -> Path:
    """Shorthand for ``SyntheticFaces(size).materialise(...)``."""
    return SyntheticFaces(size).materialise(root, num_identities, images_per_identity, seed, first_identity)
