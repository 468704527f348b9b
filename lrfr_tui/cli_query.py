"""The run commands: ``lrfr ls``, ``show``, ``logs``, ``tag``, ``note`` and ``rm`` (results, compare and
export are in ``cli_results``). ``register(app)`` adds them to the ``lrfr`` Typer app.

Read commands open runs.db read-only in spirit (``runsdb.open_db``): they never change a run and
never block a training that writes. Results go to stdout (``--json`` for data), diagnostics to
stderr; a user error raises LrfrError, which ``lrfr_tui.cli.main`` turns into one line.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine.errors import LrfrError
from lrfr_tui import display, results_table, run_logs, run_views, runsdb, usecases
from lrfr_tui.cli_common import DbOpt, JsonOpt
from lrfr_tui.runsdb import StoreError, db_errors, db_path, result_keys
from lrfr_tui.runsdb.connect import read_only_file

BenchOpt = Annotated[list[str] | None, typer.Option("--bench", "-b", help="benchmark to show (repeatable)")]
RunsOpt = Annotated[list[str] | None, typer.Option(
    "--runs", "-r", help="run ids, e.g. 3 or 3,5,7-9 (repeatable); default: every run with results")]
GroupOpt = Annotated[str | None, typer.Option("--group", "-g", help="only runs of this group")]
WhereOpt = Annotated[list[str] | None, typer.Option("--where", "-w", help="filter term, as for `lrfr ls` (repeatable)")]
MetricOpt = Annotated[list[str] | None, typer.Option(
    "--metric", "-m", help="columns instead of the headline ones: a metric name (rank5_mean) or "
                           "BENCH[.PROTOCOL].METRIC[@RES] (lfw.acc_std, lowres_lfw.ssim@7); repeatable")]

STATUS_STYLES = {"queued": "dim", "running": "cyan", "finished": "green", "failed": "red", "killed": "yellow"}


def _out() -> Console:
    """stdout; as wide as needed when it is not a terminal, so piped tables never wrap."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 1000)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _print_json(data: Any) -> None:
    print(json.dumps(display.json_safe(data), indent=2, default=str))


def _open_read(db: Path | None) -> tuple[sqlite3.Connection, Path]:
    path = db_path(db)
    return runsdb.open_db(path), path


def _writable(db: Path | None) -> Path:
    """The runs.db path, or a clear error when the file is read-only (before waiting on any lock)."""
    path = db_path(db)
    if path.exists() and read_only_file(path):
        raise StoreError(f"{path} is read-only; changing tags, notes or deletions needs write access")
    return path


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _value_text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json.dumps(value)  # true, [7, 14, 20] - as in a config file


def _status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


# ---------------------------------------------------------------- ls


