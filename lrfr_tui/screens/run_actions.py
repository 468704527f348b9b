"""Kill, resume, tag, duplicate, delete/restore, notes, queue order, evaluating on more benchmarks, figures and
the run directory: the actions the runs screen and the detail screen share.

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
from lrfr_tui.usecases import (
    DEFAULT_FIGURES,
    add_note,
    delete_runs,
    draw_figures,
    evaluate_more,
    kill_runs,
    move_queued,
    resume_runs,
    run_directory,
    tag_runs,
)
from lrfr_tui.usecases.background import BackgroundJob
from lrfr_tui.widgets.status_bar import StatusBar

FINAL = ("finished", "failed", "killed")
BENCHMARK_HINT = "lfw xqlfw scface tinyface lowres_lfw (or BENCH=DATASET)"


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
            if yes:  # one toast per run, when it has stopped (a running one checkpoints first)
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
            status = self.query(StatusBar)
            if status:  # the first form loads torch (the config's rules): say why nothing happens yet
                status.first().set_left(f"opening run {targets[0][0]}'s form… (the first one loads torch)")
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

    # ------------------------------------------------------------ delete, restore, notes, queue

    def benchmarks_missing(self) -> str:
        """The benchmarks the (detail) screen knows the run has no results for; "" when it cannot tell."""
        return ""

    def _one(self, what: str) -> tuple[int, str, str, list[str]] | None:
        targets = self.target_runs()
        if not targets:
            self.notify(f"no run to {what}", severity="warning")
            return None
        return targets[0]

    def action_delete(self) -> None:
        targets = self.target_runs()
        if not targets:
            return
        ids = [t[0] for t in targets]
        names = ", ".join(f"{i} ({name})" for i, name, _, _ in targets[:3]) + (" ..." if len(targets) > 3 else "")
        question = f"Delete run {names}?" if len(ids) == 1 else f"Delete {len(ids)} runs: {names}?"
        question += "\nThe rows are hidden, their files stay; u restores them."

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._delete_worker(ids, False)

        self.app.push_screen(ConfirmDialog(question, yes="Delete", no="Cancel"), confirmed)

    def action_restore(self) -> None:
        recent = getattr(self.app, "deleted_ids", [])

        def entered(text: str | None) -> None:
            if text and text.strip():
                from lrfr_tui.display import parse_run_ids

                try:
                    ids = parse_run_ids(text.split())
                except LrfrError as exc:
                    self.notify(str(exc), severity="error", markup=False)
                    return
                self._delete_worker(ids, True)

        self.app.push_screen(PromptDialog("Restore deleted runs (ids: 3 5,7 10-14)", placeholder="3 5-7",
                                          value=" ".join(map(str, recent))), entered)

    @work(thread=True, group="writes", exit_on_error=False)
    def _delete_worker(self, ids: list[int], restore: bool) -> None:
        app = self.app
        try:
            changed = delete_runs(app.db, ids, restore=restore)
        except LrfrError as exc:
            app.notify(f"{'restore' if restore else 'delete'} failed: {exc}", severity="error", markup=False)
            return
        label = f"run {changed[0]}" if len(changed) == 1 else f"{len(changed)} runs"
        if restore:
            app.deleted_ids = [i for i in getattr(app, "deleted_ids", []) if i not in changed]
            app.notify(f"restored {label}" if changed else "nothing to restore", markup=False)
        else:
            app.deleted_ids = [*getattr(app, "deleted_ids", []), *changed]
            app.notify(f"deleted {label} (u restores)" if changed else "nothing deleted", markup=False)
        app.post_message(DataChanged())

    def action_note(self) -> None:
        target = self._one("annotate")
        if target is None:
            return

        def entered(text: str | None) -> None:
            if text and text.strip():
                self._note_worker(target[0], text.strip())

        self.app.push_screen(PromptDialog(f"Note for run {target[0]} ({target[1]})",
                                          placeholder="what this run tried, what came out"), entered)

    @work(thread=True, group="writes", exit_on_error=False)
    def _note_worker(self, run_id: int, text: str) -> None:
        try:
            add_note(self.app.db, run_id, text)
        except LrfrError as exc:
            self.app.notify(f"note failed: {exc}", severity="error", markup=False)
            return
        self.app.notify(f"note added to run {run_id}", markup=False)
        self.app.post_message(DataChanged())

    def action_queue_move(self, delta: int) -> None:
        target = self._one("move")
        if target is not None:
            self._queue_worker(target[0], delta)

    @work(thread=True, group="writes", exit_on_error=False)
    def _queue_worker(self, run_id: int, delta: int) -> None:
        try:
            position = move_queued(self.app.db, run_id, delta)
        except LrfrError as exc:
            self.app.notify(str(exc), severity="warning", markup=False)
            return
        self.app.notify(f"run {run_id} is #{position} in the queue", markup=False)
        self.app.post_message(DataChanged())

    # ------------------------------------------------------------ work in a process of its own

    def action_evaluate_more(self) -> None:
        target = self._one("evaluate")
        if target is None:
            return
        if target[2] not in FINAL:
            self.notify(f"run {target[0]} is {target[2]}: evaluate it once it has ended", severity="warning")
            return

        def entered(text: str | None) -> None:
            if text and text.strip():
                self._background(lambda: evaluate_more(self.app.db, target[0], text.replace(",", " ").split()))

        self.app.push_screen(PromptDialog(f"Evaluate run {target[0]} ({target[1]}) on", placeholder=BENCHMARK_HINT,
                                          value=self.benchmarks_missing()), entered)

    def action_figures(self) -> None:
        target = self._one("draw")
        if target is None:
            return

        def entered(text: str | None) -> None:
            if text and text.strip():
                self._background(lambda: draw_figures(self.app.db, target[0], text.replace(",", " ").split()))

        self.app.push_screen(PromptDialog(f"Figures for run {target[0]} (`lrfr analyze`, PNGs in its figures/)",
                                          placeholder="resolution similarity roc dimerror embedding gradnorm",
                                          value=" ".join(DEFAULT_FIGURES)), entered)

    @work(thread=True, group="background", exit_on_error=False)
    def _background(self, start) -> None:
        """Start the job, say so once, and once more when it ends (results show up on their own)."""
        app = self.app
        try:
            job: BackgroundJob = start()
        except LrfrError as exc:
            app.notify(str(exc), severity="error", markup=False)
            return
        app.notify(f"run {job.run_id}: {job.what} started in the background (log: {job.log})", markup=False)
        code = job.wait()
        if code == 0:
            app.notify(f"run {job.run_id}: {job.what} done", markup=False)
        else:
            app.notify(f"run {job.run_id}: {job.what} failed: {job.last_line() or f'exit {code}'} ({job.log})",
                       severity="error", markup=False)
        app.post_message(DataChanged())

    def action_copy_path(self) -> None:
        target = self._one("locate")
        if target is not None:
            self._path_worker(target[0])

    @work(thread=True, group="reads", exit_on_error=False)
    def _path_worker(self, run_id: int) -> None:
        app = self.app
        try:
            path = run_directory(app.db, run_id)
        except LrfrError as exc:
            app.notify(str(exc), severity="error", markup=False)
            return
        app.call_from_thread(app.copy_to_clipboard, str(path))
        app.last_copied = str(path)
        app.notify(f"copied run {run_id}'s directory: {path}", markup=False)
