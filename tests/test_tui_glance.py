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
from tests.test_tui import NOW, SIZE, loaded, make_app, run, seed, wait_for

FAST = MICRO_OVERRIDES + ["schedule.max_steps=4", "eval.benchmarks=[lfw,lowres_lfw]", "eval.resolutions=[32,14,7]"]


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


async def open_detail(pilot, run_id: int, loads: int = 1) -> None:
    """From the runs screen, as a user does: cursor on the run, enter, wait for its detail to load."""
    await loaded(pilot, RunsScreen)
    pilot.app.screen.table.move_to_run(run_id)
    await pilot.press("enter")
    await loaded(pilot, DetailScreen, loads)


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


def test_detail_header_keeps_one_line_per_fact_at_80_columns(db):
    """An evaluating run's first header line is longer than 80 columns: it is cut at the edge, and its tail
    never wraps onto the next line (where the preset/host line belongs)."""
    _evaluating(db, 4)

    async def body():
        app = make_app(db)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_detail(pilot, 4)
            await pilot.pause()
            head = app.screen.query_one("#detail-head")
            lines = [strip.text.rstrip() for strip in head.render_lines(head.content_region.reset_offset)]
            lines = [line for line in lines if line]
            assert len(lines) == 2, lines
            assert lines[0].lstrip().startswith("run 4 ") and "evaluating xqlfw" in lines[0], lines
            assert lines[1].lstrip().startswith("preset "), lines
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


# ---------------------------------------------------------------- all the numbers at a glance


def test_headline_columns_come_from_the_registry_and_fit_the_width(db):
    from lrfr_tui.runsdb.result_keys import headline_results
    from lrfr_tui.widgets.runs_table import fit_columns

    terms = [h.term for h in headline_results()]
    assert terms[:2] == ["lfw.acc", "xqlfw.acc"] and "scface.rank1_mean" in terms and "tinyface.rank1" in terms
    assert [t for t in terms if t.startswith("lowres_lfw")] == [f"lowres_lfw.acc@{r}" for r in (112, 20, 14, 7)]
    every = set(terms)
    keys = {w: [c.key for c in fit_columns(w, 1, every)[0]] for w in (80, 120, 200)}
    assert {"lfw", "lr7", "xqlfw"} <= set(keys[80]) and "sc_avg" not in keys[80]
    assert {"sc_avg", "tf_r1", "lr14"} <= set(keys[120])
    assert {"sc_d1", "sc_d2", "sc_d3", "lr112", "lr20", "tf_map"} <= set(keys[200])
    # A headline column no run has takes no room.
    assert "tf_r1" not in [c.key for c in fit_columns(120, 1, {"lfw.acc", "scface.rank1_mean"})[0]]

    async def body():
        app = make_app(db)
        async with app.run_test(size=(120, 36)) as pilot:
            await loaded(pilot, RunsScreen)
            table = app.screen.table
            shown = [c.key for c in table.shown_columns]
            assert {"lfw", "xqlfw", "sc_avg", "lr20", "lr14", "lr7"} <= set(shown)
            assert "tf_r1" not in shown  # the fixture runs have no TinyFace result
            assert str(table.get_cell("2", "sc_avg")) == "60.00" and str(table.get_cell("2", "lr14")) == "92.15"
            table.sort_by("sc_avg")
            assert table.sorted_ids()[:2] == [2, 1]
    run(body())


def test_sweep_points_are_told_apart_by_their_differing_keys(fresh_db):
    db, ids = fresh_db

    async def body():
        app = make_app(db)
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot, RunsScreen)
            table = app.screen.table
            assert table.lines[ids["lr0.05"]].variant == "lr=0.05"
            assert table.lines[ids["lr0.1"]].variant == "lr=0.1"
            assert str(table.get_cell(str(ids["lr0.1"]), "name")) == "sweep lr=0.1"
            assert table.lines[ids["queued_a"]].variant == ""  # one of a kind: nothing to tell apart
    run(body())


def _text_rows(app) -> list[str]:
    """Each terminal row of the current screen as plain text (what the compositor would draw)."""
    return ["".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips()]


