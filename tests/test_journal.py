"""The run journal with real processes: a worker that cannot see runs.db trains through its journal, the
scheduler ingests it exactly once (also across its own SIGKILL), and a torn last line ingests cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lrfr_tui.journal import JOURNAL_FILE, JournalWriter, read_journal
from lrfr_tui.launchers import LocalLauncher
from lrfr_tui.launchers.base import LaunchRequest
from lrfr_tui.runsdb import Store, journal_ingest
from lrfr_tui.scheduler import Scheduler
from tests.conftest import ROOT, queue_micro_run

FAST = ["eval.benchmarks=[lfw]", "schedule.max_steps=6"]
# Throughput depends on the machine's load, not on the run: everything else must match exactly.
TIMING_KEYS = {"samples_per_s", "images_per_s"}


pytestmark = pytest.mark.usefixtures("importable_worker")


def queue_run(store: Store, *overrides: str) -> int:
    return queue_micro_run(store, *FAST, *overrides)


def _unshare_prefix() -> list[str] | None:
    """A command prefix that starts its command in a new mount namespace, or None where none can be made."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return prefix
    return None


class HiddenDbLauncher(LocalLauncher):
    """The local launcher, except that the worker runs in a mount namespace in which runs.db's folder is an
    empty tmpfs: for it, runs.db does not exist (as on a compute node that does not mount the login node's disk).
    A run that is not journaled is started as by the local launcher."""

    def __init__(self, prefix: list[str], db: Path) -> None:
        super().__init__()
        self.prefix, self.db = prefix, db

    def command(self, request: LaunchRequest) -> list[str]:
        if not request.journal:
            return super().command(request)  # the direct run beside it writes runs.db itself
        hide = (f'mount -t tmpfs none "{self.db.parent}" && test ! -e "{self.db}" && '
                f'echo "runs.db hidden from the worker" && exec "$@"')
        return [*self.prefix, "sh", "-c", hide, "sh", *super().command(request)]


def rows(store: Store, run_id: int) -> dict:
    """What runs.db holds of a run, without what differs between two runs of one config (ids, paths, times)."""
    c = store.conn
    run = store.get_run(run_id)
    metrics = sorted((k, s, v) for k, s, v in c.execute("SELECT key, step, value FROM metrics WHERE run_id=?",
                                                         (run_id,)) if k not in TIMING_KEYS)
    events = sorted(k for (k,) in c.execute("SELECT kind FROM events WHERE run_id=?", (run_id,)) if k != "journal")
    results = sorted(tuple(r) for r in c.execute(
        "SELECT benchmark, protocol, metric, resolution, value, source_key FROM results WHERE run_id=?", (run_id,)))
    outcomes = sorted(tuple(r) for r in c.execute(
        "SELECT benchmark, protocol, metric, resolution, n, bits FROM outcomes WHERE run_id=?", (run_id,)))
    artifacts = sorted(k for (k,) in c.execute("SELECT kind FROM artifacts WHERE run_id=?", (run_id,)))
    return {"status": run.status, "exit_code": run.exit_code, "step": run.step, "total_steps": run.total_steps,
            "metrics": metrics, "events": events, "results": results, "outcomes": outcomes, "artifacts": artifacts}


def test_worker_that_cannot_see_runs_db_trains_through_its_journal(tmp_path):
    prefix = _unshare_prefix()
    if prefix is None:
        pytest.skip("no mount namespace can be made here (unshare -m / -rm), so runs.db cannot be hidden")
    # runs.db on the "login node's" disk; runs/ a link to the "shared filesystem" that compute nodes mount.
    login, shared = tmp_path / "login", tmp_path / "shared"
    (shared / "runs").mkdir(parents=True)
    login.mkdir()
    (login / "runs").symlink_to(shared / "runs")
    db = login / "runs.db"
    store = Store(db)
    direct = queue_run(store, "launch.journal=off")
    journaled = queue_run(store, "launch.journal=on")
    sched = Scheduler(db, discover=lambda: [], launchers={"local": HiddenDbLauncher(prefix, db)})
    sched.run(poll_s=0.3, until_empty=True, max_seconds=400)

    run = store.get_run(journaled)
    log = (shared / "runs" / str(journaled) / "train.log").read_text()
    assert run.status == "finished", f"{run.failure_reason}\n{log[-3000:]}"
    assert "runs.db hidden from the worker" in log  # its mount namespace hid runs.db's folder
    assert run.run_dir == str(shared / "runs" / str(journaled))  # the path other hosts see
    # The ingest gave the same rows as the worker that wrote runs.db itself.
    assert rows(store, journaled) == rows(store, direct)
    assert rows(store, journaled)["metrics"] and rows(store, journaled)["results"]
    # Every record was applied once; a second ingest applies nothing.
    records = read_journal(shared / "runs" / str(journaled) / JOURNAL_FILE).records
    assert journal_ingest.position(store, journaled)[0] == records[-1].seq == len(records)
    assert journal_ingest.ingest(store, journaled).applied == 0
    assert not journal_ingest.is_journaled(store, direct)
    store.close()


def _journal_seq(store: Store, run_id: int) -> int:
    pos = journal_ingest.position(store, run_id)
    return pos[0] if pos else 0


