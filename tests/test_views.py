"""The stable views of runs.db (README "Query runs.db directly"), read as a user's program would: plain sqlite3
and the real ``sqlite-utils`` command line, over a database written through ``Store`` with real runs."""

from __future__ import annotations

import csv
import io
import json
import math
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from engine.config import EvalConfig
from engine.evaluate import registry
from lrfr_tui.runsdb import Store, parse_term, result_keys, views
from lrfr_tui.runsdb.codec import decode
from lrfr_tui.runsdb.migrations import SCHEMA_VERSION
from lrfr_tui.runsdb.reads import latest_results
from tests.test_run_safety import db_at_version, new_run

STANDIN = {"kind": "standin", "dataset": "standin-test"}
RUN_COLUMNS = ("run_id", "name", "status", "group_name")  # results_wide's columns before the headline numbers


def sqlite_utils_cli(db: Path, sql: str, fmt: str) -> str:
    """The sqlite-utils command line of this environment (its console script), in its own process."""
    exe = Path(sys.executable).with_name("sqlite-utils")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sqlite_utils"]
    done = subprocess.run([*cmd, str(db), sql, fmt], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rows(conn: sqlite3.Connection, sql: str) -> list[dict]:
    cur = conn.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def utc_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def same_float(a: float | None, b: float | None) -> bool:
    """Equal, or both NaN: a NULL in a decoded column is a NaN that was logged."""
    a = float("nan") if a is None else a
    b = float("nan") if b is None else b
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A finished run with results (a re-evaluation, several protocols, per-resolution numbers), a diverged run
    (NaN and infinities), a running one (a live process), a rerun of the first, and a deleted run."""
    db = tmp_path_factory.mktemp("views") / "runs.db"
    store = Store(db)
    ids = {}
    ids["done"] = done = new_run(store)
    store.mark_started(done, db.parent / "runs" / str(done), pid=None)
    store.mark_progress(done, 300, 300)
    store.set_tags(done, ["paper", "maug"])
    store.add_note(done, "first look")
    store.add_note(done, "best so far")
    store.add_metrics(done, [("loss", 1, 3.0, 1.0), ("loss", 2, 2.0, 2.0), ("loss", 3, 1.5, 3.0), ("lr", 3, 0.1, 3.0)])
    store.add_results(done, [("lfw", "insightface_10fold", "acc", None, 0.90),
                             ("lfw", "roc", "tar@far=1e-3", None, 0.80),
                             ("xqlfw", "insightface_10fold", "acc", None, 0.70),
                             ("xqlfw", "xqlfw_official", "acc", None, 0.80)], source=STANDIN)
    store.add_results(done, [("lfw", "insightface_10fold", "acc", None, 0.95)], source=STANDIN)  # re-evaluation
    for protocol, values in (("finetune", (0.5, 0.6, 0.7, 0.6)), ("zero_shot", (0.1, 0.2, 0.3, 0.2))):
        store.add_results(done, [("scface", protocol, m, None, v)
                                 for m, v in zip(("rank1_d1", "rank1_d2", "rank1_d3", "rank1_mean"), values, strict=True)],
                          source=STANDIN)
    store.add_results(done, [("tinyface", "finetune", "rank1", None, 0.4), ("tinyface", "finetune", "mAP", None, 0.3)],
                      source=STANDIN)
    for protocol, shift in (("insightface_10fold_both", 0.0), ("insightface_10fold_second", 0.05)):
        store.add_results(done, [("lowres_lfw", protocol, metric, res, 0.5 + shift + res / 1000)
                                 for res in (112, 56, 20, 14, 10, 7) for metric in ("acc", "ssim")], source=STANDIN)
    store.mark_ended(done, "finished", 0)

    ids["diverged"] = diverged = new_run(store)
    store.mark_started(diverged, db.parent / "runs" / str(diverged), pid=None)
    store.add_metrics(diverged, [("loss", 1, 2.0, 10.0), ("loss", 2, math.inf, 11.0), ("loss", 3, math.nan, 12.5),
                                 ("lr", 4, -math.inf, 13.0)])
    store.mark_ended(diverged, "failed", 1, "diverged")

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    ids["live"] = running = new_run(store, status="running", pid=live.pid, launcher="foreground")
    store.mark_progress(running, 40, 300)
    store.set_tags(running, ["wip"])

    ids["rerun"] = rerun = new_run(store, parent_id=done)
    store.add_results(rerun, [("scface", "finetune", "rank1_d1", None, 0.66)], source=STANDIN)
    ids["gone"] = gone = new_run(store)
    store.add_results(gone, [("lfw", "insightface_10fold", "acc", None, 0.99)], source=STANDIN)
    store.set_deleted([gone], force=True)
    store.close()
    try:
        yield db, ids
    finally:
        live.kill()
        live.wait()


def test_run_summary_with_sqlite3_and_the_sqlite_utils_cli(built):
    db, ids = built
    conn = sqlite3.connect(db)
    summary = rows(conn, "SELECT * FROM run_summary ORDER BY id")
    by_id = {r["id"]: r for r in summary}
    assert sorted(by_id) == sorted(ids[k] for k in ("done", "diverged", "live", "rerun"))  # not the deleted run
    store = Store(db)
    done = by_id[ids["done"]]
    run = store.get_run(ids["done"])
    assert (done["status"], done["preset"], done["step"], done["total_steps"]) == ("finished", "tiny", 300, 300)
    assert (done["tags"], done["note"], done["parent_id"], done["host"]) == ("maug,paper", "best so far", None,
                                                                            socket.gethostname())
    assert done["duration_s"] == pytest.approx(run.ended - run.started)
    for column in ("created", "started", "ended"):  # ISO-8601 UTC text, to the millisecond
        assert done[f"{column}_utc"].endswith("Z")
        assert abs(utc_seconds(done[f"{column}_utc"]) - getattr(run, column)) <= 0.0011
    live = by_id[ids["live"]]
    assert (live["status"], live["step"], live["ended_utc"], live["duration_s"], live["tags"]) == (
        "running", 40, None, None, "wip")
    assert live["started_utc"] is not None and by_id[ids["diverged"]]["failure_reason"] == "diverged"
    assert by_id[ids["rerun"]]["parent_id"] == ids["done"] and by_id[ids["rerun"]]["note"] is None
    # The same rows through sqlite-utils, as JSON (numbers round-trip exactly) and as CSV.
    assert json.loads(sqlite_utils_cli(db, "select * from run_summary order by id", "--json-cols")) == summary
    as_csv = list(csv.DictReader(io.StringIO(sqlite_utils_cli(db, "select * from run_summary order by id", "--csv"))))
    assert [(int(r["id"]), r["tags"], r["note"], r["ended_utc"]) for r in as_csv] == [
        (r["id"], r["tags"] or "", r["note"] or "", r["ended_utc"] or "") for r in summary]


def test_metric_views_decode_nan_and_infinities(built):
    db, ids = built
    conn = sqlite3.connect(db)
    latest = {(r["run_id"], r["key"]): r for r in rows(conn, "SELECT * FROM latest_metrics")}
    div, done = ids["diverged"], ids["done"]
    assert {k: (r["step"], r["value"], r["special"], r["decoded"]) for k, r in latest.items()} == {
        (done, "loss"): (3, 1.5, None, 1.5), (done, "lr"): (3, 0.1, None, 0.1),
        (div, "loss"): (3, None, "nan", None), (div, "lr"): (4, None, "-inf", -math.inf)}
    assert latest[(div, "loss")]["wall"] == 12.5 and latest[(div, "loss")]["wall_utc"] == "1970-01-01T00:00:12.500Z"
    # Every point of metric_series decodes to what lrfr's own read (the codec) returns.
    store = Store(db)
    for run_id in (done, div):
        for key in ("loss", "lr"):
            series = rows(conn, f"SELECT step, value, special, decoded FROM metric_series WHERE run_id = {run_id} "
                                f"AND key = '{key}' ORDER BY step")
            ours = store.metric_series(run_id, key)
            assert [r["step"] for r in series] == [s for s, _ in ours]
            assert all(same_float(r["decoded"], v) and same_float(decode(r["value"], r["special"]), v)
                       for r, (_, v) in zip(series, ours, strict=True))
    assert [r["decoded"] for r in rows(conn, f"SELECT decoded FROM metric_series WHERE run_id = {div} "
                                             "AND key = 'loss' ORDER BY step")] == [2.0, math.inf, None]
    # sqlite-utils: JSON writes the infinities as Infinity / -Infinity (Python's json reads them), CSV as inf.
    cli = json.loads(sqlite_utils_cli(db, f"select key, step, special, decoded from metric_series where run_id = {div} "
                                          "order by key, step", "--json-cols"))
    assert [(r["key"], r["step"], r["special"], r["decoded"]) for r in cli] == [
        ("loss", 1, None, 2.0), ("loss", 2, "inf", math.inf), ("loss", 3, "nan", None), ("lr", 4, "-inf", -math.inf)]
    text = sqlite_utils_cli(db, f"select key, decoded, special from latest_metrics where run_id = {div} order by key",
                            "--csv")
    assert list(csv.reader(io.StringIO(text))) == [["key", "decoded", "special"], ["loss", "", "nan"],
                                                   ["lr", "-inf", "-inf"]]


def test_results_wide_takes_each_benchmarks_preferred_protocol(built):
    db, ids = built
    conn = sqlite3.connect(db)
    wide = {r["run_id"]: r for r in rows(conn, "SELECT * FROM results_wide")}
    assert sorted(wide) == sorted(ids[k] for k in ("done", "diverged", "live", "rerun"))
    done = wide[ids["done"]]
    assert {k: v for k, v in done.items() if k not in RUN_COLUMNS} == {
        "lfw_protocol": "insightface_10fold", "lfw_acc": 0.95,  # the re-evaluation wins
        "xqlfw_protocol": "xqlfw_official", "xqlfw_acc": 0.80,
        "scface_protocol": "zero_shot", "scface_rank1_d1": 0.1, "scface_rank1_d2": 0.2, "scface_rank1_d3": 0.3,
        "scface_rank1_mean": 0.2,
        "tinyface_protocol": "finetune", "tinyface_rank1": 0.4, "tinyface_mAP": 0.3,
        "lowres_lfw_protocol": "insightface_10fold_second", "lowres_lfw_acc_112": 0.5 + 0.05 + 0.112,
        "lowres_lfw_acc_20": 0.5 + 0.05 + 0.020, "lowres_lfw_acc_14": 0.5 + 0.05 + 0.014,
        "lowres_lfw_acc_7": 0.5 + 0.05 + 0.007}
    assert (done["name"], done["status"]) == ("tiny", "finished")
    rerun = wide[ids["rerun"]]
    assert (rerun["scface_protocol"], rerun["scface_rank1_d1"], rerun["scface_rank1_d2"], rerun["lfw_acc"]) == (
        "finetune", 0.66, None, None)
    assert all(v is None for k, v in wide[ids["live"]].items() if k not in RUN_COLUMNS)
    # Each headline number is the one `lrfr ls BENCH.METRIC[@RES]` means for that run.
    stored = latest_results(conn, list(wide))
    for run_id, row in wide.items():
        for col in result_keys.wide_columns():
            term = parse_term(f"result:{col.benchmark}.{col.metric}" + (f"@{col.resolution}" if col.resolution else ""))
            assert row[col.name] == result_keys.pick(stored.get(run_id, {}), term), (run_id, col.name)
    cli = json.loads(sqlite_utils_cli(db, "select * from results_wide", "--json-cols"))
    assert cli == rows(conn, "SELECT * FROM results_wide")


def test_latest_results_keeps_its_v8_columns(built):
    db, ids = built
    conn = sqlite3.connect(db)
    got = rows(conn, f"SELECT * FROM latest_results WHERE run_id = {ids['done']} AND benchmark = 'lfw' "
                     "ORDER BY protocol")
    assert [(r["protocol"], r["metric"], r["value"], r["source_kind"]) for r in got] == [
        ("insightface_10fold", "acc", 0.95, "standin"), ("roc", "tar@far=1e-3", 0.80, "standin")]
    assert abs(utc_seconds(got[0]["created_utc"]) - got[0]["created"]) <= 0.0011


# ------------------------------------------------------------ columns follow the registry


def expected_wide_columns() -> list[str]:
    """From the registry's API: per benchmark in paper order, its protocol, then each headline metric at each
    headline resolution (or once)."""
    names = []
    for bench in registry.benchmarks():
        names.append(f"{bench.name}_protocol")
        for metric in bench.headline_metrics:
            names += [f"{bench.name}_{metric}" + ("" if r is None else f"_{r}")
                      for r in (bench.headline_resolutions or (None,))]
    return names


def missing_headlines(db: Path) -> list[str]:
    """The registry's headline columns that results_wide lacks (columns read with sqlite-utils' introspection)."""
    from sqlite_utils import Database

    have = set(Database(sqlite3.connect(db))["results_wide"].columns_dict)
    return [name for name in expected_wide_columns() if name not in have]


def test_results_wide_columns_are_the_registrys_headline_numbers(tmp_path):
    Store(tmp_path / "runs.db").close()
    from sqlite_utils import Database

    columns = list(Database(sqlite3.connect(tmp_path / "runs.db"))["results_wide"].columns_dict)
    assert columns == [*RUN_COLUMNS, *expected_wide_columns()]
    # The README's headline numbers are among them (the registry is not empty, this test is not vacuous).
    assert {"lfw_acc", "xqlfw_acc", "scface_rank1_d1", "scface_rank1_d2", "scface_rank1_d3", "scface_rank1_mean",
            "tinyface_rank1", "lowres_lfw_acc_112", "lowres_lfw_acc_20", "lowres_lfw_acc_14",
            "lowres_lfw_acc_7"} <= set(columns)
    assert len({c.lower() for c in columns}) == len(columns)  # SQLite names are case-insensitive


def test_a_headline_dropped_from_the_view_is_caught_and_restored_on_open(tmp_path, monkeypatch):
    real = result_keys.wide_columns
    monkeypatch.setattr(result_keys, "wide_columns",
                        lambda benchmarks=None: [c for c in real(benchmarks) if c.name != "scface_rank1_d2"])
    db = tmp_path / "runs.db"
    Store(db).close()
    assert missing_headlines(db) == ["scface_rank1_d2"]
    monkeypatch.undo()  # the real definitions: the next opener sees the view differs and re-creates it
    Store(db).close()
    assert missing_headlines(db) == []


def test_a_new_benchmark_becomes_columns_on_the_next_open_without_a_schema_change(tmp_path, monkeypatch):
    db = tmp_path / "runs.db"
    store = Store(db)
    run_id = new_run(store)
    store.add_results(run_id, [("survface", "open_set", "tpir@fpir=0.3", None, 0.25)], source=STANDIN)
    store.close()
    new = registry.BenchmarkInfo(name="survface", label="SurvFace", task="identification", description="test",
                                 protocols=("closed_set", "open_set"), headline_metrics=("tpir@fpir=0.3",),
                                 headline_single_protocol=True, formats=("bin",))
    monkeypatch.setattr(registry, "_DECLARED", (*registry.benchmarks(), new))
    store = Store(db)
    assert views.stale(store.conn) == []
    assert store.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    got = rows(store.conn, 'SELECT survface_protocol, "survface_tpir@fpir=0.3" AS v FROM results_wide')
    assert got == [{"survface_protocol": "open_set", "v": 0.25}]
    assert missing_headlines(db) == []


def test_headline_resolutions_are_evaluated_by_default():
    """Every results_wide column at a resolution is filled by a run with the default eval.resolutions."""
    for bench in registry.benchmarks():
        assert set(bench.headline_resolutions) <= set(EvalConfig().resolutions), bench.name


# ------------------------------------------------------------ upgrades and opening


@pytest.mark.parametrize("version", [7, 8])
def test_an_older_database_gains_the_views_when_opened(tmp_path, version):
    """v7: no views yet; v8: the first three views, as that release created them."""
    db = tmp_path / "runs.db"
    conn = db_at_version(db, version)
    conn.execute("INSERT INTO runs (name, status, created, started, ended, config, uuid) "
                 "VALUES ('old', 'finished', 100.0, 110.0, 170.5, '{}', 'u1')")
    conn.execute("INSERT INTO results (run_id, benchmark, protocol, metric, resolution, value, created) "
                 "VALUES (1, 'lfw', 'insightface_10fold', 'acc', NULL, 0.9, 171.0)")
    conn.execute("INSERT INTO notes VALUES (1, 'from the old days', 172.0)")
    conn.execute("INSERT INTO metrics VALUES (1, 'loss', 5, NULL, 'inf', 160.0)")
    conn.commit()
    before = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='view'")}
    assert before == (set() if version == 7 else {"run_summary", "latest_results", "latest_metrics"})
    conn.close()
    store = Store(db)
    assert store.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert views.stale(store.conn) == []
    store.close()
    listed = json.loads(sqlite_utils_cli(db, "select name from sqlite_master where type = 'view' order by name",
                                         "--json-cols"))
    assert [r["name"] for r in listed] == sorted(views.VIEW_NAMES)
    conn = sqlite3.connect(db)
    assert rows(conn, "SELECT id, duration_s, created_utc, ended_utc, note FROM run_summary") == [
        {"id": 1, "duration_s": 60.5, "created_utc": "1970-01-01T00:01:40.000Z",
         "ended_utc": "1970-01-01T00:02:50.500Z", "note": "from the old days"}]
    assert rows(conn, "SELECT run_id, lfw_protocol, lfw_acc FROM results_wide") == [
        {"run_id": 1, "lfw_protocol": "insightface_10fold", "lfw_acc": 0.9}]
    assert rows(conn, "SELECT step, special, decoded FROM latest_metrics") == [{"step": 5, "special": "inf",
                                                                                "decoded": math.inf}]


def test_stale_views_never_make_an_opener_wait_for_a_writer(tmp_path):
    """Another process holds the write lock: opening with a stale view goes on at once (the views are only
    for other programs) and the next opener re-creates it."""
    db = tmp_path / "runs.db"
    Store(db).close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP VIEW results_wide")
    conn.close()
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time\n"
                               f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
                               "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        store = Store(db, timeout_s=30)
        assert time.monotonic() - t0 < 10  # about the 1 s courtesy timeout, not the store's 30 s
        assert views.stale(store.conn) == ["results_wide"]
        store.close()
    finally:
        holder.kill()
        holder.wait()
    store = Store(db)
    assert views.stale(store.conn) == []


# ------------------------------------------------------------ the public interface

# What schema v8 shipped (its migration, frozen): these stay first, in this order, whatever is appended.
V8_COLUMNS = {
    "run_summary": ["id", "name", "preset", "status", "group_name", "host", "launcher", "created", "started", "ended",
                    "duration_s", "step", "total_steps", "exit_code", "failure_reason", "parent_id", "run_dir", "tags"],
    "latest_results": ["run_id", "benchmark", "protocol", "metric", "resolution", "value", "source_kind", "created"],
    "latest_metrics": ["run_id", "key", "step", "value", "special", "wall"],
}
PUBLIC_COLUMNS = {
    "run_summary": [*V8_COLUMNS["run_summary"], "created_utc", "started_utc", "ended_utc", "note", "git_commit"],
    "latest_results": [*V8_COLUMNS["latest_results"], "created_utc"],
    "latest_metrics": [*V8_COLUMNS["latest_metrics"], "decoded", "wall_utc"],
    "metric_series": ["run_id", "key", "step", "value", "special", "decoded", "wall", "wall_utc"],
    "results_wide": [*RUN_COLUMNS, *expected_wide_columns()],
}


def test_view_columns_are_the_documented_public_interface(tmp_path):
    """A renamed, dropped or reordered column fails here; so does one the README's table does not list."""
    db = tmp_path / "runs.db"
    Store(db).close()
    conn = sqlite3.connect(db)
    have = {name: [r[1] for r in conn.execute(f"PRAGMA table_info({name})")] for name in views.VIEW_NAMES}
    assert have == PUBLIC_COLUMNS
    for name, v8 in V8_COLUMNS.items():
        assert have[name][:len(v8)] == v8
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in ("run_summary", "latest_results", "latest_metrics", "metric_series"):
        (line,) = [ln for ln in readme.splitlines() if ln.startswith(f"| `{name}` |")]
        assert [c for c in have[name] if f"`{c}`" not in line] == [], name
    (line,) = [ln for ln in readme.splitlines() if ln.startswith("| `results_wide` |")]
    assert all(f"`{c}`" in line for c in (*RUN_COLUMNS, "lfw_acc", "xqlfw_acc", "tinyface_rank1", "lowres_lfw_acc_112"))


def test_a_view_that_does_not_compile_fails_the_open_instead_of_being_skipped(tmp_path, monkeypatch):
    """Only a held lock or a read-only file postpones the views; a broken definition is a bug, and says so."""
    from lrfr_tui.runsdb import StoreError

    db = tmp_path / "runs.db"
    Store(db).close()
    real = views.definitions
    monkeypatch.setattr(views, "definitions", lambda: {**real(), "results_wide": "SELECT FROM WHERE"})
    with pytest.raises(StoreError, match="syntax error"):
        Store(db)
    monkeypatch.undo()
    assert views.stale(Store(db).conn) == []  # nothing half-done: the old views are still all there
