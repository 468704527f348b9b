"""The paper's table layout for a group of runs: one row per configuration (mean +- std over
seeds), and the published numbers as labelled reference rows with each configuration's delta.

Values stay in runs.db units (fractions); ``lrfr_tui.reference`` knows the paper's scale.

Every reference row says the architecture it was trained with (``ReferenceRow.arch``; in the label too for
the "Ours" rows a preset run is paired with). A preset run is compared (a delta) with the paper's "Ours"
rows only when its model is their architecture: ``r34-code`` (ResNet34 as released) with "Ours (Res34)",
``r50`` (IResNet-50 = IR-50) with "Ours (Res50)"; an ``r34`` run (IResNet-34) sees "Ours (Res34)" labelled
with its architecture, without a delta.
"""

from __future__ import annotations

import math
import sqlite3
import statistics
from dataclasses import dataclass, field

from engine.errors import LrfrError
from lrfr_tui.reference import ARCH_MODELS, PRESET_ROWS, paper_tables, row_columns
from lrfr_tui.results_table import STANDIN_LEGEND, STANDIN_VS_PAPER, Column, Matrix
from lrfr_tui.runsdb import groups
from lrfr_tui.significance import (
    SIGNIFICANCE_LEGEND,
    CellUncertainty,
    Comparison,
    compare_to_baseline,
    pooled_interval,
)


@dataclass
class ConfigRow(CellUncertainty):
    label: str
    run_ids: list[int]
    mean: list[float | None]
    std: list[float | None]  # sample std over seeds (None with a single run)
    reference: str | None = None  # the published row this configuration reproduces
    delta: list[float | None] = field(default_factory=list)  # mean - published (fractions)
    # 95% interval per column: the run's stored one, or the pooled items' of several seeds (significance.py)
    intervals: list[tuple[float, float] | None] = field(default_factory=list)
    # Per column, rows other than the baseline: McNemar against the baseline configuration's runs
    significance: list[Comparison | None] = field(default_factory=list)


@dataclass
class ReferenceRow:
    label: str
    values: list[float | None]  # fractions, aligned with the matrix columns
    arch: str = ""  # the architecture the published row was trained with
    sources: list[str] = field(default_factory=list)  # "table1: Ours (Res34)" ... the published rows used


@dataclass
class PaperTable:
    table: str | None  # "table4" ... when the group is one of the paper's tables
    columns: list[Column]
    rows: list[ConfigRow]
    references: list[ReferenceRow]
    # Columns holding a value measured on a synthetic stand-in: marked, and never given a delta to the paper.
    standin: set[int] = field(default_factory=set)
    baseline: str | None = None  # the configuration the others are tested against

    def legend(self) -> list[str]:
        lines = []
        if self.standin:
            lines.append(STANDIN_LEGEND + (STANDIN_VS_PAPER + "; no delta is computed for them"
                                           if self.references else ""))
        if any(any(r.intervals) for r in self.rows):
            lines.append(SIGNIFICANCE_LEGEND.replace("the baseline row", f"the {self.baseline!r} row"))
        return lines

    def as_dict(self) -> dict:
        return {"table": self.table,
                "columns": [c.spec for c in self.columns],
                "baseline": self.baseline,
                "rows": [{"label": r.label, "runs": r.run_ids, "mean": r.mean, "std": r.std,
                          "ci95": [list(b) if b else None for b in r.intervals],
                          "vs_baseline": [t.as_dict() if t else None for t in r.significance] or None,
                          "reference": r.reference, "delta_to_paper": r.delta} for r in self.rows],
                "standin_columns": [c.spec for j, c in enumerate(self.columns) if j in self.standin],
                "reference_rows": [{"label": r.label, "arch": r.arch, "sources": r.sources, "values": r.values}
                                   for r in self.references]}


def group_table_key(conn: sqlite3.Connection, group: str) -> str | None:
    """The paper table a group reproduces, from the ``ablation:tableN`` tag `lrfr ablate` sets."""
    tag = groups.group_tag(conn, group, "ablation:")
    return tag.split(":", 1)[1] if tag else None


def _aligned(table: str, label: str, values: dict[str, float | None], columns: list[Column]) -> list[float | None]:
    """A published row's values (paper units) placed under the matrix columns they correspond to."""
    out: list[float | None] = []
    mapping = row_columns(table, label)
    for col in columns:
        value = None
        for name, ref in mapping.items():
            same = (ref.benchmark, ref.metric) == (col.benchmark, col.metric) and col.resolution is None
            if same and (col.protocol in (None, ref.protocol)) and values.get(name) is not None:
                value = values[name] / ref.scale
        out.append(value)
    return out


def paper_table(conn: sqlite3.Connection, matrix: Matrix, group: str | None,
                against: str | None = None) -> PaperTable:
    """The group's table; significance against the configuration labelled ``against`` (default: Baseline)."""
    table = group_table_key(conn, group) if group else None
    by_label: dict[str, list[int]] = {}
    for i, row in enumerate(matrix.rows):
        by_label.setdefault(row.name, []).append(i)
    runs = {run_id: (preset, _model_name(config))
            for run_id, (preset, config) in groups.presets_and_configs(conn, [r.id for r in matrix.rows]).items()}
    published = paper_tables()
    standin = matrix.standin_columns()
    rows: list[ConfigRow] = []
    used: dict[tuple[tuple[str, str], ...], ReferenceRow] = {}
    for label, indices in by_label.items():
        mean, std = [], []
        for j in range(len(matrix.columns)):
            values = [matrix.rows[i].values[j] for i in indices]
            values = [v for v in values if v is not None and math.isfinite(v)]
            mean.append(statistics.fmean(values) if values else None)
            std.append(statistics.stdev(values) if len(values) > 1 else None)
        preset, model = runs.get(matrix.rows[indices[0]].id, (None, None))
        sources, compared, by_config = _reference_for(table, label, preset, model, published)
        row = ConfigRow(label, [matrix.rows[i].id for i in indices], mean, std)
        if sources:
            key = tuple(sources)
            if key not in used:
                used[key] = _reference_row(sources, matrix.columns, published, arch_in_label=not by_config)
            if compared:
                row.reference = used[key].label
                # A stand-in number is never compared with a published (real-benchmark) one.
                row.delta = [None if m is None or p is None or j in standin else m - p
                             for j, (m, p) in enumerate(zip(mean, used[key].values, strict=True))]
        rows.append(row)
    refs = [r for r in used.values() if any(v is not None for v in r.values)]
    baseline = _add_uncertainty(conn, matrix, rows, against)
    return PaperTable(table, matrix.columns, rows, refs, standin, baseline)


