"""Fault injection, end to end: does a run survive what users and machines do to it?

Every scenario drives real processes on a real runs.db - `lrfr` commands, the scheduler's worker
processes with DataLoader workers, signals, a second process racing the first, a write lock held by
another process, a full disk (a small tmpfs) - and reports the run's state as the next command sees
it, and how many metric points were lost or stored twice. ``tests/test_faults.py`` runs each
scenario as a test; this script runs them all and prints the table:

    .venv/bin/python benchmarks/faults.py              # all scenarios (about 5 minutes on 2 cores)
    .venv/bin/python benchmarks/faults.py kill_scheduled_with_loader_workers disk_full
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# A run small enough to train in seconds on a CPU: 32 px faces, a width-8 IResNet-18, 6 steps an
# epoch; log_every=1 so that every step has exactly one point of each metric.
MICRO = [
    "model.name=iresnet18", "model.width=0.125", "model.input_size=32",
    "data.synthetic_identities=12", "data.synthetic_images_per_identity=4",
    "optim.batch_size=8", "optim.lr=0.05", "schedule.milestones=[2]", "train.log_every=1",
    "eval.benchmarks=[]",  # the faults are in training and bookkeeping, not in evaluation
]


@dataclass
class Outcome:
    fault: str
    expected: str
    observed: str
    points_lost: int  # metric points (loss) missing, plus those stored twice
    ok: bool
    detail: str = ""


def _interactive_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Lab:
    """A directory with a runs.db, and `lrfr` run against it as a user would."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = self.root / "runs.db"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                    "LRFR_CACHE": os.environ.get("LRFR_CACHE", str(Path(tempfile.gettempdir()) / "lrfr-faults-cache")),
                    "LRFR_CATALOG": str(self.root / "catalog.json"), **self.env}
        self.env.pop("LRFR_DB", None)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "lrfr_tui.cli", *args, "--db", str(self.db)]

    def lrfr(self, *args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, cwd=self.root,
                              env={**self.env, **(env or {})})

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        # The scenarios stop a started process with SIGINT, as Ctrl-C would. A shell that runs this
        # harness in the background (`nohup ... &`) starts it with SIGINT ignored, which the child would
        # inherit: give it the default disposition a terminal's foreground process has.
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=self.root, env={**self.env, **(env or {})}, preexec_fn=_interactive_signals)

    def sets(self, *overrides: str) -> list[str]:
        return [a for o in (*MICRO, *overrides) for a in ("--set", o)]

    def show(self, run_id: int) -> dict:
        proc = self.lrfr("show", str(run_id), "--json")
        if proc.returncode != 0:
            raise AssertionError(f"lrfr show failed: {proc.stderr}")
        return json.loads(proc.stdout)

    def sql(self, query: str, *params) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(query, params).fetchall()
        finally:
            conn.close()

    def raw_status(self, run_id: int) -> str | None:
        rows = self.sql("SELECT status FROM runs WHERE id=?", run_id)
        return rows[0][0] if rows else None

    def step(self, run_id: int) -> int:
        """The last step with a stored loss point (0 while runs.db is still being created)."""
        try:
            rows = self.sql("SELECT COALESCE(MAX(step), 0) FROM metrics WHERE run_id=? AND key='loss'", run_id)
        except sqlite3.OperationalError:  # no such table yet: the first command is creating the schema
            return 0
        return int(rows[0][0])

    def points(self, run_id: int, total: int) -> tuple[int, int]:
        """(loss points missing of steps 1..total, loss points stored more than once)."""
        steps = [s for (s,) in self.sql("SELECT step FROM metrics WHERE run_id=? AND key='loss'", run_id)]
        return len(set(range(1, total + 1)) - set(steps)), len(steps) - len(set(steps))

    def events(self, run_id: int, kind: str) -> list[str]:
        return [m for (m,) in self.sql("SELECT message FROM events WHERE run_id=? AND kind=? ORDER BY wall",
                                       run_id, kind)]

    def run_dir(self, run_id: int) -> Path:
        return self.root / "runs" / str(run_id)


