"""The query commands (ls, show, logs, results, compare, export, tag, note, rm) over a runs.db
built through the real Store API."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.config import flatten, resolve, to_dict
from engine.errors import LrfrError
from lrfr_tui import results_table, runsdb
from lrfr_tui.cli import app
from lrfr_tui.runsdb import Store, StoreError, runs_root
from lrfr_tui.runsdb.migrations import SCHEMA_VERSION

runner = CliRunner()


def _results(lfw, xqlfw, scface_zero, lowres7, scface_ft=None):
    rows = [("lfw", "insightface_10fold", "acc", None, lfw), ("lfw", "insightface_10fold", "acc_std", None, 0.004),
            ("xqlfw", "xqlfw_official", "acc", None, xqlfw), ("xqlfw", "insightface_10fold", "acc", None, xqlfw - 0.01)]
    rows += [("scface", "zero_shot", f"rank1_{k}", None, v)
             for k, v in zip(("d1", "d2", "d3", "mean"), scface_zero, strict=True)]
    if scface_ft is not None:
        rows.append(("scface", "finetune", "rank1_mean", None, scface_ft))
    rows += [("lowres_lfw", "insightface_10fold_second", "acc", 112, lfw),
             ("lowres_lfw", "insightface_10fold_second", "acc", 14, (lfw + lowres7) / 2),
             ("lowres_lfw", "insightface_10fold_second", "acc", 7, lowres7)]
    return rows


def _new_run(store: Store, name: str, overrides: list[str], group: str | None = None, status: str = "queued") -> int:
    cfg = resolve("tiny", [f"name={name}", *overrides])
    return store.create_run(to_dict(cfg), flatten(cfg), f"lrfr run --preset tiny --name {name}", group=group,
                            status=status)


def build_db(path: Path) -> dict[str, int]:
    """base (finished), maug (finished, tagged, group abl1), broken (failed, group abl1, nan/inf
    losses), waiting (queued), gone (finished, soft-deleted)."""
    store = Store(path)
    ids = {}
    ids["base"] = _new_run(store, "base", ["augment.resolutions=[]", "augment.weights=[]", "loss.distance=none"])
    ids["maug"] = _new_run(store, "maug", ["optim.lr=0.1"], group="abl1")
    ids["broken"] = _new_run(store, "broken", ["optim.lr=0.5"], group="abl1")
    ids["waiting"] = _new_run(store, "waiting", [])
    ids["gone"] = _new_run(store, "gone", [])
    t = 1000.0
    # base: loss ends at 1.5 but was 0.9 at its best; maug: ends at 0.8 (its minimum)
    base_loss = [5.0, 3.0, 0.9, 1.2, 1.5]
    maug_loss = [4.0, 2.0, 1.0, 0.9, 0.8]
    for name, losses in (("base", base_loss), ("maug", maug_loss)):
        run_id = ids[name]
        store.mark_started(run_id, runs_root(path) / str(run_id), pid=None)
        store.add_metrics(run_id, [("loss", 10 * (i + 1), v, t) for i, v in enumerate(losses)]
                          + [("images_per_s", 10 * (i + 1), 100.0 + 10 * i, t) for i in range(len(losses))])
        store.mark_progress(run_id, 50, 50)
        store.mark_ended(run_id, "finished", 0)
    store.add_results(ids["base"], _results(0.9942, 0.6895, (0.403, 0.928, 0.985, 0.772), 0.60))
    store.add_results(ids["maug"], _results(0.9903, 0.9218, (0.730, 0.960, 0.988, 0.893), 0.85, scface_ft=0.9667))
    # a re-evaluation: the latest row wins
    store.add_results(ids["maug"], [("lfw", "insightface_10fold", "acc", None, 0.9908)])
    store.mark_started(ids["broken"], runs_root(path) / str(ids["broken"]), pid=None)
    store.add_metrics(ids["broken"], [("loss", 10, 2.0, t), ("loss", 20, float("inf"), t),
                                      ("loss", 30, float("nan"), t)])
    store.mark_progress(ids["broken"], 30, 50)
    store.mark_ended(ids["broken"], "failed", 2, "loss became nan at step 30")
    store.mark_started(ids["gone"], runs_root(path) / str(ids["gone"]), pid=None)
    store.mark_ended(ids["gone"], "finished", 0)
    store.add_results(ids["gone"], _results(0.95, 0.80, (0.5, 0.6, 0.7, 0.6), 0.7))
    store.set_tags(ids["maug"], ["paper", "best"])
    store.add_note(ids["base"], "the HR-only reference")
    store.set_deleted([ids["gone"]])
    log = runs_root(path) / str(ids["base"]) / "train.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"step {i} loss=1.0\n" for i in range(1, 31)))
    store.close()
    return ids


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    path = tmp_path_factory.mktemp("query") / "runs.db"
    return path, build_db(path)


@pytest.fixture
def db(built, tmp_path) -> tuple[Path, dict[str, int]]:
    """A private copy (with its run directories) that a test may change."""
    src, ids = built
    shutil.copy(src, tmp_path / "runs.db")
    shutil.copytree(src.parent / "runs", tmp_path / "runs")
    return tmp_path / "runs.db", ids


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        if not isinstance(result.exception, LrfrError):
            raise result.exception
    return result.exit_code, result.stdout, result.stderr


def ls_ids(path: Path, *terms: str, sort: str | None = None, **kw) -> list[int]:
    conn = runsdb.open_db(path)
    return [r.id for r in runsdb.select_runs(conn, list(terms), sort=sort, **kw)]


# ---------------------------------------------------------------- the filter language


def test_parse_filter_kinds():
    f = runsdb.parse_filter("status=queued,running")
    assert (f.term.kind, f.op, f.value) == ("field", "=", ("queued", "running"))
    f = runsdb.parse_filter("min(loss)<1.2")
    assert (f.term.kind, f.term.func, f.term.name, f.op, f.value) == ("metric", "min", "loss", "<", 1.2)
    f = runsdb.parse_filter("loss<=1")
    assert (f.term.kind, f.term.func, f.op) == ("metric", "last", "<=")
    f = runsdb.parse_filter("scface.finetune.rank1_mean>0.5")
    assert (f.term.kind, f.term.benchmark, f.term.protocol, f.term.name) == ("result", "scface", "finetune", "rank1_mean")
    f = runsdb.parse_filter("lowres_lfw.acc@7>=80%")
    assert (f.term.benchmark, f.term.resolution, f.op, f.value) == ("lowres_lfw", 7, ">=", 0.8)
    f = runsdb.parse_filter('lfw."val@far=1e-3">0.9')
    assert (f.term.kind, f.term.name, f.value) == ("result", "val@far=1e-3", 0.9)
    f = runsdb.parse_filter("optim.lr=0.1")
    assert (f.term.kind, f.term.name, f.value) == ("param", "optim.lr", 0.1)
    f = runsdb.parse_filter("augment.resolutions=[7, 14, 20]")
    assert f.value == "[7,14,20]"
    f = runsdb.parse_filter("age<2h")
    assert (f.term.name, f.value) == ("age", 7200)
    assert runsdb.parse_filter('"a=b"').term.kind == "text"
    assert runsdb.parse_filter("paper").value == "paper"
    assert runsdb.parse_sort("-min(loss)") == (runsdb.Term("metric", "loss", func="min"), True)


@pytest.mark.parametrize("bad, message", [
    ("status=runing", "unknown status 'runing'"),
    ("lfw.acc>high", "'high' is not a number"),
    ("median(loss)<1", "unknown function median()"),
    ("status<3", "takes =, != or ~"),
    ("lfw.acc@hr>0.9", "not a resolution"),
    ("a.b.c.d>1", "BENCH.METRIC or BENCH.PROTOCOL.METRIC"),
    (">0.9", "nothing before the operator"),
    ("loss<", "nothing after <"),
    ("optim.lr>fast", "needs a number"),
    ('lfw."acc>0.9', "unclosed quote"),
])
def test_malformed_filters_are_one_line_errors(bad, message):
    with pytest.raises(runsdb.FilterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        runsdb.parse_filter(bad)


def test_ls_filters(db):
    path, ids = db
    assert ls_ids(path) == [ids["waiting"], ids["broken"], ids["maug"], ids["base"]]  # newest first, no deleted
    assert ls_ids(path, "status=finished") == [ids["maug"], ids["base"]]
    assert ls_ids(path, "status=failed,queued") == [ids["waiting"], ids["broken"]]
    assert ls_ids(path, "status!=finished") == [ids["waiting"], ids["broken"]]
    assert ls_ids(path, "tag=paper") == [ids["maug"]]
    assert ls_ids(path, "tag!=paper", "status=finished") == [ids["base"]]
    assert ls_ids(path, "group=abl1") == [ids["broken"], ids["maug"]]
    assert ls_ids(path, "name~MAU") == [ids["maug"]]
    assert ls_ids(path, "reference") == [ids["base"]]  # free text in a note
    assert ls_ids(path, "paper") == [ids["maug"]]  # free text in a tag
    assert ls_ids(path, "preset=tiny", "id>=3") == [ids["waiting"], ids["broken"]]
    # results: the headline protocol, the latest evaluation, a resolution, an explicit protocol
    assert ls_ids(path, "lfw.acc>0.99") == [ids["maug"], ids["base"]]
    assert ls_ids(path, "lfw.acc>0.9905") == [ids["maug"], ids["base"]]  # 0.9908 replaced 0.9903
    assert ls_ids(path, "xqlfw.acc>90%") == [ids["maug"]]
    assert ls_ids(path, "xqlfw.acc>0.92") == [ids["maug"]]  # xqlfw_official: 0.9218
    assert ls_ids(path, "xqlfw.insightface_10fold.acc>0.92") == []  # 0.9118
    assert ls_ids(path, "lowres_lfw.acc@7>0.8") == [ids["maug"]]
    assert ls_ids(path, "lowres_lfw.acc>0.994") == [ids["base"]]  # no @: the highest resolution (HR)
    assert ls_ids(path, "scface.finetune.rank1_mean>0.5") == [ids["maug"]]
    # training metrics: last value by default, best-of with min()/max()
    assert ls_ids(path, "loss<1.2") == [ids["maug"]]
    assert ls_ids(path, "min(loss)<0.95") == [ids["maug"], ids["base"]]
    assert ls_ids(path, "max(images_per_s)>=140") == [ids["maug"], ids["base"]]
    assert ls_ids(path, "max(loss)>1000") == [ids["broken"]]  # inf is kept, nan ignored
    assert ls_ids(path, "loss<100") == [ids["maug"], ids["base"]]  # broken's last loss is nan: no match
    # config params
    assert ls_ids(path, "optim.lr=0.1") == [ids["maug"]]
    assert ls_ids(path, "optim.lr>=0.1") == [ids["broken"], ids["maug"]]
    assert ls_ids(path, "loss.distance=none") == [ids["base"]]
    assert ls_ids(path, "model.name~resnet", "status=finished") == [ids["maug"], ids["base"]]
    assert ls_ids(path, "augment.resolutions=[]") == [ids["base"]]
    # deleted runs
    assert ls_ids(path, deleted="only") == [ids["gone"]]
    assert ids["gone"] in ls_ids(path, deleted="all")


def test_ls_sort_and_limit(db):
    path, ids = db
    assert ls_ids(path, sort="id") == [ids["base"], ids["maug"], ids["broken"], ids["waiting"]]
    # runs without the value last, then newest first
    assert ls_ids(path, sort="-xqlfw.acc") == [ids["maug"], ids["base"], ids["waiting"], ids["broken"]]
    assert ls_ids(path, "status=finished", sort="min(loss)") == [ids["maug"], ids["base"]]
    assert ls_ids(path, "status=finished", sort="loss") == [ids["maug"], ids["base"]]
    assert ls_ids(path, sort="name", limit=2) == [ids["base"], ids["broken"]]
    assert ls_ids(path, sort="-optim.lr", limit=1) == [ids["broken"]]
    with pytest.raises(runsdb.FilterError, match="cannot sort by tag"):
        ls_ids(path, sort="tag")


def test_unknown_param_key_is_an_error(db):
    path, _ = db
    with pytest.raises(runsdb.FilterError, match="unknown config key 'optim.lrr'"):
        ls_ids(path, "optim.lrr=0.1")


def test_ls_json_shape_and_table(db):
    path, ids = db
    code, out, _ = cli("ls", "--db", str(path), "--json", "min(loss)<1", "--sort", "-lfw.acc")
    assert code == 0
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [ids["base"], ids["maug"]]
    maug = rows[1]
    assert set(maug) >= {"id", "name", "preset", "status", "group", "step", "total_steps", "tags", "results",
                         "values", "age_s", "duration_s", "deleted"}
    assert maug["tags"] == ["best", "paper"] and maug["group"] == "abl1"
    assert maug["results"] == {"lfw.acc": 0.9908, "xqlfw.acc": 0.9218, "scface.rank1_mean": 0.893,
                               "lowres_lfw.acc@7": 0.85}
    assert maug["values"] == {"min(loss)": 0.8, "lfw.acc": 0.9908}
    code, out, _ = cli("ls", "--db", str(path), "--json", "augment.resolutions!=[]", "--sort", "train.channels_last")
    assert [r["values"] for r in json.loads(out)] == [{"augment.resolutions": [7, 14, 20], "train.channels_last": True}] * 3
    code, out, _ = cli("ls", "--db", str(path), "--where", "status=finished")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:7] == ["id", "name", "preset", "status", "progress", "age", "duration"]
    assert "lfw.acc" in lines[0] and "lowres_lfw.acc@7" in lines[0]
    maug_line = next(line for line in lines if " maug " in line)
    assert "50/50" in maug_line and "99.08" in maug_line and "85.00" in maug_line and "paper" in maug_line
    code, out, _ = cli("ls", "--db", str(path), "--deleted")
    assert "gone" in out and "maug" not in out


def test_show(db):
    path, ids = db
    code, out, _ = cli("show", str(ids["base"]), "--db", str(path), "--tail", "5")
    assert code == 0
    assert "base" in out and "finished" in out
    optim = next(line for line in out.splitlines() if line.strip().startswith("optim:"))  # config, per section
    assert "lr=0.05" in optim and "batch_size=64" in optim
    assert "the HR-only reference" in out
    assert "step 30 loss=1.0" in out and "step 25 loss" not in out
    assert "insightface_10fold" in out and "99.42" in out
    code, out, _ = cli("show", str(ids["broken"]), "--db", str(path), "--json")
    data = json.loads(out)
    assert data["run"]["failure_reason"] == "loss became nan at step 30"
    loss = next(m for m in data["metrics"] if m["key"] == "loss")
    assert loss == {"key": "loss", "points": 3, "last_step": 30, "last": None, "min": 2.0, "max": "inf"}
    assert data["params"]["optim.lr"] == 0.5 and data["log_tail"] == []


def test_logs_prints_the_file_and_tail(db):
    path, ids = db
    code, out, _ = cli("logs", str(ids["base"]), "--db", str(path))
    assert code == 0 and out.count("\n") == 30 and out.startswith("step 1 loss")
    code, out, _ = cli("logs", str(ids["base"]), "--db", str(path), "-n", "2")
    assert out == "step 29 loss=1.0\nstep 30 loss=1.0\n"
    code, _, err = cli("logs", str(ids["maug"]), "--db", str(path))
    assert code != 0


def test_logs_follow_until_the_run_finishes(db):
    path, ids = db
    run_id = ids["waiting"]
    log = runs_root(path) / str(run_id) / "train.log"

    def worker():
        store = Store(path)
        time.sleep(0.3)
        store.mark_started(run_id, log.parent, pid=None)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as fh:
            for i in range(5):
                fh.write(f"line {i}\n")
                fh.flush()
                time.sleep(0.05)
        store.mark_ended(run_id, "finished", 0)
        with log.open("a") as fh:  # the worker's last line comes just after the status
            fh.write("[status] run finished\n")
        store.close()

    thread = threading.Thread(target=worker)
    thread.start()
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "lrfr_tui.cli", "logs", str(run_id), "-f", "--interval", "0.05",
                           "--db", str(path)], capture_output=True, text=True, timeout=60)
    thread.join()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "".join(f"line {i}\n" for i in range(5)) + "[status] run finished\n"
    assert "run 4 finished" in proc.stderr
    assert time.monotonic() - t0 < 30


def test_results_matrix_and_baseline_deltas(db):
    path, ids = db
    conn = runsdb.open_db(path)
    matrix = results_table.results_matrix(conn)
    assert [r.id for r in matrix.rows] == [ids["base"], ids["maug"]]  # runs with results, no deleted
    specs = [c.spec for c in matrix.columns]
    assert specs == ["lfw.insightface_10fold.acc", "xqlfw.xqlfw_official.acc",
                     "scface.zero_shot.rank1_d1", "scface.zero_shot.rank1_d2", "scface.zero_shot.rank1_d3",
                     "scface.zero_shot.rank1_mean", "scface.finetune.rank1_mean",
                     "lowres_lfw.insightface_10fold_second.acc@112", "lowres_lfw.insightface_10fold_second.acc@14",
                     "lowres_lfw.insightface_10fold_second.acc@7"]
    code, out, _ = cli("results", "--db", str(path), "--baseline", str(ids["base"]), "--json")
    data = json.loads(out)
    assert data["baseline"] == ids["base"]
    maug = data["rows"][1]
    assert maug["values"][0] == 0.9908 and maug["deltas"][0] == pytest.approx(0.9908 - 0.9942)
    assert maug["deltas"][1] == pytest.approx(0.9218 - 0.6895)
    code, out, _ = cli("results", "--db", str(path), "--baseline", str(ids["base"]), "--bench", "lfw",
                       "--bench", "xqlfw")
    assert code == 0
    maug_line = next(line for line in out.splitlines() if "maug" in line)
    assert "99.08 (-0.34)" in maug_line and "92.18 (+23.23)" in maug_line
    assert "(baseline)" in out
    # --metric: other columns; --runs keeps the order given; --group
    code, out, _ = cli("results", "--db", str(path), "--metric", "acc_std", "--runs", f"{ids['maug']},{ids['base']}",
                       "--json")
    data = json.loads(out)
    assert [c["spec"] for c in data["columns"]] == ["lfw.insightface_10fold.acc_std"]
    assert [r["id"] for r in data["rows"]] == [ids["maug"], ids["base"]]
    code, out, _ = cli("results", "--db", str(path), "--group", "abl1", "--per-run", "-m", "lowres_lfw.acc@7",
                       "--json")
    data = json.loads(out)
    assert [r["id"] for r in data["rows"]] == [ids["maug"]] and data["rows"][0]["values"] == [0.85]


def test_compare_shows_only_differing_keys(db):
    path, ids = db
    code, out, _ = cli("compare", str(ids["base"]), str(ids["maug"]), "--db", str(path), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["params"]["optim.lr"] == [0.05, 0.1]
    assert data["params"]["augment.resolutions"] == [[], [7, 14, 20]]
    assert data["params"]["name"] == ["base", "maug"]
    assert "model.name" not in data["params"] and "optim.momentum" not in data["params"]
    assert data["metrics"]["loss"] == [1.5, 0.8]
    assert data["results"]["rows"][1]["values"][0] == 0.9908
    code, out, _ = cli("compare", str(ids["base"]), str(ids["maug"]), "--db", str(path))
    assert "optim.lr" in out and "model.name" not in out and "0.05" in out
    code, _, _ = cli("compare", str(ids["base"]), "--db", str(path))
    assert code != 0


def test_export_formats(db, tmp_path):
    path, ids = db
    code, out, _ = cli("export", "--db", str(path), "--format", "csv", "--bench", "lfw", "--bench", "xqlfw")
    assert code == 0
    assert out.splitlines() == ["id,run,lfw.insightface_10fold.acc,xqlfw.xqlfw_official.acc",
                                f"{ids['base']},base,99.42,68.95", f"{ids['maug']},maug,99.08,92.18"]
    code, out, _ = cli("export", "--db", str(path), "-f", "markdown", "-b", "lfw", "-b", "xqlfw")
    assert out.splitlines() == ["| run | LFW acc | XQLFW acc |", "|---|---:|---:|",
                                "| base | **99.42** | 68.95 |", "| maug | 99.08 | **92.18** |"]
    target = tmp_path / "table.tex"
    code, _, err = cli("export", "--db", str(path), "-b", "scface", "-o", str(target))
    assert code == 0 and "wrote 2 runs" in err
    tex = target.read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\multicolumn{4}{c}{SCface (zero\\_shot)}" in tex and "\\cmidrule(lr){2-5}" in tex
    assert "maug & \\textbf{73.00} & \\textbf{96.00} & \\textbf{98.80} & \\textbf{89.30} & \\textbf{96.67} \\\\" in tex
    assert "base & 40.30 & 92.80 & 98.50 & 77.20 & -- \\\\" in tex
    code, _, err = cli("export", "--db", str(path), "-b", "tinyface")
    assert code != 0


def test_tag_note_rm_restore(db):
    path, ids = db
    run = str(ids["base"])
    assert cli("tag", run, "paper", "hr", "--db", str(path))[0] == 0
    assert ls_ids(path, "tag=hr") == [ids["base"]]
    assert cli("tag", run, "hr", "--remove", "--db", str(path), "--json")[1].count("paper") == 1
    assert ls_ids(path, "tag=hr") == []
    assert cli("note", run, "rerun with seed 1", "--db", str(path))[0] == 0
    assert ls_ids(path, "seed 1") == [ids["base"]]
    assert cli("rm", run, "--db", str(path))[0] == 0
    assert ids["base"] not in ls_ids(path) and ls_ids(path, deleted="only") == [ids["gone"], ids["base"]]
    code, _, err = cli("rm", str(ids["waiting"]), "--db", str(path))
    assert code != 0 and ids["waiting"] in ls_ids(path)  # queued: needs --force
    assert cli("rm", "--restore", run, "--db", str(path))[0] == 0
    assert ids["base"] in ls_ids(path)


def test_unknown_run_ids_change_nothing(db):
    path, ids = db
    for args in (["show", "99"], ["logs", "99"], ["compare", "1", "99"], ["tag", "99", "x"], ["note", "99", "x"],
                 ["rm", str(ids["base"]), "99"], ["results", "--runs", "1,99"], ["results", "--baseline", "99"]):
        code, _, _ = cli(*args, "--db", str(path))
        assert code != 0, args
    assert ids["base"] in ls_ids(path)  # the rm of a valid id next to an unknown one did nothing


def test_errors_are_one_line_without_traceback(db, tmp_path):
    path, _ = db

    def lrfr(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lrfr_tui.cli", *args], capture_output=True, text=True,
                              timeout=60)

    proc = lrfr("ls", "status=runing", "--db", str(path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "unknown status" in proc.stderr
    proc = lrfr("show", "42", "--db", str(path))
    assert proc.returncode == 2 and "no run with id 42" in proc.stderr and "Traceback" not in proc.stderr
    newer = tmp_path / "newer.db"
    shutil.copy(path, newer)
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    proc = lrfr("ls", "--db", str(newer))
    assert proc.returncode == 2 and "newer lrfr" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 200)
    proc = lrfr("results", "--db", str(junk))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_read_only_database_file_serves_reads(db):
    path, ids = db
    before = path.read_bytes()
    os.chmod(path, 0o444)
    try:
        conn = runsdb.open_db(path)
        assert [r.id for r in runsdb.select_runs(conn, ["status=finished"])] == [ids["maug"], ids["base"]]
        code, out, _ = cli("results", "--db", str(path), "--json")
        assert code == 0 and len(json.loads(out)["rows"]) == 2
        assert cli("show", str(ids["maug"]), "--db", str(path))[0] == 0
        code, _, _ = cli("tag", str(ids["maug"]), "x", "--db", str(path))
        assert code != 0  # a write command says the file is read-only
        with pytest.raises(StoreError):
            Store.over(conn, path).set_tags(ids["maug"], ["x"])  # and the read-only connection cannot write
    finally:
        os.chmod(path, 0o644)
    assert path.read_bytes() == before


def test_newer_schema_read_only_file_is_refused(db, tmp_path):
    path, _ = db
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    os.chmod(path, 0o444)
    try:
        with pytest.raises(StoreError, match="newer lrfr"):
            runsdb.open_db(path)
    finally:
        os.chmod(path, 0o644)
