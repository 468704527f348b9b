"""TinyFace (Cheng et al., ACCV 2018): native low-resolution faces for 1:N identification.

The distributed tree::

    <root>/Testing_Set/Probe/              3,728 probe faces
    <root>/Testing_Set/Gallery_Match/      4,443 gallery faces of the probe identities
    <root>/Testing_Set/Gallery_Distractor/ 153,428 faces of other people
    <root>/Training_Set/<identity>/...     for fine-tuning

Labels: the integer before the first ``_`` of a probe or gallery-match file name (``1_3.jpg`` -> 1); a
name without ``_`` uses its whole stem. Distractors are nobody in the probe set: their names are not
parsed (they follow other conventions) and every distractor gets the label ``DISTRACTOR_LABEL`` (-1),
which matches no probe. A tree that keeps ``Probe`` / ``Gallery_*`` directly under the root (as aligned
re-distributions do) is accepted too, and split folders are listed recursively (some re-distributions
spread the distractors over sub-folders).

The gallery is 157,871 images, 5.9 GB as a uint8 tensor at 112 px: use ``tinyface_splits`` (lazy datasets
that decode on access, for a DataLoader) for the real set; ``load_tinyface`` decodes eagerly and refuses
more than ``max_bytes``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.data.folder import IMAGE_EXTENSIONS, decode_image
from engine.data.pairs import decode_files
from engine.errors import DatasetError

DISTRACTOR_LABEL = -1
SPLIT_FOLDERS = {"probe": "Probe", "match": "Gallery_Match", "distractor": "Gallery_Distractor"}
TESTING_FOLDER = "Testing_Set"
TRAINING_FOLDER = "Training_Set"
DEFAULT_MAX_BYTES = 2 << 30


def parse_label(path: Path | str) -> int:
    """The identity label of a probe or gallery-match file: the integer before the first ``_``."""
    stem = Path(path).stem
    head = stem.split("_", 1)[0]
    if not (head.isascii() and head.isdigit()):
        raise DatasetError(f"TinyFace file {path}: the name must start with an integer identity label "
                           f"followed by '_' (e.g. 1_3.jpg)")
    return int(head)


class TinyFaceSplit(Dataset):
    """Image files with labels; item ``i`` is ``(uint8 3 x size x size tensor, label)``, decoded on access."""

    def __init__(self, name: str, files: Sequence[Path], labels: np.ndarray | Sequence[int],
                 size: int = 112) -> None:
        self.name = name
        self.files = list(files)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(self.files):
            raise ValueError(f"{len(self.files)} files but {len(self.labels)} labels")
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        return decode_image(path, self.size, str(path)), int(self.labels[index])

    def load(self) -> torch.Tensor:
        """Decode every image into one ``N x 3 x size x size`` tensor."""
        return decode_files(self.files, self.size)

    def __repr__(self) -> str:
        return f"TinyFaceSplit({self.name!r}, {len(self)} images)"


@dataclass
class TinyFace:
    """Probes and the gallery (matches then distractors; distractor labels are ``DISTRACTOR_LABEL``)."""

    probe_images: torch.Tensor  # uint8 N x 3 x S x S
    probe_labels: np.ndarray  # int64
    gallery_images: torch.Tensor  # uint8 M x 3 x S x S
    gallery_labels: np.ndarray  # int64, -1 for distractors
    root: Path
    probe_files: list[Path] = field(default_factory=list)
    gallery_files: list[Path] = field(default_factory=list)

    @property
    def num_distractors(self) -> int:
        return int((self.gallery_labels == DISTRACTOR_LABEL).sum())


def testing_root(root: Path | str) -> Path:
    """``<root>/Testing_Set``, or ``root`` itself when it holds ``Probe`` directly."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"TinyFace root {root} does not exist or is not a directory")
    if (root / TESTING_FOLDER).is_dir():
        return root / TESTING_FOLDER
    if (root / SPLIT_FOLDERS["probe"]).is_dir():
        return root
    raise DatasetError(f"{root} is not a TinyFace tree: expected {root / TESTING_FOLDER}/Probe, "
                       f"Gallery_Match and Gallery_Distractor")


