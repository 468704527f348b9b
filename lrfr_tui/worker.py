"""What a run executes: its config from runs.db -> engine training and evaluation -> runs.db.

``python -m lrfr_tui.worker --run ID [--db PATH]`` is what launchers start (directly, under
torchrun, or as a Slurm job); ``lrfr run`` calls ``execute_run`` in the foreground. Whatever
happens, the run row ends in a final state: finished, killed (after a checkpoint) or failed
with a reason.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import sqlite3
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.config import from_dict
from engine.errors import LrfrError, TrainingDiverged
from engine.reporting import MultiReporter, Reporter
from lrfr_tui.runsdb import PENDING_FILE, Store, StoreError, runs_root

EXIT_OK, EXIT_FAILED, EXIT_DIVERGED = 0, 1, 2  # 3 = killed after a checkpoint (engine.train.EXIT_INTERRUPTED)
# The run ended but runs.db refused its final writes for FINAL_WRITE_WAIT_S (locked, disk full):
# what it could not write is in runs/<id>/pending.jsonl, which the next reader of the run applies.
EXIT_STORE_UNAVAILABLE = 4
# Set by the launchers: the run was started by a scheduler, which tracks its process itself.
SCHEDULED_ENV = "LRFR_SCHEDULED"
HEARTBEAT_S = 15.0
FINAL_WRITE_WAIT_S = 120.0  # overridden by $LRFR_FINAL_WRITE_WAIT_S (the fault-injection tests)
CHECKPOINT_SYNC_S = 10.0  # how long a checkpoint waits for the metric points before it to be stored


def final_write_wait_s() -> float:
    return float(os.environ.get("LRFR_FINAL_WRITE_WAIT_S", FINAL_WRITE_WAIT_S))


class StoreWriter:
    """The one connection of a running worker to runs.db, in a thread of its own.

    Training never waits on the database: reports are queued here in order (``put``) and written
    by the thread every ``flush_every_s``, one transaction per batch, with a heartbeat every
    ``heartbeat_s``. A locked or full database only delays the writes - the queue is kept and
    retried - and ``close`` waits a bounded time for the last of them; what still could not be
    written is left in ``runs/<id>/pending.jsonl`` for the next reader of the run.
    """

    def __init__(self, db: Path, run_id: int, run_dir: Path, flush_every_s: float = 2.0,
                 heartbeat_s: float = HEARTBEAT_S, busy_timeout_s: float = 5.0) -> None:
        self.db, self.run_id, self.run_dir = Path(db), run_id, Path(run_dir)
        self.flush_every_s, self.heartbeat_s, self.busy_timeout_s = flush_every_s, heartbeat_s, busy_timeout_s
        self._ops: list[list[Any]] = []
        self._progress: list[Any] | None = None
        self._phase: list[Any] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._stop_trying = False  # close() gave up waiting: the thread ends after this attempt
        self._idle = threading.Event()  # set when everything queued so far is written
        self._idle.set()
        self.last_error: str | None = None
        self.failed_writes = 0
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"runs.db-writer-{run_id}")

    def start(self) -> StoreWriter:
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
            if self._progress is not None and any(op is self._progress for op in ops):
                self._progress = None
            if self._phase is not None and any(op is self._phase for op in ops):
                self._phase = None
            if not self._ops and self._progress is None and self._phase is None:
                self._idle.set()

    def _loop(self) -> None:
        from lrfr_tui.runsdb import Store

        store = None
        next_beat = 0.0
        backoff = self.flush_every_s
        while True:
            self._wake.wait(backoff)
            self._wake.clear()
            closing = self._closing.is_set()
            ops, count = self._take()
            beat = time.monotonic() >= next_beat
            try:
                if store is None:
                    store = Store(self.db, timeout_s=self.busy_timeout_s, create=False)
                if beat:
                    ops.append(["heartbeat"])
                if ops:
                    store.apply_ops(self.run_id, ops)
                self._written(count, ops)
                if beat:
                    next_beat = time.monotonic() + self.heartbeat_s
                self.last_error, backoff = None, self.flush_every_s
            except (sqlite3.Error, LrfrError, OSError) as exc:
                # Locked for longer than the busy timeout, disk full, file gone: keep everything
                # and try again, less often while it lasts. Training goes on meanwhile.
                self.failed_writes += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                backoff = min(max(backoff * 2, 0.5), 10.0)
                if store is not None:
                    store.close()
                    store = None
            if closing and (self._idle.is_set() or self._stop_trying):
                break
        if store is not None:
            store.close()

    def close(self, wait_s: float | None = None) -> bool:
        """Write what is queued, waiting at most ``wait_s`` (default: FINAL_WRITE_WAIT_S); True if
        all of it reached runs.db. Otherwise the rest goes to ``pending.jsonl`` (False)."""
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
        self._thread.join(self.busy_timeout_s + 5)
        if self._idle.is_set():
            return True
        self._leave_pending()
        return False

    def _leave_pending(self) -> None:
        ops, _ = self._take()
        path = self.run_dir / PENDING_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as fh:
                for op in ops:
                    fh.write(json.dumps(op, default=str) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:  # the run directory is on the full disk too: nothing more to do
            self.last_error = f"{self.last_error}; and {path} could not be written: {exc}"


class StoreReporter(Reporter):
    """Engine reports -> the run's StoreWriter (runs.db), in the order they happen."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer
        self.run_id = writer.run_id
        self.total_steps: int | None = None
        self.step = 0
        # benchmark (result name) -> the data its results measure, from the engine's data_source events
        self.sources: dict[str, dict[str, Any]] = {}

    def start(self, total_steps: int, start_step: int) -> None:
        self.total_steps = total_steps
        self.step = start_step
        # A resume restarts at its checkpoint: what an interrupted attempt logged after it goes.
        self.writer.put("truncate_after", start_step)
        self.writer.progress(start_step, total_steps)
        # This attempt's start: a resumed run's step rate (its ETA) is measured from here, not across the pause.
        self.writer.phase({"phase": "train", "since": time.time(), "start_step": start_step})

    def progress(self, phase: str, **fields: Any) -> None:
        self.writer.phase({"phase": phase, "wall": time.time(), **fields})

    def metrics(self, step: int, values: dict[str, float]) -> None:
        now = time.time()
        self.step = step
        self.writer.put("metrics", [[key, step, float(value), now] for key, value in values.items()])
        self.writer.progress(step, self.total_steps)

    def flush(self) -> None:
        self.writer.flush_now()

    def event(self, kind: str, message: str, **fields: Any) -> None:
        if kind == "data_source" and isinstance(fields.get("source"), dict) and fields.get("benchmark"):
            self.sources[str(fields["benchmark"])] = dict(fields["source"])
        checkpoint = kind == "checkpoint" and isinstance(fields.get("step"), int)
        if checkpoint:
            # Progress is the checkpoint's step too: metrics are only logged every log_every steps.
            self.step = max(self.step, fields["step"])
            self.writer.progress(self.step, self.total_steps)
        self.writer.put("event", kind, message, fields, time.time())
        if checkpoint and self.writer.last_error is None:
            # Bounded, and skipped while runs.db refuses writes: a held lock never stalls training.
            self.writer.sync(CHECKPOINT_SYNC_S)

    def artifact(self, kind: str, path: Path) -> None:
        self.writer.put("artifact", kind, str(path), time.time())

    def result(self, benchmark: str, protocol: str, metric: str, resolution: int | None, value: float) -> None:
        self.writer.put("result", benchmark, protocol, metric, resolution, float(value), time.time(),
                        self.sources.get(benchmark))

    def outcomes(self, benchmark: str, protocol: str, metric: str, resolution: int | None, correct) -> None:
        from lrfr_tui.runsdb.codec import pack_outcomes

        n, bits = pack_outcomes(correct)
        self.writer.put("outcomes", benchmark, protocol, metric, resolution, n,
                        base64.b64encode(bits).decode("ascii"), time.time(), self.sources.get(benchmark))


