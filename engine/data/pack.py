"""Decoded-face packs: a dataset decoded once into a uint8 memory-mapped array, so training decodes nothing.

A pack is a folder holding

* ``images.u8``: ``N x H x W x 3`` uint8 RGB, row-major, no header (each face one contiguous slice);
* ``labels.i64``: ``N`` little-endian int64 identity labels;
* ``pack.json``: the manifest, written last (the completion marker): format and version, the source it was
  decoded from (name, path, format), ``count``, ``size``, ``num_classes``, the identity names where the
  source has them, the images left out as unreadable, and the SHA-256 of both data files.

The whole folder is written beside its destination and renamed into place (``engine.data.atomic``), so an
interrupted ``lrfr data pack`` never leaves a pack that looks complete.

Each image is exactly what the source's reader yields (``decode_image`` at the pack's size), so training on
a pack is training on the folder or RecordIO pack it came from, minus the decoding. ``PackLoader`` feeds the
trainer: per batch one gather of the batch's rows from the memory map into one (pinned, on CUDA) buffer, by
a thread pool that releases the GIL while copying, with no worker processes and no per-image Python work.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from engine.data.atomic import build_atomically
from engine.data.folder import Batch, Item, collate_skip
from engine.errors import DatasetError

PACK_FORMAT = "lrfr-pack"
PACK_VERSION = 1
MANIFEST = "pack.json"
IMAGES = "images.u8"
LABELS = "labels.i64"
_CHUNK = 1 << 24  # bytes hashed per read when verifying


def is_pack(path: Path) -> bool:
    """Whether ``path`` is a (complete) pack folder: it holds the manifest, which is written last."""
    return (Path(path) / MANIFEST).is_file()


@dataclass(frozen=True)
class PackSource:
    """What a pack was decoded from, as recorded in its manifest."""

    name: str
    path: str
    format: str


class FacePack(Dataset):
    """A pack opened read-only as a memory map; also a plain ``Dataset`` of ``(uint8 3 x H x W, label)``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not manifest_path.is_file():
            raise DatasetError(f"{self.root} is not a face pack (no {MANIFEST}); write one with `lrfr data pack NAME`")
        try:
            self.manifest = json.loads(manifest_path.read_text())
            if self.manifest.get("format") != PACK_FORMAT:
                raise ValueError(f"format is {self.manifest.get('format')!r}, not {PACK_FORMAT!r}")
            if self.manifest.get("version") != PACK_VERSION:
                raise ValueError(f"version {self.manifest.get('version')!r}; this lrfr reads version {PACK_VERSION}")
            self.count = int(self.manifest["count"])
            self.size = int(self.manifest["size"])
            self.num_classes = int(self.manifest["num_classes"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"face pack manifest {manifest_path} is unreadable: {exc}") from None
        self.shape = (self.count, self.size, self.size, 3)
        for name, expected in ((IMAGES, int(np.prod(self.shape))), (LABELS, 8 * self.count)):
            path = self.root / name
            actual = path.stat().st_size if path.is_file() else None
            if actual != expected:
                raise DatasetError(f"face pack {self.root}: {name} holds {actual} bytes, its manifest says "
                                   f"{expected} (truncated or replaced); write the pack again")
        self._images: np.memmap | None = None
        self._labels = np.fromfile(self.root / LABELS, dtype="<i8").astype(np.int64)

    @property
    def images(self) -> np.memmap:
        """``N x H x W x 3`` uint8, memory-mapped (opened on first use, so a pickled pack stays small)."""
        if self._images is None:
            self._images = np.memmap(self.root / IMAGES, dtype=np.uint8, mode="r", shape=self.shape)
        return self._images

    @property
    def classes(self) -> list[str]:
        """The source's identity names (folder names; empty for RecordIO), label i being ``classes[i]``."""
        return list(self.manifest.get("classes", []))

    @property
    def source(self) -> PackSource:
        return PackSource(**self.manifest["source"])

    @property
    def labels(self) -> list[int]:
        return self._labels.tolist()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Item:
        hwc = np.array(self.images[index])  # one copy out of the map, so the item owns its memory
        return torch.from_numpy(hwc).permute(2, 0, 1).contiguous(), int(self._labels[index])

    def gather(self, indices: Sequence[int], out: np.ndarray) -> np.ndarray:
        """The rows ``indices`` (in that order) into ``out`` (``len x H x W x 3`` uint8): one copy, GIL released."""
        np.take(self.images, np.asarray(indices, dtype=np.intp), axis=0, out=out)
        return out

    def verify(self, progress: Callable[[int], None] | None = None) -> list[str]:
        """Recompute both checksums; the problems found (empty when the pack is intact)."""
        problems = []
        for name in (IMAGES, LABELS):
            digest = sha256_file(self.root / name, progress)
            if digest != self.manifest["sha256"][name]:
                problems.append(f"{name}: checksum {digest[:12]}... differs from the manifest's "
                                f"{self.manifest['sha256'][name][:12]}... (the file changed since it was packed)")
        return problems

    def __repr__(self) -> str:
        return f"FacePack({str(self.root)!r}, {self.count} images of {self.size} px, {self.num_classes} identities)"


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done)
    return digest.hexdigest()


