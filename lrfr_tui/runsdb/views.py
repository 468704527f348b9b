"""The stable views of runs.db: how users read it without lrfr (``sqlite3``, ``sqlite-utils``, Datasette, pandas).

Their names and columns are a public interface (README, "Query runs.db directly"): a column may be added at
the end, never renamed, retyped or removed, whatever the tables underneath become. lrfr itself never reads
them; they exist for other programs.

- ``run_summary``: one row per run not deleted.
- ``results_wide``: one row per run not deleted, one column per headline number of each declared benchmark
  (``engine.evaluate.registry``), each benchmark's results taken from its most preferred protocol present.
- ``latest_results``: the value shown for each (run, benchmark, protocol, metric, resolution).
- ``latest_metrics``: the last logged point of each (run, training metric).
- ``metric_series``: every logged point.

Metric values come as stored (``value`` REAL, NULL where ``special`` holds 'nan', 'inf' or '-inf': SQLite has
no NaN) and decoded into one REAL column, ``decoded``: the codec's value (``codec.VALUE_SQL``), with the
infinities as IEEE infinities (SQLite stores those) and NaN as NULL, so pandas reads it as the float that was
logged. Times are the stored Unix seconds (``created``, ``wall``) and ISO-8601 UTC text (``created_utc``).

The definitions are generated here, ``results_wide``'s from the registry, so they change when a benchmark is
declared. Whoever opens runs.db for writing (``Store``) compares them with those stored in ``sqlite_master``
and re-creates the ones that differ (``stale``, ``install``). A comparison rather than a hash of the
definitions in ``meta``: the stored SQL is the truth, so a view a user dropped or replaced, or a copy of
runs.db restored beside an older meta row, is repaired too; and rather than re-creating every view on every
open: that would take the write lock on each `lrfr ls` (waiting behind a writing worker, failing on a
read-only directory) and force every other connection to re-prepare its statements.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from engine.evaluate import registry
from lrfr_tui.runsdb import result_keys
from lrfr_tui.runsdb.codec import VALUE_SQL
from lrfr_tui.runsdb.result_keys import WideColumn

# Creation order: results_wide reads latest_results, so that one exists first.
VIEW_NAMES = ("run_summary", "latest_results", "latest_metrics", "metric_series", "results_wide")


def _utc(column: str) -> str:
    """Unix seconds -> ISO-8601 UTC text with milliseconds (``2026-01-31T12:00:00.250Z``); NULL stays NULL."""
    return f"strftime('%Y-%m-%dT%H:%M:%fZ', {column}, 'unixepoch')"


def _literal(value: str | int | None) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# The first 18 columns are those of schema v8's run_summary, in its order; later ones are appended.
RUN_SUMMARY = f"""SELECT r.id, r.name, r.preset, r.status, r.group_name, r.host, r.launcher, r.created, r.started,
       r.ended, CASE WHEN r.ended IS NOT NULL AND r.started IS NOT NULL THEN r.ended - r.started END AS duration_s,
       r.step, r.total_steps, r.exit_code, r.failure_reason, r.parent_id, r.run_dir,
       (SELECT group_concat(tag, ',') FROM (SELECT tag FROM tags t WHERE t.run_id = r.id ORDER BY tag)) AS tags,
       {_utc('r.created')} AS created_utc, {_utc('r.started')} AS started_utc, {_utc('r.ended')} AS ended_utc,
       (SELECT n.text FROM notes n WHERE n.run_id = r.id ORDER BY n.wall DESC, n.rowid DESC LIMIT 1) AS note,
       r.git_commit
FROM runs r WHERE r.deleted = 0"""

# The latest row of each key wins, as in `lrfr results` (Store.results); source_kind: standin | catalog | NULL.
LATEST_RESULTS = f"""SELECT run_id, benchmark, protocol, metric, resolution, value,
       CASE WHEN source_key IS NULL THEN NULL ELSE substr(source_key, 1, instr(source_key, ':') - 1) END
       AS source_kind, created, {_utc('created')} AS created_utc
FROM results WHERE rowid IN (SELECT MAX(rowid) FROM results
                             GROUP BY run_id, benchmark, protocol, metric, COALESCE(resolution, -1))"""

LATEST_METRICS = f"""SELECT m.run_id, m.key, m.step, m.value, m.special, m.wall, {VALUE_SQL} AS decoded,
       {_utc('m.wall')} AS wall_utc
