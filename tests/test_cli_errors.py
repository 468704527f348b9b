"""Every usage error of every `lrfr` command: one `lrfr: error: ...` line on stderr, exit code 2.

The walk discovers the commands from the Typer app, so a new command (or sub-command group) is
covered without touching this file. The commands run as real subprocesses of the installed console
script, as a user runs them.
"""

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import pytest
import typer
from typer.main import get_command

from lrfr_tui import cli
from lrfr_tui.runsdb import Store

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("lrfr")
LRFR = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "lrfr_tui.cli"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _env(home: Path) -> dict[str, str]:
    """Nothing a test runs reads or writes the user's home, cache, catalog or ./runs.db."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRFR_")}
    env.update(HOME=str(home), LRFR_DB=str(home / "runs.db"), LRFR_CACHE=str(home / "cache"),
               LRFR_CATALOG=str(home / "catalog.json"), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT),
               COLUMNS="80")
    return env


def lrfr(*args: str, cwd: Path, prefix: list[str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), *LRFR, *args], capture_output=True, text=True, cwd=cwd,
                          env=_env(cwd), timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_error_line(proc: subprocess.CompletedProcess, args) -> str:
    what = f"lrfr {' '.join(args)}: rc={proc.returncode}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, what
    assert proc.returncode == cli.EXIT_USER_ERROR, what
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrfr: error: ") and lines[0].strip() != "lrfr: error:", what
    return lines[0]


def assert_ends_in_one_error_line(proc: subprocess.CompletedProcess, args) -> str:
    """A command that failed while working: its progress lines (stderr), then one error line."""
    what = f"lrfr {' '.join(args)}: rc={proc.returncode}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, what
    assert proc.returncode == cli.EXIT_USER_ERROR, what
    lines = proc.stderr.splitlines()
    assert lines and lines[-1].startswith("lrfr: error: "), what
    assert sum(line.startswith("lrfr: error:") for line in lines) == 1, what
    return lines[-1]


# ------------------------------------------------------------ discovering the commands


def _commands(command=None, path=()):
    """(path, click command) of the root, every group and every command, depth first."""
    command = command or get_command(cli.app)
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from _commands(sub, (*path, name))


def _annotation_types(param) -> set:
    """The Python types a parameter accepts (`int | None`, `list[int]` -> {int, NoneType})."""
    descriptor = getattr(param, "type_descriptor", None)  # Typer >= 0.2x
    if descriptor is None:  # older Typer: a click ParamType
        name = getattr(getattr(param, "type", None), "name", None)
        return {{"integer": int, "float": float}.get(name, str)}
    found, todo = set(), [descriptor.annotation]
    while todo:
        t = todo.pop()
        args = typing.get_args(t)
        if args:
            todo.extend(args)
        else:
            found.add(t)
    return found


def _is_number(param) -> bool:
    return bool(_annotation_types(param) & {int, float}) and not getattr(param, "is_flag", False)


def _is_option(param) -> bool:
    return getattr(param, "param_type_name", None) == "option"


def bad_command_lines() -> list[list[str]]:
    """For each command: an unknown option; a non-number for its first number argument and for its
    first number option; for each group, an unknown sub-command."""
    cases = []
    for path, command in _commands():
        cases.append([*path, "--bogus-option"])
        if getattr(command, "commands", None):
            cases.append([*path, "no-such-command"])
            continue
        arguments = [p for p in command.params if not _is_option(p)]
        if any(_is_number(p) for p in arguments):
            first = next(p for p in arguments if _is_number(p))
            cases.append([*path, *("abc" if p is first else "1" if _is_number(p) else "x" for p in arguments)])
        options = [p for p in command.params if _is_option(p) and _is_number(p) and p.opts]
        if options:
            cases.append([*path, options[0].opts[0], "abc"])
    return cases


def test_the_walk_finds_every_command():
    paths = {path for path, _ in _commands()}
    assert {(), ("run",), ("show",), ("ls",), ("worker",), ("rerun",), ("data",), ("data", "add"),
            ("data", "check"), ("data", "list"), ("tui",)} <= paths
    cases = bad_command_lines()
    assert ["show", "abc"] in cases and ["kill", "abc"] in cases and ["ls", "--limit", "abc"] in cases


def test_every_usage_error_of_every_command_is_one_line_and_exit_2(tmp_path):
    cases = bad_command_lines()
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        procs = list(pool.map(lambda args: lrfr(*args, cwd=tmp_path), cases))
    failures = []
    for args, proc in zip(cases, procs, strict=True):
        try:
            assert_one_error_line(proc, args)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, f"{len(failures)} of {len(cases)} bad command lines misbehave:\n\n" + "\n\n".join(failures)
    assert not (tmp_path / "runs.db").exists()  # a usage error records nothing


@pytest.mark.parametrize(("args", "expected", "hint"), [
    (["show", "abc"], "lrfr: error: Invalid value for 'run': Input should be a valid integer", "lrfr show"),
    (["run", "--bogus"], "lrfr: error: No such option: --bogus", "lrfr run"),
    (["ls", "--limit", "-1"], "lrfr: error: Invalid value for '--limit'", "lrfr ls"),
    (["data", "add", "only-a-name"], "lrfr: error: Missing argument 'path'", "lrfr data add"),
    (["no-such-command"], "lrfr: error: No such command 'no-such-command'", "lrfr"),
])
def test_the_reported_examples(tmp_path, args, expected, hint):
    line = assert_one_error_line(lrfr(*args, cwd=tmp_path), args)
    assert line.startswith(expected) and line.endswith(f"(see '{hint} --help')"), line


def test_help_still_works(tmp_path):
    for args in (["--help"], ["run", "--help"], ["data", "--help"], ["data"], []):
        proc = lrfr(*args, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "Usage: lrfr" in proc.stdout and "Traceback" not in proc.stderr, args


# ------------------------------------------------------------ a read-only runs.db


def _nobody_can_run_lrfr(cwd: Path) -> bool:
    if shutil.which("setpriv") is None:
        return False
    proc = lrfr("presets", cwd=cwd, prefix=NOBODY, timeout=60)
    return proc.returncode == 0


def _contents(db: Path) -> list:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [conn.execute("SELECT id, status, name, parent_id FROM runs ORDER BY id").fetchall(),
                conn.execute("SELECT COUNT(*) FROM params").fetchall()]
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["read-only folder and file", "read-only file, live WAL"])
def test_a_read_only_runs_db_is_one_line_and_left_as_it_was(how):
    # As root, chmod does not stop writes: the commands then run as `nobody`. /tmp, not tmp_path:
    # pytest's base folder is private to its user.
    with tempfile.TemporaryDirectory(prefix="lrfr-ro-") as tmp:
        home = Path(tmp)
        home.chmod(0o755)
        prefix = []
        if os.geteuid() == 0:
            if not _nobody_can_run_lrfr(home):
                pytest.skip("running as root and cannot run lrfr as an unprivileged user (no setpriv, or "
                            "nobody cannot read the venv): chmod cannot make runs.db read-only for root")
            prefix = NOBODY
        folder = home / "ro"
        db = folder / "runs.db"
        made = lrfr("run", "--queue", "--preset", "tiny", "--db", str(db), cwd=home)
        assert made.returncode == 0, made.stderr
        keep = None
        if how == "read-only file, live WAL":
            # A reader (here: this test) holds the WAL open: the WAL files stay writable, the database
            # file is not, so lrfr gets past opening it and fails at its first write.
            keep = sqlite3.connect(db)
            keep.execute("SELECT COUNT(*) FROM runs").fetchall()
            for extra in (folder / "runs.db-wal", folder / "runs.db-shm"):
                extra.chmod(0o666)
            folder.chmod(0o777)
        else:
            folder.chmod(0o555)
        db.chmod(0o444)
        before = _contents(db)
        try:
            for args in (["run", "--queue", "--preset", "tiny"], ["rerun", "1", "--queue"],
                         ["worker", "--until-empty"]):
                args = [*args, "--db", str(db)]
                line = assert_ends_in_one_error_line(lrfr(*args, cwd=home, prefix=prefix), args)
                assert str(folder) in line and any(w in line for w in ("read-only", "readonly", "denied")), line
                assert _contents(db) == before
        finally:
            if keep is not None:
                keep.close()
            folder.chmod(0o755)


# ------------------------------------------------------------ main() in-process


def _raise(exc):
    def command(*args, **kwargs):
        raise exc
    return command


@pytest.mark.parametrize("exc", [click.UsageError("from the installed click"), typer.BadParameter("from typer"),
                                 click.ClickException("a click error")])
def test_click_errors_of_either_click_are_one_line(monkeypatch, capsys, exc):
    monkeypatch.setattr("engine.config.list_presets", _raise(exc))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["presets"])
    assert exit_.value.code == cli.EXIT_USER_ERROR
    stderr = capsys.readouterr().err
    assert len(stderr.splitlines()) == 1 and stderr.startswith("lrfr: error: ") and exc.message in stderr


def test_sqlite_errors_name_the_runs_db(monkeypatch, capsys, tmp_path):
    db = tmp_path / "runs.db"
    monkeypatch.setattr(Store, "create_run", _raise(sqlite3.OperationalError("database or disk is full")))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--queue", "--preset", "tiny", "--db", str(db)])
    assert exit_.value.code == cli.EXIT_USER_ERROR
    assert capsys.readouterr().err == f"lrfr: error: runs database {db}: database or disk is full\n"

    monkeypatch.setenv("LRFR_DB", str(tmp_path / "env.db"))  # no --db: the default the command used
    with pytest.raises(SystemExit):
        cli.main(["run", "--queue", "--preset", "tiny"])
    assert capsys.readouterr().err == f"lrfr: error: runs database {tmp_path / 'env.db'}: database or disk is full\n"

    monkeypatch.setattr("engine.config.list_presets", _raise(sqlite3.OperationalError("database is locked")))
    with pytest.raises(SystemExit):
        cli.main(["presets"])  # no runs database involved: just the message
    assert capsys.readouterr().err == "lrfr: error: database is locked\n"


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), typer.Abort(), click.exceptions.Abort()])
def test_ctrl_c_still_exits_130(monkeypatch, capsys, exc):
    monkeypatch.setattr("engine.config.list_presets", _raise(exc))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["presets"])
    assert exit_.value.code == 130
    assert "Traceback" not in capsys.readouterr().err


def _runs_in(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def test_eval_of_a_model_without_its_benchmark_data_records_nothing(tmp_path):
    """The README's `lrfr eval --model M --bench lfw` on a machine with no LFW registered: one line that
    says how to register it (or use the stand-ins), exit 2, and no failed run left behind."""
    import torch

    from engine.models import get_model

    net = get_model("iresnet18", width=0.125, input_size=32).eval()
    torch.jit.save(torch.jit.trace(net, torch.zeros(2, 3, 32, 32)), tmp_path / "model.pt")
    args = ["eval", "--model", "model.pt", "--bench", "lfw", "--set", "model.input_size=32"]
    line = assert_one_error_line(lrfr(*args, cwd=tmp_path), args)
    assert "lrfr data add lfw" in line and "eval.source=synthetic" in line
    assert _runs_in(tmp_path / "runs.db") == 0


def test_eval_of_a_model_exported_with_a_fixed_batch_says_how_to_export_it(tmp_path):
    """A torch.export program traced at batch 2 cannot embed a batch of 1 or 3: one line naming the
    dynamic batch dimension, instead of a traceback from inside the evaluation, and no run recorded."""
    import torch

    from engine.models import get_model

    net = get_model("iresnet18", width=0.125, input_size=32).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(2, 3, 32, 32),)), tmp_path / "fixed.pt2")
    args = ["eval", "--model", "fixed.pt2", "--preset", "tiny", "--bench", "lfw", "--set", "model.input_size=32"]
    line = assert_one_error_line(lrfr(*args, cwd=tmp_path, timeout=300), args)
    assert "dynamic batch dimension" in line and "fixed.pt2" in line
    assert _runs_in(tmp_path / "runs.db") == 0
