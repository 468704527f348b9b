"""`lrfr` commands that manage runs: queue, worker, kill, resume, rerun, sweep.

No `from __future__ import annotations` here: Typer reads the option annotations at registration.
"""

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from engine.errors import LrfrError
from lrfr_tui.cli_common import ConfigOpt, DbOpt, JsonOpt, PresetOpt, SetOpt, err, out, run_in_foreground

RunArg = Annotated[int, typer.Argument(help="run id")]



def open_store(db: Path | None, create: bool = False):
    from lrfr_tui.runsdb import Store, db_path

    return Store(db_path(db), create=create)


def queue(move: Annotated[int | None, typer.Option(help="run id to move")] = None,
          to: Annotated[int, typer.Option(help="1-based queue position for --move")] = 1,
          db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List queued and running runs; --move RUN --to N reorders the queue."""
    store = open_store(db)
    if move is not None:
        store.move_in_queue(move, to)
    rows = store.runs_with_status("running") + store.runs_with_status("queued")
    if as_json:
        print(json.dumps([{"id": r.id, "name": r.name, "status": r.status, "gpus_requested": r.gpus_requested,
                           "gpus": r.gpus, "launcher": r.launcher, "group": r.group_name} for r in rows],
                         indent=2))
        return
    table = Table("pos", "id", "name", "status", "GPUs", "launcher", "group", box=None)
    position = 0
    for r in rows:
        if r.status == "queued":
            position += 1
        gpus = ",".join(map(str, r.gpus)) if r.gpus else str(r.gpus_requested)
        table.add_row(str(position) if r.status == "queued" else "-", str(r.id), r.name, r.status, gpus,
                      r.launcher or "", r.group_name or "")
    out.print(table)

def worker(until_empty: Annotated[bool, typer.Option(
               "--until-empty", help="exit when nothing is queued or running")] = False,
           poll: Annotated[float, typer.Option(help="seconds between scheduling passes")] = 2.0,
           db: DbOpt = None) -> None:
    """Drive the queue: start queued runs on free GPUs (or the CPU), notice dead runs.

    Stopping the worker (Ctrl-C) leaves running trainings running; a new worker adopts them.
    """
    from lrfr_tui.gpus import discovery_from_env
    from lrfr_tui.runsdb import db_path
    from lrfr_tui.scheduler import Scheduler

    def say(text: str) -> None:
        # One line per event, as written (a log piped to a file is read with grep: no wrapping, no markup).
        err.print(text, soft_wrap=True, markup=False, highlight=False)

    sched = Scheduler(db_path(db), discover=discovery_from_env(), on_event=say,
                      on_ended=lambda run: say(_ended_line(run)))
    sched.acquire()
    free, has_gpus = sched.free_gpus()
    err.print(f"driving the queue of {sched.db} ({len(free)} free GPUs)" if has_gpus
              else f"driving the queue of {sched.db} (no GPUs: one CPU run at a time)")
    try:
        sched.run(poll_s=poll, until_empty=until_empty)
    except KeyboardInterrupt:
        err.print("worker stopped; running trainings keep running")
    finally:
        sched.release()

def _ended_line(run) -> str:
    """``run 3 (tiny) finished after 2m45s; lrfr show 3``, with a failed run's reason."""
    from lrfr_tui.display import human_duration
    from lrfr_tui.liveness import reason_headline

    took = human_duration(run.ended - run.started) if run.ended and run.started else "?"
    why = f": {reason_headline(run.failure_reason)}" if run.status == "failed" and run.failure_reason else ""
    return f"run {run.id} ({run.name}) {run.status} after {took}{why}; lrfr show {run.id}"

def kill(run_id: RunArg,
         grace: Annotated[float, typer.Option(help="seconds to checkpoint before SIGKILL")] = 60.0,
         db: DbOpt = None) -> None:
    """Stop a run: SIGTERM (it checkpoints, status killed), SIGKILL after the grace period."""
    from lrfr_tui import usecases
    from lrfr_tui.runsdb import db_path

    status = usecases.kill_run(db_path(db), run_id, grace_s=grace)
    err.print(f"run {run_id}: {status}")

def resume(run_id: RunArg,
           queue: Annotated[bool, typer.Option("--queue", help="queue it instead of running now")] = False,
           db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Continue a killed or failed run from its last checkpoint, as the same run."""
    from lrfr_tui import usecases
    from lrfr_tui.runsdb import db_path

    path = db_path(db)
    # One atomic claim in SQL: of two resumes (CLI or TUI) started together, one trains.
    if queue:
        usecases.resume_queued(path, run_id)
        err.print(f"run {run_id} queued to resume")
        return
    usecases.resume_here(path, run_id)
    err.print(f"resuming run {run_id}")
    run_in_foreground(open_store(path), path, run_id, as_json)

def rerun(run_id: RunArg, overrides: SetOpt = None,
          queue: Annotated[bool, typer.Option("--queue", help="queue it instead of running now")] = False,
          db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Start a new run from another run's config with changes (--set); the parent is recorded."""
    from lrfr_tui import usecases
    from lrfr_tui.runsdb import db_path

    path = db_path(db)
    cfg, group = usecases.plan_rerun(path, run_id, overrides or [])
    command = shlex.join(["lrfr", *sys.argv[1:]])
    if queue:
        (new_id,) = usecases.queue_runs(path, [cfg], command, group=group, parent_id=run_id)
        err.print(f"run {new_id} (re-run of {run_id}) queued")
        if as_json:
            print(json.dumps({"run": new_id, "parent": run_id, "status": "queued"}))
        return
    new_id = usecases.record_here(path, cfg, command, group=group, parent_id=run_id, create=False)
    err.print(f"run {new_id}: re-run of {run_id}")
    run_in_foreground(open_store(path), path, new_id, as_json)

def sweep(preset: PresetOpt = None, config_file: ConfigOpt = None, overrides: SetOpt = None,
          grid: Annotated[list[str] | None, typer.Option(
              "--grid", "-g", help="key=v1,v2,... (list values: key=[1,2];[3,4])")] = None,
          group: Annotated[str | None, typer.Option(help="group name (default: sweep-<time>)")] = None,
          db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Queue the product of the grids as one group of runs."""
    from lrfr_tui import usecases
    from lrfr_tui.runsdb import db_path

    if not grid:
        raise LrfrError("give at least one --grid key=v1,v2,...")
    axes = []
    for text in grid:
        try:
            axes.append(usecases.parse_axis(text))
        except LrfrError as exc:
            raise LrfrError(f"--grid {text!r}: {exc}") from None
    configs = usecases.plan_sweep(preset, overrides or [], axes, config_file)
    group = group or usecases.default_group("sweep")
    ids = usecases.queue_runs(db_path(db), configs, shlex.join(["lrfr", *sys.argv[1:]]), group=group)
    if as_json:
        print(json.dumps({"group": group, "runs": ids}))
    err.print(f"queued {len(ids)} runs in group {group}: {', '.join(map(str, ids))}")


def register(app: typer.Typer) -> None:
    app.command()(queue)
    app.command()(worker)
    app.command()(kill)
    app.command()(resume)
    app.command()(rerun)
    app.command()(sweep)
