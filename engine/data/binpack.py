"""insightface ``.bin`` verification packs (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...).

A pack is a pickle of ``(bins, issame)``: ``bins`` a list of ``2P`` encoded images (JPEG/PNG bytes; some
packs hold them as uint8 numpy arrays), ``issame`` a list of ``P`` booleans; pair ``i`` is
``bins[2i], bins[2i + 1]``. Packs made with Python 2 hold the image bytes as Python-2 ``str``: loading them
with Python 3's default ASCII decoding fails, so we retry with ``encoding="bytes"`` (as insightface does).

Unpickling runs code named by the file, so by default this reader only lets a pack name the few callables
a genuine pack needs (numpy array and scalar reconstruction, ``_codecs.encode`` for bytes pickled by
Python 3 at protocol <= 2); anything else is refused with a ``DatasetError``. ``trusted=True`` lifts that
restriction for a pack you made yourself with other tools.
"""

from __future__ import annotations

import importlib
import io
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from engine.data.folder import decode_image
from engine.data.pairs import VerificationPairs, single_threaded, write_atomic
from engine.errors import DatasetError

# (module, name) a pack may reference -> where it really lives. numpy 2 moved numpy.core to numpy._core;
# packs written by numpy 1 (or by Python 2) name the old place.
_ALLOWED = {
    ("_codecs", "encode"): ("_codecs", "encode"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("__builtin__", "bytearray"): ("builtins", "bytearray"),
    ("builtins", "bytearray"): ("builtins", "bytearray"),
}
for _old, _new in (("numpy.core", "numpy._core"), ("numpy._core", "numpy._core")):
    for _mod, _name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")):
        _ALLOWED[(f"{_old}.{_mod}", _name)] = (f"{_new}.{_mod}", _name)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} (not part of a verification pack)"
            )
        mod, attr = target
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError):  # numpy 1 has no numpy._core
            legacy = mod.replace("numpy._core", "numpy.core")
            return getattr(importlib.import_module(legacy), attr)


def _unpickle(data: bytes, encoding: str, trusted: bool) -> object:
    if trusted:
        return pickle.loads(data, encoding=encoding)
    return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def _as_bytes(item: object, encoding: str) -> bytes | None:
    if isinstance(item, bytes):
        return item
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype in (np.uint8, np.int8):
        return item.tobytes()
    if isinstance(item, str) and encoding == "latin1":  # a Python-2 str decoded as latin-1
        return item.encode("latin1")
    return None


def read_bin(path: Path | str, trusted: bool = False) -> tuple[list[bytes], np.ndarray]:
    """The raw content of a pack: ``(2P encoded images as bytes, issame as a bool array of P)``.

    Raises ``DatasetError`` naming the file when it is missing, not a pickle, not ``(bins, issame)``, or when
    the image count is not exactly twice the pair count.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"verification pack {path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"cannot read verification pack {path}: {exc}") from None
    obj: object = None
    loaded = False
    errors: list[str] = []
    encoding = "ASCII"
    # Python 3's default first; a Python-2 pickle fails with UnicodeDecodeError and is retried with
    # encoding="bytes" (as insightface does), then "latin1" (numpy's advice for Python-2 arrays).
    for encoding in ("ASCII", "bytes", "latin1"):
        try:
            obj = _unpickle(data, encoding, trusted)
            loaded = True
            break
        except UnicodeDecodeError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError... from a bad file
            errors.append(f"{type(exc).__name__}: {exc}")
            if encoding == "ASCII":  # not a decoding problem: another encoding will not help
                break
    if not loaded:
        raise DatasetError(
            f"{path} is not a readable verification pack (pickle of (images, issame)): {errors[-1]}"
        )
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise DatasetError(f"{path}: expected a pickled pair (images, issame), found {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple, np.ndarray)) or not isinstance(issame, (list, tuple, np.ndarray)):
        raise DatasetError(f"{path}: expected (list of images, list of issame), found "
                           f"({type(bins).__name__}, {type(issame).__name__})")
    if len(bins) != 2 * len(issame):
        raise DatasetError(
            f"{path}: {len(bins)} images for {len(issame)} pairs; a verification pack needs exactly 2 images "
            f"per pair ({2 * len(issame)})"
        )
    images: list[bytes] = []
    for i, item in enumerate(bins):
        raw = _as_bytes(item, encoding)
        if raw is None:
            raise DatasetError(f"{path}: image #{i} is a {type(item).__name__}, not encoded image bytes")
        images.append(raw)
    same = np.asarray(issame)
    if same.ndim != 1 or (len(same) and same.dtype.kind not in "biu") or not np.isin(same, (0, 1)).all():
        raise DatasetError(f"{path}: issame must be a flat list of booleans")
    return images, same.astype(bool)


def load_bin(path: Path | str, size: int = 112, trusted: bool = False,
             name: str | None = None) -> VerificationPairs:
    """Load a pack into memory, every image decoded to ``size x size`` (a 12k-image pack at 112 px is 450 MB).

    ``name`` defaults to the file's stem (``lfw`` for ``lfw.bin``). Packs follow insightface's 10 contiguous
    folds. An undecodable image raises ``DatasetError`` naming the file and the image index.
    """
    path = Path(path)
    encoded, issame = read_bin(path, trusted=trusted)
    images = torch.empty((len(encoded), 3, size, size), dtype=torch.uint8)
    with single_threaded():
        for i, raw in enumerate(encoded):
            images[i] = decode_image(raw, size, f"#{i} of {path}")
    return VerificationPairs(images=images, issame=issame, name=name or path.stem, folds=10)


def write_bin(path: Path | str, encoded_images: Sequence[bytes], issame: Sequence[bool],
              protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    """Write a pack as insightface does (``pickle.dump((bins, issame), protocol=...)``), atomically."""
    bins = [bytes(b) for b in encoded_images]
    same = [bool(s) for s in issame]
    if len(bins) != 2 * len(same):
        raise ValueError(f"{len(bins)} images for {len(same)} pairs; need exactly 2 per pair")
    return write_atomic(path, pickle.dumps((bins, same), protocol=protocol))
