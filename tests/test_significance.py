"""Per-item outcomes in runs.db and what is computed from them: intervals and significance marks in
`lrfr results --group`, `lrfr compare`, the exports and the TUI's results board.

The references are independent of lrfr's code: McNemar's exact test is the two-sided binomial test of
the discordant counts, p = min(1, 2 * sum_{i<=min(b,c)} C(b+c, i) / 2^(b+c)) - statsmodels'
``statsmodels/stats/contingency_tables.py::mcnemar(exact=True)`` (github statsmodels/statsmodels) -
written out here with ``math.comb``; the chi-square form is (|b-c|-1)^2/(b+c) on one degree of freedom,
P[chi2_1 >= x] = erfc(sqrt(x/2)) (Edwards 1948, statsmodels ``exact=False, correction=True``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from engine.config import flatten, resolve, to_dict
from lrfr_tui.cli import app as cli_app
from lrfr_tui.runsdb import Store
from lrfr_tui.runsdb.codec import pack_outcomes, unpack_outcomes
from lrfr_tui.significance import compare_to_baseline, match_runs, pooled_interval
from lrfr_tui.worker import StoreReporter, StoreWriter, evaluate_into_run

runner = CliRunner()
STANDIN = {"kind": "standin", "dataset": "standin-test", "format": "bin", "path": "x", "checksum": "c"}
OTHER = {"kind": "catalog", "dataset": "lfw", "format": "bin", "path": "y", "checksum": "d"}
LFW = ("lfw", "insightface_10fold", "acc", None)


def exact_mcnemar(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def chi2_mcnemar(b: int, c: int) -> float:
    return math.erfc(math.sqrt((abs(b - c) - 1) ** 2 / (b + c) / 2))


def correct_with(n: int, wrong: set[int]) -> np.ndarray:
    flags = np.ones(n, dtype=bool)
    flags[list(wrong)] = False
    return flags


def add_run(store: Store, name: str, seed: int, correct: np.ndarray | None, source=STANDIN, group="g") -> int:
    cfg = resolve("tiny", [f"train.seed={seed}"])
    cfg.name = name
    run_id = store.create_run(to_dict(cfg), flatten(cfg), "test", group=group)
    if correct is not None:
        acc = float(correct.mean())  # any stored interval: a single run shows it as stored
        store.add_results(run_id, [(*LFW[:3], None, acc),
                                   ("lfw", "insightface_10fold", "acc_ci95_lo", None, acc - 0.02),
                                   ("lfw", "insightface_10fold", "acc_ci95_hi", None, min(1.0, acc + 0.01))],
                          source=source)
        store.add_outcomes(run_id, *LFW, correct, source=source)
    store.mark_ended(run_id, "finished", 0)
    return run_id


def test_outcomes_pack_round_trip_and_replace_on_reevaluation(tmp_path):
    rng = np.random.default_rng(3)
    flags = rng.random(6001) < 0.9
    n, bits = pack_outcomes(flags)
    assert n == 6001 and len(bits) == 751 and np.array_equal(unpack_outcomes(n, bits), flags)
    store = Store(tmp_path / "runs.db")
    run_id = add_run(store, "a", 0, flags)
    store.add_outcomes(run_id, *LFW, ~flags, source=STANDIN)  # a re-evaluation on the same data replaces
    store.add_outcomes(run_id, *LFW, flags[:10], source=OTHER)  # other data is kept beside it
    rows = store.conn.execute("SELECT source_key, n FROM outcomes WHERE run_id=? ORDER BY source_key",
                              (run_id,)).fetchall()
    assert [tuple(r) for r in rows] == [("catalog:lfw:d", 10), ("standin:test", 6001)]
    with pytest.raises(ValueError, match="bytes for"):
        store._insert_outcomes(run_id, *LFW, 20, b"\x00", 0.0, STANDIN)


def test_outcomes_survive_pending_jsonl_when_runs_db_is_unwritable(tmp_path):
    """A worker that cannot reach runs.db leaves its outcomes in pending.jsonl (JSON lines); the replay
    stores exactly the same bits."""
    db = tmp_path / "runs.db"
    store = Store(db)
    run_id = add_run(store, "a", 0, None)
    writer = StoreWriter(tmp_path / "missing" / "runs.db", run_id, tmp_path / "run")  # never opens
    flags = np.random.default_rng(0).random(300) < 0.5
    StoreReporter(writer).outcomes(*LFW, flags)
    writer.start()
    assert writer.close(wait_s=0.5) is False
    ops = [json.loads(line) for line in (tmp_path / "run" / "pending.jsonl").read_text().splitlines()]
    outcome_ops = [op for op in ops if op[0] == "outcomes"]
    assert len(outcome_ops) == 1 and base64.b64decode(outcome_ops[0][6])
    store.apply_ops(run_id, ops)
    n, bits = store.conn.execute("SELECT n, bits FROM outcomes WHERE run_id=?", (run_id,)).fetchone()
    assert np.array_equal(unpack_outcomes(n, bits), flags)


def test_evaluation_stores_the_correctness_behind_each_accuracy(tmp_path, micro_config):
    """A real evaluation (lfw, xqlfw, scface zero-shot stand-ins): one outcome vector per accuracy, of
    the protocol's item count, whose mean is the stored accuracy."""
    import torch

    from engine.train import build_backbone

    torch.manual_seed(0)
    model = build_backbone(micro_config).eval()
    micro_config.eval.benchmarks = ["lfw", "xqlfw", "scface"]
    micro_config.eval.scface_protocols = ["zero_shot"]
    db = tmp_path / "runs.db"
    store = Store(db)
    run_id = store.create_run(to_dict(micro_config), flatten(micro_config), "lrfr eval", status="running",
                              pid=os.getpid(), launcher="eval")
    evaluate_into_run(db, run_id, model, micro_config, "cpu", finish_run=True)
    values = {(r["benchmark"], r["protocol"], r["metric"]): r["value"] for r in store.results(run_id)}
    rows = store.conn.execute("SELECT benchmark, protocol, metric, source_key, n, bits FROM outcomes "
                              "WHERE run_id=?", (run_id,)).fetchall()
    stored = {(b, p, m): unpack_outcomes(n, bits) for b, p, m, _, n, bits in rows}
    assert set(stored) == {("lfw", "insightface_10fold", "acc"), ("xqlfw", "xqlfw_official", "acc"),
                           ("xqlfw", "insightface_10fold", "acc"), ("scface", "zero_shot", "rank1_d1"),
                           ("scface", "zero_shot", "rank1_d2"), ("scface", "zero_shot", "rank1_d3"),
                           ("scface", "zero_shot", "rank1_mean")}
    assert all(key.startswith("standin:") for *_, key, _, _ in rows)
    for key, flags in stored.items():
        assert flags.mean() == pytest.approx(values[key], abs=1e-12), key
    assert len(stored[("lfw", "insightface_10fold", "acc")]) == 60  # the 'test' stand-in's pairs
    per_distance = [stored[("scface", "zero_shot", f"rank1_d{d}")] for d in (1, 2, 3)]
    assert np.array_equal(np.concatenate(per_distance), stored[("scface", "zero_shot", "rank1_mean")])


