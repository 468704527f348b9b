"""LFW-style verification pairs: ``pairs.txt`` over an image tree, and the ``VerificationPairs`` they load to.

The format (LFW's ``pairs.txt``; XQLFW's ``xqlfw_pairs.txt`` is the same format over an LFW-style tree):

* line 1, the header: ``<folds> <pairs per kind per fold>`` (``10 300`` for LFW's view 2), or a single
  number ``<pairs per kind>`` meaning one fold (``pairsDevTrain.txt`` / ``pairsDevTest.txt``);
* then, fold after fold, ``N`` matched lines ``name n1 n2`` followed by ``N`` mismatched lines
  ``name1 n1 name2 n2``; fields are separated by whitespace (tabs in the distributed files);
* image ``n`` of ``name`` is ``<root>/<name>/<name>_<n:04d>.jpg``, numbered from 1.

Blank lines are ignored (line numbers in messages still count them). ``VerificationPairs`` is what every
verification reader returns (this module's tree reader and ``binpack.load_bin``): pair ``i`` is
``images[2i]`` and ``images[2i + 1]``, in file order, so contiguous 10-fold evaluation keeps each fold's mix
of matched and mismatched pairs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.data.folder import IMAGE_EXTENSIONS, decode_image
from engine.errors import DatasetError

DEFAULT_EXTENSION = ".jpg"


@dataclass
class VerificationPairs:
    """Decoded verification pairs: pair ``i`` is ``images[2 * i]`` vs ``images[2 * i + 1]``.

    ``images`` is uint8 ``2P x 3 x S x S``; ``issame`` is a bool array of ``P``; ``folds`` is how many
    contiguous folds the pairs form: the pairs file's header says (``10 300`` for LFW's view 2, ``5 300``
    gives 5), 10 for insightface packs. ``per_fold`` is the header's matched (= mismatched) pairs per fold,
    None where no header says. The k-fold protocol must split into ``folds`` folds (``fold_bounds``): with
    any other count a fold can hold pairs of one kind only.
    """

    images: torch.Tensor
    issame: np.ndarray
    name: str
    folds: int = 10
    per_fold: int | None = None

    def __post_init__(self) -> None:
        self.issame = np.asarray(self.issame, dtype=bool)
        if self.issame.ndim != 1:
            raise ValueError(f"issame must be one-dimensional, got shape {self.issame.shape}")
        if self.folds < 1:
            raise ValueError(f"folds must be >= 1, got {self.folds}")
        if self.per_fold is not None and 2 * self.per_fold * self.folds != len(self.issame):
            raise ValueError(f"{self.folds} folds x 2 x {self.per_fold} pairs per kind != {len(self.issame)} pairs")
        if self.images.ndim != 4 or self.images.shape[0] != 2 * len(self.issame):
            raise ValueError(
                f"images must be (2P) x C x H x W with P = {len(self.issame)} pairs, "
                f"got {tuple(self.images.shape)}"
            )

    @property
    def num_pairs(self) -> int:
        return len(self.issame)

    def fold_bounds(self) -> np.ndarray:
        """``folds + 1`` pair indices: fold ``f`` is pairs ``bounds[f]:bounds[f + 1]`` (contiguous, sized as
        sklearn's ``KFold(folds)``, so a pairs file's folds come out exactly as its header declares)."""
        n, k = len(self.issame), self.folds
        sizes = np.full(k, n // k)
        sizes[: n % k] += 1
        return np.concatenate([[0], np.cumsum(sizes)])

    @property
    def first(self) -> torch.Tensor:
        """The first image of every pair (a view, ``P x 3 x S x S``)."""
        return self.images[0::2]

    @property
    def second(self) -> torch.Tensor:
        """The second image of every pair (a view, ``P x 3 x S x S``)."""
        return self.images[1::2]


@dataclass(frozen=True)
class PairEntry:
    """One line of a pairs file.

    For a matched pair ``name_b == name_a``; ``line`` is 1-based (0 if made in code).
    """

    name_a: str
    n_a: int
    name_b: str
    n_b: int
    same: bool
    line: int = 0

    @classmethod
    def matched(cls, name: str, n_a: int, n_b: int, line: int = 0) -> PairEntry:
        return cls(name, n_a, name, n_b, True, line)

    @classmethod
    def mismatched(cls, name_a: str, n_a: int, name_b: str, n_b: int, line: int = 0) -> PairEntry:
        return cls(name_a, n_a, name_b, n_b, False, line)

    def to_line(self) -> str:
        if self.same:
            return f"{self.name_a}\t{self.n_a}\t{self.n_b}"
        return f"{self.name_a}\t{self.n_a}\t{self.name_b}\t{self.n_b}"


def image_path(root: Path | str, name: str, number: int, ext: str = DEFAULT_EXTENSION) -> Path:
    """``<root>/<name>/<name>_<number:04d><ext>``, LFW's naming."""
    return Path(root) / name / f"{name}_{number:04d}{ext}"


