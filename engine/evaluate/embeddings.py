"""Embedding extraction for evaluation: flip-fused, L2-normalised, batched, optional degradation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.augment import degrade


@torch.no_grad()
def embed(model: nn.Module, images: Tensor, device: torch.device | str, batch_size: int = 128,
          resolution: int | None = None, flip_fuse: bool = True) -> np.ndarray:
    """Embeddings of uint8 N x 3 x H x W ``images``: L2norm(f(x) + f(flip x)).

    ``resolution``: degrade to r x r and back first (None or >= H keeps the HR image).
    """
    model.eval()
    device = torch.device(device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        if resolution is not None and resolution < batch.shape[-1]:
            batch = degrade(batch, resolution)
        x = batch.float().div_(127.5).sub_(1.0)
        feats = model(x).float()
        if flip_fuse:
            feats = feats + model(torch.flip(x, dims=[3])).float()
        out.append(F.normalize(feats, dim=1).cpu())
    return torch.cat(out).numpy()
