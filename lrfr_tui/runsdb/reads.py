"""Reads of runs.db that the app's commands and screens share (tags, latest results, one run's row)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from lrfr_tui.runsdb.base import StoreError, chunks, conn_of, dicts, table_columns
from lrfr_tui.runsdb.codec import decode_param
from lrfr_tui.runsdb.filters import METRIC_FUNCS
from lrfr_tui.runsdb.metric_sql import has_value_index, metric_sql
from lrfr_tui.runsdb.result_keys import ResultKey
from lrfr_tui.runsdb.states import ACTIVE_STATUSES

if TYPE_CHECKING:
    from lrfr_tui.runsdb.store import Store


def run_tags(db: sqlite3.Connection | Store, run_ids: Sequence[int]) -> dict[int, list[str]]:
    conn = conn_of(db)
    out: dict[int, list[str]] = {}
    for chunk in chunks(list(run_ids)):
        marks = ", ".join("?" * len(chunk))
        for run_id, tag in conn.execute(f"SELECT run_id, tag FROM tags WHERE run_id IN ({marks}) ORDER BY tag",
                                        list(chunk)):
            out.setdefault(run_id, []).append(tag)
    return out


def latest_results(db: sqlite3.Connection | Store, run_ids: Sequence[int]) -> dict[int, dict[ResultKey, float]]:
    """run -> {(benchmark, protocol, metric, resolution): value}; a re-evaluation's row wins."""
    conn = conn_of(db)
    out: dict[int, dict[ResultKey, float]] = {}
    for chunk in chunks(list(run_ids)):
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute("SELECT run_id, benchmark, protocol, metric, resolution, value FROM results "
                            f"WHERE run_id IN ({marks}) ORDER BY rowid", list(chunk))
        for run_id, bench, protocol, metric, res, value in rows:
            out.setdefault(run_id, {})[(bench, protocol, metric, res)] = value
    return out


def latest_sources(db: sqlite3.Connection | Store, run_ids: Sequence[int]) -> dict[int, dict[ResultKey, str | None]]:
    """run -> {result key: source kind ('standin', 'catalog'; None: unknown)} of the row ``latest_results``
    takes for that key. Empty for a database before schema v6 (read-only, not upgraded)."""
    conn = conn_of(db)
    out: dict[int, dict[ResultKey, str | None]] = {}
    if "source_key" not in table_columns(conn, "results"):
        return out
    for chunk in chunks(list(run_ids)):
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute("SELECT run_id, benchmark, protocol, metric, resolution, source_key FROM results "
                            f"WHERE run_id IN ({marks}) ORDER BY rowid", list(chunk))
        for run_id, bench, protocol, metric, res, key in rows:
            out.setdefault(run_id, {})[(bench, protocol, metric, res)] = key.partition(":")[0] if key else None
    return out


def run_ref(db: sqlite3.Connection | Store, run_id: int) -> dict[str, Any]:
    """The run's row (without its config) or a StoreError naming the unknown id."""
    conn = conn_of(db)
    rows = dicts(conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)))
    if not rows:
        path = conn.execute("PRAGMA database_list").fetchone()[2]
        raise StoreError(f"no run with id {run_id} in {path or 'runs.db'} (see `lrfr ls`)")
    return rows[0]


def check_runs(db: sqlite3.Connection | Store, run_ids: Iterable[int]) -> None:
    for run_id in run_ids:
        run_ref(db, run_id)


def metric_summary(conn: sqlite3.Connection, run_id: int) -> list[dict[str, Any]]:
    value_index = has_value_index(conn)
    out = []
    for key, count, last_step in conn.execute(
            "SELECT key, COUNT(*), MAX(step) FROM metrics WHERE run_id = ? GROUP BY key ORDER BY key", (run_id,)):
        entry: dict[str, Any] = {"key": key, "points": count, "last_step": last_step}
        for func in METRIC_FUNCS:
            sql, params = metric_sql(func, key, "?", value_index)
            # every "run_id = ?" comes right before its "key = ?"
            bound = [p for k in params for p in (run_id, k)]
            entry[func] = conn.execute(f"SELECT {sql}", bound).fetchone()[0]
        out.append(entry)
    return out




def run_names(db: sqlite3.Connection | Store, run_ids: Sequence[int]) -> dict[int, str]:
    conn = conn_of(db)
    out: dict[int, str] = {}
    for chunk in chunks(list(run_ids)):
        out.update(conn.execute(f"SELECT id, name FROM runs WHERE id IN ({', '.join('?' * len(chunk))})",
                                list(chunk)).fetchall())
    return out


