"""How the engine reports progress: a small interface the application implements.

The engine never prints or touches a database; it calls a Reporter. ``lrfr_tui`` implements one
that batches metrics into runs.db and drives a progress bar; a notebook can pass
``PrintReporter`` or nothing at all.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the torch-free engine.evaluate.registry loads this module
    import numpy as np


class Reporter:
    """No-op base class: override what you need."""

    def start(self, total_steps: int, start_step: int) -> None:
        """Training begins (or resumes at ``start_step``) and will end at ``total_steps``."""

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Scalar metrics at an optimiser step (loss, loss_cls, loss_dist, lr, images_per_s ...)."""

    def event(self, kind: str, message: str, **fields: Any) -> None:
        """Something happened: checkpoint saved, epoch done, evaluation started ..."""

    def progress(self, phase: str, **fields: Any) -> None:
        """Where a long phase stands now; each call replaces the one before (nothing to keep). The
        evaluation reports ``phase="evaluate"`` with ``benchmark``, ``index`` (1-based) of ``count``,
        ``images`` embedded for this benchmark so far, ``pass_done``/``pass_total`` images of the current
        embedding pass, ``rate`` (images/s) and ``eta_s`` (seconds left in that pass)."""

    def artifact(self, kind: str, path: Path) -> None:
        """A file worth keeping was written (checkpoint, figure, log)."""

    def result(self, benchmark: str, protocol: str, metric: str, resolution: int | None, value: float) -> None:
        """One evaluation number; ``resolution`` None means the benchmark's native images."""

    def outcomes(self, benchmark: str, protocol: str, metric: str, resolution: int | None,
                 correct: np.ndarray) -> None:
        """The per-item correctness behind an accuracy result (one boolean per pair or probe, in the
        protocol's item order): what paired significance tests and pooled intervals are computed from."""


class MultiReporter(Reporter):
    """Fans every call out to several reporters (e.g. the store and a progress bar)."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = [r for r in reporters if r is not None]

    def start(self, total_steps: int, start_step: int) -> None:
        for r in self.reporters:
            r.start(total_steps, start_step)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        for r in self.reporters:
            r.metrics(step, values)

    def event(self, kind: str, message: str, **fields: Any) -> None:
        for r in self.reporters:
            r.event(kind, message, **fields)

    def progress(self, phase: str, **fields: Any) -> None:
        for r in self.reporters:
            r.progress(phase, **fields)

    def artifact(self, kind: str, path: Path) -> None:
        for r in self.reporters:
            r.artifact(kind, path)

    def result(self, benchmark: str, protocol: str, metric: str, resolution: int | None, value: float) -> None:
        for r in self.reporters:
            r.result(benchmark, protocol, metric, resolution, value)

    def outcomes(self, benchmark: str, protocol: str, metric: str, resolution: int | None,
                 correct: np.ndarray) -> None:
        for r in self.reporters:
            r.outcomes(benchmark, protocol, metric, resolution, correct)


class PrintReporter(Reporter):
    """Plain lines on stderr, for notebooks and scripts."""

    def metrics(self, step: int, values: dict[str, float]) -> None:
        text = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        print(f"step {step}: {text}", file=sys.stderr)

    def event(self, kind: str, message: str, **fields: Any) -> None:
        print(f"[{kind}] {message}", file=sys.stderr)

    def result(self, benchmark: str, protocol: str, metric: str, resolution: int | None, value: float) -> None:
        at = "native" if resolution is None else f"{resolution}px"
        print(f"{benchmark}/{protocol} {metric} @ {at}: {value:.4f}", file=sys.stderr)
