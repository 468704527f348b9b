"""The lrfr TUI: launch, monitor, compare and query the runs of one runs.db.

This module holds the wiring: the app's messages, the signals screens subscribe to, the queue
worker (the app's scheduler), the command palette and the app-wide keys. Screens live in
``lrfr_tui.screens``, widgets in ``lrfr_tui.widgets``, styles in ``app.tcss``; everything that
reads or writes runs.db runs in worker threads (``tui_models``, ``tui_queue``, ``usecases``), never on the UI thread.

Quitting never stops a training: workers run in their own process groups, and the next TUI (or
``lrfr worker``) adopts them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.signal import Signal
from textual.worker import get_current_worker

from lrfr_tui.gpus import GpuDiscovery
from lrfr_tui.launch_form import LaunchForm
from lrfr_tui.tui_messages import DataChanged, OpenLaunch, QueueChanged, SchedulerSaid
from lrfr_tui.tui_queue import QueueDriver, QueueState


class LrfrApp(App[None]):
    """``drive``: True/None take the queue's lock when it is free (None: quietly), False never."""

    CSS_PATH = "app.tcss"
    TITLE = "lrfr"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(self, db: str | Path, drive: bool | None = None, poll_s: float = 1.0,
                 now: Callable[[], float] | None = None, discover: GpuDiscovery | None = None,
                 kill_grace_s: float = 60.0) -> None:
        super().__init__()
        self.db = Path(db).absolute()
        self.drive = drive
        self.poll_s = poll_s
        self.now: Callable[[], float] = now or time.time
        self.discover = discover
        self.kill_grace_s = kill_grace_s
        self.queue_state = QueueState("starting")
        # Screens subscribe: queue_signal gets every QueueState, data_signal fires when this app
        # changed runs.db (a launch, a kill, a tag) so they reload at once instead of at the next poll.
        self.queue_signal: Signal[QueueState] = Signal(self, "queue")
        self.data_signal: Signal[None] = Signal(self, "data")
        self._queue_wake = threading.Event()
        self._stopping = threading.Event()
        self._queue_done = threading.Event()
        self._queue_done.set()  # no queue worker yet
        self._told_locked = False
        self.deleted_ids: list[int] = []  # deleted in this session: what u (restore) offers
        self.last_copied = ""  # the last path copied to the clipboard (y)

    # ------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        from lrfr_tui.screens.runs import RunsScreen

        self.push_screen(RunsScreen())
        self._queue_done.clear()
        self._queue_worker()

    async def on_unmount(self) -> None:
        """Stop the queue worker and let it release the queue's lock (the OS would at exit anyway)."""
        self._stopping.set()
        self._queue_wake.set()
        await asyncio.to_thread(self._queue_done.wait, 5.0)

    # ------------------------------------------------------------ the queue

    @work(thread=True, exclusive=True, group="queue", exit_on_error=False)
    def _queue_worker(self) -> None:
        """Drive (or watch) the queue until the app exits; posts a QueueChanged after every pass."""
        worker = get_current_worker()
        mode = "off" if self.drive is False else "auto"
        driver = QueueDriver(self.db, mode, self.discover, on_event=lambda text: self.post_message(
            SchedulerSaid(text)))
        try:
            while not worker.is_cancelled and not self._stopping.is_set():
                self.post_message(QueueChanged(driver.step()))
                self._queue_wake.wait(self.poll_s)
                self._queue_wake.clear()
        finally:
            driver.close()
            self._queue_done.set()

    def on_queue_changed(self, message: QueueChanged) -> None:
        state = message.state
        if state.mode == "watching" and self.drive and not self._told_locked:
            self._told_locked = True
            self.notify(f"the queue is already driven by {state.holder or 'another scheduler'}; "
                        "this TUI watches it", severity="warning", markup=False)
        self.queue_state = state
        self.queue_signal.publish(state)

    def on_scheduler_said(self, message: SchedulerSaid) -> None:
        bad = "failed" in message.text or "could not" in message.text
        self.notify(message.text, severity="error" if bad else "information", markup=False)

    def on_data_changed(self, message: DataChanged) -> None:
        self.poke()

    def on_open_launch(self, message: OpenLaunch) -> None:
        self.action_new_run(message.form)

    def poke(self) -> None:
        """Something changed in runs.db because of us: reload screens and take a scheduler pass now."""
        self._queue_wake.set()
        self.data_signal.publish(None)

    # ------------------------------------------------------------ app-wide actions

    def action_help(self) -> None:
        from lrfr_tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_results(self) -> None:
        from lrfr_tui.screens.results import ResultsScreen

        if not isinstance(self.screen, ResultsScreen):
            self.push_screen(ResultsScreen(filter_text=self.current_filter()))

    def action_new_run(self, form: LaunchForm | None = None) -> None:
        from lrfr_tui.screens.launch import LaunchScreen

        self.push_screen(LaunchScreen(form))

    def launched(self, ids: list[int], start_now: bool) -> None:
        """The launch form wrote queued runs: say who will start them, show them, schedule now."""
        from lrfr_tui.screens.runs import RunsScreen

        label = f"run {ids[0]}" if len(ids) == 1 else f"{len(ids)} runs ({ids[0]}-{ids[-1]})"
        state = self.queue_state
        where = "at the head of the queue" if start_now else "at the end of the queue"
        # The first launch creates runs.db: a TUI that drives takes the queue on its next pass.
        will_drive = state.mode in ("no-db", "starting") and self.drive is not False
        if state.mode == "driving" or will_drive:
            tail = "starting now" if start_now else "this TUI starts it when resources free up"
        elif state.mode == "watching":
            tail = f"{state.holder or 'the queue driver'} starts it"
        else:
            tail = "nothing drives the queue: run `lrfr worker` (or open the TUI with --drive)"
        self.notify(f"{label} queued {where}; {tail}", severity="warning" if state.mode in ("off", "error")
                    and not will_drive else "information", markup=False)
        for screen in self.screen_stack:
            if isinstance(screen, RunsScreen):
                screen.focus_run(ids[0])
        self.poke()

    def action_quit_checked(self) -> None:
        """Quit; with queued runs that nobody else will start, ask first."""
        from lrfr_tui.screens.dialogs import ConfirmDialog

        state = self.queue_state
        if state.queued and state.mode != "watching":
            what = "1 run is" if state.queued == 1 else f"{state.queued} runs are"
            question = (f"{what} queued. Nothing starts queued runs once this TUI quits, until a TUI or "
                        "`lrfr worker` runs (running trainings keep running).\nQuit anyway?")
            self.push_screen(ConfirmDialog(question, yes="Quit", no="Stay"),
                             lambda yes: self.exit() if yes else None)
            return
        self.exit()

    def open_run(self, run_id: int) -> None:
        from lrfr_tui.screens.detail import DetailScreen

        self.push_screen(DetailScreen(run_id))

    def compare(self, run_ids: list[int]) -> None:
        from lrfr_tui.screens.compare import CompareScreen

        self.push_screen(CompareScreen(run_ids))

    def current_filter(self) -> str:
        from lrfr_tui.screens.runs import RunsScreen

        for screen in self.screen_stack:
            if isinstance(screen, RunsScreen):
                return screen.filter_text
        return ""

    # ------------------------------------------------------------ command palette

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every key binding of the current screen (and the app) is also a palette command."""
        yield from super().get_system_commands(screen)
        seen = set()
        for node, bindings in ((screen, getattr(screen, "BINDINGS", [])), (self, self.BINDINGS)):
            for binding in bindings:
                if not isinstance(binding, Binding) or not binding.description or binding.action in seen:
                    continue
                seen.add(binding.action)
                key = binding.key_display or binding.key
                yield SystemCommand(binding.description, binding.tooltip or f"key: {key}",
                                    partial(node.run_action, binding.action))
        yield from getattr(screen, "palette_commands", lambda: [])()
        yield SystemCommand("Results board", "runs x benchmarks, best per column; export from there",
                            self.action_results)
        yield SystemCommand("New run", "the launch form (preset, overrides, GPUs, sweep grid)", self.action_new_run)
