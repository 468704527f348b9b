"""The results matrix: runs x (benchmark, protocol, metric, resolution), like the paper's tables."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import LrfrError
from lrfr_tui.display import better_direction, format_value
from lrfr_tui.runsdb import Store, check_runs, db_errors, latest_results, latest_sources, run_ref, select_runs
from lrfr_tui.runsdb.base import conn_of
from lrfr_tui.runsdb.filters import (
    Filter,
    FilterError,
    Term,
    find_at,
    parse_filter,
    parse_term,
    quote_part,
    unquote,
)
from lrfr_tui.runsdb.reads import run_names
from lrfr_tui.runsdb.result_keys import (
    BENCH_LABELS,
    BENCH_ORDER,
    FALLBACK_HEADLINE,
    HEADLINE,
    METRIC_LABELS,
    ResultKey,
    bench_kind,
    pick_key,
    protocol_rank,
    result_sort_key,
)
from lrfr_tui.significance import SIGNIFICANCE_LEGEND, CellUncertainty, Comparison, compare_to_baseline

# A result measured on a synthetic stand-in: its column's benchmark label carries this mark, explained by
# STANDIN_LEGEND under every table (never a stand-in number shown as an LFW number).
STANDIN_MARK = "\u2020"
STANDIN_LEGEND = f"{STANDIN_MARK} synthetic stand-in, not the real benchmark"
STANDIN_VS_PAPER = " (the published rows are numbers on the real benchmark: not comparable)"


@dataclass(frozen=True)
class Column:
    """One matrix column: a result term; ``exact`` = protocol and resolution are both as given."""

    benchmark: str
    protocol: str | None
    metric: str
    resolution: int | None
    exact: bool = True

    @property
    def spec(self) -> str:
        text = ".".join(quote_part(p) for p in (self.benchmark, self.protocol, self.metric) if p)
        return text + (f"@{self.resolution}" if self.resolution is not None else "")

    @property
    def short(self) -> str:
        label = METRIC_LABELS.get(self.metric, self.metric)
        if self.resolution is None:
            return label
        res = "HR" if self.resolution >= 112 else f"{self.resolution} px"
        return res if self.metric == "acc" else f"{label} {res}"

    def key(self, results: dict[ResultKey, float]) -> ResultKey | None:
        """The result of one run this column shows (None: it has none)."""
        if self.exact:
            key = (self.benchmark, self.protocol or "", self.metric, self.resolution)
            return key if key in results else None
        return pick_key(results, Term("result", self.metric, benchmark=self.benchmark, protocol=self.protocol,
                                      resolution=self.resolution))

    def value(self, results: dict[ResultKey, float]) -> float | None:
        key = self.key(results)
        return None if key is None else results[key]


@dataclass
class MatrixRow(CellUncertainty):
    id: int
    name: str
    values: list[float | None]
    deltas: list[float | None] | None = None
    baseline: bool = False
    # Per cell: the kind of data its value was measured on ('standin', 'catalog'; None: unknown or no value).
    sources: list[str | None] = field(default_factory=list)
    # Per cell: the stored 95% bootstrap interval (lo, hi) of the value, where the benchmark reports one.
    intervals: list[tuple[float, float] | None] = field(default_factory=list)
    # Per cell (rows other than the baseline, with a baseline): the paired test against the baseline run.
    significance: list[Comparison | None] = field(default_factory=list)


@dataclass
class Matrix:
    columns: list[Column]
    rows: list[MatrixRow]
    baseline: int | None = None
    # Published numbers shown after the runs (see paper_layout.attach_references); never "best".
    references: list[MatrixRow] = field(default_factory=list)

    def standin_columns(self) -> set[int]:
        """Columns where some shown run value was measured on a synthetic stand-in."""
        return {j for j in range(len(self.columns))
                if any(len(r.sources) > j and r.sources[j] == "standin" for r in self.rows)}

    def legend(self) -> list[str]:
        """Lines to print under the table: what the stand-in mark means (none without stand-in values), and
        what intervals and significance marks mean (where the table shows them)."""
        lines = [STANDIN_LEGEND + (STANDIN_VS_PAPER if self.references else "")] if self.standin_columns() else []
        if self.has_uncertainty():
            against = next((f"run {r.id} ({r.name})" for r in self.rows if r.baseline), None)
            lines.append(SIGNIFICANCE_LEGEND.replace("the baseline row", against) if against
                         else SIGNIFICANCE_LEGEND.split("; *")[0])
        return lines

    def has_uncertainty(self) -> bool:
        return any(r.intervals and any(r.intervals) for r in self.rows)


    def group_labels(self) -> list[str]:
        """Benchmark label per column, with the protocol where a benchmark shows several, marked with
        STANDIN_MARK where a shown value of the column comes from a synthetic stand-in."""
        protocols: dict[str, set[str | None]] = {}
        for col in self.columns:
            protocols.setdefault(col.benchmark, set()).add(col.protocol)
        standin = self.standin_columns()
        return [BENCH_LABELS.get(c.benchmark, c.benchmark) + (STANDIN_MARK if j in standin else "")
                + (f" ({c.protocol})" if c.protocol and len(protocols[c.benchmark]) > 1 else "")
                for j, c in enumerate(self.columns)]

    def row_source(self, row: MatrixRow) -> str:
        """A row's data sources for the CSV ``source`` column: ``lfw=standin scface=catalog`` (per benchmark
        shown; ``unknown`` for values stored before sources were recorded)."""
        kinds: dict[str, str] = {}
        for j, col in enumerate(self.columns):
            if row.values[j] is None:
                continue
            kind = (row.sources[j] if len(row.sources) > j else None) or "unknown"
            previous = kinds.get(col.benchmark)
            kinds[col.benchmark] = kind if previous in (None, kind) else "mixed"
        return " ".join(f"{b}={k}" for b, k in kinds.items())

    def labels(self) -> list[str]:
        return [f"{g} {c.short}" for g, c in zip(self.group_labels(), self.columns, strict=True)]

    def row_labels(self) -> list[str]:
        """Run names, with ``#id`` where a name repeats."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.name] = counts.get(row.name, 0) + 1
        return [row.name if counts[row.name] == 1 else f"{row.name} #{row.id}" for row in self.rows]

    def best(self) -> list[set[int]]:
        """Per column, the row indices holding the best displayed value (none where no direction)."""
        out = []
        for j, col in enumerate(self.columns):
            direction = better_direction(col.metric)
            shown = {i: format_value(col.metric, row.values[j]) for i, row in enumerate(self.rows)
                     if row.values[j] is not None and math.isfinite(row.values[j])}
            if not direction or not shown:
                out.append(set())
                continue
            best_i = (max if direction > 0 else min)(shown, key=lambda i, j=j: self.rows[i].values[j])
            out.append({i for i, text in shown.items() if text == shown[best_i]})
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline,
                "columns": [{"benchmark": c.benchmark, "protocol": c.protocol, "metric": c.metric,
                             "resolution": c.resolution, "spec": c.spec, "label": label,
                             "standin": j in self.standin_columns()}
                            for j, (c, label) in enumerate(zip(self.columns, self.labels(), strict=True))],
                "rows": [{"id": r.id, "name": r.name, "baseline": r.baseline, "values": r.values,
                          "sources": r.sources, "ci95": [list(b) if b else None for b in r.intervals],
                          **({"deltas": r.deltas} if r.deltas is not None else {}),
                          **({"vs_baseline": [t.as_dict() if t else None for t in r.significance]}
                             if r.significance else {})}
                         for r in self.rows],
                "legend": self.legend()}


