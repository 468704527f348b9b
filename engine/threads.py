"""How many intra-op threads torch runs with (``train.threads``), in training and in its evaluation.

torch starts one intra-op thread per core. Next to DataLoader worker processes that decode images on the same
cores, those threads and the workers take turns on a core: an OpenMP parallel region waits at its barrier for
a thread that is descheduled, so every convolution runs at the pace of the slowest core share. ``train.threads
= 0`` (auto)
gives torch the cores the loader workers leave: ``cores // processes on this node - loader workers``, at least
1, where ``cores`` is what this process may run on (its CPU affinity: ``taskset``, a container's or Slurm's
cpuset) and ``processes on this node`` is torchrun's ``LOCAL_WORLD_SIZE`` (1 outside torchrun). A positive
value is taken as it is, up to ``cores``: more threads than cores only wait for each other, and with torch
2.14.1 they corrupt the heap in the channels-last backward pass (a width-0.125 IResNet-18 at 32 px with 3
threads on 2 cores aborts with "free(): invalid next size" or "double free or corruption"; NCHW does not).

``torch_threads`` applies a count for the duration of a ``with`` block and restores the previous one, so a
notebook that calls ``engine.train.train`` keeps its own setting afterwards. Torch is imported lazily: the
config layer reads ``resolve_threads`` without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def local_processes() -> int:
    """Training processes on this node: torchrun's ``LOCAL_WORLD_SIZE``, 1 for a plain process."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def resolve_threads(setting: int, loader_workers: int, cores: int | None = None,
                    processes: int | None = None) -> int:
    """The intra-op thread count for ``train.threads = setting`` next to ``loader_workers`` loader processes."""
    cores = available_cores() if cores is None else cores
    if setting > 0:
        return min(setting, cores)
    processes = local_processes() if processes is None else processes
    return max(1, cores // max(1, processes) - max(0, loader_workers))


@contextmanager
def torch_threads(count: int) -> Iterator[int]:
    """``torch.set_num_threads(count)`` inside the block, the previous count after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(before)