def run_params(db: sqlite3.Connection | Store, run_id: int) -> dict[str, Any]:
    """The run's flattened config keys with their JSON values."""
    return {k: decode_param(v) for k, v in conn_of(db).execute(
        "SELECT key, value FROM params WHERE run_id = ? ORDER BY key", (run_id,))}


def run_environment(db: sqlite3.Connection | Store, run_id: int) -> dict[str, Any] | None:
    """The environment the run's latest start recorded (versions, GPUs), if any."""
    for (data,) in conn_of(db).execute("SELECT data FROM events WHERE run_id = ? AND kind = 'environment' "
                                       "ORDER BY rowid DESC LIMIT 1", (run_id,)):
        try:
            return json.loads(data or "{}").get("environment")
        except (ValueError, AttributeError):
            return None
    return None


def run_notes(db: sqlite3.Connection | Store, run_id: int) -> list[dict[str, Any]]:
    return dicts(conn_of(db).execute("SELECT text, wall FROM notes WHERE run_id = ? ORDER BY wall", (run_id,)))


def run_artifacts(db: sqlite3.Connection | Store, run_id: int) -> list[dict[str, Any]]:
    return dicts(conn_of(db).execute("SELECT kind, path, wall FROM artifacts WHERE run_id = ? ORDER BY wall",
                                     (run_id,)))


def recent_events(db: sqlite3.Connection | Store, run_id: int, n: int = 10) -> list[dict[str, Any]]:
    """The run's last ``n`` events, oldest first."""
    return dicts(conn_of(db).execute("SELECT kind, message, wall FROM events WHERE run_id = ? "
                                     "ORDER BY rowid DESC LIMIT ?", (run_id, n)))[::-1]


def last_metrics(db: sqlite3.Connection | Store, run_ids: Sequence[int]) -> dict[str, list[float | None]]:
    """Every metric key any of the runs logged -> its last value per run (None where a run lacks it)."""
    conn = conn_of(db)
    value_index = has_value_index(conn)
    keys = sorted({k for i in run_ids for (k,) in conn.execute(
        "SELECT DISTINCT key FROM metrics WHERE run_id = ?", (i,))})
    out: dict[str, list[float | None]] = {}
    for key in keys:
        sql, _ = metric_sql("last", key, "?", value_index)
        out[key] = [conn.execute(f"SELECT {sql}", (i, key)).fetchone()[0] for i in run_ids]
    return out


def result_count(db: sqlite3.Connection | Store, run_id: int) -> int:
    return conn_of(db).execute("SELECT COUNT(*) FROM results WHERE run_id = ?", (run_id,)).fetchone()[0]


def run_config(db: sqlite3.Connection | Store, run_id: int) -> dict[str, Any]:
    """The run's resolved config as stored at creation."""
    return json.loads(run_ref(db, run_id).get("config") or "{}")


def active_counts(db: sqlite3.Connection | Store) -> dict[str, int]:
    """How many non-deleted runs are queued and running (the status bar)."""
    rows = conn_of(db).execute(
        f"SELECT status, COUNT(*) FROM runs WHERE deleted = 0 AND status IN ({', '.join('?' * len(ACTIVE_STATUSES))}) "
        "GROUP BY status", ACTIVE_STATUSES).fetchall()
    return {status: dict(rows).get(status, 0) for status in ACTIVE_STATUSES}


def placement(db: sqlite3.Connection | Store) -> dict[int, tuple]:
    """run id -> (id, gpus, gpus_requested, queue_pos, status) of every non-deleted run: where it runs or waits."""
    return {r[0]: tuple(r) for r in conn_of(db).execute(
        "SELECT id, gpus, gpus_requested, queue_pos, status FROM runs WHERE deleted = 0")}


def live_phases(db: sqlite3.Connection | Store) -> dict[int, dict[str, Any]]:
    """The ``phase`` of each running run that reported one (training since, evaluation benchmark k of n)."""
    conn = conn_of(db)
    if "phase" not in table_columns(conn, "runs"):
        return {}
    out = {}
    for run_id, raw in conn.execute("SELECT id, phase FROM runs WHERE status = 'running' AND phase IS NOT NULL"):
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict):
            out[run_id] = value
    return out


def params_of(db: sqlite3.Connection | Store, run_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    """Each run's flat config (key -> stored JSON text), for the runs given."""
    conn = conn_of(db)
    out: dict[int, dict[str, str]] = {i: {} for i in run_ids}
    for chunk in chunks(list(run_ids)):
        for run_id, key, value in conn.execute(
                f"SELECT run_id, key, value FROM params WHERE run_id IN ({', '.join('?' * len(chunk))})", chunk):
            out[run_id][key] = value
    return out
