"""Filters and sorts as SQL over runs.db: ``select_runs`` and the scalar subqueries behind it."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lrfr_tui.runsdb.base import chunks, conn_of, db_errors, dicts, table_columns
from lrfr_tui.runsdb.codec import decode_param
from lrfr_tui.runsdb.filters import (
    FIELD_KINDS,
    Filter,
    FilterError,
    Term,
    parse_filter,
    parse_sort,
    parse_term,
)
from lrfr_tui.runsdb.metric_sql import has_value_index, metric_sql
from lrfr_tui.runsdb.reads import latest_results, run_tags
from lrfr_tui.runsdb.result_keys import KEY_RESULTS, PROTOCOL_PREFERENCE, bench_kind, pick

if TYPE_CHECKING:
    from lrfr_tui.runsdb.store import Store

FIELD_SQL: dict[str, str] = {
    "id": "r.id",
    "name": "r.name",
    "preset": "r.preset",
    "status": "r.status",
    "group": "r.group_name",
    "host": "r.host",
    "launcher": "r.launcher",
    "parent": "r.parent_id",
    "step": "r.step",
    "total_steps": "r.total_steps",
    "progress": "(CAST(r.step AS REAL) / NULLIF(r.total_steps, 0))",
    "exit_code": "r.exit_code",
    "created": "r.created",
    "started": "r.started",
    "ended": "r.ended",
    "age": "({now} - r.created)",
    "duration": "(COALESCE(r.ended, {now}) - r.started)",
}


_VALUE = "(CASE WHEN special IS NULL THEN value WHEN special = 'inf' THEN 9e999 WHEN special = '-inf' THEN -9e999 END)"


def _result_sql(term: Term, runref: str) -> tuple[str, list[Any]]:
    """The latest value of one result of one run, protocol/resolution chosen as in ``pick``."""
    where, params = [f"run_id = {runref}", "benchmark = ?", "metric = ?"], [term.benchmark, term.name]
    if term.protocol is not None:
        where.append("protocol = ?")
        params.append(term.protocol)
    if term.resolution is not None:
        where.append("resolution = ?")
        params.append(term.resolution)
    order: list[str] = []
    if term.protocol is None:
        prefs = PROTOCOL_PREFERENCE.get(bench_kind(term.benchmark or ""), ())
        if prefs:
            order.append("CASE protocol " + " ".join(f"WHEN ? THEN {i}" for i in range(len(prefs)))
                         + f" ELSE {len(prefs)} END")
            params.extend(prefs)
        order.append("protocol")
    if term.resolution is None:
        order += ["resolution IS NOT NULL", "resolution DESC"]
    order.append("rowid DESC")
    return f"(SELECT value FROM results WHERE {' AND '.join(where)} ORDER BY {', '.join(order)} LIMIT 1)", params


def _param_sql(key: str, runref: str) -> tuple[str, list[Any]]:
    return (f"(SELECT CASE WHEN json_valid(value) THEN json_extract(value, '$') ELSE value END FROM params "
            f"WHERE run_id = {runref} AND key = ?)"), [key]


def _field_sql(name: str, run_columns: set[str], now: float) -> str:
    sql = FIELD_SQL[name]
    if "r.group_name" in sql and "group_name" not in run_columns:  # a schema-1 database opened read-only
        sql = sql.replace("r.group_name", "NULL")
    return sql.replace("{now}", repr(float(now)))


def _term_sql(term: Term, run_columns: set[str], now: float, value_index: bool) -> tuple[str, list[Any]]:
    if term.kind == "field":
        return _field_sql(term.name, run_columns, now), []
    if term.kind == "metric":
        return metric_sql(term.func, term.name, "r.id", value_index)
    if term.kind == "result":
        return _result_sql(term, "r.id")
    if term.kind == "param":
        return _param_sql(term.name, "r.id")
    raise FilterError(f"{term.kind} cannot be used as a value")


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _cheap_condition(flt: Filter, run_columns: set[str], now: float) -> tuple[str, list[Any]]:
    """Conditions on the run row itself (fields, tags, free text)."""
    term = flt.term
    if term.kind == "text":
        pattern = _like(flt.value)
        group = "r.group_name LIKE ? ESCAPE '\\' OR " if "group_name" in run_columns else ""
        sql = (f"(r.name LIKE ? ESCAPE '\\' OR r.preset LIKE ? ESCAPE '\\' OR {group}"
               "EXISTS (SELECT 1 FROM tags t WHERE t.run_id = r.id AND t.tag LIKE ? ESCAPE '\\') OR "
               "EXISTS (SELECT 1 FROM notes n WHERE n.run_id = r.id AND n.text LIKE ? ESCAPE '\\'))")
        return sql, [pattern] * (5 if group else 4)
    if term.kind == "tag":
        if flt.op == "~":
            return "EXISTS (SELECT 1 FROM tags t WHERE t.run_id = r.id AND t.tag LIKE ? ESCAPE '\\')", \
                [_like(flt.value)]
        marks = ", ".join("?" * len(flt.value))
        sql = f"EXISTS (SELECT 1 FROM tags t WHERE t.run_id = r.id AND t.tag IN ({marks}))"
        return (sql if flt.op == "=" else f"NOT {sql}"), list(flt.value)
    expr = _field_sql(term.name, run_columns, now)
    if FIELD_KINDS[term.name] == "text":
        if flt.op == "~":
            return f"{expr} LIKE ? ESCAPE '\\'", [_like(flt.value)]
        marks = ", ".join("?" * len(flt.value))
        if flt.op == "=":
            return f"{expr} IN ({marks})", list(flt.value)
        return f"({expr} IS NULL OR {expr} NOT IN ({marks}))", list(flt.value)
    return f"{expr} {flt.op} ?", [flt.value]


def _value_condition(flt: Filter, alias: str) -> tuple[str, list[Any]]:
    """Conditions on a computed value (metric, result, param) by its alias in the ``base`` CTE."""
    if flt.op == "~":
        return f"CAST({alias} AS TEXT) LIKE ? ESCAPE '\\'", [_like(str(flt.value))]
    if flt.term.kind == "param" and flt.op in ("<", "<=", ">", ">="):
        return f"(typeof({alias}) IN ('integer', 'real') AND {alias} {flt.op} ?)", [flt.value]
    if flt.term.kind == "param" and flt.value is None:
        return f"{alias} IS {'NOT ' if flt.op == '!=' else ''}NULL", []
    return f"{alias} {flt.op} ?", [flt.value]




@dataclass
class RunRow:
    id: int
    name: str
    preset: str | None
    status: str
    group: str | None
    step: int
    total_steps: int | None
    created: float
    started: float | None
    ended: float | None
    deleted: bool
    parent_id: int | None = None
    exit_code: int | None = None
    failure_reason: str | None = None
    tags: list[str] = field(default_factory=list)
    # Key results by label (``lfw.acc`` ...), only those present.
    results: dict[str, float] = field(default_factory=dict)
    # The value of each metric / result / param expression used in the filters or the sort.
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> str:
        if self.total_steps:
            return f"{self.step}/{self.total_steps}"
        return str(self.step) if self.step else ""

    def age(self, now: float | None = None) -> float:
        return (now or time.time()) - self.created

    def duration(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        end = self.ended if self.ended is not None else (now or time.time()) if self.status == "running" else None
        return None if end is None else end - self.started

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "preset": self.preset, "status": self.status,
                "group": self.group, "step": self.step, "total_steps": self.total_steps,
                "created": self.created, "started": self.started, "ended": self.ended,
                "age_s": self.age(now), "duration_s": self.duration(now), "deleted": self.deleted,
                "parent_id": self.parent_id, "exit_code": self.exit_code, "failure_reason": self.failure_reason,
                "tags": self.tags, "results": self.results, "values": self.values}


@db_errors
def select_runs(db: sqlite3.Connection | Store, filters: Iterable[Filter | str] = (),
                sort: str | Sequence[str] | None = None, limit: int | None = None,
                deleted: str = "hide", now: float | None = None,
                key_results: Sequence[str] = KEY_RESULTS) -> list[RunRow]:
    """The runs matching every filter, sorted (default newest first), at most ``limit``.

    ``deleted``: "hide" (default), "only" (the soft-deleted runs) or "all". Sorting puts runs
    without the value last in either direction.
    """
    conn = conn_of(db)
    now = time.time() if now is None else now
    flts = [parse_filter(f) if isinstance(f, str) else f for f in filters]
    sorts = [parse_sort(s) for s in ([sort] if isinstance(sort, str) else list(sort or []))] or \
        [(Term("field", "id"), True)]
    if deleted not in ("hide", "only", "all"):
        raise ValueError(f"deleted={deleted!r}")
    run_columns = table_columns(conn, "runs")
    value_index = any(f.term.kind == "metric" and f.term.func != "last" for f in flts) or \
        any(t.kind == "metric" and t.func != "last" for t, _ in sorts)
    value_index = value_index and has_value_index(conn)
    _check_params(conn, [f.term for f in flts] + [t for t, _ in sorts])

    select_sql, select_params = [], []
    aliases: dict[Term, str] = {}

    def alias_for(term: Term) -> str:
        if term not in aliases:
            sql, params = _term_sql(term, run_columns, now, value_index)
            aliases[term] = f"v{len(aliases)}"
            select_sql.append(f"{sql} AS {aliases[term]}")
            select_params.extend(params)
        return aliases[term]

    where, where_params, outer, outer_params = [], [], [], []
    if deleted == "hide":
        where.append("r.deleted = 0")
    elif deleted == "only":
        where.append("r.deleted != 0")
    for flt in flts:
        if flt.term.kind in ("field", "tag", "text"):
            sql, params = _cheap_condition(flt, run_columns, now)
            where.append(sql)
            where_params.extend(params)
        else:
            sql, params = _value_condition(flt, alias_for(flt.term))
            outer.append(sql)
            outer_params.extend(params)
    order = []
    for term, desc in sorts:
        alias = alias_for(term)
        order.append(f"({alias} IS NULL), {alias}{' DESC' if desc else ''}")
    order.append("id DESC")
    group = "r.group_name" if "group_name" in run_columns else "NULL"
    failure = "r.failure_reason" if "failure_reason" in run_columns else "NULL"
    columns = ("r.id AS id, r.name AS name, r.preset AS preset, r.status AS status, "
               f"{group} AS group_name, r.step AS step, r.total_steps AS total_steps, r.created AS created, "
               "r.started AS started, r.ended AS ended, r.deleted AS deleted, r.parent_id AS parent_id, "
               f"r.exit_code AS exit_code, {failure} AS failure_reason")
    sql = (f"WITH base AS MATERIALIZED (SELECT {', '.join([columns, *select_sql])} FROM runs r"
           + (f" WHERE {' AND '.join(where)}" if where else "") + ") SELECT * FROM base"
           + (f" WHERE {' AND '.join(outer)}" if outer else "") + f" ORDER BY {', '.join(order)}")
    params = select_params + where_params + outer_params
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    rows = dicts(conn.execute(sql, params))
    shown = {t: a for t, a in aliases.items() if t.kind != "field"}
    out = [RunRow(id=r["id"], name=r["name"], preset=r["preset"], status=r["status"], group=r["group_name"],
                  step=r["step"], total_steps=r["total_steps"], created=r["created"], started=r["started"],
                  ended=r["ended"], deleted=bool(r["deleted"]), parent_id=r["parent_id"],
                  exit_code=r["exit_code"], failure_reason=r["failure_reason"],
                  values={t.label: r[a] for t, a in shown.items()}) for r in rows]
    _fill_params_tags_and_key_results(conn, out, [t for t in shown if t.kind == "param"], key_results)
    return out


def _fill_params_tags_and_key_results(conn: sqlite3.Connection, out: list[RunRow], param_terms: list[Term],
                                      key_results: Sequence[str] = KEY_RESULTS) -> None:
    """Params with their JSON types (not SQL's), each run's tags and its key results (`lrfr ls` columns)."""
    ids = [r.id for r in out]
    for term in param_terms:
        raw = {}
        for chunk in chunks(ids):
            raw.update(conn.execute(f"SELECT run_id, value FROM params WHERE key = ? AND run_id IN "
                                    f"({', '.join('?' * len(chunk))})", [term.name, *chunk]).fetchall())
        for row in out:
            row.values[term.label] = decode_param(raw.get(row.id))
    tags = run_tags(conn, ids)
    results = latest_results(conn, ids)
    key_terms = [(term, term.label) for term in map(parse_term, key_results)]
    for row in out:
        row.tags = tags.get(row.id, [])
        # Each term only looks at the run's results of its benchmark and metric (what pick matches first).
        by_metric: dict[tuple[str, str], dict] = {}
        for key, value in results.get(row.id, {}).items():
            by_metric.setdefault((key[0], key[2]), {})[key] = value
        for term, label in key_terms:
            candidates = by_metric.get((term.benchmark, term.name))
            value = pick(candidates, term) if candidates else None
            if value is not None:
                row.results[label] = value


def _check_params(conn: sqlite3.Connection, terms: Iterable[Term]) -> None:
    """An unknown config key is a typo, not an empty result (keys of older runs stay valid)."""
    keys = {t.name for t in terms if t.kind == "param"}
    if not keys:
        return
    from engine.config import RunConfig, flatten

    known = set(flatten(RunConfig()))
    for key in sorted(keys - known):
        if not conn.execute("SELECT 1 FROM params WHERE key = ? LIMIT 1", (key,)).fetchone():
            section = key.split(".")[0]
            similar = sorted(k for k in known if k.startswith(section + "."))
            hint = f"; keys in [{section}]: {', '.join(similar)}" if similar else ""
            raise FilterError(f"unknown config key {key!r} (no run has it){hint}")
