"""benchmarks/bench_loader.py runs and prints a figure per source and worker count (tiny sizes: a smoke run)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_loader_runs_and_prints(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_loader.py"), "--workers", "1", "2",
                           "--images", "64", "--batch", "16", "--epochs", "1", "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    rows = {line.split()[0]: line for line in lines if "img/s" in line}
    assert set(rows) == {"folder+PIL", "recordio+PIL", "pack"}
    assert all(row.count("img/s") == 2 for row in rows.values())
    assert any(line.startswith("pack / folder+PIL:") for line in lines)
