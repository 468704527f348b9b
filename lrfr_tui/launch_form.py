"""The TUI's launch form: what a user typed, validated into run configs exactly as `lrfr run/sweep` would,
and a form that recreates an existing run.
"""

from __future__ import annotations

import math
import shlex
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from engine.errors import LrfrError
from lrfr_tui import runsdb
from lrfr_tui.runsdb import reads

# A sweep from the form larger than this is refused (a typo in a grid, not an intended experiment).
MAX_SWEEP_RUNS = 200


@dataclass
class LaunchForm:
    """What the launch screen holds; ``build`` resolves it with the CLI's validator."""

    preset: str
    overrides: str = ""  # one key=value per line (# comments allowed)
    grid: str = ""  # one key=v1,v2,... per line
    name: str = ""
    group: str = ""
    gpus: str = ""  # empty: the preset's launch.gpus
    parent_id: int | None = None

    def override_lines(self) -> list[tuple[int, str]]:
        return _lines(self.overrides)

    def grid_lines(self) -> list[tuple[int, str]]:
        return _lines(self.grid)


def _lines(text: str) -> list[tuple[int, str]]:
    """Non-empty lines that are not ``#`` comments, with their 1-based line numbers."""
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.strip().startswith("#")]


class FormError(LrfrError):
    """A launch-form problem, located: ``field`` is overrides | grid | gpus | preset | form."""

    def __init__(self, message: str, field: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message, self.field, self.line = message, field, line


@dataclass
class BuiltRun:
    config: Any  # engine.config.RunConfig
    point: list[str] = field(default_factory=list)  # the sweep point's overrides


def build_runs(form: LaunchForm) -> list[BuiltRun]:
    """Resolve the form into validated configs (one per sweep point), or raise FormError naming the field."""
    from engine.config import ConfigError, parse_override, resolve

    if not form.preset:
        raise FormError("choose a preset", "preset")
    overrides = []
    for number, text in form.override_lines():
        try:
            parse_override(text)
        except ConfigError as exc:
            raise FormError(str(exc), "overrides", number) from None
        overrides.append((number, text))
    if form.gpus.strip():
        gpus = form.gpus.strip()
        if not gpus.isdigit():
            raise FormError(f"GPUs: {gpus!r} is not a whole number (0 = CPU)", "gpus")
        overrides.append((None, f"launch.gpus={int(gpus)}"))
    axes = _grid_axes(form)
    count = math.prod(len(a[2]) for a in axes) if axes else 1
    if count > MAX_SWEEP_RUNS:
        raise FormError(f"the sweep grid makes {count} runs; at most {MAX_SWEEP_RUNS} at once", "grid")
    texts = [t for _, t in overrides]
    built = []
    from lrfr_tui.sweep_grid import GridAxis, grid_points

    for point in grid_points([GridAxis(key, tuple(values)) for _, key, values in axes]):
        try:
            cfg = resolve(form.preset, texts + point)
        except ConfigError as exc:
            raise _locate(exc, form, overrides, axes) from None
        if form.name.strip():
            cfg.name = form.name.strip()
        if point:
            cfg.name = f"{cfg.name} " + " ".join(point)
        built.append(BuiltRun(cfg, point))
    if built and built[0].config.data.dataset != "synthetic":
        from engine.catalog import lookup

        try:
            lookup(built[0].config.data.dataset)
        except LrfrError as exc:
            raise _locate(exc, form, overrides, axes, key="data.dataset") from None
    return built


def _grid_axes(form: LaunchForm) -> list[tuple[int, str, list[str]]]:
    """(form line, key, values) per sweep grid line; a FormError on the line that is wrong."""
    from lrfr_tui.sweep_grid import parse_axis

    axes: list[tuple[int, str, list[str]]] = []
    for number, text in form.grid_lines():
        try:
            axis = parse_axis(text)  # the same grammar as `lrfr sweep --grid`
        except LrfrError as exc:
            raise FormError(str(exc), "grid", number) from None
        axes.append((number, axis.key, list(axis.values)))
    return axes


def _locate(exc: Exception, form: LaunchForm, overrides, axes, key: str | None = None) -> FormError:
    """Attach a ConfigError (which names its key) to the form line that set that key."""
    message = str(exc)
    for number, text in reversed(overrides):
        name = text.partition("=")[0].strip()
        if name and (name == key or f"{name}=" in message or f"'{name}'" in message or message.startswith(name)):
            if number is None:
                return FormError(message, "gpus")
            return FormError(message, "overrides", number)
    for number, name, _ in axes:
        if name == key or f"{name}=" in message or f"'{name}'" in message or message.startswith(name):
            return FormError(message, "grid", number)
    if "preset" in message:
        return FormError(message, "preset")
    return FormError(message, "form")


def cli_command(form: LaunchForm, sweep: bool) -> str:
    """The `lrfr` command line that queues the same run(s), recorded as the runs' command."""
    args = ["lrfr", "sweep" if sweep else "run", "--preset", form.preset]
    if not sweep:
        args.append("--queue")
    if form.name.strip() and not sweep:
        args += ["--name", form.name.strip()]
    for _, text in form.override_lines():
        args += ["--set", text]
    if form.gpus.strip():
        args += ["--set", f"launch.gpus={form.gpus.strip()}"]
    for _, text in form.grid_lines():
        args += ["--grid", text]
    if form.group.strip():
        args += ["--group", form.group.strip()]
    return shlex.join(args) + "  # from lrfr tui"


def load_duplicate_form(db, run_id: int) -> LaunchForm:
    """``duplicate_form`` over its own read-only connection (the screens' way in)."""
    conn = runsdb.open_db(db)
    try:
        return duplicate_form(conn, run_id)
    finally:
        conn.close()


def duplicate_form(conn: sqlite3.Connection, run_id: int) -> LaunchForm:
    """A launch form that recreates run ``run_id``: its preset plus the keys where it differs from it."""
    from engine.config import flatten, resolve

    run = runsdb.run_ref(conn, run_id)
    config = reads.run_config(conn, run_id)
    preset = run["preset"] or config.get("preset") or ""
    flat = flat_config(config)
    base = flatten(resolve(preset)) if preset else {}
    lines = []
    for key, value in flat.items():
        if key in ("name", "preset", "description"):
            continue
        if base.get(key, object()) != value:
            lines.append(f"{key}={_override_value(value)}")
    gpus = flat.get("launch.gpus")
    lines = [x for x in lines if not x.startswith("launch.gpus=")]
    name = config.get("name") or ""
    return LaunchForm(preset=preset, overrides="\n".join(lines), name=name if name != preset else "",
                      group=run.get("group_name") or "", gpus="" if gpus is None else str(gpus), parent_id=run_id)


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in config.items() if not isinstance(v, dict)}
    for section, table in config.items():
        if isinstance(table, dict):
            flat.update({f"{section}.{k}": v for k, v in table.items()})
    return flat


def _override_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    return str(value)
