"""What a run is doing and all the numbers at a glance (issue 14): the evaluation as a phase with its own
progress (engine -> Reporter.progress -> worker -> runs.db -> table, detail header, `lrfr run`'s bars), the
headline columns, the 80x24 layout, and the actions reachable from the TUI, on real runs made through the
real Store and worker (micro configs that train in seconds).
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from rich.console import Console

from engine.config import resolve
from engine.reporting import Reporter
from lrfr_tui.progress import ProgressReporter, RateEta
from lrfr_tui.runsdb import Store
from lrfr_tui.screens.detail import DetailScreen
from lrfr_tui.screens.runs import RunsScreen
from lrfr_tui.usecases import queue_runs, record_here
from lrfr_tui.worker import execute_run
from tests.conftest import MICRO_OVERRIDES
from tests.test_tui import NOW, SIZE, loaded, make_app, run, seed

FAST = MICRO_OVERRIDES + ["schedule.max_steps=4", "eval.benchmarks=[lfw,lowres_lfw]"]


class Recorder(Reporter):
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def progress(self, phase: str, **fields) -> None:
        self.calls.append((phase, fields))


def make_real_runs(db: Path) -> dict[str, int]:
    """Two finished micro runs of a sweep (lr 0.05 and 0.1) trained and evaluated by the real worker, and two
    queued ones."""
    ids = {}
    for name, lr in (("sweep", "0.05"), ("sweep", "0.1")):
        cfg = resolve("tiny", FAST + [f"name={name}", f"optim.lr={lr}"])
        run_id = record_here(db, cfg, f"lrfr run --set optim.lr={lr}", group="sweep-lr")
        assert execute_run(db, run_id) == 0
        ids[f"lr{lr}"] = run_id
    queued = queue_runs(db, [resolve("tiny", FAST + ["name=later-a"]), resolve("tiny", FAST + ["name=later-b"])],
                        "lrfr run --queue")
    ids["queued_a"], ids["queued_b"] = queued
    return ids


@pytest.fixture
def db(tmp_path) -> Path:
    """The five fixture runs of tests/test_tui.py (finished x2 with results, failed, running, queued)."""
    path = tmp_path / "runs.db"
    seed(path)
    return path


@pytest.fixture(scope="module")
def real_db(tmp_path_factory, cache_dir):
    """A runs.db of real runs, built once for this module (the worker trains in this process)."""
    root = tmp_path_factory.mktemp("real")
    saved = {k: os.environ.get(k) for k in ("LRFR_CACHE", "LRFR_CATALOG")}
    os.environ["LRFR_CACHE"], os.environ["LRFR_CATALOG"] = str(cache_dir), str(root / "catalog.json")
    try:
        ids = make_real_runs(root / "runs.db")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return root / "runs.db", ids


@pytest.fixture
def fresh_db(real_db, tmp_path) -> tuple[Path, dict[str, int]]:
    """A copy of the real runs (with their run directories) that a test may change."""
    import shutil

    src, ids = real_db
    shutil.copytree(src.parent, tmp_path / "copy")
    return tmp_path / "copy" / "runs.db", ids


# ---------------------------------------------------------------- the evaluation phase


def test_the_worker_stores_the_evaluation_phase_the_engine_reports(tmp_path):
    db = tmp_path / "runs.db"
    cfg = resolve("tiny", FAST + ["name=phase"])
    run_id = record_here(db, cfg, "lrfr run")
    recorder = Recorder()
    assert execute_run(db, run_id, extra=recorder) == 0
    evals = [f for phase, f in recorder.calls if phase == "evaluate"]
    assert [f["index"] for f in evals][0] == 1 and {f["count"] for f in evals} == {2}
    assert [f["benchmark"] for f in evals][-1] == "lowres_lfw"
    lfw = [f["images"] for f in evals if f["benchmark"] == "lfw"]
    assert lfw == sorted(lfw) and lfw[-1] > 0  # images embedded only grow
    passes = [f for f in evals if f["pass_total"]]
    assert passes and all(0 <= f["pass_done"] <= f["pass_total"] for f in passes)
    conn = sqlite3.connect(db)
    (raw,) = conn.execute("SELECT phase FROM runs WHERE id=?", (run_id,)).fetchone()
    conn.close()
    stored = json.loads(raw)  # the last report: the last benchmark, all of its images
    assert stored["phase"] == "evaluate" and stored["index"] == 2 and stored["benchmark"] == "lowres_lfw"
    assert stored["images"] == evals[-1]["images"] and stored["wall"] > 0


def _evaluating(db: Path, run_id: int) -> None:
    """Run ``run_id`` (running) is evaluating benchmark 2 of 5, through the worker's own write (Store.apply_ops)."""
    store = Store(db)
    store.apply_ops(run_id, [["phase", {"phase": "evaluate", "benchmark": "xqlfw", "index": 2, "count": 5,
                                        "images": 12_000, "pass_done": 2000, "pass_total": 12_000, "rate": 400.0,
                                        "eta_s": 25.0, "wall": NOW - 5}]])
    store.close()


def test_evaluation_phase_shows_in_the_table_and_the_detail_header(db):
    _evaluating(db, 4)

    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            table = app.screen.table
            line = table.lines[4]
            assert line.phase["benchmark"] == "xqlfw" and line.eta_s == pytest.approx(20)
            assert str(table.get_cell("4", "progress")) == "ev 2/5 20s"
            table.move_to_run(4)
            await pilot.press("enter")
            await loaded(pilot, DetailScreen)
            head = str(app.screen.query_one("#detail-head").render())
            assert "evaluating xqlfw (2/5) · 12,000 img · 400 img/s · pass ETA 20s" in head
    run(body())


def test_a_resumed_run_measures_its_eta_from_its_own_attempt(db):
    """Run 4's points span NOW-60..NOW at 5 steps/s; a resume 30 s ago that logged steps 150..300 at 10 steps/s
    (the last 20 points) is measured over those only."""
    store = Store(db)
    store.add_metrics(4, [("loss", s, 1.0, NOW - (300 - s) / 10) for s in range(150, 301, 5)])
    store.apply_ops(4, [["phase", {"phase": "train", "since": NOW - 16, "start_step": 150}]])
    store.close()

    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            assert app.screen.table.lines[4].eta_s == pytest.approx(30, abs=1)  # (600-300) / 10
    run(body())


def test_lrfr_run_progress_has_an_eta_from_its_own_rate_and_an_evaluation_bar():
    console = Console(file=io.StringIO(), width=140, force_terminal=False)
    reporter = ProgressReporter(console, "run 1")
    with reporter:
        t0 = time.monotonic()
        reporter.start(1000, 100)  # a resume at step 100
        reporter.metrics(110, {"loss": 1.0})
        time.sleep(0.05)
        reporter.metrics(120, {"loss": 0.9})
        elapsed = time.monotonic() - t0
        task = reporter.bars.tasks[0]
        eta = str(RateEta().render(task))
        assert eta.startswith("ETA ") and "…" not in eta
        rate = task.fields["rate"]
        assert 20 / elapsed <= rate <= 20 / 0.05  # the 20 steps of this attempt, not 120 from step 0
        reporter.progress("evaluate", benchmark="lfw", index=1, count=5, images=300, pass_done=300,
                          pass_total=1200, rate=600.0, eta_s=1.5)
        bar = reporter.bars.tasks[1]
        assert bar.description == "eval 1/5 lfw" and bar.completed == 300 and bar.total == 1200
        assert "300 images · 600 img/s" in bar.fields["stats"]