def test_scheduler_killed_mid_run_loses_and_duplicates_nothing(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    steps = 40
    run_id = queue_run(store, "launch.journal=on", f"schedule.max_steps={steps}", "schedule.epochs=20")
    env = {**os.environ, "LRFR_FAKE_GPUS": "0"}
    cmd = [sys.executable, "-m", "lrfr_tui.cli", "worker", "--poll", "0.3", "--db", str(db)]

    first = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while _journal_seq(store, run_id) < 5 and time.monotonic() < deadline:  # it has ingested some
            time.sleep(0.2)
        assert _journal_seq(store, run_id) >= 5, first.stderr.read1().decode() if first.poll() is not None else ""
    finally:
        first.send_signal(signal.SIGKILL)  # no chance to tidy up: mid-ingest as likely as between passes
        first.wait()
    seq_at_kill = _journal_seq(store, run_id)
    journal = tmp_path / "runs" / str(run_id) / JOURNAL_FILE
    deadline = time.monotonic() + 240  # the run goes on without a scheduler, its journal growing
    while len(read_journal(journal).records) < seq_at_kill + 10 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.get_run(run_id).status == "running"

    second = subprocess.run([*cmd, "--until-empty"], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=400)
    assert second.returncode == 0, second.stderr[-2000:]
    run = store.get_run(run_id)
    assert run.status == "finished", f"{run.failure_reason}"
    records = read_journal(journal).records
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert _journal_seq(store, run_id) == len(records)
    # Count rows: one metric point per key and step, each event once, as many as the journal holds.
    c = store.conn
    for key in ("loss", "lr"):
        assert [s for (s,) in c.execute("SELECT step FROM metrics WHERE run_id=? AND key=? ORDER BY step",
                                        (run_id, key))] == list(range(1, steps + 1))
    journal_events = sum(1 for r in records if r.op[0] in ("event", "open"))
    assert c.execute("SELECT COUNT(*) FROM events WHERE run_id=?", (run_id,)).fetchone()[0] == journal_events
    assert c.execute("SELECT COUNT(*) FROM (SELECT kind, message, wall FROM events WHERE run_id=? "
                     "GROUP BY kind, message, wall HAVING COUNT(*) > 1)", (run_id,)).fetchone()[0] == 0
    journal_results = sum(1 for r in records if r.op[0] == "result")
    assert c.execute("SELECT COUNT(*) FROM results WHERE run_id=?", (run_id,)).fetchone()[0] == journal_results > 0
    store.close()


def test_torn_last_line_ingests_cleanly_and_the_next_writer_continues(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    run_id = queue_run(store, "launch.journal=on")
    run = store.get_run(run_id)
    run_dir = tmp_path / "runs" / str(run_id)
    assert store.claim(run_id, "test", [], "local", run_dir / "train.log", run_dir)
    journal_ingest.register(store, run_id)

    def write(first_step: int, n: int) -> None:
        writer = JournalWriter(run_dir, run_id, run.uuid, flush_every_s=0.01).start()
        for step in range(first_step, first_step + n):
            writer.put("metrics", [["loss", step, 1.0 / step, time.time()]])
        writer.progress(first_step + n - 1, 100)
        assert writer.close(wait_s=10)

    write(1, 5)
    journal = run_dir / JOURNAL_FILE
    whole = journal.read_bytes()
    # A crash in the middle of a line: the first half of a record, no newline.
    torn = json.dumps({"seq": 999, "t": time.time(), "op": ["metrics", [["loss", 6, 0.5, 1.0]]]}).encode()
    with journal.open("ab") as fh:
        fh.write(torn[: len(torn) // 2])
    done = journal_ingest.ingest(store, run_id)
    assert done.problem is None and done.applied == len(read_journal(journal).records)
    assert [s for s, _ in store.metric_series(run_id, "loss")] == [1, 2, 3, 4, 5]
    assert journal_ingest.position(store, run_id)[1] == len(whole)  # stopped before the torn line
    assert journal_ingest.ingest(store, run_id).applied == 0  # nothing twice, and the torn half never

    write(6, 3)  # a resumed worker: cuts the torn half off, goes on counting
    assert b"999" not in journal.read_bytes()
    seqs = [r.seq for r in read_journal(journal).records]
    assert seqs == list(range(1, len(seqs) + 1))
    assert journal_ingest.ingest(store, run_id).applied > 0
    assert [s for s, _ in store.metric_series(run_id, "loss")] == list(range(1, 9))
    assert store.get_run(run_id, settle=False).step == 8
    # The run's heartbeat is its journal's last record.
    assert store.get_run(run_id, settle=False).heartbeat == pytest.approx(read_journal(journal).records[-1].t)
    store.close()


def test_a_journal_of_another_run_is_not_ingested(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    run_id = queue_run(store, "launch.journal=on")
    run_dir = tmp_path / "runs" / str(run_id)
    assert store.claim(run_id, "test", [], "local", run_dir / "train.log", run_dir)
    journal_ingest.register(store, run_id)
    writer = JournalWriter(run_dir, run_id, "0" * 32, flush_every_s=0.01).start()
    writer.put("metrics", [["loss", 1, 1.0, time.time()]])
    assert writer.close(wait_s=10)
    done = journal_ingest.ingest(store, run_id)
    assert done.applied == 0 and "not this run" in done.problem
    assert store.metric_series(run_id, "loss") == []
    store.close()


def test_journaled_worker_refuses_to_open_a_database(tmp_path):
    """The worker's guard: with --journal, opening any SQLite database is an error, not a risk."""
    code = ("import sqlite3, sys; from lrfr_tui.journal import forbid_databases; forbid_databases()\n"
            "try:\n    sqlite3.connect(sys.argv[1])\nexcept Exception as exc:\n    print(exc); sys.exit(7)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs.db")], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 7 and "does not open databases" in proc.stdout
    assert not (tmp_path / "runs.db").exists()
    # A worker started with --journal but no spec: one clear line, a non-zero exit.
    proc = subprocess.run([sys.executable, "-m", "lrfr_tui.worker", "--run-id", "3", "--journal", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"lrfr worker: error: {tmp_path / 'run_spec.json'} does not exist: a journaled worker is started by a "
        "scheduler, which writes it"]
