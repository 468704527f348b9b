"""The TUI driven through Textual's Pilot against real runs.db files.

Fixture runs are written through the Store API (create_run, add_metrics, add_results, then their
times pinned to a frozen "now" so ages and ETAs are stable); one test launches real `tiny` runs
from the launch form and lets the app's scheduler start them as subprocesses. Snapshot tests
(pytest-textual-snapshot) cover the main screens at 100x30, 80x24 and 120x36;
regenerate them with ``pytest tests/test_tui.py --snapshot-update`` after an intended change.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import pytest

from engine.config import flatten, resolve, to_dict
from lrfr_tui.app import LrfrApp
from lrfr_tui.gpus import fake_gpus
from lrfr_tui.launch_form import FormError, LaunchForm, build_runs
from lrfr_tui.runsdb import Store
from lrfr_tui.scheduler import Scheduler
from lrfr_tui.screens.compare import CompareScreen
from lrfr_tui.screens.detail import DetailScreen
from lrfr_tui.screens.dialogs import ChoiceDialog, ConfirmDialog
from lrfr_tui.screens.launch import LaunchScreen
from lrfr_tui.screens.results import ResultsScreen
from lrfr_tui.screens.runs import RunsScreen
from lrfr_tui.tui_models import downsample
from lrfr_tui.widgets.loss_plot import CurvePlot
from tests.conftest import MICRO_OVERRIDES

try:  # the snapshot plugin (dev dependency) pins pytest < 9 through syrupy; without it those tests skip
    import pytest_textual_snapshot  # noqa: F401

    snapshot_test = pytest.mark.skipif(False, reason="")
except ImportError:
    snapshot_test = pytest.mark.skip(reason="pytest-textual-snapshot is not installed")

REPO = Path(__file__).resolve().parents[1]
NOW = 1_750_000_000.0  # the frozen "now" of every fixture app
SIZE = (100, 30)

# name, preset, overrides, status, last step, results (lfw, xqlfw, lowres@7, scface avg) or None
FIXTURE_RUNS = [
    ("baseline", "tiny-baseline", [], "finished", 600, (0.9950, 0.7010, 0.6200, 0.4000)),
    ("maug-logexp", "tiny", [], "finished", 600, (0.9930, 0.8820, 0.8500, 0.6000)),
    ("maug-l2", "tiny", ["loss.distance=l2"], "failed", 240, None),
    ("maug-p2", "tiny", ["loss.p=2", "optim.lr=0.1"], "running", 300, None),
    ("next-up", "tiny", ["optim.lr=0.02"], "queued", 0, None),
]


@cache
def _config(preset: str, overrides: tuple[str, ...]):
    cfg = resolve(preset, list(overrides))
    return to_dict(cfg), flatten(cfg)


def seed(db: Path) -> list[int]:
    """Five realistic runs (finished x2 with results, failed, running with a log, queued)."""
    store = Store(db)
    ids = []
    for i, (name, preset, overrides, status, steps, results) in enumerate(FIXTURE_RUNS):
        config, flat = _config(preset, tuple(overrides + [f"name={name}"]))
        run_id = store.create_run(config, flat, f"lrfr run --queue --preset {preset}")
        ids.append(run_id)
        created = NOW - 3600 * (5 - i)
        # The running run's points end at NOW at 5 steps/s, so its ETA is (600 - 300) / 5 = 60 s.
        end = NOW if status == "running" else created + 600
        points = []
        for step in range(5, steps + 1, 5):
            wall = end - (steps - step) / 5
            loss = 6.0 * math.exp(-step / (150 + 40 * i)) + 0.4 + 0.05 * math.sin(step / 3)
            points += [("loss", step, loss, wall), ("loss_cls", step, 0.9 * loss, wall),
                       ("loss_dist", step, 0.1 * loss, wall), ("lr", step, 0.05 if step < 480 else 0.005, wall),
                       ("images_per_s", step, 400 + 15 * math.sin(step / 11), wall)]
        store.add_metrics(run_id, points)
        if results:
            lfw, xq, lr7, sc = results
            rows = [("lfw", "insightface_10fold", "acc", None, lfw), ("xqlfw", "xqlfw_official", "acc", None, xq)]
            rows += [("scface", "zero_shot", f"rank1_d{d}", None, sc + 0.1 * (d - 2)) for d in (1, 2, 3)]
            rows += [("scface", "zero_shot", "rank1_mean", None, sc)]
            rows += [("lowres_lfw", "insightface_10fold_second", "acc", r, acc)
                     for r, acc in ((112, lfw), (20, lfw - 0.05), (14, (lfw + lr7) / 2), (7, lr7))]
            store.add_results(run_id, rows)
        store.conn.execute(
            "UPDATE runs SET status=?, created=?, started=?, ended=?, step=?, total_steps=?, heartbeat=?, "
            "host='gpu-box', git_commit='0123abc' WHERE id=?",
            (status, created, None if status == "queued" else created + 10,
             created + 640 if status in ("finished", "failed") else None, steps,
             None if status == "queued" else 600, NOW if status == "running" else None, run_id))
    store.conn.execute("UPDATE runs SET failure_reason='loss became nan at step 240' WHERE id=?", (ids[2],))
    store.conn.execute("UPDATE runs SET exit_code=0 WHERE status='finished'")
    store.conn.execute("INSERT INTO tags VALUES (?, 'paper')", (ids[1],))
    log = db.parent / "runs" / str(ids[3]) / "train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"2025-06-15 14:{i // 60:02d}:{i % 60:02d} step {5 * i} loss={5.9 - 0.01 * i:.3f}\n"
                           for i in range(1, 61)))
    store.conn.execute("UPDATE runs SET log_path=? WHERE id=?", (str(log), ids[3]))
    store.close()
    return ids


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "runs.db"
    seed(path)
    return path


def make_app(db: Path, **kwargs) -> LrfrApp:
    options = {"drive": False, "poll_s": 0.1, "now": lambda: NOW, "discover": fake_gpus(2), "kill_grace_s": 20.0}
    options.update(kwargs)
    app = LrfrApp(db, **options)
    app.notes = []  # every notification's text, in order (notify is also called from worker threads)
    original = app.notify

    def recording_notify(message, *args, **kw):
        app.notes.append(str(message))
        return original(message, *args, **kw)

    app.notify = recording_notify
    return app


async def wait_for(pilot, predicate, timeout: float = 30.0, what="condition") -> None:
    """Poll ``predicate`` between event-loop turns; ``what`` (text, or a callable for late detail) names it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what() if callable(what) else what}")