def test_80x24_has_no_clipped_numbers_and_a_complete_footer(db):
    async def body():
        app = make_app(db)
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot, RunsScreen, 2)
            await wait_for(pilot, lambda: "Quit" in _text_rows(app)[-1], what="the footer drawn")
            rows = _text_rows(app)
            footer = rows[-1]
            for key in ("New", "Kill", "Resume", "Compare", "Filter", "Results", "Quit", "Help"):
                assert key in footer, footer
            run2 = next(r for r in rows if r.strip().startswith("2 ") and "maug-logexp" in r)
            for value in ("99.30", "88.20", "85.00"):  # LFW, XQLFW, LR@7 of run 2, whole
                assert value in run2, run2
            await pilot.press("down", "down", "down", "enter")
            await loaded(pilot, DetailScreen, 2)
            await pilot.press("2")
            await wait_for(pilot, lambda: "92.15" in "".join(_text_rows(app)), what="the results drawn")
            rows = _text_rows(app)
            assert "esc Back" in rows[-1] and "Help" in rows[-1], rows[-1]
            text = "\n".join(rows)
            for value in ("99.30", "88.20", "60.00", "85.00", "92.15"):
                assert value in text, text
            assert app.screen.query_one("#results-table").has_focus  # arrows work without Tab
    run(body())


def test_results_board_sorts_by_a_column_and_keeps_id_and_name_in_view(db):
    from lrfr_tui.screens.results import ResultsScreen

    async def body():
        app = make_app(db)
        async with app.run_test(size=(120, 36)) as pilot:
            await loaded(pilot, RunsScreen)
            await pilot.press("b")
            await loaded(pilot, ResultsScreen)
            board = app.screen.query_one("#board")
            assert board.fixed_columns == 2
            labels = app.screen.matrix.labels()
            order = lambda: [str(board.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(2)]  # noqa: E731
            app.screen.sort_column = labels.index("LFW acc")
            app.screen.sort_reverse = True
            app.screen._resort()
            assert order() == ["1", "2"]  # 99.50 before 99.30
            await pilot.press("S")
            assert order() == ["2", "1"]
            await pilot.press("end")
            assert board.cursor_row == board.row_count - 1
            await pilot.press("home")
            assert board.cursor_row == 0
    run(body())


def test_plots_keep_the_legend_off_the_curves_and_use_a_categorical_resolution_axis(db):
    from lrfr_tui.widgets.loss_plot import CurvePlot

    async def body():
        app = make_app(db)
        async with app.run_test(size=(120, 36)) as pilot:
            await open_detail(pilot, 2, loads=2)
            loss = app.screen.query_one("#plot-loss", CurvePlot)
            await wait_for(pilot, lambda: loss.points > 0, what="the loss curve")
            assert "loss_cls" in str(loss.border_title) and "━" in str(loss.border_title)
            res = app.screen.query_one("#plot-res", CurvePlot)
            await wait_for(pilot, lambda: res.points > 0, what="the resolution curve")
            assert res.xticks == ["7", "14", "20", "112"] and list(res.lines[0].xs) == [0.0, 1.0, 2.0, 3.0]
    run(body())


# ---------------------------------------------------------------- every action reachable, on real runs


def test_delete_then_restore_a_real_run(fresh_db):
    db, ids = fresh_db
    victim = ids["lr0.05"]

    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            from lrfr_tui.screens.dialogs import ConfirmDialog, PromptDialog

            await loaded(pilot, RunsScreen)
            table = app.screen.table
            table.move_to_run(victim)
            await pilot.press("x")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the confirmation")
            await pilot.press("y")
            await wait_for(pilot, lambda: victim not in table.lines, what="the run gone from the table")
            assert [n for n in app.notes if "deleted" in n] == [f"deleted run {victim} (u restores)"]  # one toast
            store = Store(db)
            assert store.get_run(victim).deleted
            store.close()
            await pilot.press("u")
            await wait_for(pilot, lambda: isinstance(app.screen, PromptDialog), what="the restore prompt")
            assert app.screen.query_one("#prompt").value == str(victim)  # what this session deleted
            await pilot.press("enter")
            await wait_for(pilot, lambda: victim in table.lines, what="the run back")
            assert f"restored run {victim}" in app.notes
    run(body())


def test_note_and_queue_order_and_home_end_on_real_runs(fresh_db):
    db, ids = fresh_db
    first, second = ids["queued_a"], ids["queued_b"]

    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            from lrfr_tui.screens.dialogs import PromptDialog

            await loaded(pilot, RunsScreen)
            table = app.screen.table
            assert (table.lines[first].queue_pos, table.lines[second].queue_pos) == (1, 2)
            table.move_to_run(second)
            await pilot.press("less_than_sign")
            await wait_for(pilot, lambda: table.lines[second].queue_pos == 1, what="run moved to the head")
            assert table.lines[first].queue_pos == 2 and f"run {second} is #1 in the queue" in app.notes
            await pilot.press("end")
            assert table.cursor_row == table.row_count - 1
            await pilot.press("home")
            assert table.cursor_row == 0
            table.move_to_run(ids["lr0.1"])
            await pilot.press("N")
            await wait_for(pilot, lambda: isinstance(app.screen, PromptDialog), what="the note prompt")
            await pilot.press(*"lr 0.1 diverges less", "enter")
            await wait_for(pilot, lambda: f"note added to run {ids['lr0.1']}" in app.notes, what="the note")
            await pilot.press("enter")
            await loaded(pilot, DetailScreen, 2)
            await wait_for(pilot, lambda: "note: lr 0.1 diverges less" in str(
                app.screen.query_one("#detail-head").render()), what="the note in the header")
    run(body())


def test_log_full_screen_wrapped_and_run_directory_copied(fresh_db):
    db, ids = fresh_db
    run_id = ids["lr0.1"]

    async def body():
        from textual.widgets import TextArea

        from lrfr_tui.screens.log_view import LogScreen

        app = make_app(db)
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot, RunsScreen)
            app.screen.table.move_to_run(run_id)
            await pilot.press("y")
            await wait_for(pilot, lambda: app.last_copied, what="the copied path")
            store = Store(db)
            recorded = store.get_run(run_id).run_dir  # where the worker ran it (this copy's original)
            store.close()
            assert Path(app.last_copied) == Path(recorded) and Path(recorded).name == str(run_id)
            assert (Path(app.last_copied) / "checkpoint.pt").exists()
            assert [n for n in app.notes if "copied" in n] == [f"copied run {run_id}'s directory: {app.last_copied}"]
            await pilot.press("enter")
            await loaded(pilot, DetailScreen)
            await pilot.press("w")
            await loaded(pilot, LogScreen)
            view = app.screen.query_one("#log-full", TextArea)
            assert view.soft_wrap and "training steps" in view.text and "[evaluate]" in view.text
            await pilot.press("z")
            assert not view.soft_wrap
            await pilot.press("escape")
            assert isinstance(app.screen, DetailScreen)
    run(body())


