"""The TUI's table screens' models: compare (curves, config diff and the paper's Table 4 side by
side) and the results board. Like ``tui_models``, each is read in a worker thread over one
read-only connection that the model keeps, so the screens never touch runs.db themselves.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import LrfrError
from lrfr_tui import results_table, run_views, runsdb
from lrfr_tui.runsdb import result_keys
from lrfr_tui.runsdb.series import metric_keys, series_after
from lrfr_tui.tui_models import LOSS_KEYS, LR_KEY, RATE_KEY, Curve, downsample, open_reader

# The paper's Table 4 columns (SCface without fine-tuning, rank-1; XQLFW; LFW), then LR-LFW by resolution.
TABLE4 = ("scface.zero_shot.rank1_d1", "scface.zero_shot.rank1_d2", "scface.zero_shot.rank1_d3",
          "scface.zero_shot.rank1_mean", "xqlfw.acc", "lfw.acc")


class _Reader:
    """One lazily opened read-only connection, closed by ``close`` (the screen's poll loop ends)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self.conn is None:
            self.conn = open_reader(self.db)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class CompareSnapshot:
    runs: list[dict[str, Any]]
    params: dict[str, list[Any]]  # only the keys whose values differ
    matrix: results_table.Matrix  # every result, deltas against the first run
    table4: results_table.Matrix  # the paper's Table 4 columns plus LR-LFW, deltas against the first run
    curves: dict[str, dict[int, Curve]]  # metric key -> run id -> curve
    keys: list[str]

    @property
    def live(self) -> bool:
        from lrfr_tui.runsdb.states import ACTIVE_STATUSES

        return any(r["status"] in ACTIVE_STATUSES for r in self.runs)


class CompareModel(_Reader):
    def __init__(self, db: Path, run_ids: Sequence[int]) -> None:
        super().__init__(db)
        self.run_ids = list(run_ids)

    def snapshot(self, buckets: int) -> CompareSnapshot:
        """Raises LrfrError when a run is gone or the database cannot be read."""
        conn = self._connect()
        run_ids = self.run_ids
        data = run_views.compare_runs(conn, run_ids)
        try:
            matrix = results_table.results_matrix(conn, runs=run_ids, baseline=run_ids[0])
        except LrfrError:  # the first run has no results yet: no deltas
            matrix = data["results"]
        params = {k: v for k, v in data["params"].items() if k not in ("name", "description")}
        keys: list[str] = []
        for run_id in run_ids:
            keys += [key for key in metric_keys(conn, run_id) if key not in keys]
        curves: dict[str, dict[int, Curve]] = {}
        for key in keys:
            for run_id in run_ids:
                points = series_after(conn, run_id, key, -(2 ** 62))
                if points:
                    xs, ys = downsample(points, buckets)
                    curves.setdefault(key, {})[run_id] = Curve(key, xs, ys)
        ordered = [k for k in (*LOSS_KEYS, LR_KEY, RATE_KEY) if k in keys] + sorted(
            k for k in keys if k not in (*LOSS_KEYS, LR_KEY, RATE_KEY))
        return CompareSnapshot(data["runs"], params, matrix, table4_matrix(conn, run_ids), curves, ordered)


def table4_matrix(conn: sqlite3.Connection, run_ids: list[int]) -> results_table.Matrix:
    """Table 4 columns plus the low-resolution LFW columns any of the runs has, deltas to the first run."""
    present = runsdb.latest_results(conn, run_ids)
    lowres = sorted({(p, r) for results in present.values() for (b, p, m, r) in results
                     if b == "lowres_lfw" and m == "acc" and r is not None}, key=lambda pr: -pr[1])
    protocols = result_keys.PROTOCOL_PREFERENCE["lowres_lfw"]
    lowres_protocol = next((p for p in protocols if any(pp == p for pp, _ in lowres)), None)
    specs = list(TABLE4) + [f"lowres_lfw.{lowres_protocol}.acc@{r}" for p, r in lowres if p == lowres_protocol]
    try:
        return results_table.results_matrix(conn, runs=run_ids, metrics=specs, baseline=run_ids[0])
    except LrfrError:  # the first run has no results (yet): no deltas
        return results_table.results_matrix(conn, runs=run_ids, metrics=specs)


class ResultsBoardModel(_Reader):
    """The results board: every run matching a filter, with its group's Baseline marks and the
    paper's matching reference rows."""

    def __init__(self, db: Path, filter_text: str) -> None:
        super().__init__(db)
        self.filter_text = filter_text

    def snapshot(self) -> results_table.Matrix:
        """Raises LrfrError for a bad filter or an unreadable database."""
        from lrfr_tui.paper_layout import attach_references, group_baseline_run, group_in_filter

        conn = self._connect()
        filters = runsdb.parse_filters(self.filter_text) if self.filter_text.strip() else []
        group = group_in_filter(self.filter_text)
        matrix = results_table.results_matrix(conn, filters=filters, baseline=group_baseline_run(conn, group))
        return attach_references(conn, matrix, group)


@dataclass
class LogSnapshot:
    path: str | None
    text: str  # the last LOG_SCREEN_LINES lines
    size: int  # the file's size: the screen reloads only when it changed


LOG_SCREEN_LINES = 2000


class LogModel(_Reader):
    """One run's log for the full-screen view: its last LOG_SCREEN_LINES lines, read again when it grows."""

    def __init__(self, db: Path, run_id: int) -> None:
        super().__init__(db)
        self.run_id = run_id

    def snapshot(self) -> LogSnapshot:
        """Raises LrfrError when the run is gone or the database cannot be read."""
        from lrfr_tui import run_logs

        run = runsdb.run_ref(self._connect(), self.run_id)
        path = run_logs.log_file(self.db, run)
        if path is None:
            return LogSnapshot(None, "(no log file for this run yet)", -1)
        try:
            size = path.stat().st_size
            lines = run_logs.tail_lines(path, LOG_SCREEN_LINES)
        except OSError as exc:
            return LogSnapshot(str(path), f"({path} cannot be read: {exc})", -1)
        return LogSnapshot(str(path), "\n".join(lines), size)
