"""`lrfr data pack` as a user runs it (a real subprocess); `lrfr data align` is in tests/test_align.py."""

import json

import numpy as np
from PIL import Image

from tests.test_cli import lrfr


def test_data_pack_writes_registers_and_checks(tmp_path):
    root = tmp_path / "faces"
    rng = np.random.default_rng(0)
    for person in ("alice", "bob"):
        (root / person).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / person / f"{i}.png")
    assert lrfr("data", "add", "mine", str(root), cwd=tmp_path).returncode == 0
    proc = lrfr("data", "pack", "mine", "--size", "16", "--workers", "0", "--out", str(tmp_path / "mine.pack"),
                "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["count"], report["size"], report["skipped"]) == (6, 16, [])
    entry = json.loads(lrfr("data", "list", "--json", cwd=tmp_path).stdout)[0]
    assert entry["pack"] == str(tmp_path / "mine.pack") and entry["format"] == "folder"
    assert lrfr("data", "add", "packed", str(tmp_path / "mine.pack"), cwd=tmp_path).returncode == 0
    proc = lrfr("data", "check", "packed", "--json", cwd=tmp_path)
    check = json.loads(proc.stdout)
    assert proc.returncode == 0 and (check["format"], check["images"], check["identities"]) == ("pack", 6, 2)


def test_data_pack_errors_are_one_line(tmp_path):
    proc = lrfr("data", "pack", "nothing", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "lrfr: error: dataset 'nothing' is not registered (see `lrfr data list`)")
    (tmp_path / "x.bin").write_bytes(b"")
    assert lrfr("data", "add", "lfw", str(tmp_path / "x.bin"), cwd=tmp_path).returncode == 0
    proc = lrfr("data", "pack", "lfw", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "only training sets (folder, recordio) are packed" in proc.stderr