def ls(filters: Annotated[list[str] | None, typer.Argument(help="filter terms (see above)", show_default=False)] = None,
       where: WhereOpt = None,
       sort: Annotated[list[str] | None, typer.Option(
           "--sort", help="column or expression, '-' prefix = descending (repeatable); default -id")] = None,
       limit: Annotated[int | None, typer.Option("--limit", "-n", min=0, help="at most this many runs")] = None,
       deleted: Annotated[bool, typer.Option("--deleted", help="only soft-deleted runs (see `lrfr rm`)")] = False,
       show_all: Annotated[bool, typer.Option("--all", "-a", help="include soft-deleted runs")] = False,
       db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List runs, newest first, filtered by terms (AND-ed; quote them for the shell).

    \b
      status=running  status!=failed  status=queued,running
      preset=tiny  group=abl1  name~maug (~: contains)  id>=10
      age<2h  duration>30m          (units: s m h d w)
      tag=paper  tag!=broken
      paper                         free text: name, preset, group, tags, notes
      loss<1.2                      training metric, its last value
      min(loss)<1.2                 best over all steps; also max(KEY)
      lfw.acc>0.99                  result BENCH.METRIC (headline protocol)
      scface.finetune.rank1_mean>0.5    BENCH.PROTOCOL.METRIC
      lowres_lfw.acc@7>0.8          at 7 px (no @: native, else the highest)
      optim.lr=0.1                  config key (see `lrfr config`)

    \b
    Operators: = != < <= > >= ~. Values may end in % (lfw.acc>99%).
    A run that lacks the value never matches. Quote metric names holding
    dots or operators: lfw."val@far=1e-3">0.9. --sort takes a column (id
    name preset status group progress age duration ...) or any term above,
    '-' for descending: --sort -xqlfw.acc, --sort 'min(loss)'.
    """
    flts = [runsdb.parse_filter(f) for f in [*(filters or []), *(where or [])]]
    sorts = list(sort or [])
    for s in sorts:
        runsdb.parse_sort(s)  # a malformed sort is an error before the database is opened
    conn, _ = _open_read(db)
    rows = runsdb.select_runs(conn, flts, sorts or None, limit, deleted="only" if deleted else
                             "all" if show_all else "hide")
    now = time.time()
    if as_json:
        _print_json([r.as_dict(now) for r in rows])
        return
    if not rows:
        _err().print("no runs match" if flts or deleted else "no runs yet (start one with `lrfr run`)")
        return
    table = Table(box=None, header_style="bold")
    for name, justify in (("id", "right"), ("name", "left"), ("preset", "left"), ("status", "left"),
                          ("progress", "right"), ("age", "right"), ("duration", "right")):
        table.add_column(name, justify=justify)
    groups = any(r.group for r in rows)
    tags = any(r.tags for r in rows)
    if groups:
        table.add_column("group")
    if tags:
        table.add_column("tags")
    key_labels = [k for k in result_keys.KEY_RESULTS if any(k in r.results for r in rows)]
    value_labels = [k for k in dict.fromkeys(k for r in rows for k in r.values) if k not in key_labels]
    for label in key_labels + value_labels:
        table.add_column(label, justify="right")
    for r in rows:
        cells: list[Any] = [str(r.id), Text(r.name), Text(r.preset or ""),
                            _status_text(r.status + (" (deleted)" if r.deleted else "")),
                            r.progress, display.human_duration(r.age(now)), display.human_duration(r.duration(now))]
        if groups:
            cells.append(Text(r.group or ""))
        if tags:
            cells.append(Text(",".join(r.tags)))
        for label in key_labels:
            term = runsdb.parse_term(label)
            cells.append(display.format_value(term.name, r.results.get(label)))
        for label in value_labels:
            cells.append(Text(_value_text(r.values.get(label))))
        table.add_row(*cells)
    _out().print(table)


# ---------------------------------------------------------------- show


def show(run: Annotated[int, typer.Argument(help="run id")],
         tail: Annotated[int, typer.Option("--tail", "-n", min=0, help="log lines to show (0: none)")] = 20,
         config: Annotated[bool, typer.Option("--config/--no-config", help="print the resolved config")] = True,
         db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """One run: status, timing, config, results, training metrics, notes, events and its log tail."""
    conn, path = _open_read(db)
    detail = run_views.run_detail(conn, path, run, tail=tail)
    if as_json:
        _print_json(detail)
        return
    out = _out()
    r = detail["run"]
    header = Text(f"run {r['id']}  ", style="bold")
    header.append(r["name"])
    header.append("  ")
    header.append_text(_status_text(r["status"] + (" (deleted)" if r["deleted"] else "")))
    out.print(header)
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    progress = f"{r['step']}/{r['total_steps']}" if r.get("total_steps") else str(r["step"])
    for label, value in (
            ("preset", r.get("preset")), ("group", r.get("group_name")), ("tags", ", ".join(detail["tags"])),
            ("parent", r.get("parent_id")), ("progress", progress), ("created", _when(r["created"])),
            ("started", _when(r.get("started")) if r.get("started") else None),
            ("ended", _when(r.get("ended")) if r.get("ended") else None),
            ("duration", display.human_duration(detail["duration_s"]) if detail["duration_s"] is not None else None),
            ("heartbeat", f"{display.human_duration(time.time() - r['heartbeat'])} ago"
             if r.get("heartbeat") and r["status"] == "running" else None),
            ("exit code", r.get("exit_code")), ("reason", r.get("failure_reason")),
            ("host", r.get("host")), ("pid", r.get("pid") if r["status"] == "running" else None),
            ("launcher", r.get("launcher")), ("gpus", r.get("gpus")), ("job", r.get("job_id")),
            ("commit", r.get("git_commit")), ("command", r.get("command")), ("run dir", r.get("run_dir")),
            ("environment", _environment_text(detail.get("environment")))):
        if value not in (None, ""):
            info.add_row(label, Text(str(value)))
    out.print(info)
    if config and detail["params"]:
        _print_config(out, detail["params"])
    if detail["results"]:
        _print_run_results(out, detail["results"])
    if detail["metrics"]:
        out.print(Text("\ntraining metrics", style="bold"))
        table = Table("key", "points", "last step", "last", "min", "max", box=None, header_style="bold")
        for m in detail["metrics"]:
            table.add_row(Text(m["key"]), str(m["points"]), str(m["last_step"]),
                          *(_value_text(m[f]) for f in ("last", "min", "max")))
        out.print(table)
    for note in detail["notes"]:
        out.print(Text(f"\nnote ({_when(note['wall'])}): ", style="bold") + Text(note["text"]))
    if detail["events"]:
        out.print(Text("\nrecent events", style="bold"))
        for ev in detail["events"]:
            out.print(Text(f"  {_when(ev['wall'])} [{ev['kind']}] {ev['message']}"))
    if tail:
        if detail["log_path"]:
            out.print(Text(f"\nlog {detail['log_path']} (last {len(detail['log_tail'])} lines)", style="bold"))
            for line in detail["log_tail"]:
                out.print(Text(line))
        else:
            out.print(Text("\nno log file yet", style="dim"))


def _print_config(out: Console, params: dict) -> None:
    """The run's config, one line per section."""
    out.print(Text("\nconfig", style="bold"))
    sections: dict[str, list[str]] = {}
    for key, value in params.items():
        section, _, leaf = key.rpartition(".")
        sections.setdefault(section, []).append(f"{leaf}={_value_text(value)}")
    for section, items in sections.items():
        out.print(Text(f"  {section + ': ' if section else ''}" + "  ".join(items)))


def _print_run_results(out: Console, results: list[dict]) -> None:
    """Every stored result of a run, with the data it was measured on."""
    out.print(Text("\nresults", style="bold"))
    table = Table("benchmark", "protocol", "metric", "res", "value", "data", box=None, header_style="bold")
    standin = False
    for res in results:
        mark = results_table.STANDIN_MARK if res.get("source") == "standin" else ""
        standin = standin or bool(mark)
        table.add_row(res["benchmark"] + mark, res["protocol"], Text(res["metric"]),
                      "" if res["resolution"] is None else str(res["resolution"]),
                      display.format_value(res["metric"], res["value"]),
                      Text(res.get("source") or "unknown", style="dim"))
    out.print(table)
    if standin:
        out.print(Text(results_table.STANDIN_LEGEND, style="dim"))


# ---------------------------------------------------------------- logs


def logs(run: Annotated[int, typer.Argument(help="run id")],
         follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the run finishes, "
                                                                       "fails or is killed")] = False,
         tail: Annotated[int | None, typer.Option("--tail", "-n", min=0, help="start with the last N lines")] = None,
         interval: Annotated[float, typer.Option(help="seconds between polls with --follow", min=0.01)] = 0.5,
         db: DbOpt = None) -> None:
    """Print a run's log (runs/<id>/train.log); -f follows it until the run reaches a final state."""
    conn, path = _open_read(db)
    ref = runsdb.run_ref(conn, run)
    log = run_logs.log_file(path, ref)
    if log is None and not follow:
        where = ", ".join(str(p) for p in run_logs.log_candidates(path, ref))
        raise LrfrError(f"run {run} has no log file yet (looked for {where}); `lrfr logs {run} -f` waits for it")
    try:
        start = 0
        if log is not None and tail is not None:
            start = log.stat().st_size
            lines = run_logs.tail_lines(log, tail)
            if lines:
                sys.stdout.write("\n".join(lines) + "\n")
        elif log is not None and not follow:
            with log.open("rb") as fh:
                while chunk := fh.read(1 << 16):
                    sys.stdout.write(chunk.decode("utf-8", errors="replace"))
        if follow:
            if log is None:
                _err().print(f"run {run} is {ref['status']}; waiting for its log ...")
            for chunk in run_logs.follow_log(conn, path, run, start=start, interval=interval):
                sys.stdout.write(chunk)
                sys.stdout.flush()
            status = runsdb.run_ref(conn, run)["status"]
            _err().print(f"run {run} {status}")
        sys.stdout.flush()
    except KeyboardInterrupt:  # Ctrl-C ends following quietly
        sys.stdout.flush()
    except BrokenPipeError:  # `lrfr logs 3 | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _environment_text(env: dict | None) -> str | None:
    """``NVIDIA H200, torch 2.5.1, CUDA 12.4, 1 process`` from a run's environment event."""
    if not isinstance(env, dict):
        return None
    procs = env.get("world_size") or 1
    return (f"{env.get('device_name') or env.get('device')}, torch {env.get('torch')}, "
            f"CUDA {env.get('cuda') or 'none'}, {procs} process{'es' if procs != 1 else ''}")


