"""The launcher interface: start a run's worker somewhere, tell whether it lives, stop it.

A launcher never writes a run's final status: the worker does that itself (finished, killed,
failed), and the scheduler marks a run ``failed`` only when its process is gone without having
done so.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import LaunchConfig


@dataclass
class LaunchRequest:
    run_id: int
    db: Path  # absolute path of runs.db: the worker reads its config there and reports there
    run_dir: Path
    log_path: Path
    gpus: list[int] = field(default_factory=list)  # physical GPU indices ([] = CPU)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    python: str = sys.executable
    # The worker reports through runs/<id>/journal.jsonl and never opens runs.db (lrfr_tui/journal.py).
    journal: bool = False

    def worker_args(self) -> list[str]:
        where = ["--journal", str(self.run_dir)] if self.journal else ["--db", str(self.db)]
        return ["-m", "lrfr_tui.worker", "--run-id", str(self.run_id), *where]

    def work_dir(self) -> Path:
        """Where the worker starts: beside runs.db, or (journaled: runs.db may be on another host's disk)
        in the run directory."""
        return self.run_dir if self.journal else self.db.resolve().parent


@dataclass
class Handle:
    """Where a started run lives: a local process group (pid) or a Slurm job (job_id)."""

    launcher: str
    pid: int | None = None
    job_id: str | None = None


class Launcher(ABC):
    name: str

    @abstractmethod
    def start(self, request: LaunchRequest) -> Handle:
        """Start the worker; return at once. Raise LrfrError if it cannot be started."""

    @abstractmethod
    def is_alive(self, handle: Handle, run_id: int) -> bool:
        """Is the run's worker still there (running, or queued in Slurm)?"""

    @abstractmethod
    def stop(self, handle: Handle, run_id: int, grace_s: float = 60.0) -> None:
        """Ask the worker to checkpoint and exit (SIGTERM); force it (SIGKILL) after ``grace_s``."""

    def exit_code(self, handle: Handle) -> int | None:
        """The ended worker's exit code, where the launcher knows it (its own child process)."""
        return None
