"""Issue 10, "Where each number came from": each result records the data it measured (a synthetic stand-in
or a catalog dataset, with a checksum); a re-evaluation replaces its results instead of adding copies; stand-in
numbers are marked wherever results are shown or exported; the run's environment is recorded."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sqlite3
import time

import pytest
import torch
from typer.testing import CliRunner

from engine.catalog import register
from engine.config import flatten, to_dict
from engine.data.standins import materialise_standins
from engine.evaluate import PROTOCOLS_VERSION, run_benchmarks
from engine.evaluate import benchmarks as bench_module
from engine.sources import cache_root
from engine.train import build_backbone
from lrfr_tui.cli import app
from lrfr_tui.results_table import STANDIN_LEGEND, STANDIN_MARK
from lrfr_tui.runsdb import Store
from lrfr_tui.runsdb.migrations import SCHEMA_VERSION
from lrfr_tui.worker import evaluate_into_run
from tests.test_bench_sources import Recorder
from tests.test_run_safety import db_at_version

runner = CliRunner()


@pytest.fixture
def micro_model(micro_config):
    torch.manual_seed(0)
    return build_backbone(micro_config).eval()


def _sha16(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _evaluate(db, run_id, model, cfg, finish_run=False) -> None:
    evaluate_into_run(db, run_id, model, cfg, "cpu", finish_run=finish_run)


@pytest.fixture
def eval_db(tmp_path, micro_config, micro_model):
    """A run evaluated on the lfw and xqlfw stand-ins (finished), and the config it used."""
    micro_config.eval.source = "synthetic"
    micro_config.eval.benchmarks = ["lfw", "xqlfw"]
    db = tmp_path / "runs.db"
    store = Store(db, create=True)
    run_id = store.create_run(to_dict(micro_config), flatten(micro_config), "lrfr eval", status="running",
                              pid=os.getpid(), launcher="eval")
    store.close()
    _evaluate(db, run_id, micro_model, micro_config, finish_run=True)
    return db, run_id, micro_config


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


# ---------------------------------------------------------------- the engine reports the source


def test_evaluation_reports_each_benchmarks_data_source_once(micro_config, micro_model):
    paths = materialise_standins(cache_root(), seed=0, size_preset="test")
    micro_config.eval.source = "synthetic"
    micro_config.eval.benchmarks = ["lfw", "xqlfw", "scface"]
    micro_config.eval.scface_protocols = ["zero_shot_all130"]
    rec = Recorder()
    run_benchmarks(micro_model, micro_config, "cpu", rec)
    sources = {f["benchmark"]: f["source"] for _, f in rec.events("data_source")}
    assert len(rec.events("data_source")) == 3 and set(sources) == {"lfw", "xqlfw", "scface"}
    assert sources["lfw"] == {"kind": "standin", "dataset": "standin-test", "format": "bin",
                              "path": str(paths["lfw_bin"]), "checksum": _sha16(paths["lfw_bin"]),
                              "protocol_version": PROTOCOLS_VERSION}
    pairs = sorted(paths["xqlfw"].glob("*pairs*.txt"))[0]
    assert sources["xqlfw"]["checksum"] == _sha16(pairs)
    assert len(sources["scface"]["checksum"]) == 16 and sources["scface"]["format"] == "scface"
    (env_message, env), = rec.events("environment")
    assert env["environment"]["torch"] == torch.__version__ and env["environment"]["world_size"] >= 1
    assert env["environment"]["device_name"]


def test_a_catalog_dataset_under_another_name_is_reported_under_its_result_name(micro_config, micro_model):
    paths = materialise_standins(cache_root(), seed=0, size_preset="test")
    register("my_pairs", paths["xqlfw"])
    micro_config.eval.source = "catalog"
    micro_config.eval.benchmarks = ["xqlfw=my_pairs"]
    rec = Recorder()
    run_benchmarks(micro_model, micro_config, "cpu", rec)
    (_, fields), = rec.events("data_source")
    assert fields["benchmark"] == "xqlfw:my_pairs"
    assert fields["source"]["kind"] == "catalog" and fields["source"]["dataset"] == "my_pairs"
    assert fields["source"]["checksum"] == _sha16(sorted(paths["xqlfw"].glob("*pairs*.txt"))[0])


def test_checksum_of_a_large_pack_is_cheap(tmp_path):
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:
        for _ in range(64):
            fh.write(os.urandom(1 << 20))
    start = time.perf_counter()
    digest = bench_module._file_digest(big)
    assert time.perf_counter() - start < 2.0  # 64 MB; ~0.15 s on one core
    assert digest == _sha16(big)


# ---------------------------------------------------------------- stored with the results, no duplicates


def _counts(db, run_id) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT benchmark, protocol, metric, resolution, source_key, COUNT(*) FROM results "
                            "WHERE run_id=? GROUP BY benchmark, protocol, metric, resolution, source_key",
                            (run_id,)).fetchall()
    finally:
        conn.close()


def test_results_carry_their_source_and_a_reevaluation_replaces_them(eval_db, micro_model):
    db, run_id, cfg = eval_db
    store = Store(db)
    rows = store.results(run_id)
    assert rows and all(r["source"]["kind"] == "standin" and r["source_key"] == "standin:test" for r in rows)
    lfw = next(r for r in rows if r["benchmark"] == "lfw")
    assert lfw["source"]["checksum"] == _sha16(materialise_standins(cache_root(), 0, "test")["lfw_bin"])
    before = _counts(db, run_id)
    _evaluate(db, run_id, micro_model, cfg)
    _evaluate(db, run_id, micro_model, cfg)
    after = _counts(db, run_id)
    assert {r[:5] for r in after} == {r[:5] for r in before}
    assert all(r[5] == 1 for r in after)  # one row per (benchmark, protocol, metric, resolution, source)


def test_an_evaluation_on_other_data_keeps_both(eval_db, micro_model):
    db, run_id, cfg = eval_db
    paths = materialise_standins(cache_root(), seed=0, size_preset="test")
    register("lfw", paths["lfw_bin"])
    cfg.eval.source = "catalog"
    cfg.eval.benchmarks = ["lfw"]
    _evaluate(db, run_id, micro_model, cfg)
    keys = sorted(r[4] for r in _counts(db, run_id) if r[:4] == ("lfw", "insightface_10fold", "acc", None))
    assert keys == [f"catalog:lfw:{_sha16(paths['lfw_bin'])}", "standin:test"]
    latest = {r["benchmark"]: r for r in Store(db).results(run_id)}
    assert latest["lfw"]["source"]["kind"] == "catalog"  # the latest evaluation is the one shown
    assert latest["xqlfw"]["source"]["kind"] == "standin"
    out = _cli("results", "--db", str(db))
    assert f"XQLFW{STANDIN_MARK}" in out and f"LFW{STANDIN_MARK}" not in out.replace(f"XQLFW{STANDIN_MARK}", "")


def test_an_older_workers_pending_result_without_source_is_still_applied(tmp_path):
    store = Store(tmp_path / "runs.db")
    run_id = store.create_run({}, {}, "x")
    store.apply_ops(run_id, [["result", "lfw", "insightface_10fold", "acc", None, 0.9, 1.0]])
    store.apply_ops(run_id, [["result", "lfw", "insightface_10fold", "acc", None, 0.8, 2.0,
                              json.dumps({"kind": "standin", "dataset": "standin-test"})]])
    rows = store.conn.execute("SELECT value, source_key FROM results ORDER BY rowid").fetchall()
    assert [tuple(r) for r in rows] == [(0.9, None), (0.8, "standin:test")]


# ---------------------------------------------------------------- stand-in numbers are marked


def test_standin_results_are_marked_in_results_show_and_exports(eval_db):
    db, run_id, _ = eval_db
    out = _cli("results", "--db", str(db))
    assert f"LFW{STANDIN_MARK}" in out and STANDIN_LEGEND in out
    md = _cli("export", "-f", "markdown", "--db", str(db))
    assert f"LFW{STANDIN_MARK} acc" in md and STANDIN_LEGEND in md
    tex = _cli("export", "-f", "latex", "--db", str(db))
    assert r"LFW\textsuperscript{\dag}" in tex and "synthetic stand-in, not the real benchmark" in tex
    assert STANDIN_MARK not in tex
    table = list(csv.reader(io.StringIO(_cli("export", "-f", "csv", "--db", str(db)))))
    source = table[0].index("source")
    assert table[1][source] == "lfw=standin xqlfw=standin"
    show = _cli("show", str(run_id), "--db", str(db), "--tail", "0")
    assert f"lfw{STANDIN_MARK}" in show and STANDIN_LEGEND in show and "standin" in show
    assert "environment" in show and f"torch {torch.__version__}" in show
    store = Store(db)
    other = store.create_run({}, {}, "x", status="finished")
    store.add_results(other, [("lfw", "insightface_10fold", "acc", None, 0.5)],
                      source={"kind": "catalog", "dataset": "lfw", "checksum": "abc"})
    store.close()
    compare = _cli("compare", str(run_id), str(other), "--db", str(db))
    assert f"LFW{STANDIN_MARK}" in compare and STANDIN_LEGEND in compare


def test_real_results_carry_no_mark(tmp_path):
    store = Store(tmp_path / "runs.db")
    run_id = store.create_run({}, {}, "x", status="finished")
    store.add_results(run_id, [("lfw", "insightface_10fold", "acc", None, 0.99)],
                      source={"kind": "catalog", "dataset": "lfw", "checksum": "abc"})
    store.close()
    out = _cli("results", "--db", str(tmp_path / "runs.db"))
    assert "LFW" in out and STANDIN_MARK not in out and STANDIN_LEGEND not in out
    md = _cli("export", "-f", "markdown", "--db", str(tmp_path / "runs.db"))
    assert STANDIN_MARK not in md


# ---------------------------------------------------------------- schema v6


def test_v5_database_keeps_its_results_with_an_unknown_source(tmp_path):
    db = tmp_path / "runs.db"
    conn = db_at_version(db, 5)
    conn.execute("INSERT INTO runs (name, status, created, config) VALUES ('old', 'finished', 1.0, '{}')")
    conn.execute("INSERT INTO results VALUES (1, 'lfw', 'insightface_10fold', 'acc', NULL, 0.99, 1.0)")
    conn.commit()
    conn.close()
    store = Store(db)
    assert SCHEMA_VERSION >= 6
    (row,) = store.results(1)
    assert row["value"] == 0.99 and row["source"] is None and row["source_key"] is None
    out = _cli("results", "--db", str(db))
    assert "LFW" in out and STANDIN_MARK not in out
    # No source recorded for any value: the CSV keeps its columns (no ``source`` column).
    table = list(csv.reader(io.StringIO(_cli("export", "-f", "csv", "--db", str(db)))))
    assert table[0] == ["id", "run", "lfw.insightface_10fold.acc"]
    store = Store(db)
    store.add_results(1, [("xqlfw", "xqlfw_official", "acc", None, 0.9)], source={"kind": "standin",
                                                                                  "dataset": "standin-test"})
    store.close()
    table = list(csv.reader(io.StringIO(_cli("export", "-f", "csv", "--db", str(db)))))
    assert table[0][-1] == "source" and table[1][-1] == "lfw=unknown xqlfw=standin"


def test_paper_layout_marks_standin_columns_and_gives_them_no_delta(tmp_path):
    db = tmp_path / "runs.db"
    out = json.loads(_cli("ablate", "table4", "--base", "tiny", "--db", str(db), "--json"))
    store = Store(db)
    standin = {"kind": "standin", "dataset": "standin-test", "checksum": "x"}
    for run_id in out["runs"]:
        store.add_results(run_id, [("lfw", "insightface_10fold", "acc", None, 0.95)], source=standin)
        store.add_results(run_id, [("xqlfw", "xqlfw_official", "acc", None, 0.80)],
                          source={"kind": "catalog", "dataset": "xqlfw", "checksum": "y"})
        store.mark_ended(run_id, "finished", 0)
    store.close()
    layout = json.loads(_cli("results", "--group", out["group"], "--db", str(db), "--json"))
    lfw = next(j for j, c in enumerate(layout["columns"]) if c.startswith("lfw"))
    xq = next(j for j, c in enumerate(layout["columns"]) if c.startswith("xqlfw"))
    assert layout["standin_columns"] == [layout["columns"][lfw]]
    maug = next(r for r in layout["rows"] if r["label"] == "MAug + Ours(1)")
    assert maug["delta_to_paper"][lfw] is None and maug["delta_to_paper"][xq] is not None
    human = _cli("results", "--group", out["group"], "--db", str(db))
    assert f"LFW{STANDIN_MARK}" in human and f"XQLFW{STANDIN_MARK}" not in human
    assert STANDIN_LEGEND in human and "published rows are numbers on the real benchmark" in human
    md = _cli("export", "-f", "markdown", "--group", out["group"], "--db", str(db))
    assert "| *paper 4: MAug + Ours(1)* |" in md and f"LFW{STANDIN_MARK} acc" in md
    assert "published rows are numbers on the real benchmark" in md


def test_tui_results_board_marks_standin_columns(tmp_path):
    from lrfr_tui.screens.results import ResultsScreen
    from lrfr_tui.screens.runs import RunsScreen
    from tests.test_tui import SIZE, loaded, make_app, run, seed

    db = tmp_path / "runs.db"
    seed(db)
    store = Store(db)
    store.add_results(1, [("lfw", "insightface_10fold", "acc", None, 0.97)],
                      source={"kind": "standin", "dataset": "standin-test"})
    store.close()

    async def body():
        app = make_app(db)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, RunsScreen)
            await pilot.press("b")
            await loaded(pilot, ResultsScreen)
            screen = app.screen
            assert f"LFW{STANDIN_MARK} acc" in screen.matrix.labels()
            assert STANDIN_LEGEND in str(screen.query_one("#results-head").render())

    run(body())
