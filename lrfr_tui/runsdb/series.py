"""A run's metric time series as the live plots read them: keys, points after a step, sparkline samples,
the step rate (index seeks, never a pass over every point)."""

from __future__ import annotations

import itertools
import sqlite3

from lrfr_tui.runsdb.codec import decode

SPARK_POINTS = 10


def metric_keys(conn: sqlite3.Connection, run_id: int) -> list[str]:
    """The run's metric keys by index seeks (a skip scan), not a pass over every point."""
    keys, last = [], ""
    while True:
        row = conn.execute("SELECT MIN(key) FROM metrics WHERE run_id = ? AND key > ?", (run_id, last)).fetchone()
        if row is None or row[0] is None:
            return keys
        last = row[0]
        keys.append(last)


def series_after(conn: sqlite3.Connection, run_id: int, key: str, after_step: int) -> list[tuple[int, float]]:
    rows = conn.execute("SELECT step, value, special FROM metrics WHERE run_id = ? AND key = ? AND step > ? "
                        "ORDER BY step", (run_id, key, after_step))
    return [(step, decode(value, special)) for step, value, special in rows]


def spark_samples(conn: sqlite3.Connection, run_id: int, key: str, last_step: int,
                  n: int = SPARK_POINTS) -> list[float]:
    """``n`` bucket means along the run's steps, each from at most 64 points found by an index seek."""
    if last_step <= 0:
        return []
    out = []
    edges = [last_step * i // n for i in range(n + 1)]
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        row = conn.execute("SELECT AVG(value) FROM (SELECT value FROM metrics WHERE run_id = ? AND key = ? "
                           "AND step > ? AND step <= ? AND value IS NOT NULL LIMIT 64)",
                           (run_id, key, lo, hi)).fetchone()
        if row[0] is not None:
            out.append(float(row[0]))
    return out


def step_rate(conn: sqlite3.Connection, run_id: int, window: int = 20,
              since: float | None = None) -> tuple[float, float] | None:
    """(steps per second over the last ``window`` logged points, wall time of the last one); ``since``: only
    points logged from then on (a resumed run's attempt: the pause before it is no training time)."""
    rows = conn.execute("SELECT step, wall FROM metrics WHERE run_id = ? AND key = 'loss' AND wall >= ? "
                        "ORDER BY step DESC LIMIT ?", (run_id, since or 0.0, window)).fetchall()
    if len(rows) < 2:
        return None
    (s1, w1), (s0, w0) = rows[0], rows[-1]
    if w1 <= w0 or s1 <= s0:
        return None
    return (s1 - s0) / (w1 - w0), w1


def unknown_metric_hint(conn: sqlite3.Connection, terms: list[str], sample_ids: list[int]) -> str | None:
    """``terms`` (metric names a filter reads) that none of the runs ``sample_ids`` logged: a one-line hint
    naming the keys they have (a typo, or a config key without its section, e.g. ``lr`` for ``optim.lr``)."""
    known: set[str] = set()
    for run_id in sample_ids:
        known.update(metric_keys(conn, run_id))
    missing = [t for t in terms if t not in known]
    if not missing:
        return None
    have = ", ".join(sorted(known)) or "none yet"
    return (f"unknown key {', '.join(map(repr, missing))}: no run logged such a metric (metrics: {have}); "
            "a run column, a result (lfw.acc) or a config key (optim.lr) is meant otherwise")