async def loaded(pilot, screen_type=None, count: int = 1) -> None:
    """Wait until the current screen (of ``screen_type``) has applied ``count`` snapshots."""
    app = pilot.app
    await wait_for(pilot, lambda: (screen_type is None or isinstance(app.screen, screen_type))
                   and getattr(app.screen, "loads", 0) >= count, what=f"{screen_type} to load")
    await wait_for(pilot, lambda: app.queue_state.mode != "starting", what="a queue pass")


def run(coro) -> None:
    asyncio.run(coro)


def status_of(db: Path, run_id: int) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()[0]
    finally:
        conn.close()


# ---------------------------------------------------------------- runs screen


def test_runs_table_updates_in_place_and_keeps_the_cursor(db):
    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            table = app.screen.table
            assert table.sorted_ids() == [5, 4, 3, 2, 1]  # newest first
            assert table.lines[4].status == "running" and table.lines[4].eta_s == pytest.approx(60, abs=1)
            assert table.lines[1].results["lfw.acc"] == pytest.approx(0.995)
            assert len(table.lines[4].spark) == 10
            await pilot.press("down", "down")
            assert table.cursor_run_id == 3
            # A new run and progress of the running one arrive while the user looks at run 3.
            store = Store(db)
            config, flat = _config("tiny", ("name=late",))
            new_id = store.create_run(config, flat, "lrfr run")
            store.add_metrics(4, [("loss", 305, 1.0, NOW)])
            store.mark_progress(4, 305, 600)
            store.close()
            loads = app.screen.loads
            await wait_for(pilot, lambda: new_id in table.lines and app.screen.loads > loads + 1, what="the new run")
            assert table.sorted_ids()[0] == new_id
            assert table.cursor_run_id == 3  # still on the same run, one row lower
            assert table.lines[4].step == 305
            assert "progress" in [c.key for c in table._columns]
    run(body())


