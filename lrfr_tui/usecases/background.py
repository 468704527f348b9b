"""Work on a finished run that needs torch, started in a process of its own so that the TUI never imports
torch: evaluate it on more benchmarks (``lrfr eval --run N --bench ...``) and draw the paper's figures for it
(``lrfr analyze N --figure ...``). The process writes its output to a log in the run's directory; its results
and figures land in runs.db as the CLI's do, so every screen shows them on its next read.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import LrfrError
from engine.evaluate.registry import parse_benchmark
from lrfr_tui.runsdb import Store, runs_root
from lrfr_tui.runsdb.states import ACTIVE_STATUSES

# What `lrfr analyze` draws for one run without extra options (gradnorm needs training faces, gradients no run).
DEFAULT_FIGURES = ("resolution", "similarity", "roc", "dimerror")


@dataclass
class BackgroundJob:
    run_id: int
    what: str  # "evaluation on xqlfw, scface" / "figures resolution, roc"
    log: Path
    process: subprocess.Popen

    def wait(self) -> int:
        return self.process.wait()

    def last_line(self) -> str:
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""


def _finished_run_dir(db: Path, run_id: int) -> Path:
    store = Store(db, create=False)
    try:
        run = store.get_run(run_id)
    finally:
        store.close()
    if run.status in ACTIVE_STATUSES:
        raise LrfrError(f"run {run_id} is {run.status}: wait until it ends")
    run_dir = Path(run.run_dir) if run.run_dir else runs_root(db) / str(run_id)
    if not (run_dir / "checkpoint.pt").exists():
        raise LrfrError(f"run {run_id} has no checkpoint ({run_dir / 'checkpoint.pt'}): nothing to evaluate")
    return run_dir


def _spawn(db: Path, run_id: int, run_dir: Path, args: list[str], log_name: str, what: str) -> BackgroundJob:
    log = run_dir / log_name
    with log.open("ab") as fh:
        process = subprocess.Popen([sys.executable, "-m", "lrfr_tui.cli", *args, "--db", str(db)], stdout=fh,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                   cwd=str(db.parent))
    return BackgroundJob(run_id, what, log, process)


def evaluate_more(db: Path, run_id: int, benchmarks: Sequence[str]) -> BackgroundJob:
    """Evaluate finished run ``run_id``'s checkpoint on ``benchmarks`` (names or BENCH=DATASET) in the background."""
    names = [b for b in dict.fromkeys(str(b).strip() for b in benchmarks) if b]
    if not names:
        raise LrfrError("name one or more benchmarks to evaluate on")
    for name in names:
        parse_benchmark(name)  # a typo is an error now, not in the log later (ConfigError is an LrfrError)
    run_dir = _finished_run_dir(db, run_id)
    args = ["eval", "--run", str(run_id)] + [arg for name in names for arg in ("--bench", name)]
    return _spawn(db, run_id, run_dir, args, "eval-more.log", f"evaluation on {', '.join(names)}")


def draw_figures(db: Path, run_id: int, figures: Sequence[str] = DEFAULT_FIGURES) -> BackgroundJob:
    """Draw `lrfr analyze`'s ``figures`` for finished run ``run_id`` in the background (PNGs in runs/<id>/figures)."""
    names = [f for f in dict.fromkeys(str(f).strip().lower() for f in figures) if f]
    if not names:
        raise LrfrError("name one or more figures (resolution similarity roc dimerror embedding gradnorm)")
    run_dir = _finished_run_dir(db, run_id)
    return _spawn(db, run_id, run_dir, ["analyze", str(run_id), "--figure", ",".join(names)], "figures.log",
                  f"figures {', '.join(names)}")
