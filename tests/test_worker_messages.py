"""What `lrfr worker` tells its terminal: who holds the CPU while runs wait, and each run that ends.

Real processes on a real runs.db: a foreground `lrfr run` trains while a second run is queued and a
`lrfr worker --until-empty` drives the queue.
"""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import MICRO_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]


def _lrfr(*args: str, cwd: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("LRFR_FAKE_GPUS", None)
    return subprocess.Popen([sys.executable, "-m", "lrfr_tui.cli", *args], cwd=cwd, env=env, text=True, **popen)


def _sets(*extra: str) -> list[str]:
    return [a for o in MICRO_OVERRIDES + ["eval.benchmarks=[lfw]", *extra] for a in ("--set", o)]


def _status(db: Path, run_id: int) -> str | None:
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    except sqlite3.OperationalError:  # being created by the first lrfr run
        return None
    finally:
        conn.close()
    return row[0] if row else None


def test_worker_says_who_holds_the_cpu_and_when_runs_end(tmp_path):
    db = tmp_path / "runs.db"
    foreground = _lrfr("run", "--preset", "tiny", "--name", "held", *_sets("schedule.epochs=40"), cwd=tmp_path,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _status(db, 1) != "running":
            assert foreground.poll() is None, foreground.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the foreground run never started"
            time.sleep(0.2)
        queued = _lrfr("run", "--preset", "tiny", "--name", "waiting", "--queue", *_sets("schedule.max_steps=2"),
                       cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert queued.wait(120) == 0, queued.stderr.read()
        assert _status(db, 1) == "running", "the foreground run ended before the worker could see it"
        worker = _lrfr("worker", "--until-empty", "--poll", "0.3", cwd=tmp_path, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
        _, said = worker.communicate(timeout=300)
        assert worker.returncode == 0, said
        assert foreground.wait(60) == 0
    finally:
        for proc in (foreground,):
            if proc.poll() is None:
                proc.kill()
    lines = [line for line in said.splitlines() if line.startswith("run ")]
    holds = [i for i, line in enumerate(lines) if "holds the CPU" in line]
    assert len(holds) == 1, said  # said once, not every pass
    assert lines[holds[0]] == ("run 1 (held) holds the CPU, started in the foreground (lrfr run): "
                               "1 queued run(s) start when it ends")
    ended_1 = [i for i, line in enumerate(lines) if line.startswith("run 1 (held) finished after ")]
    started_2 = lines.index("run 2 started on CPU")
    ended_2 = [i for i, line in enumerate(lines) if line.startswith("run 2 (waiting) finished after ")]
    assert len(ended_1) == 1 and len(ended_2) == 1, said
    assert holds[0] < ended_1[0] < started_2 < ended_2[0], said
    assert lines[ended_2[0]].endswith("; lrfr show 2")


def test_a_run_killed_mid_step_is_said_once_with_its_reason(tmp_path):
    """SIGKILL to the training process the worker started: it cannot write its end, so the worker settles it
    as failed, and says so once, with the reason, like any other end."""
    db = tmp_path / "runs.db"
    queued = _lrfr("run", "--preset", "tiny", "--name", "doomed", "--queue", *_sets("schedule.epochs=200"),
                   cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert queued.wait(120) == 0, queued.stderr.read()
    worker = _lrfr("worker", "--until-empty", "--poll", "0.3", cwd=tmp_path, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            pid, step = conn.execute("SELECT pid, step FROM runs WHERE id = 1").fetchone()
            conn.close()
            if pid and step > 0:
                break
            assert worker.poll() is None and time.monotonic() < deadline, "the run never trained"
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        _, said = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, said
    about_1 = [line for line in said.splitlines() if line.startswith("run 1 ")]
    assert about_1[0] == "run 1 started on CPU", said
    assert len(about_1) == 2, said  # started, then its end: said once
    # The reason's headline only: the log tail stored with it stays in runs.db (lrfr show 1).
    assert re.fullmatch(r"run 1 \(doomed\) failed after \S+: the run's process ended without reporting a final "
                        r"status; lrfr show 1", about_1[1]), said