BASELINE_LABEL = "Baseline"


def _add_uncertainty(conn: sqlite3.Connection, matrix: Matrix, rows: list[ConfigRow],
                     against: str | None = None) -> str | None:
    """Intervals for every row and significance against the baseline configuration (``against``, else the
    one labelled "Baseline", as in the paper's Table 4, else the first row); returns the baseline's label."""
    if not rows:
        return None
    labels = [r.label for r in rows]
    if against is not None and against not in labels:
        raise LrfrError(f"--against {against!r}: no such configuration in this table; "
                        f"choose one of: {', '.join(labels)}")
    stored = {r.id: r for r in matrix.rows}
    for row in rows:
        for j, col in enumerate(matrix.columns):
            if len(row.run_ids) == 1:
                row.intervals.append(stored[row.run_ids[0]].interval(j))
            else:
                row.intervals.append(pooled_interval(conn, row.run_ids, col.benchmark, col.protocol, col.metric,
                                                     col.resolution))
    base = next((r for r in rows if r.label == (against or BASELINE_LABEL)), rows[0])
    if len(rows) > 1:
        for row in rows:
            if row is not base:
                row.significance = [compare_to_baseline(conn, row.run_ids, base.run_ids, c.benchmark, c.protocol,
                                                        c.metric, c.resolution) for c in matrix.columns]
    return base.label


def _model_name(config: dict) -> str | None:
    model = config.get("model")
    return model.get("name") if isinstance(model, dict) else None


def _reference_row(sources: list[tuple[str, str]], columns: list[Column], published,
                   arch_in_label: bool) -> ReferenceRow:
    """One reference row from one or more published rows of one model (e.g. "Ours (Res34)" of Tables 1-3 and
    Table 1's "w/o fine-tuning" of the same model): each fills the columns it maps to, the first one wins.
    Labelled with the first row's name and the tables that filled a column."""
    values: list[float | None] = [None] * len(columns)
    filled_by: list[tuple[str, str]] = []
    for ref_table, ref_label in sources:
        aligned = _aligned(ref_table, ref_label, published[ref_table].rows[ref_label], columns)
        for j, v in enumerate(aligned):
            if v is not None and values[j] is None:
                values[j] = v
                if (ref_table, ref_label) not in filled_by:
                    filled_by.append((ref_table, ref_label))
    filled_by = filled_by or sources[:1]
    arch = published[sources[0][0]].arch.get(sources[0][1], "")
    tables = ", ".join(dict.fromkeys(t[5:] for t, _ in filled_by))
    label = f"paper {tables}: {sources[0][1]}" + (f" [{arch}]" if arch_in_label and arch else "")
    return ReferenceRow(label, values, arch, [f"{t}: {lab}" for t, lab in filled_by])


def _reference_for(table: str | None, label: str, preset: str | None, model: str | None,
                   published) -> tuple[list[tuple[str, str]], bool, bool]:
    """The published rows a configuration is shown with, whether it is compared with them (a delta), and
    whether they were found by configuration (an ablation group) rather than by the run's preset.

    In one of the paper's ablation groups: the row of the same configuration. Otherwise the "Ours" rows
    of the run's preset, compared only when the run's model is the architecture they were trained with.
    """
    if table and table in published and label in published[table].rows:
        return [(table, label)], True, True
    if table == "table5":
        key = f"lambda={label.split('=', 1)[-1]}"
        if key in published["table5"].rows:
            return [("table5", key)], True, True
    sources = [(t, lab) for t, lab in PRESET_ROWS.get(preset or "", [])
               if t in published and lab in published[t].rows]
    if not sources:
        return [], False, False
    arch = published[sources[0][0]].arch.get(sources[0][1], "")
    return sources, model is not None and ARCH_MODELS.get(arch) == model, False


def attach_references(conn: sqlite3.Connection, matrix: Matrix, group: str | None) -> Matrix:
    """Add the matching published rows to a per-run matrix (for exports and the TUI's board)."""
    from lrfr_tui.results_table import MatrixRow

    if matrix.rows and matrix.columns:
        layout = paper_table(conn, matrix, group)
        matrix.references = [MatrixRow(0, ref.label, ref.values) for ref in layout.references]
    return matrix


def group_baseline_run(conn: sqlite3.Connection, group: str | None) -> int | None:
    """The run a group's per-run tables (exports, the TUI's board) test the others against: its oldest
    finished run of the "Baseline" configuration; None without one."""
    if not group:
        return None
    return groups.first_evaluated_run(conn, group, BASELINE_LABEL)


def group_in_filter(text: str) -> str | None:
    """The group a filter line selects (``group=NAME``), if any: its runs get their paper table's rows."""
    for token in text.split():
        if token.startswith("group="):
            return token.split("=", 1)[1].strip('"') or None
    return None
