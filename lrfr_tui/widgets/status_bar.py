"""The status bar: what the screen shows on the left, the queue and the GPUs on the right.

The app publishes a ``QueueState`` on a signal each time its scheduler worker looks at the
queue; every status bar (one per screen) subscribes, so all screens agree.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from lrfr_tui.tui_queue import QueueState
from lrfr_tui.widgets.theme import theme_colour


class StatusBar(Horizontal):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; }
    StatusBar > #status-left { width: 1fr; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    StatusBar > #status-right { width: auto; padding: 0 1; text-wrap: nowrap; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="status-left", markup=False)
        yield Static("", id="status-right", markup=False)

    def on_mount(self) -> None:
        app = self.app
        signal = getattr(app, "queue_signal", None)
        if signal is not None:
            signal.subscribe(self, self.show_queue)
            self.show_queue(app.queue_state)

    def set_left(self, text: str | Text) -> None:
        self.query_one("#status-left", Static).update(text)

    def show_queue(self, state: QueueState) -> None:
        out = Text(no_wrap=True)
        for piece, colour in state.describe():
            out.append(piece, style=theme_colour(self.app, colour) if colour else "")
        self.query_one("#status-right", Static).update(out)
