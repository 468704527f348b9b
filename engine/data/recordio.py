"""MXNet RecordIO packs (insightface's ``train.rec`` + ``train.idx``), read and written without mxnet.

Layout, as written by dmlc-core's RecordIOWriter and mxnet.recordio:

* ``.idx``: text lines ``key<TAB>offset``.
* ``.rec``: at each offset a record ``uint32 magic 0xced7230a``, ``uint32 lrecord`` (upper 3 bits
  cflag, lower 29 bits length), ``length`` payload bytes, zero padding to a multiple of 4. A payload
  that contains the magic word at a 4-byte-aligned position is split there into parts (cflag 1 = first,
  2 = middle, 3 = last; 0 = whole record) and the magic word itself is dropped; readers put it back.
* payload: ``IRHeader`` struct ``<IfQQ`` (flag, label, id, id2); if ``flag > 0``, ``flag`` float32
  labels follow (the identity is the first); then the encoded image (JPEG/PNG).
* insightface (``face2rec2.py``): record 0 is a header, ``flag = 2`` and NO image bytes after the labels,
  whose labels are ``(first identity-record key, end key)``: images are keys ``1 .. label[0] - 1`` and
  keys ``label[0] .. label[1] - 1`` are per-identity records (image-key ranges, no image either).
* mxnet's ``tools/im2rec.py`` writes every ``.lst`` line as an image record under the line's own index
  (usually starting at 0, in shuffled order), with ``flag = len(labels)`` when it packs multi-float
  labels (``--pack-label``). So key 0 is the insightface header only when it carries no image; otherwise
  every key the index lists is an image. ``records_listed`` / ``unread_keys`` say what was not read.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from torch.utils.data import Dataset

from engine.data.folder import Item, check_on_error, decode_image
from engine.errors import DatasetError

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LREC = struct.Struct("<II")
_IRHEADER = struct.Struct("<IfQQ")
_LEN_MASK = (1 << 29) - 1


@dataclass(frozen=True)
class IRHeader:
    flag: int
    label: tuple[float, ...]  # one value when flag == 0, else ``flag`` values
    id: int
    id2: int

    @property
    def identity(self) -> int:
        return int(self.label[0])


def pack_payload(image: bytes, label: float | Sequence[float], id: int = 0, id2: int = 0) -> bytes:
    """``IRHeader`` + labels + image bytes, as ``mxnet.recordio.pack`` builds them."""
    if isinstance(label, (int, float, np.integer, np.floating)):
        return _IRHEADER.pack(0, float(label), id, id2) + image
    labels = np.asarray(label, dtype="<f4").ravel()
    if labels.size == 0:
        raise ValueError("a multi-value label needs at least one value")
    return _IRHEADER.pack(labels.size, 0.0, id, id2) + labels.tobytes() + image


def unpack_payload(payload: bytes) -> tuple[IRHeader, bytes]:
    """Inverse of ``pack_payload``; raises ``ValueError`` when the payload is too short."""
    if len(payload) < _IRHEADER.size:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than the {_IRHEADER.size}-byte IRHeader")
    flag, label, id_, id2 = _IRHEADER.unpack_from(payload)
    rest = _IRHEADER.size
    if flag > 0:
        end = rest + 4 * flag
        if len(payload) < end:
            raise ValueError(f"IRHeader announces {flag} labels but the payload ends after {len(payload)} bytes")
        labels = tuple(float(x) for x in np.frombuffer(payload, dtype="<f4", count=flag, offset=rest))
        rest = end
    else:
        labels = (float(label),)
    return IRHeader(flag, labels, id_, id2), payload[rest:]


def _write_record(fh: BinaryIO, payload: bytes) -> None:
    """One record, split at aligned magic words exactly as dmlc-core's RecordIOWriter does."""
    if len(payload) > _LEN_MASK:
        raise ValueError(f"RecordIO records are limited to {_LEN_MASK} bytes, got {len(payload)}")
    start = 0
    for i in range(0, len(payload) - 3, 4):
        if payload[i:i + 4] == _MAGIC_BYTES:
            cflag = 1 if start == 0 else 2
            fh.write(_LREC.pack(MAGIC, (cflag << 29) | (i - start)))
            fh.write(payload[start:i])  # i - start is a multiple of 4: no padding needed
            start = i + 4
    cflag = 3 if start else 0
    fh.write(_LREC.pack(MAGIC, (cflag << 29) | (len(payload) - start)))
    fh.write(payload[start:])
    fh.write(b"\0" * (-len(payload) % 4))


