"""The query commands: ``lrfr ls``, ``show``, ``logs``, ``results``, ``compare``, ``export``, ``tag``,
``note`` and ``rm``. ``register(app)`` adds them to the ``lrfr`` Typer app.

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
from lrfr_tui import display, exports, results_table, run_logs, run_views, runsdb
from lrfr_tui.cli_common import DbOpt, JsonOpt
from lrfr_tui.runsdb import Store, StoreError, db_errors, db_path, result_keys
from lrfr_tui.runsdb.connect import read_only_file
from lrfr_tui.significance import format_interval

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


def _open_write(db: Path | None) -> tuple[Store, Path]:
    path = db_path(db)
    if path.exists() and read_only_file(path):
        raise StoreError(f"{path} is read-only; changing tags, notes or deletions needs write access")
    return Store(path, timeout_s=10.0, create=False), path


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


# ---------------------------------------------------------------- logs


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


# ---------------------------------------------------------------- results, export


def _matrix(conn, runs, group, where, bench, metric, baseline) -> results_table.Matrix:
    ids = display.parse_run_ids(runs or []) or None
    matrix = results_table.results_matrix(conn, runs=ids, group=group, filters=where or [], benches=bench or None,
                                  metrics=metric or None, baseline=baseline)
    for name in bench or []:
        if not any(c.benchmark == name for c in matrix.columns):
            _err().print(f"no results for benchmark {name!r} among the selected runs")
    return matrix


def results(bench: BenchOpt = None, runs: RunsOpt = None, group: GroupOpt = None, where: WhereOpt = None,
            metric: MetricOpt = None,
            baseline: Annotated[int | None, typer.Option(help="show each value's difference to this run")] = None,
            paper: Annotated[bool | None, typer.Option(
                "--paper/--per-run", help="one row per configuration (mean +- std over seeds) with the "
                "published rows and deltas to them; default for --group")] = None,
            against: Annotated[str | None, typer.Option(
                help="paper layout: the configuration the others are tested against (default: Baseline)")] = None,
            db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Runs x benchmarks matrix, like the paper's tables; --baseline RUN adds deltas.

    With --group (or --paper): the paper's layout - one row per configuration with mean +- std over
    its seeds, the paper's published numbers as reference rows (an ablation group against its
    table, an r34/r50 run against "Ours"), and each configuration's delta to its published row.
    Every value shows its 95% interval; * (p < 0.05) and ** (p < 0.01) mark a configuration that
    differs from the Baseline row (or --against LABEL) on the same pairs/probes (McNemar test).

    Headline columns: LFW and XQLFW accuracy, SCface rank-1 at d1/d2/d3 and their mean (per
    protocol), TinyFace rank-1 and mAP, low-resolution LFW accuracy per resolution. Accuracies, ranks and mAP are percentages with 2 decimals; with --baseline each cell also
    shows its difference to the baseline run in points (+0.53). --json gives the raw fractions.
    """
    conn, _ = _open_read(db)
    matrix = _matrix(conn, runs, group, where, bench, metric, baseline)
    if paper if paper is not None else (group is not None and baseline is None):
        _print_paper(conn, matrix, group, as_json, against)
        return
    if as_json:
        _print_json(matrix.as_dict())
        return
    if not matrix.rows or not matrix.columns:
        _err().print("no results for the selected runs")
        return
    best = matrix.best()
    table = Table(box=None, header_style="bold")
    table.add_column("id", justify="right")
    table.add_column("run")
    previous = None
    for group_label, col in zip(matrix.group_labels(), matrix.columns, strict=True):
        # the benchmark over the first of its columns only, as in the paper's tables
        table.add_column(f"{group_label if group_label != previous else ''}\n{col.short}", justify="right")
        previous = group_label
    for i, (row, label) in enumerate(zip(matrix.rows, matrix.row_labels(), strict=True)):
        cells: list[Any] = [str(row.id), Text(label + (" (baseline)" if row.baseline else ""))]
        for j, col in enumerate(matrix.columns):
            cell = Text(display.format_value(col.metric, row.values[j]), style="bold" if i in best[j] else "")
            if row.deltas is not None and row.deltas[j] is not None:
                delta = row.deltas[j]
                direction = display.better_direction(col.metric) * (1 if delta > 0 else -1 if delta < 0 else 0)
                cell.append(f" ({display.format_delta(col.metric, delta)})",
                            style="green" if direction > 0 else "red" if direction < 0 else "dim")
            cells.append(_with_uncertainty(cell, col, row.mark(j), row.interval(j) if row.values[j] is not None
                                           else None))
        table.add_row(*cells)
    _out().print(table)
    for line in matrix.legend():
        _out().print(Text(line))


