"""Where a run's training images come from: the synthetic generator or a registered dataset."""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from engine.catalog import lookup
from engine.config import RunConfig
from engine.data import open_dataset
from engine.data.synthetic import materialise
from engine.reporting import Reporter


def cache_root() -> Path:
    """Generated data lives in ``$LRFR_CACHE`` or ``~/.cache/lrfr``; it is rebuilt if deleted."""
    env = os.environ.get("LRFR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lrfr"


def synthetic_train_root(cfg: RunConfig) -> Path:
    d = cfg.data
    name = (f"synthetic-s{d.synthetic_seed}-n{d.synthetic_identities}-k{d.synthetic_images_per_identity}"
            f"-{cfg.model.input_size}px")
    return cache_root() / name


def build_train_dataset(cfg: RunConfig, reporter: Reporter | None = None) -> Dataset:
    """The training set named by ``cfg.data.dataset`` (generating the synthetic one if needed)."""
    size = cfg.model.input_size
    if cfg.data.dataset == "synthetic":
        root = synthetic_train_root(cfg)
        if reporter is not None:
            reporter.event("data", f"synthetic faces in {root}", path=str(root))
        materialise(root, cfg.data.synthetic_identities, cfg.data.synthetic_images_per_identity,
                    seed=cfg.data.synthetic_seed, size=size)
        return open_dataset(root, format="folder", on_error=cfg.data.on_error, size=size)
    entry = lookup(cfg.data.dataset)
    return open_dataset(Path(entry.path), format=entry.format, on_error=cfg.data.on_error, size=size)
