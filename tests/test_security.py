"""Hostile inputs: values that would inject commands into a Slurm batch script, and tiny ``.bin`` packs that
ask the unpickler for huge allocations (or a crash)."""

from __future__ import annotations

import io
import json
import os
import pickle
import shlex
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import resolve
from engine.data.binpack import load_bin, read_bin, write_bin
from engine.errors import ConfigError, DatasetError, LrfrError
from lrfr_tui.launchers.base import LaunchRequest
from lrfr_tui.launchers.slurm import SlurmLauncher

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------- Slurm


def _request(db: Path, overrides: list[str] = ()) -> LaunchRequest:
    cfg = resolve("tiny", ["launch.launcher=slurm", "launch.gpus=0", *overrides])
    run_dir = db.parent / "runs" / "7"
    return LaunchRequest(run_id=7, db=db, run_dir=run_dir, log_path=run_dir / "train.log", launch=cfg.launch)


def _fake_srun(tmp_path: Path) -> Path:
    """A stand-in ``srun`` that records its arguments (there is no cluster here): one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$SRUN_ARGS"\n')
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_partition_line_break_is_refused_by_config():
    with pytest.raises(ConfigError, match=r"^launch.slurm_partition="):
        resolve("tiny", ["launch.launcher=slurm", "launch.slurm_partition=debug\nrm -rf /"])


def test_sbatch_script_is_the_one_submitit_writes(tmp_path, monkeypatch):
    import submitit

    monkeypatch.setenv("PATH", f"{_fake_srun(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    request = _request(tmp_path / "runs.db", ["launch.gpus=2", "launch.slurm_partition=gpu"])
    launcher = SlurmLauncher()
    # As SlurmLauncher.start builds it (SlurmExecutor only needs an srun on PATH to exist).
    executor = submitit.SlurmExecutor(folder=request.run_dir / "slurm", python=shlex.quote(request.python))
    executor.update_parameters(**launcher.executor_parameters(request))
    expected = executor._make_submission_file_text(executor._submitit_command_str, "uid")
    assert launcher.sbatch_script(request) == expected
    assert "#SBATCH --partition=gpu" in expected


@pytest.mark.parametrize("name", ["x$(touch pwned)y", "x`touch pwned`y", "it's $HOME; touch pwned"])
def test_shell_syntax_in_the_db_path_stays_literal(tmp_path, name):
    db = tmp_path / name / "runs.db"
    request = _request(db)
    script = tmp_path / "job.sh"
    script.write_text(SlurmLauncher().sbatch_script(request))
    # Run the batch script as sbatch would (bash), with the stand-in srun: nothing in it may execute the name.
    env = dict(os.environ, PATH=f"{_fake_srun(tmp_path)}{os.pathsep}{os.environ['PATH']}",
               SRUN_ARGS=str(tmp_path / "srun.args"))
    out = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "pwned").exists()
    args = (tmp_path / "srun.args").read_text().splitlines()
    assert str((request.run_dir / "slurm").absolute()) in args  # the path arrived as one literal argument


@pytest.mark.parametrize("where", ["db", "python", "partition"])
def test_line_breaks_never_reach_the_script(tmp_path, where):
    db = tmp_path / "a\ntouch pwned #" / "runs.db" if where == "db" else tmp_path / "runs.db"
    request = _request(db)
    if where == "python":
        request.python = "/usr/bin/python3\ntouch pwned"
    if where == "partition":  # a LaunchConfig built in code, never validated
        request.launch.slurm_partition = "debug\ntouch pwned #"
    launcher = SlurmLauncher()
    with pytest.raises(LrfrError, match="line break"):
        launcher.sbatch_script(request)
    with pytest.raises(LrfrError, match="line break"):  # refused before sbatch is even looked for
        launcher.start(request)
    assert not (request.run_dir / "slurm").exists()


# ---------------------------------------------------------------------------------------------- .bin packs


def _jpeg(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 12), (shade, 255 - shade, 90)).save(buf, "JPEG")
    return buf.getvalue()


def _pack(*ops: bytes) -> bytes:
    """A protocol-2 pickle of (whatever ``ops`` push, []) : what a pack's reader must at least unpickle."""
    return b"\x80\x02" + b"".join(ops) + b"]\x86."


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _dtype(spec: str) -> bytes:  # numpy.dtype(spec, False, True), as numpy pickles it
    return _global("numpy", "dtype") + b"U" + bytes([len(spec)]) + spec.encode() + b"\x89\x88\x87R"


def _views(images_are_views: bool, flags_are_views: bool, pairs: int = 1000, size: int = 100_000) -> bytes:
    """A pack around ONE buffer of ``size`` bytes: its 2 * ``pairs`` images and ``pairs`` issame flags are
    either arrays over it made by numpy's _frombuffer (about 20 pickle bytes each) or plain references."""
    view = b"h\x00(h\x01h\x02J" + struct.pack("<i", size) + b"\x85X\x01\x00\x00\x00CtR"  # _frombuffer(...)
    memo = (_global("numpy._core.numeric", "_frombuffer") + b"q\x000"  # memo 0: the function
            + b"B" + struct.pack("<I", size) + b"\x00" * size + b"q\x010"  # memo 1: the buffer
            + _dtype("u1") + b"q\x020")  # memo 2: dtype('u1')
    images = (view if images_are_views else b"h\x01") * (2 * pairs)
    flags = (view if flags_are_views else b"\x88") * pairs
    return b"\x80\x03" + memo + b"](" + images + b"e](" + flags + b"e\x86."