class LogReporter(Reporter):
    """Human-readable lines appended to ``runs/<id>/train.log``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = path.open("a", buffering=1)

    def _line(self, text: str) -> None:
        # The log is for people; a full disk must not stop the training (runs.db holds the record).
        with contextlib.suppress(OSError, ValueError):
            self.fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def start(self, total_steps: int, start_step: int) -> None:
        self._line(f"training steps {start_step} -> {total_steps}")

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._line(f"step {step} " + " ".join(f"{k}={v:.5g}" for k, v in values.items()))

    def event(self, kind: str, message: str, **fields: Any) -> None:
        self._line(f"[{kind}] {message}")

    def result(self, benchmark: str, protocol: str, metric: str, resolution: int | None, value: float) -> None:
        self._line(f"result {benchmark}/{protocol} {metric} @ {resolution}: {value:.6g}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()


class StopRequested(Exception):
    """SIGTERM/SIGINT outside the training loop (while it sets up, or during evaluation)."""


@contextmanager
def interrupt_on_stop_signals():
    """Outside the training loop (which checkpoints first) a stop request ends the run at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise StopRequested(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


IDENTITY_FILE = "run.json"


def claim_run_dir(run_dir: Path, run: Any, db: Path) -> None:
    """Mark ``run_dir`` as run ``run``'s (its uuid in run.json); refuse one that holds another run's."""
    marker = run_dir / IDENTITY_FILE
    try:
        owner = json.loads(marker.read_text()).get("run_uuid")
    except FileNotFoundError:
        owner = None
    except (OSError, ValueError, AttributeError):
        owner = "unreadable"
    if owner is not None and owner != run.uuid:
        raise LrfrError(f"{run_dir} holds the files of another run ({marker}: {owner}), left from another "
                        f"runs.db or run; move it away (or use a --db in another directory) - it is never reused")
    if owner is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"run_uuid": run.uuid, "run_id": run.id, "db": str(Path(db).resolve())}) + "\n")


