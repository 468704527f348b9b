"""What a run executes: its config from runs.db -> engine training and evaluation -> runs.db.

``python -m lrfr_tui.worker --run ID [--db PATH]`` is what launchers start (directly, under
torchrun, or as a Slurm job); ``lrfr run`` calls ``execute_run`` in the foreground. Whatever
happens, the run row ends in a final state: finished, killed (after a checkpoint) or failed
with a reason.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from engine.config import from_dict
from engine.errors import LrfrError, TrainingDiverged
from engine.reporting import MultiReporter, Reporter
from lrfr_tui.store import Store, runs_root

EXIT_OK, EXIT_FAILED, EXIT_DIVERGED = 0, 1, 2
# Set by the launchers: the run was started by a scheduler, which tracks its process itself.
SCHEDULED_ENV = "LRFR_SCHEDULED"
HEARTBEAT_S = 15.0


class Heartbeat:
    """Beats runs.heartbeat from a thread, so data generation or a long evaluation is not 'dead'."""

    def __init__(self, db: Path, run_id: int, every_s: float = HEARTBEAT_S) -> None:
        self.db, self.run_id, self.every_s = db, run_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{run_id}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        store = Store(self.db)  # a connection of its own: sqlite connections stay in their thread
        try:
            while not self._stop.wait(self.every_s):
                store.heartbeat(self.run_id)
        except LrfrError:
            pass  # the database went away: the run's own writes will report that
        finally:
            store.close()


class StoreReporter(Reporter):
    """Writes engine reports into runs.db: metric points batched, everything else at once."""

    def __init__(self, store: Store, run_id: int, flush_every_s: float = 2.0, max_buffer: int = 500) -> None:
        self.store = store
        self.run_id = run_id
        self.flush_every_s = flush_every_s
        self.max_buffer = max_buffer
        self.buffer: list[tuple[str, int, float, float]] = []
        self.last_flush = time.monotonic()
        self.total_steps: int | None = None
        self.step = 0

    def start(self, total_steps: int, start_step: int) -> None:
        self.total_steps = total_steps
        self.step = start_step
        self.store.mark_progress(self.run_id, start_step, total_steps)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        now = time.time()
        self.step = step
        self.buffer.extend((key, step, float(value), now) for key, value in values.items())
        if len(self.buffer) >= self.max_buffer or time.monotonic() - self.last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        self.store.add_metrics(self.run_id, self.buffer)
        self.buffer = []
        self.store.mark_progress(self.run_id, self.step, self.total_steps)
        self.last_flush = time.monotonic()

    def event(self, kind: str, message: str, **fields: Any) -> None:
        if kind == "checkpoint" and isinstance(fields.get("step"), int):
            # Progress is the checkpoint's step too: metrics are only logged every log_every steps.
            self.step = max(self.step, fields["step"])
        self.flush()  # so an event never appears ahead of the metrics that preceded it
        self.store.add_event(self.run_id, kind, message, fields)

    def artifact(self, kind: str, path: Path) -> None:
        self.store.add_artifact(self.run_id, kind, path)

    def result(self, benchmark: str, protocol: str, metric: str, resolution: int | None, value: float) -> None:
        self.store.add_results(self.run_id, [(benchmark, protocol, metric, resolution, value)])


class LogReporter(Reporter):
    """Human-readable lines appended to ``runs/<id>/train.log``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = path.open("a", buffering=1)

    def _line(self, text: str) -> None:
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
        self.fh.close()


def execute_run(db: Path, run_id: int, extra: Reporter | None = None, stop=None) -> int:
    """Train and evaluate run ``run_id``; returns the process exit code. Never leaves it 'running'."""
    from engine.evaluate import run_benchmarks
    from engine.train import EXIT_INTERRUPTED, TrainingInterrupted, dist_env, train

    store = Store(db)
    run = store.get_run(run_id)
    cfg = from_dict(run.config)
    run_dir = runs_root(db) / str(run_id)
    main_rank = dist_env().is_main
    log = LogReporter(run_dir / "train.log") if main_rank else None
    store_reporter = StoreReporter(store, run_id) if main_rank else None
    reporter = MultiReporter(store_reporter, log, extra) if main_rank else Reporter()
    heartbeat = Heartbeat(db, run_id) if main_rank else None
    if main_rank:
        # A scheduler recorded the launched process (group) already; a foreground run is this process.
        store.mark_started(run_id, run_dir, None if os.environ.get(SCHEDULED_ENV) else os.getpid())
        store.add_artifact(run_id, "log", run_dir / "train.log")
        heartbeat.start()

    def finish(status: str, code: int, reason: str | None = None) -> int:
        if main_rank:
            heartbeat.stop()
            store_reporter.flush()
            store.mark_ended(run_id, status, code, reason)
            reporter.event("status", f"run {run_id} {status}" + (f": {reason}" if reason else ""))
            log.close()
        store.close()
        return code

    try:
        result = train(cfg, run_dir, reporter, resume=True, stop=stop)
        if main_rank:
            run_benchmarks(result.backbone, cfg, result.device, reporter, run_dir)
        return finish("finished", EXIT_OK)
    except TrainingInterrupted as exc:
        return finish("killed", EXIT_INTERRUPTED, str(exc))
    except TrainingDiverged as exc:
        return finish("failed", EXIT_DIVERGED, str(exc))
    except LrfrError as exc:
        return finish("failed", EXIT_FAILED, str(exc))
    except BaseException as exc:  # a bug or an OOM: record it, keep the traceback in the log
        if log is not None:
            log._line(traceback.format_exc())
        finish("failed", EXIT_FAILED, f"{type(exc).__name__}: {exc}")
        raise


def evaluate_into_run(db: Path, run_id: int, model, cfg, device, extra: Reporter | None = None,
                      finish_run: bool = False) -> int:
    """Evaluate ``model`` on ``cfg.eval.benchmarks`` and store the results against run ``run_id``.

    ``finish_run``: the run is an evaluation-only run that this call owns (mark it running, then
    finished or failed); otherwise the run keeps its status and only gains result rows.
    """
    from engine.evaluate import run_benchmarks

    store = Store(db)
    run_dir = runs_root(db) / str(run_id)
    log = LogReporter(run_dir / "eval.log")
    store_reporter = StoreReporter(store, run_id)
    reporter = MultiReporter(store_reporter, log, extra)
    if finish_run:
        store.mark_started(run_id, run_dir, os.getpid())
    code, status, reason = EXIT_OK, "finished", None
    try:
        run_benchmarks(model, cfg, device, reporter, run_dir)
    except LrfrError as exc:
        code, status, reason = EXIT_FAILED, "failed", str(exc)
        reporter.event("status", f"evaluation failed: {exc}")
    except BaseException as exc:
        log._line(traceback.format_exc())
        if finish_run:
            store.mark_ended(run_id, "failed", EXIT_FAILED, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        store_reporter.flush()
        log.close()
    if finish_run:
        store.mark_ended(run_id, status, code, reason)
    store.close()
    if reason:
        raise LrfrError(reason)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lrfr_tui.worker", description=__doc__)
    # --run-id, not --run: under torchrun, "--run" is taken for an abbreviation of its --run-path.
    parser.add_argument("--run-id", "--run", dest="run", type=int, required=True, help="run id in runs.db")
    parser.add_argument("--db", default=None, help="runs database (default $LRFR_DB or ./runs.db)")
    args = parser.parse_args(argv)
    from lrfr_tui.store import db_path

    try:
        return execute_run(db_path(args.db), args.run)
    except LrfrError as exc:
        print(f"lrfr worker: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