def test_evaluate_a_finished_run_on_more_benchmarks_and_draw_its_figures(fresh_db):
    """Both run `lrfr` in processes of their own (the TUI never imports torch); results and PNGs land as the
    CLI's do, and the table shows the new XQLFW number."""
    db, ids = fresh_db
    run_id = ids["lr0.1"]

    async def body():
        from lrfr_tui.screens.dialogs import PromptDialog

        app = make_app(db)
        async with app.run_test(size=(120, 36)) as pilot:
            await loaded(pilot, RunsScreen)
            table = app.screen.table
            assert "xqlfw.acc" not in table.lines[run_id].results
            table.move_to_run(run_id)
            await pilot.press("enter")
            await loaded(pilot, DetailScreen, 2)
            await pilot.press("e")
            await wait_for(pilot, lambda: isinstance(app.screen, PromptDialog), what="the benchmark prompt")
            field = app.screen.query_one("#prompt")
            assert field.value.split() == ["xqlfw", "scface", "tinyface"]  # those without results
            field.value = "xqlfw"
            await pilot.press("enter")
            await pilot.press("g")
            await wait_for(pilot, lambda: isinstance(app.screen, PromptDialog), what="the figures prompt")
            app.screen.query_one("#prompt").value = "resolution"
            await pilot.press("enter")
            await wait_for(pilot, lambda: sum(" done" in n or "failed" in n for n in app.notes) >= 2, timeout=480,
                           what=lambda: f"both jobs to end: {app.notes}")
            assert f"run {run_id}: evaluation on xqlfw done" in app.notes, app.notes
            assert f"run {run_id}: figures resolution done" in app.notes, app.notes
            await pilot.press("escape")
            await wait_for(pilot, lambda: "xqlfw.acc" in table.lines[run_id].results, what="the XQLFW result")
    run(body())
    assert list((db.parent / "runs" / str(run_id) / "figures").glob("*.png"))


def test_evaluating_a_running_or_unknown_benchmark_says_why(fresh_db):
    from engine.errors import LrfrError
    from lrfr_tui.usecases import evaluate_more

    db, ids = fresh_db
    with pytest.raises(LrfrError, match="unknown benchmark 'lfq'"):
        evaluate_more(db, ids["lr0.1"], ["lfq"])
    with pytest.raises(LrfrError, match="is queued"):
        evaluate_more(db, ids["queued_a"], ["lfw"])


