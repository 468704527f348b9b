"""Figure 1: cosine similarities of matched and mismatched pairs, at HR and with a low-resolution probe.

HR: both images of every pair at full resolution. LR: the second image degraded to r x r and back (the
first stays HR, as in cross-resolution verification). A model that handles low resolution keeps the
two histograms apart in the LR column; an HR-only baseline lets them slide together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.analysis.common import new_figure, save_figure, write_csv, write_json
from engine.data.pairs import VerificationPairs
from engine.evaluate.embeddings import EmbedFn, embed

__all__ = ["PairSimilarities", "pair_similarities", "plot_similarity", "write_similarity_data"]


@dataclass
class PairSimilarities:
    label: str
    input_size: int
    resolution: int  # px of the LR probe
    issame: np.ndarray  # P booleans
    hr: np.ndarray  # P cosines, both images HR
    lr: np.ndarray  # P cosines, second image at ``resolution``
    baseline: bool = False

    def summary(self) -> dict:
        out: dict = {"model": self.label, "baseline": self.baseline, "lr_resolution_px": self.resolution}
        for name, values in (("hr", self.hr), ("lr", self.lr)):
            pos, neg = values[self.issame], values[~self.issame]
            out[name] = {"positive_mean": float(pos.mean()) if len(pos) else None,
                         "positive_std": float(pos.std()) if len(pos) else None,
                         "negative_mean": float(neg.mean()) if len(neg) else None,
                         "negative_std": float(neg.std()) if len(neg) else None}
        return out


def _cosines(e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", e1.astype(np.float64), e2.astype(np.float64))


def pair_similarities(model: torch.nn.Module | EmbedFn, pairs: VerificationPairs, resolution: int,
                      device: torch.device | str = "cpu", batch_size: int = 128, label: str = "model",
                      baseline: bool = False) -> PairSimilarities:
    """Cosine similarity of every pair with both images HR, and with the second at ``resolution``."""
    size = int(pairs.images.shape[-1])
    e1 = embed(model, pairs.first, device, batch_size)
    e2 = embed(model, pairs.second, device, batch_size)
    e2_lr = embed(model, pairs.second, device, batch_size, resolution=resolution)
    return PairSimilarities(label, size, min(int(resolution), size), pairs.issame.copy(), _cosines(e1, e2),
                            _cosines(e1, e2_lr), baseline)


def plot_similarity(data: Sequence[PairSimilarities], path: Path, bins: int = 50, title: str = "") -> Path:
    """One row per model (baselines last), columns HR and LR: positive and negative histograms."""
    ordered = sorted(data, key=lambda d: d.baseline)
    fig = new_figure(10, 2.9 * max(1, len(ordered)) + 0.6)
    axes = fig.subplots(max(1, len(ordered)), 2, squeeze=False, sharex=True)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    for row, d in zip(axes, ordered, strict=False):
        for ax, (name, values) in zip(row, (("HR", d.hr), (f"LR ({d.resolution} px probe)", d.lr)), strict=True):
            pos, neg = values[d.issame], values[~d.issame]
            ax.hist(pos, bins=edges, density=True, alpha=0.55, color="tab:green",
                    label=f"positive pairs (mean {pos.mean():.2f})" if len(pos) else "positive pairs")
            ax.hist(neg, bins=edges, density=True, alpha=0.55, color="tab:red",
                    label=f"negative pairs (mean {neg.mean():.2f})" if len(neg) else "negative pairs")
            tag = " [baseline]" if d.baseline else ""
            ax.set_title(f"{d.label}{tag}: {name}", fontsize="medium")
            ax.set_ylabel("density")
            ax.legend(fontsize="x-small", loc="upper left")
            ax.grid(True, alpha=0.2)
    for ax in axes[-1]:
        ax.set_xlabel("cosine similarity")
    fig.suptitle(title or "Pair similarities at HR and low resolution (Fig. 1)")
    return save_figure(fig, path)


def write_similarity_data(data: Sequence[PairSimilarities], csv_path: Path, json_path: Path) -> list[Path]:
    """Every pair's two cosines (CSV) and per model and condition the means and stds (JSON)."""
    rows = [(d.label, d.baseline, i, bool(s), float(h), float(lo), d.resolution)
            for d in data for i, (s, h, lo) in enumerate(zip(d.issame, d.hr, d.lr, strict=True))]
    write_csv(csv_path, ["model", "baseline", "pair", "issame", "cos_hr", "cos_lr", "lr_resolution_px"], rows)
    write_json(json_path, [d.summary() for d in data])
    return [Path(csv_path), Path(json_path)]
