"""Replacing a generated folder atomically, so an interrupted write never looks complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def swap_in(tmp: Path, root: Path, keep_existing: Callable[[Path], bool] | None = None) -> None:
    """Move the finished ``tmp`` folder to ``root``, replacing an older ``root``.

    ``keep_existing(root)`` says whether a ``root`` that is already there (another process
    finished first) is good to keep; without it an existing ``root`` is replaced.
    """
    if root.exists():
        if keep_existing is not None and keep_existing(root):
            return
        # Move the old tree aside in one rename, then delete it: readers never see a half tree.
        trash = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        os.replace(root, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(tmp, root)
    except OSError:
        # A writer that created root in between won the race: fine if what it wrote is complete.
        if not (keep_existing or Path.exists)(root):
            raise


def build_atomically(root: Path, build: Callable[[Path], None], what: str,
                     keep_existing: Callable[[Path], bool] | None = None) -> Path:
    """Run ``build(tmp)`` in a temp folder beside ``root``, then ``swap_in``; the temp folder never
    outlives the call. An OS error becomes a DatasetError naming ``what`` and ``root``."""
    from engine.errors import DatasetError

    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    except OSError as exc:
        raise DatasetError(f"cannot create {what} next to {root}: {exc}") from None
    try:
        build(tmp)
        swap_in(tmp, root, keep_existing)
    except OSError as exc:
        raise DatasetError(f"cannot write {what} {root}: {exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
