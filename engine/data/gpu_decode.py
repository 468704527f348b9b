"""Batched JPEG decoding on the training device, for a dataset too big to pack (``data.reader = "gpu_decode"``).

Loader workers only read the encoded bytes (a file, or a RecordIO record); the training process decodes each
batch with one ``torchvision.io.decode_jpeg(list, device=...)`` call (nvJPEG's batched decoder on CUDA). An
image that is not a JPEG (PNG, BMP ...) is decoded with PIL in the worker instead, exactly as the
``decode`` reader does. A batch that fails to decode is decoded again image by image on the CPU, so that
a broken file is named (and skipped under ``data.on_error = "skip"``) as with the other readers.

Decoders differ in their last bit: nvJPEG's inverse DCT and upsampling need not match libjpeg-turbo's
exactly, so faces decoded here can differ from PIL's by a grey level or two (never in geometry).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from engine.data.folder import Batch, decode_image
from engine.errors import DatasetError

log = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass
class Encoded:
    """One image as a worker hands it over: encoded JPEG bytes, or the image PIL already decoded."""

    data: torch.Tensor  # uint8: 1-D encoded bytes when ``jpeg``, else 3 x H x W pixels
    jpeg: bool
    label: int
    name: str


class EncodedFaces(Dataset):
    """A folder or RecordIO dataset whose items stay encoded (``Encoded``) for ``decode_batch``."""

    def __init__(self, base: Dataset) -> None:
        if not hasattr(base, "encoded"):
            raise DatasetError(f"{base!r} cannot hand over encoded images (gpu_decode reads folders and RecordIO)")
        self.base = base
        self.size: int | None = getattr(base, "size", None)
        self.on_error: str = getattr(base, "on_error", "raise")

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def labels(self):
        return self.base.labels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Encoded | None:
        try:
            data, label, name = self.base.encoded(index)
            if data.startswith(JPEG_MAGIC):
                return Encoded(torch.frombuffer(bytearray(data), dtype=torch.uint8), True, label, name)
            return Encoded(decode_image(data, self.size, name), False, label, name)
        except DatasetError as exc:
            if self.on_error == "raise":
                raise
            log.warning("skipping unreadable image: %s", exc)
            return None


def collate_encoded(items: list[Encoded | None]) -> tuple[list[Encoded], int]:
    """The loader's collate: the items as they are (decoding happens on the device), and the count dropped."""
    kept = [item for item in items if item is not None]
    return kept, len(items) - len(kept)


def _fit(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """A decoded ``3 x H x W`` uint8 image at ``size x size`` (antialiased bicubic, as ``decode_image`` resizes)."""
    if size is None or tuple(image.shape[-2:]) == (size, size):
        return image
    x = F.interpolate(image[None].float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)[0]


def decode_batch(items: list[Encoded], size: int | None, device: torch.device | str, on_error: str = "raise"
                 ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(uint8 N x 3 x size x size on ``device``, int64 labels, images skipped) for one batch of ``Encoded``."""
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    jpegs = [item for item in items if item.jpeg]
    decoded: list[torch.Tensor] = []
    if jpegs:
        try:
            decoded = decode_jpeg([item.data for item in jpegs], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = []  # one broken JPEG fails the whole batch: find it image by image below
    images: list[torch.Tensor] = []
    labels: list[int] = []
    skipped = 0
    done = iter(decoded)
    for item in items:
        if not item.jpeg:
            image = item.data.to(device, non_blocking=True)
        elif decoded:
            image = next(done)
        else:
            try:  # PIL names what is wrong with the file, as the other readers do
                image = decode_image(item.data.numpy().tobytes(), None, item.name).to(device)
            except DatasetError as exc:
                if on_error == "raise":
                    raise
                log.warning("skipping unreadable image: %s", exc)
                skipped += 1
                continue
        images.append(_fit(image, size))
        labels.append(item.label)
    if not images:
        return torch.empty((0, 3, 0, 0), dtype=torch.uint8, device=device), torch.empty(0, dtype=torch.int64), skipped
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), skipped


def decoded_batches(loader: Iterable[tuple[list[Encoded], int]], size: int | None, device: torch.device,
                    on_error: str) -> Iterator[Batch]:
    """The trainer's batches from a loader over ``EncodedFaces``: each batch decoded on ``device``."""
    for items, dropped in loader:
        images, labels, skipped = decode_batch(items, size, device, on_error)
        yield Batch(images, labels, dropped + skipped)