def _bench_rank(bench: str) -> tuple[int, str]:
    return (BENCH_ORDER.index(bench) if bench in BENCH_ORDER else len(BENCH_ORDER), bench)


def headline_columns(results: dict[int, dict[ResultKey, float]], benches: Sequence[str] | None = None) -> list[Column]:
    """The paper-table columns present among these runs' results."""
    present: dict[str, set[tuple[str, str, int | None]]] = {}
    for run_results in results.values():
        for bench, protocol, metric, res in run_results:
            present.setdefault(bench, set()).add((protocol, metric, res))
    wanted = list(benches) if benches else sorted(present, key=_bench_rank)
    columns: list[Column] = []
    for bench in wanted:
        triples = present.get(bench, set())
        metrics, single = HEADLINE.get(bench_kind(bench), (FALLBACK_HEADLINE, False))
        protocols = sorted({p for p, m, _ in triples if m in metrics}, key=lambda p, b=bench: protocol_rank(b, p))
        if not protocols and bench not in HEADLINE and benches:  # asked for by name: show everything it has
            metrics = tuple(sorted({m for _, m, _ in triples}))
            protocols = sorted({p for p, _, _ in triples}, key=lambda p, b=bench: protocol_rank(b, p))
        for protocol in protocols[:1] if single else protocols:
            for metric in metrics:
                resolutions = sorted({r for p, m, r in triples if p == protocol and m == metric},
                                     key=lambda r: (r is not None, -(r or 0)))
                columns.extend(Column(bench, protocol, metric, r) for r in resolutions)
    return columns


