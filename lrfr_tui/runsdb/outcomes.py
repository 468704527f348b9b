"""Reads of the per-item correctness behind results (the ``outcomes`` table) and the seeds that pair runs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

import numpy as np

from lrfr_tui.runsdb.codec import unpack_outcomes


def has_outcomes_table(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='outcomes'").fetchone() is not None


def run_outcomes(conn: sqlite3.Connection, run_id: int, benchmark: str, protocol: str | None, metric: str,
                 resolution: int | None) -> tuple[str | None, np.ndarray] | None:
    """(source_key, correctness) of a run's latest outcomes for one result (any protocol when None)."""
    sql = ("SELECT source_key, n, bits FROM outcomes WHERE run_id=? AND benchmark=? AND metric=? "
           "AND resolution IS ?")
    params: list = [run_id, benchmark, metric, resolution]
    if protocol is not None:
        sql += " AND protocol=?"
        params.append(protocol)
    row = conn.execute(sql + " ORDER BY rowid DESC LIMIT 1", params).fetchone()
    return None if row is None else (row[0], unpack_outcomes(row[1], row[2]))


def run_seeds(conn: sqlite3.Connection, run_ids: Sequence[int]) -> dict[int, int | None]:
    """train.seed per run (None where a run's params lack it)."""
    seeds: dict[int, int | None] = {i: None for i in run_ids}
    if not run_ids:
        return seeds
    rows = conn.execute(f"SELECT run_id, value FROM params WHERE key='train.seed' AND run_id IN "
                        f"({','.join('?' * len(run_ids))})", list(run_ids))
    for run_id, value in rows:
        try:
            seeds[run_id] = int(json.loads(value))
        except (TypeError, ValueError):
            seeds[run_id] = None
    return seeds