def test_filter_as_you_type_uses_the_ls_language(db):
    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            screen = app.screen

            async def typed(text: str, paste: bool = False) -> set[int]:
                field = screen.query_one("#filter")
                if not field.has_focus:
                    await pilot.press("slash")
                if paste:
                    field.value = text
                else:
                    field.value = ""
                    await pilot.press(*list(text) if text else [])
                await pilot.pause(0.3)
                loads = screen.loads
                await wait_for(pilot, lambda: screen.loads > loads + 1, what="a filtered reload")
                return set(screen.table.lines)

            assert await typed("status=finished") == {1, 2}
            assert await typed("lfw.acc>0.994", paste=True) == {1}
            assert await typed("tag=paper", paste=True) == {2}
            assert await typed("min(loss)<0.5 status=finished", paste=True) == {1}
            assert await typed("optim.lr=0.1", paste=True) == {4}
            # Half-typed: the error shows inline and the last good filter stays applied.
            assert await typed("optim.lr=0.1 lfw.acc>", paste=True) == {4}
            error = screen.query_one("#filter-error")
            assert "nothing after" in str(error.render()) and error.has_class("shown")
            assert await typed("", paste=True) == {1, 2, 3, 4, 5}
            assert not screen.query_one("#filter-error").has_class("shown")
            await pilot.press("enter")
            assert screen.table.has_focus
    run(body())


def test_sort_by_column_keeps_the_cursor_run(db):
    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            table = app.screen.table
            await pilot.press("down")
            assert table.cursor_run_id == 4
            await pilot.press("s")  # id -> name
            assert table.sort_column == "name"
            assert table.sorted_ids() == [1, 3, 2, 4, 5]  # baseline, maug-l2, maug-logexp, maug-p2, next-up
            assert table.cursor_run_id == 4
            for _ in range(10):
                if table.sort_column == "lfw":
                    break
                await pilot.press("s")
            assert table.sort_column == "lfw" and table.sort_reverse
            assert table.sorted_ids()[:2] == [1, 2]  # best LFW first, runs without results last
            await pilot.press("S")
            assert table.sorted_ids()[-2:] == [2, 1]
            table.sort_by("lr7")
            assert table.sorted_ids()[:2] == [2, 1]
    run(body())


def test_kill_from_the_table_asks_then_kills(db):
    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            table = app.screen.table
            assert table.cursor_run_id == 5 and table.lines[5].status == "queued"
            await pilot.press("k")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the confirmation")
            await pilot.press("n")  # changed my mind
            await pilot.pause(0.2)
            assert status_of(db, 5) == "queued"
            await pilot.press("k")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the confirmation")
            await pilot.press("y")
            await wait_for(pilot, lambda: table.lines.get(5) and table.lines[5].status == "killed",
                           what="run 5 shown killed")
            assert status_of(db, 5) == "killed"
            assert any("run 5: killed" in n for n in app.notes)
            # A finished run has nothing to kill: no dialog, a warning.
            await pilot.press("down", "down", "down")
            assert table.cursor_run_id == 2
            await pilot.press("k")
            await pilot.pause(0.1)
            assert isinstance(app.screen, RunsScreen)
            assert any("nothing to kill" in n for n in app.notes)
    run(body())


def test_tag_and_resume_from_the_table(db):
    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            table = app.screen.table
            await pilot.press("down", "down")  # run 3, failed
            await pilot.press("t")
            await wait_for(pilot, lambda: not isinstance(app.screen, RunsScreen), what="the tag prompt")
            await pilot.press(*"ablation", "enter")
            await wait_for(pilot, lambda: table.lines[3].tags == ["ablation"], what="the tag")
            await pilot.press("r")
            await wait_for(pilot, lambda: table.lines[3].status == "queued", what="run 3 queued again")
            assert status_of(db, 3) == "queued"
    run(body())


# ---------------------------------------------------------------- detail, compare, results


