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
import subprocess
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
from lrfr_tui.run_writer import HEARTBEAT_S, RunWriter
from lrfr_tui.runsdb import PENDING_FILE, Store, StoreError, runs_root

EXIT_OK, EXIT_FAILED, EXIT_DIVERGED = 0, 1, 2
EXIT_INTERRUPTED_CODE = 3  # killed after a checkpoint (engine.train.EXIT_INTERRUPTED, without importing torch)
# The run ended but runs.db refused its final writes for FINAL_WRITE_WAIT_S (locked, disk full):
# what it could not write is in runs/<id>/pending.jsonl, which the next reader of the run applies.
EXIT_STORE_UNAVAILABLE = 4
# Slurm's time limit was near: the run checkpointed and its job was requeued; it resumes there, still running.
EXIT_REQUEUED = 5
TIME_LIMIT_SIGNAL = "SIGUSR1"  # what the Slurm launcher asks for before the time limit of a requeueing job
# Set by the launchers: the run was started by a scheduler, which tracks its process itself.
SCHEDULED_ENV = "LRFR_SCHEDULED"
CHECKPOINT_SYNC_S = 10.0  # how long a checkpoint waits for the metric points before it to be stored


class StoreWriter(RunWriter):
    """The one connection of a running worker to runs.db (``RunWriter``: queued, one transaction per
    batch). A locked or full database only delays the writes; what still could not be written when
    the run ends is left in ``runs/<id>/pending.jsonl`` for the next reader of the run."""

    target = "runs.db"
    retry_errors = (sqlite3.Error, LrfrError, OSError)

    def __init__(self, db: Path, run_id: int, run_dir: Path, flush_every_s: float = 2.0,
                 heartbeat_s: float = HEARTBEAT_S, busy_timeout_s: float = 5.0) -> None:
        super().__init__(run_id, run_dir, flush_every_s, heartbeat_s)
        self.db, self.busy_timeout_s = Path(db), busy_timeout_s
        self._store: Store | None = None

    def _write(self, ops: list[list[Any]]) -> None:
        if self._store is None:
            self._store = Store(self.db, timeout_s=self.busy_timeout_s, create=False)
        self._store.apply_ops(self.run_id, ops)

    def _reset(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    _release = _reset

    def close(self, wait_s: float | None = None, join_s: float | None = None) -> bool:
        return super().close(wait_s, self.busy_timeout_s + 5 if join_s is None else join_s)

    def rest_location(self) -> str:
        return str(self.run_dir / PENDING_FILE)

    def _leave_rest(self, ops: list[list[Any]]) -> None:
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
    """Engine reports -> the run's writer (runs.db or the run journal), in the order they happen."""

    def __init__(self, writer: RunWriter) -> None:
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

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
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
    """Everything a main-rank worker writes about its run: runs.db or the run journal (its
    ``RunWriter``), the run's train.log and an optional extra reporter (the CLI's progress bar)."""

    def __init__(self, writer: RunWriter, run: Any, run_dir: Path, extra: Reporter | None, log_name: str) -> None:
        self.run_id = run.id
        self.writer = writer.start()
        self.log = LogReporter(run_dir / log_name)
        self.reporter = MultiReporter(StoreReporter(self.writer), self.log, extra)
        self.writer.put("artifact", "log", str(run_dir / log_name), time.time())

    def finish(self, status: str, code: int, reason: str | None = None) -> int:
        """Record the final state; EXIT_STORE_UNAVAILABLE if it could not be written (see pending.jsonl)."""
        self.reporter.event("status", f"run {self.run_id} {status}" + (f": {reason}" if reason else ""))
        self.writer.put("ended", status, code, reason, time.time())
        return self.close(status, code)

    def requeue(self, job_id: str, what: str) -> int:
        """Slurm's pre-timeout signal, after the checkpoint: requeue the job (the run stays running and
        resumes in it); if Slurm refuses, the run ends killed as on any stop."""
        self.reporter.event("requeue", f"{what}; Slurm job {job_id} is requeued and the run resumes in it",
                            job_id=job_id)
        self.writer.sync(CHECKPOINT_SYNC_S)
        # The requeue ends this job's processes (SIGTERM, then SIGKILL): the writes are closed first.
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            out = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
            problem = None if out.returncode == 0 else (out.stderr.strip() or f"scontrol exit {out.returncode}")
        except (OSError, subprocess.SubprocessError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            signal.signal(signal.SIGTERM, previous)
            return self.finish("killed", EXIT_INTERRUPTED_CODE, f"{what}; the job could not be requeued: {problem}")
        return self.close("running", EXIT_REQUEUED)

    def close(self, status: str, code: int) -> int:
        written = self.writer.close()
        if not written:
            where, rest = self.writer.target, self.writer.rest_location()
            self.log._line(f"{where} could not be written ({self.writer.last_error}); what is missing is in {rest}")
            print(f"lrfr: error: run {self.run_id} ended {status}, but {where} could not be written "
                  f"({self.writer.last_error}); {rest} keeps what is missing and "
                  f"the next command that reads the run records it", file=sys.stderr)
        self.log.close()
        return code if written else EXIT_STORE_UNAVAILABLE


def execute_run(db: Path, run_id: int, extra: Reporter | None = None, stop=None) -> int:
    """Train and evaluate run ``run_id`` of runs.db; returns the process exit code. Never leaves it 'running'."""
    from engine.train import dist_env

    scheduled = bool(os.environ.get(SCHEDULED_ENV))
    main_rank = dist_env().is_main
    run = _take_run(db, run_id, scheduled) if main_rank else _read_run(db, run_id)
    run_dir = runs_root(db) / str(run_id)
    if not main_rank:  # other DDP ranks train; rank 0 reports and checkpoints
        return _train_other_rank(run, run_dir, stop)
    session = RunSession(StoreWriter(db, run.id, run_dir), run, run_dir, extra, "train.log")
    session.writer.put("started", str(run_dir), None if scheduled else os.getpid())
    return _train_and_evaluate(session, run, run_dir, db, stop)


def execute_journaled(run_dir: Path, run_id: int, stop=None) -> int:
    """``execute_run`` for a worker that must not open runs.db: its run from ``run_spec.json``, its
    writes to ``journal.jsonl`` (both in ``run_dir``); the scheduler ingests them into runs.db."""
    from engine.train import dist_env
    from lrfr_tui.journal import JournalWriter, read_spec

    run_dir = Path(run_dir).absolute()
    run = read_spec(run_dir, run_id)
    if not dist_env().is_main:
        return _train_other_rank(run, run_dir, stop)
    claim_run_dir(run_dir, run, Path(run.db))  # before the journal: never append to another run's
    session = RunSession(JournalWriter(run_dir, run.id, run.uuid), run, run_dir, None, "train.log")
    session.writer.put("started", str(run_dir), None)
    return _train_and_evaluate(session, run, run_dir, Path(run.db), stop)


def _train_other_rank(run: Any, run_dir: Path, stop) -> int:
    """A DDP rank other than 0: it trains; rank 0 reports and checkpoints."""
    from engine.train import EXIT_INTERRUPTED, StopFlag, TrainingInterrupted, train

    try:
        train(from_dict(run.config), run_dir, Reporter(), resume=True, stop=stop or StopFlag(), run_uuid=run.uuid)
    except TrainingInterrupted:
        return EXIT_INTERRUPTED  # all ranks stopped at the same step; rank 0 wrote the checkpoint
    return EXIT_OK


def _requeue_job(run: Any, stop, reason: str) -> str | None:
    """The Slurm job to requeue: when the stop is the time-limit signal alone, in a job of a run that asks."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or not run.config.get("launch", {}).get("slurm_requeue"):
        return None
    reasons = {reason, *getattr(stop, "requests", ())}
    return job if TIME_LIMIT_SIGNAL in reasons and not reasons & {"SIGTERM", "SIGINT"} else None


def _train_and_evaluate(session: RunSession, run: Any, run_dir: Path, db: Path, stop) -> int:
    from engine.evaluate import run_benchmarks
    from engine.train import EXIT_INTERRUPTED, StopFlag, TrainingInterrupted, train

    stop = stop if stop is not None else StopFlag()
    result = None
    try:
        with interrupt_on_stop_signals():
            claim_run_dir(run_dir, run, db)
            cfg = from_dict(run.config)
            result = train(cfg, run_dir, session.reporter, resume=True, stop=stop, run_uuid=run.uuid)
            run_benchmarks(result.backbone, cfg, result.device, session.reporter, run_dir)
        return session.finish("finished", EXIT_OK)
    except TrainingInterrupted as exc:
        job = _requeue_job(run, stop, exc.reason)
        if job is not None:
            return session.requeue(job, str(exc))
        return session.finish("killed", EXIT_INTERRUPTED, str(exc))
    except StopRequested as exc:
        job = _requeue_job(run, stop, str(exc))
        if job is not None:
            return session.requeue(job, f"stopped ({exc}) during evaluation")
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
    session = RunSession(StoreWriter(db, run.id, run_dir), run, run_dir, extra, "eval.log")
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
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", default=None, help="runs database (default $LRFR_DB or ./runs.db)")
    where.add_argument("--journal", metavar="RUN_DIR", default=None,
                       help="never open runs.db: read RUN_DIR/run_spec.json, report to RUN_DIR/journal.jsonl")
    args = parser.parse_args(argv)
    from lrfr_tui.runsdb import db_path

    try:
        if args.journal is not None:
            from lrfr_tui.journal import forbid_databases

            forbid_databases()
            return execute_journaled(Path(args.journal), args.run)
        return execute_run(db_path(args.db), args.run)
    except LrfrError as exc:
        print(f"lrfr worker: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