def check_checkpoint_resumable(db: Path, run: Any) -> None:
    """Before a resume changes anything: the run's checkpoint (if any) must be a checkpoint of this
    run that fits its config; otherwise one clear LrfrError and the run stays as it was."""
    from engine import checkpoint as ckpt

    last = runs_root(db) / str(run.id) / ckpt.LAST
    if last.exists():
        ckpt.check_belongs(ckpt.load(last), last, run.uuid, run.config)


def _read_run(db: Path, run_id: int) -> Any:
    store = Store(db, create=False)
    try:
        return store.get_run(run_id, settle=False)
    finally:
        store.close()


def _take_run(db: Path, run_id: int, scheduled: bool) -> Any:
    """The run this process is to execute. A scheduler claimed it already (``scheduled``); a
    foreground command created it running, or claimed it; a direct caller claims a queued one."""
    store = Store(db)
    try:
        run = store.get_run(run_id, settle=False)
        if run.status == "queued" and not scheduled:
            if not store.claim_here(run_id, os.getpid(), from_statuses=("queued",)):
                raise StoreError(f"run {run_id} was started by another process")
            run = store.get_run(run_id, settle=False)
        if run.status != "running":
            raise StoreError(f"run {run_id} is {run.status}, not claimed for this process")
        return run
    finally:
        store.close()


class RunSession:
    """Everything a main-rank worker writes about its run: runs.db (through the StoreWriter), the
    run's train.log and an optional extra reporter (the CLI's progress bar)."""

    def __init__(self, db: Path, run: Any, run_dir: Path, extra: Reporter | None, log_name: str) -> None:
        self.run_id = run.id
        self.writer = StoreWriter(db, run.id, run_dir).start()
        self.log = LogReporter(run_dir / log_name)
        self.reporter = MultiReporter(StoreReporter(self.writer), self.log, extra)
        self.writer.put("artifact", "log", str(run_dir / log_name), time.time())

    def finish(self, status: str, code: int, reason: str | None = None) -> int:
        """Record the final state; EXIT_STORE_UNAVAILABLE if runs.db refused it (see pending.jsonl)."""
        self.reporter.event("status", f"run {self.run_id} {status}" + (f": {reason}" if reason else ""))
        self.writer.put("ended", status, code, reason, time.time())
        written = self.writer.close()
        if not written:
            self.log._line(f"runs.db could not be written ({self.writer.last_error}); the final state is in "
                           f"{self.writer.run_dir / PENDING_FILE}")
            print(f"lrfr: error: run {self.run_id} ended {status}, but runs.db could not be written "
                  f"({self.writer.last_error}); {self.writer.run_dir / PENDING_FILE} keeps what is missing and "
                  f"the next command that reads the run records it", file=sys.stderr)
        self.log.close()
        return code if written else EXIT_STORE_UNAVAILABLE


