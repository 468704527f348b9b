"""The Slurm launcher against a real single-node cluster (``.ci/slurm_up.sh`` brings one up).

No mocks: the worker runs as a Slurm job and records its own status in runs.db. Without a
cluster the session fixture runs ``.ci/slurm_up.sh`` once (as root it apt-installs and starts
one; set LRFR_NO_SLURM_UP=1 to prevent that); if there is still none, the cluster tests are
skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from engine.config import flatten, resolve, to_dict
from engine.errors import LrfrError
from lrfr_tui.launchers import get_launcher
from lrfr_tui.launchers.base import Handle, LaunchRequest
from lrfr_tui.runsdb import Store, runs_root
from tests.conftest import MICRO_OVERRIDES

REPO = Path(__file__).resolve().parents[1]
SLURM_UP = REPO / ".ci" / "slurm_up.sh"
# One CPU per job: the CI node may have only 2 cores (the default of 8 would never be scheduled).
SLURM_OVERRIDES = ["launch.launcher=slurm", "launch.gpus=0", "launch.slurm_cpus_per_task=1"]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _cluster_problem() -> str | None:
    """None when sinfo answers and the node is idle/mixed/allocated; else why not."""
    if shutil.which("sinfo") is None:
        return "sinfo not found on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0:
        return f"sinfo failed: {_last_line(out.stderr) or f'exit {out.returncode}'}"
    states = [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]
    if not any(s in ("idle", "mix", "alloc", "comp") for s in states):
        return f"no usable node (sinfo: {out.stdout.strip() or 'no nodes'})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    problem = _cluster_problem()
    if problem is None:
        return
    # LRFR_NO_SLURM_UP=1: do not install/start a cluster from the tests (slurm_up.sh needs root).
    if SLURM_UP.exists() and shutil.which("bash") and os.environ.get("LRFR_NO_SLURM_UP", "") in ("", "0"):
        try:
            up = subprocess.run(["bash", str(SLURM_UP)], capture_output=True, text=True, timeout=600)
            if up.returncode != 0:
                problem = f"{problem}; {_last_line(up.stderr) or f'slurm_up.sh: exit {up.returncode}'}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = f"{problem}; slurm_up.sh: {exc}"
        else:
            if up.returncode == 0:
                problem = _cluster_problem()
    if problem is not None:
        pytest.skip(f"no single-node Slurm cluster: {problem}")


def _request(db: Path, overrides: list[str]) -> LaunchRequest:
    cfg = resolve("tiny", MICRO_OVERRIDES + SLURM_OVERRIDES + overrides)
    store = Store(db)
    run_id = store.create_run(to_dict(cfg), flatten(cfg), "test", launcher="slurm")
    store.close()
    run_dir = runs_root(db) / str(run_id)
    return LaunchRequest(run_id=run_id, db=db.resolve(), run_dir=run_dir, log_path=run_dir / "train.log",
                         gpus=[], launch=cfg.launch)


def _wait(predicate, timeout_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else "(no log)"
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}; log tail:\n{tail}")


def _squeue_gone(job_id: str) -> None:
    subprocess.run(["scancel", job_id], capture_output=True, check=False)


def test_slurm_run_finishes_and_records_results(slurm_cluster, tmp_path):
    db = tmp_path / "runs.db"
    request = _request(db, ["schedule.max_steps=4", "eval.benchmarks=[lfw,lowres_lfw]"])
    launcher = get_launcher("slurm")
    handle = launcher.start(request)
    assert handle.launcher == "slurm" and handle.job_id and handle.job_id.isdigit()
    try:
        assert launcher.is_alive(handle, request.run_id)
        assert launcher.describe(handle, request.run_id).split()[0] in ("PENDING", "CONFIGURING", "RUNNING")
        _wait(lambda: not launcher.is_alive(handle, request.run_id), 180, "the Slurm job to end",
              request.log_path)
    finally:
        _squeue_gone(handle.job_id)

    store = Store(db)
    run = store.get_run(request.run_id)
    log = request.log_path.read_text()
    assert run.status == "finished", f"{run.status}: {run.failure_reason}\n{log[-3000:]}"
    assert run.exit_code == 0
    assert run.step == 4
    assert store.metric_series(request.run_id, "loss"), "no loss metrics stored"
    results = store.results(request.run_id)
    assert results, "no benchmark results stored"
    assert {r["benchmark"] for r in results} >= {"lfw"}
    store.close()
    # The job's output went to the run's log: submission, the worker's own lines, the exit.
    assert f"submitted to Slurm as job {handle.job_id}" in log
    assert f"slurm job {handle.job_id} on " in log
    assert "training steps 0 -> 4" in log
    assert f"slurm job {handle.job_id}: worker exited with code 0" in log
    assert (request.run_dir / "slurm").is_dir()
    # A finished job is not alive, and a foreign or unknown job id is not this run's.
    assert not launcher.is_alive(Handle("slurm", job_id=handle.job_id), request.run_id + 1)
    assert not launcher.is_alive(Handle("slurm", job_id="999999999"), request.run_id)
    launcher.stop(handle, request.run_id, grace_s=1)  # stopping an ended job is a no-op


def test_slurm_stop_checkpoints_and_marks_killed(slurm_cluster, tmp_path):
    import torch

    db = tmp_path / "runs.db"
    request = _request(db, ["schedule.max_steps=400", "schedule.epochs=200", "eval.benchmarks=[lfw]"])
    launcher = get_launcher("slurm")
    handle = launcher.start(request)
    store = Store(db)
    try:
        def training() -> bool:
            run = store.get_run(request.run_id)
            assert run.status in ("queued", "running"), f"run ended early: {run.status} {run.failure_reason}"
            return run.status == "running" and run.step > 0

        _wait(training, 180, "the run to be training", request.log_path)
        launcher.stop(handle, request.run_id, grace_s=60)
        _wait(lambda: not launcher.is_alive(handle, request.run_id), 90, "the stopped job to end",
              request.log_path)
    finally:
        _squeue_gone(handle.job_id)

    run = store.get_run(request.run_id)
    store.close()
    log = request.log_path.read_text()
    assert run.status == "killed", f"{run.status}: {run.failure_reason}\n{log[-3000:]}"
    assert "SIGTERM" in (run.failure_reason or "")
    checkpoint = request.run_dir / "checkpoint.pt"
    assert checkpoint.exists(), log[-3000:]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert 0 < state["step"] < 400
    assert f"slurm job {handle.job_id}: worker exited with code 3" in log


def test_missing_sbatch_is_one_clear_error(tmp_path, monkeypatch):
    from lrfr_tui.launchers.slurm import SlurmLauncher

    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    request = LaunchRequest(run_id=1, db=tmp_path / "runs.db", run_dir=tmp_path / "runs" / "1",
                            log_path=tmp_path / "runs" / "1" / "train.log")
    with pytest.raises(LrfrError, match=r"^cannot submit to Slurm: sbatch not found on PATH$"):
        SlurmLauncher().start(request)
    # Without squeue nothing can be known about the job: it is not declared dead on that alone.
    assert SlurmLauncher().job_state(Handle("slurm", job_id="1"), 1) == "UNKNOWN"
    assert SlurmLauncher().is_alive(Handle("slurm", job_id="1"), 1)
    with pytest.raises(LrfrError, match="scancel not found"):
        SlurmLauncher().stop(Handle("slurm", job_id="1"), 1, grace_s=0)


def test_sbatch_parameters_follow_the_launch_config(tmp_path):
    """The sbatch flags a request turns into (no cluster needed)."""
    from lrfr_tui.launchers.slurm import SlurmLauncher, worker_command

    cfg = resolve("tiny", MICRO_OVERRIDES + ["launch.gpus=4", "launch.slurm_partition=gpu",
                                             "launch.slurm_time_min=90", "launch.slurm_mem_gb=64",
                                             "launch.slurm_cpus_per_task=16"])
    request = LaunchRequest(run_id=7, db=tmp_path / "runs.db", run_dir=tmp_path / "runs" / "7",
                            log_path=tmp_path / "runs" / "7" / "train.log", launch=cfg.launch)
    params = SlurmLauncher().executor_parameters(request)
    assert params["job_name"] == "lrfr-7"
    assert params["gres"] == "gpu:4" and params["partition"] == "gpu"
    assert params["time"] == 90 and params["mem"] == "64G" and params["cpus_per_task"] == 16
    assert params["additional_parameters"]["signal"] == "TERM@120"
    command = worker_command(request)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert command[5:] == request.worker_args()
    assert command[5:7] == ["-m", "lrfr_tui.worker"]

    cpu = resolve("tiny", MICRO_OVERRIDES + ["launch.gpus=0"])
    request.launch = cpu.launch
    params = SlurmLauncher().executor_parameters(request)
    assert "gres" not in params and "partition" not in params and "mem" not in params
    assert params["time"] is None  # partition default
    assert worker_command(request) == [request.python, *request.worker_args()]


# ---------------------------------------------------------------- through the scheduler and the journal


def _queue(db: Path, overrides: list[str]) -> int:
    cfg = resolve("tiny", MICRO_OVERRIDES + SLURM_OVERRIDES + overrides)
    store = Store(db)
    run_id = store.create_run(to_dict(cfg), flatten(cfg), "test")
    store.close()
    return run_id


def _drive(sched, run_id: int, until, timeout_s: float, what: str):
    """Scheduler passes (ingesting journals) until ``until(run)``; the run is returned."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sched.step()
        run = sched.store.get_run(run_id)
        if until(run):
            return run
        time.sleep(0.5)
    log = Path(run.log_path).read_text()[-3000:] if run.log_path and Path(run.log_path).exists() else "(no log)"
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (run {run.status}); log tail:\n{log}")


