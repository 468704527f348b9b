"""Compare runs: curves overlaid, the config keys that differ, results side by side with deltas
against the first run in the paper's Table 4 layout (SCface d1/d2/d3/avg, XQLFW, LFW)."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from engine.errors import LrfrError
from lrfr_tui import display, results_table
from lrfr_tui.screens.polling import PollingScreen
from lrfr_tui.significance import format_interval
from lrfr_tui.tui_boards import CompareModel, CompareSnapshot
from lrfr_tui.widgets.loss_plot import CurvePlot, Line
from lrfr_tui.widgets.status_bar import StatusBar
from lrfr_tui.widgets.tables import Table
from lrfr_tui.widgets.theme import status_style, theme_colour


class CompareScreen(PollingScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("m", "next_metric(1)", "Next curve"),
        Binding("M", "next_metric(-1)", "Previous curve", show=False),
        Binding("l", "toggle_log_scale", "Log scale"),
        Binding("1", "tab('cmp-curves')", "Curves", show=False),
        Binding("2", "tab('cmp-results')", "Results", show=False),
        Binding("3", "tab('cmp-config')", "Config diff", show=False),
    ]

    class Loaded(Message):
        def __init__(self, snapshot: CompareSnapshot | None, matrix: results_table.Matrix | None, error: str | None) -> None:
            super().__init__()
            self.snapshot, self.matrix, self.error = snapshot, matrix, error

    def __init__(self, run_ids: list[int]) -> None:
        super().__init__()
        self.run_ids = list(run_ids)
        self.snapshot: CompareSnapshot | None = None
        self.matrix: results_table.Matrix | None = None
        self.metric = "loss"
        self.log_scale = False
        self.loads = 0
        self.buckets = 200
        self._tables_key: object = None

    def compose(self) -> ComposeResult:
        yield Static("", id="compare-head", markup=False)
        with TabbedContent(id="compare-tabs"):
            with TabPane("Curves", id="cmp-curves"):
                yield CurvePlot("loss", id="compare-plot")
            with TabPane("Results (Table 4)", id="cmp-results"):
                yield Table(id="compare-results", cursor_type="row")
            with TabPane("Config diff", id="cmp-config"):
                yield Table(id="compare-config", cursor_type="row")
        yield StatusBar()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(StatusBar).set_left(f"compare {len(self.run_ids)} runs · m: next curve")
        self.start_polling()

    def on_resize(self) -> None:
        self.buckets = max(2 * self.size.width, 100)

    def open_model(self) -> CompareModel:
        return CompareModel(self.app.db, self.run_ids)

    def read(self, model: CompareModel) -> Loaded:
        snap = model.snapshot(self.buckets)
        return self.Loaded(snap, snap.table4, None)

    def poll_failed(self, error: LrfrError) -> Loaded:
        return self.Loaded(None, None, str(error))

    def poll_wait(self, message: Loaded) -> float:
        return 2 * self.app.poll_s if message.snapshot.live else 30 * self.app.poll_s

    def on_compare_screen_loaded(self, message: Loaded) -> None:
        if message.error:
            self.notify(f"cannot compare: {message.error}", severity="error", markup=False)
            self.dismiss()
            return
        self.snapshot, self.matrix = message.snapshot, message.matrix
        self.loads += 1
        self._show_head()
        self._show_curves()
        key = (json.dumps(self.matrix.as_dict(), default=str), json.dumps(self.snapshot.params, default=str))
        if key != self._tables_key:  # rebuilt only when they change, so the cursor stays put
            self._tables_key = key
            self._show_results()
            self._show_config()

    def _label(self, run: dict[str, Any]) -> str:
        return f"#{run['id']} {run['name']}"

    def _show_head(self) -> None:
        snap = self.snapshot
        head = Text(no_wrap=True, overflow="ellipsis")
        head.append("Compare ", "bold")
        for i, run in enumerate(snap.runs):
            if i:
                head.append(" · ")
            head.append(self._label(run) + " ")
            head.append(run["status"], status_style(self.app, run["status"]))
        head.append(f"   deltas against #{snap.runs[0]['id']}", "dim")
        self.query_one("#compare-head", Static).update(head)

    def _show_curves(self) -> None:
        snap = self.snapshot
        if snap.keys and self.metric not in snap.keys:
            self.metric = snap.keys[0]
        curves = snap.curves.get(self.metric, {})
        names = {r["id"]: self._label(r) for r in snap.runs}
        lines = [Line(names[i], curves[i].xs, curves[i].ys) for i in self.run_ids if i in curves]
        version = (self.metric, tuple((i, len(c.xs), c.xs[-1] if c.xs else None) for i, c in curves.items()))
        self.query_one("#compare-plot", CurvePlot).show(
            lines, version=version, log_scale=self.log_scale, title=self.metric + (" log" if self.log_scale else ""))

    def _show_results(self) -> None:
        matrix = self.matrix
        table = self.query_one("#compare-results", DataTable)
        table.clear(columns=True)
        table.add_column("run", key="run")
        for j, label in enumerate(matrix.labels()):
            table.add_column(Text(label, justify="right"), key=f"c{j}")
        good, bad = theme_colour(self.app, "text-success"), theme_colour(self.app, "text-error")
        for row, label in zip(matrix.rows, matrix.row_labels(), strict=True):
            cells: list[Any] = [Text(f"#{row.id} {label}", no_wrap=True)]
            for j, col in enumerate(matrix.columns):
                cell = Text(display.format_value(col.metric, row.values[j]), justify="right")
                delta = row.deltas[j] if row.deltas is not None else None
                if delta is not None:
                    direction = display.better_direction(col.metric) * (1 if delta > 0 else -1 if delta < 0 else 0)
                    style = good if direction > 0 else bad if direction < 0 else "dim"
                    cell.append(f" {display.format_delta(col.metric, delta)}", style=style or "dim")
                cell.append(row.mark(j), style="bold")
                bounds = row.interval(j)
                if bounds is not None and row.values[j] is not None:
                    cell.append("\n" + format_interval(*bounds, display.is_percent(col.metric)), style="dim")
                cells.append(cell)
            table.add_row(*cells, key=str(row.id), height=2 if matrix.has_uncertainty() else 1)

    def _show_config(self) -> None:
        snap = self.snapshot
        table = self.query_one("#compare-config", DataTable)
        table.clear(columns=True)
        table.add_column("key", key="key")
        for run in snap.runs:
            table.add_column(self._label(run), key=f"r{run['id']}")
        if not snap.params:
            table.add_row("(the configs are identical)", *([""] * len(snap.runs)))
        for key, values in snap.params.items():
            table.add_row(key, *(Text(_show(v), no_wrap=True) for v in values))

    def action_next_metric(self, step: int) -> None:
        keys = self.snapshot.keys if self.snapshot else []
        if not keys:
            return
        index = keys.index(self.metric) if self.metric in keys else 0
        self.metric = keys[(index + step) % len(keys)]
        self._show_curves()

    def action_toggle_log_scale(self) -> None:
        self.log_scale = not self.log_scale
        if self.snapshot is not None:
            self._show_curves()

    def action_tab(self, tab: str) -> None:
        self.query_one("#compare-tabs", TabbedContent).active = tab


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value)
