"""runs.db: every run, its resolved config, metric time series and benchmark results, in SQLite.

WAL mode and a busy timeout let a training process write while the TUI and the query commands
read; metric points are buffered and written in batches so training never waits on the disk.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import LrfrError

SCHEMA_VERSION = 1
DEFAULT_DB = "runs.db"
STATUSES = ("queued", "running", "finished", "failed", "killed")

SCHEMA = """
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


class StoreError(LrfrError):
    """runs.db is missing, locked, corrupt or from a newer lrfr."""


def db_path(explicit: str | Path | None = None) -> Path:
    """``--db`` wins, then ``$LRFR_DB``, then ./runs.db."""
    return Path(explicit or os.environ.get("LRFR_DB") or DEFAULT_DB)


def runs_root(db: Path) -> Path:
    """Run directories live in ``runs/`` beside the database."""
    return db.resolve().parent / "runs"


def _encode(value: float) -> tuple[float | None, str | None]:
    value = float(value)
    if math.isnan(value):
        return None, "nan"
    if math.isinf(value):
        return None, "inf" if value > 0 else "-inf"
    return value, None


def decode(value: float | None, special: str | None) -> float:
    return float(special) if special else float(value) if value is not None else float("nan")


def git_commit() -> str | None:
    """The lrfr source tree's commit, if it is a git checkout (an installed wheel has none)."""
    src = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass
class Run:
    id: int
    name: str
    preset: str | None
    status: str
    created: float
    started: float | None
    ended: float | None
    exit_code: int | None
    failure_reason: str | None
    host: str | None
    git_commit: str | None
    command: str | None
    step: int
    total_steps: int | None
    run_dir: str | None
    config: dict[str, Any]
    parent_id: int | None = None
    pid: int | None = None
    heartbeat: float | None = None


class Store:
    """One connection to runs.db. Cheap to open; open one per process (and per thread)."""

    def __init__(self, path: str | Path, timeout_s: float = 30.0, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"no runs database at {self.path} (start a run with `lrfr run` or pass --db)")
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self._init_schema()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"cannot open runs database {self.path}: {exc}") from None

    def _init_schema(self) -> None:
        version = self._schema_version()
        if version is None:
            with self.transaction():
                for statement in _statements(SCHEMA):
                    self.conn.execute(statement)
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer lrfr (schema {version}, this lrfr "
                             f"knows {SCHEMA_VERSION}); upgrade lrfr to open it")

    def _schema_version(self) -> int | None:
        has_meta = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not has_meta:
            return None
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else None

    def transaction(self):
        return _Transaction(self.conn)

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------ runs

    def create_run(self, config: dict[str, Any], flat_params: dict[str, Any], command: str,
                   status: str = "queued", parent_id: int | None = None, launcher: str = "local") -> int:
        now = time.time()
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO runs (name, preset, status, created, host, git_commit, command, launcher, "
                "parent_id, config) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (config.get("name") or config.get("preset") or "run", config.get("preset") or None, status, now,
                 socket.gethostname(), git_commit(), command, launcher, parent_id,
                 json.dumps(config, sort_keys=True)),
            )
            run_id = int(cur.lastrowid)
            self.conn.executemany("INSERT INTO params VALUES (?, ?, ?)",
                                  [(run_id, k, json.dumps(v)) for k, v in flat_params.items()])
        return run_id

    def get_run(self, run_id: int) -> Run:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run with id {run_id} in {self.path}")
        return Run(
            id=row["id"], name=row["name"], preset=row["preset"], status=row["status"], created=row["created"],
            started=row["started"], ended=row["ended"], exit_code=row["exit_code"],
            failure_reason=row["failure_reason"], host=row["host"], git_commit=row["git_commit"],
            command=row["command"], step=row["step"], total_steps=row["total_steps"], run_dir=row["run_dir"],
            config=json.loads(row["config"]), parent_id=row["parent_id"], pid=row["pid"],
            heartbeat=row["heartbeat"],
        )

    def list_runs(self, include_deleted: bool = False) -> list[Run]:
        where = "" if include_deleted else "WHERE deleted = 0"
        ids = [r[0] for r in self.conn.execute(f"SELECT id FROM runs {where} ORDER BY id")]
        return [self.get_run(i) for i in ids]

    def mark_started(self, run_id: int, run_dir: Path, pid: int) -> None:
        now = time.time()
        self.conn.execute(
            "UPDATE runs SET status='running', started=COALESCE(started, ?), run_dir=?, pid=?, heartbeat=?, "
            "ended=NULL, exit_code=NULL, failure_reason=NULL WHERE id=?",
            (now, str(run_dir), pid, now, run_id),
        )

    def mark_progress(self, run_id: int, step: int, total_steps: int | None = None) -> None:
        self.conn.execute(
            "UPDATE runs SET step=?, total_steps=COALESCE(?, total_steps), heartbeat=? WHERE id=?",
            (step, total_steps, time.time(), run_id),
        )

    def mark_ended(self, run_id: int, status: str, exit_code: int, reason: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status}")
        self.conn.execute(
            "UPDATE runs SET status=?, ended=?, exit_code=?, failure_reason=? WHERE id=?",
            (status, time.time(), exit_code, reason, run_id),
        )

    # ------------------------------------------------------------ series and results

    def add_metrics(self, run_id: int, points: Iterable[tuple[str, int, float, float]]) -> None:
        """``points``: (key, step, value, wall time). One transaction for the whole batch."""
        rows = [(run_id, key, step, *_encode(value), wall) for key, step, value, wall in points]
        if rows:
            with self.transaction():
                self.conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)", rows)

    def metric_series(self, run_id: int, key: str) -> list[tuple[int, float]]:
        rows = self.conn.execute(
            "SELECT step, value, special FROM metrics WHERE run_id=? AND key=? ORDER BY step", (run_id, key))
        return [(step, decode(value, special)) for step, value, special in rows]

    def metric_keys(self, run_id: int) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT key FROM metrics WHERE run_id=? ORDER BY key",
                                                (run_id,))]

    def add_results(self, run_id: int, rows: Iterable[tuple[str, str, str, int | None, float]]) -> None:
        now = time.time()
        with self.transaction():
            self.conn.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
                                  [(run_id, b, p, m, r, v, now) for b, p, m, r, v in rows])

    def results(self, run_id: int) -> list[dict[str, Any]]:
        """The latest value of each (benchmark, protocol, metric, resolution): a re-evaluation wins."""
        rows = self.conn.execute(
            "SELECT benchmark, protocol, metric, resolution, value FROM results WHERE rowid IN ("
            "  SELECT MAX(rowid) FROM results WHERE run_id=? "
            "  GROUP BY benchmark, protocol, metric, COALESCE(resolution, -1)) "
            "ORDER BY benchmark, protocol, metric, resolution DESC", (run_id,))
        return [dict(r) for r in rows]

    def add_event(self, run_id: int, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                          (run_id, kind, message, json.dumps(data or {}, default=str), time.time()))

    def add_artifact(self, run_id: int, kind: str, path: Path) -> None:
        self.conn.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?)",
                          (run_id, kind, str(path), time.time()))

    def artifacts(self, run_id: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT kind, path FROM artifacts WHERE run_id=?", (run_id,))]


def _statements(script: str) -> list[str]:
    """Split the schema script (no semicolons inside statements)."""
    return [s.strip() for s in script.split(";") if s.strip()]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front so a busy db waits, not fails mid-way."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
