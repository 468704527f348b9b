"""The interface a running worker reports through, whatever holds the record.

Training never waits on storage: reports are queued here in order (``put``, plus a one-slot
``progress``) and written by a thread of their own every ``flush_every_s``, with a heartbeat every
``heartbeat_s``. A write that fails (a locked or full database, a full disk) keeps the queue and is
retried, less often while it lasts; ``close`` waits a bounded time for the rest.

Two writers implement it: ``lrfr_tui.worker.StoreWriter`` (runs.db, on the database's host) and
``lrfr_tui.journal.JournalWriter`` (runs/<id>/journal.jsonl, for a worker that must not open runs.db).
The worker and the reporters use only what is defined here, so they never know which one they have.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

HEARTBEAT_S = 15.0
FINAL_WRITE_WAIT_S = 120.0  # overridden by $LRFR_FINAL_WRITE_WAIT_S (the fault-injection tests)


def final_write_wait_s() -> float:
    return float(os.environ.get("LRFR_FINAL_WRITE_WAIT_S", FINAL_WRITE_WAIT_S))


class RunWriter:
    """A queue of a run's writes and the thread that writes them (subclasses say where, in ``_write``)."""

    # Where the writes go, for messages ("runs.db", "the run journal").
    target = "storage"
    # What a failed write raises, to be retried (anything else is a bug and ends the thread's attempt).
    retry_errors: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, run_id: int, run_dir: Path, flush_every_s: float = 2.0,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.run_id, self.run_dir = run_id, Path(run_dir)
        self.flush_every_s, self.heartbeat_s = flush_every_s, heartbeat_s
        self._ops: list[list[Any]] = []
        self._progress: list[Any] | None = None
        self._phase: list[Any] | None = None  # where the run is (training since, evaluating k of n): a slot too
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._stop_trying = False  # close() gave up waiting: the thread ends after this attempt
        self._idle = threading.Event()  # set when everything queued so far is written
        self._idle.set()
        self.last_error: str | None = None
        self.failed_writes = 0
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"{self.target}-writer-{run_id}")

    # ------------------------------------------------------------ what subclasses provide

    def _write(self, ops: list[list[Any]]) -> None:
        """Write ``ops`` durably, all or nothing; raise one of ``retry_errors`` to be retried."""
        raise NotImplementedError

    def _reset(self) -> None:
        """After a failed write: drop whatever connection or handle the next attempt must reopen."""

    def _release(self) -> None:
        """The thread ends: close what ``_write`` opened."""

    def _leave_rest(self, ops: list[list[Any]]) -> None:
        """``close`` gave up: put ``ops`` where the next reader of the run finds them (if anywhere)."""

    def rest_location(self) -> str:
        """Where ``_leave_rest`` put what could not be written, for messages."""
        return "nowhere"

    # ------------------------------------------------------------ the queue

    def start(self) -> RunWriter:
        self._thread.start()
        return self

    def put(self, *op: Any) -> None:
        with self._lock:
            self._ops.append(list(op))
            self._idle.clear()

    def progress(self, step: int, total_steps: int | None) -> None:
        with self._lock:  # only the latest progress matters: a slot, not a queue entry
            self._progress = ["progress", step, total_steps]
            self._idle.clear()

    def phase(self, phase: dict[str, Any]) -> None:
        """Where the run is now (training since, evaluation benchmark k of n ...): a slot like progress."""
        with self._lock:
            self._phase = ["phase", phase]
            self._idle.clear()

    def flush_now(self) -> None:
        self._wake.set()

    def sync(self, timeout_s: float) -> bool:
        """Write what is queued now, waiting at most ``timeout_s``: a checkpoint waits for the points
        before it, or a kill -9 right after it would lose them (a resume never logs them again)."""
        self._wake.set()
        return self._idle.wait(timeout_s)

    def _take(self) -> tuple[list[list[Any]], int]:
        with self._lock:
            ops = list(self._ops)
            ops += [slot for slot in (self._progress, self._phase) if slot is not None]
            return ops, len(self._ops)

    def _written(self, count: int, ops: list[list[Any]]) -> None:
        with self._lock:
            del self._ops[:count]
            # Identity, not equality: a newer slot value equal to the written one must still be written.
            if self._progress is not None and any(op is self._progress for op in ops):
                self._progress = None
            if self._phase is not None and any(op is self._phase for op in ops):
                self._phase = None
            if not self._ops and self._progress is None and self._phase is None:
                self._idle.set()

    def _loop(self) -> None:
        next_beat = 0.0
        backoff = self.flush_every_s
        while True:
            self._wake.wait(backoff)
            self._wake.clear()
            closing = self._closing.is_set()
            ops, count = self._take()
            beat = time.monotonic() >= next_beat
            try:
                if beat:
                    ops.append(["heartbeat"])
                if ops:
                    self._write(ops)
                self._written(count, ops)
                if beat:
                    next_beat = time.monotonic() + self.heartbeat_s
                self.last_error, backoff = None, self.flush_every_s
            except self.retry_errors as exc:
                # Locked for longer than the busy timeout, disk full, file gone: keep everything
                # and try again, less often while it lasts. Training goes on meanwhile.
                self.failed_writes += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                backoff = min(max(backoff * 2, 0.5), 10.0)
                self._reset()
            if closing and (self._idle.is_set() or self._stop_trying):
                break
        self._release()

    def close(self, wait_s: float | None = None, join_s: float = 10.0) -> bool:
        """Write what is queued, waiting at most ``wait_s`` (default: FINAL_WRITE_WAIT_S); True if
        all of it was written. Otherwise the rest goes to ``_leave_rest`` (False)."""
        wait_s = final_write_wait_s() if wait_s is None else wait_s
        self._closing.set()
        self._wake.set()
        deadline = time.monotonic() + wait_s
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._wake.set()
            self._idle.wait(0.2)
            if self._idle.is_set():
                break
        self._stop_trying = True
        self._wake.set()
        self._thread.join(join_s)
        if self._idle.is_set():
            return True
        self._leave_rest(self._take()[0])
        return False
