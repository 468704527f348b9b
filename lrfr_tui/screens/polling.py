"""The poll loop every live screen shares: read a snapshot from the screen's model in a worker
thread, post it to the screen, sleep until runs.db changes (the App's ``data_signal``) or the
screen's own interval passes, and stop when the screen goes away.

A screen subclasses ``PollingScreen`` and says three things: how to open its model
(``open_model``), how to read one snapshot into a message (``read``: a LrfrError from the model
becomes ``poll_failed``), and how long to wait after it (``poll_wait``: None stops polling).
"""

from __future__ import annotations

import threading
from typing import Any

from textual import work
from textual.message import Message
from textual.screen import Screen
from textual.worker import get_current_worker

from engine.errors import LrfrError


class PollingScreen(Screen):
    def __init__(self) -> None:
        super().__init__()
        self._wake = threading.Event()

    # ------------------------------------------------------------ what a screen says

    def open_model(self) -> Any:
        """The model the loop reads through (it must have ``close()``); opened in the worker thread."""
        raise NotImplementedError

    def read(self, model: Any) -> Message:
        """One snapshot, as the message to post to this screen."""
        raise NotImplementedError

    def poll_wait(self, message: Message) -> float | None:
        """Seconds until the next read after ``message`` (0: at once; None: stop polling)."""
        raise NotImplementedError

    def poll_failed(self, error: LrfrError) -> Message | None:
        """The message for a failed read (None: raise it); polling stops after it."""
        return None

    # ------------------------------------------------------------ the loop

    def start_polling(self) -> None:
        """Call from ``on_mount``: read now, and again whenever the App sees runs.db change."""
        self.app.data_signal.subscribe(self, lambda _: self._wake.set())
        self._poll()

    def wake(self) -> None:
        """Read again now (a filter changed, the screen came back, the terminal was resized)."""
        self._wake.set()

    def on_unmount(self) -> None:
        self._wake.set()  # the worker is cancelled with the screen; let it see that now

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def _poll(self) -> None:
        worker = get_current_worker()
        model = self.open_model()
        try:
            while not worker.is_cancelled:
                try:
                    message = self.read(model)
                except LrfrError as exc:
                    failed = self.poll_failed(exc)
                    if failed is None:
                        raise
                    self.post_message(failed)
                    return
                self.post_message(message)
                wait_s = self.poll_wait(message)
                if wait_s is None:
                    return
                if wait_s > 0:
                    self._wake.wait(wait_s)
                self._wake.clear()
        finally:
            model.close()