def _cancel_all(sched, run_id: int) -> None:
    job = sched.store.get_run(run_id).job_id
    if job:
        _squeue_gone(job)


def test_slurm_run_goes_through_the_journal_end_to_end(slurm_cluster, tmp_path):
    from lrfr_tui.journal import JOURNAL_FILE, read_journal
    from lrfr_tui.runsdb import journal_ingest
    from lrfr_tui.scheduler import Scheduler

    db = tmp_path / "runs.db"
    run_id = _queue(db, ["schedule.max_steps=4", "eval.benchmarks=[lfw]"])
    sched = Scheduler(db, discover=lambda: [])
    try:
        run = _drive(sched, run_id, lambda r: r.is_final, 240, "the run to end")
    finally:
        _cancel_all(sched, run_id)
    log = Path(run.log_path).read_text()
    assert run.status == "finished", f"{run.failure_reason}\n{log[-3000:]}"
    assert run.step == 4 and sched.store.metric_series(run_id, "loss")
    assert {r["benchmark"] for r in sched.store.results(run_id)} >= {"lfw"}
    # The job's worker was journaled (it never opened runs.db) and all of its journal was applied, once.
    assert f"--journal {run.run_dir}" in log
    records = read_journal(Path(run.run_dir) / JOURNAL_FILE).records
    assert journal_ingest.position(sched.store, run_id)[0] == records[-1].seq == len(records)
    assert any(r.op[0] == "ended" and r.op[1] == "finished" for r in records)
    sched.store.close()


