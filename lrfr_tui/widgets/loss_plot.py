"""Line plots of training curves (textual-plotext), redrawn only when their data changes.

Callers hand in curves already downsampled to about twice the plot's width (braille markers
draw two points per cell), so a run with thousands of points draws as fast as one with fifty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from textual_plotext import PlotextPlot


@dataclass(frozen=True)
class Line:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]


class CurvePlot(PlotextPlot):
    """A titled plot of several lines; ``show`` skips the redraw when nothing changed."""

    DEFAULT_CSS = """
    CurvePlot { height: 1fr; min-height: 6; }
    """

    def __init__(self, title: str = "", xlabel: str = "step", **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.xlabel = xlabel
        self.log_scale = False
        self._version: object = None
        self.lines: list[Line] = []
        self.draws = 0  # how many times the figure was rebuilt (tests and benchmarks read it)

    @property
    def points(self) -> int:
        return sum(len(line.xs) for line in self.lines)

    def buckets(self) -> int:
        """How many points per line are worth drawing at the current size."""
        return max(2 * self.size.width, 100)

    def show(self, lines: Sequence[Line], version: object = None, log_scale: bool | None = None,
             title: str | None = None) -> bool:
        """Draw ``lines``; ``version`` identifies the data (same version, same log flag: no redraw)."""
        if log_scale is not None:
            self.log_scale = log_scale
        if title is not None:
            self.title = title
        key = (version if version is not None else _fingerprint(lines), self.log_scale, self.title)
        if key == self._version:
            return False
        self._version = key
        self.lines = list(lines)
        self._draw()
        return True

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title(self.title)
        plt.xlabel(self.xlabel)
        drawn = 0
        for line in self.lines:
            points = [(x, y) for x, y in zip(line.xs, line.ys, strict=False)
                      if math.isfinite(y) and (y > 0 or not self.log_scale)]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            # A lone line needs no legend (the title names it).
            label = line.label if len(self.lines) > 1 else None
            plt.plot(list(xs), list(ys), label=label, marker="braille")
            drawn += 1
        if self.log_scale and drawn:
            plt.yscale("log")
        if not drawn:
            plt.title(f"{self.title} (no data yet)" if self.title else "no data yet")
        self.draws += 1
        self.refresh()


def _fingerprint(lines: Sequence[Line]) -> tuple:
    return tuple((line.label, len(line.xs), line.xs[-1] if len(line.xs) else None,
                  line.ys[-1] if len(line.ys) else None) for line in lines)
