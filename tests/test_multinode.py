"""Multi-node DDP on one machine: two torchrun agents (``--nnodes=2``, c10d rendezvous, gloo on the CPU) run
the journaled worker; they must train to the same weights as one agent with two processes, stop together on
SIGTERM, and the run must resume with another node count."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.config import flatten, resolve, to_dict
from lrfr_tui.journal import JOURNAL_FILE, write_spec
from lrfr_tui.runsdb import Store, journal_ingest
from tests.conftest import MICRO_OVERRIDES

pytestmark = pytest.mark.usefixtures("importable_worker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def journaled_run(store: Store, db: Path, *overrides: str) -> tuple[int, Path]:
    """A run claimed as the scheduler claims a journaled one: spec written, journal registered."""
    cfg = resolve("tiny", MICRO_OVERRIDES + ["eval.benchmarks=[lfw]", "launch.journal=on", *overrides])
    run_id = store.create_run(to_dict(cfg), flatten(cfg), "test", launcher="local")
    run_dir = db.parent / "runs" / str(run_id)
    assert store.claim(run_id, "test", [], "local", run_dir / "train.log", run_dir)
    write_spec(run_dir, run_id, store.get_run(run_id).uuid, to_dict(cfg), db)
    journal_ingest.register(store, run_id)
    return run_id, run_dir


def torchrun(run_id: int, run_dir: Path, *rdzv: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *rdzv, "-m", "lrfr_tui.worker", "--run-id", str(run_id),
            "--journal", str(run_dir)]


def two_agents(run_id: int, run_dir: Path) -> list[subprocess.Popen]:
    """Two 'nodes' of one process each, meeting at a c10d rendezvous on the first."""
    port = free_port()
    rdzv = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
            f"--rdzv-id=lrfr-{run_id}"]
    log = (run_dir / "agents.log").open("ab")
    return [subprocess.Popen(torchrun(run_id, run_dir, *rdzv), stdout=log, stderr=subprocess.STDOUT, cwd=run_dir,
                             start_new_session=True) for _ in range(2)]


def wait_all(procs: list[subprocess.Popen], timeout: float, run_dir: Path) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
        pytest.fail(f"agents did not end; log:\n{(run_dir / 'agents.log').read_text()[-3000:]}")


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    return {**{f"backbone.{k}": v for k, v in state["backbone"].items()},
            **{f"head.{k}": v for k, v in state["head"].items()}}


def test_two_agents_with_nnodes_2_train_as_one_agent_with_two_processes(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    # One intra-op thread in every process: train.threads=auto gives a process of its own on a node both
    # cores but two processes on one node one each, and bf16 kernels round differently with the split.
    overrides = ("schedule.max_steps=4", "train.threads=1")
    nodes_id, nodes_dir = journaled_run(store, db, *overrides)
    one_id, one_dir = journaled_run(store, db, *overrides)

    codes = wait_all(two_agents(nodes_id, nodes_dir), 300, nodes_dir)
    one = subprocess.run(torchrun(one_id, one_dir, "--standalone", "--nproc-per-node=2"), capture_output=True,
                         text=True, cwd=one_dir, timeout=300)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    assert codes == [0, 0], (nodes_dir / "agents.log").read_text()[-3000:]
    for run_id in (nodes_id, one_id):
        journal_ingest.ingest(store, run_id)
        run = store.get_run(run_id)
        assert run.status == "finished" and run.step == 4, run.failure_reason
    # Bit for bit: the same global batches, split the same way over the same two ranks.
    a, b = weights(nodes_dir), weights(one_dir)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []
    losses = [[v for _, v in store.metric_series(r, "loss")] for r in (nodes_id, one_id)]
    assert losses[0] == losses[1] and len(losses[0]) == 4
    store.close()


def test_sigterm_stops_every_node_at_one_step_and_a_resume_may_use_another_node_count(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    total = 24
    run_id, run_dir = journaled_run(store, db, f"schedule.max_steps={total}", "schedule.epochs=20")
    agents = two_agents(run_id, run_dir)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        journal_ingest.ingest(store, run_id)
        if store.get_run(run_id, settle=False).step >= 2:
            break
        assert all(p.poll() is None for p in agents), (run_dir / "agents.log").read_text()[-3000:]
        time.sleep(0.2)
    for p in agents:  # as scancel does: every process of every node gets it
        os.killpg(p.pid, signal.SIGTERM)
    wait_all(agents, 120, run_dir)
    journal_ingest.ingest(store, run_id)
    run = store.get_run(run_id, settle=False)
    assert run.status == "killed", f"{run.status}: {run.failure_reason}"
    # Rank 0 stops on its own SIGTERM, or on the other node's at the same agreed step.
    assert "SIGTERM" in run.failure_reason or "stop on another rank" in run.failure_reason
    stopped = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert 2 <= stopped["step"] < total and len(stopped["aug_rng"]) == 2  # both ranks' streams, one step

    # Resumed as one process on one node: it goes on from the checkpoint's step to the end.
    assert store.claim_here(run_id, os.getpid(), from_statuses=("killed",))
    proc = subprocess.run([sys.executable, "-m", "lrfr_tui.worker", "--run-id", str(run_id), "--journal",
                           str(run_dir)], capture_output=True, text=True, cwd=run_dir, timeout=300,
                          env={**os.environ, "LRFR_SCHEDULED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    journal_ingest.ingest(store, run_id)
    run = store.get_run(run_id, settle=False)
    assert run.status == "finished" and run.step == total, run.failure_reason
    assert [s for s, _ in store.metric_series(run_id, "loss")] == list(range(1, total + 1))
    records = (run_dir / JOURNAL_FILE).read_text().splitlines()
    assert sum('"resume"' in line for line in records) == 1
    store.close()