# ---------------------------------------------------------------- writing


def write_pack(dataset: Dataset, root: Path | str, source: PackSource, size: int, num_workers: int = 0,
               batch_size: int = 256, progress: Callable[[int, int], None] | None = None) -> Path:
    """Decode every image of ``dataset`` (already opened at ``size`` px) once and write them as a pack.

    ``dataset`` yields ``(uint8 3 x size x size, label)``, or ``None`` for an image it could not read (opened
    with ``on_error="skip"``): those are left out and listed in the manifest. Decoding runs in
    ``num_workers`` DataLoader workers, in dataset order; ``progress(done, total)`` is called per batch.
    """
    root = Path(root)
    total = len(dataset)
    names = getattr(dataset, "samples", None)

    def build(tmp: Path) -> None:
        image_hash, label_hash = hashlib.sha256(), hashlib.sha256()
        skipped: list[str] = []
        written = 0
        loader = DataLoader(_Indexed(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=_collate_indexed, generator=torch.Generator().manual_seed(0))
        with open(tmp / IMAGES, "wb") as images_fh, open(tmp / LABELS, "wb") as labels_fh:
            for start, batch, missing in loader:
                if batch.images.shape[-2:] not in ((size, size), (0, 0)):
                    raise DatasetError(f"the source yields {tuple(batch.images.shape[-2:])} px images, "
                                       f"not {size} x {size}")
                hwc = batch.images.permute(0, 2, 3, 1).contiguous().numpy()
                labels = batch.labels.numpy().astype("<i8")
                for buffer, fh, digest in ((hwc, images_fh, image_hash), (labels, labels_fh, label_hash)):
                    data = memoryview(np.ascontiguousarray(buffer)).cast("B")
                    fh.write(data)
                    digest.update(data)
                written += len(labels)
                skipped.extend(str(names[start + i][0]) if names else f"item {start + i}" for i in missing)
                if progress is not None:
                    progress(start + len(labels) + len(missing), total)
        if written == 0:
            raise DatasetError(f"no readable image in {source.path}: nothing to pack")
        manifest = {
            "format": PACK_FORMAT, "version": PACK_VERSION,
            "source": {"name": source.name, "path": source.path, "format": source.format},
            "count": written, "size": size, "layout": "N x H x W x 3 uint8 RGB; labels int64 little-endian",
            "num_classes": int(dataset.num_classes),
            "classes": list(getattr(dataset, "classes", []) or []),
            "skipped": skipped,
            "sha256": {IMAGES: image_hash.hexdigest(), LABELS: label_hash.hexdigest()},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))

    return build_atomically(root, build, "the face pack")


def pack_bytes(count: int, size: int) -> int:
    """The disk space a pack of ``count`` faces of ``size`` px takes (images and labels)."""
    return count * (3 * size * size + 8)


