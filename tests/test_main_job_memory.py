"""What the main job holds in memory: the heap space a phase freed is given back before the next."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_release_free_memory_gives_freed_heap_space_back():
    """Blocks below malloc's (raised) mmap threshold stay resident when freed, until released."""
    code = """
import os, torch
from engine.memory import release_free_memory
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
big = torch.ones(4 << 20, dtype=torch.uint8)
del big  # a freed 4 MB block raises malloc's mmap threshold to 4 MB
blocks = [torch.ones(3 << 20, dtype=torch.uint8) for _ in range(100)]  # 300 MB from the heap
keep = blocks[-1]
del blocks
before = rss()
assert release_free_memory()
print(before - rss())
"""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's malloc_trim")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(out) > 200, out  # MB given back


def test_training_and_each_benchmark_give_their_freed_memory_back(monkeypatch, micro_config, tmp_path):
    import engine.memory
    import engine.train
    from engine.evaluate import benchmarks as bench_module
    from engine.evaluate import run_benchmarks
    from engine.reporting import Reporter

    calls: list[str] = []
    monkeypatch.setattr(engine.train, "release_free_memory", lambda: calls.append("train") or True)
    micro_config.schedule.epochs = 1
    engine.train.train(micro_config, tmp_path, Reporter())
    assert calls == ["train", "train"]  # once the training faces are built, and after the training

    order: list[str] = []
    monkeypatch.setattr(engine.memory, "release_free_memory", lambda: order.append("release") or True)
    for name in ("a", "b"):
        monkeypatch.setitem(bench_module.BENCHMARKS, name, lambda ctx, name=name: order.append(name))
    micro_config.eval.benchmarks = ["a", "b"]
    run_benchmarks(lambda x: x.flatten(1), micro_config, "cpu", Reporter())
    assert order == ["release", "a", "release", "b", "release"]
