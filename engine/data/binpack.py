"""insightface ``.bin`` verification packs (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...).

A pack is a pickle of ``(bins, issame)``: ``bins`` a list of ``2P`` encoded images (JPEG/PNG bytes; some
packs hold them as uint8 numpy arrays), ``issame`` a list of ``P`` booleans; pair ``i`` is
``bins[2i], bins[2i + 1]``. Packs made with Python 2 hold the image bytes as Python-2 ``str``: loading them
with Python 3's default ASCII decoding fails, so we retry with ``encoding="bytes"`` (as insightface does).

Unpickling runs code named by the file, so by default this reader only lets a pack name the few callables
a genuine pack needs (numpy array and scalar reconstruction, ``_codecs.encode`` for bytes pickled by
Python 3 at protocol <= 2); anything else is refused with a ``DatasetError``. ``trusted=True`` lifts that
restriction for a pack you made yourself with other tools. What the restricted reader lets a pack allocate
(through those callables, and in images referenced repeatedly) is bounded by the file's size.
"""

from __future__ import annotations

import codecs
import importlib
import io
import math
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

# What unpickling may allocate beyond the file's own size (small objects, a few scalars).
ALLOCATION_SLACK = 64 * 1024
# The state a plain dtype pickles to (byte order, then no names, fields, subarray, size/alignment or flags):
# the only one a pack needs, and one that cannot turn a dtype into an object dtype or resize it.
_PLAIN_DTYPE_STATE = (None, None, None, -1, -1, 0)


def _import(mod: str, attr: str) -> object:
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError):  # numpy 1 has no numpy._core
        return getattr(importlib.import_module(mod.replace("numpy._core", "numpy.core")), attr)


# The pure-Python unpickler, not the C one: the C unpickler grows its memo table to twice the largest index a
# file names (an 11-byte pack naming index 75,000,000 took 1.1 GB) and offers no hook on BUILD (setstate).
class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Only the callables a pack needs, each wrapped so that what the pack makes it allocate is counted.

    What a few bytes of pickle can make them allocate (``bytearray(600000000)``, a ``scalar`` of a 600 MB
    void dtype, an array of a huge shape, one string encoded over and over) is counted by ``_charge``:
    together no more than the file's size plus ``ALLOCATION_SLACK`` (a genuine pack's data is in the file).
    Object dtypes are refused everywhere (numpy's setstate of an object array from a pickle can segfault),
    and BUILD is allowed only where a pack needs it.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, data: bytes, encoding: str) -> None:
        super().__init__(io.BytesIO(data), encoding=encoding)
        self.limit = len(data) + ALLOCATION_SLACK
        self.used = 0
        self.pending: dict[int, np.ndarray] = {}  # arrays made by _reconstruct, awaiting their BUILD
        self.ndarray = self._ndarray  # stands for numpy.ndarray, which a pack may only name as _reconstruct's type

    def _charge(self, nbytes: int, what: str) -> None:
        self.used += max(0, int(nbytes))
        if self.used > self.limit:
            raise pickle.UnpicklingError(
                f"refusing to allocate {nbytes} bytes for {what}: a pack of {self.limit - ALLOCATION_SLACK} "
                f"bytes may allocate at most {self.limit} bytes while unpickling")

    def _dtype(self, spec: object) -> np.dtype:
        dtype = spec if isinstance(spec, np.dtype) else np.dtype(spec)  # type: ignore[call-overload]
        if dtype.hasobject:
            raise pickle.UnpicklingError(f"refusing dtype {dtype} (object arrays are not part of a pack)")
        return dtype

    def find_class(self, module: str, name: str) -> object:
        target = _ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} (not part of a verification pack)"
            )
        if target == ("numpy", "ndarray"):
            return self.ndarray
        real = _import(*target)
        guard = getattr(self, "_call_" + target[1].lstrip("_"))
        return lambda *args: guard(real, *args)

    @staticmethod
    def _ndarray(*args: object) -> None:
        # numpy pickles arrays through _reconstruct; a direct call could ask for any shape and strides.
        raise pickle.UnpicklingError("refusing to call numpy.ndarray directly (not part of a verification pack)")

    def _call_bytearray(self, real, *args):
        if args and isinstance(args[0], int):  # bytearray(n) is n zero bytes: count them before
            self._charge(args[0], f"bytearray({args[0]})")
            return real(*args)
        out = real(*args)
        self._charge(len(out), "a bytearray")
        return out

    def _call_encode(self, real, text, encoding="utf-8", errors="strict"):
        # Python 3 pickles bytes at protocol <= 2 as encode(str, "latin1"); no other codec is needed (and
        # codecs such as hex_codec could double a string per call).
        if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
            raise pickle.UnpicklingError(f"refusing _codecs.encode with {encoding!r} (a pack uses latin1)")
        self._charge(len(text), "encoded bytes")
        return real(text, encoding, errors)

    def _call_dtype(self, real, spec, align=False, copy=False):
        # copy=True always: a BUILD must never change numpy's shared dtype instances.
        return self._dtype(real(spec, bool(align), True))

    def _call_reconstruct(self, real, subtype, shape, dtype):
        if subtype is not self.ndarray:
            raise pickle.UnpicklingError("refusing _reconstruct of anything but numpy.ndarray")
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        self._charge(math.prod(int(d) for d in dims) * self._dtype(dtype).itemsize, f"an array of shape {dims}")
        array = real(np.ndarray, shape, dtype)
        self.pending[id(array)] = array
        return array

    def _call_scalar(self, real, dtype, *args):
        self._charge(self._dtype(dtype).itemsize, "a numpy scalar")
        return real(dtype, *args)

    def _call_frombuffer(self, real, buf, dtype, shape, order):
        self._dtype(dtype)  # a view on ``buf``, which the file holds: nothing new to count
        return real(buf, dtype, shape, order)

    def load_build(self) -> None:
        """BUILD (``__setstate__``) only where a pack needs it: a fresh ``_reconstruct`` array, a plain dtype."""
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, np.dtype) and isinstance(state, tuple) and len(state) == 8 \
                and state[1] in ("|", "<", ">", "=", b"|", b"<", b">", b"=") and state[2:] == _PLAIN_DTYPE_STATE:
            inst.__setstate__(state)
            return
        if isinstance(inst, np.ndarray) and self.pending.pop(id(inst), None) is inst \
                and isinstance(state, tuple) and len(state) in (4, 5):
            self._dtype(state[-3])
            if isinstance(state[-1], (str, bytearray)):  # e.g. a Python-2 str read as latin1: numpy copies it
                self._charge(len(state[-1]), "array data")
            elif not isinstance(state[-1], bytes):  # bytes are used in place; a list means an object array
                raise pickle.UnpicklingError(f"refusing array data of type {type(state[-1]).__name__}")
            inst.__setstate__(state)
            return
        raise pickle.UnpicklingError(f"refusing to set the state of a {type(inst).__name__}")

    dispatch[pickle.BUILD[0]] = load_build