def test_mcnemar_pools_seed_matched_runs(tmp_path):
    store = Store(tmp_path / "runs.db")
    n = 600
    # Baseline: seed 1 created first. The configuration's seeds are matched by seed, not by id.
    base1 = add_run(store, "Baseline", 1, correct_with(n, set(range(0, 60))))
    base0 = add_run(store, "Baseline", 0, correct_with(n, set(range(0, 50))))
    conf0 = add_run(store, "MAug", 0, correct_with(n, set(range(40, 70))))
    conf1 = add_run(store, "MAug", 1, correct_with(n, set(range(30, 50))))
    assert sorted(match_runs(store.conn, [conf0, conf1], [base1, base0])) == [(conf0, base0), (conf1, base1)]
    test = compare_to_baseline(store.conn, [conf0, conf1], [base0, base1], *LFW)
    # seed 0: conf right / base wrong on 0..39 (b=40), conf wrong / base right on 50..69 (c=20)
    # seed 1: b = 0..29 + 50..59 = 40, c = 0
    assert (test.b, test.c, test.n, test.run_pairs) == (80, 20, 1200, 2)
    assert test.p == pytest.approx(chi2_mcnemar(80, 20), rel=1e-12) and test.mark == "**"
    small = compare_to_baseline(store.conn, [conf1], [base1], *LFW)
    assert (small.b, small.c) == (40, 0) and small.p == pytest.approx(chi2_mcnemar(40, 0), rel=1e-12)
    few = add_run(store, "Few", 0, correct_with(n, set(range(0, 44))))
    exact = compare_to_baseline(store.conn, [few], [base0], *LFW)
    assert (exact.b, exact.c) == (6, 0) and exact.p == pytest.approx(exact_mcnemar(6, 0), rel=1e-12)
    assert exact.p == pytest.approx(0.03125) and exact.mark == "*"
    # The pooled interval of two seeds brackets their mean accuracy.
    lo, hi = pooled_interval(store.conn, [conf0, conf1], *LFW)
    assert lo < (1 - 30 / n + 1 - 20 / n) / 2 < hi


