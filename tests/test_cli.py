"""`lrfr` end to end, as a user runs it: a real subprocess, a real runs.db."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

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
    results = {(b, p, m, r): v for b, p, m, r, v in db.execute(
        "SELECT benchmark, protocol, metric, resolution, value FROM results WHERE run_id=?", (report["run"],))}
    # The tiny preset evaluates every synthetic stand-in.
    assert {b for b, _, _, _ in results} == {"lfw", "xqlfw", "scface", "tinyface", "lowres_lfw"}
    lowres = {r: v for (b, p, m, r), v in results.items() if b == "lowres_lfw" and m == "acc"}
    assert set(lowres) == {32, 8} and all(0.0 <= v <= 1.0 for v in lowres.values())
    assert (tmp_path / "runs" / str(report["run"]) / "train.log").exists()
    assert report["checkpoint"] == f"runs/{report['run']}/checkpoint.pt" and report["log"] == f"runs/{report['run']}/train.log"
    params = dict(db.execute("SELECT key, value FROM params WHERE run_id=?", (report["run"],)).fetchall())
    assert json.loads(params["optim.lr"]) == 0.05


def test_run_says_where_its_files_are_and_what_to_do_next(tmp_path):
    """Piped to a file, `lrfr run` ends with the checkpoint and log paths and the next commands, unwrapped."""
    sets = [a for o in MICRO_OVERRIDES + ["schedule.max_steps=2", "eval.benchmarks=[lfw]"] for a in ("--set", o)]
    proc = lrfr("run", "--preset", "tiny", *sets, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "checkpoint  runs/1/checkpoint.pt" in lines and "log         runs/1/train.log" in lines
    assert any(line.startswith("next ") and "lrfr show 1" in line and "lrfr eval --run 1 --bench NAME" in line
               for line in lines), proc.stdout


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


def test_eval_checkpoint_run_and_exported_model(tmp_path):
    import torch

    from engine.train import load_backbone

    sets = [a for o in MICRO_OVERRIDES + ["schedule.max_steps=2", "eval.benchmarks=[lfw]"] for a in ("--set", o)]
    proc = lrfr("run", "--preset", "tiny", *sets, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = json.loads(proc.stdout)["run"]
    checkpoint = tmp_path / "runs" / str(run_id) / "checkpoint.pt"

    # Re-evaluate the run on another benchmark: results are added to the same run, whose status and
    # progress (2/2 steps) stay as they were.
    def progress():
        with sqlite3.connect(tmp_path / "runs.db") as conn:
            return conn.execute("SELECT status, step, total_steps FROM runs WHERE id=?", (run_id,)).fetchone()

    trained = progress()
    assert trained == ("finished", 2, 2)
    proc = lrfr("eval", "--run", str(run_id), "--bench", "xqlfw", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {r["benchmark"] for r in json.loads(proc.stdout)["results"]} == {"xqlfw"}
    assert progress() == trained

    # The same network exported as TorchScript, evaluated as an external model: an evaluation-only run
    # with the same LFW accuracy as the checkpoint.
    backbone, _ = load_backbone(checkpoint)
    scripted = tmp_path / "model.ts"
    torch.jit.trace(backbone, torch.zeros(2, 3, 32, 32)).save(str(scripted))
    proc = lrfr("eval", "--model", str(scripted), "--preset", "tiny", "--set", "model.input_size=32",
                "--set", "eval.standin_size=test", "--bench", "lfw", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    external = json.loads(proc.stdout)
    assert external["run"] != run_id
    proc = lrfr("eval", "--checkpoint", str(checkpoint), "--bench", "lfw", "--json", cwd=tmp_path)
    from_checkpoint = json.loads(proc.stdout)

    def acc(report):
        return next(r["value"] for r in report["results"] if r["metric"] == "acc")

    assert acc(external) == pytest.approx(acc(from_checkpoint), abs=1e-6)
    db = sqlite3.connect(tmp_path / "runs.db")
    launcher, status = db.execute("SELECT launcher, status FROM runs WHERE id=?", (external["run"],)).fetchone()
    assert (launcher, status) == ("eval", "finished")


def test_eval_errors(tmp_path):
    proc = lrfr("eval", "--run", "7", cwd=tmp_path)
    assert proc.returncode == 2 and "no runs database" in proc.stderr
    proc = lrfr("eval", cwd=tmp_path)
    assert proc.returncode == 2 and "exactly one of --run" in proc.stderr
    proc = lrfr("eval", "--model", str(tmp_path / "missing.pt"), cwd=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_data_check_finds_corrupt_images(tmp_path):
    from PIL import Image

    root = tmp_path / "faces"
    for person in ("alice", "bob"):
        (root / person).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (i * 50, 80, 90)).save(root / person / f"{i}.png")
    (root / "bob" / "broken.jpg").write_bytes(b"not a jpeg")
    assert lrfr("data", "add", "mine", str(root), cwd=tmp_path).returncode == 0
    proc = lrfr("data", "check", "mine", "--json", cwd=tmp_path)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert (report["identities"], report["images"], report["unreadable_count"]) == (2, 5, 1)
    assert "broken.jpg" in report["unreadable"][0]
    (root / "bob" / "broken.jpg").unlink()
    proc = lrfr("data", "check", "mine", cwd=tmp_path)
    assert proc.returncode == 0 and "ok" in proc.stdout
