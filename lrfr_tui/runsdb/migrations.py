"""runs.db schema versions and the migrations between them.

A fresh database is created by applying every migration from version 0, so the upgrade path
from the first release is exercised every time a database is made. Add a migration, never edit
one that has shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

# The schema of the first release (lrfr 0.1): runs, params, metrics, results, events, artifacts, tags, notes.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    preset TEXT,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    exit_code INTEGER,
    failure_reason TEXT,
    host TEXT,
    git_commit TEXT,
    command TEXT,
    launcher TEXT,
    gpus TEXT,
    pid INTEGER,
    job_id TEXT,
    heartbeat REAL,
    parent_id INTEGER REFERENCES runs(id),
    run_dir TEXT,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER,
    config TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS params (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    value TEXT,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    key TEXT NOT NULL,
    step INTEGER NOT NULL,
    value REAL,
    -- SQLite has no NaN: 'nan', 'inf', '-inf' are kept here so they are stored faithfully.
    special TEXT,
    wall REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run_key_step ON metrics(run_id, key, step);
CREATE TABLE IF NOT EXISTS results (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    benchmark TEXT NOT NULL,
    protocol TEXT NOT NULL,
    metric TEXT NOT NULL,
    resolution INTEGER,
    value REAL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_run ON results(run_id, benchmark);
CREATE TABLE IF NOT EXISTS events (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    wall REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    wall REAL NOT NULL,
    PRIMARY KEY (run_id, kind, path)
);
CREATE TABLE IF NOT EXISTS tags (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    tag TEXT NOT NULL,
    PRIMARY KEY (run_id, tag)
);
CREATE TABLE IF NOT EXISTS notes (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    text TEXT NOT NULL,
    wall REAL NOT NULL
);
"""


def _statements(script: str) -> list[str]:
    """Split a schema script (no semicolons inside statements or comments)."""
    return [s.strip() for s in script.split(";") if s.strip()]


def _to_v1(conn: sqlite3.Connection) -> None:
    for statement in _statements(SCHEMA_V1):
        conn.execute(statement)


def _to_v2(conn: sqlite3.Connection) -> None:
    """The experiment manager: queue order, GPU requests, groups (sweeps, ablations), log path."""
    for statement in (
        "ALTER TABLE runs ADD COLUMN group_name TEXT",
        "ALTER TABLE runs ADD COLUMN gpus_requested INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN queue_pos REAL",
        "ALTER TABLE runs ADD COLUMN log_path TEXT",
        "ALTER TABLE runs ADD COLUMN scheduler TEXT",
        "UPDATE runs SET queue_pos = id WHERE status = 'queued'",
        "CREATE INDEX IF NOT EXISTS runs_status ON runs(status, queue_pos)",
        "CREATE INDEX IF NOT EXISTS runs_group ON runs(group_name)",
    ):
        conn.execute(statement)


def _to_v3(conn: sqlite3.Connection) -> None:
    """Best-of queries (`lrfr ls 'min(loss)<1'`, the TUI's filter box) read the index, not the table:
    about 20x faster on 10M points, for ~40% more disk and ~45 us more per reported training step."""
    conn.execute("CREATE INDEX IF NOT EXISTS metrics_run_key_value ON metrics(run_id, key, value)")


def _to_v4(conn: sqlite3.Connection) -> None:
    """Never lose a run: a run identity that its checkpoints carry (a runs/ directory left by another
    runs.db is never adopted), and one metric point per (run, key, step) - a resumed run rewrites
    the steps after its checkpoint instead of adding a second copy of them."""
    import uuid

    conn.execute("ALTER TABLE runs ADD COLUMN uuid TEXT")
    # With pid: when that process started (clock ticks after boot), so a recycled pid is not the run.
    conn.execute("ALTER TABLE runs ADD COLUMN pid_start INTEGER")
    for (run_id,) in conn.execute("SELECT id FROM runs").fetchall():
        conn.execute("UPDATE runs SET uuid=? WHERE id=?", (uuid.uuid4().hex, run_id))
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS runs_uuid ON runs(uuid)")
    # Earlier resumes stored duplicates: keep the latest point of each (run, key, step).
    conn.execute("DELETE FROM metrics WHERE rowid NOT IN "
                 "(SELECT MAX(rowid) FROM metrics GROUP BY run_id, key, step)")
    conn.execute("DROP INDEX IF EXISTS metrics_run_key_step")
    conn.execute("CREATE UNIQUE INDEX metrics_run_key_step ON metrics(run_id, key, step)")


def _to_v5(conn: sqlite3.Connection) -> None:
    """SCface ``zero_shot`` became the paper's protocol (the 80 DCR test ids); until now it was run on
    all 130 subjects. Stored results keep what they measured, under that protocol's new name, so they
    are never lined up against the paper's 80-id numbers."""
    conn.execute("UPDATE results SET protocol='zero_shot_all130' WHERE benchmark='scface' AND protocol='zero_shot'")


def _to_v6(conn: sqlite3.Connection) -> None:
    """Where each number came from: the data a result measured (``source``: JSON with kind standin|catalog,
    dataset, format, path, checksum, protocol_version) and its identity (``source_key``: ``standin:test``,
    ``catalog:lfw:<checksum>``). Rows stored before carry NULL: their source is unknown."""
    conn.execute("ALTER TABLE results ADD COLUMN source TEXT")
    conn.execute("ALTER TABLE results ADD COLUMN source_key TEXT")


