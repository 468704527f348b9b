"""A rich progress bar fed by the engine's reporter calls (for foreground `lrfr run`).

Training is one bar whose ETA comes from the run's own step rate over its last logged steps (rich's
own estimate needs updates every few seconds and reads ``-:--:--`` between log steps on a slow
CPU); the evaluation is a second bar, one embedding pass of benchmark k of n at a time.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from engine.reporting import Reporter
from lrfr_tui.display import human_duration

RATE_WINDOW = 20  # logged steps the ETA's rate is measured over (as the TUI's runs table does)


class RateEta(ProgressColumn):
    """``ETA 4m12s`` from the task's ``rate`` field (units/s) measured at ``rate_at``; counts down between
    updates. Empty until a rate is known."""

    def render(self, task: Task) -> Text:
        rate, at = task.fields.get("rate"), task.fields.get("rate_at")
        if not rate or task.total is None or at is None:
            return Text("ETA …", style="progress.remaining")
        left = max(0.0, (task.total - task.completed) / rate - (time.monotonic() - at))
        return Text(f"ETA {human_duration(left)}", style="progress.remaining")


def step_rate(samples: deque[tuple[int, float]]) -> float | None:
    """Steps per second between the oldest and newest (step, time) sample."""
    if len(samples) < 2:
        return None
    (s0, t0), (s1, t1) = samples[0], samples[-1]
    return (s1 - s0) / (t1 - t0) if s1 > s0 and t1 > t0 else None


class ProgressReporter(Reporter):
    """Training steps as a bar with ETA and the live loss; the evaluation as a second bar; events as dim
    lines above them."""

    def __init__(self, console: Console, label: str, advance_on: str | None = None) -> None:
        """``advance_on``: count events of this kind as the steps (e.g. one per benchmark evaluated)."""
        self.console = console
        self.label = label
        self.advance_on = advance_on
        self.started = 0
        self.bars = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            RateEta(),
            TextColumn("{task.fields[stats]}"),
            console=console,
            transient=False,
        )
        self.task = None
        self.eval_task = None
        self._samples: deque[tuple[int, float]] = deque(maxlen=RATE_WINDOW)

    def __enter__(self) -> ProgressReporter:
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.advance_on and self.task is not None and exc[0] is None:
            self.bars.update(self.task, completed=self.bars.tasks[0].total)
        self.bars.stop()

    def start(self, total_steps: int, start_step: int) -> None:
        self._samples.clear()  # a resume measures its own rate, not across the pause
        self._samples.append((start_step, time.monotonic()))
        self.task = self.bars.add_task(self.label, total=total_steps, completed=start_step, stats="",
                                           rate=None, rate_at=None)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if self.task is None:
            return
        now = time.monotonic()
        self._samples.append((step, now))
        stats = (f"loss {values.get('loss', float('nan')):.3f} (cls {values.get('loss_cls', float('nan')):.3f}"
                 f" dist {values.get('loss_dist', float('nan')):.4f}) "
                 f"{values.get('images_per_s', 0):.0f} img/s")
        self.bars.update(self.task, completed=step, stats=stats, rate=step_rate(self._samples), rate_at=now)

    def progress_text(self, fields: dict[str, Any]) -> str:
        rate = fields.get("rate")
        return f"{fields.get('images', 0):,} images" + (f" · {rate:.0f} img/s" if rate else "")

    def progress(self, phase: str, **fields: Any) -> None:
        if phase != "evaluate":
            return
        label = f"eval {fields.get('index', '?')}/{fields.get('count', '?')} {fields.get('benchmark', '')}"
        total = fields.get("pass_total") or None
        rate, now = fields.get("rate"), time.monotonic()
        if self.eval_task is None:
            self.eval_task = self.bars.add_task(label, total=total, completed=0, stats="", rate=None,
                                                    rate_at=None)
        self.bars.update(self.eval_task, description=label, total=total, completed=fields.get("pass_done", 0),
                             stats=self.progress_text(fields), rate=rate, rate_at=now)

    def event(self, kind: str, message: str, **fields: Any) -> None:
        if kind == self.advance_on and self.task is not None:
            # The event announces the start of the next unit: everything before it is done.
            self.started += 1
            self.bars.update(self.task, completed=self.started - 1, stats=message)
            return
        if kind in ("checkpoint", "skipped_images"):
            return
        self.console.print(f"[dim]{message}[/dim]", highlight=False)
