"""The ``lrfr`` command line.

stdout carries results (``--json`` where a command returns data); stderr carries progress and
diagnostics. Errors a user can cause end in one ``lrfr: error: ...`` line and exit code 2.
"""

from __future__ import annotations

import errno
import json
import shlex
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import click
import typer
from rich.table import Table

from engine.errors import LrfrError
from lrfr_tui.cli_common import (
    EXIT_USER_ERROR,
    ConfigOpt,
    DbOpt,
    JsonOpt,
    PresetOpt,
    SetOpt,
    err,
    out,
    print_results,
    run_in_foreground,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="lrfr: low-resolution face recognition workbench.")
data_app = typer.Typer(no_args_is_help=True, help="Register, check, align and pack datasets.")
app.add_typer(data_app, name="data")



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
        queue: Annotated[bool, typer.Option("--queue", help="add to the queue instead of running now")] = False,
        group: Annotated[str | None, typer.Option(help="put the run in a named group")] = None,
        db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Train (and evaluate) one run in the foreground, or --queue it for `lrfr worker` / the TUI."""
    from lrfr_tui import usecases
    from lrfr_tui.runsdb import Store, db_path

    cfg = _resolve(preset, overrides, config_file)
    if name:
        cfg.name = name
    usecases.check_dataset(cfg)
    path = db_path(db)
    command = shlex.join(["lrfr", *sys.argv[1:]])
    if queue:
        (run_id,) = usecases.queue_runs(path, [cfg], command, group=group)
        if as_json:
            print(json.dumps({"run": run_id, "status": "queued"}))
        err.print(f"run {run_id} ({cfg.name}) queued in {path}; `lrfr worker` drains the queue")
        return
    run_id = usecases.record_here(path, cfg, command, group=group)
    err.print(f"run {run_id} ({cfg.name}) recorded in {path}")
    run_in_foreground(Store(path), path, run_id, as_json)


@data_app.command("add")
def data_add(name: str, path: Path,
             fmt: Annotated[str, typer.Option(
                 "--format", help="auto | folder | recordio | bin | pairs | scface | tinyface | pack")] = "auto",
             pairs: Annotated[Path | None, typer.Option(
                 help="pairs file of an LFW-style tree (implies --format pairs)")] = None) -> None:
    """Register a dataset under NAME (presets and benchmarks refer to datasets by name)."""
    from engine.catalog import catalog_path, register

    entry = register(name, path, fmt, pairs=pairs)
    err.print(f"registered {entry.name} -> {entry.path} ({entry.format}) in {catalog_path()}")


@data_app.command("check")
def data_check(name: str, as_json: JsonOpt = False) -> None:
    """Count identities, images and pairs of a registered dataset; find unreadable or missing files."""
    from engine.catalog import load_catalog
    from engine.data.check import check_dataset

    entries = load_catalog()
    if name not in entries:
        raise LrfrError(f"dataset {name!r} is not registered (see `lrfr data list`)")
    with err.status(f"checking {name} ...") as status:
        report = check_dataset(entries[name], progress=lambda i: status.update(f"checking {name}: {i} images"))
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        table = Table(title=f"{name} ({report.format}) at {report.path}", box=None, show_header=False)
        for label, value in (("identities", report.identities), ("images", report.images),
                             ("records listed", report.records_listed), ("records read", report.records_read),
                             ("pairs", report.pairs), ("folds", report.folds),
                             ("unreadable images", report.unreadable_count)):
            if value is not None:
                table.add_row(label, str(value))
        out.print(table)
        for line in report.problems + report.unreadable:
            out.print(f"  {line}", markup=False, highlight=False)
        out.print("ok" if report.ok else "problems found")
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("list")
def data_list(as_json: JsonOpt = False) -> None:
    """List registered datasets."""
    from engine.catalog import as_dict, load_catalog

    entries = load_catalog()
    if as_json:
        print(json.dumps([as_dict(e) for e in entries.values()], indent=2))
        return
    table = Table("name", "format", "path", "pack", box=None)
    for e in entries.values():
        table.add_row(e.name, e.format, e.path, e.pack or "")
    out.print(table)


@app.command("eval")
def eval_(run_id: Annotated[int | None, typer.Option("--run", help="evaluate this run's last checkpoint")] = None,
          checkpoint: Annotated[Path | None, typer.Option(help="an lrfr checkpoint.pt")] = None,
          model: Annotated[Path | None, typer.Option(
              "--model", help="an exported embedding model: TorchScript, torch.export .pt2, or .onnx")] = None,
          bench: Annotated[list[str] | None, typer.Option(
              "--bench", "-b", help="benchmark, or BENCH=DATASET to run it on another registered dataset "
                                    "(repeatable)")] = None,
          overrides: SetOpt = None, preset: PresetOpt = None,
          device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
          db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Evaluate a run, a checkpoint or an exported model on benchmarks; results go to runs.db.

    --run stores the results against that run; --checkpoint and --model create an evaluation-only run.
    """
    from engine.config import resolve, set_value, validate
    from engine.train import load_backbone, select_device
    from lrfr_tui import usecases
    from lrfr_tui.progress import ProgressReporter
    from lrfr_tui.runsdb import Store, db_path, runs_root
    from lrfr_tui.worker import evaluate_into_run

    if sum(x is not None for x in (run_id, checkpoint, model)) != 1:
        raise LrfrError("give exactly one of --run ID, --checkpoint PATH or --model PATH")
    path = db_path(db)
    store = Store(path, create=run_id is None)
    torch_device = select_device(device, _main_rank())
    if run_id is not None:
        store.get_run(run_id)  # an unknown id is an error before any work
        checkpoint = runs_root(path) / str(run_id) / "checkpoint.pt"
        if not checkpoint.exists():
            raise LrfrError(f"run {run_id} has no checkpoint at {checkpoint}")
    if model is not None:
        from engine.evaluate.external import load_external_model

        cfg = resolve(preset, overrides)
        net = load_external_model(model, torch_device, input_size=cfg.model.input_size)
        cfg.name = cfg.name or model.name
    else:
        net, cfg = load_backbone(checkpoint, torch_device)
    for text in overrides or []:
        from engine.config import parse_override

        set_value(cfg, *parse_override(text))
    if bench:
        cfg.eval.benchmarks = list(bench)
    cfg.train.device = str(torch_device)  # what this evaluation runs on, not what the training used
    validate(cfg)
    _check_eval_data(cfg)
    command = shlex.join(["lrfr", *sys.argv[1:]])
    owns_run = run_id is None
    if owns_run:
        cfg.name = f"eval:{(model or checkpoint).name}"
        run_id = usecases.record_here(path, cfg, command, launcher="eval")
        err.print(f"evaluation run {run_id} recorded in {path}")
    from engine.evaluate import result_names

    names = result_names(cfg.eval.benchmarks)  # xqlfw=my_pairs reports as xqlfw:my_pairs
    with ProgressReporter(err, f"eval run {run_id}", advance_on="evaluate") as progress:
        progress.start(len(cfg.eval.benchmarks), 0)
        evaluate_into_run(path, run_id, net, cfg, torch_device, extra=progress, finish_run=owns_run)
    if as_json:
        results = [r for r in store.results(run_id) if r["benchmark"] in names]
        print(json.dumps({"run": run_id, "results": results}, indent=2))
    else:
        print_results(store, run_id, benches=names)


