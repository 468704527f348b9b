"""``lrfr tui``: the Textual app over runs.db. ``register(app)`` adds the command.

No ``from __future__ import annotations`` here: Typer reads the option annotations.
"""

import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def tui(db: Annotated[Path | None, typer.Option("--db", help="runs database (default $LRFR_DB or ./runs.db)")]
            = None,
            drive: Annotated[bool | None, typer.Option(
                "--drive/--no-drive",
                help="start queued runs from this TUI (default: yes, unless another scheduler holds the queue)",
                show_default=False)] = None,
            poll: Annotated[float, typer.Option(help="seconds between refreshes")] = 1.0) -> None:
        """Open the TUI: launch, monitor live, compare and query runs. Quitting leaves trainings running."""
        run_tui(db, drive, poll)


def run_tui(db: Path | None = None, drive: bool | None = None, poll: float = 1.0) -> None:
    """Run the app in this terminal; ``lrfr`` with no arguments calls this when stdin/stdout are a terminal."""
    from lrfr_tui.app import LrfrApp
    from lrfr_tui.gpus import discovery_from_env
    from lrfr_tui.runsdb import db_path

    app = LrfrApp(db_path(db), drive=drive, poll_s=max(0.2, poll), discover=discovery_from_env())
    app.run()
    state = app.queue_state
    if state.running:
        print(f"lrfr: {state.running} run(s) keep running; `lrfr tui` or `lrfr worker` picks them up again",
              file=sys.stderr)


def should_open_tui(argv: list[str]) -> bool:
    """``lrfr`` with no arguments in an interactive terminal opens the TUI (elsewhere: the help)."""
    return not argv and sys.stdin.isatty() and sys.stdout.isatty()
