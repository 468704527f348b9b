"""The launch form: preset, overrides validated as you type (the CLI's validator), GPUs, a sweep grid;
queue the run(s) or start them now. Launching writes queued run rows; the scheduler starts them."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Button, Footer, Input, Label, Select, Static, TextArea
from textual.worker import get_current_worker

from engine.errors import LrfrError
from lrfr_tui.launch_form import BuiltRun, FormError, LaunchForm, build_runs
from lrfr_tui.usecases import launch
from lrfr_tui.widgets.status_bar import StatusBar

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

DEFAULT_PRESET = "tiny"
FIELD_WIDGETS = {"overrides": "#overrides", "grid": "#grid", "gpus": "#gpus", "preset": "#preset"}


def summary(built: list[BuiltRun], machine_gpus: int | None = None) -> str:
    """One line about what will run; ``machine_gpus`` 0 notes that GPU runs will use the CPU here."""
    cfg = built[0].config
    runs = f"{len(built)} runs" if len(built) > 1 else "1 run"
    steps = f"max {cfg.schedule.max_steps} steps" if cfg.schedule.max_steps else f"{cfg.schedule.epochs} epochs"
    aug = "HR only" if not cfg.augment.resolutions else "MAug " + "/".join(map(str, cfg.augment.resolutions))
    gpus = "CPU" if cfg.launch.gpus == 0 else f"{cfg.launch.gpus} GPU" + ("s" if cfg.launch.gpus > 1 else "")
    if cfg.launch.gpus and machine_gpus == 0 and cfg.launch.launcher == "local":
        gpus += " (none here: CPU)"
    return (f"{runs} · {cfg.model.name} ×{cfg.model.width:g} @{cfg.model.input_size} · {cfg.data.dataset} · {aug} + "
            f"{cfg.loss.distance} · {steps} · lr {cfg.optim.lr:g} bs {cfg.optim.batch_size} · {gpus} · eval "
            + ",".join(cfg.eval.benchmarks))


class LaunchScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "launch(True)", "Start now", priority=True),
        Binding("ctrl+g", "launch(False)", "Queue", priority=True),
        Binding("escape", "app.pop_screen", "Cancel"),
    ]

    class Validated(Message):
        def __init__(self, serial: int, built: list[BuiltRun] | None, error: FormError | None) -> None:
            super().__init__()
            self.serial, self.built, self.error = serial, built, error

    class Launched(Message):
        def __init__(self, ids: list[int], start_now: bool) -> None:
            super().__init__()
            self.ids, self.start_now = ids, start_now

    def __init__(self, form: LaunchForm | None = None) -> None:
        super().__init__()
        self.initial = form or LaunchForm(DEFAULT_PRESET)
        self.presets: dict[str, str] = {}
        self.serial = 0
        self.validated_serial = -1
        self.valid: bool | None = None
        self.error: FormError | None = None
        self.launching = False
        self._debounce: Timer | None = None

    def compose(self) -> ComposeResult:
        from engine.config import list_presets

        try:
            self.presets = list_presets()
        except LrfrError as exc:  # a broken preset file: the form still opens and says so
            self.presets = {}
            self.notify(str(exc), severity="error", markup=False)
        preset = self.initial.preset if self.initial.preset in self.presets else (
            DEFAULT_PRESET if DEFAULT_PRESET in self.presets else next(iter(self.presets), None))
        title = f"Duplicate run {self.initial.parent_id} with edits" if self.initial.parent_id else "New run"
        with Vertical(id="launch-form"):
            yield Static(title, id="launch-title")
            with Horizontal(classes="form-row"):
                yield Label("preset", classes="form-label")
                yield Select([(name, name) for name in self.presets], value=preset or Select.BLANK,
                             allow_blank=preset is None, compact=True, id="preset")
                yield Label("GPUs", classes="form-label short")
                yield Input(self.initial.gpus, placeholder="preset", compact=True, id="gpus", restrict=r"\d*")
            yield Static(self.presets.get(preset or "", ""), id="preset-desc", markup=False)
            with Horizontal(classes="form-row", id="name-row"):
                yield Label("name", classes="form-label")
                yield Input(self.initial.name, placeholder="(the preset's name)", compact=True, id="name")
                yield Label("group", classes="form-label short")
                yield Input(self.initial.group, placeholder="(none)", compact=True, id="group")
            yield Label("overrides: key=value, one per line (e.g. optim.lr=0.05)", classes="form-section")
            yield TextArea(self.initial.overrides, id="overrides", soft_wrap=False, compact=True)
            yield Label("sweep grid: key=v1,v2 per line (one run per combination; optional)", classes="form-section")
            yield TextArea(self.initial.grid, id="grid", soft_wrap=False, compact=True)
            yield Static("", id="validation", markup=False)
            with Horizontal(id="launch-buttons"):
                yield Button("Start now ^s", variant="success", id="start", compact=True)
                yield Button("Queue ^g", variant="primary", id="queue", compact=True)
                yield Button("Cancel esc", id="cancel", compact=True)
        yield StatusBar()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(StatusBar).set_left("launch: validated with the CLI's rules as you type")
        self.query_one("#overrides", TextArea).focus()
        self._spin_frame = 0
        self._checked_once = False
        self.set_interval(0.15, self._spin)
        self._changed()

    def _spin(self) -> None:
        """A spinner while a validation runs: the first one loads torch (the config's model and augmentation
        rules), which takes seconds (a minute on a busy CPU); the later ones are instant."""
        if self.valid is not None:
            return
        self._spin_frame = (self._spin_frame + 1) % len(SPINNER)
        wait = "" if self._checked_once else " (the first check loads torch: seconds, more on a busy machine)"
        self._show_validation(f"{SPINNER[self._spin_frame]} validating…{wait}", "")

    # ------------------------------------------------------------ validation as you type

    def form(self) -> LaunchForm:
        preset = self.query_one("#preset", Select).value
        return LaunchForm(
            preset="" if preset is Select.BLANK else str(preset),
            overrides=self.query_one("#overrides", TextArea).text,
            grid=self.query_one("#grid", TextArea).text,
            name=self.query_one("#name", Input).value,
            group=self.query_one("#group", Input).value,
            gpus=self.query_one("#gpus", Input).value,
            parent_id=self.initial.parent_id,
        )

    @on(Select.Changed, "#preset")
    def _preset_changed(self, event: Select.Changed) -> None:
        self.query_one("#preset-desc", Static).update(self.presets.get(str(event.value), ""))
        self._changed()

    @on(Input.Changed)
    @on(TextArea.Changed)
    def _field_changed(self) -> None:
        self._changed()

    def _changed(self) -> None:
        self.serial += 1
        self.valid = None
        self._show_validation("validating…", "")
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(0.25, self._validate_now)

    def _validate_now(self) -> None:
        self._validate(self.serial, self.form())

    @work(thread=True, exclusive=True, group="validate", exit_on_error=False)
    def _validate(self, serial: int, form: LaunchForm) -> None:
        """engine.config.resolve (what `lrfr run` uses) on every sweep point; the first call imports torch."""
        if get_current_worker().is_cancelled:
            return
        try:
            built = build_runs(form)
        except FormError as exc:
            self.post_message(self.Validated(serial, None, exc))
            return
        except LrfrError as exc:
            self.post_message(self.Validated(serial, None, FormError(str(exc), "form")))
            return
        self.post_message(self.Validated(serial, built, None))

    def on_launch_screen_validated(self, message: Validated) -> None:
        if message.serial != self.serial:
            return  # an answer for text that has changed since
        self.validated_serial = message.serial
        self._checked_once = True
        self.valid = message.error is None
        self.error = message.error
        for selector in FIELD_WIDGETS.values():
            self.query_one(selector).remove_class("invalid")
        if message.error is not None:
            err = message.error
            where = f"{err.field} line {err.line}: " if err.line else (f"{err.field}: " if err.field != "form" else "")
            self._show_validation(f"✗ {where}{err.message}", "error")
            if err.field in FIELD_WIDGETS:
                self.query_one(FIELD_WIDGETS[err.field]).add_class("invalid")
        else:
            state = self.app.queue_state
            known = state.mode in ("driving", "watching", "off")
            self._show_validation("✓ " + summary(message.built or [], state.total_gpus if known else None), "ok")

    def _show_validation(self, text: str, state: str) -> None:
        widget = self.query_one("#validation", Static)
        widget.update(text)
        widget.set_class(state == "error", "error")
        widget.set_class(state == "ok", "ok")

    # ------------------------------------------------------------ launching

    @on(Button.Pressed, "#start")
    def _start_pressed(self) -> None:
        self.action_launch(True)

    @on(Button.Pressed, "#queue")
    def _queue_pressed(self) -> None:
        self.action_launch(False)

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.app.pop_screen()

    def action_launch(self, start_now: bool) -> None:
        if self.launching:
            return
        if self.valid is False and self.validated_serial == self.serial and self.error is not None:
            self.notify(f"fix the form first: {self.error.message}", severity="error", markup=False)
            return
        self.launching = True
        self._show_validation("launching…", "")
        self._launch(self.form(), start_now)

    @work(thread=True, exclusive=True, group="launch", exit_on_error=False)
    def _launch(self, form: LaunchForm, start_now: bool) -> None:
        """Validate again (authoritative) and write the queued run rows; never starts a process itself."""
        try:
            ids = launch(self.app.db, form, start_now)
        except FormError as exc:
            self.post_message(self.Validated(self.serial, None, exc))
            self.post_message(self.Launched([], start_now))
            return
        except LrfrError as exc:
            self.app.notify(f"launch failed: {exc}", severity="error", markup=False)
            self.post_message(self.Launched([], start_now))
            return
        self.post_message(self.Launched(ids, start_now))

    def on_launch_screen_launched(self, message: Launched) -> None:
        self.launching = False
        if not message.ids:
            return
        self.app.launched(message.ids, message.start_now)
        self.dismiss()
