"""The paper's table layout for a group of runs: one row per configuration (mean +- std over
seeds), and the published numbers as labelled reference rows with each configuration's delta.

Values stay in runs.db units (fractions); ``lrfr_tui.reference`` knows the paper's scale.
"""

from __future__ import annotations

import math
import sqlite3
import statistics
from dataclasses import dataclass, field

from lrfr_tui.query import Column, Matrix
from lrfr_tui.reference import COLUMNS, PRESET_ROWS, paper_tables


@dataclass
class ConfigRow:
    label: str
    run_ids: list[int]
    mean: list[float | None]
    std: list[float | None]  # sample std over seeds (None with a single run)
    reference: str | None = None  # the published row this configuration reproduces
    delta: list[float | None] = field(default_factory=list)  # mean - published (fractions)


@dataclass
class ReferenceRow:
    label: str
    values: list[float | None]  # fractions, aligned with the matrix columns


@dataclass
class PaperTable:
    table: str | None  # "table4" ... when the group is one of the paper's tables
    columns: list[Column]
    rows: list[ConfigRow]
    references: list[ReferenceRow]

    def as_dict(self) -> dict:
        return {"table": self.table,
                "columns": [c.spec for c in self.columns],
                "rows": [{"label": r.label, "runs": r.run_ids, "mean": r.mean, "std": r.std,
                          "reference": r.reference, "delta_to_paper": r.delta} for r in self.rows],
                "reference_rows": [{"label": r.label, "values": r.values} for r in self.references]}


def group_table_key(conn: sqlite3.Connection, group: str) -> str | None:
    """The paper table a group reproduces, from the ``ablation:tableN`` tag `lrfr ablate` sets."""
    row = conn.execute(
        "SELECT t.tag FROM tags t JOIN runs r ON r.id = t.run_id WHERE r.group_name = ? AND t.tag LIKE 'ablation:%' "
        "LIMIT 1", (group,)).fetchone()
    return row[0].split(":", 1)[1] if row else None


def _aligned(table: str, values: dict[str, float | None], columns: list[Column]) -> list[float | None]:
    """A published row's values (paper units) placed under the matrix columns they correspond to."""
    out: list[float | None] = []
    mapping = COLUMNS.get(table, {})
    for col in columns:
        value = None
        for name, ref in mapping.items():
            same = (ref.benchmark, ref.metric) == (col.benchmark, col.metric) and col.resolution is None
            if same and (col.protocol in (None, ref.protocol)) and values.get(name) is not None:
                value = values[name] / ref.scale
        out.append(value)
    return out


def paper_table(conn: sqlite3.Connection, matrix: Matrix, group: str | None) -> PaperTable:
    table = group_table_key(conn, group) if group else None
    by_label: dict[str, list[int]] = {}
    for i, row in enumerate(matrix.rows):
        by_label.setdefault(row.name, []).append(i)
    presets = dict(conn.execute(
        f"SELECT id, preset FROM runs WHERE id IN ({','.join('?' * len(matrix.rows))})",
        [r.id for r in matrix.rows]).fetchall()) if matrix.rows else {}
    published = paper_tables()
    rows: list[ConfigRow] = []
    used: dict[tuple[str, str], ReferenceRow] = {}
    for label, indices in by_label.items():
        mean, std = [], []
        for j in range(len(matrix.columns)):
            values = [matrix.rows[i].values[j] for i in indices]
            values = [v for v in values if v is not None and math.isfinite(v)]
            mean.append(statistics.fmean(values) if values else None)
            std.append(statistics.stdev(values) if len(values) > 1 else None)
        ref_table, ref_label = _reference_for(table, label, presets.get(matrix.rows[indices[0]].id), published)
        row = ConfigRow(label, [matrix.rows[i].id for i in indices], mean, std)
        if ref_table is not None:
            key = (ref_table, ref_label)
            if key not in used:
                aligned = _aligned(ref_table, published[ref_table].rows[ref_label], matrix.columns)
                used[key] = ReferenceRow(f"paper {ref_table[5:]}: {ref_label}", aligned)
            row.reference = used[key].label
            row.delta = [None if m is None or p is None else m - p for m, p in zip(mean, used[key].values, strict=True)]
        rows.append(row)
    refs = [r for r in used.values() if any(v is not None for v in r.values)]
    return PaperTable(table, matrix.columns, rows, refs)


def _reference_for(table: str | None, label: str, preset: str | None, published) -> tuple[str | None, str]:
    if table and table in published and label in published[table].rows:
        return table, label
    if table == "table5":
        key = f"lambda={label.split('=', 1)[-1]}"
        if key in published["table5"].rows:
            return "table5", key
    for ref_table, ref_label in PRESET_ROWS.get(preset or "", {}).items():
        if ref_table == "table3":  # LFW and XQLFW: the columns every preset run reports
            return ref_table, ref_label
    return None, ""


def attach_references(conn: sqlite3.Connection, matrix: Matrix, group: str | None) -> Matrix:
    """Add the matching published rows to a per-run matrix (for exports and the TUI's board)."""
    from lrfr_tui.query import MatrixRow

    if matrix.rows and matrix.columns:
        layout = paper_table(conn, matrix, group)
        matrix.references = [MatrixRow(0, ref.label, ref.values) for ref in layout.references]
    return matrix


def group_in_filter(text: str) -> str | None:
    """The group a filter line selects (``group=NAME``), if any: its runs get their paper table's rows."""
    for token in text.split():
        if token.startswith("group="):
            return token.split("=", 1)[1].strip('"') or None
    return None
