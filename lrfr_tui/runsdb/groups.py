"""Reads about groups of runs (a sweep, an ablation grid): their runs, the paper table they reproduce,
the configurations and seeds they already hold."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lrfr_tui.runsdb.base import chunks, conn_of

if TYPE_CHECKING:
    from lrfr_tui.runsdb.store import Store


def group_run_ids(db: sqlite3.Connection | Store, group: str) -> list[int]:
    """The group's non-deleted runs, oldest first."""
    return [r[0] for r in conn_of(db).execute(
        "SELECT id FROM runs WHERE group_name=? AND deleted=0 ORDER BY id", (group,))]


def group_tag(db: sqlite3.Connection | Store, group: str, prefix: str) -> str | None:
    """The first tag starting with ``prefix`` (e.g. ``ablation:``) on any run of the group, if any."""
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    row = conn_of(db).execute(
        "SELECT t.tag FROM tags t JOIN runs r ON r.id = t.run_id WHERE r.group_name = ? "
        "AND t.tag LIKE ? ESCAPE '\\' LIMIT 1", (group, pattern)).fetchone()
    return row[0] if row else None


def first_evaluated_run(db: sqlite3.Connection | Store, group: str, name: str) -> int | None:
    """The group's oldest non-deleted run called ``name`` that has results."""
    row = conn_of(db).execute(
        "SELECT r.id FROM runs r WHERE r.group_name = ? AND r.name = ? AND r.deleted = 0 "
        "AND EXISTS (SELECT 1 FROM results WHERE run_id = r.id) ORDER BY r.id LIMIT 1", (group, name)).fetchone()
    return int(row[0]) if row else None


def configurations_and_seeds(db: sqlite3.Connection | Store, group: str,
                             statuses: Sequence[str]) -> set[tuple[str, int]]:
    """(run name, train.seed) of the group's non-deleted runs in one of ``statuses``."""
    rows = conn_of(db).execute(
        "SELECT r.name, p.value FROM runs r JOIN params p ON p.run_id = r.id AND p.key = 'train.seed' "
        f"WHERE r.group_name = ? AND r.deleted = 0 AND r.status IN ({', '.join('?' * len(statuses))})",
        (group, *statuses))
    return {(name, int(json.loads(value))) for name, value in rows}


def presets_and_configs(db: sqlite3.Connection | Store, run_ids: Sequence[int]) -> dict[int, tuple[str | None, dict[str, Any]]]:
    """run id -> (preset, resolved config)."""
    out: dict[int, tuple[str | None, dict[str, Any]]] = {}
    for chunk in chunks(list(run_ids)):
        for run_id, preset, config in conn_of(db).execute(
                f"SELECT id, preset, config FROM runs WHERE id IN ({','.join('?' * len(chunk))})", list(chunk)):
            try:
                resolved = json.loads(config or "{}")
            except ValueError:  # a hand-edited row: show the run without its config rather than fail
                resolved = {}
            out[run_id] = (preset, resolved if isinstance(resolved, dict) else {})
    return out
