"""Never lose a run: each fault of benchmarks/faults.py, injected into real processes, as a test.

The scenarios (kill with DataLoader workers, a foreground run racing a scheduler, two resumes, a
held write lock, a full disk, kill -9, a stale runs/ directory, a hard-linked runs.db) live in
``benchmarks/faults.py``, which also prints them as a table; here each must come out right.
"""

from __future__ import annotations

import os

import pytest

from benchmarks import faults


@pytest.fixture
def lab(tmp_path, cache_dir):
    return faults.Lab(tmp_path / "lab", env={"LRFR_CACHE": str(cache_dir)})


@pytest.mark.parametrize("name", [n for n in faults.SCENARIOS if n != "disk_full"])
def test_fault(name, lab):
    outcome = faults.SCENARIOS[name](lab)
    assert outcome.ok, f"{outcome.fault}: expected {outcome.expected}; observed {outcome.observed}\n{outcome.detail}"
    assert outcome.points_lost == 0, outcome.observed


@pytest.mark.skipif(os.geteuid() != 0 or not faults.can_mount_tmpfs(), reason="needs root to mount a small tmpfs")
def test_disk_full(lab):
    outcome = faults.disk_full(lab)
    assert outcome.ok, f"expected {outcome.expected}; observed {outcome.observed}\n{outcome.detail}"
