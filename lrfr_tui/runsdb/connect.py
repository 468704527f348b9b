"""Opening runs.db for reading: never blocks a writer, never modifies a run, works on a read-only copy."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from lrfr_tui.runsdb.base import StoreError
from lrfr_tui.runsdb.migrations import SCHEMA_VERSION
from lrfr_tui.runsdb.store import Store


def read_only_file(path: Path) -> bool:
    """No write bit at all (chmod 444) counts as read-only even for root, who could write anyway."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) or not os.access(path, os.W_OK) \
        or not os.access(path.resolve().parent, os.W_OK)


def open_db(path: str | Path, timeout_s: float = 10.0) -> sqlite3.Connection:
    """A connection for read commands: never blocks a writer (WAL), never modifies a run.

    A writable database opens through ``Store`` (which upgrades an old schema); a read-only file
    (or directory) opens with ``mode=ro`` (or ``immutable=1`` when even that cannot map the WAL
    index) and is checked for its schema version here.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no runs database at {path} (start a run with `lrfr run` or pass --db)")
    if not read_only_file(path):
        return Store(path, timeout_s=timeout_s, create=False).conn
    last: Exception | None = None
    for flags in ("mode=ro", "immutable=1"):
        try:
            conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{flags}", uri=True, timeout=timeout_s,
                                   isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            version = schema_version(conn)
        except sqlite3.DatabaseError as exc:
            last = exc
            continue
        if version is None:
            raise StoreError(f"{path} is not an lrfr runs database")
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path} was written by a newer lrfr (schema {version}, this lrfr knows "
                             f"{SCHEMA_VERSION}); upgrade lrfr to open it")
        return conn
    raise StoreError(f"cannot open runs database {path} read-only: {last}")


def schema_version(conn: sqlite3.Connection) -> int | None:
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
        return None
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else None