def test_detail_screen_draws_downsampled_curves_and_follows_the_log(db):
    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            await pilot.press("down", "enter")
            await loaded(pilot, DetailScreen)
            screen = app.screen
            assert screen.run_id == 4
            plot = screen.query_one("#plot-loss", CurvePlot)
            await wait_for(pilot, lambda: plot.points > 0, what="the loss curve")
            assert {line.label for line in plot.lines} == {"loss", "loss_cls"}
            # loss_dist (a hundredth of loss_cls here) has its own plot and axis
            assert [line.label for line in screen.query_one("#plot-dist", CurvePlot).lines] == ["loss_dist"]
            log = screen.query_one("#log-view")
            await wait_for(pilot, lambda: log.line_count >= 60, what="the log tail")
            draws = plot.draws
            loads = screen.loads
            await wait_for(pilot, lambda: screen.loads >= loads + 3, what="idle refreshes")
            assert plot.draws == draws  # nothing changed: nothing redrawn
            # New points and log lines arrive.
            store = Store(db)
            store.add_metrics(4, [("loss", s, 0.9, NOW) for s in (305, 310)])
            store.close()
            with open(screen.snapshot.log_path, "a") as fh:
                fh.write("2025-06-15 14:01:01 step 310 loss=0.900\n")
            await wait_for(pilot, lambda: plot.draws > draws, what="a redraw with the new points")
            await wait_for(pilot, lambda: "step 310" in log.lines[-1], what="the new log line")
            await pilot.press("l")
            assert plot.log_scale and "log" in plot.title
            await pilot.press("plus")
            await wait_for(pilot, lambda: "smoothing 0.6" in plot.title, what="smoothing")
            await pilot.press("escape")
            assert isinstance(app.screen, RunsScreen)
    run(body())


def test_curves_are_bucket_means():
    points = [(float(s), float(s % 2)) for s in range(10_000)]
    xs, ys = downsample(points, 200)
    assert len(xs) == 200 and all(abs(y - 0.5) < 1e-9 for y in ys)
    assert xs[0] == pytest.approx(24.5) and xs[-1] == pytest.approx(9974.5)
    assert downsample([(1.0, float("nan")), (2.0, 1.0)], 200) == ([2.0], [1.0])


def test_compare_selected_runs_table4_with_deltas(db):
    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            table = app.screen.table
            await pilot.press("c")
            assert any("select two or more" in n for n in app.notes)
            await pilot.press("down", "down", "down")  # run 2
            await pilot.press("space")  # selects run 2, cursor moves to run 1
            await pilot.press("space")
            assert list(table.selected) == [2, 1]
            await pilot.press("c")
            await loaded(pilot, CompareScreen)
            screen = app.screen
            assert screen.run_ids == [2, 1]  # display order: the first is the baseline of the deltas
            matrix = screen.matrix
            assert [c.spec for c in matrix.columns][:6] == [
                "scface.zero_shot.rank1_d1", "scface.zero_shot.rank1_d2", "scface.zero_shot.rank1_d3",
                "scface.zero_shot.rank1_mean", "xqlfw.acc", "lfw.acc"]
            lfw = [c.spec for c in matrix.columns].index("lfw.acc")
            assert matrix.rows[1].deltas[lfw] == pytest.approx(0.002)
            results = screen.query_one("#compare-results")
            assert "+0.20" in str(results.get_row("1")[lfw + 1])
            diff = screen.snapshot.params
            assert "loss.distance" in diff and "augment.resolutions" in diff and "optim.lr" not in diff
            plot = screen.query_one("#compare-plot", CurvePlot)
            await wait_for(pilot, lambda: len(plot.lines) == 2, what="two overlaid curves")
            await pilot.press("m")
            assert screen.metric != "loss"
            await pilot.press("escape")
            assert isinstance(app.screen, RunsScreen)
    run(body())


def test_results_board_highlights_best_and_exports(db):
    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            await pilot.press("b")
            await loaded(pilot, ResultsScreen)
            screen = app.screen
            assert [row.id for row in screen.matrix.rows] == [1, 2]
            board = screen.query_one("#board")
            labels = screen.matrix.labels()
            lfw = labels.index("LFW acc") + 2
            assert "bold" in str(board.get_row("1")[lfw].style)  # 99.50 beats 99.30
            assert "bold" not in str(board.get_row("2")[lfw].style)
            for key, suffix, needle in (("c", ".csv", "99.50"), ("m", ".md", "**99.50**"),
                                        ("l", ".tex", r"\textbf{99.50}")):
                before = set(db.parent.glob("lrfr-results-*"))
                await pilot.press("e")
                await wait_for(pilot, lambda: isinstance(app.screen, ChoiceDialog), what="the format choice")
                await pilot.press(key)
                await wait_for(pilot, lambda b=before: set(db.parent.glob("lrfr-results-*")) - b,
                               what=f"the {suffix} export")
                (path,) = set(db.parent.glob("lrfr-results-*")) - before
                assert path.suffix == suffix and needle in path.read_text()
                await wait_for(pilot, lambda p=path: any(str(p) in n for n in app.notes), what="the notification")
    run(body())