def wait_for(predicate: Callable[[], object], timeout: float = 180, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def _weights(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["backbone"]


def _same_weights(a: Path, b: Path) -> bool:
    import torch

    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ---------------------------------------------------------------- the scenarios


def kill_scheduled_with_loader_workers(lab: Lab) -> Outcome:
    """`lrfr kill` of a scheduled run whose DataLoader has 2 worker processes, mid-epoch."""
    total, per_epoch = 150, 30  # 240 faces / batch 8
    sets = lab.sets("data.num_workers=2", "data.synthetic_images_per_identity=20", f"schedule.max_steps={total}",
                    "schedule.epochs=100")
    reference = lab.lrfr("run", "--preset", "tiny", *sets, "--name", "uninterrupted")
    assert reference.returncode == 0, reference.stderr[-2000:]
    queued = lab.lrfr("run", "--preset", "tiny", *sets, "--queue", "--json")
    run_id = json.loads(queued.stdout)["run"]
    worker = lab.start("worker", "--poll", "0.3", env={"LRFR_FAKE_GPUS": "0"})
    try:
        wait_for(lambda: lab.step(run_id) >= per_epoch + 3, timeout=300)  # into the second epoch
        killed = lab.lrfr("kill", str(run_id), "--grace", "60")
        state = lab.show(run_id)["run"]
        ckpt = lab.run_dir(run_id) / "checkpoint.pt"
        import torch

        cut = torch.load(ckpt, weights_only=True)["step"] if ckpt.exists() else None
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(60)
    mid = cut is not None and cut % per_epoch != 0
    observed = f"{state['status']}, checkpoint at step {cut} ({'mid-epoch' if mid else 'at an epoch end'})"
    resumed = lab.lrfr("resume", str(run_id))
    final = lab.show(run_id)["run"]
    same = resumed.returncode == 0 and _same_weights(lab.run_dir(run_id) / "checkpoint.pt",
                                                    lab.run_dir(1) / "checkpoint.pt")
    lost, twice = lab.points(run_id, total)
    observed += f"; resumed: {final['status']} at step {final['step']}, weights {'==' if same else '!='} uninterrupted"
    ok = (killed.returncode == 0 and state["status"] == "killed" and cut is not None and per_epoch < cut < total
          and final["status"] == "finished" and same and lost == twice == 0)
    return Outcome("kill (SIGTERM to the group), num_workers=2, mid-epoch", "killed + checkpoint; resume = "
                   "uninterrupted weights", observed, lost + twice, ok, killed.stderr[-500:])


def foreground_and_worker_race(lab: Lab) -> Outcome:
    """`lrfr run` in the foreground while `lrfr worker` drives the same runs.db."""
    worker = lab.start("worker", "--poll", "0.2", env={"LRFR_FAKE_GPUS": "0"})
    try:
        time.sleep(1.0)
        total = 12
        fg = lab.lrfr("run", "--preset", "tiny", *lab.sets("data.num_workers=2", f"schedule.max_steps={total}"))
    finally:
        worker.send_signal(signal.SIGINT)
        _, worker_err = worker.communicate(timeout=60)
    status = lab.raw_status(1)
    ends = lab.events(1, "status")
    launched = "run 1 started" in worker_err
    lost, twice = lab.points(1, total)
    observed = f"{status}; {len(ends)} end event(s); scheduler launched it: {'yes' if launched else 'no'}"
    ok = fg.returncode == 0 and status == "finished" and len(ends) == 1 and not launched and lost == twice == 0
    return Outcome("foreground run + a scheduler on the same runs.db", "trained once", observed, lost + twice, ok,
                   fg.stderr[-500:])


def two_resumes_race(lab: Lab) -> Outcome:
    """Two `lrfr resume N` started at the same moment."""
    total = 12
    queued = lab.lrfr("run", "--preset", "tiny", *lab.sets("data.num_workers=0", f"schedule.max_steps={total}"),
                      "--queue", "--json")
    run_id = json.loads(queued.stdout)["run"]
    lab.lrfr("kill", str(run_id))  # a queued run is marked killed: resumable
    procs = [lab.start("resume", str(run_id)) for _ in range(2)]
    results = [(p.wait(600), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    loser = next((err for code, _, err in results if code != 0), "")
    ends = lab.events(run_id, "status")
    lost, twice = lab.points(run_id, total)
    observed = f"exit codes {codes}; {len(ends)} end event(s); loser: {loser.strip().splitlines()[-1:]}"
    ok = (codes == [0, 2] and len(ends) == 1 and lab.raw_status(run_id) == "finished" and lost == twice == 0
          and len(loser.strip().splitlines()) == 1 and "Traceback" not in loser)
    return Outcome("two `lrfr resume N` at once", "one trains, the other: one line, exit 2", observed,
                   lost + twice, ok)


def _hold_write_lock(db: Path, seconds: float) -> subprocess.Popen:
    """Another process takes runs.db's write lock and keeps it for ``seconds``."""
    code = ("import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            "time.sleep(float(sys.argv[2]))\n"
            "c.execute('ROLLBACK')\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def write_lock_during_training(lab: Lab) -> Outcome:
    """Another process holds runs.db's write lock for 12 s (longer than the writer's 5 s busy timeout)."""
    total = 150
    run = lab.start("run", "--preset", "tiny", *lab.sets("data.num_workers=0", f"schedule.max_steps={total}",
                                                          "schedule.epochs=100"))
    wait_for(lambda: lab.db.exists() and lab.step(1) >= 3, timeout=300)
    before = lab.step(1)
    holder = _hold_write_lock(lab.db, 12)
    time.sleep(11)
    log = (lab.run_dir(1) / "train.log").read_text()
    trained_meanwhile = max(int(line.split(" step ")[1].split()[0]) for line in log.splitlines()
                            if " step " in line) - before
    holder.wait(30)
    code = run.wait(600)
    status = lab.raw_status(1)
    lost, twice = lab.points(1, total)
    observed = f"{status} (exit {code}); {trained_meanwhile} steps trained while the lock was held"
    ok = code == 0 and status == "finished" and trained_meanwhile > 0 and lost == twice == 0
    return Outcome("write lock held 12 s by another process, mid-training", "keeps training; nothing lost",
                   observed, lost + twice, ok, run.stderr.read()[-500:] if run.stderr else "")


def write_lock_at_the_end(lab: Lab) -> Outcome:
    """The lock is held from before the run ends until after its worker gave up waiting."""
    total = 100
    run = lab.start("run", "--preset", "tiny", *lab.sets("data.num_workers=0", f"schedule.max_steps={total}",
                                                          "schedule.epochs=100"),
                    env={"LRFR_FINAL_WRITE_WAIT_S": "3"})
    wait_for(lambda: lab.db.exists() and lab.step(1) >= 2, timeout=300)
    holder = _hold_write_lock(lab.db, 45)
    code = run.wait(300)
    err = run.stderr.read()
    pending = (lab.run_dir(1) / "pending.jsonl").exists()
    holder.send_signal(signal.SIGTERM)
    holder.wait(30)
    seen = lab.show(1)["run"]  # the next reader applies pending.jsonl
    lost, twice = lab.points(1, total)
    observed = (f"worker exit {code}, pending.jsonl {'left' if pending else 'missing'}; next reader sees "
                f"{seen['status']}")
    ok = code == 4 and pending and seen["status"] == "finished" and lost == twice == 0 \
        and len([line for line in err.splitlines() if line.startswith("lrfr: error:")]) == 1
    return Outcome("write lock held past the run's end", "exit 4 + pending.jsonl; next reader: finished",
                   observed, lost + twice, ok, err[-500:])


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def can_mount_tmpfs() -> bool:
    probe = Path(tempfile.mkdtemp(prefix="lrfr-tmpfs-probe-"))
    try:
        if not _mount_tmpfs(probe, "1m"):
            return False
        subprocess.run(["umount", str(probe)], check=False)
        return True
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def disk_full(lab: Lab) -> Outcome:
    """runs.db and runs/ on a 24 MB tmpfs that another process fills up mid-training."""
    mount = lab.root / "small-disk"
    if not _mount_tmpfs(mount, "24m"):
        return Outcome("disk full (tmpfs)", "-", "skipped: cannot mount a tmpfs here", 0, True)
    try:
        inner = Lab(mount, env=lab.env)
        total = 600
        run = inner.start("run", "--preset", "tiny", *inner.sets("data.num_workers=2", f"schedule.max_steps={total}",
                                                                  "schedule.epochs=200"),
                          env={"LRFR_FINAL_WRITE_WAIT_S": "3"})
        wait_for(lambda: inner.db.exists() and inner.step(1) >= 3, timeout=300)
        filler = mount / "filler"
        with filler.open("wb") as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        code = run.wait(300)
        err = run.stderr.read()
        while_full = inner.show(1)["run"]["status"]  # the next reader, with the disk still full
        temps = [p.name for p in inner.run_dir(1).glob(".checkpoint.pt.tmp*")]
        filler.unlink()
        after = inner.show(1)["run"]
        stored = inner.step(1)
        observed = (f"worker exit {code}; while full: {while_full}; after: {after['status']}; "
                    f"temp files: {len(temps)}; reason: {(after['failure_reason'] or '')[:60]}")
        ok = (code in (1, 4) and while_full == after["status"] == "failed" and not temps
              and "Traceback" not in err)
        # Points logged after the disk filled had nowhere to go: counted, not hidden.
        lost = max(0, int(after["step"] or 0) - stored)
        return Outcome("disk full under runs.db and runs/ (tmpfs)", "failed with the reason; no temp file",
                       observed, lost, ok, err[-500:])
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def sigkill_foreground_then_resume(lab: Lab) -> Outcome:
    """`kill -9` of a foreground `lrfr run` after a checkpoint; then ls, and `lrfr resume`."""
    total = 60
    run = lab.start("run", "--preset", "tiny", *lab.sets("data.num_workers=2", f"schedule.max_steps={total}",
                                                          "schedule.epochs=100"))
    wait_for(lambda: lab.db.exists() and lab.step(1) >= 14, timeout=300)  # past two epoch checkpoints
    run.kill()
    run.wait(30)
    seen = json.loads(lab.lrfr("ls", "--json").stdout)
    status_seen = next(r["status"] for r in seen if r["id"] == 1)
    resumed = lab.lrfr("resume", "1")
    final = lab.show(1)["run"]
    lost, twice = lab.points(1, total)
    observed = f"ls sees {status_seen}; resume: {final['status']} at step {final['step']}"
    ok = status_seen == "failed" and resumed.returncode == 0 and final["status"] == "finished" and lost == twice == 0
    return Outcome("kill -9 of a foreground run, then resume", "ls: failed; resume finishes; 1 point per step",
                   observed, lost + twice, ok, resumed.stderr[-500:])


def stale_run_directory(lab: Lab) -> Outcome:
    """A new runs.db beside the runs/ of an old one: run 1 of the new db meets runs/1 of the old."""
    sets = lab.sets("data.num_workers=0", "schedule.max_steps=12")
    first = lab.lrfr("run", "--preset", "tiny", *sets)
    assert first.returncode == 0, first.stderr[-2000:]
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(str(lab.db) + suffix).unlink()
    second = lab.lrfr("run", "--preset", "tiny", *sets)
    status = lab.raw_status(1)
    adopted = bool(lab.events(1, "resume"))
    line = second.stderr.strip().splitlines()[-1:] if second.stderr.strip() else []
    observed = f"{status}; adopted the old checkpoint: {'yes' if adopted else 'no'}; says {line}"
    ok = second.returncode != 0 and status == "failed" and not adopted and "runs/1" in second.stderr
    return Outcome("new runs.db beside an old runs/", "never resumes another run's checkpoint", observed, 0, ok)


def hard_linked_db_schedulers(lab: Lab) -> Outcome:
    """Two `lrfr worker`s on one runs.db reached through a hard link."""
    lab.lrfr("run", "--preset", "tiny", *lab.sets("schedule.max_steps=2"), "--queue")
    other = lab.root / "elsewhere"
    other.mkdir()
    os.link(lab.db, other / "linked.db")
    first = lab.start("worker", "--poll", "0.3", env={"LRFR_FAKE_GPUS": "0"})
    time.sleep(3)
    second = subprocess.run([sys.executable, "-m", "lrfr_tui.cli", "worker", "--db", str(other / "linked.db")],
                            capture_output=True, text=True, timeout=120, env={**lab.env, "LRFR_FAKE_GPUS": "0"})
    first.send_signal(signal.SIGINT)
    first.wait(120)
    observed = f"second worker exit {second.returncode}: {second.stderr.strip()[-120:]}"
    ok = second.returncode == 2 and "already driven" in second.stderr
    return Outcome("a second scheduler through a hard link to runs.db", "refused (one scheduler per db)",
                   observed, 0, ok)


SCENARIOS: dict[str, Callable[[Lab], Outcome]] = {f.__name__: f for f in (
    kill_scheduled_with_loader_workers, foreground_and_worker_race, two_resumes_race, write_lock_during_training,
    write_lock_at_the_end, disk_full, sigkill_foreground_then_resume, stale_run_directory,
    hard_linked_db_schedulers)}


def main(argv: list[str]) -> int:
    names = argv or list(SCENARIOS)
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"lrfr-fault-{name}-") as tmp:
            t0 = time.monotonic()
            try:
                outcome = SCENARIOS[name](Lab(Path(tmp)))
            except Exception as exc:  # a scenario that breaks is a finding, not a crash of the table
                outcome = Outcome(name, "-", f"scenario error: {type(exc).__name__}: {exc}", -1, False)
            rows.append((outcome, time.monotonic() - t0))
            print(f"{'ok ' if outcome.ok else 'BAD'} {name} ({rows[-1][1]:.0f} s): {outcome.observed}", file=sys.stderr)
    print("| fault | expected | observed | points lost | ok |")
    print("|---|---|---|---|---|")
    for o, _ in rows:
        print(f"| {o.fault} | {o.expected} | {o.observed} | {o.points_lost} | {'yes' if o.ok else 'NO'} |")
    return 0 if all(o.ok for o, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