def _check_eval_data(cfg) -> None:
    """A benchmark without its dataset is one line before any run is recorded (not a failed run)."""
    from engine.errors import DatasetError
    from engine.evaluate.availability import check_benchmark_data

    try:
        check_benchmark_data(cfg)
    except DatasetError as exc:
        raise LrfrError(f"{exc}; or evaluate on synthetic stand-ins with --set eval.source=synthetic "
                        "(as --preset tiny does)") from None


def _main_rank():
    from engine.train import DistEnv

    return DistEnv()


def _click_exception_classes() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...],
                                        tuple[type[BaseException], ...]]:
    """(ClickException, UsageError, Abort) classes of every click the app may raise from.

    Typer >= 0.2x bundles its own copy of click (``typer._click``) whose exceptions are unrelated to
    those of the separately installed ``click``; older Typers raise ``click``'s. Catch both.
    """
    modules = [click.exceptions]
    try:
        from typer._click import exceptions as bundled
    except ImportError:  # a Typer that uses the installed click
        pass
    else:
        modules.append(bundled)
    errors = tuple(m.ClickException for m in modules)
    usage = tuple(m.UsageError for m in modules)
    aborts = tuple(m.Abort for m in modules if hasattr(m, "Abort"))
    try:
        from typer.exceptions import Abort as TyperAbort
        from typer.exceptions import TyperException
    except ImportError:
        pass
    else:
        errors += (TyperException,)  # the bundled ClickException's base
        aborts += (TyperAbort,)
    return errors, usage, aborts


