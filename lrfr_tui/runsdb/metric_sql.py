"""Metric values of a run as SQL scalar subqueries: the last, min or max of a key (filters, sorts, summaries)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from lrfr_tui.runsdb.codec import VALUE_SQL


def has_value_index(conn: sqlite3.Connection) -> bool:
    """Whether metrics has an index led by (run_id, key, value): then min()/max() are index seeks."""
    for index in conn.execute("PRAGMA index_list(metrics)").fetchall():
        cols = [row[2] for row in conn.execute(f"PRAGMA index_info({json.dumps(index[1])})")]
        if cols[:3] == ["run_id", "key", "value"]:
            return True
    return False


def metric_sql(func: str, key: str, runref: str, value_index: bool) -> tuple[str, list[Any]]:
    """A scalar subquery: the last / min / max of a metric key of one run (inf kept, nan ignored)."""
    where = f"run_id = {runref} AND key = ?"
    if func == "last":
        return f"(SELECT {VALUE_SQL} FROM metrics WHERE {where} ORDER BY step DESC, rowid DESC LIMIT 1)", [key]
    agg = func.upper()
    if not value_index:  # one pass over the run's points of this key
        return f"(SELECT {agg}({VALUE_SQL}) FROM metrics WHERE {where})", [key]
    # Index-friendly: an infinity first (NULL values sort first in the index), then MIN/MAX by seek.
    extreme, other = ("-inf", "inf") if func == "min" else ("inf", "-inf")
    sign = {"inf": "9e999", "-inf": "-9e999"}
    sql = (f"COALESCE((SELECT {sign[extreme]} FROM metrics WHERE {where} AND value IS NULL AND special = "
           f"'{extreme}' LIMIT 1), (SELECT {agg}(value) FROM metrics WHERE {where}), (SELECT {sign[other]} "
           f"FROM metrics WHERE {where} AND value IS NULL AND special = '{other}' LIMIT 1))")
    return sql, [key, key, key]