# ---------------------------------------------------------------- launching, failures, the lock


def test_launch_form_validates_as_you_type_with_the_cli_rules(db):
    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen), what="the launch form")
            screen = app.screen
            await wait_for(pilot, lambda: screen.valid is not None, timeout=60, what="the first validation")
            assert screen.valid
            screen.query_one("#overrides").load_text("schedule.max_steps=3\noptim.lr=-1")
            await wait_for(pilot, lambda: screen.valid is False, timeout=30, what="the error")
            message = str(screen.query_one("#validation").render())
            assert "overrides line 2" in message and "optim.lr" in message
            assert screen.query_one("#overrides").has_class("invalid")
            await pilot.press("ctrl+s")  # refused: the form is invalid
            await pilot.pause(0.1)
            assert isinstance(app.screen, LaunchScreen)
            screen.query_one("#overrides").load_text("schedule.max_steps=3\noptim.lr=0.01")
            screen.query_one("#grid").load_text("loss.p=1,2")
            await wait_for(pilot, lambda: screen.valid is True, timeout=30, what="a valid form")
            assert "2 runs" in str(screen.query_one("#validation").render())
            await pilot.press("ctrl+g")  # queue (this app does not drive: nothing starts)
            await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back on the runs")
            await wait_for(pilot, lambda: {6, 7} <= set(app.screen.table.lines), what="the two queued runs")
            assert status_of(db, 6) == status_of(db, 7) == "queued"
            assert any("nothing drives the queue" in n for n in app.notes)
            # Duplicate with edits: the form opens with the run's changed keys.
            table = app.screen.table
            table.move_to_run(4)
            await pilot.press("d")
            await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen), what="the duplicate form")
            overrides = app.screen.query_one("#overrides").text
            assert "loss.p=2.0" in overrides and "optim.lr=0.1" in overrides
            assert app.screen.initial.parent_id == 4
    run(body())


def test_build_runs_names_the_bad_line():
    form = LaunchForm("tiny", overrides="# comment\noptim.lr=0.01\nmodel.nope=1", grid="")
    with pytest.raises(FormError) as info:
        build_runs(form)
    assert info.value.field == "overrides" and info.value.line == 3 and "model.nope" in str(info.value)
    assert len(build_runs(LaunchForm("tiny", grid="optim.lr=0.1,0.05\nloss.p=1,2"))) == 4


def test_run_that_disappears_and_damaged_or_missing_db_notify(db, tmp_path):
    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            await pilot.press("down", "down", "enter")
            await loaded(pilot, DetailScreen)
            conn = sqlite3.connect(db)
            conn.execute("DELETE FROM runs WHERE id=3")
            conn.commit()
            conn.close()
            await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back on the runs screen")
            assert any("run 3 is gone" in n for n in app.notes)
            await wait_for(pilot, lambda: 3 not in app.screen.table.lines, what="run 3 gone from the table")

        missing = make_app(tmp_path / "nowhere" / "runs.db")
        async with missing.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            # No runs.db yet is no error toast: the empty screen says it, and how to make one.
            assert not any("no runs database" in n for n in missing.notes)
            empty = str(missing.screen.query_one("#runs-empty").render())
            assert "no runs database" in empty and "Press n" in empty
            assert missing.queue_state.mode == "no-db"
            assert not (tmp_path / "nowhere" / "runs.db").exists()  # looking never creates it

        damaged = tmp_path / "damaged.db"
        damaged.write_bytes(b"this is not a database" * 100)
        broken = make_app(damaged)
        async with broken.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            await wait_for(pilot, lambda: broken.queue_state.mode == "error", what="the queue error")
            assert any("runs database" in n or "not a database" in n for n in broken.notes)
            await pilot.press("b")  # other screens cope too
            await loaded(pilot, ResultsScreen)
            assert isinstance(broken.screen, ResultsScreen)
    run(body())


