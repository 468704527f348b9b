"""The runs table: one row per run, updated in place (cell by cell) so live refreshes never flicker
or move the cursor off the run it is on.

Columns are chosen by priority to fit the terminal (80 columns show the core ones; a wide
terminal adds preset, GPUs and more results); the name column takes what is left.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from lrfr_tui import display
from lrfr_tui.display import short_duration
from lrfr_tui.tui_models import HEADLINE, RunLine
from lrfr_tui.widgets.sparkline import sparkline
from lrfr_tui.widgets.tables import Table
from lrfr_tui.widgets.theme import status_style, theme_colour

SELECTED_MARK = "●"


def progress_text(line: RunLine) -> str:
    if line.status == "queued":
        return f"#{line.queue_pos} in queue" if line.queue_pos else ""
    total = line.total_steps
    if line.status == "running" and line.phase is not None:  # evaluating benchmark k of n
        where = f"{line.phase.get('index', '?')}/{line.phase.get('count', '?')}"
        return f"ev {where} {short_duration(line.eta_s)}" if line.eta_s is not None else f"eval {where}"
    if line.status == "running":
        if not total:
            return "starting" if not line.step else str(line.step)
        pct = f"{100 * line.step / total:.0f}%"
        return f"{pct} {short_duration(line.eta_s)}" if line.eta_s is not None else pct
    if total:
        return f"{line.step}/{total}" if len(f"{line.step}/{total}") <= 11 else f"{100 * line.step / total:.0f}%"
    return str(line.step or "")


def _progress_key(line: RunLine) -> float:
    if line.status == "queued":
        return -1.0 - (line.queue_pos or 0) * 1e-6
    return line.step / line.total_steps if line.total_steps else 0.0


@dataclass(frozen=True)
class ColumnSpec:
    key: str
    label: str
    width: int
    priority: int  # lower = kept first when the terminal is narrow
    text: Callable[[RunLine, float], str]
    sort: Callable[[RunLine], Any]
    justify: str = "left"
    term: str | None = None  # a result column: the result term it shows (``lowres_lfw.acc@7``)


def _result(label: str) -> tuple[Callable[[RunLine, float], str], Callable[[RunLine], Any]]:
    metric = label.split(".")[-1].split("@")[0]

    def text(line: RunLine, now: float) -> str:
        value = line.results.get(label)
        return "" if value is None else display.format_value(metric, value)

    def sort(line: RunLine) -> float:
        value = line.results.get(label)
        return -math.inf if value is None or not math.isfinite(value) else value

    return text, sort


def _name_text(line: RunLine, now: float) -> str:
    text = line.name + (f" {line.variant}" if line.variant else "")
    return text + (" " + " ".join(f"#{t}" for t in line.tags) if line.tags else "")


# The paper's headline row (engine registry -> result_keys.headline_results): the benchmark's main number
# first at narrow widths (LFW and LR@7, then XQLFW, SCface mean, TinyFace rank-1), then the curve, then the rest.
_TIER_PRIORITY = {0: 3, 2: 8}
_FIRST = {"lfw.acc": 1, "lowres_lfw.acc@7": 1, "xqlfw.acc": 2}


def _result_key(label: str) -> str:
    return label.lower().replace(" ", "_").replace("@", "")


def _priority(term: str, tier: int) -> int:
    """Tier 0 by _FIRST, else 3; the curve's other resolutions lowest first (4, 5, ...); other metrics last."""
    if tier == 1:
        curve = sorted((h for h in HEADLINE if h.tier == 1 and h.term.split("@")[0] == term.split("@")[0]),
                       key=lambda h: int(h.term.split("@")[1]))
        return 4 + [h.term for h in curve].index(term)
    return _FIRST.get(term, _TIER_PRIORITY[tier])


def _result_columns() -> tuple[ColumnSpec, ...]:
    return tuple(ColumnSpec(_result_key(h.label), h.label, max(5, len(h.label)), _priority(h.term, h.tier),
                            *_result(h.term), "right", term=h.term) for h in HEADLINE)


COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("sel", " ", 1, 0, lambda line, now: "", lambda line: 0),
    ColumnSpec("id", "id", 4, 0, lambda line, now: str(line.id), lambda line: line.id, "right"),
    ColumnSpec("name", "name", 10, 0, _name_text, lambda line: line.name.lower()),
    ColumnSpec("preset", "preset", 12, 6, lambda line, now: line.preset, lambda line: line.preset),
    ColumnSpec("status", "status", 8, 0, lambda line, now: line.status, lambda line: line.status),
    ColumnSpec("progress", "progress", 11, 0, lambda line, now: progress_text(line), _progress_key),
    ColumnSpec("gpus", "GPUs", 5, 5, lambda line, now: line.gpus, lambda line: line.gpus),
    *_result_columns(),
    ColumnSpec("loss", "loss", 10, 3, lambda line, now: sparkline(line.spark, 10),
               lambda line: line.spark[-1] if line.spark else math.inf),
    ColumnSpec("age", "age", 4, 1, lambda line, now: short_duration(now - line.created), lambda line: -line.created,
               "right"),
)
SPECS = {c.key: c for c in COLUMNS}
DESCENDING_FIRST = ("id", "progress", *(c.key for c in COLUMNS if c.term))
NAME_MIN, NAME_MAX = 16, 40
SCROLLBAR = 2


