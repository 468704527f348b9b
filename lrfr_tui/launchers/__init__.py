"""Launchers: how the scheduler starts a run (local process, torchrun, Slurm)."""

from __future__ import annotations

from lrfr_tui.launchers.base import Handle, Launcher, LaunchRequest
from lrfr_tui.launchers.local import LocalLauncher

__all__ = ["Handle", "LaunchRequest", "Launcher", "LocalLauncher", "get_launcher"]


def get_launcher(name: str) -> Launcher:
    if name in ("local", "torchrun"):
        return LocalLauncher()
    if name == "slurm":
        from lrfr_tui.launchers.slurm import SlurmLauncher

        return SlurmLauncher()
    raise ValueError(f"unknown launcher {name!r}")
