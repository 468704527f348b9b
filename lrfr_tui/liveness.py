"""Is a ``running`` run really running? The one rule, used by every reader of runs.db.

A run's worker records its own end (finished, killed, failed). When the process dies without doing
so (SIGKILL, OOM killer, a power cut) the row would say ``running`` forever; so whoever reads it -
``lrfr ls``/``show``/``resume``, the TUI, the scheduler - checks the process:

- on this host, a recorded pid is authoritative: the run is dead when that pid is gone, a zombie,
  or a recycled pid running something else (``pid_is_worker`` reads /proc);
- with no pid yet (a scheduler claimed the run and is starting it) only the heartbeat tells: dead
  when it is older than ``STALE_HEARTBEAT_S``;
- runs on another host and Slurm jobs are left to the scheduler (it reads their heartbeat, and
  asks Slurm): a job can wait in Slurm's queue for hours without beating.

A dead run's worker may have left ``pending.jsonl`` (the writes runs.db refused when it ended):
the store applies it, so its real final state and last metrics are kept.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

# A heartbeat older than this means the worker is gone (it beats every HEARTBEAT_S = 15 s).
STALE_HEARTBEAT_S = 300.0
LOG_TAIL_LINES = 20


def log_tail(path: str | Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16_384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


LOG_TAIL_MARK = "; log tail:\n"


def death_reason(run: Any, why: str) -> str:
    log = run.log_path or (Path(run.run_dir) / "train.log" if run.run_dir else None)
    tail = log_tail(log)
    return why + (LOG_TAIL_MARK + tail if tail else "")


def reason_headline(reason: str) -> str:
    """A failure reason's first line, without the log tail that ``death_reason`` appends (one line for a
    header or a worker's log)."""
    return reason.split(LOG_TAIL_MARK, 1)[0].splitlines()[0] if reason.strip() else ""


def heartbeat_stale(run: Any, stale_s: float = STALE_HEARTBEAT_S) -> bool:
    return run.heartbeat is None or time.time() - run.heartbeat > stale_s


def presumed_dead(run: Any, stale_s: float = STALE_HEARTBEAT_S) -> str | None:
    """None if ``run`` (status running) may be alive; else why it is not, with its log tail."""
    from lrfr_tui.launchers.local import group_alive, pid_is_worker

    if run.launcher == "slurm" or run.host != socket.gethostname():
        return None  # the scheduler asks Slurm, or reads the heartbeat of a run on another host
    if run.pid is None:
        if heartbeat_stale(run, stale_s):
            return death_reason(run, f"no heartbeat for over {stale_s:.0f} s: the run's process is gone")
        return None
    marker = "lrfr" if run.launcher in ("foreground", "eval") else "lrfr_tui.worker"
    if pid_is_worker(run.pid, run.id, marker=marker, start_ticks=run.pid_start):
        return None
    if run.launcher == "torchrun" and group_alive(run.pid):
        return None  # the agent is gone but some of its ranks still run
    return death_reason(run, "the run's process ended without reporting a final status")


def read_pending(path: Path) -> list[list[Any]]:
    """The writes a worker left in ``pending.jsonl``; a torn last line (a crash mid-write) is dropped."""
    try:
        text = path.read_text()
    except OSError:
        return []
    ops = []
    for line in text.splitlines():
        try:
            ops.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return ops