FROM metrics m
JOIN (SELECT run_id, key, MAX(step) AS step FROM metrics GROUP BY run_id, key) last
  ON last.run_id = m.run_id AND last.key = m.key AND last.step = m.step"""

METRIC_SERIES = f"""SELECT run_id, key, step, value, special, {VALUE_SQL} AS decoded, wall, {_utc('wall')} AS wall_utc
FROM metrics"""


def results_wide_sql(columns: Sequence[WideColumn], benchmarks: Sequence[registry.BenchmarkInfo]) -> str:
    """One row per run, one column per headline number. Per (run, benchmark) one protocol: the first in the
    registry's preference order for which the run has any headline number (``<bench>_protocol`` names it), so
    SCface's d1/d2/d3/mean never mix zero-shot and fine-tuned numbers. A result under a protocol the registry
    does not declare, or of a benchmark on another dataset (``xqlfw:my_pairs``), is not a column."""
    prefs = ",\n    ".join(f"({_literal(b.name)}, {_literal(p)}, {i})" for b in benchmarks
                           for i, p in enumerate(b.protocols))
    heads = ",\n    ".join(f"({_literal(c.benchmark)}, {_literal(c.metric)}, {_literal(c.resolution)})"
                           for c in columns)
    selected = ["r.id AS run_id", "r.name", "r.status", "r.group_name"]
    for bench in dict.fromkeys(c.benchmark for c in columns):
        selected.append(f"MAX(CASE WHEN p.benchmark = {_literal(bench)} THEN p.protocol END) "
                        f"AS {_ident(bench + '_protocol')}")
        selected.extend(f"MAX(CASE WHEN p.benchmark = {_literal(c.benchmark)} AND p.metric = {_literal(c.metric)} "
                        f"AND p.resolution IS {_literal(c.resolution)} THEN p.value END) AS {_ident(c.name)}"
                        for c in columns if c.benchmark == bench)
    body = ",\n       ".join(selected)
    return f"""WITH pref(benchmark, protocol, prio) AS (VALUES
    {prefs}),
headline(benchmark, metric, resolution) AS (VALUES
    {heads}),
candidates AS (
    SELECT l.run_id, l.benchmark, l.protocol, l.metric, l.resolution, l.value, pref.prio FROM latest_results l
    JOIN pref ON pref.benchmark = l.benchmark AND pref.protocol = l.protocol
    JOIN headline h ON h.benchmark = l.benchmark AND h.metric = l.metric AND h.resolution IS l.resolution),
chosen AS (SELECT run_id, benchmark, MIN(prio) AS prio FROM candidates GROUP BY run_id, benchmark),
picked AS (SELECT c.* FROM candidates c JOIN chosen USING (run_id, benchmark, prio))
SELECT {body}
FROM runs r LEFT JOIN picked p ON p.run_id = r.id
WHERE r.deleted = 0
GROUP BY r.id
ORDER BY r.id"""


def definitions() -> dict[str, str]:
    """Each view's SELECT, in creation order, from the registry as it is now."""
    benchmarks = registry.benchmarks()
    return {"run_summary": RUN_SUMMARY, "latest_results": LATEST_RESULTS, "latest_metrics": LATEST_METRICS,
            "metric_series": METRIC_SERIES,
            "results_wide": results_wide_sql(result_keys.wide_columns(benchmarks), benchmarks)}


def _stored(conn: sqlite3.Connection) -> dict[str, str]:
    """The SELECT each view of runs.db was created with (``CREATE VIEW <name> AS <select>`` in sqlite_master;
    the quoting of the name is left to whoever created it, so only what follows the first " AS " counts)."""
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'").fetchall()
    return {name: (sql or "").partition(" AS ")[2] for name, sql in rows}


def stale(conn: sqlite3.Connection) -> list[str]:
    """The views that are missing or differ from ``definitions()``: one read of sqlite_master."""
    stored = _stored(conn)
    return [name for name, sql in definitions().items() if stored.get(name) != sql]


def install(conn: sqlite3.Connection) -> list[str]:
    """(Re)create the stale views, inside the caller's transaction; the names re-created.

    sqlite-utils' ``create_view(replace=True)`` drops and re-creates a view only when its SQL differs. Imported
    here, not at the top: it costs ~0.1 s (it loads numpy), and only an upgrade or a new benchmark gets here.
    """
    from sqlite_utils import Database

    # No PRAGMA recursive_triggers and no plugin hooks on lrfr's connection: only the views are wanted.
    db = Database(conn, recursive_triggers=False, execute_plugins=False)
    names = stale(conn)
    for name, sql in definitions().items():
        if name in names:
            db.create_view(name, sql, replace=True)
    return names
