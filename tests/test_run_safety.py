"""The parts of "never lose a run" that need no training: schema v4, pending.jsonl, bad checkpoints,
a reader that cannot write, the stop signals of DataLoader workers. (The end-to-end faults with
real trainings are in test_faults.py.)"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.config import flatten, resolve, to_dict
from lrfr_tui.runsdb import PENDING_FILE, Store, runs_root
from lrfr_tui.runsdb.migrations import SCHEMA_V1
from tests.conftest import MICRO_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]


def lrfr(*args: str, db: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lrfr_tui.cli", *args, "--db", str(db)], capture_output=True,
                          text=True, timeout=300, cwd=db.parent,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def new_run(store: Store, status: str = "queued", **kw) -> int:
    cfg = resolve("tiny", MICRO_OVERRIDES)
    return store.create_run(to_dict(cfg), flatten(cfg), "test", status=status, **kw)


def db_at_version(db: Path, version: int) -> sqlite3.Connection:
    """A database as an older lrfr left it: the migrations up to ``version`` only."""
    from lrfr_tui.runsdb.migrations import MIGRATIONS

    conn = sqlite3.connect(db)
    conn.executescript(SCHEMA_V1)
    for migration in MIGRATIONS[1:version]:
        migration(conn)
    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
    return conn


def test_v3_database_gets_run_identities_and_loses_duplicate_points(tmp_path):
    """A database of the previous release, with the duplicate points an old resume stored."""
    db = tmp_path / "runs.db"
    conn = db_at_version(db, 3)
    for _ in (1, 2):
        conn.execute("INSERT INTO runs (name, status, created, config) VALUES ('old', 'killed', 1.0, ?)",
                     (json.dumps(to_dict(resolve("tiny"))),))
    # step 6 three times (the report): an interrupted attempt, and two resumes.
    conn.executemany("INSERT INTO metrics VALUES (1, 'loss', ?, ?, NULL, ?)",
                     [(5, 1.0, 1.0), (6, 0.9, 2.0), (6, 0.8, 3.0), (6, 0.7, 4.0), (7, 0.6, 5.0)])
    conn.commit()
    conn.close()
    store = Store(db)
    assert store.metric_series(1, "loss") == [(5, 1.0), (6, 0.7), (7, 0.6)]  # the latest of each step
    uuids = {store.get_run(1).uuid, store.get_run(2).uuid}
    assert len(uuids) == 2 and None not in uuids
    with pytest.raises(sqlite3.IntegrityError):
        store.conn.execute("INSERT INTO metrics VALUES (1, 'loss', 7, 0.1, NULL, 6.0)")
    store.add_metrics(1, [("loss", 7, 0.5, 6.0)])  # the store's own write replaces the step
    assert store.metric_series(1, "loss")[-1] == (7, 0.5)


def test_pending_writes_of_a_dead_worker_are_applied_once_and_a_torn_line_is_dropped(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_id = new_run(store, status="running", pid=dead.pid, launcher="foreground")
    # Its process is gone; its run directory holds what its worker could not write (and a torn line).
    run_dir = runs_root(db) / str(run_id)
    run_dir.mkdir(parents=True)
    store.conn.execute("UPDATE runs SET run_dir=? WHERE id=?", (str(run_dir), run_id))
    ops = [["metrics", [["loss", 1, 2.0, 1.0], ["loss", 2, 1.5, 2.0]]], ["progress", 2, 10],
           ["result", "lfw", "insightface_10fold", "acc", None, 0.75, 3.0],
           ["ended", "killed", 3, "training interrupted (SIGTERM) at step 2", 4.0]]
    (run_dir / PENDING_FILE).write_text("".join(json.dumps(op) + "\n" for op in ops) + '["metrics", [["lo')
    store.close()
    for _ in range(2):  # a second reader applies nothing again
        run = Store(db).get_run(run_id)
        assert (run.status, run.exit_code, run.step) == ("killed", 3, 2)
    store = Store(db)
    assert store.metric_series(run_id, "loss") == [(1, 2.0), (2, 1.5)]
    assert [r["value"] for r in store.results(run_id)] == [0.75]
    assert not (run_dir / PENDING_FILE).exists() and (run_dir / (PENDING_FILE + ".applied")).exists()


def test_a_reader_that_cannot_write_still_sees_a_dead_run_as_failed(tmp_path):
    """Another process holds the write lock: `lrfr show` cannot store the verdict, but shows it."""
    db = tmp_path / "runs.db"
    store = Store(db)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_id = new_run(store, status="running", pid=dead.pid, launcher="foreground")
    store.close()
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time\n"
                               "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                               "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(60)", str(db)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        shown = lrfr("show", str(run_id), "--json", db=db)
        assert shown.returncode == 0, shown.stderr
        run = json.loads(shown.stdout)["run"]
        assert run["status"] == "failed" and "ended without reporting" in run["failure_reason"]
        listed = json.loads(lrfr("ls", "--json", db=db).stdout)
        assert [r["status"] for r in listed] == ["failed"]
        raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT status FROM runs").fetchone()[0]
        assert raw == "running"  # nothing was written while the lock was held ...
    finally:
        holder.kill()
        holder.wait()
    Store(db)  # ... and the next reader that can write stores it
    raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT status FROM runs").fetchone()[0]
    assert raw == "failed"


@pytest.mark.parametrize("contents", [{"weights": torch.zeros(3)}, torch.zeros(3), {"backbone": {}, "config": 7}])
def test_a_checkpoint_with_the_wrong_contents_is_one_line_and_changes_nothing(tmp_path, contents):
    db = tmp_path / "runs.db"
    store = Store(db)
    run_id = new_run(store)
    store.conn.execute("UPDATE runs SET status='killed' WHERE id=?", (run_id,))
    path = runs_root(db) / str(run_id) / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    torch.save(contents, path)
    for args in (("resume", str(run_id)), ("resume", str(run_id), "--queue"), ("eval", "--checkpoint", str(path))):
        proc = lrfr(*args, db=db)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("lrfr: error:"), (args, proc.stderr)
        assert str(path) in lines[0]
    assert store.get_run(run_id).status == "killed"


def test_another_runs_checkpoint_is_refused_before_the_resume_claims_the_run(tmp_path, micro_config):
    from engine import checkpoint as ckpt

    db = tmp_path / "runs.db"
    store = Store(db)
    run_id = new_run(store)
    store.conn.execute("UPDATE runs SET status='failed' WHERE id=?", (run_id,))
    path = runs_root(db) / str(run_id) / ckpt.LAST
    path.parent.mkdir(parents=True)
    state = {"backbone": {}, "head": {}, "optimizer": {}, "scaler": {}, "aug_rng": [], "torch_rng": [],
             "step": 5, "config": to_dict(micro_config), "run_uuid": "0" * 32}
    torch.save(state, path)
    proc = lrfr("resume", str(run_id), db=db)
    assert proc.returncode == 2 and "belongs to run 0000" in proc.stderr and "never resumed" in proc.stderr
    assert store.get_run(run_id).status == "failed"
    state["run_uuid"] = store.get_run(run_id).uuid
    state["config"]["optim"]["lr"] = 0.5
    torch.save(state, path)
    proc = lrfr("resume", str(run_id), db=db)
    assert proc.returncode == 2 and "different config ([optim] differ)" in proc.stderr


class _Slow(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10_000

    def __getitem__(self, i: int):
        time.sleep(0.01)
        return torch.zeros(1)


def test_dataloader_workers_ignore_the_stop_signals_their_group_gets():
    """SIGTERM to the whole process group (what `lrfr kill` sends) leaves the workers alive, so the
    trainer's checkpoint can still be written; the main process decides and ends them."""
    from engine.data.loader import ignore_stop_signals, iterate

    loader = torch.utils.data.DataLoader(_Slow(), batch_size=2, num_workers=2, worker_init_fn=ignore_stop_signals)
    got = []
    previous = signal.signal(signal.SIGTERM, lambda *_: got.append("SIGTERM"))
    try:
        batches = iterate(loader)
        next(batches)
        for worker in batches._workers:
            os.kill(worker.pid, signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(20):
            next(batches)  # no "DataLoader worker ... killed by signal: Terminated"
        assert got == ["SIGTERM"] and all(w.is_alive() for w in batches._workers)
        del batches
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_v4_scface_zero_shot_results_keep_what_they_measured(tmp_path):
    """Before schema v5, SCface zero_shot ran on all 130 subjects: such rows become zero_shot_all130."""
    db = tmp_path / "runs.db"
    conn = db_at_version(db, 4)
    conn.execute("INSERT INTO runs (name, status, created, config) VALUES ('old', 'finished', 1.0, '{}')")
    conn.executemany("INSERT INTO results VALUES (1, ?, ?, 'rank1_d1', NULL, 0.5, 1.0)",
                     [("scface", "zero_shot"), ("scface", "finetune"), ("lfw", "insightface_10fold")])
    conn.commit()
    conn.close()
    rows = {(r["benchmark"], r["protocol"]) for r in Store(db).results(1)}
    assert rows == {("scface", "zero_shot_all130"), ("scface", "finetune"), ("lfw", "insightface_10fold")}
