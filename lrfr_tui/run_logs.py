"""A run's log file: where it is, its last lines, following it as it grows (`lrfr logs -f`, the TUI)."""

from __future__ import annotations

import codecs
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lrfr_tui.runsdb import FINAL_STATUSES, Store, run_ref, runs_root
from lrfr_tui.runsdb.base import conn_of


def log_candidates(db_file: Path, run: dict[str, Any]) -> list[Path]:
    """Where a run's log may be: runs.log_path, then runs/<id>/train.log, then its run_dir, then eval.log."""
    out: list[Path] = []
    if run.get("log_path"):
        out.append(Path(run["log_path"]))
    root = runs_root(db_file) / str(run["id"])
    out.append(root / "train.log")
    if run.get("run_dir"):
        out.append(Path(run["run_dir"]) / "train.log")
    out.append(root / "eval.log")
    if run.get("run_dir"):
        out.append(Path(run["run_dir"]) / "eval.log")
    return list(dict.fromkeys(out))


def log_file(db_file: Path, run: dict[str, Any]) -> Path | None:
    for path in log_candidates(db_file, run):
        if path.is_file():
            return path
    return None


def tail_lines(path: Path, n: int, block: int = 65536) -> list[str]:
    """The last ``n`` lines of a file, reading backwards from its end."""
    if n <= 0:
        return []
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= n:
            start = max(0, end - block)
            fh.seek(start)
            data = fh.read(end - start) + data
            end = start
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-n:]


def follow_log(db: sqlite3.Connection | Store, db_file: Path, run_id: int, start: int = 0,
               interval: float = 0.5, grace: float = 1.0, sleep=time.sleep) -> Iterator[str]:
    """Yield the run's log text from byte ``start`` on, as it grows, until the run is in a final state.

    The log may not exist yet (a queued run); a truncated log is read again from its start. After
    the run's status becomes final, reading goes on until the log has been quiet for ``grace`` s
    (the worker writes its last lines just after the status).
    """
    conn = conn_of(db)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pos, path, final_since, first = start, None, None, True
    while True:
        run = run_ref(conn, run_id)
        was_final, first = first and run["status"] in FINAL_STATUSES, False
        if path is None or (run.get("log_path") and Path(run["log_path"]) != path and Path(run["log_path"]).exists()):
            path = log_file(db_file, run)
        chunk = ""
        if path is not None:
            try:
                size = path.stat().st_size
                if size < pos:
                    pos = 0
                if size > pos:
                    with path.open("rb") as fh:
                        fh.seek(pos)
                        data = fh.read(size - pos)
                    pos += len(data)
                    chunk = decoder.decode(data)
            except FileNotFoundError:
                path = None
        if chunk:
            yield chunk
        if run["status"] in FINAL_STATUSES:
            final_since = final_since or time.monotonic()
            if was_final or (not chunk and time.monotonic() - final_since >= grace):
                rest = decoder.decode(b"", final=True)
                if rest:
                    yield rest
                return
        sleep(interval)
