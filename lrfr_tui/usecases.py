"""What a user can do to runs, one function each, called by the TUI's screens (and usable from the CLI):
launch, kill, resume, tag, export. Each opens the store, does the one thing, and closes it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.errors import LrfrError
from lrfr_tui import exports, results_table, runsdb
from lrfr_tui.launch_form import LaunchForm, build_runs, cli_command
from lrfr_tui.runsdb import Store


def launch(db: Path, form: LaunchForm, start_now: bool) -> list[int]:
    """Create the run rows (queued); ``start_now`` puts them at the head of the queue."""
    from engine.config import flatten, to_dict

    built = build_runs(form)
    sweep = bool(form.grid_lines())
    group = form.group.strip() or (f"sweep-{time.strftime('%Y%m%d-%H%M%S')}" if sweep and len(built) > 1 else None)
    command = cli_command(form, sweep)
    store = Store(db, create=True)
    try:
        ids = [store.create_run(to_dict(b.config), flatten(b.config), command, parent_id=form.parent_id,
                                launcher=b.config.launch.launcher, group=group) for b in built]
        if start_now:
            for position, run_id in enumerate(ids, start=1):
                store.move_in_queue(run_id, position)
    finally:
        store.close()
    return ids


def kill_runs(db: Path, run_ids: Sequence[int], grace_s: float = 60.0,
              on_done: Callable[[int, str], None] | None = None) -> dict[int, str]:
    """Stop each run (queued: marked killed; running: SIGTERM, checkpoint, SIGKILL after ``grace_s``)."""
    from lrfr_tui.scheduler import Scheduler, stop_run

    store = Store(db, create=False)
    sched = Scheduler(db)
    out: dict[int, str] = {}
    try:
        for run_id in run_ids:
            try:
                status = stop_run(store, store.get_run(run_id), grace_s=grace_s, scheduler=sched)
            except LrfrError as exc:
                status = f"not stopped: {exc}"
            out[run_id] = status
            if on_done is not None:
                on_done(run_id, status)
    finally:
        sched.store.close()
        store.close()
    return out


def resume_runs(db: Path, run_ids: Sequence[int]) -> dict[int, str]:
    """Queue killed or failed runs again; they continue from their last checkpoint as the same run."""
    from lrfr_tui.worker import check_checkpoint_resumable

    store = Store(db, create=False)
    out = {}
    try:
        for run_id in run_ids:
            try:
                check_checkpoint_resumable(db, store.get_run(run_id))
                store.requeue(run_id)  # atomic: a resume from the CLI at the same moment wins or loses whole
            except LrfrError as exc:
                out[run_id] = str(exc).removeprefix(f"run {run_id} ")
                continue
            out[run_id] = "queued to resume"
    finally:
        store.close()
    return out


def tag_runs(db: Path, run_ids: Sequence[int], text: str) -> dict[int, list[str]]:
    """``paper best -old``: add tags, remove those with a leading '-'."""
    words = text.replace(",", " ").split()
    add = [w for w in words if not w.startswith("-")]
    remove = [w[1:] for w in words if w.startswith("-") and len(w) > 1]
    if not add and not remove:
        raise LrfrError("type tags to add (paper best) or remove (-old)")
    store = Store(db, create=False)
    out = {}
    try:
        for run_id in run_ids:
            if add:
                out[run_id] = store.set_tags(run_id, add)
            if remove:
                out[run_id] = store.set_tags(run_id, remove, remove=True)
    finally:
        store.close()
    return out


def export_results(conn: sqlite3.Connection, fmt: str, directory: Path, filter_text: str, now: float,
                   run_ids: Sequence[int] | None = None) -> Path:
    """Write the results matrix (the runs matching the filter, or ``run_ids``) as csv/markdown/latex."""
    if fmt not in exports.EXPORTERS:
        raise LrfrError(f"unknown export format {fmt!r}; choose one of {', '.join(exports.EXPORTERS)}")
    from lrfr_tui.paper_layout import attach_references, group_baseline_run, group_in_filter

    filters = runsdb.parse_filters(filter_text) if filter_text.strip() else []
    group = group_in_filter(filter_text)
    baseline = group_baseline_run(conn, group)
    if run_ids and baseline not in run_ids:
        baseline = None
    matrix = results_table.results_matrix(conn, runs=list(run_ids) if run_ids else None, filters=filters, baseline=baseline)
    if not matrix.rows:
        raise LrfrError("no run with results to export")
    attach_references(conn, matrix, group)
    ext = {"csv": "csv", "markdown": "md", "latex": "tex"}[fmt]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    path = directory / f"lrfr-results-{stamp}.{ext}"
    counter = 1
    while path.exists():
        counter += 1
        path = directory / f"lrfr-results-{stamp}-{counter}.{ext}"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(exports.EXPORTERS[fmt](matrix))
    return path
