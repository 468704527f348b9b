"""The results board: runs x benchmarks (the paper's headline columns), best value per column
highlighted; export the same matrix to CSV, Markdown or LaTeX."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from engine.errors import LrfrError
from lrfr_tui import display, results_table
from lrfr_tui.screens.dialogs import ChoiceDialog
from lrfr_tui.screens.polling import PollingScreen
from lrfr_tui.significance import format_interval
from lrfr_tui.tui_boards import ResultsBoardModel
from lrfr_tui.usecases import export_results
from lrfr_tui.widgets.status_bar import StatusBar
from lrfr_tui.widgets.tables import Table
from lrfr_tui.widgets.theme import theme_colour

FORMATS = [("csv", "CSV (.csv)"), ("markdown", "Markdown (.md)"), ("latex", "LaTeX booktabs (.tex)")]


def start_export(app: Any, fmt: str, filter_text: str, run_ids: list[int] | None = None) -> None:
    """Write the export in a thread worker; a notification names the file (or the problem)."""

    def job() -> None:
        try:
            path = export_results(Path(app.db), fmt, filter_text, app.now(), run_ids)
        except LrfrError as exc:
            app.notify(f"export failed: {exc}", severity="error", markup=False)
            return
        app.notify(f"results written to {path}", title="export", markup=False)

    app.run_worker(job, thread=True, group="export", exit_on_error=False)


def export_commands(app: Any, filter_text: Callable[[], str]) -> Iterable[SystemCommand]:
    for fmt, label in FORMATS:
        yield SystemCommand(f"Export results as {label}",
                            "the results matrix of the runs matching the filter, written beside runs.db",
                            partial(lambda f: start_export(app, f, filter_text()), fmt))


class ResultsScreen(PollingScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("e", "export", "Export"),
        Binding("enter", "open_run", "Open run"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
    ]

    class Loaded(Message):
        def __init__(self, matrix: results_table.Matrix | None, error: str | None) -> None:
            super().__init__()
            self.matrix, self.error = matrix, error

    def __init__(self, filter_text: str = "") -> None:
        super().__init__()
        self.filter_text = filter_text
        self.matrix: results_table.Matrix | None = None
        self.loads = 0
        self._key: object = None
        self._head = ""
        self.sort_column: int | None = None  # matrix column index; None: the matrix's own order
        self.sort_reverse = True

    def compose(self) -> ComposeResult:
        yield Static("", id="results-head", markup=False)
        # id and run stay in view while the result columns scroll sideways.
        yield Table(id="board", cursor_type="row", fixed_columns=2, header_height=2)
        yield StatusBar()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        where = f"runs matching: {self.filter_text}" if self.filter_text.strip() else "every run with results"
        self._head = f"Results board: {where}. Best value per column highlighted; e exports (CSV / Markdown / LaTeX)."
        self.query_one("#results-head", Static).update(self._head)
        self.query_one(StatusBar).set_left("results board")
        self.query_one("#board", DataTable).focus()
        self.start_polling()

    def open_model(self) -> ResultsBoardModel:
        return ResultsBoardModel(self.app.db, self.filter_text)

    def read(self, model: ResultsBoardModel) -> Loaded:
        try:
            return self.Loaded(model.snapshot(), None)
        except LrfrError as exc:  # shown in the head line; the board keeps polling (the db may come back)
            return self.Loaded(None, str(exc))

    def poll_wait(self, message: Loaded) -> float:
        return 5 * self.app.poll_s

    def on_results_screen_loaded(self, message: Loaded) -> None:
        self.loads += 1
        if message.error:
            self.query_one("#results-head", Static).update(message.error)
            return
        matrix = message.matrix
        key = (tuple(c.spec for c in matrix.columns),
               tuple((r.id, r.name, tuple(r.values), tuple(r.sources), tuple(r.intervals),
                      tuple(r.mark(j) for j in range(len(matrix.columns)))) for r in matrix.rows))
        if key == self._key:
            return
        self._key = key
        self.matrix = matrix
        self._fill(matrix)

    def _order(self, matrix: results_table.Matrix) -> list[int]:
        """Row indices in display order: by the sort column (best first, runs without it last), else as read."""
        order = list(range(len(matrix.rows)))
        j = self.sort_column
        if j is None or j >= len(matrix.columns):
            return order
        sign = display.better_direction(matrix.columns[j].metric) or 1
        have = [i for i in order if matrix.rows[i].values[j] is not None]
        have.sort(key=lambda i: sign * matrix.rows[i].values[j], reverse=self.sort_reverse)
        return have + [i for i in order if matrix.rows[i].values[j] is None]

    def _header(self, j: int, group: str, short: str) -> Text:
        arrow = ("↓" if self.sort_reverse else "↑") if j == self.sort_column else ""
        return Text(f"{group}\n{short}{arrow}", justify="right")

    def _fill(self, matrix: results_table.Matrix) -> None:
        table = self.query_one("#board", DataTable)
        keep = None
        if table.row_count:
            try:
                keep = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            except Exception:  # noqa: BLE001 - an empty or changing table: no cursor to keep
                keep = None
        table.clear(columns=True)
        table.add_column("id", key="id")
        table.add_column("run", key="run")
        protocols: dict[str, set] = {}
        for col in matrix.columns:
            protocols.setdefault(col.benchmark, set()).add(col.protocol)
        for j, (group, col) in enumerate(zip(matrix.group_labels(), matrix.columns, strict=True)):
            group = group.split(" (")[0]  # the protocol goes on the second line, with the metric
            several = col.protocol and len(protocols[col.benchmark]) > 1
            short = f"{col.protocol.removeprefix('insightface_')} {col.short}" if several else col.short
            table.add_column(self._header(j, group, short), key=f"c{j}")
        best = matrix.best()
        good = theme_colour(self.app, "text-success")
        # With intervals each run takes two lines: the value (and its significance mark), then [lo, hi].
        height = 2 if matrix.has_uncertainty() else 1
        labels = matrix.row_labels()
        for i in self._order(matrix):
            row, label = matrix.rows[i], labels[i]
            cells: list[Any] = [Text(str(row.id), justify="right"),
                                Text(label + (" (baseline)" if row.baseline else ""), no_wrap=True)]
            for j, col in enumerate(matrix.columns):
                text = display.format_value(col.metric, row.values[j])
                style = f"bold {good}".strip() if i in best[j] else ("dim" if row.values[j] is None else "")
                cell = Text(text, style=style, justify="right")
                cell.append(row.mark(j), style="bold")
                bounds = row.interval(j)
                if bounds is not None and row.values[j] is not None:
                    cell.append("\n" + format_interval(*bounds, display.is_percent(col.metric)), style="dim")
                cells.append(cell)
            table.add_row(*cells, key=str(row.id), height=height)
        for n, ref in enumerate(matrix.references):
            cells = [Text(""), Text(ref.name, style="italic dim", no_wrap=True)]
            cells += [Text(display.format_value(c.metric, v) if v is not None else "", style="italic dim",
                           justify="right") for c, v in zip(matrix.columns, ref.values, strict=True)]
            table.add_row(*cells, key=f"ref-{n}")
        if keep is not None:
            try:
                table.move_cursor(row=table.get_row_index(keep))
            except Exception:  # noqa: BLE001 - the run left the board
                pass
        self.query_one(StatusBar).set_left(f"results board · {len(matrix.rows)} runs × {len(matrix.columns)} columns")
        # The stand-in mark's legend under the head line whenever a column carries it.
        self.query_one("#results-head", Static).update("\n".join([self._head, *matrix.legend()]))

    def action_cycle_sort(self) -> None:
        if self.matrix is None or not self.matrix.columns:
            return
        n = len(self.matrix.columns)
        self.sort_column = 0 if self.sort_column is None else (self.sort_column + 1) % n
        self.sort_reverse = True
        self._resort()

    def action_reverse_sort(self) -> None:
        if self.sort_column is not None:
            self.sort_reverse = not self.sort_reverse
            self._resort()

    @on(DataTable.HeaderSelected, "#board")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key.startswith("c"):
            j = int(key[1:])
            self.sort_reverse = not self.sort_reverse if j == self.sort_column else True
            self.sort_column = j
            self._resort()

    def _resort(self) -> None:
        if self.matrix is not None:
            self._fill(self.matrix)
            label = self.matrix.labels()[self.sort_column] if self.sort_column is not None else ""
            self.query_one(StatusBar).set_left(f"results board · {len(self.matrix.rows)} runs × "
                                               f"{len(self.matrix.columns)} columns · sort {label}"
                                               f"{'↓' if self.sort_reverse else '↑'}")

    def action_export(self) -> None:
        def chosen(fmt: str | None) -> None:
            if fmt:
                start_export(self.app, fmt, self.filter_text)

        self.app.push_screen(ChoiceDialog("Export the results matrix as", FORMATS), chosen)

    @on(DataTable.RowSelected, "#board")
    def action_open_run(self) -> None:
        table = self.query_one("#board", DataTable)
        if not table.row_count:
            return
        row_key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if row_key is not None and not row_key.startswith("ref-"):  # reference rows are no runs
            self.app.open_run(int(row_key))

    def palette_commands(self) -> Iterable[SystemCommand]:
        yield from export_commands(self.app, lambda: self.filter_text)
