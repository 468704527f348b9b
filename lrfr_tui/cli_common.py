"""What every `lrfr` command module shares: the consoles, the exit code of a usage error, the common options,
and running a recorded run in the foreground with its progress and results (`run`, `rerun`, `resume`).

No `from __future__ import annotations`: Typer reads these annotations where commands use them.
"""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

out = Console()  # results
err = Console(stderr=True)  # progress, diagnostics

EXIT_USER_ERROR = 2

PresetOpt = Annotated[str | None, typer.Option("--preset", "-p", help="preset name (see `lrfr presets`)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override key=value (repeatable)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML file applied after the preset")]
DbOpt = Annotated[Path | None, typer.Option("--db", help="runs database (default $LRFR_DB or ./runs.db)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


def run_in_foreground(store, path: Path, run_id: int, as_json: bool) -> None:
    """Execute a recorded run in this process with a progress bar, then print its results."""
    from lrfr_tui.progress import ProgressReporter
    from lrfr_tui.worker import execute_run

    with ProgressReporter(err, f"run {run_id}") as progress:
        code = execute_run(path, run_id, extra=progress)
    record = store.get_run(run_id)
    files = run_files(path, record)
    if as_json:
        print(json.dumps({"run": run_id, "status": record.status, "results": store.results(run_id),
                          **{k: str(v) for k, v in files.items()}}, indent=2))
    else:
        print_results(store, run_id)
        print_where_and_next(record, files)
    if code != 0:
        err.print(f"run {run_id} {record.status}: {record.failure_reason or 'see its train.log'}", soft_wrap=True,
                  markup=False, highlight=False)
        raise typer.Exit(code)


def run_files(db: Path, record) -> dict[str, Path]:
    """The run's checkpoint and log, where they exist (relative to here when below it)."""
    from lrfr_tui.runsdb import runs_root

    run_dir = Path(record.run_dir) if record.run_dir else runs_root(db) / str(record.id)
    found = {name: run_dir / file for name, file in (("checkpoint", "checkpoint.pt"), ("log", "train.log"))
             if (run_dir / file).exists()}
    here = Path.cwd().resolve()
    return {k: v.resolve().relative_to(here) if v.resolve().is_relative_to(here) else v for k, v in found.items()}


def print_where_and_next(record, files: dict[str, Path]) -> None:
    """Below the results: where the checkpoint and log are, and the commands a researcher types next."""
    for name, file in files.items():
        out.print(f"{name:<11} {file}", markup=False, highlight=False, soft_wrap=True)
    n = record.id
    steps = {"finished": [f"lrfr show {n}", f"lrfr results --runs {n}", f"lrfr eval --run {n} --bench NAME"],
             "killed": [f"lrfr resume {n}", f"lrfr logs {n}"],
             "failed": [f"lrfr logs {n}", f"lrfr resume {n}"]}.get(record.status, [f"lrfr show {n}"])
    out.print(f"{'next':<11} " + "  ·  ".join(steps), markup=False, highlight=False, soft_wrap=True)


def print_results(store, run_id: int, benches: list[str] | None = None) -> None:
    """A run's headline numbers (the columns `lrfr results` shows), one line each."""
    from lrfr_tui import display, results_table

    matrix = results_table.results_matrix(store.conn, runs=[run_id], benches=benches)
    table = Table(title=f"run {run_id}: {store.get_run(run_id).status}", box=None)
    table.add_column("benchmark")
    table.add_column("metric")
    table.add_column("value", justify="right")
    previous = None
    for group_label, col, value in zip(matrix.group_labels(), matrix.columns, matrix.rows[0].values, strict=True):
        table.add_row(group_label if group_label != previous else "", col.short, display.format_value(col.metric, value))
        previous = group_label
    out.print(table)
    for line in matrix.legend():  # what the stand-in mark means
        out.print(line, markup=False, highlight=False)
