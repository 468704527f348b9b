"""The ``Run`` record that crosses the run store's boundary, and the provenance it carries."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrfr_tui.runsdb.states import FINAL_STATUSES


def git_commit() -> str | None:
    """The lrfr source tree's commit, if it is a git checkout (an installed wheel has none)."""
    src = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass
@dataclass
class Run:
    id: int
    name: str
    preset: str | None
    status: str
    created: float
    started: float | None
    ended: float | None
    exit_code: int | None
    failure_reason: str | None
    host: str | None
    git_commit: str | None
    command: str | None
    step: int
    total_steps: int | None
    run_dir: str | None
    config: dict[str, Any]
    parent_id: int | None = None
    pid: int | None = None
    heartbeat: float | None = None
    launcher: str | None = None
    job_id: str | None = None
    gpus: list[int] | None = None  # physical GPU indices the scheduler gave the run
    gpus_requested: int = 0
    group_name: str | None = None
    log_path: str | None = None
    queue_pos: float | None = None
    deleted: bool = False
    uuid: str | None = None  # the run's identity: its checkpoints carry it (engine.train run_uuid)
    pid_start: int | None = None  # start time of ``pid`` (ticks after boot): tells a recycled pid

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


def result_source_key(source: dict[str, Any] | None) -> str | None:
    """``standin:<size>`` for a synthetic stand-in, ``catalog:<dataset>:<checksum>`` for a catalog dataset;
    None for an unknown source. Two results of one run with the same key measured the same data."""
    if not source or not source.get("kind"):
        return None
    if source["kind"] == "standin":
        return f"standin:{str(source.get('dataset', '')).removeprefix('standin-')}"
    return f"{source['kind']}:{source.get('dataset', '')}:{source.get('checksum') or ''}"
