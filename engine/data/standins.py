"""Synthetic stand-ins for the LRFR benchmarks, written in the real datasets' file formats.

They let the tests and the ``tiny`` preset run the real readers end to end without any download. Faces come
from ``render_face``; identity numbers start far above the synthetic training identities so no benchmark
subject was seen in training: LFW / XQLFW / the ``.bin`` pack use 2,000,000+, SCface 3,000,000+, TinyFace
4,000,000+ (the in-memory synthetic LFW of the evaluation code uses 1,000,000+).

* ``write_lfw_tree``: ``<root>/Person_0001/Person_0001_0001.jpg`` ... and ``<root>/pairs.txt`` in LFW's
  layout (header ``folds<TAB>N``, per fold N matched then N mismatched lines; folds use disjoint identities
  and no pair occurs twice, like LFW's).
* ``write_xqlfw_tree``: the same faces, cross-quality as XQLFW is: about half of each identity's images are
  degraded (down to a random 7-20 px, back up to full size, JPEG quality ~30), the others stay sharp, and
  ``<root>/xqlfw_pairs.txt`` pairs one sharp with one degraded image every time (which side is degraded is a
  seeded choice per pair).
* ``write_lfw_bin``: an insightface ``lfw.bin``-like pack of the same pairs (JPEG bytes).
* ``write_scface_tree``: SCface's names and folders; sharp 128 px mugshots
  (``mugshot_frontal_cropped_all/001_frontal.JPG``) and native low-resolution surveillance crops
  (``surveillance_cameras_distance_D/cam_C/001_camC_D.jpg``: d1 8-10 px, d2 13-15 px, d3 22-26 px) with a
  colour cast and sensor noise per camera; plus grey infrared shots from cameras 6 and 7 that readers skip.
* ``write_tinyface_tree``: ``Testing_Set/{Probe,Gallery_Match,Gallery_Distractor}`` and ``Training_Set``,
  every face stored at its native 10-20 px, as TinyFace's are. Probe and match files are named
  ``<label>_<k>.jpg``; distractor names also start with small integers (``3_7_face207.jpg``) that collide
  with probe labels on purpose, so a reader that parses them instead of giving -1 is caught.

Each writer builds in a temporary sibling and renames it into place, so an interrupted write never leaves a
tree that looks complete; ``materialise_standins`` writes the whole set once per (preset, seed) and reuses it.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from engine.data.atomic import build_atomically
from engine.data.binpack import write_bin
from engine.data.pairs import PairEntry, write_atomic, write_pairs
from engine.data.synthetic import GENERATOR_VERSION, render_face
from engine.errors import DatasetError

STANDINS_VERSION = 2  # 2: distinct LFW pairs, cross-quality XQLFW pairs
LFW_FIRST_IDENTITY = 2_000_000
SCFACE_FIRST_IDENTITY = 3_000_000
TINYFACE_FIRST_IDENTITY = 4_000_000
LFW_PAIRS = "pairs.txt"
XQLFW_PAIRS = "xqlfw_pairs.txt"
COMPLETE_MARKER = "COMPLETE.json"

# What materialise_standins writes per preset. ``test`` is for unit tests (about a second), ``tiny`` for the
# CPU preset's evaluation (600 LFW pairs, 30 SCface subjects, 50 TinyFace probe ids + 500 distractors).
SIZE_PRESETS: dict[str, dict[str, dict[str, int]]] = {
    "test": {
        "lfw": {"num_identities": 20, "images_per_identity": 3, "folds": 10, "per_fold": 3},
        "scface": {"num_subjects": 6},
        "tinyface": {"num_probe_ids": 8, "distractors": 20, "train_ids": 4, "train_images_per_id": 3},
    },
    "tiny": {
        "lfw": {"num_identities": 100, "images_per_identity": 4, "folds": 10, "per_fold": 30},
        "scface": {"num_subjects": 30},
        "tinyface": {"num_probe_ids": 50, "distractors": 500, "train_ids": 20, "train_images_per_id": 5},
    },
}

_BICUBIC = Image.Resampling.BICUBIC


# ---------------------------------------------------------------------------------------------- helpers


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def _save(img: Image.Image, path: Path, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=int(quality))


def _noisy(img: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.normal(0.0, sigma, arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), img.mode)


def _write_tree(root: Path | str, build: Callable[[Path], None]) -> Path:
    return build_atomically(Path(root), build, "the stand-in dataset")


# ---------------------------------------------------------------------------------------------- LFW family


def lfw_name(index: int) -> str:
    """The stand-in name of identity ``index`` (0-based): ``Person_0001``, ..."""
    return f"Person_{index + 1:04d}"


def _identity_groups(rng: np.random.Generator, num_identities: int, folds: int) -> list[np.ndarray]:
    return np.array_split(rng.permutation(num_identities), folds)


def _check_sizes(num_identities: int, images_per_identity: int, folds: int, per_fold: int) -> None:
    if images_per_identity < 2:
        raise ValueError("images_per_identity must be >= 2 (matched pairs need two images)")
    if folds < 1 or per_fold < 1:
        raise ValueError("folds and per_fold must be >= 1")
    if num_identities < 2 * folds:
        raise ValueError(
            f"need at least 2 identities per fold: {num_identities} identities for {folds} folds"
        )


_Img = tuple[int, int]  # (identity index, image number from 1)


def _draw_fold(rng: np.random.Generator, ids: Sequence[int], per_fold: int,
               matched: Callable[[int], list[tuple[int, int]]],
               mismatched: Callable[[int, int], list[tuple[int, int]]],
               draw_mismatched: Callable[[int, int], tuple[int, int]], capacity: int,
               ) -> tuple[list[tuple[_Img, _Img]], list[tuple[_Img, _Img]]]:
    """``per_fold`` distinct matched and ``per_fold`` distinct mismatched unordered pairs over ``ids``.

    Matched pairs go round-robin over the fold's identities (each one's candidates ``matched(i)`` in a
    seeded order), so every identity is used before any is used twice. Mismatched pairs are drawn with
    ``draw_mismatched(i, j)`` and redrawn when already taken; when the fold has few candidates
    (``capacity``, the count over all identity pairs of ``mismatched(i, j)``) they are enumerated instead.
    """
    queues = []
    for i in ids:
        cands = matched(i)
        queues.append([cands[t] for t in rng.permutation(len(cands))])
    if sum(len(q) for q in queues) < per_fold:
        raise ValueError(f"a fold of {len(ids)} identities has only {sum(len(q) for q in queues)} distinct "
                         f"matched pairs, {per_fold} asked for: use more identities or images per identity")
    same: list[tuple[_Img, _Img]] = []
    turn = 0
    while len(same) < per_fold:
        k = turn % len(ids)
        if queues[k]:
            a, b = queues[k].pop(0)
            same.append(((ids[k], a), (ids[k], b)))
        turn += 1
    if capacity < per_fold:
        raise ValueError(f"a fold of {len(ids)} identities has only {capacity} distinct mismatched pairs, "
                         f"{per_fold} asked for")
    diff: list[tuple[_Img, _Img]] = []
    if capacity <= 8 * per_fold:
        cands = [((i, a), (j, b)) for x, i in enumerate(ids) for j in ids[x + 1:] for a, b in mismatched(i, j)]
        diff = [cands[t] for t in sorted(rng.choice(len(cands), per_fold, replace=False))]
        diff = [diff[t] for t in rng.permutation(per_fold)]
    else:
        seen: set[frozenset[_Img]] = set()
        while len(diff) < per_fold:
            x, y = rng.choice(len(ids), 2, replace=False)
            a, b = draw_mismatched(ids[x], ids[y])
            key = frozenset(((ids[x], a), (ids[y], b)))
            if key not in seen:
                seen.add(key)
                diff.append(((ids[x], a), (ids[y], b)))
    return same, diff


def lfw_pairs(num_identities: int, images_per_identity: int, folds: int = 10, per_fold: int = 30,
              seed: int = 0) -> list[PairEntry]:
    """Distinct pairs in LFW's layout over stand-in identities; each fold draws from its own identities.

    Per fold ``per_fold`` matched lines (``name n1 n2``, n1 < n2) then ``per_fold`` mismatched lines; no
    unordered pair of images occurs twice (LFW's 6,000 pairs are distinct). ``ValueError`` when a fold's
    identities cannot give that many distinct pairs.
    """
    _check_sizes(num_identities, images_per_identity, folds, per_fold)
    k = images_per_identity
    numbers = range(1, k + 1)
    all_same = list(itertools.combinations(numbers, 2))
    all_diff = list(itertools.product(numbers, numbers))
    rng = np.random.default_rng([seed, 0x1F3])
    entries: list[PairEntry] = []
    for group in _identity_groups(rng, num_identities, folds):
        ids = [int(i) for i in group]
        same, diff = _draw_fold(
            rng, ids, per_fold, lambda i: all_same, lambda i, j: all_diff,
            lambda i, j: (int(rng.integers(1, k + 1)), int(rng.integers(1, k + 1))),
            capacity=len(ids) * (len(ids) - 1) // 2 * k * k)
        entries += [PairEntry.matched(lfw_name(i), a, b) for (i, a), (_, b) in same]
        entries += [PairEntry.mismatched(lfw_name(i), a, lfw_name(j), b) for (i, a), (j, b) in diff]
    return entries


def xqlfw_degraded(num_identities: int, images_per_identity: int, seed: int = 0) -> list[frozenset[int]]:
    """Per identity index, the image numbers the XQLFW stand-in degrades: a seeded ``ceil(k / 2)`` of ``k``.

    The others stay as sharp as the LFW stand-in's, so every identity has images of both qualities.
    """
    k = images_per_identity
    out = []
    for index in range(num_identities):
        order = np.random.default_rng([seed, index, 0x7C2]).permutation(k) + 1
        out.append(frozenset(int(n) for n in order[: (k + 1) // 2]))
    return out


def xqlfw_pairs(num_identities: int, images_per_identity: int, folds: int = 10, per_fold: int = 30,
                seed: int = 0) -> list[PairEntry]:
    """Distinct cross-quality pairs in LFW's layout: in every pair exactly one image is degraded.

    Which images are degraded is ``xqlfw_degraded``; which side of a pair holds the degraded one (first or
    second) is a seeded coin per pair, as XQLFW's pairs mix both orders.
    """
    _check_sizes(num_identities, images_per_identity, folds, per_fold)
    k = images_per_identity
    low = xqlfw_degraded(num_identities, k, seed)
    high = [frozenset(range(1, k + 1)) - d for d in low]
    rng = np.random.default_rng([seed, 0x7C3])

    def cross(i: int, j: int) -> list[tuple[int, int]]:
        return sorted(itertools.product(high[i], low[j])) + sorted(itertools.product(low[i], high[j]))

    def draw(i: int, j: int) -> tuple[int, int]:
        sharp_first = rng.random() < 0.5
        a_from, b_from = (high[i], low[j]) if sharp_first else (low[i], high[j])
        return int(rng.choice(sorted(a_from))), int(rng.choice(sorted(b_from)))

    h, lo = k - (k + 1) // 2, (k + 1) // 2
    entries: list[PairEntry] = []
    for group in _identity_groups(rng, num_identities, folds):
        ids = [int(i) for i in group]
        same, diff = _draw_fold(rng, ids, per_fold, lambda i: sorted(itertools.product(high[i], low[i])),
                                cross, draw, capacity=len(ids) * (len(ids) - 1) // 2 * 2 * h * lo)
        for pairs in (same, diff):
            for first, second in pairs:
                if rng.random() < 0.5:  # the seeded choice of the degraded image's position
                    first, second = second, first
                (i, a), (j, b) = first, second
                entries.append(PairEntry.matched(lfw_name(i), a, b) if i == j
                               else PairEntry.mismatched(lfw_name(i), a, lfw_name(j), b))
    return entries


def _lfw_image(seed: int, first_identity: int, index: int, number: int, image_size: int,
               xqlfw: bool) -> tuple[Image.Image, int]:
    """Image ``number`` (1-based) of identity ``index``, and the JPEG quality to store it with."""
    img = Image.fromarray(render_face(seed, first_identity + index, number - 1, image_size), "RGB")
    if not xqlfw:
        return img, 95
    rng = np.random.default_rng([seed, first_identity + index, number, 0x7C1])
    res = int(rng.integers(7, 21))
    img = img.resize((res, res), _BICUBIC).resize((image_size, image_size), _BICUBIC)
    return img, int(rng.integers(25, 36))


def _write_pairs_tree(root: Path | str, num_identities: int, images_per_identity: int, folds: int,
                      per_fold: int, seed: int, first_identity: int, image_size: int, pairs_name: str,
                      entries: list[PairEntry], degraded: list[frozenset[int]] | None) -> Path:
    def build(tmp: Path) -> None:
        for index in range(num_identities):
            name = lfw_name(index)
            (tmp / name).mkdir()
            for number in range(1, images_per_identity + 1):
                low = degraded is not None and number in degraded[index]
                img, quality = _lfw_image(seed, first_identity, index, number, image_size, low)
                _save(img, tmp / name / f"{name}_{number:04d}.jpg", quality)
        write_pairs(tmp / pairs_name, folds, per_fold, entries)

    return _write_tree(root, build)


def write_lfw_tree(root: Path | str, num_identities: int, images_per_identity: int, folds: int = 10,
                   per_fold: int = 30, seed: int = 0, *, first_identity: int = LFW_FIRST_IDENTITY,
                   image_size: int = 112, pairs_name: str = LFW_PAIRS) -> Path:
    """An LFW-style tree of every stand-in image (JPEG quality 95) plus ``<root>/<pairs_name>``; returns root."""
    entries = lfw_pairs(num_identities, images_per_identity, folds, per_fold, seed)
    return _write_pairs_tree(root, num_identities, images_per_identity, folds, per_fold, seed, first_identity,
                             image_size, pairs_name, entries, None)


def write_xqlfw_tree(root: Path | str, num_identities: int, images_per_identity: int, folds: int = 10,
                     per_fold: int = 30, seed: int = 0, *, first_identity: int = LFW_FIRST_IDENTITY,
                     image_size: int = 112) -> Path:
    """The LFW stand-in's faces, cross-quality: the ``xqlfw_degraded`` images of each identity are
    down-sampled to a random 7-20 px (seeded per image), up-sampled back to ``image_size`` and stored as JPEG
    of quality 25-35, the others stay sharp (quality 95); ``xqlfw_pairs.txt`` holds ``xqlfw_pairs``, one
    sharp and one degraded image per pair."""
    entries = xqlfw_pairs(num_identities, images_per_identity, folds, per_fold, seed)
    degraded = xqlfw_degraded(num_identities, images_per_identity, seed)
    return _write_pairs_tree(root, num_identities, images_per_identity, folds, per_fold, seed, first_identity,
                             image_size, XQLFW_PAIRS, entries, degraded)


def write_lfw_bin(path: Path | str, num_identities: int, images_per_identity: int, folds: int = 10,
                  per_fold: int = 30, seed: int = 0, *, first_identity: int = LFW_FIRST_IDENTITY,
                  image_size: int = 112) -> Path:
    """An insightface ``lfw.bin``-like pack of the LFW stand-in's pairs (JPEG bytes, quality 95)."""
    entries = lfw_pairs(num_identities, images_per_identity, folds, per_fold, seed)
    index_of = {lfw_name(i): i for i in range(num_identities)}
    cache: dict[tuple[str, int], bytes] = {}
    encoded = []
    for entry in entries:
        for name, number in ((entry.name_a, entry.n_a), (entry.name_b, entry.n_b)):
            if (name, number) not in cache:
                img, quality = _lfw_image(seed, first_identity, index_of[name], number, image_size, False)
                cache[(name, number)] = _jpeg(img, quality)
            encoded.append(cache[(name, number)])
    try:
        return write_bin(path, encoded, [e.same for e in entries])
    except OSError as exc:
        raise DatasetError(f"cannot write the stand-in pack {path}: {exc}") from None


# ---------------------------------------------------------------------------------------------- SCface

_SCFACE_RES = {1: (8, 11), 2: (13, 16), 3: (22, 27)}  # native face size per distance, [low, high)


def write_scface_tree(root: Path | str, num_subjects: int = 20, seed: int = 0, *,
                      first_identity: int = SCFACE_FIRST_IDENTITY, include_infrared: bool = True) -> Path:
    """An SCface-style tree (see the module docstring) for subjects 001 .. ``num_subjects``; returns root."""
    if not 1 <= num_subjects <= 999:
        raise ValueError(f"num_subjects must be in 1..999 (3-digit names), got {num_subjects}")
    cameras = {}
    for cam in (1, 2, 3, 4, 5):
        r = np.random.default_rng([seed, cam, 0x5CF])
        cameras[cam] = (r.uniform(0.8, 1.2, 3).astype(np.float32), r.uniform(-12, 12, 3).astype(np.float32),
                        float(r.uniform(2, 7)))

    def build(tmp: Path) -> None:
        for s in range(1, num_subjects + 1):
            identity = first_identity + s
            mug = Image.fromarray(render_face(seed, identity, 0, 128), "RGB")
            _save(mug, tmp / f"mugshot_frontal_cropped_all/{s:03d}_frontal.JPG", 95)
            for d in (1, 2, 3):
                for cam in (1, 2, 3, 4, 5):
                    rng = np.random.default_rng([seed, identity, cam, d, 0x5CF])
                    gain, offset, sigma = cameras[cam]
                    arr = render_face(seed, identity, 1 + 3 * (cam - 1) + (d - 1), 112).astype(np.float32)
                    arr = arr * gain * np.float32(rng.uniform(0.85, 1.15)) + offset
                    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
                    res = int(rng.integers(*_SCFACE_RES[d]))
                    img = _noisy(img.resize((res, res), _BICUBIC), rng, sigma)
                    folder = tmp / f"surveillance_cameras_distance_{d}/cam_{cam}"
                    _save(img, folder / f"{s:03d}_cam{cam}_{d}.jpg", int(rng.integers(70, 91)))
                if include_infrared:
                    for cam in (6, 7):
                        rng = np.random.default_rng([seed, identity, cam, d, 0x5CF])
                        arr = render_face(seed, identity, 20 + 3 * (cam - 6) + d, 112)
                        grey = Image.fromarray(arr).convert("L")
                        res = int(rng.integers(*_SCFACE_RES[d]))
                        folder = tmp / f"surveillance_cameras_distance_{d}/cam_{cam}"
                        _save(grey.resize((res, res), _BICUBIC), folder / f"{s:03d}_cam{cam}_{d}.jpg", 80)

    return _write_tree(root, build)


# ---------------------------------------------------------------------------------------------- TinyFace


def _tiny_lr(seed: int, identity: int, sample: int) -> Image.Image:
    rng = np.random.default_rng([seed, identity, sample, 0x71F])
    res = int(rng.integers(10, 21))
    img = Image.fromarray(render_face(seed, identity, sample, 112), "RGB").resize((res, res), _BICUBIC)
    return _noisy(img, rng, float(rng.uniform(1, 4)))


def write_tinyface_tree(root: Path | str, num_probe_ids: int = 50, distractors: int = 500,
                        train_ids: int = 20, seed: int = 0, *, first_identity: int = TINYFACE_FIRST_IDENTITY,
                        train_images_per_id: int = 5) -> Path:
    """A TinyFace-style tree (see the module docstring); returns ``root``.

    Probe identity ``label`` (1 .. ``num_probe_ids``) has 1-2 probe and 1-2 gallery-match images; every
    distractor is a distinct identity; the ``train_ids`` training identities are disjoint from both.
    """
    if num_probe_ids < 1 or distractors < 0 or train_ids < 0 or train_images_per_id < 1:
        raise ValueError("num_probe_ids and train_images_per_id must be >= 1; distractors and train_ids >= 0")
    rng = np.random.default_rng([seed, 0x71F])
    counts = [(1 + int(rng.random() < 0.4), 1 + int(rng.random() < 0.5)) for _ in range(num_probe_ids)]

    def build(tmp: Path) -> None:
        test = tmp / "Testing_Set"
        for folder in ("Probe", "Gallery_Match", "Gallery_Distractor"):
            (test / folder).mkdir(parents=True)
        for label, (n_probe, n_match) in enumerate(counts, start=1):
            identity = first_identity + label
            for k in range(n_probe + n_match):
                folder = "Probe" if k < n_probe else "Gallery_Match"
                _save(_tiny_lr(seed, identity, k), test / folder / f"{label}_{k + 1}.jpg", 90)
        for k in range(distractors):
            identity = first_identity + 1_000_000 + k
            name = f"{k // 100 + 1}_{k % 100 + 1}_face{k + 1}.jpg"
            _save(_tiny_lr(seed, identity, 0), test / "Gallery_Distractor" / name, 90)
        train = tmp / "Training_Set"
        train.mkdir()
        for t in range(1, train_ids + 1):
            identity = first_identity + 500_000 + t
            for k in range(train_images_per_id):
                _save(_tiny_lr(seed, identity, k), train / str(t) / f"{t}_{k + 1}.jpg", 90)

    return _write_tree(root, build)


# ---------------------------------------------------------------------------------------------- all of them


def _manifest(seed: int, size_preset: str) -> dict:
    return {
        "standins_version": STANDINS_VERSION,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "preset": size_preset,
        "sizes": SIZE_PRESETS[size_preset],
    }


def standin_paths(folder: Path) -> dict[str, Path]:
    """Where ``materialise_standins`` puts each stand-in inside its folder."""
    return {
        "lfw": folder / "lfw",
        "lfw_bin": folder / "lfw.bin",
        "xqlfw": folder / "xqlfw",
        "scface": folder / "scface",
        "tinyface": folder / "tinyface",
    }


def materialise_standins(cache_root: Path | str, seed: int = 0, size_preset: str = "tiny") -> dict[str, Path]:
    """Write every stand-in under ``<cache_root>/benchmarks-<preset>-seed<seed>`` once; return their paths.

    Keys: ``lfw`` (tree with ``pairs.txt``), ``lfw_bin`` (the pack file), ``xqlfw`` (tree with
    ``xqlfw_pairs.txt``), ``scface`` and ``tinyface`` (tree roots). Nothing is written when the folder's
    ``COMPLETE.json`` marker matches this version, seed and preset.
    """
    if size_preset not in SIZE_PRESETS:
        raise ValueError(f"size_preset must be one of {sorted(SIZE_PRESETS)}, got {size_preset!r}")
    folder = Path(cache_root) / f"benchmarks-{size_preset}-seed{seed}"
    paths = standin_paths(folder)
    expected = _manifest(seed, size_preset)
    marker = folder / COMPLETE_MARKER
    try:
        if json.loads(marker.read_text()) == expected and all(p.exists() for p in paths.values()):
            return paths
    except (OSError, ValueError):
        pass
    sizes = SIZE_PRESETS[size_preset]
    lfw, scface, tiny = sizes["lfw"], sizes["scface"], sizes["tinyface"]
    try:
        marker.unlink(missing_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot write the stand-in cache {folder}: {exc}") from None
    write_lfw_tree(paths["lfw"], seed=seed, **lfw)
    write_lfw_bin(paths["lfw_bin"], seed=seed, **lfw)
    write_xqlfw_tree(paths["xqlfw"], seed=seed, **lfw)
    write_scface_tree(paths["scface"], seed=seed, **scface)
    write_tinyface_tree(paths["tinyface"], seed=seed, **tiny)
    try:
        write_atomic(marker, json.dumps(expected, indent=2).encode())
    except OSError as exc:
        raise DatasetError(f"cannot write the stand-in cache marker {marker}: {exc}") from None
    return paths
