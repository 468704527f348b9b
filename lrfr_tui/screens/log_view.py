"""One run's log, full-screen and wrapped (the detail screen's w): follows the file as it grows."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Static, TextArea

from engine.errors import LrfrError
from lrfr_tui.screens.polling import PollingScreen
from lrfr_tui.tui_boards import LogModel, LogSnapshot
from lrfr_tui.widgets.status_bar import StatusBar


class LogScreen(PollingScreen):
    BINDINGS = [
        Binding("escape,w", "app.pop_screen", "Back"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("z", "toggle_wrap", "Wrap"),
        Binding("home", "top", "Top", show=False),
        Binding("end", "bottom", "End", show=False),
    ]

    class Loaded(Message):
        def __init__(self, snapshot: LogSnapshot | None, error: str | None = None) -> None:
            super().__init__()
            self.snapshot, self.error = snapshot, error

    def __init__(self, run_id: int, name: str = "") -> None:
        super().__init__()
        self.run_id, self.run_name = run_id, name
        self.follow = True
        self.loads = 0
        self._log_size: int | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"log of run {self.run_id} {self.run_name}", id="log-head", markup=False)
        yield TextArea("", id="log-full", read_only=True, soft_wrap=True, show_line_numbers=False)
        yield StatusBar()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#log-full", TextArea).focus()
        self._update_left()
        self.start_polling()

    def open_model(self) -> LogModel:
        return LogModel(self.app.db, self.run_id)

    def read(self, model: LogModel) -> Loaded:
        return self.Loaded(model.snapshot())

    def poll_failed(self, error: LrfrError) -> Loaded:
        return self.Loaded(None, str(error))

    def poll_wait(self, message: Loaded) -> float:
        return self.app.poll_s

    def on_log_screen_loaded(self, message: Loaded) -> None:
        self.loads += 1
        view = self.query_one("#log-full", TextArea)
        if message.snapshot is None:
            view.load_text(message.error or "")
            return
        snap = message.snapshot
        self.query_one("#log-head", Static).update(f"log of run {self.run_id} {self.run_name}: {snap.path or '-'}")
        if snap.size == self._log_size:
            return
        self._log_size = snap.size
        view.load_text(snap.text)
        if self.follow:
            self.action_bottom()

    def _update_left(self) -> None:
        view = self.query_one("#log-full", TextArea)
        self.query_one(StatusBar).set_left(" · ".join([f"run {self.run_id}", "following" if self.follow else "paused",
                                                       "wrapped" if view.soft_wrap else "not wrapped"]))

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        if self.follow:
            self.action_bottom()
        self._update_left()

    def action_toggle_wrap(self) -> None:
        view = self.query_one("#log-full", TextArea)
        view.soft_wrap = not view.soft_wrap
        self._update_left()

    def action_top(self) -> None:
        self.query_one("#log-full", TextArea).scroll_home(animate=False)

    def action_bottom(self) -> None:
        view = self.query_one("#log-full", TextArea)
        view.move_cursor(view.document.end)
        view.scroll_end(animate=False)
