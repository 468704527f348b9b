"""Figure 3a: verification accuracy against the probe resolution, with the SSIM left at each one.

The protocol is the low-resolution LFW benchmark's (``engine.evaluate.benchmarks.bench_lowres_lfw``):
the second image of every pair is degraded to r x r and back (``engine.augment.degrade``), the first
stays HR (or both are degraded with ``degrade_both``), and the insightface 10-fold protocol gives the
accuracy. SSIM compares each degraded second image with its HR original.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.analysis.common import new_figure, save_figure, sweep_resolutions, write_csv
from engine.data.pairs import VerificationPairs
from engine.evaluate.embeddings import EmbedFn, embed
from engine.evaluate.ssim import ssim_degraded
from engine.evaluate.verification import insightface_verification

__all__ = ["ResolutionCurve", "plot_resolution", "resolution_sweep", "ssim_per_resolution", "write_resolution_csv"]


@dataclass
class ResolutionCurve:
    """One model's accuracy per probe resolution (ascending px; the input size is HR)."""

    label: str
    input_size: int
    resolutions: list[int]
    accuracy: list[float]
    accuracy_std: list[float]
    threshold: list[float]
    ssim: list[float]

    def rows(self) -> list[tuple]:
        return [(self.label, r, r >= self.input_size, a, s, t, q) for r, a, s, t, q in
                zip(self.resolutions, self.accuracy, self.accuracy_std, self.threshold, self.ssim, strict=True)]


def ssim_per_resolution(images: torch.Tensor, resolutions: Iterable[int]) -> dict[int, float]:
    """Mean SSIM between ``images`` and their copies degraded to each resolution (1.0 at full size)."""
    size = images.shape[-1]
    return {r: 1.0 if r >= size else float(ssim_degraded(images, r).mean()) for r in resolutions}


def resolution_sweep(model: torch.nn.Module | EmbedFn, pairs: VerificationPairs, resolutions: Sequence[int],
                     device: torch.device | str = "cpu", batch_size: int = 128, label: str = "model",
                     degrade_both: bool = False) -> ResolutionCurve:
    """Accuracy (insightface 10-fold) of ``model`` on ``pairs`` with the probe side at each resolution."""
    size = int(pairs.images.shape[-1])
    sizes = sweep_resolutions(resolutions, size)
    first, second = pairs.first, pairs.second
    hr1 = embed(model, first, device, batch_size)
    hr2 = embed(model, second, device, batch_size)
    quality = ssim_per_resolution(second, sizes)
    acc, std, thr = [], [], []
    for r in sizes:
        if r >= size:
            e1, e2 = hr1, hr2
        else:
            e2 = embed(model, second, device, batch_size, resolution=r)
            e1 = embed(model, first, device, batch_size, resolution=r) if degrade_both else hr1
        res = insightface_verification(e1, e2, pairs.issame, pairs.folds)
        acc.append(res.accuracy)
        std.append(res.std)
        thr.append(res.threshold)
    return ResolutionCurve(label, size, sizes, acc, std, thr, [quality[r] for r in sizes])


def plot_resolution(curves: Sequence[ResolutionCurve], path: Path, title: str = "") -> Path:
    """Accuracy (left axis, one line per model) and SSIM (right axis, dashed) against resolution,
    on a log-spaced px axis with HR at the right. The data: ``write_resolution_csv``."""
    fig = new_figure(7.5, 4.6)
    ax = fig.subplots()
    ticks: dict[int, str] = {}
    for curve in curves:
        x = np.asarray(curve.resolutions, dtype=float)
        ax.plot(x, 100 * np.asarray(curve.accuracy), marker="o", label=curve.label)
        for r in curve.resolutions:
            ticks.setdefault(r, "HR" if r >= curve.input_size else str(r))
    ax.set_xscale("log")
    ax.set_xticks(sorted(ticks), [ticks[r] for r in sorted(ticks)])
    ax.minorticks_off()
    ax.set_xlabel("probe resolution (px, degraded and up-sampled back)")
    ax.set_ylabel("verification accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    seen: set[tuple] = set()
    for curve in curves:
        key = (tuple(curve.resolutions), tuple(round(v, 6) for v in curve.ssim))
        if key in seen:
            continue
        seen.add(key)
        ax2.plot(curve.resolutions, curve.ssim, linestyle="--", color="grey", marker=".",
                 label="SSIM vs HR" if len(seen) == 1 else None)
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("SSIM of the probe vs its HR image")
    lines, labels = ax.get_legend_handles_labels()
    lines2, labels2 = ax2.get_legend_handles_labels()
    ax.legend(lines + lines2, labels + labels2, loc="best", fontsize="small")
    ax.set_title(title or "Verification accuracy vs probe resolution (Fig. 3a)")
    return save_figure(fig, path)


def write_resolution_csv(curves: Sequence[ResolutionCurve], path: Path) -> Path:
    rows = [row for c in curves for row in c.rows()]
    return write_csv(path, ["model", "resolution_px", "is_hr", "accuracy", "accuracy_std", "threshold", "ssim"],
                     rows)

