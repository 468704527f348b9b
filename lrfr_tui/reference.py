"""The paper's published numbers (shipped as ``data/paper_tables.md``) as reference rows.

Each table column maps onto a (benchmark, protocol, metric) of runs.db, with the scale the paper
prints it in, so a user's run can be shown beside - and as a delta to - the matching published row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class Column:
    benchmark: str
    protocol: str
    metric: str
    scale: float  # paper value = stored value * scale (100 for percentages)


@dataclass
class RefTable:
    key: str  # "table1" ...
    title: str
    columns: list[str]
    rows: dict[str, dict[str, float | None]] = field(default_factory=dict)
    cells: dict[str, list[float | None]] = field(default_factory=dict)  # positional (Table 5 repeats "?")


def _scface(protocol: str) -> dict[str, Column]:
    return {"d1": Column("scface", protocol, "rank1_d1", 100), "d2": Column("scface", protocol, "rank1_d2", 100),
            "d3": Column("scface", protocol, "rank1_d3", 100), "avg": Column("scface", protocol, "rank1_mean", 100)}


VERIFICATION = {"LFW": Column("lfw", "insightface_10fold", "acc", 100),
                "XQLFW": Column("xqlfw", "xqlfw_official", "acc", 100)}

# Which stored result each published column is.
COLUMNS: dict[str, dict[str, Column]] = {
    "table1": _scface("finetune"),
    "table2": {f"rank-{k}": Column("tinyface", "finetune", f"rank{k}", 1) for k in (1, 5, 10, 20)},
    "table3": VERIFICATION,
    "table4": {**_scface("zero_shot"), **VERIFICATION},
    "table5": VERIFICATION,
    "table6": {**_scface("zero_shot"), **VERIFICATION},
}

# The published row a preset reproduces, per table.
PRESET_ROWS = {"r34": {"table1": "Ours (Res34)", "table2": "Ours (Res34)", "table3": "Ours (Res34)"},
               "r50": {"table1": "Ours (Res50)", "table2": "Ours (Res50)", "table3": "Ours (Res50)"}}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "-", "–", "?"


@lru_cache(maxsize=1)
def paper_tables() -> dict[str, RefTable]:
    text = (resources.files("lrfr_tui") / "data" / "paper_tables.md").read_text()
    tables: dict[str, RefTable] = {}
    current: RefTable | None = None
    for line in text.splitlines():
        heading = re.match(r"## Table (\d+)\s*[—-]\s*(.*)", line)
        if heading:
            current = RefTable(f"table{heading.group(1)}", heading.group(2).strip(), [])
            tables[current.key] = current
            continue
        if current is None or not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not current.columns:
            current.columns = cells[1:]
            continue
        values = [_number(c) for c in cells[1:]]
        current.cells[cells[0]] = values
        current.rows[cells[0]] = dict(zip(current.columns, values, strict=False))
    _fix_table5(tables.get("table5"))
    return tables


def _fix_table5(table: RefTable | None) -> None:
    """Table 5 is transposed in the paper (lambda across columns): turn it into one row per lambda."""
    if table is None or "XQLFW" not in table.rows:
        return
    rows = {}
    for i, lam in enumerate(table.columns):
        label = f"lambda={lam}" if lam != "?" else f"lambda=? (column {i + 1})"
        rows[label] = {"XQLFW": table.cells["XQLFW"][i], "LFW": table.cells["LFW"][i]}
    table.columns = ["XQLFW", "LFW"]
    table.rows = rows


def reference_row(table: str, label: str) -> dict[str, float | None] | None:
    return paper_tables().get(table, RefTable(table, "", [])).rows.get(label)
