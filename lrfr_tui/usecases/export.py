"""The results matrix as a CSV / Markdown / LaTeX document: `lrfr export` (stdout or -o) and the
TUI's export key (a timestamped file beside runs.db) both render it here.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from engine.errors import LrfrError
from lrfr_tui import exports, results_table, runsdb


def default_baseline(conn: sqlite3.Connection, group: str | None, run_ids: Sequence[int] | None) -> int | None:
    """The run significance marks compare against: the group's Baseline run, when it is among the
    selected runs (a selection without it has nothing to compare with)."""
    from lrfr_tui.paper_layout import group_baseline_run

    baseline = group_baseline_run(conn, group)
    return None if run_ids and baseline not in run_ids else baseline


def render_export(conn: sqlite3.Connection, fmt: str, *, run_ids: Sequence[int] | None = None,
                  group: str | None = None, filters: Sequence = (), benches: Sequence[str] | None = None,
                  metrics: Sequence[str] | None = None, baseline: int | None = None,
                  reference: bool = True) -> tuple[str, results_table.Matrix]:
    """(document text, the matrix it shows). ``reference`` appends the paper's matching rows."""
    if fmt not in exports.EXPORTERS:
        raise LrfrError(f"unknown export format {fmt!r}; choose one of: {', '.join(exports.EXPORTERS)}")
    from lrfr_tui.paper_layout import attach_references

    matrix = results_table.results_matrix(conn, runs=list(run_ids) if run_ids else None, group=group,
                                          filters=list(filters), benches=list(benches) if benches else None,
                                          metrics=list(metrics) if metrics else None, baseline=baseline)
    if not matrix.rows or not matrix.columns:
        raise LrfrError("nothing to export: no results for the selected runs and benchmarks")
    if reference:
        attach_references(conn, matrix, group)
    return exports.EXPORTERS[fmt](matrix), matrix


EXTENSIONS = {"csv": "csv", "markdown": "md", "latex": "tex"}


def export_results(db: Path, fmt: str, filter_text: str, now: float, run_ids: Sequence[int] | None = None) -> Path:
    """Write the runs matching the filter (or ``run_ids``) to a new ``lrfr-results-TIME.EXT`` beside
    runs.db; never overwrites an earlier export."""
    from lrfr_tui.paper_layout import group_in_filter

    filters = runsdb.parse_filters(filter_text) if filter_text.strip() else []
    group = group_in_filter(filter_text)
    conn = runsdb.open_db(db)
    try:
        text, _ = render_export(conn, fmt, run_ids=run_ids, group=group, filters=filters,
                                baseline=default_baseline(conn, group, run_ids))
    finally:
        conn.close()
    directory = Path(db).parent
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    path = directory / f"lrfr-results-{stamp}.{EXTENSIONS[fmt]}"
    counter = 1
    while path.exists():
        counter += 1
        path = directory / f"lrfr-results-{stamp}-{counter}.{EXTENSIONS[fmt]}"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
