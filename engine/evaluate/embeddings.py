"""Embedding extraction for evaluation: flip-fused, L2-normalised, batched, optional degradation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from engine.augment import degrade
from engine.data.loader import ignore_stop_signals, iterate

EmbedFn = Callable[[Tensor], Tensor]  # float N x 3 x H x W in [-1, 1] -> N x D features

# Who hears of each embedded batch: (images done in this pass, images in the pass). Set around one
# benchmark by ``run_benchmarks`` (``embed_progress``), so the protocols need not pass it down.
_ON_BATCH: ContextVar[Callable[[int, int], None] | None] = ContextVar("lrfr_embed_progress", default=None)


@contextmanager
def embed_progress(callback: Callable[[int, int], None]) -> Iterator[None]:
    """Call ``callback(done, total)`` after every batch that ``embed``/``embed_dataset`` embed inside."""
    token = _ON_BATCH.set(callback)
    try:
        yield
    finally:
        _ON_BATCH.reset(token)


def _tick(done: int, total: int) -> None:
    callback = _ON_BATCH.get()
    if callback is not None:
        callback(done, total)


def as_embed_fn(model: nn.Module | EmbedFn) -> EmbedFn:
    """Put a module in eval mode; exported programs (torch.export) are already fixed in it."""
    if isinstance(model, nn.Module):
        try:
            model.eval()
        except NotImplementedError:  # torch.export's module(): no train/eval switch, traced in eval mode
            pass
    return model


@torch.no_grad()
def embed_batch(model: EmbedFn, batch: Tensor, resolution: int | Tensor | None = None,
                flip_fuse: bool = True) -> Tensor:
    """L2norm(f(x) + f(flip x)) of one uint8 batch already on the model's device."""
    if resolution is not None:
        batch = degrade(batch, resolution)
    # Channels-last input: oneDNN convolutions are ~3x faster than on NCHW input on the CPU.
    x = batch.float().div_(127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)
    feats = model(x).float()
    if flip_fuse:
        feats = feats + model(torch.flip(x, dims=[3])).float()
    return F.normalize(feats, dim=1)


@torch.no_grad()
def embed(model: nn.Module | EmbedFn, images: Tensor, device: torch.device | str, batch_size: int = 128,
          resolution: int | Tensor | None = None, flip_fuse: bool = True) -> np.ndarray:
    """Embeddings of uint8 N x 3 x H x W ``images`` (float32 N x D, rows of unit length).

    ``resolution``: degrade to r x r and back first - one int, or one r per image (a value >= H
    keeps that image HR).
    """
    fn = as_embed_fn(model)
    device = torch.device(device)
    per_image = torch.is_tensor(resolution)
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        r = resolution[start : start + batch_size] if per_image else resolution
        if r is not None and not per_image and r >= batch.shape[-1]:
            r = None
        out.append(embed_batch(fn, batch, r, flip_fuse).cpu())
        _tick(min(start + batch_size, len(images)), len(images))
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


@torch.no_grad()
def embed_dataset(model: nn.Module | EmbedFn, dataset: Dataset, device: torch.device | str, batch_size: int = 128,
                  num_workers: int = 0) -> np.ndarray:
    """Stream a dataset of (uint8 image, label) through the model: nothing but one batch in memory."""
    fn = as_embed_fn(model)
    device = torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False,
                        worker_init_fn=ignore_stop_signals)
    out, total = [], len(dataset)  # type: ignore[arg-type]
    for images, _ in iterate(loader):
        out.append(embed_batch(fn, images.to(device)).cpu())
        _tick(min(len(out) * batch_size, total), total)
    return torch.cat(out).numpy()
