"""What the whole run store shares: its error type, where runs.db and the run directories live, and
small SQL helpers."""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.errors import LrfrError

DEFAULT_DB = "runs.db"
# Where a worker leaves what it could not write into runs.db (the store was locked or the disk
# full when it ended): whoever next reads the run applies it (``Store.get_run``).
PENDING_FILE = "pending.jsonl"


class StoreError(LrfrError):
    """runs.db is missing, locked, corrupt or from a newer lrfr."""


def store_error(exc: sqlite3.DatabaseError) -> StoreError:
    """A one-line StoreError for an SQLite error met while querying or writing."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreError(f"runs database is busy ({text}): another process holds its write lock; try again")
    if "readonly" in text:
        return StoreError(f"runs database is read-only ({text})")
    return StoreError(f"runs database error: {text}")


def db_errors(func):
    """Decorator: SQLite errors while querying (locked, corrupt, read-only) become one-line StoreErrors."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise store_error(exc) from None

    return wrapper


def db_path(explicit: str | Path | None = None) -> Path:
    """``--db`` wins, then ``$LRFR_DB``, then ./runs.db."""
    return Path(explicit or os.environ.get("LRFR_DB") or DEFAULT_DB)


def runs_root(db: Path) -> Path:
    """Run directories live in ``runs/`` beside the database."""
    return db.resolve().parent / "runs"


def conn_of(db: Any) -> sqlite3.Connection:
    """The connection under a ``Store`` (or the connection itself)."""
    return getattr(db, "conn", db)


def table_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}  # table: a constant


def dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def chunks(items: Sequence[int], size: int = 500) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