def _with_uncertainty(cell: Text, col: results_table.Column, mark: str, interval: tuple[float, float] | None) -> Text:
    """A value cell with its significance mark and, on a second line, its 95% interval."""
    if mark:
        cell.append(mark, style="bold yellow")
    if interval is not None:
        cell.append("\n" + format_interval(*interval, display.is_percent(col.metric)), style="dim")
    return cell


def _environment_text(env: dict | None) -> str | None:
    """``NVIDIA H200, torch 2.5.1, CUDA 12.4, 1 process`` from a run's environment event."""
    if not isinstance(env, dict):
        return None
    procs = env.get("world_size") or 1
    return (f"{env.get('device_name') or env.get('device')}, torch {env.get('torch')}, "
            f"CUDA {env.get('cuda') or 'none'}, {procs} process{'es' if procs != 1 else ''}")


def _print_paper(conn, matrix: results_table.Matrix, group: str | None, as_json: bool, against: str | None = None) -> None:
    from lrfr_tui.paper_layout import paper_table

    layout = paper_table(conn, matrix, group, against)
    if as_json:
        _print_json(layout.as_dict())
        return
    if not layout.rows or not layout.columns:
        _err().print("no results for the selected runs")
        return
    title = f"group {group}" + (f" - the paper's {layout.table}" if layout.table else "") if group else None
    table = Table(box=None, header_style="bold", title=title)
    table.add_column("configuration")
    table.add_column("runs", justify="right")
    previous = None
    for group_label, col in zip(matrix.group_labels(), layout.columns, strict=True):
        table.add_column(f"{group_label if group_label != previous else ''}\n{col.short}", justify="right")
        previous = group_label
    for row in layout.rows:
        cells: list[Any] = [row.label + (" (baseline)" if row.label == layout.baseline else ""),
                            str(len(row.run_ids))]
        for j, col in enumerate(layout.columns):
            text = display.format_value(col.metric, row.mean[j])
            if row.std[j] is not None:
                text += f" ± {display.format_value(col.metric, row.std[j])}"
            cell = Text(text)
            if row.delta and row.delta[j] is not None:
                delta = row.delta[j]
                good = display.better_direction(col.metric) * delta
                cell.append(f" ({display.format_delta(col.metric, delta)})", style="green" if good > 0 else "red")
            cells.append(_with_uncertainty(cell, col, row.mark(j), row.interval(j) if row.mean[j] is not None
                                           else None))
        table.add_row(*cells)
    for ref in layout.references:
        table.add_row(Text(ref.label, style="italic dim"), "",
                      *(Text(display.format_value(c.metric, v), style="italic dim")
                        for c, v in zip(layout.columns, ref.values, strict=True)))
    _out().print(table)
    for line in layout.legend():
        _out().print(Text(line))
    if layout.references:
        _err().print("(deltas in brackets: this tool's value minus the paper's published row)")


FORMAT_SUFFIXES = {".csv": "csv", ".md": "markdown", ".markdown": "markdown", ".tex": "latex"}


def export(fmt: Annotated[str | None, typer.Option(
               "--format", "-f", help="csv | markdown | latex (default: from -o's suffix, else markdown)")] = None,
           bench: BenchOpt = None, runs: RunsOpt = None, group: GroupOpt = None, where: WhereOpt = None,
           metric: MetricOpt = None,
           output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
           reference: Annotated[bool, typer.Option(
               "--reference/--no-reference", help="append the paper's matching published rows")] = True,
           baseline: Annotated[int | None, typer.Option(
               help="mark values that differ significantly from this run (default with --group: its "
                    "Baseline run)")] = None,
           db: DbOpt = None) -> None:
    """Export the results matrix for a paper: csv, markdown or latex (booktabs, best in bold).

    Same run and column selection as `lrfr results`. Markdown and LaTeX put the best value of
    each column in bold, then its significance mark against the baseline (* p < 0.05, ** p < 0.01,
    McNemar) and its 95% interval; CSV has the values in the table's units (percent for accuracies)
    and the intervals and p-values in columns of their own."""
    fmt = fmt or (FORMAT_SUFFIXES.get(output.suffix.lower()) if output else None) or "markdown"
    if fmt not in exports.EXPORTERS:
        raise LrfrError(f"unknown export format {fmt!r}; choose one of: {', '.join(exports.EXPORTERS)}")
    from lrfr_tui.paper_layout import attach_references, group_baseline_run

    conn, _ = _open_read(db)
    if baseline is None and not runs:
        baseline = group_baseline_run(conn, group)
    matrix = _matrix(conn, runs, group, where, bench, metric, baseline)
    if not matrix.rows or not matrix.columns:
        raise LrfrError("nothing to export: no results for the selected runs and benchmarks")
    if reference:
        attach_references(conn, matrix, group)
    text = exports.EXPORTERS[fmt](matrix)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise LrfrError(f"cannot write {output}: {exc.strerror or exc}") from None
    _err().print(f"wrote {len(matrix.rows)} runs x {len(matrix.columns)} columns ({fmt}) to {output}")


