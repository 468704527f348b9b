"""The experiment manager with real processes and a real runs.db: queue, GPUs, kill, crash, adopt."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from engine.config import resolve, to_dict
from lrfr_tui.gpus import fake_gpus
from lrfr_tui.runsdb import Store
from lrfr_tui.runsdb.migrations import SCHEMA_V1, SCHEMA_VERSION
from lrfr_tui.scheduler import Scheduler, SchedulerLocked, stop_run
from tests.conftest import MICRO_OVERRIDES, queue_micro_run

FAST = ["eval.benchmarks=[lfw]"]


pytestmark = pytest.mark.usefixtures("importable_worker")


def queue_run(store: Store, *overrides: str) -> int:
    return queue_micro_run(store, *FAST, *overrides)


def wait_for(predicate, timeout: float = 120.0, every: float = 0.2, sched: Scheduler | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sched is not None:
            sched.step()
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def test_queue_drains_onto_fake_gpus_in_parallel(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    two = queue_run(store, "launch.gpus=2", "schedule.max_steps=4")
    ones = [queue_run(store, "launch.gpus=1", "schedule.max_steps=4") for _ in range(3)]
    sched = Scheduler(db, discover=fake_gpus(3))
    first_pass = sched.step()
    assert first_pass == [two, ones[0]]  # 2 + 1 GPUs: the other two wait
    assert store.get_run(two).gpus == [0, 1] and store.get_run(ones[0]).gpus == [2]
    assert store.get_run(two).launcher == "torchrun"
    sched.run(poll_s=0.3, until_empty=True, max_seconds=300)
    runs = [store.get_run(i) for i in [two, *ones]]
    assert [r.status for r in runs] == ["finished"] * 4, [r.failure_reason for r in runs]
    # No GPU was ever held by two runs at once.
    for a in runs:
        for b in runs:
            overlap = a.id < b.id and a.started < b.ended and b.started < a.ended
            if overlap:
                assert not set(a.gpus) & set(b.gpus), (a.id, b.id)
    # The DDP run really ran two processes (torchrun) and trained to its last step.
    assert store.get_run(two).step == 4


def test_cpu_machine_runs_one_at_a_time(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    ids = [queue_run(store, "schedule.max_steps=2") for _ in range(2)]
    sched = Scheduler(db, discover=fake_gpus(0))
    assert sched.step() == [ids[0]]
    assert sched.step() == []  # the first still runs
    sched.run(poll_s=0.3, until_empty=True, max_seconds=300)
    a, b = (store.get_run(i) for i in ids)
    assert a.status == b.status == "finished" and b.started >= a.ended - 1.0


def test_kill_checkpoints_then_resume_continues_the_step_count(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    run_id = queue_run(store, "schedule.max_steps=150", "schedule.epochs=100")
    sched = Scheduler(db, discover=fake_gpus(0))
    assert sched.step() == [run_id]
    wait_for(lambda: store.get_run(run_id).step >= 5)
    assert stop_run(store, store.get_run(run_id), grace_s=60, scheduler=sched) == "killed"
    killed = store.get_run(run_id)
    state = torch.load(tmp_path / "runs" / str(run_id) / "checkpoint.pt", weights_only=True)
    assert killed.exit_code == 3 and state["step"] >= 5
    cut = state["step"]

    proc = subprocess.run([sys.executable, "-m", "lrfr_tui.cli", "resume", str(run_id), "--db", str(db), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = store.get_run(run_id)
    assert (resumed.status, resumed.step) == ("finished", 150)
    # log_every=1: every step has exactly one point - none lost at the kill, none written twice after it.
    steps = [s for s, _ in store.metric_series(run_id, "loss")]
    assert steps == list(range(1, 151)) and 5 <= cut < 150
    kinds = [r[0] for r in store.conn.execute("SELECT kind FROM events WHERE run_id=?", (run_id,))]
    assert "resume" in kinds


def test_sigkill_of_a_worker_is_detected_as_failed(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    run_id = queue_run(store, "schedule.max_steps=2000", "schedule.epochs=1000")
    sched = Scheduler(db, discover=fake_gpus(0))
    sched.step()
    wait_for(lambda: store.get_run(run_id).step >= 2)
    os.killpg(store.get_run(run_id).pid, signal.SIGKILL)
    wait_for(lambda: store.get_run(run_id).status == "failed", timeout=30, sched=sched)
    reason = store.get_run(run_id).failure_reason
    assert "without reporting" in reason and "log tail" in reason and "step" in reason


def test_restarted_scheduler_adopts_running_runs(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    first = queue_run(store, "schedule.max_steps=60", "schedule.epochs=100")
    second = queue_run(store, "schedule.max_steps=2")
    old = Scheduler(db, discover=fake_gpus(0))
    assert old.step() == [first]
    wait_for(lambda: store.get_run(first).step >= 1)
    # The old scheduler "dies" (its object is dropped); a new one takes over from runs.db alone.
    del old
    new = Scheduler(db, discover=fake_gpus(0))
    assert new.step() == []  # the adopted run is alive: not failed, and the CPU stays taken
    assert store.get_run(first).status == "running"
    wait_for(lambda: store.get_run(second).status == "finished", timeout=300, sched=new)
    assert store.get_run(first).status == "finished"


def test_only_one_scheduler_drives_a_queue(tmp_path):
    db = tmp_path / "runs.db"
    a, b = Scheduler(db), Scheduler(db)
    a.acquire()
    with pytest.raises(SchedulerLocked, match="already driven by"):
        b.acquire()
    a.release()
    b.acquire()
    b.release()


WRITER = """
import sys, time
from pathlib import Path
from lrfr_tui.worker import StoreReporter, StoreWriter
writer = StoreWriter(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[1]).parent, flush_every_s=0.01).start()
rep = StoreReporter(writer)
for step in range(int(sys.argv[3])):
    rep.metrics(step, {"loss": step * 0.5, "lr": 0.1})
    if step % 50 == 0:
        time.sleep(0.001)  # let the writer thread interleave with the others' transactions
