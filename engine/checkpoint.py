"""Checkpoint files: written atomically, loaded with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from engine.errors import LrfrError

LAST = "checkpoint.pt"


def save_atomic(state: dict[str, Any], path: Path) -> Path:
    """Write to a temp file beside ``path`` and rename: a crash never leaves a torn checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    for attempt in range(3):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
            return path
        except (OSError, RuntimeError):
            # The run directory (or our temp file) was deleted under us mid-write: make it again and
            # rewrite. A lasting problem (a full disk) still raises after the last attempt.
            if attempt == 2:
                raise
    return path


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise LrfrError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise LrfrError(f"checkpoint {path} cannot be loaded: {exc}") from None
