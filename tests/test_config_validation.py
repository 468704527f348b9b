"""Config values that could only fail later are refused when the config is resolved (and by the CLI)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.augment import ResolutionSampler
from engine.config import from_dict, resolve, to_dict
from engine.errors import ConfigError

LRFR = Path(sys.executable).with_name("lrfr")
NO_CUDA = not torch.cuda.is_available()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.lr=inf", "optim.lr"),
        ("optim.lr=nan", "optim.lr"),
        ("model.width=inf", "model.width"),
        ("loss.s=inf", "loss.s"),
        ("loss.m=-inf", "loss.m"),
        ("loss.lambda=nan", "loss.lambda"),
        ("schedule.warmup_epochs=inf", "schedule.warmup_epochs"),
        ("augment.weights=[1,inf,1]", "augment.weights"),
        ("optim.clip_grad_norm=1e400", "optim.clip_grad_norm"),  # overflows to inf
        ("train.device=cudafoo", "train.device"),
        ("train.device=cuda:-1", "train.device"),
        ("train.device=cuda:", "train.device"),
        ("augment.resolutions=[7,7,20]", "augment.resolutions"),
    ],
)
def test_bad_values_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{key}\b"):
        resolve("tiny", [override])


def test_non_finite_floats_are_refused_from_stored_configs_too():
    data = to_dict(resolve("tiny"))
    data["optim"]["lr"] = float("inf")
    with pytest.raises(ConfigError, match="^optim.lr: expected a finite number"):
        from_dict(data)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_spellings_accepted_for_slurm(device):
    # A Slurm run executes on a GPU node: this machine's CUDA is irrelevant to it.
    cfg = resolve("tiny", ["launch.launcher=slurm", f"train.device={device}"])
    assert cfg.train.device == device


@pytest.mark.skipif(not NO_CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_refused_for_a_local_run_without_cuda(device):
    with pytest.raises(ConfigError, match=rf"^train.device='{device}' is not valid: CUDA is not available"):
        resolve("tiny", [f"train.device={device}"])
    # A config stored elsewhere (a checkpoint trained on a GPU) still loads here, e.g. for analysis.
    data = to_dict(resolve("tiny", ["launch.launcher=slurm", f"train.device={device}"]))
    data["launch"]["launcher"] = "local"
    assert from_dict(data).train.device == device


@pytest.mark.skipif(NO_CUDA, reason="needs CUDA")
def test_cuda_index_beyond_the_device_count_is_refused():
    count = torch.cuda.device_count()
    assert resolve("tiny", [f"train.device=cuda:{count - 1}"]).train.device == f"cuda:{count - 1}"
    with pytest.raises(ConfigError, match=rf"^train.device='cuda:{count}' is not valid: this machine has"):
        resolve("tiny", [f"train.device=cuda:{count}"])


def test_duplicate_resolutions_one_rule_for_config_and_sampler():
    with pytest.raises(ConfigError) as from_config:
        resolve("tiny", ["augment.resolutions=[7,7,20]"])
    with pytest.raises(ConfigError) as from_sampler:
        ResolutionSampler((7, 7, 20), (1.0, 1.0, 2.0))
    assert str(from_config.value) == str(from_sampler.value)
    assert "augment.resolutions=[7, 7, 20]" in str(from_config.value) and "repeated: 7" in str(from_config.value)


def test_slurm_partition_with_a_line_break_is_refused():
    with pytest.raises(ConfigError, match=r"^launch.slurm_partition="):
        resolve("tiny", ["launch.launcher=slurm", "launch.slurm_partition=debug\nrm -rf /"])
    for bad in ("gpu;id", "gpu $(id)", "gpu`id`", "a b", "gpu#x", "gpu'x"):
        with pytest.raises(ConfigError, match=r"^launch.slurm_partition="):
            resolve("tiny", ["launch.launcher=slurm", f"launch.slurm_partition={bad}"])
    assert resolve("tiny", ["launch.slurm_partition=gpu-a100,debug_2"]).launch.slurm_partition == "gpu-a100,debug_2"


def _lrfr_all(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Run the ``lrfr`` commands side by side (each pays an interpreter start and a torch import)."""
    procs = [subprocess.Popen([str(LRFR), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in commands]
    results = []
    for args, proc in zip(commands, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(args, proc.returncode, stdout, stderr))
    return results


def _stored_runs(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0
    finally:
        conn.close()


def test_cli_refuses_bad_values_and_queues_nothing(tmp_path):
    db = tmp_path / "runs.db"
    # optim.lr is refused while parsing the value, train.device by validate (after importing torch).
    config_overrides = ["optim.lr=inf", "train.device=cudafoo"]
    *configs, queued = _lrfr_all(
        *(["config", "--preset", "tiny", "--set", o] for o in config_overrides),
        ["run", "--queue", "--preset", "tiny", "--set", "augment.resolutions=[7,7,20]", "--db", str(db)],
    )
    for override, out in zip(config_overrides, configs, strict=True):
        assert out.returncode == 2, (override, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lrfr: error:"), out.stderr
        assert override.partition("=")[0] in lines[0] and "Traceback" not in out.stderr
        assert out.stdout == ""
    # (The CLI's error formatting is changing elsewhere: only the exit code and the empty queue are asserted.)
    assert queued.returncode != 0, (queued.stdout, queued.stderr)
    assert _stored_runs(db) == 0
