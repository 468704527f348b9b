"""Kill, resume, tag and duplicate: the actions the runs screen and the detail screen share.

A screen mixes this in and says which runs the user means (``target_runs``). The writes run in
thread workers with connections of their own, and only post messages (notifications, and
``tui_messages.DataChanged`` so every screen reloads at once).
"""

from __future__ import annotations

from textual import work

from engine.errors import LrfrError
from lrfr_tui.launch_form import load_duplicate_form
from lrfr_tui.runsdb.states import ACTIVE_STATUSES
from lrfr_tui.screens.dialogs import ConfirmDialog, PromptDialog
from lrfr_tui.tui_messages import DataChanged, OpenLaunch
from lrfr_tui.usecases import kill_runs, resume_runs, tag_runs


class RunActions:
    """Mixin for a Screen. ``target_runs`` returns (id, name, status, tags) of the runs acted on."""

    def target_runs(self) -> list[tuple[int, str, str, list[str]]]:
        raise NotImplementedError

    def action_kill(self) -> None:
        targets = self.target_runs()
        live = [t for t in targets if t[2] in ACTIVE_STATUSES]
        if not live:
            if targets:
                self.notify(f"run {targets[0][0]} is {targets[0][2]}: nothing to kill", severity="warning")
            return
        names = ", ".join(f"{i} ({name})" for i, name, _, _ in live[:3]) + (" ..." if len(live) > 3 else "")
        question = (f"Kill run {names}?" if len(live) == 1 else f"Kill {len(live)} runs: {names}?") + \
            f"\nA running run checkpoints first (SIGTERM), SIGKILL after {self.app.kill_grace_s:.0f} s."

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.notify(f"stopping {len(live)} run(s)…", markup=False)
                self._kill_worker([t[0] for t in live])

        self.app.push_screen(ConfirmDialog(question, yes="Kill", no="Cancel"), confirmed)

    @work(thread=True, group="writes", exit_on_error=False)
    def _kill_worker(self, ids: list[int]) -> None:
        app = self.app

        def done(run_id: int, status: str) -> None:
            app.notify(f"run {run_id}: {status}", severity="information" if status == "killed" else "warning",
                       markup=False)
            app.post_message(DataChanged())

        try:
            kill_runs(app.db, ids, grace_s=app.kill_grace_s, on_done=done)
        except LrfrError as exc:
            app.notify(f"kill failed: {exc}", severity="error", markup=False)

    def action_resume(self) -> None:
        targets = self.target_runs()
        if targets:
            self._resume_worker([t[0] for t in targets])

    @work(thread=True, group="writes", exit_on_error=False)
    def _resume_worker(self, ids: list[int]) -> None:
        app = self.app
        try:
            outcome = resume_runs(app.db, ids)
        except LrfrError as exc:
            app.notify(f"resume failed: {exc}", severity="error", markup=False)
            return
        for run_id, text in outcome.items():
            app.notify(f"run {run_id} {text}", severity="information" if text.startswith("queued") else "warning",
                       markup=False)
        app.post_message(DataChanged())

    def action_tag(self) -> None:
        targets = self.target_runs()
        if not targets:
            return
        ids = [t[0] for t in targets]
        current = " ".join(targets[0][3]) if len(targets) == 1 else ""
        label = f"run {ids[0]}" if len(ids) == 1 else f"{len(ids)} runs"

        def entered(text: str | None) -> None:
            if text and text.strip():
                self._tag_worker(ids, text)

        self.app.push_screen(PromptDialog(f"Tags for {label} (now: {current or 'none'}); -tag removes one",
                                          placeholder="paper best -old"), entered)

    @work(thread=True, group="writes", exit_on_error=False)
    def _tag_worker(self, ids: list[int], text: str) -> None:
        app = self.app
        try:
            tags = tag_runs(app.db, ids, text)
        except LrfrError as exc:
            app.notify(str(exc), severity="error", markup=False)
            return
        if len(tags) == 1:
            run_id, now = next(iter(tags.items()))
            app.notify(f"run {run_id} tags: {' '.join(now) or 'none'}", markup=False)
        else:
            app.notify(f"tagged {len(tags)} runs", markup=False)
        app.post_message(DataChanged())

    def action_duplicate(self) -> None:
        targets = self.target_runs()
        if targets:
            self._duplicate_worker(targets[0][0])

    @work(thread=True, group="writes", exit_on_error=False)
    def _duplicate_worker(self, run_id: int) -> None:
        """Open the launch form prefilled with the run's preset and the keys it changed."""
        app = self.app
        try:
            form = load_duplicate_form(app.db, run_id)
        except LrfrError as exc:
            app.notify(f"cannot duplicate run {run_id}: {exc}", severity="error", markup=False)
            return
        app.post_message(OpenLaunch(form))