def training_root(root: Path | str) -> Path:
    """``<root>/Training_Set`` (identity folders for fine-tuning, readable by ``ImageFolderDataset``)."""
    root = Path(root)
    path = root / TRAINING_FOLDER
    if not path.is_dir():
        raise DatasetError(f"TinyFace training set not found: expected {path}/<identity>/<images>")
    return path


def _list_images(folder: Path) -> list[Path]:
    files: list[Path] = []
    try:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files.extend(Path(dirpath) / f for f in sorted(filenames)
                         if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    except OSError as exc:
        raise DatasetError(f"cannot list {folder}: {exc}") from None
    return files


def _check_which(which: Sequence[str]) -> tuple[str, ...]:
    which = tuple(which)
    unknown = [w for w in which if w not in SPLIT_FOLDERS]
    if unknown or not which:
        raise ValueError(f"which must name some of {tuple(SPLIT_FOLDERS)}, got {which}")
    return which


def tinyface_splits(root: Path | str, size: int = 112,
                    which: Sequence[str] = ("probe", "match", "distractor")) -> dict[str, TinyFaceSplit]:
    """Lazy views of the requested splits (keys ``probe``, ``match``, ``distractor``); nothing is decoded.

    Raises ``DatasetError`` for a missing or empty split folder and for a probe or match file whose name
    does not start with an integer label.
    """
    which = _check_which(which)
    base = testing_root(root)
    splits = {}
    for key in which:
        folder = base / SPLIT_FOLDERS[key]
        if not folder.is_dir():
            raise DatasetError(f"TinyFace split folder {folder} does not exist")
        files = _list_images(folder)
        if not files:
            raise DatasetError(f"TinyFace split folder {folder} holds no images")
        if key == "distractor":
            labels = np.full(len(files), DISTRACTOR_LABEL, dtype=np.int64)
        else:
            labels = np.array([parse_label(f) for f in files], dtype=np.int64)
        splits[key] = TinyFaceSplit(key, files, labels, size)
    if "probe" in splits and "match" in splits:
        unmatched = sorted(set(splits["probe"].labels.tolist()) - set(splits["match"].labels.tolist()))
        if unmatched:
            raise DatasetError(
                f"TinyFace at {root}: {len(unmatched)} probe identities have no image in Gallery_Match "
                f"(e.g. {', '.join(map(str, unmatched[:5]))})"
            )
    return splits


def load_tinyface(root: Path | str, size: int = 112, which: Sequence[str] = ("probe", "match", "distractor"),
                  max_bytes: int | None = DEFAULT_MAX_BYTES) -> TinyFace:
    """Decode the requested splits into memory; the gallery is the matches followed by the distractors.

    Splits not requested come back empty. Refuses (``DatasetError``) when the decoded tensors would exceed
    ``max_bytes`` (2 GiB by default; None for no limit): stream ``tinyface_splits`` with a DataLoader then.
    """
    splits = tinyface_splits(root, size, which)
    total = sum(len(s) for s in splits.values()) * 3 * size * size
    if max_bytes is not None and total > max_bytes:
        raise DatasetError(
            f"TinyFace at {root}: decoding {sum(len(s) for s in splits.values())} images at {size} px needs "
            f"{total / 2**30:.1f} GiB (limit {max_bytes / 2**30:.1f} GiB); stream engine.data.tinyface."
            f"tinyface_splits with a DataLoader instead"
        )
    empty = torch.empty((0, 3, size, size), dtype=torch.uint8)
    none = np.empty(0, dtype=np.int64)
    probe = splits.get("probe")
    gallery = [splits[k] for k in ("match", "distractor") if k in splits]
    gallery_files = [f for g in gallery for f in g.files]
    return TinyFace(
        probe_images=probe.load() if probe is not None else empty,
        probe_labels=probe.labels if probe is not None else none,
        gallery_images=decode_files(gallery_files, size) if gallery else empty,
        gallery_labels=np.concatenate([g.labels for g in gallery]) if gallery else none,
        root=Path(root),
        probe_files=list(probe.files) if probe is not None else [],
        gallery_files=gallery_files,
    )
