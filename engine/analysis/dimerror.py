"""Figure 6: how the HR-LR embedding error spreads over the dimensions.

For faces x and their copies degraded to r, with unit embeddings f_hr = F(x)/|F(x)| and f_lr likewise,
the error of dimension i is e_i = mean over faces of |f_hr,i - f_lr,i|. The distribution of the D values
e_i shows what a feature-distance loss did: L2 leaves a few dimensions with large errors, LogExp (which
weights the gradient towards the largest differences) flattens them. Embeddings are single forward
passes without flip fusion here, the quantity the training distance loss sees; ``flip_fuse=True`` gives
the evaluation embeddings instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.analysis.common import new_figure, save_figure, write_csv, write_json
from engine.evaluate.embeddings import EmbedFn, embed

__all__ = ["DimensionErrors", "dimension_errors", "plot_dimerror", "write_dimerror_data"]


@dataclass
class DimensionErrors:
    label: str
    input_size: int
    resolution: int
    per_dim: np.ndarray  # D mean absolute errors
    num_images: int

    def summary(self) -> dict:
        e = self.per_dim
        return {"model": self.label, "resolution_px": self.resolution, "dimensions": int(e.size),
                "images": self.num_images, "mean": float(e.mean()), "median": float(np.median(e)),
                "p95": float(np.percentile(e, 95)), "max": float(e.max()), "std": float(e.std()),
                "l2_of_mean_abs_error": float(np.linalg.norm(e))}


def dimension_errors(model: torch.nn.Module | EmbedFn, images: torch.Tensor, resolution: int,
                     device: torch.device | str = "cpu", batch_size: int = 128, label: str = "model",
                     flip_fuse: bool = False) -> DimensionErrors:
    """Per-dimension mean |f_hr - f_lr| of ``images`` against their copies at ``resolution``."""
    size = int(images.shape[-1])
    hr = embed(model, images, device, batch_size, flip_fuse=flip_fuse)
    lr = embed(model, images, device, batch_size, resolution=resolution, flip_fuse=flip_fuse)
    err = np.abs(hr.astype(np.float64) - lr.astype(np.float64)).mean(axis=0)
    return DimensionErrors(label, size, min(int(resolution), size), err, len(images))


def plot_dimerror(data: Sequence[DimensionErrors], path: Path, bins: int = 40, title: str = "") -> Path:
    """Left: histogram of the D per-dimension errors per model. Right: the errors sorted, largest first."""
    fig = new_figure(11, 4.4)
    ax_hist, ax_rank = fig.subplots(1, 2)
    top = max((float(d.per_dim.max()) for d in data), default=1.0)
    edges = np.linspace(0.0, top * 1.0001 if top > 0 else 1.0, bins + 1)
    for d in data:
        (line,) = ax_rank.plot(np.arange(1, d.per_dim.size + 1), np.sort(d.per_dim)[::-1],
                               label=f"{d.label} (mean {d.per_dim.mean():.4f}, max {d.per_dim.max():.4f})")
        ax_hist.hist(d.per_dim, bins=edges, histtype="step", linewidth=1.6, color=line.get_color(), label=d.label)
    ax_hist.set_xlabel(r"per-dimension mean $|f_{hr,i} - f_{lr,i}|$")
    ax_hist.set_ylabel("number of dimensions")
    ax_hist.legend(fontsize="small")
    ax_rank.set_xlabel("dimension rank (largest error first)")
    ax_rank.set_ylabel(r"mean $|f_{hr,i} - f_{lr,i}|$")
    ax_rank.legend(fontsize="x-small")
    for ax in (ax_hist, ax_rank):
        ax.grid(True, alpha=0.25)
    if data:
        res = sorted({d.resolution for d in data})
        where = ", ".join(f"{r} px" for r in res)
        fig.suptitle(title or f"Per-dimension HR-LR embedding error, LR = {where} (Fig. 6)")
    return save_figure(fig, path)


def write_dimerror_data(data: Sequence[DimensionErrors], csv_path: Path, json_path: Path) -> list[Path]:
    rows = [(d.label, d.resolution, i, float(v)) for d in data for i, v in enumerate(d.per_dim)]
    write_csv(csv_path, ["model", "resolution_px", "dimension", "mean_abs_error"], rows)
    write_json(json_path, [d.summary() for d in data])
    return [Path(csv_path), Path(json_path)]