def execute_run(db: Path, run_id: int, extra: Reporter | None = None, stop=None) -> int:
    """Train and evaluate run ``run_id``; returns the process exit code. Never leaves it 'running'."""
    from engine.evaluate import run_benchmarks
    from engine.train import EXIT_INTERRUPTED, StopFlag, TrainingInterrupted, dist_env, train

    scheduled = bool(os.environ.get(SCHEDULED_ENV))
    main_rank = dist_env().is_main
    run = _take_run(db, run_id, scheduled) if main_rank else _read_run(db, run_id)
    run_dir = runs_root(db) / str(run_id)
    stop = stop if stop is not None else StopFlag()
    if not main_rank:  # other DDP ranks train; rank 0 reports and checkpoints
        try:
            train(from_dict(run.config), run_dir, Reporter(), resume=True, stop=stop, run_uuid=run.uuid)
        except TrainingInterrupted:
            return EXIT_INTERRUPTED  # all ranks stopped at the same step; rank 0 wrote the checkpoint
        return EXIT_OK
    session = RunSession(db, run, run_dir, extra, "train.log")
    session.writer.put("started", str(run_dir), None if scheduled else os.getpid())
    result = None
    try:
        with interrupt_on_stop_signals():
            claim_run_dir(run_dir, run, db)
            cfg = from_dict(run.config)
            result = train(cfg, run_dir, session.reporter, resume=True, stop=stop, run_uuid=run.uuid)
            run_benchmarks(result.backbone, cfg, result.device, session.reporter, run_dir)
        return session.finish("finished", EXIT_OK)
    except TrainingInterrupted as exc:
        return session.finish("killed", EXIT_INTERRUPTED, str(exc))
    except StopRequested as exc:
        where = (f"during evaluation; the trained weights are in {result.checkpoint}: resume to evaluate them"
                 if result is not None else "before training began")
        return session.finish("killed", EXIT_INTERRUPTED, f"stopped ({exc}) {where}")
    except TrainingDiverged as exc:
        return session.finish("failed", EXIT_DIVERGED, str(exc))
    except LrfrError as exc:
        return session.finish("failed", EXIT_FAILED, str(exc))
    except OSError as exc:  # a full disk, a vanished directory: the user's environment, not a bug
        return session.finish("failed", EXIT_FAILED, f"{type(exc).__name__}: {exc}")
    except BaseException as exc:  # a bug or an OOM: record it, keep the traceback in the log
        session.log._line(traceback.format_exc())
        session.finish("failed", EXIT_FAILED, f"{type(exc).__name__}: {exc}")
        raise


def evaluate_into_run(db: Path, run_id: int, model, cfg, device, extra: Reporter | None = None,
                      finish_run: bool = False) -> int:
    """Evaluate ``model`` on ``cfg.eval.benchmarks`` and store the results against run ``run_id``.

    ``finish_run``: the run is an evaluation-only run that this call owns (created running by the
    caller; it ends finished, killed or failed); otherwise the run keeps its status and only gains
    result rows.
    """
    from engine.evaluate import run_benchmarks

    run = _read_run(db, run_id)
    run_dir = runs_root(db) / str(run_id)
    session = RunSession(db, run, run_dir, extra, "eval.log")
    if finish_run:
        session.writer.put("started", str(run_dir), os.getpid())
    code, status, reason = EXIT_OK, "finished", None
    try:
        with interrupt_on_stop_signals():
            run_benchmarks(model, cfg, device, session.reporter, run_dir)
    except StopRequested as exc:
        code, status, reason = 3, "killed", f"evaluation stopped ({exc})"
    except (LrfrError, OSError) as exc:
        code, status, reason = EXIT_FAILED, "failed", str(exc)
        session.reporter.event("status", f"evaluation failed: {exc}")
    except BaseException as exc:
        session.log._line(traceback.format_exc())
        code, status, reason = EXIT_FAILED, "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if finish_run:
            code = session.finish(status, code, reason)
        else:
            session.writer.close()
            session.log.close()
    if reason:
        raise LrfrError(reason)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrfr_tui.worker", description=__doc__)
    # --run-id, not --run: under torchrun, "--run" is taken for an abbreviation of its --run-path.
    parser.add_argument("--run-id", "--run", dest="run", type=int, required=True, help="run id in runs.db")
    parser.add_argument("--db", default=None, help="runs database (default $LRFR_DB or ./runs.db)")
    args = parser.parse_args(argv)
    from lrfr_tui.runsdb import db_path

    try:
        return execute_run(db_path(args.db), args.run)
    except LrfrError as exc:
        print(f"lrfr worker: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
