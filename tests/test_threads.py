"""train.threads: the intra-op thread count torch trains and evaluates with (engine/threads.py)."""

from __future__ import annotations

import pytest
import torch

from engine import threads as threads_module
from engine.config import resolve
from engine.errors import ConfigError
from engine.evaluate import benchmarks as bench_module
from engine.evaluate import run_benchmarks
from engine.reporting import Reporter
from engine.threads import resolve_threads, torch_threads
from engine.train import train
from tests.conftest import MICRO_OVERRIDES


class ThreadsSeen(Reporter):
    """torch's intra-op thread count at every logged training step."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def metrics(self, step, values):
        self.seen.append(torch.get_num_threads())


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_auto_is_the_cores_the_loader_workers_leave():
    assert resolve_threads(0, loader_workers=1, cores=2, processes=1) == 1
    assert resolve_threads(0, loader_workers=0, cores=2, processes=1) == 2
    assert resolve_threads(0, loader_workers=2, cores=16, processes=1) == 14
    assert resolve_threads(0, loader_workers=4, cores=2, processes=1) == 1  # at least one
    assert resolve_threads(0, loader_workers=1, cores=16, processes=4) == 3  # torchrun: cores per process
    assert resolve_threads(2, loader_workers=1, cores=2, processes=1) == 2  # an explicit count as given,
    assert resolve_threads(3, loader_workers=1, cores=2, processes=1) == 2  # up to the cores


def test_auto_reads_the_affinity_and_torchrun(monkeypatch):
    monkeypatch.setattr(threads_module.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resolve_threads(0, loader_workers=1) == 2


def test_config_key_defaults_to_auto_and_rejects_negatives():
    assert resolve("tiny").train.threads == 0
    assert resolve("tiny", ["train.threads=2"]).train.threads == 2
    with pytest.raises(ConfigError, match="train.threads"):
        resolve("tiny", ["train.threads=-1"])


def test_torch_threads_restores_the_previous_count(restore_threads):
    torch.set_num_threads(2)
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("setting", [1, 2])
def test_train_threads_reaches_torch_in_the_training_loop(tmp_path, monkeypatch, restore_threads, setting):
    monkeypatch.setattr(threads_module, "available_cores", lambda: 2)  # whatever this machine has
    cfg = resolve("tiny", MICRO_OVERRIDES + ["schedule.epochs=1", f"train.threads={setting}"])
    torch.set_num_threads(3 - setting)
    rec = ThreadsSeen()
    train(cfg, tmp_path, rec)
    assert rec.seen and set(rec.seen) == {setting}
    assert torch.get_num_threads() == 3 - setting  # the caller's count again


def test_auto_in_training_leaves_the_loader_workers_their_cores(tmp_path, monkeypatch, restore_threads):
    monkeypatch.setattr(threads_module, "available_cores", lambda: 3)
    cfg = resolve("tiny", MICRO_OVERRIDES + ["schedule.epochs=1", "data.num_workers=1"])
    rec = ThreadsSeen()
    train(cfg, tmp_path, rec)
    assert set(rec.seen) == {2}


def test_evaluation_runs_with_train_threads(monkeypatch, micro_config, restore_threads):
    seen: list[int] = []

    def probe(ctx):
        seen.append(torch.get_num_threads())

    monkeypatch.setitem(bench_module.BENCHMARKS, "probe", probe)
    micro_config.eval.benchmarks = ["probe"]
    micro_config.train.threads = 1
    torch.set_num_threads(2)
    run_benchmarks(lambda x: x.flatten(1), micro_config, "cpu", Reporter())
    monkeypatch.setattr(threads_module, "available_cores", lambda: 3)
    micro_config.train.threads = 0  # auto: evaluation starts no loader workers, so every core
    run_benchmarks(lambda x: x.flatten(1), micro_config, "cpu", Reporter())
    assert seen == [1, 3]  # (the probe runs no convolution: 3 threads on a smaller machine are harmless)
    assert torch.get_num_threads() == 2