def test_runs_on_other_data_are_never_compared(tmp_path):
    store = Store(tmp_path / "runs.db")
    base = add_run(store, "Baseline", 0, correct_with(600, set(range(50))))
    other = add_run(store, "MAug", 0, correct_with(600, set()), source=OTHER)
    shorter = add_run(store, "Short", 0, correct_with(300, set()))
    assert compare_to_baseline(store.conn, [other], [base], *LFW) is None
    assert compare_to_baseline(store.conn, [shorter], [base], *LFW) is None


@pytest.fixture
def group_db(tmp_path):
    db = tmp_path / "runs.db"
    store = Store(db)
    for seed in (0, 1):
        add_run(store, "Baseline", seed, correct_with(600, set(range(60 + seed))))
        add_run(store, "MAug", seed, correct_with(600, set(range(10))))  # clearly better
        add_run(store, "Aug", seed, correct_with(600, set(range(2, 62))))  # the same accuracy as Baseline
    store.close()
    return db


def _cli(*args: str) -> str:
    result = runner.invoke(cli_app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_results_group_shows_intervals_and_marks(group_db):
    layout = json.loads(_cli("results", "--group", "g", "--db", str(group_db), "--json"))
    assert layout["baseline"] == "Baseline"
    rows = {r["label"]: r for r in layout["rows"]}
    maug, aug = rows["MAug"]["vs_baseline"][0], rows["Aug"]["vs_baseline"][0]
    assert (maug["b"], maug["c"], maug["mark"]) == (50 + 51, 0, "**")
    assert (aug["b"], aug["c"]) == (2 + 2, 2 + 1) and aug["mark"] == "" and aug["p"] == pytest.approx(1.0)
    assert rows["Baseline"]["vs_baseline"] is None
    lo, hi = rows["MAug"]["ci95"][0]
    assert lo < 590 / 600 < hi
    text = _cli("results", "--group", "g", "--db", str(group_db))
    assert "(baseline)" in text and "**" in text and "95% bootstrap interval" in text
    assert f"[{100 * lo:.2f}, {100 * hi:.2f}]" in text
    # Any two configurations can be decided: Aug against MAug instead of against Baseline.
    layout = json.loads(_cli("results", "--group", "g", "--against", "MAug", "--db", str(group_db), "--json"))
    rows = {r["label"]: r for r in layout["rows"]}
    assert layout["baseline"] == "MAug" and rows["MAug"]["vs_baseline"] is None
    # Aug right where MAug is wrong: items 0, 1 (per seed); the reverse: items 10..61
    assert (rows["Aug"]["vs_baseline"][0]["b"], rows["Aug"]["vs_baseline"][0]["c"]) == (2 * 2, 2 * 52)
    bad = subprocess.run([sys.executable, "-m", "lrfr_tui.cli", "results", "--group", "g", "--against", "Nope",
                          "--db", str(group_db)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no such configuration" in bad.stderr and "Traceback" not in bad.stderr


def test_exports_and_compare_carry_the_uncertainty(group_db):
    md = _cli("export", "-f", "markdown", "--group", "g", "--db", str(group_db))
    maug_line = next(line for line in md.splitlines() if line.startswith("| MAug #2"))
    assert "**" in maug_line.replace("**98.33**", "") and "[" in maug_line and "differs from run 1" in md
    tex = _cli("export", "-f", "latex", "--group", "g", "--db", str(group_db))
    assert "$^{**}$" in tex and r"\scriptsize [" in tex
    csv_text = _cli("export", "-f", "csv", "--group", "g", "--db", str(group_db))
    header, first, second = csv_text.splitlines()[:3]
    assert header.endswith("lfw.insightface_10fold.acc:ci95_lo,lfw.insightface_10fold.acc:ci95_hi,"
                           "lfw.insightface_10fold.acc:p")
    assert first.endswith(",") and float(second.rsplit(",", 1)[1]) == pytest.approx(chi2_mcnemar(50, 0), rel=1e-3)
    data = json.loads(_cli("compare", "1", "2", "--db", str(group_db), "--json"))
    assert data["results"]["rows"][1]["vs_baseline"][0]["mark"] == "**"
    assert "**" in _cli("compare", "1", "2", "--db", str(group_db))


def test_results_board_marks_the_group_against_its_baseline(group_db):
    from lrfr_tui.app import LrfrApp
    from lrfr_tui.screens.results import ResultsScreen

    async def body():
        app = LrfrApp(group_db, drive=False, poll_s=0.1)
        async with app.run_test(size=(200, 50)) as pilot:
            await pilot.pause()
            app.push_screen(ResultsScreen("group=g"))
            for _ in range(200):
                await pilot.pause(0.05)
                if isinstance(app.screen, ResultsScreen) and app.screen.matrix is not None:
                    break
            screen = app.screen
            assert screen.matrix.baseline == 1
            board = screen.query_one("#board")
            cell = str(board.get_row("2")[2])
            assert "**" in cell and "[" in cell
            assert "(baseline)" in str(board.get_row("1")[1])
            assert "95% bootstrap interval" in str(screen.query_one("#results-head").render())
    asyncio.run(body())


def test_ablate_adds_only_missing_seeds_seed_major(tmp_path):
    db = tmp_path / "runs.db"

    def ablate(seeds: int) -> list[int]:
        proc = subprocess.run([sys.executable, "-m", "lrfr_tui.cli", "ablate", "table4", "--base", "tiny",
                               "--seeds", str(seeds), "--group", "t4", "--db", str(db), "--json"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["runs"]

    first = ablate(1)
    more = ablate(2)
    assert len(first) == 10 and len(more) == 10 and ablate(2) == []
    store = Store(db)
    seeds = [store.get_run(i).config["train"]["seed"] for i in first + more]
    assert seeds == [0] * 10 + [1] * 10
    assert {store.get_run(i).name for i in more} == {store.get_run(i).name for i in first}


def test_detail_and_compare_screens_show_marks_and_intervals(group_db):
    """The run detail's Results tab marks stand-in results and shows each stored interval; the compare
    screen tests every run against the first one."""
    from lrfr_tui.app import LrfrApp
    from lrfr_tui.screens.compare import CompareScreen
    from lrfr_tui.screens.detail import DetailScreen

    async def until(pilot, predicate) -> None:
        for _ in range(300):
            await pilot.pause(0.05)
            if predicate():
                return
        raise AssertionError("the screen did not load")

    async def body():
        app = LrfrApp(group_db, drive=False, poll_s=0.1)
        async with app.run_test(size=(200, 50)) as pilot:
            await pilot.pause()
            app.open_run(2)
            await until(pilot, lambda: isinstance(app.screen, DetailScreen)
                        and app.screen.query_one("#results-table").row_count > 0)
            table = app.screen.query_one("#results-table")
            # The headline view: one row per benchmark, LFW's one number with its interval.
            lfw_row = next(table.get_row_at(i) for i in range(table.row_count)
                           if str(table.get_row_at(i)[0]) == "LFW\u2020")
            assert "[96.33, 99.33]" in str(lfw_row[2])
            # Every stored number (key a), the interval in a column of its own.
            await pilot.press("a")
            await until(pilot, lambda: len(app.screen.query_one("#results-table").columns) == 6)
            table = app.screen.query_one("#results-table")
            acc = next(table.get_row_at(i) for i in range(table.row_count) if str(table.get_row_at(i)[2]) == "acc")
            assert str(acc[0]) == "lfw\u2020" and str(acc[5]) == "[96.33, 99.33]"
            assert "synthetic stand-in" in str(app.screen.query_one("#results-legend").render())
            app.pop_screen()
            app.compare([1, 2])
            await until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.matrix is not None)
            await until(pilot, lambda: app.screen.query_one("#compare-results").row_count == 2)
            tbl = app.screen.query_one("#compare-results")
            lfw = [str(c.label) for c in tbl.columns.values()].index("LFW\u2020 acc")
            cell = str(tbl.get_row("2")[lfw])
            assert "**" in cell and "[96.33, 99.33]" in cell
    asyncio.run(body())