def write_recordio(rec_path: Path | str, idx_path: Path | str,
                   items: Iterable[tuple[bytes, float | Sequence[float]]], with_header: bool = True) -> int:
    """Write ``(encoded_image, label)`` items as a RecordIO pack; returns the number of images.

    ``label`` is an identity number or a sequence of float labels (stored with ``flag = len``). With
    ``with_header`` the pack looks like insightface's: key 0 is a header record whose labels are
    ``(n + 1, n + 1)`` and images are keys ``1..n``; without it images are keys ``0..n-1``.
    """
    rec_path, idx_path = Path(rec_path), Path(idx_path)
    index: list[tuple[int, int]] = []
    with open(rec_path, "wb") as fh:
        if with_header:
            index.append((0, fh.tell()))
            _write_record(fh, pack_payload(b"", [0.0, 0.0]))  # patched below once n is known
        first = 1 if with_header else 0
        n = 0
        for n, (image, label) in enumerate(items, start=1):
            index.append((first + n - 1, fh.tell()))
            _write_record(fh, pack_payload(image, label))
        if with_header:
            # Same size as the placeholder, and positive float32 counts can never contain the magic word.
            fh.seek(0)
            _write_record(fh, pack_payload(b"", [float(n + 1), float(n + 1)]))
    with open(idx_path, "w") as fh:
        fh.writelines(f"{key}\t{offset}\n" for key, offset in index)
    return n


