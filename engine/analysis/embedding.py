"""Figures 3c and 7: where the embeddings of the same faces go as their resolution drops.

The same faces are embedded at HR and at each lower resolution (flip-fused, L2-normalised, as in
evaluation); all of them are projected together to 2-D (PCA, or t-SNE from scikit-learn), and the
centre of each resolution's cloud is marked. Besides the picture, per resolution: the mean cosine of a
face's embedding with its own HR embedding, and the norm of the mean embedding (near 0 for embeddings
spread over the sphere, towards 1 when they collapse to one direction, as LR faces tend to).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.analysis.common import (
    new_figure,
    resolution_label,
    save_figure,
    sweep_resolutions,
    write_csv,
    write_json,
)
from engine.evaluate.embeddings import EmbedFn, embed

__all__ = ["EmbeddingProjection", "PROJECTIONS", "embed_at_resolutions", "embedding_projection", "plot_embedding",
           "project", "write_embedding_data"]

PROJECTIONS = ("pca", "tsne")


@dataclass
class EmbeddingProjection:
    label: str
    method: str
    input_size: int
    resolutions: list[int]  # descending: HR first
    coords: np.ndarray  # R x N x 2
    centres: np.ndarray  # R x 2, mean of each resolution's 2-D points
    cos_to_hr: list[float]  # per resolution: mean cosine of a face's embedding with its HR embedding
    mean_norm: list[float]  # per resolution: || mean of the unit embeddings ||
    explained_variance: list[float] | None = None  # PCA only: ratio per component


def embed_at_resolutions(model: torch.nn.Module | EmbedFn, images: torch.Tensor, resolutions: Sequence[int],
                         device: torch.device | str = "cpu", batch_size: int = 128) -> np.ndarray:
    """R x N x D unit embeddings of ``images`` degraded to each resolution (>= size: HR)."""
    return np.stack([embed(model, images, device, batch_size, resolution=r) for r in resolutions])


def project(points: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, list[float] | None]:
    """2-D coordinates of M x D ``points`` (and, for PCA, the explained-variance ratio of each axis).

    PCA is an SVD of the centred points (each axis's sign fixed so that its largest loading is
    positive: the same picture on every run). t-SNE is scikit-learn's, run with one thread per pool:
    scikit-learn ships its own OpenMP runtime and BLAS, and next to torch's they fight for the cores
    (t-SNE of 60 points took 8 s instead of 0.15 s on 2 cores).
    """
    points = np.asarray(points, dtype=np.float64)
    if method == "pca":
        centred = points - points.mean(axis=0)
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        axes = vt[:2]
        axes = axes * np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
        total = float(np.sum(singular**2))
        explained = [float(v) / total if total > 0 else 0.0 for v in singular[:2] ** 2]
        return centred @ axes.T, explained
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        with threadpool_limits(limits=1):
            return tsne.fit_transform(points), None
    raise ValueError(f"unknown projection {method!r}; choose one of: {', '.join(PROJECTIONS)}")


def embedding_projection(model: torch.nn.Module | EmbedFn, images: torch.Tensor, resolutions: Sequence[int],
                         method: str = "pca", device: torch.device | str = "cpu", batch_size: int = 128,
                         label: str = "model", seed: int = 0) -> EmbeddingProjection:
    """Embed ``images`` at each resolution and project all of them to 2-D together."""
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; choose one of: {', '.join(PROJECTIONS)}")
    size = int(images.shape[-1])
    sizes = sorted(sweep_resolutions(resolutions, size), reverse=True)
    emb = embed_at_resolutions(model, images, sizes, device, batch_size)  # R x N x D
    r_count, n, d = emb.shape
    flat, explained = project(emb.reshape(r_count * n, d), method, seed)
    coords = flat.reshape(r_count, n, 2)
    hr = emb[0]  # sizes are descending, so the first is HR
    return EmbeddingProjection(
        label=label, method=method, input_size=size, resolutions=sizes, coords=coords,
        centres=coords.mean(axis=1),
        cos_to_hr=[float(np.mean(np.sum(e * hr, axis=1))) for e in emb],
        mean_norm=[float(np.linalg.norm(e.mean(axis=0))) for e in emb],
        explained_variance=explained,
    )


def plot_embedding(projections: Sequence[EmbeddingProjection], path: Path, title: str = "") -> Path:
    """One panel per model: the faces' 2-D points coloured by resolution, each resolution's centre as
    a large cross, the centres joined from HR down to the lowest resolution."""
    from matplotlib import colormaps

    cols = min(3, max(1, len(projections)))
    rows = -(-len(projections) // cols) if projections else 1
    fig = new_figure(max(7.0, 5.2 * cols), 5.0 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    cmap = colormaps["viridis"]
    for ax, proj in zip(axes, projections, strict=False):
        count = len(proj.resolutions)
        colours = [cmap(i / max(1, count - 1)) for i in range(count)]
        for i, r in enumerate(proj.resolutions):
            pts = proj.coords[i]
            ax.scatter(pts[:, 0], pts[:, 1], s=9, alpha=0.55, color=colours[i], linewidths=0,
                       label=resolution_label(r, proj.input_size))
        ax.plot(proj.centres[:, 0], proj.centres[:, 1], color="black", linewidth=1, alpha=0.7)
        for i, r in enumerate(proj.resolutions):
            cx, cy = proj.centres[i]
            ax.scatter([cx], [cy], marker="X", s=140, color=colours[i], edgecolors="black", linewidths=1.2,
                       zorder=5)
            # Labels in a column beside the first centre, each tied to its cross by a thin line:
            # the centres of the higher resolutions often nearly coincide.
            ax.annotate("HR" if r >= proj.input_size else f"{r} px", (cx, cy), xytext=(18, 14 - 13 * i),
                        textcoords="offset points", fontsize=8, weight="bold",
                        arrowprops={"arrowstyle": "-", "linewidth": 0.6, "color": "black"})
        if proj.method == "pca" and proj.explained_variance:
            ev = proj.explained_variance
            ax.set_xlabel(f"PC1 ({100 * ev[0]:.1f}% var.)")
            ax.set_ylabel(f"PC2 ({100 * ev[1]:.1f}% var.)")
        else:
            ax.set_xlabel(f"{proj.method} 1")
            ax.set_ylabel(f"{proj.method} 2")
        ax.set_title(f"{proj.label} ({proj.method.upper()}, {proj.coords.shape[1]} faces)", fontsize="medium")
        ax.legend(fontsize="x-small", markerscale=2, title="resolution (X = centre)", title_fontsize="x-small")
        ax.grid(True, alpha=0.2)
    for ax in axes[len(projections):]:
        ax.set_visible(False)
    fig.suptitle(title or "The same faces at decreasing resolution (Fig. 3c / 7)", fontsize="medium")
    return save_figure(fig, path)


def write_embedding_data(projections: Sequence[EmbeddingProjection], csv_path: Path, json_path: Path) -> list[Path]:
    """Every 2-D point (CSV) and the per-resolution summary with the centres (JSON)."""
    rows = [(p.label, p.method, r, r >= p.input_size, face, float(x), float(y))
            for p in projections for i, r in enumerate(p.resolutions)
            for face, (x, y) in enumerate(p.coords[i])]
    write_csv(csv_path, ["model", "method", "resolution_px", "is_hr", "face", "x", "y"], rows)
    summary = [{
        "model": p.label, "method": p.method, "input_size": p.input_size, "faces": int(p.coords.shape[1]),
        "explained_variance": p.explained_variance,
        "resolutions": [{"resolution_px": r, "is_hr": r >= p.input_size, "centre": p.centres[i],
                         "mean_cos_to_hr": p.cos_to_hr[i], "mean_embedding_norm": p.mean_norm[i]}
                        for i, r in enumerate(p.resolutions)],
    } for p in projections]
    write_json(json_path, summary)
    return [Path(csv_path), Path(json_path)]