def fit_columns(width: int, padding: int = 1, present: set[str] | None = None) -> tuple[list[ColumnSpec], int]:
    """The columns that fit ``width`` cells (in display order) and the name column's width. ``present``: the
    result terms some shown run has (None: all); a result column nobody has takes no room."""
    budget = width - SCROLLBAR
    chosen: list[ColumnSpec] = []
    used = 0
    for spec in sorted(COLUMNS, key=lambda c: c.priority):
        if spec.term and present is not None and spec.term not in present:
            continue
        cost = (NAME_MIN if spec.key == "name" else spec.width) + 2 * padding
        if spec.priority > 0 and used + cost > budget:
            continue
        chosen.append(spec)
        used += cost
    order = [c for c in COLUMNS if c in chosen]
    name_width = max(NAME_MIN, min(NAME_MAX, NAME_MIN + budget - used))
    return order, name_width


class RunsTable(Table):
    """Rows keyed by run id; ``apply`` diffs a new snapshot into the table."""

    DEFAULT_CSS = """
    RunsTable { height: 1fr; }
    """

    def __init__(self, now: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self.now = now
        self.lines: dict[int, RunLine] = {}
        self.order: list[int] = []  # run ids in the snapshot's order
        self.selected: dict[int, None] = {}  # run ids in the order they were selected
        self.sort_column = "id"
        self.sort_reverse = True
        self._columns: list[ColumnSpec] = []
        self._name_width = NAME_MIN
        self._shown: dict[int, dict[str, str]] = {}
        self._present: set[str] | None = None

    # ------------------------------------------------------------ layout

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.redraw())

    def on_resize(self) -> None:
        self.layout_columns(self.size.width)

    def layout_columns(self, width: int) -> None:
        columns, name_width = fit_columns(width, self.cell_padding, self._present)
        if [c.key for c in columns] == [c.key for c in self._columns] and name_width == self._name_width:
            return
        self._columns, self._name_width = columns, name_width
        self.redraw()

    def redraw(self) -> None:
        """Rebuild every column and row (layout or theme change); the cursor stays on its run."""
        keep = self.cursor_run_id
        self.clear(columns=True)
        for spec in self._columns:
            width = self._name_width if spec.key == "name" else spec.width
            self.add_column(self._header(spec), width=width, key=spec.key)
        self._shown = {}
        for run_id in self.order:
            self._add(self.lines[run_id])
        self._sort()
        self.move_to_run(keep)

    def _header(self, spec: ColumnSpec) -> Text:
        label = spec.label
        if spec.key == self.sort_column:
            label += "↓" if self.sort_reverse else "↑"
        return Text(label, justify=spec.justify)  # type: ignore[arg-type]

    # ------------------------------------------------------------ data

    def apply(self, lines: Sequence[RunLine]) -> None:
        """Show exactly ``lines``: update changed cells, add new rows, drop vanished ones."""
        keep = self.cursor_run_id
        new = {line.id: line for line in lines}
        present = {term for line in lines for term in line.results}
        if present != self._present:  # results appeared (or went): the columns are chosen again
            self._present = present
            columns, name_width = fit_columns(self.size.width, self.cell_padding, present)
            if [c.key for c in columns] != [c.key for c in self._columns] or name_width != self._name_width:
                self._columns, self._name_width = columns, name_width
                self.lines, self.order = dict(new), [line.id for line in lines]
                self.redraw()
                self.move_to_run(keep)
                return
        now = self.now()
        resort = False
        for run_id in [i for i in self._shown if i not in new]:
            try:
                self.remove_row(str(run_id))
            except RowDoesNotExist:
                pass
            self._shown.pop(run_id, None)
            self.selected.pop(run_id, None)
        for line in lines:
            if line.id not in self._shown:
                self._add(line, now)
                resort = True
                continue
            shown = self._shown[line.id]
            old = self.lines.get(line.id)
            # An unchanged run only ages: look at that one column.
            specs = [SPECS["age"]] if old == line and "age" in shown else self._columns
            for spec in specs:
                text = self._text(spec, line, now)
                if shown.get(spec.key) != text:
                    shown[spec.key] = text
                    try:
                        self.update_cell(str(line.id), spec.key, self._cell(spec, line, text))
                    except CellDoesNotExist:
                        continue
                    if spec.key == self.sort_column:
                        resort = True
            if old is not None and spec_changed(old, line, self.sort_column):
                resort = True
        self.lines = new
        self.order = [line.id for line in lines]
        if resort:
            self._sort()
        self.move_to_run(keep)

    def _text(self, spec: ColumnSpec, line: RunLine, now: float) -> str:
        if spec.key == "sel":
            return SELECTED_MARK if line.id in self.selected else " "
        return spec.text(line, now)

    def _add(self, line: RunLine, now: float | None = None) -> None:
        now = self.now() if now is None else now
        texts = {spec.key: self._text(spec, line, now) for spec in self._columns}
        self._shown[line.id] = texts
        self.lines[line.id] = line
        self.add_row(*(self._cell(spec, line, texts[spec.key]) for spec in self._columns), key=str(line.id))

    def _cell(self, spec: ColumnSpec, line: RunLine, text: str) -> Text:
        style = ""
        if spec.key == "status":
            style = status_style(self.app, line.status)
        elif spec.key == "sel":
            style = theme_colour(self.app, "text-accent")
        elif spec.key == "name" and (line.tags or line.variant):
            cell = Text(line.name, no_wrap=True, overflow="ellipsis")
            if line.variant:
                cell.append(f" {line.variant}", style=theme_colour(self.app, "text-accent"))
            if line.tags:
                cell.append(" " + " ".join(f"#{t}" for t in line.tags), style="dim")
            return cell
        elif spec.key in ("age", "gpus", "preset"):
            style = "dim"
        return Text(text, style=style, justify=spec.justify, no_wrap=True, overflow="ellipsis")  # type: ignore[arg-type]

    # ------------------------------------------------------------ sorting, cursor, selection

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        if column not in SPECS or column == "sel":
            return
        if reverse is None:  # a second press flips; first press: ids and results best-first
            reverse = not self.sort_reverse if column == self.sort_column else column in DESCENDING_FIRST
        self.sort_column, self.sort_reverse = column, reverse
        keep = self.cursor_run_id
        for spec in self._columns:
            self.columns[_column_key(self, spec.key)].label = self._header(spec)
        self._sort()
        self.move_to_run(keep, scroll=True)
        self.refresh()

    def next_sort_column(self) -> None:
        keys = [c.key for c in self._columns if c.key != "sel"]
        current = keys.index(self.sort_column) if self.sort_column in keys else -1
        self.sort_by(keys[(current + 1) % len(keys)])

    def _sort(self) -> None:
        spec = SPECS.get(self.sort_column, SPECS["id"])
        lines = self.lines

        def key(id_cell: Any) -> Any:
            line = lines.get(int(str(id_cell.plain if isinstance(id_cell, Text) else id_cell)))
            return (0, spec.sort(line), line.id) if line is not None else (1, 0, 0)

        if "id" in self._column_keys():
            self.sort("id", key=key, reverse=self.sort_reverse)

    @property
    def shown_columns(self) -> list[ColumnSpec]:
        """The columns that fit the current width, in display order."""
        return list(self._columns)

    def _column_keys(self) -> list[str]:
        return [str(k.value) for k in self.columns]

    @property
    def cursor_run_id(self) -> int | None:
        if not self.row_count:
            return None
        try:
            row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except CellDoesNotExist:
            return None
        return int(row_key.value) if row_key.value is not None else None

    def move_to_run(self, run_id: int | None, scroll: bool = False) -> None:
        if run_id is None or run_id not in self._shown:
            return
        try:
            row = self.get_row_index(str(run_id))
        except RowDoesNotExist:
            return
        if row != self.cursor_row:
            self.move_cursor(row=row, animate=False, scroll=scroll)

    def sorted_ids(self) -> list[int]:
        """Run ids in display order."""
        out = []
        for index in range(self.row_count):
            try:
                out.append(int(self.coordinate_to_cell_key((index, 0)).row_key.value))  # type: ignore[arg-type]
            except CellDoesNotExist:
                break
        return out

    def toggle_selected(self, run_id: int) -> None:
        if run_id in self.selected:
            del self.selected[run_id]
        else:
            self.selected[run_id] = None
        line = self.lines.get(run_id)
        if line is not None and "sel" in self._column_keys():
            text = self._text(SPECS["sel"], line, 0)
            self._shown[run_id]["sel"] = text
            self.update_cell(str(run_id), "sel", self._cell(SPECS["sel"], line, text))

    def targets(self) -> list[int]:
        """The selected runs in the order they were selected, else the run under the cursor."""
        if self.selected:
            return list(self.selected)
        current = self.cursor_run_id
        return [current] if current is not None else []


def spec_changed(old: RunLine, new: RunLine, column: str) -> bool:
    spec = SPECS.get(column)
    if spec is None:
        return False
    try:
        return spec.sort(old) != spec.sort(new)
    except TypeError:
        return True


def _column_key(table: DataTable, key: str) -> Any:
    for column_key in table.columns:
        if column_key.value == key:
            return column_key
    raise KeyError(key)
