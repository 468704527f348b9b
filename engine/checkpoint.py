"""Checkpoint files: written atomically, loaded with ``weights_only=True``, owned by one run.

A checkpoint carries the identity of the run that wrote it (``run_uuid``, kept in runs.db by the
app) and the config it was trained with. A resume takes a checkpoint only if both match, so a
``runs/<id>/`` left behind by another database (or another run) is never adopted silently.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch

from engine.errors import LrfrError

LAST = "checkpoint.pt"
# What a trainer checkpoint must hold to be evaluated, and in addition to be resumed.
REQUIRED_KEYS = ("backbone", "config")
RESUME_KEYS = ("head", "optimizer", "scaler", "aug_rng", "torch_rng", "step")
# The config sections that define what is trained: a checkpoint from a run that differs in any of
# them is not this run's (launch, eval, names and train.device may change between attempts).
TRAINING_SECTIONS = ("model", "data", "augment", "loss", "optim", "schedule")
# Keys of those sections that change how, not what, is trained: a pack holds exactly the decoded images.
HOW_NOT_WHAT = {"data": ("reader",)}


class CheckpointWriteError(LrfrError):
    """A checkpoint could not be written (a full disk, a vanished directory)."""


class CheckpointMismatch(LrfrError):
    """The checkpoint in a run directory belongs to another run (or another config)."""


def _temp_name(path: Path) -> str:
    return f".{path.name}.tmp"


def save_atomic(state: dict[str, Any], path: Path) -> Path:
    """Write to a temp file beside ``path`` and rename: a crash never leaves a torn checkpoint, and
    a failed write (a full disk) removes its temp file rather than keep the disk full."""
    tmp = path.with_name(f"{_temp_name(path)}{os.getpid()}")
    for attempt in range(3):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
            return path
        except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError
            with contextlib.suppress(OSError):
                tmp.unlink()
            # The run directory (or our temp file) was deleted under us mid-write: make it again and
            # rewrite. A lasting problem (a full disk) still fails after the last attempt.
            if attempt == 2:
                raise CheckpointWriteError(f"cannot write checkpoint {path}: {exc}") from None
    return path


def remove_stale_temps(path: Path) -> list[Path]:
    """Temp files of ``path`` left by a process killed mid-write (SIGKILL, power cut)."""
    removed = []
    for tmp in path.parent.glob(f"{_temp_name(path)}*"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise LrfrError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise LrfrError(f"checkpoint {path} cannot be loaded: {exc}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if not missing and not isinstance(state["config"], dict):
        missing = ["config (a table)"]
    if missing:
        what = "a dict without " + ", ".join(missing) if isinstance(state, dict) else type(state).__name__
        raise LrfrError(f"{path} is not an lrfr checkpoint (it holds {what})")
    return state


def check_belongs(state: dict[str, Any], path: Path, run_uuid: str | None, config: dict[str, Any]) -> None:
    """Raise CheckpointMismatch unless ``state`` was written by run ``run_uuid`` with ``config``'s
    training sections. ``run_uuid`` None (a notebook's own directory) checks the config only."""
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise LrfrError(f"{path} cannot be resumed: it has no {', '.join(missing)}")
    theirs = state.get("run_uuid")
    if run_uuid is not None and theirs != run_uuid:
        owner = f"run {theirs}" if theirs else "an unidentified run (an older lrfr)"
        raise CheckpointMismatch(
            f"{path} belongs to {owner}, not this run ({run_uuid}): it is left from another runs.db "
            f"or run; move {path.parent} away (or use a --db in another directory) - it is never resumed")
    saved = state.get("config", {})
    differs = [s for s in TRAINING_SECTIONS if not _same_section(s, saved.get(s), config.get(s))]
    if differs:
        raise CheckpointMismatch(f"{path} was trained with a different config ([{'], ['.join(differs)}] "
                                 f"differ): it is not resumed as this run")


def _same_section(name: str, saved: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
    """Whether a checkpoint's config section is the current one. A key the checkpoint lacks (added to lrfr
    after it was written) counts with its default value; ``HOW_NOT_WHAT`` keys are not compared."""
    from engine.config import RunConfig, to_dict

    if saved is None or current is None:
        return saved == current
    saved = {**to_dict(RunConfig())[name], **saved}
    skip = HOW_NOT_WHAT.get(name, ())
    return {k: v for k, v in saved.items() if k not in skip} == {k: v for k, v in current.items() if k not in skip}
