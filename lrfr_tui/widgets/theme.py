"""Colours from the app's theme (so cells stay readable on dark and light themes alike)."""

from __future__ import annotations

from typing import Any

# Run status -> theme variable of its text colour ("queued" is drawn dim).
STATUS_COLOURS = {"running": "text-primary", "finished": "text-success", "failed": "text-error",
                  "killed": "text-warning"}


def theme_colour(app: Any, variable: str) -> str:
    """A theme variable (``text-success`` ...) as a colour Rich understands, '' if it is not one."""
    value = app.theme_variables.get(variable, "") if variable else ""
    return value if value.startswith("#") else ""


def status_style(app: Any, status: str) -> str:
    colour = theme_colour(app, STATUS_COLOURS.get(status, ""))
    if not colour:
        return "dim"
    return f"bold {colour}" if status == "running" else colour