def test_a_second_tui_watches_instead_of_driving(db):
    async def body():
        other = Scheduler(db)
        other.acquire()
        try:
            app = make_app(db, drive=None)
            async with app.run_test(size=SIZE) as pilot:
                await loaded(pilot, RunsScreen)
                await wait_for(pilot, lambda: app.queue_state.mode == "watching", what="watching")
                assert app.queue_state.holder == other.name
                right = str(app.screen.query_one("#status-right").render())
                assert f"driven by {other.name}" in right
                await pilot.pause(0.3)
                assert status_of(db, 5) == "queued"  # the queued run was not launched by this TUI
        finally:
            other.release()
            other.store.close()
    run(body())


def test_command_palette_offers_every_action(db):
    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            titles = [c.title for c in app.get_system_commands(app.screen)]
            for wanted in ("Detail", "New", "Kill", "Resume", "Duplicate", "Tag", "Compare", "Filter", "Sort",
                           "Help", "Results", "Export results as CSV (.csv)", "Sort runs by LFW"):
                assert wanted in titles, wanted
            await pilot.press("question_mark")
            await pilot.pause(0.2)
            assert type(app.screen).__name__ == "HelpScreen"
            await pilot.press("escape")
            await pilot.press("ctrl+p")
            await pilot.pause(0.2)
            await pilot.press(*"Results")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await loaded(pilot, ResultsScreen)
    run(body())