def _unpickle(data: bytes, encoding: str, trusted: bool) -> object:
    if trusted:
        return pickle.loads(data, encoding=encoding)
    return _RestrictedUnpickler(data, encoding=encoding).load()


def _size(item: object) -> int:
    """Bytes an image item turns into (before ``_as_bytes`` copies it)."""
    if isinstance(item, (bytes, bytearray, str)):
        return len(item)
    if isinstance(item, (memoryview, np.ndarray)):
        return item.nbytes
    return 0


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
    obj, encoding = _unpickle_pack(path, data, trusted)
    bins, issame = _pack_parts(path, obj)
    return _image_bytes(path, bins, len(data), encoding, trusted), _issame_flags(path, issame)


def _unpickle_pack(path: Path, data: bytes, trusted: bool) -> tuple[object, str]:
    """The unpickled pack and the encoding that read it."""
    errors: list[str] = []
    # Python 3's default first; a Python-2 pickle fails with UnicodeDecodeError and is retried with
    # encoding="bytes" (as insightface does), then "latin1" (numpy's advice for Python-2 arrays).
    for encoding in ("ASCII", "bytes", "latin1"):
        try:
            return _unpickle(data, encoding, trusted), encoding
        except UnicodeDecodeError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError... from a bad file
            errors.append(f"{type(exc).__name__}: {exc}")
            if encoding == "ASCII":  # not a decoding problem: another encoding will not help
                break
    raise DatasetError(f"{path} is not a readable verification pack (pickle of (images, issame)): {errors[-1]}")


def _pack_parts(path: Path, obj: object) -> tuple[Sequence, Sequence]:
    """``(bins, issame)`` of an unpickled pack, with exactly two images per pair."""
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
    return bins, issame


def _image_bytes(path: Path, bins: Sequence, file_size: int, encoding: str, trusted: bool) -> list[bytes]:
    """Each image of ``bins`` as encoded bytes."""
    images: list[bytes] = []
    # Items that are not bytes are copied into bytes here. A pickle can name one item many times (2 bytes a
    # reference) or make many arrays over one buffer: convert each object once, and let the copies together
    # hold no more than the file does (as in a genuine pack, where each item's data is in the file).
    converted: dict[int, bytes | None] = {}
    copied, limit = 0, file_size + ALLOCATION_SLACK
    for i, item in enumerate(bins):
        if id(item) not in converted:
            if not isinstance(item, bytes):
                copied += _size(item)
                if copied > limit and not trusted:
                    raise DatasetError(f"{path}: its images would take more than {limit} bytes, more than a "
                                       f"pack of {file_size} bytes holds (image data used repeatedly)")
            converted[id(item)] = _as_bytes(item, encoding)
        raw = converted[id(item)]
        if raw is None:
            raise DatasetError(f"{path}: image #{i} is a {type(item).__name__}, not encoded image bytes")
        images.append(raw)
    return images


def _issame_flags(path: Path, issame: Sequence) -> np.ndarray:
    """The pairs' same-identity flags as a bool array."""
    # Flags must be numbers before np.asarray, which would stack a list of arrays into one big copy.
    if not isinstance(issame, np.ndarray) and not all(
            isinstance(s, (bool, int, np.bool_, np.integer)) for s in issame):
        raise DatasetError(f"{path}: issame must be a flat list of booleans")
    same = np.asarray(issame)
    if same.ndim != 1 or (len(same) and same.dtype.kind not in "biu") or not np.isin(same, (0, 1)).all():
        raise DatasetError(f"{path}: issame must be a flat list of booleans")
    return same.astype(bool)


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
