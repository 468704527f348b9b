"""SCface (Grgic et al., 2011): 130 subjects, a high-resolution frontal mugshot each, and surveillance shots
from five visible-light cameras at three distances.

The distributed tree (and the file list of the bob.db.scface package, whose paths carry no extension):

* gallery: ``mugshot_frontal_cropped_all/001_frontal.JPG`` (note the upper-case extension);
* probes: ``surveillance_cameras_distance_<D>/cam_<C>/001_cam<C>_<D>.jpg``, camera ``C`` in 1..5,
  distance ``D`` in 1..3: d1 = 4.20 m (the smallest faces), d2 = 2.60 m, d3 = 1.00 m.

Infrared cameras (``_cam6_``, ``_cam7_``, ``_cam8_``) are not part of the LRFR protocols and are skipped.
The reader does not rely on folder names: it walks the whole tree and recognises files by name
(``<id>_frontal.<ext>`` and ``<id>_cam<C>_<D>.<ext>``, extension case-insensitive), so flat copies and
re-arranged folders work too. When the same file name appears twice (the distribution also ships
``surveillance_cameras_all`` and uncropped mugshots), the mugshot under a folder whose name contains
``cropped`` wins, otherwise the first in sorted path order.

Images are decoded and stretched to ``size x size``; real surveillance shots should be face crops (align
them first). The whole set is ~2,100 images, so ``load_scface`` decodes eagerly.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from engine.data.folder import IMAGE_EXTENSIONS
from engine.data.pairs import decode_files
from engine.errors import DatasetError

log = logging.getLogger(__name__)

NUM_SUBJECTS = 130
VISIBLE_CAMERAS = (1, 2, 3, 4, 5)
INFRARED_CAMERAS = (6, 7, 8)
DISTANCES = (1, 2, 3)
DISTANCE_METRES = {1: 4.2, 2: 2.6, 3: 1.0}
GALLERY_FOLDER = "mugshot_frontal_cropped_all"

_EXT = "|".join(re.escape(e[1:]) for e in sorted(IMAGE_EXTENSIONS))
MUGSHOT_RE = re.compile(rf"^(\d+)_frontal\.(?:{_EXT})$", re.IGNORECASE)
PROBE_RE = re.compile(rf"^(\d+)_cam(\d+)_(\d+)\.(?:{_EXT})$", re.IGNORECASE)


def mugshot_name(subject: int) -> str:
    """The distributed gallery path relative to the root: ``mugshot_frontal_cropped_all/001_frontal.JPG``."""
    return f"{GALLERY_FOLDER}/{subject:03d}_frontal.JPG"


def probe_name(subject: int, camera: int, distance: int) -> str:
    """The distributed probe path relative to the root.

    E.g. ``surveillance_cameras_distance_1/cam_2/001_cam2_1.jpg`` for subject 1, camera 2, distance 1.
    """
    return f"surveillance_cameras_distance_{distance}/cam_{camera}/{subject:03d}_cam{camera}_{distance}.jpg"


class SCfaceProbes(NamedTuple):
    """The probes at one distance, sorted by (subject, camera)."""

    images: torch.Tensor  # uint8 N x 3 x S x S
    ids: np.ndarray  # int64 subject ids
    cams: np.ndarray  # int64 camera numbers 1..5


@dataclass
class SCfaceFiles:
    """What a scan found: the mugshot per subject and the probe per (subject, camera, distance)."""

    root: Path
    gallery: dict[int, Path]
    probes: dict[tuple[int, int, int], Path]
    infrared_skipped: int = 0

    @property
    def subjects(self) -> list[int]:
        return sorted(set(self.gallery) | {s for s, _, _ in self.probes})


@dataclass
class SCface:
    """The SCface gallery (one mugshot per subject) and the probes per distance (1, 2, 3)."""

    gallery_images: torch.Tensor  # uint8 N x 3 x S x S
    gallery_ids: np.ndarray  # int64
    probes: dict[int, SCfaceProbes]
    root: Path
    gallery_files: list[Path] = field(default_factory=list)
    probe_files: dict[int, list[Path]] = field(default_factory=dict)

    @property
    def subjects(self) -> np.ndarray:
        return np.asarray(self.gallery_ids)

    def select(self, ids: np.ndarray | list[int]) -> SCface:
        """The same set restricted to the given subjects (gallery and probes), e.g. a protocol's test ids."""
        keep = set(int(i) for i in np.asarray(ids).ravel())
        g = np.array([int(i) in keep for i in self.gallery_ids], dtype=bool)
        probes, files = {}, {}
        for d, p in self.probes.items():
            m = np.array([int(i) in keep for i in p.ids], dtype=bool)
            idx = torch.from_numpy(np.flatnonzero(m))
            probes[d] = SCfaceProbes(p.images[idx], p.ids[m], p.cams[m])
            files[d] = [f for f, k in zip(self.probe_files.get(d, []), m, strict=False) if k]
        return SCface(
            gallery_images=self.gallery_images[torch.from_numpy(np.flatnonzero(g))],
            gallery_ids=self.gallery_ids[g],
            probes=probes,
            root=self.root,
            gallery_files=[f for f, k in zip(self.gallery_files, g, strict=False) if k],
            probe_files=files,
        )


