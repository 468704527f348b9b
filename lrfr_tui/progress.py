"""A rich progress bar fed by the engine's reporter calls (for foreground `lrfr run`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from engine.reporting import Reporter


class ProgressReporter(Reporter):
    """Training steps as a bar with ETA and the live loss; events as dim lines above it."""

    def __init__(self, console: Console, label: str, advance_on: str | None = None) -> None:
        """``advance_on``: count events of this kind as the steps (e.g. one per benchmark evaluated)."""
        self.console = console
        self.label = label
        self.advance_on = advance_on
        self.started = 0
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
            transient=False,
        )
        self.task = None

    def __enter__(self) -> ProgressReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.advance_on and self.task is not None and exc[0] is None:
            self.progress.update(self.task, completed=self.progress.tasks[0].total)
        self.progress.stop()

    def start(self, total_steps: int, start_step: int) -> None:
        self.task = self.progress.add_task(self.label, total=total_steps, completed=start_step, stats="")

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if self.task is None:
            return
        stats = (f"loss {values.get('loss', float('nan')):.3f} (cls {values.get('loss_cls', float('nan')):.3f}"
                 f" dist {values.get('loss_dist', float('nan')):.4f}) "
                 f"{values.get('images_per_s', 0):.0f} img/s")
        self.progress.update(self.task, completed=step, stats=stats)

    def event(self, kind: str, message: str, **fields: Any) -> None:
        if kind == self.advance_on and self.task is not None:
            # The event announces the start of the next unit: everything before it is done.
            self.started += 1
            self.progress.update(self.task, completed=self.started - 1, stats=message)
            return
        if kind in ("checkpoint", "skipped_images"):
            return
        self.console.print(f"[dim]{message}[/dim]", highlight=False)