def test_launch_tiny_from_the_form_watch_it_finish_and_kill_another(tmp_path, monkeypatch):
    """Real runs: the app's scheduler starts workers of this checkout as subprocesses, one per (fake) GPU,
    so the long run that gets killed trains while the tiny one finishes."""
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "runs.db"
    tiny = MICRO_OVERRIDES + ["schedule.max_steps=3", "eval.benchmarks=[lfw]", "launch.gpus=1"]
    long = [o for o in tiny if not o.startswith("schedule.")] + ["schedule.epochs=1000", "schedule.milestones=[999]"]

    async def launch_from_form(pilot, app, overrides: list[str]) -> None:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen), what="the launch form")
        app.screen.query_one("#overrides").load_text("\n".join(overrides))
        await wait_for(pilot, lambda: app.screen.valid is True, timeout=60, what="a valid form")
        await pilot.press("ctrl+s")  # start now
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="back on the runs screen")

    def state(run_id: int):
        def describe() -> str:
            try:
                run = Store(db, create=False).get_run(run_id)
            except Exception as exc:  # noqa: BLE001 - a diagnostic only
                return f"run {run_id}: {exc}"
            return f"run {run_id} ({run.status}, step {run.step}, reason {run.failure_reason!r})"
        return describe

    async def body():
        # Two fake idle GPUs: each run gets one (CUDA_VISIBLE_DEVICES), torch falls back to the CPU here.
        app = make_app(db, drive=True, now=time.time, discover=fake_gpus(2), poll_s=0.25)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            await launch_from_form(pilot, app, long)  # run 1
            await launch_from_form(pilot, app, tiny)  # run 2
            table = app.screen.table
            await wait_for(pilot, lambda: 2 in table.lines and table.lines[2].status in ("finished", "failed"),
                           timeout=240, what=state(2))
            assert table.lines[2].status == "finished", state(2)()
            assert app.queue_state.mode == "driving"
            assert any("run 1 started on GPUs [0]" in n for n in app.notes)
            assert any("run 2 started on GPUs [1]" in n for n in app.notes)
            # One toast for its end (the runs screen's), however many parts of the app noticed it.
            assert len([n for n in app.notes if "run 2 (tiny) finished" in n]) == 1, app.notes
            await wait_for(pilot, lambda: "lfw.acc" in table.lines[2].results, what="the LFW result")
            table.move_to_run(2)
            await pilot.press("enter")
            await loaded(pilot, DetailScreen)
            plot = app.screen.query_one("#plot-loss", CurvePlot)
            await wait_for(pilot, lambda: plot.points >= 3, what="the loss curve drawn")
            assert plot.draws >= 1 and app.screen.query_one("#log-view").line_count > 0
            await pilot.press("escape")

            await wait_for(pilot, lambda: table.lines[1].status == "running" and table.lines[1].step > 0,
                           timeout=180, what=state(1))
            assert table.lines[1].gpus == "0"
            table.move_to_run(1)
            await pilot.press("k")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the confirmation")
            await pilot.press("y")
            await wait_for(pilot, lambda: table.lines[1].status == "killed", timeout=90, what=state(1))
            assert status_of(db, 1) == "killed"

    try:
        run(body())
    finally:  # a failed assertion must not leave a 1000-epoch training behind
        if db.exists():
            conn = sqlite3.connect(db)
            pids = [p for (p,) in conn.execute("SELECT pid FROM runs WHERE status='running' AND pid IS NOT NULL")]
            conn.close()
            for pid in pids:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def test_quitting_leaves_a_running_training_running_and_a_new_tui_adopts_it(db):
    """Closing a driving TUI releases the queue's lock and signals nothing; the next TUI shows the run live."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "lrfr_tui.worker", "4"],
                               start_new_session=True)
    try:
        conn = sqlite3.connect(db)
        conn.execute("UPDATE runs SET pid=?, host=?, launcher='local', heartbeat=? WHERE id=4",
                      (sleeper.pid, socket.gethostname(), time.time()))
        conn.commit()
        conn.close()

        async def session() -> None:
            app = make_app(db, drive=None, discover=lambda: [])  # CPU box: run 4 occupies it, 5 waits
            async with app.run_test(size=SIZE) as pilot:
                await loaded(pilot, RunsScreen)
                await wait_for(pilot, lambda: app.queue_state.mode == "driving", what="driving the queue")
                assert app.screen.table.lines[4].status == "running"
                await pilot.pause(0.3)  # a few scheduler passes: the live run is adopted, not failed
                assert status_of(db, 4) == "running" and status_of(db, 5) == "queued"
                await pilot.press("q")  # run 5 is queued and this TUI drives: it asks first
                await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the quit question")
                await pilot.press("y")

        run(session())
        assert sleeper.poll() is None  # not signalled
        probe = Scheduler(db)
        probe.acquire()  # the lock was released on quit
        probe.release()
        probe.store.close()
        run(session())  # reopened: the same run, still running, driven again
        assert sleeper.poll() is None and status_of(db, 4) == "running"
    finally:
        sleeper.kill()
        sleeper.wait()


# ---------------------------------------------------------------- snapshots


async def _settle(pilot, screen_type, count: int = 2) -> None:
    await loaded(pilot, screen_type, count)
    await pilot.pause(0.2)


SNAPSHOT_SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])


@snapshot_test
@SNAPSHOT_SIZES
def test_snapshot_runs_screen(db, snap_compare, size):
    async def before(pilot):
        await _settle(pilot, RunsScreen)
        await pilot.press("down", "down", "down", "space")

    assert snap_compare(make_app(db), terminal_size=size, run_before=before)


@snapshot_test
@SNAPSHOT_SIZES
def test_snapshot_detail_screen(db, snap_compare, size):
    async def before(pilot):
        await _settle(pilot, RunsScreen)
        await pilot.press("down", "enter")
        await _settle(pilot, DetailScreen, 3)

    assert snap_compare(make_app(db), terminal_size=size, run_before=before)


@snapshot_test
@SNAPSHOT_SIZES
def test_snapshot_detail_results_tab(db, snap_compare, size):
    async def before(pilot):
        await _settle(pilot, RunsScreen)
        await pilot.press("down", "down", "down", "enter")
        await _settle(pilot, DetailScreen, 3)
        await pilot.press("2")
        await pilot.pause(0.3)

    assert snap_compare(make_app(db), terminal_size=size, run_before=before)


@snapshot_test
@SNAPSHOT_SIZES
def test_snapshot_compare_screen(db, snap_compare, size):
    async def before(pilot):
        await _settle(pilot, RunsScreen)
        await pilot.press("down", "down", "down", "space", "space", "c")
        await _settle(pilot, CompareScreen, 1)
        await pilot.press("2")
        await pilot.pause(0.3)

    assert snap_compare(make_app(db), terminal_size=size, run_before=before)


@snapshot_test
@SNAPSHOT_SIZES
def test_snapshot_results_board(db, snap_compare, size):
    async def before(pilot):
        await _settle(pilot, RunsScreen)
        await pilot.press("b")
        await _settle(pilot, ResultsScreen, 1)

    assert snap_compare(make_app(db), terminal_size=size, run_before=before)
