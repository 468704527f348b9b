"""Apply run journals (``lrfr_tui/journal.py``) to runs.db: exactly once, in order, whenever asked.

A journaled run has a row in ``journals`` (made when the scheduler launches it) holding the seq of
the last record applied and the byte offset just after it. ``ingest`` reads the records after that
offset and, in one write transaction, applies those above the stored seq and stores the new seq and
offset - so a second ingest, a restarted scheduler, or two ingesters at once never apply a record
twice, and a scheduler that was down catches up from where it stopped. Every record moves the run's
heartbeat to the record's own time: a journaled run is as alive as its journal's last record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrfr_tui.journal import JOURNAL_FILE, Record, read_journal


@dataclass(frozen=True)
class Ingested:
    run_id: int
    applied: int  # records applied now
    seq: int  # the last record applied, ever
    problem: str | None = None  # why (part of) the journal was not applied


def register(store: Any, run_id: int) -> None:
    """Mark ``run_id`` journaled (kept as it is when the run already was: a resume continues the file)."""
    store.conn.execute("INSERT OR IGNORE INTO journals (run_id) VALUES (?)", (run_id,))


def is_journaled(store: Any, run_id: int) -> bool:
    return store.conn.execute("SELECT 1 FROM journals WHERE run_id=?", (run_id,)).fetchone() is not None


def journaled_running(store: Any) -> list[int]:
    """The journaled runs runs.db shows running: those whose journals may have new records."""
    return [r[0] for r in store.conn.execute(
        "SELECT j.run_id FROM journals j JOIN runs r ON r.id = j.run_id WHERE r.status = 'running' "
        "ORDER BY j.run_id")]


def position(store: Any, run_id: int) -> tuple[int, int] | None:
    row = store.conn.execute("SELECT seq, offset FROM journals WHERE run_id=?", (run_id,)).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def _as_writes(record: Record, run_uuid: str) -> list[list[Any]]:
    """The ``Store.apply_ops`` writes of one record; a journal opened by another run's worker raises."""
    name, *args = record.op
    if name != "open":
        return [record.op]
    uuid, host, pid = (list(args) + [None, None, None])[:3]
    if uuid != run_uuid:
        raise ValueError(f"its records are of run {uuid}, not this run ({run_uuid})")
    return [["event", "journal", f"worker on {host} (pid {pid}) reports through its journal",
             {"host": host, "pid": pid}, record.t]]


def ingest(store: Any, run_id: int) -> Ingested:
    """Apply what is new in run ``run_id``'s journal (nothing for a run that is not journaled)."""
    pos = position(store, run_id)
    if pos is None:
        return Ingested(run_id, 0, 0)
    seq, offset = pos
    row = store.conn.execute("SELECT run_dir, uuid FROM runs WHERE id=?", (run_id,)).fetchone()
    if row is None or not row[0]:
        return Ingested(run_id, 0, seq)
    path = Path(row[0]) / JOURNAL_FILE
    read = read_journal(path, offset, seq)  # outside the transaction: a slow filesystem holds no lock
    if not read.records and read.offset == offset:
        return Ingested(run_id, 0, seq)
    try:
        writes = [(record, _as_writes(record, row[1])) for record in read.records]
    except ValueError as exc:  # another run's journal in this run's directory: nothing of it is applied
        return Ingested(run_id, 0, seq, f"{path}: {exc}")
    with store.transaction():
        if position(store, run_id) != pos:
            return Ingested(run_id, 0, seq)  # another ingester got there first: the next pass goes on
        for record, ops in writes:
            store._apply_ops(run_id, ops, now=record.t)
        last = read.records[-1] if read.records else None
        store.conn.execute("UPDATE journals SET seq=?, offset=?, last_record=COALESCE(?, last_record) "
                           "WHERE run_id=?", (last.seq if last else seq, read.offset, last.t if last else None,
                                              run_id))
    return Ingested(run_id, len(writes), last.seq if last else seq)


def ingest_running(store: Any) -> list[Ingested]:
    """``ingest`` every journaled run that runs.db shows running (one scheduler pass)."""
    return [ingest(store, run_id) for run_id in journaled_running(store)]
