"""The run journal: how a worker that is not on runs.db's host reports its run.

SQLite's WAL mode does not work over a network filesystem (its shared-memory index cannot be shared
between hosts), so a worker on a compute node never opens runs.db. It appends what it would have
written (the same writes as ``StoreWriter``'s: status, metric batches, events, artifacts, results,
outcomes, heartbeats) to ``runs/<id>/journal.jsonl``, which only it writes; the scheduler on the
database's host reads the journal and applies it to runs.db (``runsdb/journal_ingest.py``).

Format: one JSON object per line, ``{"seq": N, "t": WALL_TIME, "op": [NAME, ...]}``. ``seq`` goes up
by one per record over the run's whole life (a resume or a requeued job appends to the same file and
continues the count); ``op`` is a ``Store.apply_ops`` write, or ``["open", run_uuid, host, pid]``,
written first by every worker that opens the journal. Each flush appends whole lines with one
``write`` and then ``fsync``s. A reader takes only lines that end in a newline, so a line being
written, or torn by a crash, is never read; the next writer of the run cuts a torn tail off before
it appends. What the worker needs to start (its id, uuid and config) is in ``runs/<id>/run_spec.json``,
written by the scheduler when it launches the run.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import LrfrError
from lrfr_tui.run_writer import HEARTBEAT_S, RunWriter

JOURNAL_FILE = "journal.jsonl"
SPEC_FILE = "run_spec.json"
TAIL_BYTES = 1 << 20  # how far back a new writer looks for the last complete record


def journaled(launch: Any) -> bool:
    """Does a run with this ``launch`` config report through the journal? ``auto``: when it runs on Slurm."""
    mode = getattr(launch, "journal", "auto")
    return mode == "on" or (mode == "auto" and getattr(launch, "launcher", "local") == "slurm")


# ---------------------------------------------------------------- the launch spec


@dataclass(frozen=True)
class RunSpec:
    """What a journaled worker knows of its run without runs.db."""

    id: int
    uuid: str
    config: dict[str, Any]
    db: str  # runs.db on the scheduler's host: recorded in run.json, never opened


def write_spec(run_dir: Path, run_id: int, run_uuid: str, config: dict[str, Any], db: Path) -> Path:
    """Write ``run_spec.json`` atomically (the scheduler, before it launches a journaled worker)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / SPEC_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"run_id": run_id, "run_uuid": run_uuid, "config": config, "db": str(db)},
                              sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_spec(run_dir: Path, run_id: int) -> RunSpec:
    path = Path(run_dir) / SPEC_FILE
    try:
        data = json.loads(path.read_text())
        spec = RunSpec(int(data["run_id"]), str(data["run_uuid"]), dict(data["config"]), str(data.get("db", "")))
    except FileNotFoundError:
        raise LrfrError(f"{path} does not exist: a journaled worker is started by a scheduler, which writes it") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LrfrError(f"{path} cannot be read: {exc}") from None
    if spec.id != run_id:
        raise LrfrError(f"{path} describes run {spec.id}, not run {run_id}")
    return spec


def forbid_databases() -> None:
    """From now on this process cannot open an SQLite database (a journaled worker must never open
    runs.db over a network filesystem; this makes a slip an error instead of a corruption)."""

    def hook(event: str, args: tuple) -> None:
        if event == "sqlite3.connect":
            raise LrfrError(f"a journaled worker does not open databases (tried {args[0] if args else '?'})")

    sys.addaudithook(hook)


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class Record:
    seq: int
    t: float
    op: list[Any]


@dataclass(frozen=True)
class JournalRead:
    records: list[Record]  # complete records with seq > the caller's, in file order
    offset: int  # byte just after the last complete line read (where the next read starts)
    bad_lines: int  # complete lines that are not records (skipped)


def read_journal(path: Path, offset: int = 0, after_seq: int = 0) -> JournalRead:
    """The complete records of ``path`` from byte ``offset`` whose seq is above ``after_seq``.

    A last line without its newline (being written, or torn by a crash) is left for a later read. A
    file shorter than ``offset`` was replaced: it is read from the start (``after_seq`` still applies).
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < offset:
                offset = 0
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return JournalRead([], offset, 0)
    end = data.rfind(b"\n") + 1  # 0 when no complete line yet
    records, bad = [], 0
    for line in data[:end].splitlines():
        record = _parse(line)
        if record is None:
            bad += 1 if line.strip() else 0
        elif record.seq > after_seq:
            records.append(record)
    return JournalRead(records, offset + end, bad)


def _parse(line: bytes) -> Record | None:
    try:
        obj = json.loads(line)
        return Record(int(obj["seq"]), float(obj["t"]), list(obj["op"]))
    except (ValueError, KeyError, TypeError):
        return None


def last_complete(path: Path) -> tuple[int, int]:
    """(seq of the last complete record, byte length of the file up to the end of its last complete line)."""
    try:
        size = path.stat().st_size
        start = max(0, size - TAIL_BYTES)
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return 0, 0
    end = data.rfind(b"\n") + 1
    for line in reversed(data[:end].splitlines()):
        record = _parse(line)
        if record is not None:
            return record.seq, start + end
    if start == 0:
        return 0, end
    whole = read_journal(path)  # no record in the tail: read it all
    return (whole.records[-1].seq if whole.records else 0), whole.offset


# ---------------------------------------------------------------- writing


class JournalWriter(RunWriter):
    """The ``RunWriter`` of a worker that must not open runs.db: its writes go to the run's journal."""

    target = "the run journal"
    retry_errors = (OSError,)

    def __init__(self, run_dir: Path, run_id: int, run_uuid: str, flush_every_s: float = 2.0,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        super().__init__(run_id, run_dir, flush_every_s, heartbeat_s)
        self.run_uuid = run_uuid
        self.path = self.run_dir / JOURNAL_FILE
        self._fd: int | None = None
        self._seq = 0
        self._size = 0  # bytes of complete records in the file
        self._opened = False

    def _open(self) -> int:
        """Open for appending, after cutting a torn last line off (a crashed writer's)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            self._seq, self._size = last_complete(self.path)
            if os.fstat(fd).st_size != self._size:
                os.ftruncate(fd, self._size)
            os.lseek(fd, self._size, os.SEEK_SET)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _write(self, ops: list[list[Any]]) -> None:
        if self._fd is None:
            self._fd = self._open()
        if not self._opened:
            ops = [["open", self.run_uuid, socket.gethostname(), os.getpid()], *ops]
        now = time.time()
        lines = []
        for i, op in enumerate(ops, start=1):
            lines.append(json.dumps({"seq": self._seq + i, "t": now, "op": op}, default=str,
                                    separators=(",", ":")))
        data = ("\n".join(lines) + "\n").encode()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError:
            # A partial write (full disk) must not leave half a record before the retry's lines.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            raise
        self._seq += len(ops)
        self._size += len(data)
        self._opened = True

    def _reset(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    _release = _reset

    def rest_location(self) -> str:
        return f"{self.path} (its last writes could not be appended)"