# ---------------------------------------------------------------- compare


def compare(runs: Annotated[list[int], typer.Argument(help="two or more run ids")],
            db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Runs side by side: the config keys that differ, headline results and last training metrics."""
    conn, _ = _open_read(db)
    data = run_views.compare_runs(conn, list(dict.fromkeys(runs)))
    matrix: results_table.Matrix = data["results"]
    if as_json:
        _print_json({**data, "results": matrix.as_dict()})
        return
    out = _out()
    heads = [f"{r['id']} {r['name']}" for r in data["runs"]]

    def table(title: str) -> Table:
        t = Table(box=None, header_style="bold", title=title, title_justify="left", title_style="bold")
        t.add_column("")
        for h in heads:
            t.add_column(h, justify="right")
        return t

    status = table("")
    status.add_row("status", *(_status_text(r["status"]) for r in data["runs"]))
    status.add_row("preset", *(Text(r["preset"] or "") for r in data["runs"]))
    out.print(status)
    if data["params"]:
        params = table("config (differing keys)")
        for key, values in data["params"].items():
            params.add_row(Text(key), *(Text(_value_text(v)) for v in values))
        out.print(params)
    else:
        out.print(Text("configs are identical", style="bold"))
    if matrix.columns:
        res = table("results")
        for j, (label, col) in enumerate(zip(matrix.labels(), matrix.columns, strict=True)):
            res.add_row(Text(label), *(_with_uncertainty(Text(display.format_value(col.metric, row.values[j])), col,
                                                         row.mark(j), row.interval(j) if row.values[j] is not None
                                                         else None) for row in matrix.rows))
        out.print(res)
        for line in matrix.legend():
            out.print(Text(line))
    if data["metrics"]:
        metrics = table("training metrics (last value)")
        for key, values in data["metrics"].items():
            metrics.add_row(Text(key), *(_value_text(v) for v in values))
        out.print(metrics)


# ---------------------------------------------------------------- tag, note, rm


def tag(run: Annotated[int, typer.Argument(help="run id")],
        tags: Annotated[list[str], typer.Argument(help="one or more tags")],
        remove: Annotated[bool, typer.Option("--remove", help="remove these tags instead")] = False,
        db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Tag a run (find tagged runs with `lrfr ls tag=NAME`)."""
    store, _ = _open_write(db)
    now_tags = store.set_tags(run, tags, remove=remove)
    if as_json:
        _print_json({"run": run, "tags": now_tags})
    else:
        _err().print(f"run {run} tags: {', '.join(now_tags) or '(none)'}")


def note(run: Annotated[int, typer.Argument(help="run id")],
         text: Annotated[str, typer.Argument(help="the note (quote it)")], db: DbOpt = None) -> None:
    """Attach a note to a run (shown by `lrfr show`, matched by `lrfr ls` free text)."""
    store, _ = _open_write(db)
    store.add_note(run, text)
    _err().print(f"note added to run {run}")


def rm(runs: Annotated[list[int], typer.Argument(help="run ids")],
       restore: Annotated[bool, typer.Option("--restore", help="undo: show these runs again")] = False,
       force: Annotated[bool, typer.Option("--force", help="also hide queued or running runs")] = False,
       db: DbOpt = None) -> None:
    """Soft-delete runs: hidden from ls/results but kept; `rm --restore` undoes it.

    `lrfr ls --deleted` lists them. Run directories are not touched. A queued or running run
    needs --force (stop it first)."""
    store, _ = _open_write(db)
    changed = store.set_deleted(list(dict.fromkeys(runs)), deleted=not restore, force=force)
    verb = "restored" if restore else "deleted"
    if changed:
        _err().print(f"{verb} run{'s' if len(changed) > 1 else ''} {', '.join(map(str, changed))}"
                     + ("" if restore else f" (undo: lrfr rm --restore {' '.join(map(str, changed))})"))
    else:
        _err().print(f"nothing to do: already {verb}")


COMMANDS = {"ls": ls, "show": show, "logs": logs, "results": results, "compare": compare, "export": export,
            "tag": tag, "note": note, "rm": rm}


def register(app: typer.Typer) -> None:
    """Add the query commands to ``app`` (the ``lrfr`` Typer app)."""
    for name, func in COMMANDS.items():
        app.command(name)(db_errors(func))
