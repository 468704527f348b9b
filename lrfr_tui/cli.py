"""The ``lrfr`` command line.

stdout carries results (``--json`` where a command returns data); stderr carries progress and
diagnostics. Errors a user can cause end in one ``lrfr: error: ...`` line and exit code 2.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.table import Table

from engine.errors import LrfrError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="lrfr: low-resolution face recognition workbench.")
data_app = typer.Typer(no_args_is_help=True, help="Register and list datasets.")
app.add_typer(data_app, name="data")

out = Console()  # results
err = Console(stderr=True)  # progress, diagnostics

EXIT_USER_ERROR = 2

PresetOpt = Annotated[str | None, typer.Option("--preset", "-p", help="preset name (see `lrfr presets`)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override key=value (repeatable)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML file applied after the preset")]
DbOpt = Annotated[Path | None, typer.Option("--db", help="runs database (default $LRFR_DB or ./runs.db)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]


def _resolve(preset: str | None, overrides: list[str] | None, config_file: Path | None):
    from engine.config import resolve

    if not preset and not config_file:
        raise LrfrError("give --preset NAME (see `lrfr presets`) or --config FILE")
    return resolve(preset, overrides or [], config_file)


@app.command()
def presets(as_json: JsonOpt = False) -> None:
    """List the presets with a one-line description each."""
    from engine.config import list_presets

    items = list_presets()
    if as_json:
        out.print_json(json.dumps(items))
        return
    table = Table("preset", "description", box=None)
    for name, description in items.items():
        table.add_row(name, description)
    out.print(table)


@app.command()
def config(preset: PresetOpt = None, overrides: SetOpt = None, config_file: ConfigOpt = None,
           as_json: JsonOpt = False) -> None:
    """Print the fully resolved config: every key a user can override."""
    from engine.config import to_dict, to_toml

    cfg = _resolve(preset, overrides, config_file)
    if as_json:
        print(json.dumps(to_dict(cfg), indent=2))
    else:
        print(to_toml(cfg), end="")


@app.command()
def run(preset: PresetOpt = None, overrides: SetOpt = None, config_file: ConfigOpt = None,
        name: Annotated[str | None, typer.Option(help="run name (default: the preset)")] = None,
        db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Train (and evaluate) one run in the foreground, recording it in runs.db."""
    from engine.config import flatten, to_dict
    from lrfr_tui.progress import ProgressReporter
    from lrfr_tui.store import Store, db_path
    from lrfr_tui.worker import execute_run

    cfg = _resolve(preset, overrides, config_file)
    if name:
        cfg.name = name
    if cfg.data.dataset != "synthetic":
        from engine.catalog import lookup

        lookup(cfg.data.dataset)  # an unregistered dataset is an error before anything is recorded
    path = db_path(db)
    store = Store(path)
    command = shlex.join(["lrfr", *sys.argv[1:]])
    run_id = store.create_run(to_dict(cfg), flatten(cfg), command)
    err.print(f"run {run_id} ({cfg.name}) recorded in {path}")
    with ProgressReporter(err, f"run {run_id}") as progress:
        code = execute_run(path, run_id, extra=progress)
    record = store.get_run(run_id)
    results = store.results(run_id)
    if as_json:
        print(json.dumps({"run": run_id, "status": record.status, "results": results}, indent=2))
    else:
        _print_results(run_id, record.status, results)
    if code != 0:
        err.print(f"run {run_id} {record.status}: {record.failure_reason or 'see its train.log'}")
        raise typer.Exit(code)


def _print_results(run_id: int, status: str, results: list[dict[str, Any]]) -> None:
    """One row per benchmark/metric, one column per resolution (HR first)."""
    resolutions = sorted({r["resolution"] for r in results if r["resolution"] is not None}, reverse=True)
    table = Table(title=f"run {run_id}: {status}", box=None)
    table.add_column("benchmark / metric")
    for res in resolutions:
        table.add_column("HR" if res >= 112 else f"{res} px", justify="right")
    rows: dict[str, dict[int, float]] = {}
    for r in results:
        rows.setdefault(f"{r['benchmark']} {r['metric']}", {})[r["resolution"]] = r["value"]
    for label, values in rows.items():
        if label.endswith(("acc_std", "threshold")):
            continue
        table.add_row(label, *(_fmt(values.get(res)) for res in resolutions))
    out.print(table)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


@data_app.command("add")
def data_add(name: str, path: Path,
             fmt: Annotated[str, typer.Option("--format", help="auto | folder | recordio")] = "auto") -> None:
    """Register a dataset under NAME (presets refer to datasets by name)."""
    from engine.catalog import catalog_path, register

    entry = register(name, path, fmt)
    err.print(f"registered {entry.name} -> {entry.path} ({entry.format}) in {catalog_path()}")


@data_app.command("list")
def data_list(as_json: JsonOpt = False) -> None:
    """List registered datasets."""
    from engine.catalog import as_dict, load_catalog

    entries = load_catalog()
    if as_json:
        print(json.dumps([as_dict(e) for e in entries.values()], indent=2))
        return
    table = Table("name", "format", "path", box=None)
    for e in entries.values():
        table.add_row(e.name, e.format, e.path)
    out.print(table)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    try:
        code = app(args=argv, standalone_mode=False)
    except LrfrError as exc:
        print(f"lrfr: error: {exc}", file=sys.stderr)  # one unwrapped line, whatever the terminal width
        sys.exit(EXIT_USER_ERROR)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
