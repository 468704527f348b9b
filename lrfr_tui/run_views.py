"""What `lrfr show` and `lrfr compare` present: one run in full, several side by side."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import LrfrError
from lrfr_tui.results_table import results_matrix
from lrfr_tui.run_logs import log_file, tail_lines
from lrfr_tui.runsdb import Store, db_errors, latest_results, latest_sources, reads, run_ref, run_tags
from lrfr_tui.runsdb.base import conn_of
from lrfr_tui.runsdb.result_keys import result_sort_key


@db_errors
def run_detail(db: sqlite3.Connection | Store, db_file: Path, run_id: int, tail: int = 20) -> dict[str, Any]:
    """Everything `lrfr show` prints: the run row, config, params, results, metric summary, tags,
    notes, artifacts, recent events and the log tail."""
    conn = conn_of(db)
    run = run_ref(conn, run_id)
    config = json.loads(run.pop("config") or "{}")
    sources = latest_sources(conn, [run_id]).get(run_id, {})
    results = [{"benchmark": b, "protocol": p, "metric": m, "resolution": r, "value": v,
                "source": sources.get((b, p, m, r))}
               for (b, p, m, r), v in sorted(latest_results(conn, [run_id]).get(run_id, {}).items(),
                                             key=lambda kv: result_sort_key(kv[0]))]
    log = log_file(db_file, run)
    now = time.time()
    started, ended = run.get("started"), run.get("ended")
    duration = None
    if started is not None:
        end = ended if ended is not None else now if run["status"] == "running" else None
        duration = None if end is None else end - started
    return {"run": run, "duration_s": duration, "age_s": now - run["created"],
            "tags": run_tags(conn, [run_id]).get(run_id, []), "notes": reads.run_notes(conn, run_id),
            "config": config, "params": reads.run_params(conn, run_id), "results": results,
            "environment": reads.run_environment(conn, run_id), "metrics": reads.metric_summary(conn, run_id),
            "artifacts": reads.run_artifacts(conn, run_id), "events": reads.recent_events(conn, run_id),
            "log_path": str(log) if log else None, "log_tail": tail_lines(log, tail) if log is not None else []}


@db_errors
def compare_runs(db: sqlite3.Connection | Store, run_ids: Sequence[int]) -> dict[str, Any]:
    """Config keys whose values differ, headline results and last training metrics, side by side."""
    conn = conn_of(db)
    if len(run_ids) < 2:
        raise LrfrError("compare needs at least two runs")
    runs = [run_ref(conn, i) for i in run_ids]
    params = [reads.run_params(conn, run_id) for run_id in run_ids]
    missing = object()
    diff = {}
    for key in sorted(set().union(*params)):
        values = [p.get(key, missing) for p in params]
        if any(v != values[0] for v in values[1:]):
            diff[key] = [None if v is missing else v for v in values]
    matrix = results_matrix(conn, runs=list(run_ids))
    if matrix.rows and any(v is not None for v in matrix.rows[0].values):
        # The first run is the one the others are tested against (significance marks).
        matrix = results_matrix(conn, runs=list(run_ids), baseline=run_ids[0])
    return {"runs": [{"id": r["id"], "name": r["name"], "status": r["status"], "preset": r["preset"]} for r in runs],
            "params": diff, "results": matrix, "metrics": reads.last_metrics(conn, run_ids)}