HOSTILE = {
    # bytearray(600000000): 600 MB of zeros from 34 bytes.
    "bytearray": _pack(_global("builtins", "bytearray"), b"J" + struct.pack("<i", 600_000_000), b"\x85R"),
    # numpy scalar of a 600 MB void dtype, zero-filled.
    "scalar": _pack(_global("numpy._core.multiarray", "scalar"), _dtype("V600000000"), b"\x85R"),
    # An object array whose setstate list is shorter than its shape: numpy dereferences garbage (segfault).
    "object_array": _pack(
        b"](", _global("numpy._core.multiarray", "_reconstruct"), _global("numpy", "ndarray"),
        b"K\x00\x85U\x01b\x87R", b"(K\x01K\x05\x85", _dtype("O8"), b"\x89]tb", b"e"),
    # A dtype state that sets the "holds Python objects" flag on raw file bytes (numpy's object code paths
    # would read them as pointers): only a plain dtype's state is accepted.
    "dtype_state": _pack(
        b"](", _global("numpy._core.multiarray", "_reconstruct"), _global("numpy", "ndarray"),
        b"K\x00\x85U\x01b\x87R", b"(K\x01K\x01\x85", _dtype("V8"), b"(K\x03U\x01|NNNK\x08K\x01K\x01tb",
        b"\x89U\x08AAAAAAAAtb", b"e"),
    # hex_codec doubles its input per call: 27 nested calls turn 1 byte into 128 MB.
    "hex_codec": b"\x80\x03" + _global("_codecs", "encode") + b"q\x00" + b"h\x00" * 27 + b"C\x01a"
                 + b"X\x03\x00\x00\x00hex\x86R" * 27 + b"]\x86.",
    # numpy.ndarray called directly: a 600 MB array over a 1-byte buffer (stride 0), twice an image (one pair),
    # each copied out by tobytes().
    "ndarray_call": b"\x80\x02](" + _global("numpy", "ndarray") + b"(J" + struct.pack("<i", 600_000_000)
                    + b"\x85U\x02u1C\x01xK\x00K\x00\x85tRq\x03h\x03e](\x88e\x86.",
    # 2,000 views of one 100 kB buffer as images, each copied out by tobytes(): 200 MB.
    "image_views": _views(images_are_views=True, flags_are_views=False),
    # 1,000 such views as issame flags: np.asarray stacks them into one 100 MB array.
    "flag_views": _views(images_are_views=False, flags_are_views=True),
}
# A valid empty pack whose memo index makes the C unpickler allocate (and zero) a 1.1 GB table.
MEMO_INDEX = b"\x80\x02]r" + struct.pack("<I", 75_000_000) + b"]\x86."


@pytest.mark.parametrize("name", sorted(set(HOSTILE) - {"object_array"}))  # that one crashed: subprocess only
def test_hostile_pack_is_refused_naming_the_file(tmp_path, name):
    path = tmp_path / f"{name}.bin"
    path.write_bytes(HOSTILE[name])
    with pytest.raises(DatasetError, match=f"{name}.bin.*(refusing|more than|issame must be)"):
        load_bin(path, size=112)


MEASURE = """
import json, resource, sys
from engine.data.binpack import load_bin
out = {}
for path in sys.argv[1:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_bin(path, size=112)
        outcome = "loaded"
    except Exception as exc:
        outcome = type(exc).__name__
    out[path] = [outcome, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024]
print(json.dumps(out))
"""


def test_hostile_packs_allocate_little(tmp_path):
    """Peak memory (ru_maxrss, MB) of loading every hostile pack in a fresh process; and no crash."""
    paths = []
    for name, data in {**HOSTILE, "memo_index": MEMO_INDEX}.items():
        paths.append(tmp_path / f"{name}.bin")
        paths[-1].write_bytes(data)
    run = subprocess.run([sys.executable, "-c", MEASURE, *map(str, paths)], capture_output=True, text=True,
                         timeout=120, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    results = json.loads(run.stdout)
    for path in paths:
        outcome, growth_mb = results[str(path)]
        expected = "loaded" if path.stem == "memo_index" else "DatasetError"  # that one is a valid empty pack
        assert outcome == expected, (path.name, outcome)
        assert growth_mb < 32, f"{path.name}: the process grew by {growth_mb} MB"


def test_genuine_packs_still_load(tmp_path):
    from engine.data.standins import write_lfw_bin

    # The stand-in writer reuses one bytes object for an image in several pairs (pickle memo references).
    pairs = load_bin(write_lfw_bin(tmp_path / "lfw.bin", 6, 3, folds=2, per_fold=4), size=16)
    assert len(pairs.issame) == 16 and pairs.issame.any() and not pairs.issame.all()
    images = [_jpeg(s) for s in (10, 60, 120, 200)]
    for protocol in (2, 4):
        path = write_bin(tmp_path / f"p{protocol}.bin", images, [True, False], protocol=protocol)
        pairs = load_bin(path, size=16)
        assert pairs.images.shape == (4, 3, 16, 16) and pairs.issame.tolist() == [True, False]
    # uint8 arrays (numpy's _reconstruct + setstate, or _frombuffer) with high-entropy data, whose protocol-2
    # form (latin1 text as UTF-8) is larger than the data: the allocation bound must not refuse it.
    noise = [os.urandom(50_000) for _ in range(4)]
    for protocol in (2, 5):
        arrays = [np.frombuffer(b, dtype=np.uint8).copy() for b in noise]
        path = tmp_path / f"np{protocol}.bin"
        path.write_bytes(pickle.dumps((arrays, np.array([False, True])), protocol=protocol))
        encoded, same = read_bin(path)
        assert encoded == noise and same.tolist() == [False, True]