def write_atomic(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch single-threaded for a while (restored afterwards).

    Per-image copies of a 112 px face are just above torch's parallel grain size, so with the default
    intra-op threads every copy wakes the thread pool: on a busy 2-core machine that costs ~8 ms per image
    instead of ~0.01 ms. Serial decoding loops gain nothing from those threads.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def decode_files(files: Sequence[Path], size: int) -> torch.Tensor:
    """Decode image files into one uint8 ``N x 3 x size x size`` tensor; ``DatasetError`` names a bad file."""
    out = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    with single_threaded():
        for i, path in enumerate(files):
            out[i] = decode_image(path, size, str(path))
    return out


# ---------------------------------------------------------------------------------------------- parsing


def _number(token: str) -> int | None:
    """A positive decimal image number (ASCII digits only), else None."""
    if not (token.isascii() and token.isdigit()):
        return None
    value = int(token)
    return value if value >= 1 else None


def _valid_name(token: str) -> bool:
    return token not in (".", "..") and "/" not in token and "\\" not in token


def _parse_header(path: Path, text: str) -> tuple[int, int]:
    tokens = text.split()
    values = [_number(t) for t in tokens]
    if len(tokens) in (1, 2) and all(v is not None for v in values):
        return (1, values[0]) if len(values) == 1 else (values[0], values[1])
    raise DatasetError(
        f"{path}, line 1: bad header {text.strip()!r}; expected '<folds> <pairs per fold>' (e.g. '10 300') "
        f"or a single pair count (e.g. '500')"
    )


def _parse_entry(path: Path, lineno: int, text: str) -> PairEntry:
    tokens = text.split()
    if len(tokens) == 3:
        name, a, b = tokens
        n_a, n_b = _number(a), _number(b)
        if _valid_name(name) and n_a is not None and n_b is not None:
            return PairEntry.matched(name, n_a, n_b, lineno)
    elif len(tokens) == 4:
        name_a, a, name_b, b = tokens
        n_a, n_b = _number(a), _number(b)
        if _valid_name(name_a) and _valid_name(name_b) and n_a is not None and n_b is not None:
            return PairEntry.mismatched(name_a, n_a, name_b, n_b, lineno)
    raise DatasetError(
        f"{path}, line {lineno}: cannot parse {text.strip()!r}; expected 'name n1 n2' (matched) or "
        f"'name1 n1 name2 n2' (mismatched) with image numbers >= 1"
    )


def parse_pairs(pairs_path: Path | str) -> tuple[int, int, list[PairEntry]]:
    """Read a pairs file: ``(folds, pairs per kind per fold, entries)``, all checks done.

    Raises ``DatasetError`` naming the file (and the 1-based line where there is one) for an unreadable
    file, a bad header, an unparsable line, a line count that disagrees with the header, and a fold whose
    lines are not ``N`` matched followed by ``N`` mismatched.
    """
    path = Path(pairs_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"pairs file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read pairs file {path}: {exc}") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DatasetError(
            f"{path}, line 1: empty header; expected '<folds> <pairs per fold>' such as '10 300'"
        )
    folds, per_fold = _parse_header(path, lines[0])
    entries = [_parse_entry(path, i, t) for i, t in enumerate(lines[1:], start=2) if t.strip()]
    expected = 2 * folds * per_fold
    if len(entries) != expected:
        raise DatasetError(
            f"{path}: the header says {folds} fold(s) x ({per_fold} matched + {per_fold} mismatched) = "
            f"{expected} pairs, but the file has {len(entries)} pair lines"
        )
    for k, entry in enumerate(entries):
        fold, pos = divmod(k, 2 * per_fold)
        want_same = pos < per_fold
        if entry.same != want_same:
            want, got = ("matched", "mismatched") if want_same else ("mismatched", "matched")
            raise DatasetError(
                f"{path}, line {entry.line}: expected a {want} pair here (each fold is {per_fold} matched "
                f"then {per_fold} mismatched lines; this is fold {fold + 1}), found a {got} one: "
                f"{entry.to_line()!r}"
            )
    return folds, per_fold, entries


def read_pairs(pairs_path: Path | str) -> list[PairEntry]:
    """The pair lines of an LFW-style pairs file, checked (see ``parse_pairs``)."""
    return parse_pairs(pairs_path)[2]


def write_pairs(path: Path | str, folds: int, per_fold: int, entries: Iterable[PairEntry]) -> Path:
    """Write an LFW-style pairs file (header ``folds<TAB>per_fold``, tab-separated lines), atomically.

    ``entries`` must already be in LFW layout: per fold, ``per_fold`` matched then ``per_fold`` mismatched.
    """
    entries = list(entries)
    if folds < 1 or per_fold < 1:
        raise ValueError(f"folds and per_fold must be >= 1, got {folds}, {per_fold}")
    if len(entries) != 2 * folds * per_fold:
        raise ValueError(
            f"{folds} folds x 2 x {per_fold} = {2 * folds * per_fold} entries expected, got {len(entries)}"
        )
    for k, entry in enumerate(entries):
        if entry.same != (k % (2 * per_fold) < per_fold):
            raise ValueError(
                f"entry {k} breaks the layout (per fold: {per_fold} matched, then {per_fold} mismatched)"
            )
        if entry.same and entry.name_a != entry.name_b:
            raise ValueError(f"entry {k} is marked matched but names two identities")
    text = f"{folds}\t{per_fold}\n" + "".join(e.to_line() + "\n" for e in entries)
    return write_atomic(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------- loading


def _resolve(root: Path, name: str, number: int, ext: str) -> Path | None:
    """The image file for ``(name, number)``: ``ext`` first, then any other image extension."""
    first = image_path(root, name, number, ext)
    if first.is_file():
        return first
    for other in sorted(IMAGE_EXTENSIONS | {e.upper() for e in IMAGE_EXTENSIONS}):
        if other != ext:
            candidate = image_path(root, name, number, other)
            if candidate.is_file():
                return candidate
    return None


def pair_files(root: Path | str, pairs_path: Path | str,
               ext: str = DEFAULT_EXTENSION) -> tuple[list[Path], np.ndarray, int]:
    """Resolve a pairs file against an image tree without decoding: ``(2P files, issame, folds)``.

    ``folds`` is the header's fold count (the pairs are ``folds`` x (N matched + N mismatched) lines).

    Raises ``DatasetError`` naming the pairs file and line of the first referenced image that does not
    exist, with the number of missing images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image tree {root} does not exist or is not a directory")
    folds, _, entries = parse_pairs(pairs_path)
    resolved: dict[tuple[str, int], Path | None] = {}
    missing: list[tuple[PairEntry, Path]] = []
    files: list[Path] = []
    for entry in entries:
        for name, number in ((entry.name_a, entry.n_a), (entry.name_b, entry.n_b)):
            key = (name, number)
            if key not in resolved:
                resolved[key] = _resolve(root, name, number, ext)
                if resolved[key] is None:
                    missing.append((entry, image_path(root, name, number, ext)))
            found = resolved[key]
            files.append(found if found is not None else image_path(root, name, number, ext))
    if missing:
        entry, path = missing[0]
        more = f" ({len(missing)} referenced images are missing in all)" if len(missing) > 1 else ""
        raise DatasetError(f"{pairs_path}, line {entry.line}: image {path} does not exist{more}")
    issame = np.array([e.same for e in entries], dtype=bool)
    return files, issame, folds


def load_pairs_tree(root: Path | str, pairs_path: Path | str, size: int = 112, name: str | None = None,
                    ext: str = DEFAULT_EXTENSION) -> VerificationPairs:
    """Load the pairs of an LFW-style tree (LFW, XQLFW, ...) into memory, every image ``size x size``.

    Each distinct image is decoded once (LFW's 6000 pairs reference about 7700 images). ``name`` defaults
    to the tree's folder name.
    """
    files, issame, folds = pair_files(root, pairs_path, ext)
    unique: dict[Path, int] = {}
    index = [unique.setdefault(f, len(unique)) for f in files]
    decoded = decode_files(list(unique), size)
    images = decoded[torch.as_tensor(index, dtype=torch.long)] if index else decoded
    return VerificationPairs(images=images, issame=issame, name=name or Path(root).name, folds=folds,
                             per_fold=len(issame) // (2 * folds))
