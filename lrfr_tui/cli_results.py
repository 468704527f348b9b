"""The results commands: ``lrfr results``, ``compare`` and ``export``. ``register(app)`` adds them.

Like the other read commands they open runs.db read-only in spirit and print tables (or ``--json``);
the matrix is ``results_table``'s, with intervals and paired tests from ``significance``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from engine.errors import LrfrError
from lrfr_tui import display, results_table, run_views
from lrfr_tui.cli_common import DbOpt, JsonOpt
from lrfr_tui.cli_query import (
    BenchOpt,
    GroupOpt,
    MetricOpt,
    RunsOpt,
    WhereOpt,
    _err,
    _open_read,
    _out,
    _print_json,
    _status_text,
    _value_text,
)
from lrfr_tui.runsdb import db_errors
from lrfr_tui.significance import format_interval

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
    from lrfr_tui import usecases

    fmt = fmt or (FORMAT_SUFFIXES.get(output.suffix.lower()) if output else None) or "markdown"
    conn, _ = _open_read(db)
    ids = display.parse_run_ids(runs or []) or None
    if baseline is None:
        baseline = usecases.default_baseline(conn, group, ids)
    text, matrix = usecases.render_export(conn, fmt, run_ids=ids, group=group, filters=where or [], benches=bench,
                                          metrics=metric, baseline=baseline, reference=reference)
    for name in bench or []:
        if not any(c.benchmark == name for c in matrix.columns):
            _err().print(f"no results for benchmark {name!r} among the selected runs")
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


COMMANDS = {"results": results, "compare": compare, "export": export}


def register(app: typer.Typer) -> None:
    """Add the results commands to ``app`` (the ``lrfr`` Typer app)."""
    for name, func in COMMANDS.items():
        app.command(name)(db_errors(func))
