"""Line plots of training curves (textual-plotext), redrawn only when their data changes.

Callers hand in curves already downsampled to about twice the plot's width (braille markers
draw two points per cell), so a run with thousands of points draws as fast as one with fifty.
The title and the legend (each line's name in its colour) are the widget's border title, above the
plot area, so the legend never covers the start of a curve. ``xticks`` makes the x axis categorical
(one evenly spaced position per label: 7, 14, 20, 112 px read as well as 7, 8 and 9).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.markup import escape
from textual_plotext import PlotextPlot


@dataclass(frozen=True)
class Line:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]


# (plotext RGB, rich colour) per line, in order: distinct on dark and light themes.
COLOURS = (((0, 175, 255), "rgb(0,175,255)"), ((255, 140, 0), "rgb(255,140,0)"), ((0, 200, 120), "rgb(0,200,120)"),
           ((220, 80, 220), "rgb(220,80,220)"), ((230, 200, 0), "rgb(230,200,0)"), ((255, 80, 80), "rgb(255,80,80)"))


class CurvePlot(PlotextPlot):
    """A titled plot of several lines; ``show`` skips the redraw when nothing changed."""

    DEFAULT_CSS = """
    CurvePlot { height: 1fr; min-height: 6; border-top: hkey $panel; border-title-align: center; }
    """

    def __init__(self, title: str = "", xlabel: str = "step", **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.xlabel = xlabel
        self.log_scale = False
        self._version: object = None
        self.lines: list[Line] = []
        self.xticks: list[str] | None = None
        self.draws = 0  # how many times the figure was rebuilt (tests and benchmarks read it)

    @property
    def points(self) -> int:
        return sum(len(line.xs) for line in self.lines)

    def buckets(self) -> int:
        """How many points per line are worth drawing at the current size."""
        return max(2 * self.size.width, 100)

    def show(self, lines: Sequence[Line], version: object = None, log_scale: bool | None = None,
             title: str | None = None, xticks: Sequence[str] | None = None) -> bool:
        """Draw ``lines``; ``version`` identifies the data (same version, same log flag: no redraw). ``xticks``:
        the lines' xs are positions 0..n-1 of these labels."""
        if log_scale is not None:
            self.log_scale = log_scale
        if title is not None:
            self.title = title
        self.xticks = list(xticks) if xticks is not None else None
        key = (version if version is not None else _fingerprint(lines), self.log_scale, self.title, self.xticks)
        if key == self._version:
            return False
        self._version = key
        self.lines = list(lines)
        self._draw()
        return True

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.xlabel(self.xlabel)
        drawn: list[tuple[str, str]] = []
        for line in self.lines:
            points = [(x, y) for x, y in zip(line.xs, line.ys, strict=False)
                      if math.isfinite(y) and (y > 0 or not self.log_scale)]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            colour, rich_colour = COLOURS[len(drawn) % len(COLOURS)]
            plt.plot(list(xs), list(ys), marker="braille", color=colour)
            drawn.append((line.label, rich_colour))
        if self.log_scale and drawn:
            plt.yscale("log")
        if self.xticks:
            plt.xticks(list(range(len(self.xticks))), self.xticks)
        self.border_title = self._title_markup(drawn)
        self.draws += 1
        self.refresh()

    def _title_markup(self, drawn: list[tuple[str, str]]) -> str:
        """The title, then each line's name in its colour (a lone line needs none: the title names it)."""
        title = escape(self.title)
        if not drawn:
            return f"{title} (no data yet)" if title else "no data yet"
        if len(self.lines) < 2:
            return title
        legend = "  ".join(f"[{colour}]━ {escape(label)}[/]" for label, colour in drawn)
        return f"{title}  {legend}" if title else legend


def _fingerprint(lines: Sequence[Line]) -> tuple:
    return tuple((line.label, len(line.xs), line.xs[-1] if len(line.xs) else None,
                  line.ys[-1] if len(line.ys) else None) for line in lines)
