"""Where a run's training images come from: the synthetic generator or a registered dataset."""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from engine.catalog import lookup
from engine.config import RunConfig
from engine.data import FacePack, PackSource, is_pack, open_dataset, write_pack
from engine.data.gpu_decode import EncodedFaces
from engine.data.synthetic import materialise
from engine.errors import DatasetError
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
    """The training set named by ``cfg.data.dataset`` (generating the synthetic one if needed), read as
    ``cfg.data.reader`` says: its decoded-face pack, PIL decoding, or encoded bytes for the GPU's decoder."""
    size, reader = cfg.model.input_size, cfg.data.reader
    if cfg.data.dataset == "synthetic":
        root = synthetic_train_root(cfg)
        if reporter is not None:
            reporter.event("data", f"synthetic faces in {root}", path=str(root))
        materialise(root, cfg.data.synthetic_identities, cfg.data.synthetic_images_per_identity,
                    seed=cfg.data.synthetic_seed, size=size)
        folder = open_dataset(root, format="folder", on_error=cfg.data.on_error, size=size)
        if reader == "pack":  # packed once next to the generated folder
            pack_root = root.with_name(root.name + ".pack")
            if not is_pack(pack_root):
                write_pack(folder, pack_root, PackSource("synthetic", str(root), "folder"), size,
                           num_workers=cfg.data.num_workers)
            return _report(reporter, FacePack(pack_root))
        return EncodedFaces(folder) if reader == "gpu_decode" else folder
    entry = lookup(cfg.data.dataset)
    if entry.format == "pack":
        if reader in ("decode", "gpu_decode"):
            raise DatasetError(f"data.reader={reader}: dataset {entry.name!r} is a face pack, decoded already; "
                               f"use data.reader=auto or pack")
        return _report(reporter, open_dataset(Path(entry.path), format="pack", size=size))
    if reader in ("auto", "pack") and entry.pack:
        pack = _usable_pack(entry.name, Path(entry.pack), size, strict=reader == "pack", reporter=reporter)
        if pack is not None:
            return _report(reporter, pack)
    elif reader == "pack":
        raise DatasetError(f"data.reader=pack: dataset {entry.name!r} has no face pack; write one with "
                           f"`lrfr data pack {entry.name}`")
    dataset = open_dataset(Path(entry.path), format=entry.format, on_error=cfg.data.on_error, size=size)
    return EncodedFaces(dataset) if reader == "gpu_decode" else dataset


def _usable_pack(name: str, root: Path, size: int, strict: bool, reporter: Reporter | None) -> FacePack | None:
    """The entry's pack, or None (with a ``data`` event saying why) when ``strict`` is off and it is unusable."""
    try:
        pack = open_dataset(root, format="pack", size=size)
    except DatasetError as exc:
        if strict:
            raise
        if reporter is not None:
            reporter.event("data", f"not reading the face pack of {name!r} ({exc}); decoding its images instead")
        return None
    return pack


def _report(reporter: Reporter | None, pack: FacePack) -> FacePack:
    if reporter is not None:
        reporter.event("data", f"face pack {pack.root} ({pack.count} images, from {pack.source.path})",
                       path=str(pack.root))
    return pack
