"""runs.db: every run, its resolved config, metric time series and benchmark results, in SQLite.

WAL mode and a busy timeout let a training process write while the TUI and the query commands
read; metric points are buffered and written in batches so training never waits on the disk.
``Store`` is the only writer of runs.db; each status change is one method, guarded by the
transition table in ``runsdb.states``.
"""

from __future__ import annotations

import base64
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lrfr_tui.runsdb.states as states
import lrfr_tui.runsdb.views as views
from engine.errors import LrfrError
from lrfr_tui.launchers.local import process_start_ticks
from lrfr_tui.runsdb.base import PENDING_FILE, StoreError, db_errors
from lrfr_tui.runsdb.codec import encode
from lrfr_tui.runsdb.migrations import SCHEMA_VERSION, migrate
from lrfr_tui.runsdb.run import Run, git_commit
from lrfr_tui.runsdb.states import ACTIVE_STATUSES, RESUMABLE_STATUSES, STATUSES
from lrfr_tui.runsdb.store_records import RecordsMixin

# Settling a dead run is a courtesy write of a reader: it gives up on a held lock after this long.
SETTLE_BUSY_TIMEOUT_MS = 1000


class Store(RecordsMixin):
    """One connection to runs.db. Cheap to open; open one per process (and per thread)."""

    def __init__(self, path: str | Path, timeout_s: float = 30.0, create: bool = True) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
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
        # Whoever opens runs.db sees a crashed run as ended, not "running" forever.
        self.settle_running()

    @classmethod
    def over(cls, conn: sqlite3.Connection, path: str | Path) -> Store:
        """A Store around a connection opened elsewhere (the TUI's long-lived reader)."""
        store = cls.__new__(cls)
        store.path, store.conn = Path(path), conn
        store.timeout_s = (conn.execute("PRAGMA busy_timeout").fetchone()[0] or 0) / 1000
        return store

    def _init_schema(self) -> None:
        version = self._schema_version()
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer lrfr (schema {version}, this lrfr "
                             f"knows {SCHEMA_VERSION}); upgrade lrfr to open it")
        if version != SCHEMA_VERSION:
            # One transaction: a failed upgrade leaves the old schema and every run as they were. The version
            # is read again under the write lock: a process that created or upgraded runs.db meanwhile (the
            # first `lrfr run` while a TUI looks) has done it, and doing it twice fails (duplicate column).
            with self.transaction():
                version = self._schema_version()
                if version != SCHEMA_VERSION:
                    migrate(self.conn, version or 0)
        else:
            self._refresh_views()

    def _refresh_views(self) -> None:
        """Re-create the stable views whose definition changed (a benchmark was declared since they were made).
        They are for other programs, never read by lrfr, so a held lock or a read-only file only postpones it
        to the next opener: one read of sqlite_master when nothing changed, never a wait on a writer."""
        if not views.stale(self.conn):
            return
        self.conn.execute(f"PRAGMA busy_timeout = {SETTLE_BUSY_TIMEOUT_MS}")
        try:
            with self.transaction():
                views.install(self.conn)  # re-reads sqlite_master under the lock: a concurrent opener did it first
        except sqlite3.OperationalError as exc:
            # Postponed: a writer holds the lock, or this file or its directory cannot be written. Anything
            # else (a view that does not compile) is a bug and fails the open, as it fails every new runs.db.
            if not any(word in str(exc) for word in ("locked", "busy", "readonly")):
                raise
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")

    def _schema_version(self) -> int | None:
        has_meta = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not has_meta:
            return None
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else None

    def transaction(self):
        return Transaction(self.conn)

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------ runs

    def create_run(self, config: dict[str, Any], flat_params: dict[str, Any], command: str,
                   status: str = "queued", parent_id: int | None = None, launcher: str | None = None,
                   group: str | None = None, pid: int | None = None) -> int:
        """Record a run. ``launcher`` defaults to the config's ``launch.launcher``; "foreground" and
        "eval" mark runs executed by the CLI process itself.

        A run the calling process executes itself is created ``running`` with its ``pid``, in the
        same statement: a queued row would be claimable by a scheduler while this process is still
        importing torch, and the run would train twice.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status}")
        if status == "running" and pid is None:
            raise ValueError("a run created running needs the pid of the process executing it")
        now = time.time()
        launch = config.get("launch", {})
        running = status == "running"
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO runs (name, preset, status, created, host, git_commit, command, launcher, "
                "parent_id, config, group_name, gpus_requested, queue_pos, uuid, pid, pid_start, heartbeat, "
                "started) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "  (SELECT COALESCE(MAX(queue_pos), 0) + 1 FROM runs), ?, ?, ?, ?, ?)",
                (config.get("name") or config.get("preset") or "run", config.get("preset") or None, status, now,
                 socket.gethostname(), git_commit(), command, launcher or launch.get("launcher", "local"),
                 parent_id, json.dumps(config, sort_keys=True), group, int(launch.get("gpus", 0)),
                 uuid.uuid4().hex, pid if running else None, process_start_ticks(pid) if running else None,
                 now if running else None, now if running else None),
            )
            run_id = int(cur.lastrowid)
            self.conn.executemany("INSERT INTO params VALUES (?, ?, ?)",
                                  [(run_id, k, json.dumps(v)) for k, v in flat_params.items()])
        return run_id

    def get_run(self, run_id: int, settle: bool = True) -> Run:
        """The run as stored - except that a ``running`` run whose process is gone is returned (and,
        when runs.db is writable, stored) as what it really is: the final state its worker left in
        ``pending.jsonl``, or ``failed`` with its log tail. ``settle=False`` reads the raw row."""
        run = self._read_run(run_id)
        if settle and run.status == "running":
            from lrfr_tui.liveness import presumed_dead

            reason = presumed_dead(run)
            if reason is not None:
                return self.settle_dead(run, reason)
        return run

    def _read_run(self, run_id: int) -> Run:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run with id {run_id} in {self.path}")
        return Run(
            id=row["id"], name=row["name"], preset=row["preset"], status=row["status"], created=row["created"],
            started=row["started"], ended=row["ended"], exit_code=row["exit_code"],
            failure_reason=row["failure_reason"], host=row["host"], git_commit=row["git_commit"],
            command=row["command"], step=row["step"], total_steps=row["total_steps"], run_dir=row["run_dir"],
            config=json.loads(row["config"]), parent_id=row["parent_id"], pid=row["pid"],
            heartbeat=row["heartbeat"], launcher=row["launcher"], job_id=row["job_id"],
            gpus=json.loads(row["gpus"]) if row["gpus"] else None, gpus_requested=row["gpus_requested"],
            group_name=row["group_name"], log_path=row["log_path"], queue_pos=row["queue_pos"],
            deleted=bool(row["deleted"]), uuid=row["uuid"], pid_start=row["pid_start"],
        )

    def settle_running(self) -> list[int]:
        """Settle every ``running`` run whose process is gone (see ``get_run``); their ids."""
        ids = [r[0] for r in self.conn.execute("SELECT id FROM runs WHERE status='running'")]
        return [i for i in ids if self.get_run(i).status != "running"]

    def settle_dead(self, run: Run, reason: str) -> Run:
        """Record the end of a run whose process is gone: what its worker could not write (its
        ``pending.jsonl``: metrics, results and the final status), else ``failed`` with ``reason``.
        If runs.db cannot be written now, the returned Run still shows that end; the next reader
        writes it."""
        from lrfr_tui.liveness import read_pending
        from lrfr_tui.runsdb import journal_ingest

        # A journaled worker's last word is in its journal: it comes before any presumption.
        try:
            journaled = journal_ingest.ingest(self, run.id).seq > 0
        except (sqlite3.Error, OSError):
            journaled = False
        if journaled and (current := self._read_run(run.id)).status != "running":
            return current
        pending_path = Path(run.run_dir) / PENDING_FILE if run.run_dir else None
        ops = read_pending(pending_path) if pending_path else []
        ended = next((op for op in reversed(ops) if op[0] == "ended"), None)
        self.conn.execute("DROP VIEW IF EXISTS temp.runs")  # write through to the real table
        self.conn.execute(f"PRAGMA busy_timeout = {SETTLE_BUSY_TIMEOUT_MS}")  # a reader must not hang on a lock
        try:
            with self.transaction():
                if ops:
                    self._apply_ops(run.id, ops)
                if ended is None:
                    allowed, starts = states.guard("fail_dead")
                    self.conn.execute(
                        "UPDATE runs SET status='failed', ended=?, exit_code=COALESCE(exit_code, 1), "
                        f"failure_reason=? WHERE id=? AND {allowed}", (time.time(), reason, run.id, *starts))
            if pending_path is not None and ops:
                pending_path.replace(pending_path.with_name(PENDING_FILE + ".applied"))
        except (sqlite3.Error, OSError):
            status, code, why = ended[1:4] if ended else ("failed", 1, reason)
            self._show_settled(run.id, status, code, why)
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
        return self._read_run(run.id)

    def _show_settled(self, run_id: int, status: str, code: int | None, reason: str | None) -> None:
        """runs.db refused the write (full disk, held lock): show the settled state to this
        connection's reads anyway. A TEMP view named ``runs`` shadows ``main.runs`` for this
        connection only (SQLite resolves unqualified names in temp first) and nothing is written to
        the database; the next reader that can write stores the state for everyone."""
        c = self.conn
        c.execute("PRAGMA temp_store = MEMORY")  # the temp schema must not need the full disk either
        c.execute("CREATE TEMP TABLE IF NOT EXISTS settled_runs "
                  "(id INTEGER PRIMARY KEY, status TEXT, exit_code INTEGER, failure_reason TEXT)")
        c.execute("INSERT OR REPLACE INTO temp.settled_runs VALUES (?, ?, ?, ?)", (run_id, status, code, reason))
        columns = [row[1] for row in c.execute("PRAGMA main.table_info(runs)")]
        settled = ("status", "exit_code", "failure_reason")
        select = ", ".join(f"COALESCE(s.{col}, r.{col}) AS {col}" if col in settled else f"r.{col} AS {col}"
                           for col in columns)
        c.execute(f"CREATE TEMP VIEW IF NOT EXISTS runs AS SELECT {select} "
                  "FROM main.runs r LEFT JOIN temp.settled_runs s ON s.id = r.id")

    def list_runs(self, include_deleted: bool = False) -> list[Run]:
        where = "" if include_deleted else "WHERE deleted = 0"
        ids = [r[0] for r in self.conn.execute(f"SELECT id FROM runs {where} ORDER BY id")]
        return [self.get_run(i) for i in ids]

    def mark_started(self, run_id: int, run_dir: Path, pid: int | None) -> None:
        """The worker is up. ``pid`` None keeps the pid the scheduler recorded (its process group)."""
        now = time.time()
        self.conn.execute(
            "UPDATE runs SET status='running', started=COALESCE(started, ?), run_dir=?, pid=COALESCE(?, pid), "
            "heartbeat=?, ended=NULL, exit_code=NULL, failure_reason=NULL WHERE id=?",
            (now, str(run_dir), pid, now, run_id),
        )

    def heartbeat(self, run_id: int) -> None:
        self.conn.execute("UPDATE runs SET heartbeat=? WHERE id=?", (time.time(), run_id))

    # ------------------------------------------------------------ the queue

    def runs_with_status(self, *statuses: str) -> list[Run]:
        marks = ",".join("?" * len(statuses))
        ids = [r[0] for r in self.conn.execute(
            f"SELECT id FROM runs WHERE status IN ({marks}) AND deleted=0 ORDER BY queue_pos, id", statuses)]
        return [self.get_run(i) for i in ids]

    def claim(self, run_id: int, scheduler: str, gpus: list[int], launcher: str, log_path: Path,
              run_dir: Path) -> bool:
        """queued -> running, atomically: False if another scheduler (or a kill) got there first."""
        allowed, starts = states.guard("claim")
        cur = self.conn.execute(
            "UPDATE runs SET status='running', scheduler=?, gpus=?, launcher=?, log_path=?, run_dir=?, "
            "heartbeat=?, started=COALESCE(started, ?), ended=NULL, exit_code=NULL, failure_reason=NULL "
            f"WHERE id=? AND {allowed}",
            (scheduler, json.dumps(gpus), launcher, str(log_path), str(run_dir), time.time(), time.time(), run_id,
             *starts),
        )
        return cur.rowcount == 1

    def set_handle(self, run_id: int, pid: int | None, job_id: str | None) -> None:
        self.conn.execute("UPDATE runs SET pid=?, pid_start=?, job_id=? WHERE id=?",
                          (pid, process_start_ticks(pid), job_id, run_id))

    def _check_resumable(self, run_id: int, claimed: bool) -> None:
        if not claimed:
            run = self.get_run(run_id)
            raise StoreError(f"run {run_id} is {run.status}; only killed or failed runs can be resumed"
                             + (" (another resume got there first)" if run.status in ACTIVE_STATUSES else ""))

    def claim_here(self, run_id: int, pid: int, from_statuses: Sequence[str] = RESUMABLE_STATUSES,
                   launcher: str = "foreground") -> bool:
        """``from_statuses`` -> running in process ``pid`` of this host, atomically: of two
        processes claiming one run (two `lrfr resume N`, a scheduler and a foreground run) exactly
        one gets True."""
        allowed, starts = states.guard("claim_here", tuple(from_statuses))
        now = time.time()
        cur = self.conn.execute(
            "UPDATE runs SET status='running', launcher=?, pid=?, pid_start=?, host=?, heartbeat=?, "
            "started=COALESCE(started, ?), gpus=NULL, job_id=NULL, ended=NULL, exit_code=NULL, "
            f"failure_reason=NULL WHERE id=? AND {allowed}",
            (launcher, pid, process_start_ticks(pid), socket.gethostname(), now, now, run_id, *starts))
        return cur.rowcount == 1

    def claim_for_resume(self, run_id: int, pid: int) -> None:
        """killed | failed -> running in this process (``lrfr resume``); the loser of two resumes
        started together gets a StoreError."""
        self.get_run(run_id)  # settles a dead run first, so a crashed foreground run is resumable
        self._check_resumable(run_id, self.claim_here(run_id, pid))

    def requeue(self, run_id: int) -> None:
        """killed | failed -> queued at the end of the queue, atomically (resume keeps its directory
        and checkpoint); a StoreError if the run is not resumable (or another resume won)."""
        self.get_run(run_id)
        allowed, starts = states.guard("requeue")
        cur = self.conn.execute(
            "UPDATE runs SET status='queued', ended=NULL, exit_code=NULL, failure_reason=NULL, pid=NULL, "
            "job_id=NULL, gpus=NULL, queue_pos=(SELECT COALESCE(MAX(queue_pos), 0) + 1 FROM runs) "
            f"WHERE id=? AND {allowed}", (run_id, *starts))
        self._check_resumable(run_id, cur.rowcount == 1)

    def move_in_queue(self, run_id: int, position: int) -> None:
        """Put a queued run at 1-based ``position`` among the queued runs."""
        queued = [r.id for r in self.runs_with_status("queued")]
        if run_id not in queued:
            raise StoreError(f"run {run_id} is not queued")
        queued.remove(run_id)
        queued.insert(max(0, min(position - 1, len(queued))), run_id)
        with self.transaction():
            self.conn.executemany("UPDATE runs SET queue_pos=? WHERE id=?",
                                  [(i + 1, rid) for i, rid in enumerate(queued)])

    def kill_queued(self, run_id: int) -> bool:
        """queued -> killed (a run that never started); False if it left the queue meanwhile."""
        allowed, starts = states.guard("kill_queued")
        cur = self.conn.execute(f"UPDATE runs SET status='killed', ended=? WHERE id=? AND {allowed}",
                                (time.time(), run_id, *starts))
        return cur.rowcount == 1

    def kill_forced(self, run_id: int, reason: str) -> bool:
        """running -> killed for a run stopped by SIGKILL: nothing else will write its status."""
        allowed, starts = states.guard("kill_forced")
        cur = self.conn.execute(f"UPDATE runs SET status='killed', ended=?, failure_reason=? WHERE id=? AND {allowed}",
                                (time.time(), reason, run_id, *starts))
        return cur.rowcount == 1

    # ------------------------------------------------------------ what users attach to runs

    @db_errors
    def set_tags(self, run_id: int, tags: Sequence[str], remove: bool = False) -> list[str]:
        """Add (or remove) tags; returns the run's tags afterwards."""
        clean = []
        for tag in tags:
            tag = tag.strip()
            if not tag or "," in tag:
                raise LrfrError(f"tag {tag!r} is not valid: tags are non-empty and have no commas")
            clean.append(tag)
        self._known(run_id)
        with self.transaction():
            if remove:
                self.conn.executemany("DELETE FROM tags WHERE run_id = ? AND tag = ?", [(run_id, t) for t in clean])
            else:
                self.conn.executemany("INSERT OR IGNORE INTO tags VALUES (?, ?)", [(run_id, t) for t in clean])
        return [t for (t,) in self.conn.execute("SELECT tag FROM tags WHERE run_id = ? ORDER BY tag", (run_id,))]

    @db_errors
    def add_note(self, run_id: int, text: str) -> None:
        if not text.strip():
            raise LrfrError("a note needs some text")
        self._known(run_id)
        with self.transaction():
            self.conn.execute("INSERT INTO notes VALUES (?, ?, ?)", (run_id, text, time.time()))

    @db_errors
    def set_deleted(self, run_ids: Sequence[int], deleted: bool = True, force: bool = False) -> list[int]:
        """Soft-delete (or restore) runs, all or none; a queued or running run needs ``force``.
        Returns the ids whose flag changed."""
        rows = [self._known(i) for i in run_ids]
        if deleted and not force:
            active = [r for r in rows if r["status"] in ACTIVE_STATUSES]
            if active:
                r = active[0]
                raise LrfrError(f"run {r['id']} is {r['status']}: stop it first, or pass --force to hide it anyway")
        changed = [r["id"] for r in rows if bool(r["deleted"]) != deleted]
        with self.transaction():
            self.conn.executemany("UPDATE runs SET deleted = ? WHERE id = ?", [(int(deleted), i) for i in changed])
        return changed

    def _known(self, run_id: int) -> sqlite3.Row:
        row = self.conn.execute("SELECT id, status, deleted FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id} in {self.path}")
        return row

    def fail_if_running(self, run_id: int, reason: str, exit_code: int = 1) -> bool:
        """Mark a run whose process vanished as failed - unless it reported an end meanwhile."""
        allowed, starts = states.guard("fail_dead")
        cur = self.conn.execute(
            f"UPDATE runs SET status='failed', ended=?, exit_code=?, failure_reason=? WHERE id=? AND {allowed}",
            (time.time(), exit_code, reason, run_id, *starts))
        return cur.rowcount == 1

    def mark_progress(self, run_id: int, step: int, total_steps: int | None = None) -> None:
        self.conn.execute(
            "UPDATE runs SET step=?, total_steps=COALESCE(?, total_steps), heartbeat=? WHERE id=?",
            (step, total_steps, time.time(), run_id),
        )

    def mark_ended(self, run_id: int, status: str, exit_code: int | None, reason: str | None = None) -> None:
        states.check_target("end", status)
        self.conn.execute(
            "UPDATE runs SET status=?, ended=?, exit_code=?, failure_reason=? WHERE id=?",
            (status, time.time(), exit_code, reason, run_id),
        )

    # ------------------------------------------------------------ series and results

    def add_metrics(self, run_id: int, points: Iterable[tuple[str, int, float, float]]) -> None:
        """``points``: (key, step, value, wall time). One transaction for the whole batch; a point
        at a (key, step) already stored replaces it (one point per step, whatever happened)."""
        rows = [(run_id, key, step, *encode(value), wall) for key, step, value, wall in points]
        if rows:
            with self.transaction():
                self.conn.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?, ?)", rows)

    def drop_metrics_after(self, run_id: int, step: int) -> None:
        """A resume restarts at its checkpoint's ``step``: the points an interrupted attempt logged
        after it are not part of the run's history and are trained (and logged) again."""
        self.conn.execute("DELETE FROM metrics WHERE run_id=? AND step>?", (run_id, step))

    # ------------------------------------------------------------ the writes of a running worker

    def apply_ops(self, run_id: int, ops: Sequence[Sequence[Any]]) -> None:
        """Apply a worker's writes (see ``lrfr_tui.worker.StoreWriter``) in one transaction."""
        with self.transaction():
            self._apply_ops(run_id, ops)

    def _apply_ops(self, run_id: int, ops: Sequence[Sequence[Any]], now: float | None = None) -> None:
        """``now``: when the writes were made (a journal record's time; default: this moment), which
        is what the run's heartbeat becomes."""
        now = time.time() if now is None else now
        for op, *args in ops:
            if op == "metrics":
                self.conn.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
                                      [(run_id, k, st, *encode(v), w) for k, st, v, w in args[0]])
            elif op == "progress":
                step, total = args
                self.conn.execute("UPDATE runs SET step=?, total_steps=COALESCE(?, total_steps), heartbeat=? "
                                  "WHERE id=?", (step, total, now, run_id))
            elif op == "phase":
                self.conn.execute("UPDATE runs SET phase=? WHERE id=?", (json.dumps(args[0], default=str), run_id))
            elif op == "heartbeat":
                self.conn.execute("UPDATE runs SET heartbeat=? WHERE id=? AND status='running'", (now, run_id))
            elif op == "event":
                kind, message, data, wall = args
                self.conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                                  (run_id, kind, message, json.dumps(data or {}, default=str), wall))
            elif op == "artifact":
                kind, path, wall = args
                self.conn.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?)", (run_id, kind, path, wall))
            elif op == "result":
                # 7 elements (a pending.jsonl of an older worker: source unknown) or 8 (with the source).
                benchmark, protocol, metric, resolution, value, wall, *rest = args
                self._insert_result(run_id, benchmark, protocol, metric, resolution, value, wall,
                                    rest[0] if rest else None)
            elif op == "outcomes":
                # bits travel base64-encoded: a worker's writes must survive pending.jsonl (JSON).
                benchmark, protocol, metric, resolution, n, bits_b64, wall, source = args
                self._insert_outcomes(run_id, benchmark, protocol, metric, resolution, int(n),
                                      base64.b64decode(bits_b64), wall, source)
            elif op == "truncate_after":
                self.drop_metrics_after(run_id, int(args[0]))
            elif op == "started":
                run_dir, pid = args
                self.conn.execute(
                    "UPDATE runs SET run_dir=?, pid=COALESCE(?, pid), heartbeat=? WHERE id=?",
                    (run_dir, pid, now, run_id))
            elif op == "ended":
                status, code, reason, wall = args
                states.check_target("end", status)
                self.conn.execute("UPDATE runs SET status=?, ended=?, exit_code=?, failure_reason=? WHERE id=?",
                                  (status, wall, code, reason, run_id))
            else:
                raise ValueError(f"unknown worker write {op!r}")


class Transaction:
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
