"""Figure 5: ROC curves of several models on a verification benchmark, FAR on a log axis.

Scores are cosine similarities of the flip-fused unit embeddings (``1 - d/2`` of the squared L2
distance, as the LFW benchmark's TAR@FAR metrics use); the curve is ``engine.evaluate.roc.roc_curve``.
TAR is read at FAR = 1e-3 when the benchmark has enough mismatched pairs to resolve it (at least
1,000), otherwise at the smallest of 1e-2, 1e-1, 1 that it resolves; the "conservative" convention
(best TAR among the points with FAR <= target) is marked, "nearest" is kept in the data too.
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
from engine.evaluate.roc import FAR_TARGETS, roc_curve, tar_at_far
from engine.evaluate.verification import squared_l2

__all__ = ["RocData", "plot_roc", "resolvable_far", "roc_data", "write_roc_data"]


@dataclass
class RocData:
    label: str
    benchmark: str
    resolution: int | None  # px of the second image, None = the benchmark's own images
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray  # cosine similarity; accept iff score >= threshold
    far_target: float
    tar: float  # conservative: best TAR with FAR <= far_target
    tar_fpr: float
    tar_nearest: float
    negatives: int
    positives: int

    def summary(self) -> dict:
        return {"model": self.label, "benchmark": self.benchmark, "resolution_px": self.resolution,
                "far_target": self.far_target, "tar_conservative": self.tar, "fpr_at_tar": self.tar_fpr,
                "tar_nearest": self.tar_nearest, "positives": self.positives, "negatives": self.negatives,
                "auc": float(np.sum(np.diff(self.fpr) * (self.tpr[1:] + self.tpr[:-1]) / 2))}


def resolvable_far(negatives: int, preferred: float = 1e-3) -> float:
    """``preferred`` if ``negatives`` mismatched pairs can resolve it (target * negatives >= 1), else the
    smallest larger target among 1e-6 ... 1e-1 and 1 that they can."""
    for target in sorted({*FAR_TARGETS, 1.0}):
        if target >= preferred and target * negatives >= 1:
            return float(target)
    return 1.0


def roc_data(model: torch.nn.Module | EmbedFn, pairs: VerificationPairs, device: torch.device | str = "cpu",
             batch_size: int = 128, label: str = "model", benchmark: str = "lfw", resolution: int | None = None,
             far_target: float = 1e-3) -> RocData:
    """The ROC of ``model`` on ``pairs`` (second image at ``resolution`` if given) and TAR at the target."""
    size = int(pairs.images.shape[-1])
    e1 = embed(model, pairs.first, device, batch_size)
    e2 = embed(model, pairs.second, device, batch_size, resolution=resolution)
    issame = np.asarray(pairs.issame, dtype=bool)
    score = 1.0 - squared_l2(e1, e2) / 2.0
    curve = roc_curve(issame, score)
    negatives = int((~issame).sum())
    target = resolvable_far(negatives, far_target)
    tar = tar_at_far(curve.fpr, curve.tpr, (target,), thresholds=curve.thresholds)[target]
    return RocData(label=label, benchmark=benchmark,
                   resolution=None if resolution is None or resolution >= size else int(resolution),
                   fpr=curve.fpr, tpr=curve.tpr, thresholds=curve.thresholds, far_target=target,
                   tar=tar.conservative_tar, tar_fpr=tar.conservative_fpr, tar_nearest=tar.nearest_tar,
                   negatives=negatives, positives=int(issame.sum()))


def plot_roc(curves: Sequence[RocData], path: Path, title: str = "") -> Path:
    """TAR against FAR (log axis) per model; each model's TAR at its FAR target marked and labelled."""
    fig = new_figure(7.2, 5.2)
    ax = fig.subplots()
    lowest = 1.0
    for c in curves:
        keep = c.fpr > 0  # FAR 0 has no place on a log axis
        (line,) = ax.plot(c.fpr[keep], 100 * c.tpr[keep], drawstyle="steps-post",
                          label=f"{c.label}: TAR@FAR={c.far_target:.0e} = {100 * c.tar:.2f}%")
        ax.scatter([c.far_target], [100 * c.tar], color=line.get_color(), edgecolors="black", zorder=5, s=45)
        if keep.any():
            lowest = min(lowest, float(c.fpr[keep].min()))
    for target in sorted({c.far_target for c in curves}):
        ax.axvline(target, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log", nonpositive="mask")
    ax.set_xlim(lowest / 2, 1.0)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("true accept rate (TAR, %)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize="small", loc="lower right")
    if curves:
        c = curves[0]
        where = f"{c.benchmark}" + (f", probe at {c.resolution} px" if c.resolution else "")
        ax.set_title(title or f"ROC on {where} ({c.positives} + {c.negatives} pairs) (Fig. 5)")
    return save_figure(fig, path)


def write_roc_data(curves: Sequence[RocData], csv_path: Path, json_path: Path) -> list[Path]:
    """Every ROC point (CSV) and each model's TAR at its FAR target (JSON)."""
    rows = [(c.label, float(f), float(t), float(th)) for c in curves
            for f, t, th in zip(c.fpr, c.tpr, c.thresholds, strict=True)]
    write_csv(csv_path, ["model", "fpr", "tpr", "threshold"], rows)
    write_json(json_path, [c.summary() for c in curves])
    return [Path(csv_path), Path(json_path)]