def _read_index(idx_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Keys and offsets from a ``.idx`` file, sorted by key."""
    if not idx_path.exists():
        raise DatasetError(f"RecordIO index {idx_path} does not exist (expected next to the .rec file)")
    keys: list[int] = []
    offsets: list[int] = []
    try:
        with open(idx_path) as fh:
            for lineno, line in enumerate(fh, start=1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    key, offset = (int(f) for f in fields)
                except ValueError:
                    raise DatasetError(
                        f"RecordIO index {idx_path} line {lineno} is not 'key<TAB>offset': {line.strip()[:80]!r}"
                    ) from None
                keys.append(key)
                offsets.append(offset)
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read RecordIO index {idx_path}: {exc}") from None
    k = np.asarray(keys, dtype=np.int64)
    o = np.asarray(offsets, dtype=np.int64)
    order = np.argsort(k, kind="stable")
    k, o = k[order], o[order]
    if len(k) > 1 and np.any(k[1:] == k[:-1]):
        dup = int(k[1:][k[1:] == k[:-1]][0])
        raise DatasetError(f"RecordIO index {idx_path} lists key {dup} more than once")
    return k, o


class RecordIODataset(Dataset):
    """Images and identity labels from an MXNet RecordIO pack, as ``(uint8 3xHxW, label)``.

    The ``.rec`` file is opened lazily in each process and never pickled, so the dataset works in
    DataLoader workers under fork and spawn. ``num_classes`` reads an insightface ``property`` file
    (``num_classes,h,w``) next to the pack when there is one, else scans the record headers once.
    """

    def __init__(self, rec_path: Path | str, idx_path: Path | str | None = None, on_error: str = "raise",
                 size: int | None = 112) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        self.on_error = check_on_error(on_error)
        self.size = size
        self._fh: BinaryIO | None = None
        self._pid = -1
        self._labels: np.ndarray | None = None
        if not self.rec_path.is_file():
            raise DatasetError(f"RecordIO file {self.rec_path} does not exist")
        keys, offsets = _read_index(self.idx_path)
        if len(keys) == 0:
            raise DatasetError(f"RecordIO index {self.idx_path} is empty")
        self._rec_size = self.rec_path.stat().st_size
        if int(offsets.max()) >= self._rec_size or int(offsets.min()) < 0:
            raise DatasetError(
                f"RecordIO index {self.idx_path} points past the end of {self.rec_path} "
                f"({self._rec_size} bytes): the .rec file is truncated or belongs to another index"
            )
        self.records_listed = len(keys)  # every key of the .idx, header and identity records included
        self.header: IRHeader | None = None
        self.identity_records = 0  # insightface's per-identity records (keys label[0] .. label[1] - 1)
        image_keys = keys
        unread = np.zeros(0, dtype=np.int64)
        header = self._header_record(keys, offsets)
        if header is not None:
            self.header = header
            end = int(header.label[0])
            wanted = np.arange(1, end, dtype=np.int64)
            pos = np.searchsorted(keys, wanted)
            if np.any(pos >= len(keys)) or np.any(keys[np.minimum(pos, len(keys) - 1)] != wanted):
                raise DatasetError(
                    f"RecordIO header record in {self.rec_path} says images are keys 1..{end - 1}, "
                    f"but {self.idx_path} does not list all of them"
                )
            rest = keys[keys >= end]
            if header.flag >= 2 and _integral(header.label[1]) and header.label[1] >= end:
                in_range = rest < int(header.label[1])
                self.identity_records = int(in_range.sum())
                rest = rest[~in_range]
            unread = rest
            image_keys, offsets = wanted, offsets[pos]
        self.unread_keys = np.ascontiguousarray(unread)  # listed, but neither header, identity record nor image
        self._offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        # Keys are usually a contiguous range: then store only the first one.
        contiguous = bool(np.all(np.diff(image_keys) == 1))
        self._key0 = int(image_keys[0]) if len(image_keys) else 0
        self._keys = None if contiguous else np.ascontiguousarray(image_keys)
        if len(self._offsets) == 0:
            raise DatasetError(f"RecordIO pack {self.rec_path} holds no images")
        self._close()  # __init__ may have opened the file in this process; workers reopen their own

    def _header_record(self, keys: np.ndarray, offsets: np.ndarray) -> IRHeader | None:
        """Key 0's header when key 0 is insightface's header record (labels and no image), else None.

        An image record (im2rec's first record, say, with ``flag = len(labels)``) has image bytes after its
        labels; insightface's header has none. Only the first bytes of key 0 are read.
        """
        if len(keys) == 0 or keys[0] != 0:
            return None
        offset = int(offsets[0])
        head = self.read_record(0, offset, limit=_IRHEADER.size)
        flag = struct.unpack_from("<I", head)[0] if len(head) >= 4 else 0
        if flag == 0:
            return None
        # One byte past the labels is enough to tell an image record from a header.
        header, image = self._unpack(0, offset, limit=_IRHEADER.size + 4 * flag + 1)
        if image:
            return None
        if not (_integral(header.label[0]) and header.label[0] >= 1):
            raise self._bad(0, offset, f"record 0 holds no image, but its labels {header.label[:2]} are not an "
                                       f"insightface header (first label: one past the last image key, >= 1)")
        return header

    # -- file access -------------------------------------------------------------------------------

    def _file(self) -> BinaryIO:
        # A handle inherited through fork shares its offset with the parent: reopen per process.
        if self._fh is None or self._pid != os.getpid():
            try:
                self._fh = open(self.rec_path, "rb", buffering=0)  # kept open across reads
            except OSError as exc:
                raise DatasetError(f"cannot open RecordIO file {self.rec_path}: {exc}") from None
            self._pid = os.getpid()
        return self._fh

    def _close(self) -> None:
        if self._fh is not None and self._pid == os.getpid():
            self._fh.close()
        self._fh = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fh"] = None
        return state

    def __del__(self) -> None:
        try:
            self._close()
        except Exception:  # interpreter shutdown: nothing useful to do
            pass

    def _pread(self, n: int, offset: int) -> bytes:
        fh = self._file()
        if hasattr(os, "pread"):
            return os.pread(fh.fileno(), n, offset)
        fh.seek(offset)
        return fh.read(n)

    def _bad(self, key: int, offset: int, what: str) -> DatasetError:
        return DatasetError(f"corrupt RecordIO file {self.rec_path}: record key {key} at offset {offset}: {what}")

    def read_record(self, key: int, offset: int, limit: int | None = None) -> bytes:
        """The payload of the record at ``offset``, parts reassembled; ``limit`` stops after that many bytes."""
        parts: list[bytes] = []
        pos, total, first = offset, 0, True
        while True:
            head = self._pread(_LREC.size, pos)
            if len(head) < _LREC.size:
                raise self._bad(key, offset, f"file ends inside a record header at offset {pos} (truncated)")
            magic, lrec = _LREC.unpack(head)
            if magic != MAGIC:
                raise self._bad(key, offset, f"bad magic 0x{magic:08x} at offset {pos} (expected 0x{MAGIC:08x})")
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if (first and cflag not in (0, 1)) or (not first and cflag not in (2, 3)):
                raise self._bad(key, offset, f"unexpected continuation flag {cflag} at offset {pos}")
            want = length if limit is None else min(length, max(0, limit - total))
            data = self._pread(want, pos + _LREC.size) if want else b""
            if len(data) < want:
                raise self._bad(key, offset, f"record of {length} bytes is cut short by the end of the file (truncated)")
            parts.append(data)
            total += len(data)
            if cflag in (0, 3) or (limit is not None and total >= limit):
                break
            parts.append(_MAGIC_BYTES)  # the writer dropped the magic word where it split
            total += 4
            pos += _LREC.size + length + (-length % 4)
            first = False
        return b"".join(parts)

    def _unpack(self, key: int, offset: int, limit: int | None = None) -> tuple[IRHeader, bytes]:
        try:
            return unpack_payload(self.read_record(key, offset, limit))
        except ValueError as exc:
            raise self._bad(key, offset, str(exc)) from None

    def _key(self, index: int) -> int:
        return self._key0 + index if self._keys is None else int(self._keys[index])

    # -- dataset -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._offsets)

    def encoded(self, index: int) -> tuple[bytes, int, str]:
        """Image ``index`` undecoded: (its encoded bytes, identity, the name an error message gives it)."""
        index = self._index(index)
        key, offset = self._key(index), int(self._offsets[index])
        header, image = self._unpack(key, offset)
        label = _identity(header)
        if label is None:
            raise self._bad(key, offset, f"label {header.label[0]} is not a valid identity number")
        return image, label, f"record key {key} at offset {offset} of {self.rec_path}"

    def __getitem__(self, index: int) -> Item | None:
        try:
            image, label, name = self.encoded(index)
            return decode_image(image, self.size, name), label
        except DatasetError as exc:
            if self.on_error == "raise":
                raise
            log.warning("skipping unreadable record: %s", exc)
            return None

    def _index(self, index: int) -> int:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        return index

    def key_of(self, index: int) -> int:
        """The ``.idx`` key of image ``index``."""
        return self._key(self._index(index))

    def header_of(self, index: int) -> IRHeader:
        """The ``IRHeader`` of image ``index`` with all its float labels, reading only the record header."""
        index = self._index(index)
        key, offset = self._key(index), int(self._offsets[index])
        head = self.read_record(key, offset, limit=_IRHEADER.size)
        flag = struct.unpack_from("<I", head)[0] if len(head) >= 4 else 0
        # With flag > 0 the labels follow the fixed part: read exactly that much more.
        header, _ = self._unpack(key, offset, limit=_IRHEADER.size + 4 * flag)
        return header

    def label_vector(self, index: int) -> np.ndarray:
        """Every float label of image ``index`` (float32): ``flag`` values, or the one label when flag is 0."""
        return np.asarray(self.header_of(index).label, dtype=np.float32)

    def label_of(self, index: int) -> int:
        """The identity of image ``index`` (its first label), reading only its record header."""
        header = self.header_of(index)
        label = _identity(header)
        if label is None:
            index = self._index(index)
            raise self._bad(self._key(index), int(self._offsets[index]),
                            f"label {header.label[0]} is not a valid identity number")
        return label

    @property
    def labels(self) -> np.ndarray:
        """Identity of every image (int64), read from the record headers once and cached."""
        if self._labels is None:
            self._labels = np.fromiter((self.label_of(i) for i in range(len(self))), dtype=np.int64,
                                       count=len(self))
        return self._labels

    @property
    def num_classes(self) -> int:
        prop = self.rec_path.parent / "property"
        if prop.is_file():
            try:
                return int(prop.read_text().split(",")[0])
            except (OSError, ValueError):
                log.warning("ignoring unreadable %s; scanning record headers instead", prop)
        return int(self.labels.max()) + 1

    def __repr__(self) -> str:
        return f"RecordIODataset({str(self.rec_path)!r}, {len(self)} images)"


def _integral(value: float) -> bool:
    return math.isfinite(value) and value == int(value)


def _identity(header: IRHeader) -> int | None:
    value = header.label[0]
    if not _integral(value) or value < 0:
        return None
    return int(value)