assert writer.close(60), writer.last_error
"""


def test_eight_concurrent_writers_lose_nothing(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    ids = [queue_run(store) for _ in range(8)]
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), str(db), str(i), "1500"], stderr=subprocess.PIPE)
             for i in ids]
    reader = Store(db)
    while any(p.poll() is None for p in procs):
        reader.conn.execute("SELECT COUNT(*), MAX(step) FROM metrics").fetchone()  # readers never block writers
        time.sleep(0.01)
    errors = [p.stderr.read().decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    for i in ids:
        assert len(store.metric_series(i, "loss")) == 1500
        assert len(store.metric_series(i, "lr")) == 1500


def test_migration_from_a_v1_database(tmp_path):
    db = tmp_path / "runs.db"
    conn = sqlite3.connect(db)
    for statement in SCHEMA_V1.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO runs (name, status, created, config) VALUES ('old', 'queued', 1.0, ?)",
                 (json.dumps(to_dict(resolve("tiny"))),))
    conn.execute("INSERT INTO metrics VALUES (1, 'loss', 1, 0.5, NULL, 1.0)")
    conn.commit()
    conn.close()
    store = Store(db)
    version = store.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION
    run = store.get_run(1)
    assert (run.name, run.status, run.queue_pos, run.gpus_requested) == ("old", "queued", 1.0, 0)
    assert store.metric_series(1, "loss") == [(1, 0.5)]


def lrfr(*args, db: Path, env=None):
    return subprocess.run([sys.executable, "-m", "lrfr_tui.cli", *args, "--db", str(db)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


def test_cli_sweep_queue_rerun_and_worker(tmp_path):
    db = tmp_path / "runs.db"
    sets = [a for o in MICRO_OVERRIDES + FAST + ["schedule.max_steps=2"] for a in ("--set", o)]
    proc = lrfr("sweep", "--preset", "tiny", *sets, "--grid", "loss.lambda=0.5,2", "--grid", "loss.p=1,2",
                "--group", "g1", "--json", db=db)
    assert proc.returncode == 0, proc.stderr
    swept = json.loads(proc.stdout)
    assert swept["group"] == "g1" and len(swept["runs"]) == 4
    store = Store(db)
    points = {(store.get_run(i).config["loss"]["lambda"], store.get_run(i).config["loss"]["p"]) for i in swept["runs"]}
    assert points == {(0.5, 1.0), (0.5, 2.0), (2.0, 1.0), (2.0, 2.0)}

    proc = lrfr("rerun", str(swept["runs"][0]), "--set", "optim.lr=0.01", "--queue", "--json", db=db)
    rerun = json.loads(proc.stdout)
    assert store.get_run(rerun["run"]).parent_id == swept["runs"][0]
    assert store.get_run(rerun["run"]).config["optim"]["lr"] == 0.01

    lrfr("queue", "--move", str(rerun["run"]), "--to", "1", db=db)
    queued = json.loads(lrfr("queue", "--json", db=db).stdout)
    assert queued[0]["id"] == rerun["run"] and len(queued) == 5

    bad = lrfr("sweep", "--preset", "tiny", "--grid", "loss.p=1,zero", db=db)
    assert bad.returncode == 2 and "loss.p: expected a number" in bad.stderr
    assert len(json.loads(lrfr("queue", "--json", db=db).stdout)) == 5  # nothing half-queued

    proc = lrfr("worker", "--until-empty", "--poll", "0.3", db=db, env={"LRFR_FAKE_GPUS": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(r.status == "finished" for r in store.list_runs()), [r.failure_reason for r in store.list_runs()]


def test_vanished_gpus_start_nothing_and_a_deleted_run_dir_is_recreated(tmp_path):
    from lrfr_tui.gpus import GpuDiscoveryError

    db = tmp_path / "runs.db"
    store = Store(db)
    run_id = queue_run(store, "schedule.max_steps=40", "schedule.epochs=100")

    def broken():
        raise GpuDiscoveryError("nvidia-smi failed: driver gone")

    events = []
    sched = Scheduler(db, discover=broken, on_event=events.append)
    assert sched.step() == [] and store.get_run(run_id).status == "queued"
    assert "GPU discovery failed" in events[0]
    # GPUs back: the run starts; its directory is deleted under it; it still finishes with a checkpoint.
    sched.discover = fake_gpus(1)
    assert sched.step() == [run_id]
    wait_for(lambda: store.get_run(run_id).step >= 2)
    import shutil

    shutil.rmtree(tmp_path / "runs" / str(run_id), ignore_errors=True)  # races the writer, as a user would
    wait_for(lambda: store.get_run(run_id).is_final, timeout=300, sched=sched)
    assert store.get_run(run_id).status == "finished", store.get_run(run_id).failure_reason
    assert (tmp_path / "runs" / str(run_id) / "checkpoint.pt").exists()


def test_the_host_wide_lock_folder_stays_usable_by_every_user(tmp_path, monkeypatch):
    # The identity lock lives in the shared temp directory; whoever makes it first must leave it
    # (and the lock file) writable for the next user, or their scheduler fails on our lock file.
    # (test_cli_errors' read-only test runs lrfr as another user after this one made the folder.)
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))
    (tmp_path / "db").mkdir(mode=0o755)
    Store(tmp_path / "db" / "runs.db")
    sched = Scheduler(tmp_path / "db" / "runs.db")
    sched.acquire()
    try:
        beside, by_identity = sched.lock_paths()
        assert by_identity.parent.parent == shared_tmp
        assert by_identity.parent.stat().st_mode & 0o7777 == 0o1777
        assert by_identity.stat().st_mode & 0o777 == 0o666
        assert beside.parent.stat().st_mode & 0o7777 == 0o755  # the user's own folder is left alone
    finally:
        sched.release()
