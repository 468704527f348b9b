"""The messages the TUI's parts send each other through the App: their own module, so that screens post
them without importing the App (which imports the screens)."""

from __future__ import annotations

from textual.message import Message

from lrfr_tui.launch_form import LaunchForm
from lrfr_tui.tui_queue import QueueState


class QueueChanged(Message):
    """The queue worker finished a pass."""

    def __init__(self, state: QueueState) -> None:
        super().__init__()
        self.state = state


class SchedulerSaid(Message):
    """The scheduler started a run, or found one dead."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class DataChanged(Message):
    """A worker of ours changed runs.db (kill, resume, tag, launch): reload now."""


class OpenLaunch(Message):
    """Open the launch form, prefilled (duplicate with edits)."""

    def __init__(self, form: LaunchForm) -> None:
        super().__init__()
        self.form = form