# ---------------------------------------------------------------- tag, note, rm


def tag(run: Annotated[int, typer.Argument(help="run id")],
        tags: Annotated[list[str], typer.Argument(help="one or more tags")],
        remove: Annotated[bool, typer.Option("--remove", help="remove these tags instead")] = False,
        db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Tag a run (find tagged runs with `lrfr ls tag=NAME`)."""
    now_tags = usecases.set_tags(_writable(db), run, tags, remove=remove)
    if as_json:
        _print_json({"run": run, "tags": now_tags})
    else:
        _err().print(f"run {run} tags: {', '.join(now_tags) or '(none)'}")


def note(run: Annotated[int, typer.Argument(help="run id")],
         text: Annotated[str, typer.Argument(help="the note (quote it)")], db: DbOpt = None) -> None:
    """Attach a note to a run (shown by `lrfr show`, matched by `lrfr ls` free text)."""
    usecases.add_note(_writable(db), run, text)
    _err().print(f"note added to run {run}")


def rm(runs: Annotated[list[int], typer.Argument(help="run ids")],
       restore: Annotated[bool, typer.Option("--restore", help="undo: show these runs again")] = False,
       force: Annotated[bool, typer.Option("--force", help="also hide queued or running runs")] = False,
       db: DbOpt = None) -> None:
    """Soft-delete runs: hidden from ls/results but kept; `rm --restore` undoes it.

    `lrfr ls --deleted` lists them. Run directories are not touched. A queued or running run
    needs --force (stop it first)."""
    changed = usecases.delete_runs(_writable(db), runs, restore=restore, force=force)
    verb = "restored" if restore else "deleted"
    if changed:
        _err().print(f"{verb} run{'s' if len(changed) > 1 else ''} {', '.join(map(str, changed))}"
                     + ("" if restore else f" (undo: lrfr rm --restore {' '.join(map(str, changed))})"))
    else:
        _err().print(f"nothing to do: already {verb}")


COMMANDS = {"ls": ls, "show": show, "logs": logs, "tag": tag, "note": note, "rm": rm}


def register(app: typer.Typer) -> None:
    """Add the query commands to ``app`` (the ``lrfr`` Typer app)."""
    for name, func in COMMANDS.items():
        app.command(name)(db_errors(func))