# ---------------------------------------------------------------- help, filters, toasts, quitting, GPUs


def test_help_shows_the_filter_language_formatted_only_on_the_runs_screen(db):
    async def body():
        from textual.widgets import Static

        from lrfr_tui.screens.help import filter_language_text

        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen", what="help")
            plain = str(app.screen.query_one(Static).render())
            assert "Filter:" in plain and "min(loss)<1.2" in plain and "``" not in plain and "::" not in plain
            text = filter_language_text()  # what the help shows: each example term bold
            assert any(str(span.style) == "bold" and text.plain[span.start:span.end].strip() == "min(loss)<1.2"
                       for span in text.spans)
            assert "Delete" in plain and "Earlier in queue" in plain  # keys not in the footer are listed
            await pilot.press("escape")
            await pilot.press("enter")
            await loaded(pilot, DetailScreen)
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen", what="help")
            assert "Filter:" not in app.screen.query_one(Static).render().plain
    run(body())


def test_a_filter_on_an_unknown_key_says_so(db):
    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            screen = app.screen
            await pilot.press("slash", *"foo=1")
            await wait_for(pilot, lambda: "unknown key 'foo'" in str(screen.query_one("#filter-error").render()),
                           what="the unknown-key line")
            assert "loss" in str(screen.query_one("#filter-error").render())  # the keys that exist
    run(body())


def test_quitting_with_queued_runs_warns_that_nothing_starts_them(db):
    async def body():
        from lrfr_tui.screens.dialogs import ConfirmDialog

        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the question")
            assert "lrfr worker" in app.screen.question and "1 run is queued" in app.screen.question
            await pilot.press("n")
            await pilot.pause(0.1)
            assert isinstance(app.screen, RunsScreen)  # stayed
    run(body())


def test_first_launch_on_a_new_db_has_no_false_toasts(tmp_path):
    """The first run creates runs.db while the TUI looks at nothing: no error, no "readable again", and the
    launch toast says this TUI starts it (it drives the queue from its next pass)."""
    from lrfr_tui.gpus import fake_gpus

    db = tmp_path / "runs.db"

    async def body():
        app = make_app(db, drive=None, discover=fake_gpus(1, used_mib=80_000))  # the one GPU is busy: it waits
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            assert app.queue_state.mode == "no-db"
            (run_id,) = queue_runs(db, [resolve("tiny", FAST + ["launch.gpus=1"])], "lrfr run --queue")
            app.launched([run_id], start_now=False)
            await wait_for(pilot, lambda: run_id in app.screen.table.lines, what="the run shown")
            await wait_for(pilot, lambda: app.queue_state.mode == "driving", what="driving")
            assert not any("nothing drives" in n or "readable again" in n or "no runs database" in n
                           for n in app.notes), app.notes
            assert any("this TUI starts it" in n for n in app.notes), app.notes
    run(body())


def test_gpu_use_in_the_status_bar_and_the_detail_header(db):
    from lrfr_tui.gpus import GpuInfo
    from lrfr_tui.tui_queue import QueueState

    described = "".join(t for t, _ in QueueState("driving", total_gpus=2, free_gpus=1, gpu_usage=(
        (0, 12_288, 81_920, 95), (1, 0, 81_920, 0))).describe())
    assert "0:12/80G 95% 1:0/80G 0%" in described
    assert "G " not in "".join(t for t, _ in QueueState("driving").describe())  # a CPU box: no GPU figures
    store = Store(db)
    store.add_metrics(4, [("gpu_mem_gib", 300, 12.25, NOW), ("gpu_util", 300, 93.0, NOW)])
    store.close()

    async def body():
        app = make_app(db, discover=lambda: [GpuInfo(0, "H200", 12_288, 143_000, 95)])
        async with app.run_test(size=(120, 36)) as pilot:
            await loaded(pilot, RunsScreen)
            await wait_for(pilot, lambda: "0:12/140G 95%" in str(app.screen.query_one("#status-right").render()),
                           what="the box's GPU in the status bar")
            app.screen.table.move_to_run(4)
            await pilot.press("enter")
            await loaded(pilot, DetailScreen)
            assert "GPU 12.2 GiB 93%" in str(app.screen.query_one("#detail-head").render())
    run(body())