def _to_v7(conn: sqlite3.Connection) -> None:
    """How sure each number is: the per-item correctness (one bit per pair or probe, ``numpy.packbits``
    order, ``n`` items) behind an accuracy result, so two runs measured on the same data (same
    ``source_key``) can be compared by a paired test, and seeds pooled. One row per (run, benchmark,
    protocol, metric, resolution, source_key); a re-evaluation replaces it."""
    conn.execute("""CREATE TABLE IF NOT EXISTS outcomes (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        benchmark TEXT NOT NULL,
        protocol TEXT NOT NULL,
        metric TEXT NOT NULL,
        resolution INTEGER,
        source_key TEXT,
        n INTEGER NOT NULL,
        bits BLOB NOT NULL,
        created REAL NOT NULL)""")
    conn.execute("CREATE INDEX IF NOT EXISTS outcomes_run ON outcomes(run_id, benchmark, protocol, metric)")


def _to_v8(conn: sqlite3.Connection) -> None:
    """Stable views for reading runs.db from outside lrfr (``sqlite3``, ``sqlite-utils``, Datasette, pandas):
    their names and columns are kept across schema versions, whatever the tables underneath become.

    - ``run_summary``: one row per run that is not deleted, with its duration and comma-joined tags.
    - ``latest_results``: the value each run shows for each (benchmark, protocol, metric, resolution) (the
      latest row wins, as in ``lrfr results``), with the kind of data it measured (standin / catalog / NULL).
    - ``latest_metrics``: each run's last logged point of every training metric. SQLite has no NaN, so
      ``special`` holds 'nan', 'inf' or '-inf' where ``value`` is NULL.
    """
    conn.execute("""CREATE VIEW IF NOT EXISTS run_summary AS
        SELECT r.id, r.name, r.preset, r.status, r.group_name, r.host, r.launcher, r.created, r.started,
               r.ended, CASE WHEN r.ended IS NOT NULL AND r.started IS NOT NULL THEN r.ended - r.started END
               AS duration_s, r.step, r.total_steps, r.exit_code, r.failure_reason, r.parent_id, r.run_dir,
               (SELECT group_concat(tag, ',') FROM (SELECT tag FROM tags t WHERE t.run_id = r.id ORDER BY tag))
               AS tags
        FROM runs r WHERE r.deleted = 0""")
    conn.execute("""CREATE VIEW IF NOT EXISTS latest_results AS
        SELECT run_id, benchmark, protocol, metric, resolution, value,
               CASE WHEN source_key IS NULL THEN NULL ELSE substr(source_key, 1, instr(source_key, ':') - 1) END
               AS source_kind, created
        FROM results WHERE rowid IN (SELECT MAX(rowid) FROM results
                                     GROUP BY run_id, benchmark, protocol, metric, COALESCE(resolution, -1))""")
    conn.execute("""CREATE VIEW IF NOT EXISTS latest_metrics AS
        SELECT m.run_id, m.key, m.step, m.value, m.special, m.wall FROM metrics m
        JOIN (SELECT run_id, key, MAX(step) AS step FROM metrics GROUP BY run_id, key) last
          ON last.run_id = m.run_id AND last.key = m.key AND last.step = m.step""")


def _to_v9(conn: sqlite3.Connection) -> None:
    """The stable views are generated (``runsdb.views``) and kept current instead of frozen here: v8's
    ``run_summary``, ``latest_results`` and ``latest_metrics`` gain columns at their end (ISO-8601 UTC times,
    the latest note, the git commit, metric values decoded into one REAL column), and ``metric_series`` and
    ``results_wide`` (one column per headline number the engine's benchmark registry declares) are new.
    ``migrate`` installs them after the last migration, so they always read the newest tables, and ``Store``
    re-creates any whose definition changed on open (a new benchmark changes ``results_wide``) without a new
    schema version. This version adds the index ``run_summary``'s latest note reads."""
    conn.execute("CREATE INDEX IF NOT EXISTS notes_run ON notes(run_id, wall)")


def _to_v10(conn: sqlite3.Connection) -> None:
    """v10: runs whose worker reports through a journal (runs/<id>/journal.jsonl), and how far it is ingested:
    ``seq`` the last record applied, ``offset`` the byte just after it (runsdb/journal_ingest.py)."""
    conn.execute("CREATE TABLE IF NOT EXISTS journals (run_id INTEGER PRIMARY KEY REFERENCES runs(id), "
                 "seq INTEGER NOT NULL DEFAULT 0, offset INTEGER NOT NULL DEFAULT 0, last_record REAL)")


def _to_v11(conn: sqlite3.Connection) -> None:
    """v11: where a running run is (``phase``, JSON): training since when (a resume's ETA is measured from there),
    or evaluating benchmark k of n with the images embedded (``engine.reporting.Reporter.progress``)."""
    conn.execute("ALTER TABLE runs ADD COLUMN phase TEXT")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_to_v1, _to_v2, _to_v3, _to_v4, _to_v5, _to_v6, _to_v7,
                                                          _to_v8, _to_v9, _to_v10, _to_v11]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, from_version: int) -> None:
    """Apply migrations ``from_version + 1 .. SCHEMA_VERSION`` (inside the caller's transaction), then install
    the current views (``runsdb.views``) over the upgraded tables."""
    from lrfr_tui.runsdb import views  # views -> result_keys -> filters: kept off the import of the schema

    for version in range(from_version, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
    views.install(conn)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
