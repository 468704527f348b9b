"""`lrfr` end to end, as a user runs it: a real subprocess, a real runs.db."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import MICRO_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]


def lrfr(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lrfr_tui.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=timeout)


def test_run_tiny_end_to_end(tmp_path):
    sets = [a for o in MICRO_OVERRIDES + ["schedule.max_steps=6"] for a in ("--set", o)]
    proc = lrfr("run", "--preset", "tiny", *sets, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["status"] == "finished"
    db = sqlite3.connect(tmp_path / "runs.db")
    status, step, total, config, commit = db.execute(
        "SELECT status, step, total_steps, config, git_commit FROM runs WHERE id=?", (report["run"],)).fetchone()
    assert (status, step, total) == ("finished", 6, 6)
    assert json.loads(config)["schedule"]["max_steps"] == 6
    n_points = db.execute("SELECT COUNT(*) FROM metrics WHERE run_id=? AND key='loss'", (report["run"],)).fetchone()
    assert n_points[0] == 6
    results = {(r, m): v for r, m, v in db.execute(
        "SELECT resolution, metric, value FROM results WHERE benchmark='synthetic_lfw'")}
    assert set(results) >= {(32, "acc"), (8, "acc")}
    assert all(0.0 <= results[(r, "acc")] <= 1.0 for r in (32, 8))
    assert (tmp_path / "runs" / str(report["run"]) / "train.log").exists()
    params = dict(db.execute("SELECT key, value FROM params WHERE run_id=?", (report["run"],)).fetchall())
    assert json.loads(params["optim.lr"]) == 0.05


def test_config_prints_every_key_and_presets_lists(tmp_path):
    proc = lrfr("config", "--preset", "r34", "--set", "optim.lr=0.05", cwd=tmp_path)
    assert proc.returncode == 0
    assert "lr = 0.05" in proc.stdout and "[schedule]" in proc.stdout and "lambda = 1.0" in proc.stdout
    proc = lrfr("presets", "--json", cwd=tmp_path)
    names = json.loads(proc.stdout)
    assert {"r34", "r50", "tiny", "baseline", "maug-logexp-p2"} <= set(names)


def test_user_errors_are_one_line_and_record_nothing(tmp_path):
    for args, needle in [
        (["run", "--preset", "tiny", "--set", "optim.lr=abc"], "optim.lr: expected a number"),
        (["run", "--preset", "nope"], "unknown preset 'nope'"),
        (["run", "--preset", "r34"], "dataset 'casia_webface' is not registered; register it with `lrfr data add"),
    ]:
        proc = lrfr(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs.db").exists()


def test_registered_dataset_is_found(tmp_path):
    root = tmp_path / "faces"
    (root / "alice").mkdir(parents=True)
    proc = lrfr("data", "add", "casia_webface", str(root), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = lrfr("data", "list", "--json", cwd=tmp_path)
    assert json.loads(proc.stdout)[0]["name"] == "casia_webface"