def metric_columns(specs: Sequence[str], results: dict[int, dict[ResultKey, float]],
                   benches: Sequence[str] | None = None) -> list[Column]:
    """Columns from ``--metric`` specs: a bare metric name (every benchmark/protocol/resolution that
    has it) or a result term (BENCH[.PROTOCOL].METRIC[@RES], one value per run)."""
    present = sorted({k for r in results.values() for k in r}, key=result_sort_key)
    columns: list[Column] = []
    for spec in specs:
        text = spec.strip()
        if text and find_at(text) is None and "." not in text and not text.startswith("result:"):
            found = [Column(b, p, m, r) for b, p, m, r in present
                     if m == unquote(text) and (not benches or b in benches)]
            if not found:
                raise FilterError(f"--metric {spec!r}: no selected run has a result named {unquote(text)!r}")
            columns.extend(found)
            continue
        term = parse_term(text if text.startswith("result:") else f"result:{text}", f"--metric {spec}")
        if benches and term.benchmark not in benches:
            continue
        exact = term.protocol is not None and term.resolution is not None
        columns.append(Column(term.benchmark or "", term.protocol, term.name, term.resolution, exact=exact))
    return list(dict.fromkeys(columns))


@db_errors
def results_matrix(db: sqlite3.Connection | Store, runs: Sequence[int] | None = None, group: str | None = None,
                   filters: Iterable[Filter | str] = (), benches: Sequence[str] | None = None,
                   metrics: Sequence[str] | None = None, baseline: int | None = None) -> Matrix:
    """Runs x (benchmark, protocol, metric, resolution), like the paper's Tables 3 and 4.

    Rows: ``runs`` in the given order (kept even without results), else the non-deleted runs
    matching ``group`` and ``filters`` that have a value in some column, oldest first. With
    ``baseline``, that run is the first row and every other row gets deltas to it.
    """
    conn = conn_of(db)
    flts = [parse_filter(f) if isinstance(f, str) else f for f in filters]
    if group is not None:
        flts.append(Filter(Term("field", "group"), "=", (group,), f"group={group}"))
    explicit = runs is not None and len(runs) > 0
    if explicit:
        check_runs(conn, runs)
        names = run_names(conn, runs)
        order = list(runs)
        if flts:
            keep = {r.id for r in select_runs(conn, flts, deleted="all")}
            order = [i for i in order if i in keep]
    else:
        selected = select_runs(conn, flts, sort="id")
        names = {r.id: r.name for r in selected}
        order = [r.id for r in selected]
    if baseline is not None:
        names[baseline] = run_ref(conn, baseline)["name"]
        order = [baseline] + [i for i in order if i != baseline]
    results = latest_results(conn, order)
    benches = list(benches) if benches else None
    if metrics:
        columns = metric_columns(metrics, results, benches)
    else:
        columns = headline_columns(results, benches)
    sources = latest_sources(conn, order)
    rows, row_keys = [], {}
    for i in order:
        keys = [c.key(results.get(i, {})) for c in columns]
        row_keys[i] = keys
        rows.append(MatrixRow(i, names[i], [None if k is None else results[i][k] for k in keys],
                              baseline=i == baseline,
                              sources=[None if k is None else sources.get(i, {}).get(k) for k in keys],
                              intervals=[stored_interval(results.get(i, {}), k) for k in keys]))
    if not explicit:
        rows = [r for r in rows if r.baseline or any(v is not None for v in r.values)]
    if baseline is not None:
        base = rows[0].values
        if columns and all(v is None for v in base):
            raise LrfrError(f"baseline run {baseline} has no results in these columns")
        for row in rows[1:]:
            row.deltas = [None if v is None or b is None else v - b for v, b in zip(row.values, base, strict=True)]
            row.significance = [None if k is None or k != b else compare_to_baseline(conn, [row.id], [baseline], *k)
                                for k, b in zip(row_keys[row.id], row_keys[baseline], strict=True)]
    return Matrix(columns, rows, baseline)


def stored_interval(results: dict[ResultKey, float], key: ResultKey | None) -> tuple[float, float] | None:
    """The 95% interval the evaluation stored beside a result (``<metric>_ci95_lo`` / ``_hi``), if any."""
    if key is None:
        return None
    bench, protocol, metric, res = key
    lo, hi = (results.get((bench, protocol, f"{metric}_ci95_{end}", res)) for end in ("lo", "hi"))
    return None if lo is None or hi is None else (lo, hi)
