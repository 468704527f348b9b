"""Changing existing runs, one function each: kill, resume (queued or here), tag, note, delete.

Each opens the store, does the one thing and closes it; the CLI and the TUI's screens only parse
what the user typed and show what came back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.errors import LrfrError
from lrfr_tui.runsdb import Store

# Edits a user waits for at the prompt (tag, note, delete) give up on a held write lock sooner than
# a training's writes do: ten seconds, then a one-line "database is locked".
EDIT_TIMEOUT_S = 10.0


def _edit_store(db: Path) -> Store:
    return Store(db, timeout_s=EDIT_TIMEOUT_S, create=False)

def kill_run(db: Path, run_id: int, grace_s: float = 60.0, scheduler=None) -> str:
    """Stop one run (queued: marked killed; running: SIGTERM, it checkpoints, SIGKILL after ``grace_s``);
    the status it ended with. A LrfrError when it cannot be stopped (unknown, already ended)."""
    from lrfr_tui.scheduler import stop_run

    store = Store(db, create=False)
    try:
        return stop_run(store, store.get_run(run_id), grace_s=grace_s, scheduler=scheduler)
    finally:
        store.close()


def kill_runs(db: Path, run_ids: Sequence[int], grace_s: float = 60.0,
              on_done: Callable[[int, str], None] | None = None) -> dict[int, str]:
    """``kill_run`` for each run, sharing one scheduler handle; a run that cannot be stopped reports
    why instead of stopping the others."""
    from lrfr_tui.scheduler import Scheduler

    sched = Scheduler(db)
    out: dict[int, str] = {}
    try:
        for run_id in run_ids:
            try:
                status = kill_run(db, run_id, grace_s=grace_s, scheduler=sched)
            except LrfrError as exc:
                status = f"not stopped: {exc}"
            out[run_id] = status
            if on_done is not None:
                on_done(run_id, status)
    finally:
        sched.store.close()
    return out


def resume_queued(db: Path, run_id: int) -> None:
    """Queue a killed or failed run again; it continues from its last checkpoint as the same run.
    Atomic: of a resume from the CLI and one from the TUI at the same moment, one wins whole."""
    from lrfr_tui.worker import check_checkpoint_resumable

    store = Store(db, create=False)
    try:
        check_checkpoint_resumable(db, store.get_run(run_id))
        store.requeue(run_id)
    finally:
        store.close()


def resume_here(db: Path, run_id: int) -> None:
    """Claim a killed or failed run for this process (`lrfr resume`, which then trains it); the
    loser of two resumes started together gets a LrfrError."""
    from lrfr_tui.worker import check_checkpoint_resumable

    store = Store(db, create=False)
    try:
        check_checkpoint_resumable(db, store.get_run(run_id))
        store.claim_for_resume(run_id, os.getpid())
    finally:
        store.close()


def resume_runs(db: Path, run_ids: Sequence[int]) -> dict[int, str]:
    """``resume_queued`` for each run: "queued to resume", or why not."""
    out = {}
    for run_id in run_ids:
        try:
            resume_queued(db, run_id)
        except LrfrError as exc:
            out[run_id] = str(exc).removeprefix(f"run {run_id} ")
            continue
        out[run_id] = "queued to resume"
    return out


def set_tags(db: Path, run_id: int, tags: Sequence[str], remove: bool = False) -> list[str]:
    """Add (or remove) tags; the run's tags afterwards."""
    store = _edit_store(db)
    try:
        return store.set_tags(run_id, list(tags), remove=remove)
    finally:
        store.close()


def parse_tag_edit(text: str) -> tuple[list[str], list[str]]:
    """``paper best -old`` -> (add, remove); commas work as spaces."""
    words = text.replace(",", " ").split()
    add = [w for w in words if not w.startswith("-")]
    remove = [w[1:] for w in words if w.startswith("-") and len(w) > 1]
    if not add and not remove:
        raise LrfrError("type tags to add (paper best) or remove (-old)")
    return add, remove


def tag_runs(db: Path, run_ids: Sequence[int], text: str) -> dict[int, list[str]]:
    """Apply one ``paper best -old`` edit to each run; run id -> its tags afterwards."""
    add, remove = parse_tag_edit(text)
    out = {}
    for run_id in run_ids:
        if add:
            out[run_id] = set_tags(db, run_id, add)
        if remove:
            out[run_id] = set_tags(db, run_id, remove, remove=True)
    return out


def add_note(db: Path, run_id: int, text: str) -> None:
    store = _edit_store(db)
    try:
        store.add_note(run_id, text)
    finally:
        store.close()


def delete_runs(db: Path, run_ids: Sequence[int], restore: bool = False, force: bool = False) -> list[int]:
    """Soft-delete (or ``restore``) runs; the ids that changed. Queued or running runs need ``force``."""
    store = _edit_store(db)
    try:
        return store.set_deleted(list(dict.fromkeys(run_ids)), deleted=not restore, force=force)
    finally:
        store.close()


def move_queued(db: Path, run_id: int, delta: int) -> int:
    """Move a queued run ``delta`` places earlier (negative) or later in the queue; its 1-based place after."""
    store = _edit_store(db)
    try:
        queued = [r.id for r in store.runs_with_status("queued")]
        if run_id not in queued:
            raise LrfrError(f"run {run_id} is not queued: only queued runs have a place in the queue")
        position = max(1, min(len(queued), queued.index(run_id) + 1 + delta))
        store.move_in_queue(run_id, position)
        return position
    finally:
        store.close()


def run_directory(db: Path, run_id: int) -> Path:
    """Where run ``run_id``'s files are (checkpoint, log, figures): its recorded directory, else runs/<id>."""
    from lrfr_tui.runsdb import runs_root

    store = Store(db, create=False)
    try:
        run = store.get_run(run_id, settle=False)
    finally:
        store.close()
    return Path(run.run_dir) if run.run_dir else runs_root(db) / str(run_id)