def test_two_task_job_runs_the_per_node_commands_and_a_kill_stops_both_nodes(slurm_cluster, tmp_path):
    """launch.nodes=2 as one node with 2 tasks (this cluster has one node): each task runs what a node of a
    2-node job runs (torchrun --nnodes=2 --node-rank=<task> ... rendezvous on the first node)."""
    import torch

    from lrfr_tui.launchers.slurm import SlurmLauncher
    from lrfr_tui.scheduler import Scheduler, stop_run

    db = tmp_path / "runs.db"
    run_id = _queue(db, ["launch.nodes=2", "schedule.max_steps=400", "schedule.epochs=200", "eval.benchmarks=[lfw]"])
    sched = Scheduler(db, discover=lambda: [],
                      launchers={"slurm": SlurmLauncher(extra_parameters={"nodes": 1, "ntasks_per_node": 2})})
    try:
        _drive(sched, run_id, lambda r: r.is_final or r.step >= 2, 300, "both nodes to be training")
        running = sched.store.get_run(run_id)
        assert running.status == "running", running.failure_reason
        status = stop_run(sched.store, running, grace_s=90, scheduler=sched)
        run = _drive(sched, run_id, lambda r: r.is_final, 120, "the stopped run to end")
    finally:
        _cancel_all(sched, run_id)
    log = Path(run.log_path).read_text()
    assert status == run.status == "killed", f"{run.failure_reason}\n{log[-3000:]}"
    assert "SIGTERM" in run.failure_reason or "stop on another rank" in run.failure_reason
    for node in (0, 1):
        assert f"(node {node} of 2)" in log and f"--nnodes=2 --node-rank={node} --nproc-per-node=1" in log
    assert "--master-addr=" in log and "--master-port=" in log
    state = torch.load(Path(run.run_dir) / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert len(state["aug_rng"]) == 2  # a world of 2, one rank per node, stopped at one step
    assert 2 <= state["step"] < 400
    sched.store.close()


def test_time_limit_signal_checkpoints_requeues_and_resumes_as_the_same_run(slurm_cluster, tmp_path):
    """``--signal=USR1@S --requeue``: the worker checkpoints on SIGUSR1 and requeues its job, which resumes the
    run. The signal is sent with ``scancel --signal=USR1`` (what Slurm sends S seconds before the limit)."""
    from lrfr_tui.scheduler import Scheduler

    db = tmp_path / "runs.db"
    total = 30
    run_id = _queue(db, ["launch.slurm_requeue=true", f"schedule.max_steps={total}", "schedule.epochs=20",
                         "eval.benchmarks=[lfw]"])
    sched = Scheduler(db, discover=lambda: [])
    try:
        running = _drive(sched, run_id, lambda r: r.is_final or r.step >= 3, 300, "the run to be training")
        assert running.status == "running", running.failure_reason
        job = running.job_id
        subprocess.run(["scancel", "--signal=USR1", job], check=True, capture_output=True, timeout=30)
        run = _drive(sched, run_id, lambda r: r.is_final, 600, "the requeued run to end")
    finally:
        _cancel_all(sched, run_id)
    log = Path(run.log_path).read_text()
    assert run.status == "finished", f"{run.failure_reason}\n{log[-3000:]}"
    assert run.job_id == job  # the same job, requeued, not a new submission
    kinds = [k for (k,) in sched.store.conn.execute("SELECT kind FROM events WHERE run_id=? ORDER BY wall",
                                                     (run_id,))]
    assert kinds.count("requeue") == 1 and kinds.count("resume") == 1
    assert kinds.index("requeue") < kinds.index("resume")
    assert [s for s, _ in sched.store.metric_series(run_id, "loss")] == list(range(1, total + 1))
    assert log.count(f"slurm job {job} on ") == 2  # two starts of one job
    sched.store.close()


def test_multi_node_and_requeue_parameters_and_per_node_commands(tmp_path):
    """What a 2-node job and a requeueing job are submitted as, and each node's command (no cluster needed)."""
    from lrfr_tui.launchers.slurm import SlurmLauncher, rendezvous_port, task_command

    cfg = resolve("tiny", MICRO_OVERRIDES + ["launch.launcher=slurm", "launch.nodes=2", "launch.gpus=8",
                                             "launch.slurm_requeue=true", "launch.slurm_time_min=60"])
    request = LaunchRequest(run_id=7, db=tmp_path / "runs.db", run_dir=tmp_path / "runs" / "7",
                            log_path=tmp_path / "runs" / "7" / "train.log", launch=cfg.launch, journal=True)
    params = SlurmLauncher().executor_parameters(request)
    assert params["nodes"] == 2 and params["ntasks_per_node"] == 1 and params["gres"] == "gpu:8"
    assert params["additional_parameters"]["signal"] == "USR1@120"
    assert params["additional_parameters"]["requeue"] is True
    assert params["additional_parameters"]["chdir"] == str(request.run_dir)  # compute nodes need not see runs.db
    script = SlurmLauncher().sbatch_script(request)
    assert "#SBATCH --requeue" in script and "#SBATCH --nodes=2" in script
    args = request.worker_args()
    assert args[-2:] == ["--journal", str(request.run_dir)] and "--db" not in args
    node1 = task_command("py", args, 2, 8, node_rank=1, master="gpu-a17", port=rendezvous_port("123456"))
    assert node1 == ["py", "-m", "torch.distributed.run", "--nnodes=2", "--node-rank=1", "--nproc-per-node=8",
                     "--master-addr=gpu-a17", "--master-port=23456", *args]
    assert task_command("py", args, 1, 0) == ["py", *args]
    assert task_command("py", args, 1, 2)[3:5] == ["--standalone", "--nproc_per_node=2"]

    with pytest.raises(LrfrError, match="launch.nodes"):
        resolve("tiny", MICRO_OVERRIDES + ["launch.nodes=2"])  # more than one node needs Slurm
