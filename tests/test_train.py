"""The Siamese loop on a micro configuration: learning, exact resume, signals, divergence."""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from engine.config import resolve
from engine.errors import TrainingDiverged
from engine.reporting import Reporter
from engine.train import StopFlag, TrainingInterrupted, train
from tests.conftest import MICRO_OVERRIDES


class Recorder(Reporter):
    def __init__(self, stop_at: int | None = None, stop: StopFlag | None = None) -> None:
        self.points: list[tuple[int, dict]] = []
        self.events: list[str] = []
        self.stop_at, self.stop = stop_at, stop

    def metrics(self, step, values):
        self.points.append((step, dict(values)))
        if self.stop_at is not None and step >= self.stop_at:
            self.stop.request("test")

    def event(self, kind, message, **fields):
        self.events.append(kind)


def test_loss_decreases(micro_config, tmp_path):
    cfg = resolve("tiny", MICRO_OVERRIDES + ["schedule.epochs=8", "schedule.milestones=[6]"])
    rec = Recorder()
    result = train(cfg, tmp_path, rec)
    losses = [v["loss"] for _, v in rec.points]
    assert result.step == result.total_steps == 8 * (12 * 4 // 8)
    assert all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.8 * first, (first, last)
    assert {"loss_cls", "loss_dist", "lr", "images_per_s"} <= set(rec.points[0][1])
    assert (tmp_path / "checkpoint.pt").exists()


def test_lr_follows_multistep_schedule(micro_config, tmp_path):
    rec = Recorder()
    train(micro_config, tmp_path, rec)  # 6 steps per epoch, milestone at epoch 2
    lrs = {step: v["lr"] for step, v in rec.points}
    assert lrs[1] == pytest.approx(0.05) and lrs[12] == pytest.approx(0.05)
    assert lrs[13] == pytest.approx(0.005)


def test_resume_after_interruption_matches_uninterrupted(micro_config, tmp_path):
    # Uninterrupted reference.
    ref = train(micro_config, tmp_path / "ref", Recorder())
    # Interrupted mid-epoch (step 8 of 18, epoch 1 batch 2), then resumed from its checkpoint.
    stop = StopFlag()
    with pytest.raises(TrainingInterrupted) as info:
        train(micro_config, tmp_path / "cut", Recorder(stop_at=8, stop=stop), stop=stop)
    assert info.value.step == 8
    rec = Recorder()
    resumed = train(micro_config, tmp_path / "cut", rec)
    assert rec.points[0][0] == 9 and "resume" in rec.events
    assert resumed.step == ref.step
    ref_state, res_state = ref.backbone.state_dict(), resumed.backbone.state_dict()
    for key in ref_state:
        assert torch.equal(ref_state[key], res_state[key]), key


def test_baseline_has_no_distance_term(tmp_path):
    cfg = resolve("tiny-baseline", MICRO_OVERRIDES + ["schedule.max_steps=3"])
    rec = Recorder()
    train(cfg, tmp_path, rec)
    assert all(v["loss_dist"] == 0 for _, v in rec.points)
    # One forward per sample: images/s counts each sample once.
    assert all(v["images_per_s"] == pytest.approx(v["samples_per_s"]) for _, v in rec.points)


def test_nan_loss_stops_with_clear_failure(tmp_path):
    cfg = resolve("tiny", MICRO_OVERRIDES + ["optim.lr=1e30", "loss.head=softmax"])
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(cfg, tmp_path, Recorder())


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from engine.config import resolve
    from engine.reporting import Reporter
    from engine.train import TrainingInterrupted, EXIT_INTERRUPTED, train
    from tests.conftest import MICRO_OVERRIDES

    class SignalSelf(Reporter):
        def metrics(self, step, values):
            if step == 4:
                os.kill(os.getpid(), signal.SIGTERM)

    cfg = resolve("tiny", MICRO_OVERRIDES)
    try:
        train(cfg, sys.argv[1], SignalSelf())
    except TrainingInterrupted as exc:
        print("interrupted", exc.step, exc.reason)
        sys.exit(EXIT_INTERRUPTED)
    """
)


def test_sigterm_checkpoints_then_exits_with_distinct_code(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SIGTERM_SCRIPT)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "interrupted 4 SIGTERM" in proc.stdout
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4


DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    import torch.distributed as dist
    from engine.config import resolve
    from engine.train import train
    from tests.conftest import MICRO_OVERRIDES

    cfg = resolve("tiny", MICRO_OVERRIDES + ["schedule.max_steps=4"])
    result = train(cfg, sys.argv[1])
    assert dist.get_world_size() == 2 and dist.get_backend() == "gloo"
    torch.save(result.backbone.state_dict(), os.path.join(sys.argv[1], f"rank{dist.get_rank()}.pt"))
    dist.destroy_process_group()
    """
)


def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(out)]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    for key, value in r0.items():
        if "running" in key or "num_batches" in key:
            continue  # BatchNorm running statistics are per process (no SyncBN), as in the paper's code
        assert torch.equal(value, r1[key]), key
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 4