def pack_entry(name: str, path: Path | str, format: str, out: Path | str, size: int = 112, num_workers: int = 2,
               skip_unreadable: bool = False, progress: Callable[[int, int], None] | None = None) -> FacePack:
    """Pack the folder or RecordIO dataset registered as ``name`` (at ``path``, in ``format``) into ``out``.

    Refuses before decoding anything when the disk holding ``out`` has too little room (with the readers
    that need no pack), or when the source is not a training set.
    """
    from engine.data.folder import ImageFolderDataset
    from engine.data.recordio import RecordIODataset

    if format not in ("folder", "recordio"):
        raise DatasetError(f"dataset {name!r} is a {format} dataset: only training sets (folder, recordio) are packed")
    on_error = "skip" if skip_unreadable else "raise"
    path = Path(path)
    if format == "recordio":
        rec = path if path.is_file() else path / "train.rec"
        dataset: Dataset = RecordIODataset(rec, rec.with_suffix(".idx"), on_error=on_error, size=size)
    else:
        dataset = ImageFolderDataset(path, on_error=on_error, size=size)
    out = Path(out).expanduser().resolve()
    need = pack_bytes(len(dataset), size)
    free = _free_bytes(out)
    if free is not None and need > free:
        raise DatasetError(f"a pack of {name!r} needs {need / 2**30:.1f} GiB, but {out.parent} has "
                           f"{free / 2**30:.1f} GiB free: pass --out on a larger disk, or train without a pack "
                           f"(data.reader=decode, or gpu_decode on a GPU)")
    write_pack(dataset, out, PackSource(name, str(path), format), size, num_workers=num_workers, progress=progress)
    return FacePack(out)


def _free_bytes(out: Path) -> int | None:
    probe = out.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


class _Indexed(Dataset):
    """``(index, item)`` so the writer can name the images a worker could not read."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Item | None]:
        return index, self.dataset[index]


def _collate_indexed(items: list[tuple[int, Item | None]]) -> tuple[int, Batch, list[int]]:
    start = items[0][0]
    missing = [i - start for i, item in items if item is None]
    return start, collate_skip([item for _, item in items]), missing


# ---------------------------------------------------------------- reading for training


class PackLoader:
    """Batches of a pack for the index batches of ``batch_sampler``, as ``Batch(uint8 N x 3 x H x W, labels, 0)``.

    A batch is gathered by one ``np.take`` from the memory map into one buffer. With ``pin_memory`` (training
    on CUDA) that buffer is pinned host memory, handed over as it is: a permuted view of ``N x H x W x 3``
    (channels-last strides) that the trainer copies with ``non_blocking=True`` and makes contiguous on the
    device, where that is cheap (PyTorch's pinned-memory cache keeps a buffer until its copy has finished, so
    none is reused early). Without it (training on the CPU) each thread gathers into its own reused scratch
    buffer and transposes that into a new contiguous ``N x 3 x H x W`` batch, so the training thread does no
    copy at all. ``workers`` threads gather up to ``prefetch`` batches ahead; batches come out in the
    sampler's order.
    """

    def __init__(self, pack: FacePack, batch_sampler: Iterable[list[int]], workers: int = 1,
                 pin_memory: bool = False, prefetch: int | None = None) -> None:
        self.pack, self.batch_sampler = pack, batch_sampler
        self.workers = max(1, workers)
        self.pin_memory = pin_memory
        self.prefetch = prefetch if prefetch is not None else 2 * self.workers
        self.num_workers = 0  # no worker processes: nothing for engine.data.loader to protect from signals
        self._scratch = threading.local()

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    def _gather(self, indices: list[int]) -> Batch:
        pack = self.pack
        shape = (len(indices), pack.size, pack.size, 3)
        labels = torch.from_numpy(pack._labels[np.asarray(indices, dtype=np.intp)])
        if self.pin_memory:
            buf = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
            pack.gather(indices, buf.numpy())
            return Batch(buf.permute(0, 3, 1, 2), labels.pin_memory(), 0)
        scratch = getattr(self._scratch, "buf", None)
        if scratch is None or scratch.shape != shape:
            scratch = self._scratch.buf = np.empty(shape, dtype=np.uint8)
        pack.gather(indices, scratch)
        # numpy: one single-threaded copy that releases the GIL (torch would fan out to its intra-op threads)
        return Batch(torch.from_numpy(np.ascontiguousarray(scratch.transpose(0, 3, 1, 2))), labels, 0)

    def __iter__(self) -> Iterator[Batch]:
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lrfr-pack")
        pending: list[Future[Batch]] = []
        try:
            batches = iter(self.batch_sampler)
            for indices in batches:
                pending.append(pool.submit(self._gather, list(indices)))
                if len(pending) > self.prefetch:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["FacePack", "PackLoader", "PackSource", "is_pack", "pack_bytes", "pack_entry", "write_pack", "MANIFEST",
           "PACK_FORMAT"]
