"""The paper's published numbers (shipped as ``data/paper_tables.md``) as reference rows.

Each table column maps onto a (benchmark, protocol, metric) of runs.db, with the scale the paper
prints it in, so a user's run can be shown beside - and as a delta to - the matching published row.

Every row carries the architecture it was trained with (``RefTable.arch``): the paper's "Res34" is the
released code's torchvision-style ``ResNet34`` (``model/resnet.py`` of hurricanelx/LRFR; preset ``r34-code``),
not insightface's IResNet-34 (preset ``r34``), and its "Res50" is ``LResNet50E_IR`` (IR-50, preset ``r50``).
A run gets a delta to an "Ours" row only when it was trained with that row's architecture.

SCface "w/o fine-tuning" numbers (Table 1's "Ours (w/o fine-tuning)", Tables 4 and 6) are on the 80 test
ids of the DCR split, the ``zero_shot`` protocol; nothing published maps to ``zero_shot_all130``.
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
    arch: dict[str, str] = field(default_factory=dict)  # row label -> the architecture it was trained with


def _scface(protocol: str) -> dict[str, Column]:
    return {"d1": Column("scface", protocol, "rank1_d1", 100), "d2": Column("scface", protocol, "rank1_d2", 100),
            "d3": Column("scface", protocol, "rank1_d3", 100), "avg": Column("scface", protocol, "rank1_mean", 100)}


VERIFICATION = {"LFW": Column("lfw", "insightface_10fold", "acc", 100),
                "XQLFW": Column("xqlfw", "xqlfw_official", "acc", 100)}

# SCface protocols (engine.data.scface): the paper's "w/o fine-tuning" is zero_shot, on the 80 DCR test ids.
ZERO_SHOT, FINETUNE, ZERO_SHOT_ALL = "zero_shot", "finetune", "zero_shot_all130"

# Which stored result each published column is.
COLUMNS: dict[str, dict[str, Column]] = {
    "table1": _scface(FINETUNE),
    "table2": {f"rank-{k}": Column("tinyface", "finetune", f"rank{k}", 1) for k in (1, 5, 10, 20)},
    "table3": VERIFICATION,
    "table4": {**_scface(ZERO_SHOT), **VERIFICATION},
    "table5": VERIFICATION,
    "table6": {**_scface(ZERO_SHOT), **VERIFICATION},
}
# Rows whose columns mean something else than their table's: Table 1's "w/o fine-tuning" row is zero-shot.
WITHOUT_FINETUNING = "Ours (w/o fine-tuning)"
ROW_COLUMNS: dict[tuple[str, str], dict[str, Column]] = {("table1", WITHOUT_FINETUNING): _scface(ZERO_SHOT)}

# The architectures the paper's rows were trained with, and the engine model that is that architecture.
ARCH_RES34 = "ResNet34 (released code)"  # torchvision-style, hurricanelx/LRFR model/resnet.py
ARCH_RES50 = "IR-50 (LResNet50E_IR)"  # the released SCface_eval.py imports model.LResNet.LResNet50E_IR
ARCH_MODELS = {ARCH_RES34: "resnet34", ARCH_RES50: "iresnet50"}
# Tables 4-6 are the paper's own ResNet34 ablations on CASIA-WebFace (trained with its released code).
TABLE_ARCH = {"table4": ARCH_RES34, "table5": ARCH_RES34, "table6": ARCH_RES34}
OURS_ARCH = {"Ours (Res34)": ARCH_RES34, WITHOUT_FINETUNING: ARCH_RES34, "Ours (Res50)": ARCH_RES50}

# The published "Ours" rows a preset's recipe reproduces, (table, row) in the paper's order. A run is
# compared with them (a delta) only when its model is the rows' architecture (``ARCH_MODELS``): ``r34`` is
# insightface's IResNet-34, not the paper's ResNet34, so its rows are shown labelled, without a delta.
PRESET_ROWS: dict[str, list[tuple[str, str]]] = {
    "r34-code": [("table1", "Ours (Res34)"), ("table1", WITHOUT_FINETUNING), ("table2", "Ours (Res34)"),
                 ("table3", "Ours (Res34)")],
    "r34": [("table1", "Ours (Res34)"), ("table1", WITHOUT_FINETUNING), ("table2", "Ours (Res34)"),
            ("table3", "Ours (Res34)")],
    "r50": [("table1", "Ours (Res50)"), ("table2", "Ours (Res50)"), ("table3", "Ours (Res50)")],
}


def row_arch(table: str, label: str) -> str:
    """The architecture a published row was trained with, as this tool labels it.

    The paper's own rows: ``ARCH_RES34`` / ``ARCH_RES50``. Other methods: the backbone their label names
    ("DDL (Res50, 2020)" -> "Res50 (as cited)"), else "not stated".
    """
    if label in OURS_ARCH:
        return OURS_ARCH[label]
    if table in TABLE_ARCH:
        return TABLE_ARCH[table]
    named = re.search(r"\b(Res\d+)\b", label)
    return f"{named.group(1)} (as cited)" if named else "not stated"


def row_columns(table: str, label: str) -> dict[str, Column]:
    """Which stored result each column of one published row is."""
    return ROW_COLUMNS.get((table, label), COLUMNS.get(table, {}))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "-", "–", "?"


@lru_cache(maxsize=1)
def paper_tables() -> dict[str, RefTable]:
    return parse_tables((resources.files("lrfr_tui") / "data" / "paper_tables.md").read_text())


def parse_tables(text: str) -> dict[str, RefTable]:
    """The ``## Table N`` sections of a paper-tables markdown file (rows labelled with their architecture)."""
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
    for table in tables.values():
        table.arch = {label: row_arch(table.key, label) for label in table.rows}
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
