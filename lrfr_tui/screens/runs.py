"""The home screen: every run, live, with the same filter language as ``lrfr ls``."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Static

from lrfr_tui.screens.polling import PollingScreen
from lrfr_tui.screens.run_actions import RunActions
from lrfr_tui.tui_models import RunsModel, RunsSnapshot
from lrfr_tui.widgets.runs_table import SPECS, RunsTable
from lrfr_tui.widgets.status_bar import StatusBar

FINAL = ("finished", "failed", "killed")
FILTER_HINT = "/ filter: status=running tag=paper lfw.acc>0.99 min(loss)<1.2 optim.lr=0.1"


def missing_db(error: str) -> bool:
    return "no runs database" in error


class RunsScreen(RunActions, PollingScreen):
    HAS_FILTER = True  # help shows the filter language here
    # Shown in the footer: what fits 80 columns; the rest are in help (?) and the command palette (ctrl+p).
    BINDINGS = [
        Binding("enter", "open_detail", "Detail"),
        Binding("n", "new_run", "New"),
        Binding("k", "kill", "Kill"),
        Binding("r", "resume", "Resume"),
        Binding("t", "tag", "Tag", show=False),
        Binding("c", "compare", "Compare"),
        Binding("slash", "focus_filter", "Filter", key_display="/"),
        Binding("b", "app.results", "Results"),
        Binding("q", "quit_app", "Quit"),
        Binding("d", "duplicate", "Duplicate", show=False),
        Binding("space", "toggle_select", "Select", show=False),
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        Binding("x", "delete", "Delete", show=False),
        Binding("u", "restore", "Restore deleted", show=False),
        Binding("N", "note", "Note", show=False),
        Binding("less_than_sign", "queue_move(-1)", "Earlier in queue", show=False, key_display="<"),
        Binding("greater_than_sign", "queue_move(1)", "Later in queue", show=False, key_display=">"),
        Binding("e", "evaluate_more", "Evaluate on more benchmarks", show=False),
        Binding("g", "figures", "Figures (lrfr analyze)", show=False),
        Binding("y", "copy_path", "Copy run directory", show=False),
        Binding("ctrl+a", "select_all", "Select all shown", show=False),
        Binding("escape", "escape", "Clear selection", show=False),
    ]

    class Loaded(Message):
        def __init__(self, snapshot: RunsSnapshot) -> None:
            super().__init__()
            self.snapshot = snapshot

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self.snapshot: RunsSnapshot | None = None
        self.loads = 0  # snapshots applied (tests wait on it)
        self._active = True
        self._statuses: dict[int, str] = {}
        self._last_error = ""
        self._debounce: Timer | None = None
        self._focus_run: int | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder=FILTER_HINT, id="filter")
        yield Static("", id="filter-error", classes="error-line", markup=False)
        yield RunsTable(now=self.app.now, id="runs")
        yield Static("", id="runs-empty", markup=False)
        yield StatusBar()
        yield Footer(compact=True)

    @property
    def table(self) -> RunsTable:
        return self.query_one(RunsTable)

    def on_mount(self) -> None:
        self.table.focus()
        self.start_polling()

    def on_screen_suspend(self) -> None:
        self._active = False

    def on_screen_resume(self) -> None:
        self._active = True
        self.wake()

    # ------------------------------------------------------------ reading runs.db

    def open_model(self) -> RunsModel:
        return RunsModel(self.app.db)

    def read(self, model: RunsModel) -> Loaded:
        return self.Loaded(model.snapshot(self.filter_text, self.app.now()))

    def poll_wait(self, message: Loaded) -> float:
        """Every poll interval, slower while another screen is on top; at once while the snapshot
        is still incomplete (sparklines still to read)."""
        if not message.snapshot.complete:
            return 0
        return self.app.poll_s if self._active else 5 * self.app.poll_s

    def on_runs_screen_loaded(self, message: Loaded) -> None:
        snap = message.snapshot
        self.snapshot = snap
        self.loads += 1
        error_line = self.query_one("#filter-error", Static)
        error_line.update(snap.filter_error or "")
        error_line.set_class(bool(snap.filter_error), "shown")
        empty = self.query_one("#runs-empty", Static)
        if snap.error:
            # No runs.db yet is no error (the empty screen says how to make one); a damaged one is.
            if snap.error != self._last_error and not missing_db(snap.error):
                self.notify(snap.error, title="runs.db", severity="error", markup=False)
            self._last_error = snap.error
            empty.update(f"{snap.error}\n\nPress n to launch a run (it creates the database)."
                         if missing_db(snap.error) else snap.error)
            empty.set_class(True, "shown")
            self._update_left()
            return
        if self._last_error and not missing_db(self._last_error):
            self.notify("runs.db is readable again", severity="information")
        self._last_error = ""
        self._announce(snap)
        self.table.apply(snap.lines)
        if self._focus_run is not None and self._focus_run in self.table.lines:
            self.table.move_to_run(self._focus_run, scroll=True)
            self._focus_run = None
        empty.update("No runs yet. Press n to launch one." if not snap.total else
                     "No run matches the filter." if not snap.lines else "")
        empty.set_class(not snap.lines, "shown")
        self._update_left()

    def _announce(self, snap: RunsSnapshot) -> None:
        """Notify runs that ended since the previous snapshot."""
        for line in snap.lines:
            before = self._statuses.get(line.id)
            if before is not None and before != line.status and line.status in FINAL:
                severity = "error" if line.status == "failed" else "information"
                self.notify(f"run {line.id} ({line.name}) {line.status}", severity=severity, markup=False)
            self._statuses[line.id] = line.status

    def _update_left(self) -> None:
        table = self.table
        snap = self.snapshot
        shown = len(snap.lines) if snap else 0
        total = snap.total if snap else 0
        text = Text(f"runs {shown}/{total}" if self.filter_text.strip() else f"runs {total}")
        spec = SPECS.get(table.sort_column)
        if spec is not None:
            text.append(f" · sort {spec.label.strip() or spec.key}{'↓' if table.sort_reverse else '↑'}", "dim")
        if table.selected:
            text.append(f" · {len(table.selected)} selected", "bold")
        self.query_one(StatusBar).set_left(text)

    # ------------------------------------------------------------ the filter

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(0.15, self.wake)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.table.focus()

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_escape(self) -> None:
        if self.query_one("#filter", Input).has_focus:
            self.table.focus()
        elif self.table.selected:
            for run_id in list(self.table.selected):
                self.table.toggle_selected(run_id)
            self._update_left()

    # ------------------------------------------------------------ table actions

    @on(DataTable.RowSelected, "#runs")
    def _row_selected(self) -> None:
        self.action_open_detail()

    @on(DataTable.HeaderSelected, "#runs")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.table.sort_by(str(event.column_key.value))
        self._update_left()

    def focus_run(self, run_id: int) -> None:
        """Put the cursor on this run once it shows up (a run just launched)."""
        self._focus_run = run_id
        self.wake()

    def target_runs(self) -> list[tuple[int, str, str, list[str]]]:
        lines = self.table.lines
        return [(i, lines[i].name, lines[i].status, lines[i].tags) for i in self.table.targets() if i in lines]

    def action_open_detail(self) -> None:
        run_id = self.table.cursor_run_id
        if run_id is not None:
            self.app.open_run(run_id)

    def action_new_run(self) -> None:
        self.app.action_new_run()

    def action_quit_app(self) -> None:
        self.app.action_quit_checked()

    def action_toggle_select(self) -> None:
        run_id = self.table.cursor_run_id
        if run_id is None:
            return
        self.table.toggle_selected(run_id)
        if self.table.cursor_row < self.table.row_count - 1:
            self.table.move_cursor(row=self.table.cursor_row + 1)
        self._update_left()

    def action_select_all(self) -> None:
        for run_id in self.table.sorted_ids():
            if run_id not in self.table.selected:
                self.table.toggle_selected(run_id)
        self._update_left()

    def action_cycle_sort(self) -> None:
        self.table.next_sort_column()
        self._update_left()

    def action_reverse_sort(self) -> None:
        self.table.sort_by(self.table.sort_column, not self.table.sort_reverse)
        self._update_left()

    def action_compare(self) -> None:
        ids = self.table.targets()
        if len(ids) < 2:
            self.notify("select two or more runs with space, then press c", severity="warning")
            return
        self.app.compare(ids)

    # ------------------------------------------------------------ palette

    def palette_commands(self) -> Iterable[SystemCommand]:
        for spec in self.table.shown_columns:
            if spec.key != "sel":
                yield SystemCommand(f"Sort runs by {spec.label.strip() or spec.key}",
                                    "sort the runs table (again: reverse)", lambda key=spec.key: self._sort(key))
        from lrfr_tui.screens.results import export_commands

        yield from export_commands(self.app, lambda: self.filter_text)

    def _sort(self, key: str) -> None:
        self.table.sort_by(key)
        self._update_left()