_CLICK_ERRORS, _USAGE_ERRORS, _ABORTS = _click_exception_classes()

# Errors of the environment (not of lrfr) that a user fixes: one line, not a traceback.
_USER_OS_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _usage_line(exc: BaseException) -> str:
    """A click usage error as one line, with where to look for the right usage."""
    message = _one_line(exc.format_message())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message += f" (see '{ctx.command_path} {ctx.help_option_names[0]}')"
    return message


def _runs_db(args: list[str]) -> Path | None:
    """The runs database a command line works on: its --db, else the default when the command has
    a --db option; None for a command without one (or a command line that names none)."""
    from typer.main import get_command

    from lrfr_tui.runsdb import db_path

    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--db" and i + 1 < len(args):
            return db_path(args[i + 1])
        if arg.startswith("--db="):
            return db_path(arg.removeprefix("--db="))
    command = get_command(app)
    for arg in args:
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            break
        if arg.startswith("-"):
            continue
        command = subcommands.get(arg)
        if command is None:
            return None
    if getattr(command, "commands", None) or not any(p.name == "db" for p in command.params):
        return None
    return db_path(None)


def _fail(message: str) -> NoReturn:
    print(f"lrfr: error: {message}", file=sys.stderr)  # one unwrapped line, whatever the terminal width
    sys.exit(EXIT_USER_ERROR)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2.

    Bare `lrfr` in a terminal opens the TUI; elsewhere (a pipe, a script) it prints the help, as
    does a command group given no subcommand (`lrfr data`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if cli_tui.should_open_tui(args):
            cli_tui.run_tui()
            return
        if not args:  # not a terminal: the help, as a successful answer
            args = ["--help"]
        code = app(args=args, prog_name="lrfr", standalone_mode=False)
    except LrfrError as exc:
        _fail(str(exc))
    except _USAGE_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `lrfr data`: its help, like bare `lrfr`
            print(exc.format_message())
            sys.exit(0)
        _fail(_usage_line(exc))
    except _CLICK_ERRORS as exc:
        _fail(_one_line(exc.format_message()))
    except _ABORTS:
        err.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:  # Ctrl-C outside a command (inside one, Typer turns it into exit 130)
        sys.exit(130)
    except sqlite3.Error as exc:  # read-only, full disk, locked, corrupt: no command should leak these
        path = _runs_db(args)
        _fail(f"runs database {path}: {_one_line(exc)}" if path is not None else _one_line(exc))
    except OSError as exc:
        if exc.errno not in _USER_OS_ERRNOS:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        _fail(f"{exc.strerror or _one_line(exc)}{where}")
    sys.exit(code if isinstance(code, int) else 0)


# The other command groups live in their own modules and register themselves on `app`.
from lrfr_tui import cli_ablate, cli_analyze, cli_manage, cli_query, cli_results, cli_tui  # noqa: E402
from lrfr_tui.cli_data import register as register_data_commands  # noqa: E402

for _module in (cli_manage, cli_query, cli_results, cli_ablate, cli_analyze, cli_tui):
    _module.register(app)
register_data_commands(data_app)  # `lrfr data pack` and `lrfr data align`

if __name__ == "__main__":
    main()