def _prefer(current: Path | None, candidate: Path, mugshot: bool) -> Path:
    if current is None:
        return candidate
    if mugshot:
        cur_c = any("cropped" in p.lower() for p in current.parent.parts)
        new_c = any("cropped" in p.lower() for p in candidate.parent.parts)
        if new_c and not cur_c:
            return candidate
    return current


def _example(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (", ..." if len(items) > limit else "")


def scan_scface(root: Path | str, expected_subjects: int | None = NUM_SUBJECTS,
                check: bool = True) -> SCfaceFiles:
    """Find the SCface files under ``root`` (recursively, by file name) and check the set is complete.

    With ``check=True``: every subject needs its mugshot and all 15 visible probes (5 cameras x 3 distances),
    and, unless ``expected_subjects`` is None, there must be exactly that many subjects (130 for the real
    set). Otherwise a ``DatasetError`` lists (some of) what is missing and how much. With ``check=False``,
    probes of subjects without a mugshot are dropped (with a warning) and missing probes are just absent.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"SCface root {root} does not exist or is not a directory")
    found = _walk_scface(root)
    if not found.gallery and not found.probes:
        raise DatasetError(
            f"no SCface images under {root}: expected {mugshot_name(1)} and {probe_name(1, 1, 1)} (5 visible "
            f"cameras x 3 distances per subject)"
        )
    if check:
        _check_complete(found, expected_subjects)
    else:
        _drop_probes_without_mugshot(found)
    return found


def _walk_scface(root: Path) -> SCfaceFiles:
    """Every mugshot and visible-camera probe under ``root``, recognised by file name (one copy of each)."""
    gallery: dict[int, Path] = {}
    probes: dict[tuple[int, int, int], Path] = {}
    infrared = 0
    duplicates = 0
    try:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                if m := MUGSHOT_RE.match(fname):
                    subject = int(m.group(1))
                    duplicates += subject in gallery
                    gallery[subject] = _prefer(gallery.get(subject), Path(dirpath) / fname, mugshot=True)
                elif m := PROBE_RE.match(fname):
                    subject, cam, dist = int(m.group(1)), int(m.group(2)), int(m.group(3))
                    if cam not in VISIBLE_CAMERAS or dist not in DISTANCES:
                        infrared += cam in INFRARED_CAMERAS
                        continue
                    key = (subject, cam, dist)
                    duplicates += key in probes
                    probes[key] = _prefer(probes.get(key), Path(dirpath) / fname, mugshot=False)
    except OSError as exc:
        raise DatasetError(f"cannot list the SCface tree {root}: {exc}") from None
    if duplicates:
        log.info("%s: %d SCface file names occur more than once; using one copy of each", root, duplicates)
    return SCfaceFiles(root, gallery, probes, infrared)


def _drop_probes_without_mugshot(found: SCfaceFiles) -> None:
    """``check=False``: a subject without a mugshot cannot be identified, so its probes are left out."""
    no_mugshot = [s for s in found.subjects if s not in found.gallery]
    if no_mugshot:
        log.warning("%s: %d subjects have probes but no mugshot; their probes are left out (e.g. %s)",
                    found.root, len(no_mugshot), _example([mugshot_name(s) for s in no_mugshot]))
        for key in [k for k in found.probes if k[0] not in found.gallery]:
            del found.probes[key]


def _check_complete(found: SCfaceFiles, expected_subjects: int | None) -> None:
    """``DatasetError`` listing what a complete set lacks: mugshots, probes, subjects."""
    subjects = found.subjects
    problems = []
    no_mugshot = [s for s in subjects if s not in found.gallery]
    if no_mugshot:
        names = _example([mugshot_name(s) for s in no_mugshot])
        problems.append(f"{len(no_mugshot)} mugshot(s) missing ({names})")
    missing = [probe_name(s, c, d) for s in subjects for d in DISTANCES for c in VISIBLE_CAMERAS
               if (s, c, d) not in found.probes]
    if missing:
        problems.append(f"{len(missing)} surveillance image(s) missing ({_example(missing)})")
    if expected_subjects is not None and len(subjects) != expected_subjects:
        problems.append(f"{len(subjects)} subjects found, {expected_subjects} expected "
                        f"(pass expected_subjects=None to accept a subset)")
    if problems:
        raise DatasetError(f"SCface at {found.root} is incomplete: " + "; ".join(problems))


def load_scface(root: Path | str, size: int = 112, expected_subjects: int | None = NUM_SUBJECTS,
                check: bool = True) -> SCface:
    """Decode the gallery (sorted by subject) and the probes of each distance (sorted by subject, camera)."""
    found = scan_scface(root, expected_subjects=expected_subjects, check=check)
    ids = sorted(found.gallery)
    gallery_files = [found.gallery[s] for s in ids]
    probes: dict[int, SCfaceProbes] = {}
    probe_files: dict[int, list[Path]] = {}
    for d in DISTANCES:
        keys = sorted((s, c) for s, c, dd in found.probes if dd == d)
        files = [found.probes[(s, c, d)] for s, c in keys]
        probes[d] = SCfaceProbes(
            decode_files(files, size),
            np.array([s for s, _ in keys], dtype=np.int64),
            np.array([c for _, c in keys], dtype=np.int64),
        )
        probe_files[d] = files
    return SCface(
        gallery_images=decode_files(gallery_files, size),
        gallery_ids=np.array(ids, dtype=np.int64),
        probes=probes,
        root=found.root,
        gallery_files=gallery_files,
        probe_files=probe_files,
    )


# The evaluation protocols (``eval.scface_protocols``). The paper's Tables 1 (w/o fine-tuning), 4 and 6 test on
# the 80 ids left after the DCR split, not on all 130: the released loop (hurricanelx/LRFR, SCface_eval.py)
# reads ``testing_sid_id.lst`` and ``distance_<D>_test.lst``, and every d1/d2/d3 cell of Tables 4 and 6 is a
# whole number of 400 probes (80 ids x 5 cameras), eight of them impossible with 650 (130 x 5).
ZERO_SHOT = "zero_shot"  # the DCR test ids, no fine-tuning (the paper's "w/o fine-tuning")
FINETUNE = "finetune"  # fine-tune on the DCR training ids, test on the same test ids
ZERO_SHOT_ALL = "zero_shot_all130"  # every subject (130 on the real set), no fine-tuning; not in the paper
PROTOCOLS = (ZERO_SHOT, FINETUNE, ZERO_SHOT_ALL)
DCR_TRAIN_IDS = 50  # of NUM_SUBJECTS


def dcr_train_count(num_subjects: int, train_ids: int = DCR_TRAIN_IDS) -> int:
    """How many subjects the DCR split holds out for fine-tuning.

    The full set uses ``train_ids`` as given (50 -> 80 test ids); a smaller set (a synthetic stand-in) keeps
    the paper's proportion 50/130, never more than ``train_ids`` and at least one.
    """
    if num_subjects >= NUM_SUBJECTS:
        return train_ids
    return min(train_ids, max(1, round(num_subjects * DCR_TRAIN_IDS / NUM_SUBJECTS)))


def saved_split(record: object, ids: np.ndarray | list[int], n_train: int,
                seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The (train, test) ids of a saved split (``scface_split.json``) when it still fits this set.

    It fits when it was drawn with ``seed``, holds ``n_train`` training ids, and its two halves are disjoint
    and together exactly the subjects ``ids``; otherwise None (draw a new one with ``split_ids``).
    """
    if not isinstance(record, dict) or record.get("seed") != seed:
        return None
    try:
        train = np.asarray(record["train_ids"], dtype=np.int64)
        test = np.asarray(record["test_ids"], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        return None
    if train.ndim != 1 or test.ndim != 1 or len(train) != n_train or not len(test):
        return None
    subjects = np.unique(np.asarray(ids, dtype=np.int64))
    both = np.concatenate([train, test])
    if len(np.unique(both)) != len(both) or not np.array_equal(np.sort(both), subjects):
        return None
    return np.sort(train), np.sort(test)


def split_ids(ids: np.ndarray | list[int], n_train: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split subjects into ``n_train`` fine-tuning ids and the rest for testing (the DCR protocol: 50 / 80).

    Seeded and independent of the order of ``ids`` (duplicates are collapsed); both halves come back sorted.
    """
    unique = np.unique(np.asarray(ids, dtype=np.int64))
    if n_train < 0:
        raise ValueError(f"n_train must be >= 0, got {n_train}")
    if n_train >= len(unique):
        raise DatasetError(
            f"cannot hold out {n_train} subjects for fine-tuning: only {len(unique)} subjects, "
            f"and at least one must remain for testing"
        )
    perm = np.random.default_rng(seed).permutation(len(unique))
    return np.sort(unique[perm[:n_train]]), np.sort(unique[perm[n_train:]])
