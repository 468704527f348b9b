"""DataLoaders that a stop request cannot break.

A scheduler stops a run by signalling its whole process group (so torchrun's ranks hear it too).
DataLoader worker processes are in that group: with SIGTERM's default action they die at once,
and PyTorch then raises "DataLoader worker ... killed by signal: Terminated" in the training
process before its stop check could write the checkpoint. So workers ignore SIGTERM and SIGINT
(Ctrl-C reaches the whole foreground group too): the main process alone decides to stop, and
ends its workers itself. A worker still dies with its parent (PyTorch's watchdog) or on SIGKILL.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from torch.utils.data import DataLoader

# SIGUSR1: Slurm's pre-timeout signal of a job that requeues itself (lrfr_tui/launchers/slurm.py).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """``worker_init_fn`` of every loader: the worker leaves stopping to the main process."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """Hold SIGTERM/SIGINT back in this thread while workers start: a signal in the window before
    a worker's init function runs would kill it. The held signal is delivered when this exits
    (forked workers inherit the mask, and ignore the signal once their init function ran)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def iterate(loader: DataLoader) -> Iterator:
    """``iter(loader)`` with its worker processes started safely (see the module docstring)."""
    if loader.num_workers == 0:
        return iter(loader)
    with stop_signals_held():
        return iter(loader)
