"""The TUI driving the queue: it holds the scheduler lock when free (else watches who does) and reports what
the status bar shows.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import LrfrError
from lrfr_tui.gpus import GpuDiscoveryError
from lrfr_tui.runsdb import reads


@dataclass(frozen=True)
class QueueState:
    """What the app's scheduler worker saw in one pass."""

    mode: str  # "driving" | "watching" | "off" | "no-db" | "error" | "starting"
    holder: str = ""  # who drives the queue when we do not
    queued: int = 0
    running: int = 0
    free_gpus: int = 0
    total_gpus: int = 0
    error: str = ""
    # (index, memory used MiB, memory total MiB, utilisation %) of each GPU of the box, when nvidia-smi tells
    gpu_usage: tuple[tuple[int, int, int, int], ...] = ()

    def describe(self) -> list[tuple[str, str]]:
        """(text, theme colour variable) pieces."""
        if self.mode == "starting":
            return [("looking at the queue…", "")]
        if self.mode == "no-db":
            return [("no runs.db yet: n launches a run", "text-warning")]
        if self.mode == "error":
            return [(f"runs.db: {self.error}", "text-error")]
        if self.mode == "driving":
            head = [("▶ driving queue", "text-success")]
        elif self.mode == "watching":
            head = [(f"driven by {self.holder or 'another scheduler'}", "")]
        else:
            head = [("not driving", "text-warning")]
        gpus = f"{self.free_gpus}/{self.total_gpus} GPUs free" if self.total_gpus else "CPU"
        usage = [(f" · {' '.join(gpu_usage_text(*u) for u in self.gpu_usage)}", "")] if self.gpu_usage else []
        return head + [(f" · {self.queued} queued · {self.running} running · {gpus}", "")] + usage


def gpu_usage_text(index: int, used_mib: int, total_mib: int, util_pct: int) -> str:
    """``0:12/80G 95%``: one GPU's memory in use and its utilisation."""
    return f"{index}:{used_mib / 1024:.0f}/{total_mib / 1024:.0f}G {util_pct}%"


class QueueDriver:
    """One scheduler pass at a time for the TUI: drive the queue if we hold (or can take) the lock,
    else just watch it. Never creates runs.db (launching a run does)."""

    GPU_EVERY_S = 5.0

    def __init__(self, db: Path, mode: str = "auto", discover: Callable | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"mode={mode!r}")
        self.db = Path(db).resolve()
        self.mode = mode
        self.discover = discover
        self.on_event = on_event
        self.sched = None
        self.holding = False
        self._gpus: tuple[float, int, int, tuple] | None = None  # (when, free, total, usage)

    @property
    def lock_path(self) -> Path:
        return self.db.with_name(self.db.name + ".scheduler.lock")

    def holder(self) -> str:
        try:
            return self.lock_path.read_text().strip()
        except OSError:
            return ""

    def step(self, now: float | None = None) -> QueueState:
        from lrfr_tui.scheduler import Scheduler, SchedulerLocked

        now = time.monotonic() if now is None else now
        if not self.db.exists():
            return QueueState("no-db")
        try:
            if self.sched is None:
                kwargs = {"discover": self.discover} if self.discover is not None else {}
                self.sched = Scheduler(self.db, on_event=self.on_event, **kwargs)
            if self.mode != "off" and not self.holding:
                try:
                    self.sched.acquire()
                    self.holding = True
                except SchedulerLocked:
                    pass
            if self.holding:
                self.sched.step()
            counts = reads.active_counts(self.sched.store)
            if self._gpus is None or now - self._gpus[0] >= self.GPU_EVERY_S:
                free, _ = self.sched.free_gpus()
                try:
                    gpus = self.sched.discover()
                except GpuDiscoveryError:  # the scheduler said so already (free_gpus)
                    gpus = []
                usage = tuple((g.index, g.memory_used_mib, g.memory_total_mib, g.util_pct) for g in gpus
                              if getattr(g, "util_pct", None) is not None)
                self._gpus = (now, len(free), len(gpus), usage)
        except (LrfrError, sqlite3.Error, OSError) as exc:
            self.close()
            return QueueState("error", error=str(exc))
        mode = "driving" if self.holding else ("off" if self.mode == "off" else "watching")
        return QueueState(mode, holder="" if self.holding else self.holder(), queued=counts.get("queued", 0),
                          running=counts.get("running", 0), free_gpus=self._gpus[1], total_gpus=self._gpus[2],
                          gpu_usage=self._gpus[3])

    def close(self) -> None:
        if self.sched is not None:
            if self.holding:
                self.sched.release()
            self.sched.store.close()
        self.sched = None
        self.holding = False
