"""What every analysis needs: trained models with their configs, the benchmark faces of a config,
training faces with labels, and the writers for a figure's PNG and its data files.

Nothing here touches a database: models are loaded from checkpoint files, data from the places a
run's config names (``eval.source`` / ``eval.standin_size`` for the benchmarks, ``data.*`` for the
training set).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engine import checkpoint as ckpt
from engine.config import RunConfig, from_dict
from engine.data.pairs import VerificationPairs
from engine.errors import LrfrError
from engine.reporting import Reporter

__all__ = [
    "AnalysedModel",
    "FigureFiles",
    "HR",
    "load_model",
    "load_pairs",
    "resolution_label",
    "sweep_resolutions",
    "training_faces",
    "write_csv",
    "write_json",
]

HR = 0
"""Stands for "the model's full input size" in resolution lists given before the size is known."""


@dataclass
class AnalysedModel:
    """One trained model to analyse: its backbone (eval mode), its config and, if it has one, the
    classification head it was trained with (needed only by the gradient-norm analysis)."""

    label: str
    backbone: nn.Module
    cfg: RunConfig
    head: nn.Module | None = None
    baseline: bool = False  # marked as the reference model (e.g. ``lrfr analyze --baseline``)

    @property
    def input_size(self) -> int:
        return self.cfg.model.input_size

    @property
    def is_baseline(self) -> bool:
        """Marked as the baseline, or trained without an LR branch (the paper's HR-only baseline)."""
        return self.baseline or not self.cfg.augment.resolutions


def load_model(checkpoint_path: str | Path, label: str | None = None,
               device: torch.device | str = "cpu") -> AnalysedModel:
    """Backbone, config and classification head of an lrfr checkpoint (one read of the file)."""
    from engine.losses import build_head
    from engine.train import build_backbone

    path = Path(checkpoint_path)
    state = ckpt.load(path)
    if "backbone" not in state or "config" not in state:
        raise LrfrError(f"{path} is not an lrfr training checkpoint (no backbone/config)")
    cfg = from_dict(state["config"])
    backbone = build_backbone(cfg)
    backbone.load_state_dict(state["backbone"])
    backbone = backbone.to(device).eval()
    head = None
    if "head" in state and "num_classes" in state:
        head = build_head(cfg.loss.head, cfg.model.embedding_size, int(state["num_classes"]),
                          s=cfg.loss.s, m=cfg.loss.m)
        head.load_state_dict(state["head"])
        head = head.to(device).eval()
    return AnalysedModel(label or cfg.name or path.parent.name, backbone, cfg, head)


def load_pairs(cfg: RunConfig, benchmark: str = "lfw") -> VerificationPairs:
    """The verification pairs of ``benchmark`` exactly as the evaluation of a run with ``cfg`` reads
    them (stand-ins for ``eval.source = synthetic``, the catalog otherwise), at the model's input size.

    ``benchmark``: ``lfw`` (the .bin pack for stand-ins), ``lowres_lfw`` (the LFW image tree and its
    pairs.txt, which the low-resolution LFW benchmark reads) or ``xqlfw``.
    """
    from engine.evaluate.benchmarks import EvalContext, _load_pairs

    if benchmark not in ("lfw", "lowres_lfw", "xqlfw"):
        raise LrfrError(f"unknown verification benchmark {benchmark!r}; choose lfw or xqlfw")
    ctx = EvalContext(model=None, cfg=cfg, device=torch.device("cpu"), reporter=Reporter())
    return _load_pairs(ctx, benchmark)


def training_faces(cfg: RunConfig, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` faces of the run's training set (uint8 N x 3 x S x S) and their training labels, drawn
    without replacement by a seeded permutation (unreadable images are left out)."""
    from engine.sources import build_train_dataset

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    dataset = build_train_dataset(cfg)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    images, labels = [], []
    for index in order:
        item = dataset[index]
        if item is None:
            continue
        images.append(item[0])
        labels.append(int(item[1]))
        if len(images) == n:
            break
    if not images:
        raise LrfrError("the training set has no readable images")
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def sweep_resolutions(resolutions: Iterable[int], input_size: int) -> list[int]:
    """Sorted distinct resolutions in px, each r >= the input size (or ``HR``) mapped to the input size."""
    out = set()
    for r in resolutions:
        r = int(r)
        if r < 0:
            raise LrfrError(f"resolutions must be positive (px), got {r}")
        out.add(input_size if r == HR or r >= input_size else r)
    if not out:
        raise LrfrError("no resolutions to analyse")
    return sorted(out)


def resolution_label(r: int, input_size: int) -> str:
    return f"HR ({input_size} px)" if r >= input_size else f"{r} px"


@dataclass
class FigureFiles:
    """What one figure wrote: the PNG and the data behind it (CSV and/or JSON)."""

    name: str
    png: Path
    data: list[Path] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [self.png, *self.data]


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: Any) -> Path:
    """JSON with numpy values converted (non-finite floats become null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(data), indent=1) + "\n")
    return path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV with a header row; floats written with full precision (repr)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow([repr(float(v)) if isinstance(v, (float, np.floating)) else v for v in row])
    return path


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot, no global state: safe in any thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Path, dpi: int = 130) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path
