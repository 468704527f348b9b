"""Queries over runs.db for `lrfr ls/show/logs/results/compare/export` and the TUI.

Pure logic over a ``sqlite3.Connection`` (or a ``Store``): filters, run rows, result matrices,
exports as text. Nothing here prints.

Filter terms (``parse_filter``), combined with AND::

    status=running            a run column: id name preset status group host launcher parent step
    status=queued,running       total_steps progress exit_code created started ended age duration
    name~abl                  ~ = contains (case-insensitive); a,b = any of (with = and !=)
    age<2h  duration>=30m     seconds, or with a unit: s m h d w
    tag=paper  tag!=bad       tags
    paper                     free text: name, preset, group, tags or notes contain it
    loss<1.2                  a training metric, its LAST value
    min(loss)<1.2             best-of across steps: min(KEY), max(KEY) (also last(KEY))
    lfw.acc>0.99              a result: BENCH.METRIC (the benchmark's headline protocol)
    scface.finetune.rank1_mean>0.5   BENCH.PROTOCOL.METRIC
    lowres_lfw.acc@7>0.8      @RES: at that resolution (without it: native, else the highest)
    optim.lr=0.1              a config parameter (any key of `lrfr config`)

Operators: = != < <= > >= ~. A value may end in % (``lfw.acc>99%``). A run that lacks the value
never matches. Quote a name part holding dots or operators: ``lfw."val@far=1e-3">0.9``; the
prefixes ``metric:``, ``param:``, ``result:`` force how a name is read.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import os
import re
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from engine.errors import LrfrError
from lrfr_tui.migrations import SCHEMA_VERSION
from lrfr_tui.significance import (
    SIGNIFICANCE_LEGEND,
    CellUncertainty,
    Comparison,
    compare_to_baseline,
    format_interval,
)
from lrfr_tui.store import STATUSES, Store, StoreError, db_errors, runs_root

FINAL_STATUSES = ("finished", "failed", "killed")
OPERATORS = ("!=", "<=", ">=", "==", "=", "<", ">", "~")
NUMERIC_OPS = ("=", "!=", "<", "<=", ">", ">=")
TEXT_OPS = ("=", "!=", "~")

# Benchmarks in the order of the paper's tables; others follow alphabetically.
BENCH_ORDER = ("lfw", "xqlfw", "scface", "tinyface", "lowres_lfw")
BENCH_LABELS = {"lfw": "LFW", "xqlfw": "XQLFW", "scface": "SCface", "tinyface": "TinyFace",
                "lowres_lfw": "LR-LFW"}
# A result measured on a synthetic stand-in: its column's benchmark label carries this mark, explained by
# STANDIN_LEGEND under every table (never a stand-in number shown as an LFW number).
STANDIN_MARK = "\u2020"
STANDIN_LEGEND = f"{STANDIN_MARK} synthetic stand-in, not the real benchmark"
STANDIN_VS_PAPER = " (the published rows are numbers on the real benchmark: not comparable)"


# Which protocol ``BENCH.METRIC`` means when no protocol is given (first present wins).
def bench_kind(benchmark: str) -> str:
    """``xqlfw:my_pairs`` (the xqlfw protocol on another registered dataset) -> ``xqlfw``."""
    return benchmark.partition(":")[0]


PROTOCOL_PREFERENCE: dict[str, tuple[str, ...]] = {
    "lfw": ("insightface_10fold", "roc"),
    "xqlfw": ("xqlfw_official", "insightface_10fold"),
    "scface": ("zero_shot", "finetune"),
    "tinyface": ("no_finetune", "finetune"),
    "lowres_lfw": ("insightface_10fold_second", "insightface_10fold_both", "insightface_10fold_random"),
}
# Headline columns of the results matrix: (metrics, one protocol only?) per benchmark.
HEADLINE: dict[str, tuple[tuple[str, ...], bool]] = {
    "lfw": (("acc",), True),
    "xqlfw": (("acc",), True),
    "scface": (("rank1_d1", "rank1_d2", "rank1_d3", "rank1_mean"), False),
    "tinyface": (("rank1", "mAP"), False),
    "lowres_lfw": (("acc",), False),
}
FALLBACK_HEADLINE = ("acc", "rank1_mean", "rank1", "mAP")
# Key results shown by `lrfr ls` when present.
KEY_RESULTS = ("lfw.acc", "xqlfw.acc", "scface.rank1_mean", "lowres_lfw.acc@7")
METRIC_LABELS = {"rank1_d1": "d1", "rank1_d2": "d2", "rank1_d3": "d3", "rank1_mean": "avg", "rank1": "rank-1",
                 "rank5": "rank-5", "rank10": "rank-10", "rank20": "rank-20"}

CONFIG_SECTIONS = ("model", "data", "augment", "loss", "optim", "schedule", "train", "eval", "launch")
TOP_LEVEL_PARAMS = ("description",)
METRIC_FUNCS = ("last", "min", "max")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# Run columns a filter or a sort may name: name -> (SQL over ``r``, kind). Only these reach SQL.
FIELDS: dict[str, tuple[str, str]] = {
    "id": ("r.id", "num"),
    "name": ("r.name", "text"),
    "preset": ("r.preset", "text"),
    "status": ("r.status", "text"),
    "group": ("r.group_name", "text"),
    "host": ("r.host", "text"),
    "launcher": ("r.launcher", "text"),
    "parent": ("r.parent_id", "num"),
    "step": ("r.step", "num"),
    "total_steps": ("r.total_steps", "num"),
    "progress": ("(CAST(r.step AS REAL) / NULLIF(r.total_steps, 0))", "num"),
    "exit_code": ("r.exit_code", "num"),
    "created": ("r.created", "num"),
    "started": ("r.started", "num"),
    "ended": ("r.ended", "num"),
    "age": ("({now} - r.created)", "duration"),
    "duration": ("(COALESCE(r.ended, {now}) - r.started)", "duration"),
}
FIELD_ALIASES = {"group_name": "group", "parent_id": "parent", "tags": "tag"}


class FilterError(LrfrError):
    """A malformed filter or sort expression."""


# ---------------------------------------------------------------- opening runs.db


def _conn(db: sqlite3.Connection | Store) -> sqlite3.Connection:
    return db.conn if isinstance(db, Store) else db


def _read_only_file(path: Path) -> bool:
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
    if not _read_only_file(path):
        return Store(path, timeout_s=timeout_s, create=False).conn
    last: Exception | None = None
    for flags in ("mode=ro", "immutable=1"):
        try:
            conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{flags}", uri=True, timeout=timeout_s,
                                   isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            version = _schema_version(conn)
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


def _schema_version(conn: sqlite3.Connection) -> int | None:
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
        return None
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else None


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}  # table: a constant


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _chunks(items: Sequence[int], size: int = 500) -> Iterator[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# ---------------------------------------------------------------- filter language


@dataclass(frozen=True)
class Term:
    """Something a filter compares or a sort orders by.

    kind: field | tag | text | metric | result | param. ``name`` is the field, metric key, param
    key or result metric; ``func`` the metric aggregate; ``benchmark``/``protocol``/``resolution``
    locate a result (protocol None = the benchmark's preferred one; resolution None = native or
    the highest).
    """

    kind: str
    name: str
    func: str = "last"
    benchmark: str | None = None
    protocol: str | None = None
    resolution: int | None = None

    @property
    def label(self) -> str:
        if self.kind == "metric":
            return self.name if self.func == "last" else f"{self.func}({self.name})"
        if self.kind == "result":
            parts = [self.benchmark, self.protocol, self.name]
            text = ".".join(_quote_part(p) for p in parts if p)
            return text + (f"@{self.resolution}" if self.resolution is not None else "")
        return self.name


@dataclass(frozen=True)
class Filter:
    term: Term
    op: str | None  # None: free text
    value: Any
    source: str


_IDENT = re.compile(r"[A-Za-z0-9_\-/+]+")


def _quote_part(part: str) -> str:
    return part if _IDENT.fullmatch(part) else json.dumps(part)


def _find_operator(text: str) -> tuple[int, str] | None:
    """The first operator outside quotes and parentheses."""
    quote_char, depth, i = None, 0, 0
    while i < len(text):
        ch = text[i]
        if quote_char:
            if ch == quote_char:
                quote_char = None
        elif ch == '"':
            quote_char = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0:
            for op in OPERATORS:
                if text.startswith(op, i):
                    return i, op
        i += 1
    if quote_char:
        raise FilterError(f"filter {text!r}: unclosed quote")
    return None


def _split_dotted(text: str, source: str) -> list[str]:
    """``a.b."c.d"`` -> [a, b, c.d]."""
    parts, i = [], 0
    while i <= len(text):
        if i < len(text) and text[i] == '"':
            end = text.find(text[i], i + 1)
            if end < 0:
                raise FilterError(f"filter {source!r}: unclosed quote")
            parts.append(text[i + 1:end])
            i = end + 1
        else:
            m = _IDENT.match(text, i)
            if not m:
                bad = text[i:i + 1] or "end of name"
                raise FilterError(f"filter {source!r}: unexpected {bad!r} in {text!r} (quote names holding "
                                  f"dots, spaces or operators)")
            parts.append(m.group())
            i = m.end()
        if i == len(text):
            break
        if text[i] != ".":
            raise FilterError(f"filter {source!r}: expected '.' after {parts[-1]!r} in {text!r}")
        i += 1
        if i == len(text):
            raise FilterError(f"filter {source!r}: {text!r} ends with '.'")
    return parts


def parse_term(text: str, source: str | None = None) -> Term:
    """The left-hand side of a filter, or a sort key (without its - prefix)."""
    source = source or text
    text = text.strip()
    if not text:
        raise FilterError(f"filter {source!r}: nothing before the operator")
    prefix = None
    m = re.match(r"(metric|param|result|field)s?:", text)
    if m:
        prefix, text = m.group(1), text[m.end():]
    func = re.fullmatch(r"(\w+)\((.*)\)", text)
    if func:
        name, inner = func.group(1).lower(), func.group(2).strip()
        if name not in METRIC_FUNCS:
            raise FilterError(f"filter {source!r}: unknown function {name}(); use "
                              + ", ".join(f"{f}(KEY)" for f in METRIC_FUNCS))
        if prefix not in (None, "metric"):
            raise FilterError(f"filter {source!r}: {name}() applies to training metrics only")
        return Term("metric", ".".join(_split_dotted(inner, source)), func=name)
    body, resolution = text, None
    at = _find_at(text)
    if at is not None:
        body, res_text = text[:at], text[at + 1:]
        try:
            resolution = int(res_text)
        except ValueError:
            raise FilterError(f"filter {source!r}: @{res_text} is not a resolution in px (e.g. @7); quote "
                              f"metric names holding '@'") from None
    parts = _split_dotted(body, source)
    key = ".".join(parts)
    if prefix == "metric":
        return Term("metric", key)
    if prefix == "param":
        return Term("param", key)
    if prefix == "field":
        return _field_term(key, source)
    if prefix == "result" or resolution is not None or (len(parts) > 1 and parts[0] not in CONFIG_SECTIONS):
        if len(parts) == 2:
            return Term("result", parts[1], benchmark=parts[0], resolution=resolution)
        if len(parts) == 3:
            return Term("result", parts[2], benchmark=parts[0], protocol=parts[1], resolution=resolution)
        raise FilterError(f"filter {source!r}: a result is BENCH.METRIC or BENCH.PROTOCOL.METRIC (optionally "
                          f"@RES), e.g. lfw.acc or scface.finetune.rank1_mean; quote a metric name with dots")
    if len(parts) > 1 or key in TOP_LEVEL_PARAMS:
        return Term("param", key)
    name = FIELD_ALIASES.get(key, key)
    if name == "tag":
        return Term("tag", "tag")
    if name in FIELDS:
        return Term("field", name)
    return Term("metric", key)


def _find_at(text: str) -> int | None:
    quote_char = None
    for i, ch in enumerate(text):
        if quote_char:
            quote_char = None if ch == quote_char else quote_char
        elif ch == '"':
            quote_char = ch
        elif ch == "@":
            return i
    return None


def _field_term(key: str, source: str) -> Term:
    name = FIELD_ALIASES.get(key, key)
    if name == "tag":
        return Term("tag", "tag")
    if name not in FIELDS:
        raise FilterError(f"filter {source!r}: unknown run column {key!r}; columns: {', '.join(FIELDS)}")
    return Term("field", name)


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _number(text: str, source: str, durations: bool = False) -> float:
    raw = _unquote(text)
    scale = 1.0
    if raw.endswith("%"):
        raw, scale = raw[:-1], 0.01
    elif durations and raw[-1:].lower() in DURATION_UNITS:
        raw, scale = raw[:-1], float(DURATION_UNITS[raw[-1:].lower()])
    try:
        value = float(raw)
    except ValueError:
        unit = " (a number of seconds, or with a unit: 90s, 15m, 2h, 1d)" if durations else ""
        raise FilterError(f"filter {source!r}: {text!r} is not a number{unit}") from None
    if math.isnan(value):
        raise FilterError(f"filter {source!r}: compare with a number, not nan")
    return value * scale


def parse_filter(text: str) -> Filter:
    """One filter term (see the module docstring). Raises FilterError with a one-line reason."""
    source = text
    stripped = text.strip()
    if not stripped:
        raise FilterError("empty filter")
    found = _find_operator(stripped)  # operators inside quotes do not count: '"a=b"' is free text
    if found is None:
        return Filter(Term("text", "text"), None, _unquote(stripped), source)
    pos, op = found
    lhs, rhs = stripped[:pos], stripped[pos + len(op):].strip()
    op = "=" if op == "==" else op
    if not rhs:
        raise FilterError(f"filter {source!r}: nothing after {op}")
    term = parse_term(lhs, source)
    if term.kind in ("field", "tag"):
        kind = "text" if term.kind == "tag" else FIELDS[term.name][1]
        if kind == "text":
            if op not in TEXT_OPS:
                raise FilterError(f"filter {source!r}: {term.name} takes =, != or ~ (not {op})")
            values = [_unquote(v) for v in rhs.split(",")] if op != "~" else [_unquote(rhs)]
            if any(not v for v in values):
                raise FilterError(f"filter {source!r}: empty value in {rhs!r}")
            if term.name == "status":
                unknown = [v for v in values if op != "~" and v not in STATUSES]
                if unknown:
                    raise FilterError(f"filter {source!r}: unknown status {unknown[0]!r}; statuses: "
                                      + ", ".join(STATUSES))
            return Filter(term, op, tuple(values) if op != "~" else values[0], source)
        if op == "~":
            raise FilterError(f"filter {source!r}: ~ (contains) applies to text columns, not {term.name}")
        return Filter(term, op, _number(rhs, source, durations=kind == "duration"), source)
    if term.kind in ("metric", "result"):
        if op == "~":
            raise FilterError(f"filter {source!r}: {term.label} is a number; use = != < <= > >=")
        return Filter(term, op, _number(rhs, source), source)
    # a config parameter: JSON-typed values
    if op == "~":
        return Filter(term, op, _unquote(rhs), source)
    value = _param_value(rhs)
    if op not in ("=", "!=") and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise FilterError(f"filter {source!r}: {op} needs a number, got {rhs!r}")
    return Filter(term, op, value, source)


def _param_value(text: str) -> Any:
    raw = text.strip()
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if raw[:1] == '"' and raw[-1:] == '"' and len(raw) >= 2:
        return raw[1:-1]
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))  # how json_extract() renders it
    return value


def parse_filters(text: str) -> list[Filter]:
    """A whole filter line (as typed in the TUI): terms separated by spaces, quotes group."""
    import shlex

    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise FilterError(f"filter {text!r}: {exc}") from None
    return [parse_filter(w) for w in words]


def parse_sort(text: str) -> tuple[Term, bool]:
    """``COLUMN`` ascending, ``-COLUMN`` descending; COLUMN is a run column or any filter term."""
    raw = text.strip()
    desc = raw.startswith("-")
    raw = raw.lstrip("+-").strip()
    if not raw:
        raise FilterError(f"sort {text!r}: name a column, e.g. -id or min(loss)")
    term = parse_term(raw, f"--sort {text}")
    if term.kind == "tag":
        raise FilterError(f"sort {text!r}: cannot sort by tag")
    return term, desc


# ---------------------------------------------------------------- SQL for terms

_VALUE = "(CASE WHEN special IS NULL THEN value WHEN special = 'inf' THEN 9e999 WHEN special = '-inf' THEN -9e999 END)"


def has_value_index(conn: sqlite3.Connection) -> bool:
    """Whether metrics has an index led by (run_id, key, value): then min()/max() are index seeks."""
    for index in conn.execute("PRAGMA index_list(metrics)").fetchall():
        cols = [row[2] for row in conn.execute(f"PRAGMA index_info({json.dumps(index[1])})")]
        if cols[:3] == ["run_id", "key", "value"]:
            return True
    return False


def _metric_sql(func: str, key: str, runref: str, value_index: bool) -> tuple[str, list[Any]]:
    """A scalar subquery: the last / min / max of a metric key of one run (inf kept, nan ignored)."""
    where = f"run_id = {runref} AND key = ?"
    if func == "last":
        return f"(SELECT {_VALUE} FROM metrics WHERE {where} ORDER BY step DESC, rowid DESC LIMIT 1)", [key]
    agg = func.upper()
    if not value_index:  # one pass over the run's points of this key
        return f"(SELECT {agg}({_VALUE}) FROM metrics WHERE {where})", [key]
    # Index-friendly: an infinity first (NULL values sort first in the index), then MIN/MAX by seek.
    extreme, other = ("-inf", "inf") if func == "min" else ("inf", "-inf")
    sign = {"inf": "9e999", "-inf": "-9e999"}
    sql = (f"COALESCE((SELECT {sign[extreme]} FROM metrics WHERE {where} AND value IS NULL AND special = "
           f"'{extreme}' LIMIT 1), (SELECT {agg}(value) FROM metrics WHERE {where}), (SELECT {sign[other]} "
           f"FROM metrics WHERE {where} AND value IS NULL AND special = '{other}' LIMIT 1))")
    return sql, [key, key, key]


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
    sql = FIELDS[name][0]
    if "r.group_name" in sql and "group_name" not in run_columns:  # a schema-1 database opened read-only
        sql = sql.replace("r.group_name", "NULL")
    return sql.replace("{now}", repr(float(now)))


def _term_sql(term: Term, run_columns: set[str], now: float, value_index: bool) -> tuple[str, list[Any]]:
    if term.kind == "field":
        return _field_sql(term.name, run_columns, now), []
    if term.kind == "metric":
        return _metric_sql(term.func, term.name, "r.id", value_index)
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
    if FIELDS[term.name][1] == "text":
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


# ---------------------------------------------------------------- run rows


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
                deleted: str = "hide", now: float | None = None) -> list[RunRow]:
    """The runs matching every filter, sorted (default newest first), at most ``limit``.

    ``deleted``: "hide" (default), "only" (the soft-deleted runs) or "all". Sorting puts runs
    without the value last in either direction.
    """
    conn = _conn(db)
    now = time.time() if now is None else now
    flts = [parse_filter(f) if isinstance(f, str) else f for f in filters]
    sorts = [parse_sort(s) for s in ([sort] if isinstance(sort, str) else list(sort or []))] or \
        [(Term("field", "id"), True)]
    if deleted not in ("hide", "only", "all"):
        raise ValueError(f"deleted={deleted!r}")
    run_columns = _columns(conn, "runs")
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
    rows = _dicts(conn.execute(sql, params))
    shown = {t: a for t, a in aliases.items() if t.kind != "field"}
    out = [RunRow(id=r["id"], name=r["name"], preset=r["preset"], status=r["status"], group=r["group_name"],
                  step=r["step"], total_steps=r["total_steps"], created=r["created"], started=r["started"],
                  ended=r["ended"], deleted=bool(r["deleted"]), parent_id=r["parent_id"],
                  exit_code=r["exit_code"], failure_reason=r["failure_reason"],
                  values={t.label: r[a] for t, a in shown.items()}) for r in rows]
    ids = [r.id for r in out]
    for term in (t for t in shown if t.kind == "param"):  # show params with their JSON types, not SQL's
        raw = {}
        for chunk in _chunks(ids):
            raw.update(conn.execute(f"SELECT run_id, value FROM params WHERE key = ? AND run_id IN "
                                    f"({', '.join('?' * len(chunk))})", [term.name, *chunk]).fetchall())
        for row in out:
            row.values[term.label] = _decode_param(raw.get(row.id))
    tags = run_tags(conn, ids)
    results = latest_results(conn, ids)
    key_terms = [parse_term(k) for k in KEY_RESULTS]
    for row in out:
        row.tags = tags.get(row.id, [])
        for term in key_terms:
            value = pick(results.get(row.id, {}), term)
            if value is not None:
                row.results[term.label] = value
    return out


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


def run_tags(db: sqlite3.Connection | Store, run_ids: Sequence[int]) -> dict[int, list[str]]:
    conn = _conn(db)
    out: dict[int, list[str]] = {}
    for chunk in _chunks(list(run_ids)):
        marks = ", ".join("?" * len(chunk))
        for run_id, tag in conn.execute(f"SELECT run_id, tag FROM tags WHERE run_id IN ({marks}) ORDER BY tag",
                                        list(chunk)):
            out.setdefault(run_id, []).append(tag)
    return out


ResultKey = tuple[str, str, str, "int | None"]


def latest_results(db: sqlite3.Connection | Store, run_ids: Sequence[int]) -> dict[int, dict[ResultKey, float]]:
    """run -> {(benchmark, protocol, metric, resolution): value}; a re-evaluation's row wins."""
    conn = _conn(db)
    out: dict[int, dict[ResultKey, float]] = {}
    for chunk in _chunks(list(run_ids)):
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute("SELECT run_id, benchmark, protocol, metric, resolution, value FROM results "
                            f"WHERE run_id IN ({marks}) ORDER BY rowid", list(chunk))
        for run_id, bench, protocol, metric, res, value in rows:
            out.setdefault(run_id, {})[(bench, protocol, metric, res)] = value
    return out


def latest_sources(db: sqlite3.Connection | Store, run_ids: Sequence[int]) -> dict[int, dict[ResultKey, str | None]]:
    """run -> {result key: source kind ('standin', 'catalog'; None: unknown)} of the row ``latest_results``
    takes for that key. Empty for a database before schema v6 (read-only, not upgraded)."""
    conn = _conn(db)
    out: dict[int, dict[ResultKey, str | None]] = {}
    if "source_key" not in _columns(conn, "results"):
        return out
    for chunk in _chunks(list(run_ids)):
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute("SELECT run_id, benchmark, protocol, metric, resolution, source_key FROM results "
                            f"WHERE run_id IN ({marks}) ORDER BY rowid", list(chunk))
        for run_id, bench, protocol, metric, res, key in rows:
            out.setdefault(run_id, {})[(bench, protocol, metric, res)] = key.partition(":")[0] if key else None
    return out


def _protocol_rank(bench: str, protocol: str) -> tuple[int, str]:
    prefs = PROTOCOL_PREFERENCE.get(bench_kind(bench), ())
    return (prefs.index(protocol) if protocol in prefs else len(prefs), protocol)


def pick(results: dict[ResultKey, float], term: Term) -> float | None:
    """The value of a result term among one run's latest results (same choice as the SQL filter)."""
    key = pick_key(results, term)
    return None if key is None else results[key]


def pick_key(results: dict[ResultKey, float], term: Term) -> ResultKey | None:
    """The result key ``pick`` takes the value of."""
    candidates = [(k, v) for k, v in results.items()
                  if k[0] == term.benchmark and k[2] == term.name
                  and (term.protocol is None or k[1] == term.protocol)
                  and (term.resolution is None or k[3] == term.resolution)]
    if not candidates:
        return None
    candidates.sort(key=lambda kv: (*_protocol_rank(kv[0][0], kv[0][1]), kv[0][3] is not None, -(kv[0][3] or 0)))
    return candidates[0][0]


# ---------------------------------------------------------------- one run


def run_ref(db: sqlite3.Connection | Store, run_id: int) -> dict[str, Any]:
    """The run's row (without its config) or a StoreError naming the unknown id."""
    conn = _conn(db)
    rows = _dicts(conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)))
    if not rows:
        path = conn.execute("PRAGMA database_list").fetchone()[2]
        raise StoreError(f"no run with id {run_id} in {path or 'runs.db'} (see `lrfr ls`)")
    return rows[0]


def check_runs(db: sqlite3.Connection | Store, run_ids: Iterable[int]) -> None:
    for run_id in run_ids:
        run_ref(db, run_id)


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
    conn = _conn(db)
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


def _metric_summary(conn: sqlite3.Connection, run_id: int) -> list[dict[str, Any]]:
    value_index = has_value_index(conn)
    out = []
    for key, count, last_step in conn.execute(
            "SELECT key, COUNT(*), MAX(step) FROM metrics WHERE run_id = ? GROUP BY key ORDER BY key", (run_id,)):
        entry: dict[str, Any] = {"key": key, "points": count, "last_step": last_step}
        for func in METRIC_FUNCS:
            sql, params = _metric_sql(func, key, "?", value_index)
            # every "run_id = ?" comes right before its "key = ?"
            bound = [p for k in params for p in (run_id, k)]
            entry[func] = conn.execute(f"SELECT {sql}", bound).fetchone()[0]
        out.append(entry)
    return out


@db_errors
def run_detail(db: sqlite3.Connection | Store, db_file: Path, run_id: int, tail: int = 20) -> dict[str, Any]:
    """Everything `lrfr show` prints: the run row, config, params, results, metric summary, tags,
    notes, artifacts, recent events and the log tail."""
    conn = _conn(db)
    run = run_ref(conn, run_id)
    config = json.loads(run.pop("config") or "{}")
    params = {k: _decode_param(v) for k, v in conn.execute(
        "SELECT key, value FROM params WHERE run_id = ? ORDER BY key", (run_id,))}
    sources = latest_sources(conn, [run_id]).get(run_id, {})
    results = [{"benchmark": b, "protocol": p, "metric": m, "resolution": r, "value": v,
                "source": sources.get((b, p, m, r))}
               for (b, p, m, r), v in sorted(latest_results(conn, [run_id]).get(run_id, {}).items(),
                                             key=lambda kv: _result_sort_key(kv[0]))]
    environment = None
    for (data,) in conn.execute("SELECT data FROM events WHERE run_id = ? AND kind = 'environment' "
                                "ORDER BY rowid DESC LIMIT 1", (run_id,)):
        try:
            environment = json.loads(data or "{}").get("environment")
        except (ValueError, AttributeError):
            environment = None
    notes = _dicts(conn.execute("SELECT text, wall FROM notes WHERE run_id = ? ORDER BY wall", (run_id,)))
    artifacts = _dicts(conn.execute("SELECT kind, path, wall FROM artifacts WHERE run_id = ? ORDER BY wall",
                                    (run_id,)))
    events = _dicts(conn.execute("SELECT kind, message, wall FROM events WHERE run_id = ? ORDER BY rowid DESC "
                                 "LIMIT 10", (run_id,)))[::-1]
    log = log_file(db_file, run)
    now = time.time()
    started, ended = run.get("started"), run.get("ended")
    duration = None
    if started is not None:
        end = ended if ended is not None else now if run["status"] == "running" else None
        duration = None if end is None else end - started
    return {"run": run, "duration_s": duration, "age_s": now - run["created"],
            "tags": run_tags(conn, [run_id]).get(run_id, []), "notes": notes, "config": config,
            "params": params, "results": results, "environment": environment,
            "metrics": _metric_summary(conn, run_id),
            "artifacts": artifacts, "events": events, "log_path": str(log) if log else None,
            "log_tail": tail_lines(log, tail) if log is not None else []}


def _decode_param(value: str | None) -> Any:
    try:
        return json.loads(value) if value is not None else None
    except ValueError:
        return value


def _result_sort_key(key: ResultKey) -> tuple:
    bench, protocol, metric, res = key
    bench_rank = BENCH_ORDER.index(bench) if bench in BENCH_ORDER else len(BENCH_ORDER)
    return (bench_rank, bench, *_protocol_rank(bench, protocol), metric, res is not None, -(res or 0))


# ---------------------------------------------------------------- results matrix


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
        text = ".".join(_quote_part(p) for p in (self.benchmark, self.protocol, self.metric) if p)
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


def is_percent(metric: str) -> bool:
    return metric == "mAP" or metric.startswith(("acc", "rank", "val@", "tar@"))


def better_direction(metric: str) -> int:
    """+1 higher is better, -1 lower is better, 0 neither (a threshold)."""
    if metric.endswith(("_std", "_stderr")) or "loss" in metric or metric in ("eer",):
        return -1
    if metric.startswith("threshold"):
        return 0
    return 1


def format_value(metric: str, value: float | None) -> str:
    """Accuracies, ranks and mAP as percentages with 2 decimals; other metrics to 4 significant digits."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{100 * value:.2f}" if is_percent(metric) else f"{value:.4g}"


def format_delta(metric: str, delta: float | None) -> str:
    if delta is None:
        return ""
    if not math.isfinite(delta):
        return str(delta)
    return f"{100 * delta:+.2f}" if is_percent(metric) else f"{delta:+.4g}"


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
        protocols = sorted({p for p, m, _ in triples if m in metrics}, key=lambda p, b=bench: _protocol_rank(b, p))
        if not protocols and bench not in HEADLINE and benches:  # asked for by name: show everything it has
            metrics = tuple(sorted({m for _, m, _ in triples}))
            protocols = sorted({p for p, _, _ in triples}, key=lambda p, b=bench: _protocol_rank(b, p))
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
    present = sorted({k for r in results.values() for k in r}, key=_result_sort_key)
    columns: list[Column] = []
    for spec in specs:
        text = spec.strip()
        if text and _find_at(text) is None and "." not in text and not text.startswith("result:"):
            found = [Column(b, p, m, r) for b, p, m, r in present
                     if m == _unquote(text) and (not benches or b in benches)]
            if not found:
                raise FilterError(f"--metric {spec!r}: no selected run has a result named {_unquote(text)!r}")
            columns.extend(found)
            continue
        term = parse_term(text if text.startswith("result:") else f"result:{text}", f"--metric {spec}")
        if benches and term.benchmark not in benches:
            continue
        exact = term.protocol is not None and term.resolution is not None
        columns.append(Column(term.benchmark or "", term.protocol, term.name, term.resolution, exact=exact))
    return list(dict.fromkeys(columns))


def parse_run_ids(values: Iterable[str]) -> list[int]:
    """``--runs 3 --runs 5,7-9`` -> [3, 5, 7, 8, 9] (order kept, duplicates dropped)."""
    out: list[int] = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if hi < lo or hi - lo > 100_000:
                    raise LrfrError(f"run range {part!r} is not valid")
                out.extend(range(lo, hi + 1))
            elif part.isdigit():
                out.append(int(part))
            else:
                raise LrfrError(f"{part!r} is not a run id (give ids like 3, 5,7 or 10-14)")
    return list(dict.fromkeys(out))


@db_errors
def results_matrix(db: sqlite3.Connection | Store, runs: Sequence[int] | None = None, group: str | None = None,
                   filters: Iterable[Filter | str] = (), benches: Sequence[str] | None = None,
                   metrics: Sequence[str] | None = None, baseline: int | None = None) -> Matrix:
    """Runs x (benchmark, protocol, metric, resolution), like the paper's Tables 3 and 4.

    Rows: ``runs`` in the given order (kept even without results), else the non-deleted runs
    matching ``group`` and ``filters`` that have a value in some column, oldest first. With
    ``baseline``, that run is the first row and every other row gets deltas to it.
    """
    conn = _conn(db)
    flts = [parse_filter(f) if isinstance(f, str) else f for f in filters]
    if group is not None:
        flts.append(Filter(Term("field", "group"), "=", (group,), f"group={group}"))
    explicit = runs is not None and len(runs) > 0
    if explicit:
        check_runs(conn, runs)
        names = {r["id"]: r["name"] for r in _dicts(conn.execute(
            f"SELECT id, name FROM runs WHERE id IN ({', '.join('?' * len(runs))})", list(runs)))}
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


# ---------------------------------------------------------------- exports


def export_csv(matrix: Matrix) -> str:
    """One row per run: id, run, then each column in display units (percent for accuracies), then (where sources
    are recorded) ``source``: the data each benchmark's values were measured on. Where intervals are stored:
    ``SPEC:ci95_lo`` / ``SPEC:ci95_hi`` per column; with a baseline also ``SPEC:p`` (McNemar p against it)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    # A ``source`` column (``lfw=standin xqlfw=catalog``) whenever a shown value's source is recorded.
    sourced = any(k is not None for r in matrix.rows for k in r.sources)
    extra = ["source"] if sourced else []
    uncertain = matrix.has_uncertainty()
    tested = matrix.baseline is not None and any(r.significance for r in matrix.rows)
    stats = [f"{c.spec}:{name}" for c in matrix.columns
             for name in ("ci95_lo", "ci95_hi", *(("p",) if tested else ()))] if uncertain else []
    writer.writerow(["id", "run", *(c.spec for c in matrix.columns), *extra, *stats])

    def units(col: Column, value: float | None) -> str:
        return "" if value is None else format_value(col.metric, value)

    for row, label in zip(matrix.rows, matrix.row_labels(), strict=True):
        cells = []
        if uncertain:
            for j, col in enumerate(matrix.columns):
                lo, hi = row.interval(j) or (None, None)
                cells += [units(col, lo), units(col, hi)]
                if tested:
                    test = row.significance[j] if len(row.significance) > j else None
                    cells.append("" if test is None else f"{test.p:.4g}")
        writer.writerow([row.id, label, *(units(c, v) for c, v in zip(matrix.columns, row.values, strict=True)),
                         *([matrix.row_source(row)] if sourced else []), *cells])
    for ref in matrix.references:
        writer.writerow(["", ref.name, *(units(c, v) for c, v in zip(matrix.columns, ref.values, strict=True)),
                         *(["published"] if sourced else []), *([""] * len(stats))])
    return buf.getvalue()


def export_markdown(matrix: Matrix) -> str:
    """A pipe table, best value per column in bold."""
    best = matrix.best()

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| run | " + " | ".join(cell(label) for label in matrix.labels()) + " |",
             "|---|" + "---:|" * len(matrix.columns)]
    for i, (row, label) in enumerate(zip(matrix.rows, matrix.row_labels(), strict=True)):
        cells = []
        for j, col in enumerate(matrix.columns):
            text = format_value(col.metric, row.values[j])
            text = (f"**{text}**" if i in best[j] else text) + row.mark(j)
            bounds = row.interval(j)
            if bounds is not None and row.values[j] is not None:
                text += " " + format_interval(*bounds, is_percent(col.metric))
            cells.append(text)
        lines.append(f"| {cell(label)} | " + " | ".join(cells) + " |")
    for ref in matrix.references:
        values = (format_value(c.metric, v) if v is not None else "" for c, v in zip(matrix.columns, ref.values,
                                                                                      strict=True))
        lines.append(f"| *{cell(ref.name)}* | " + " | ".join(values) + " |")
    lines += [""] + matrix.legend() if matrix.legend() else []
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  STANDIN_MARK: r"\textsuperscript{\dag}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def export_latex(matrix: Matrix) -> str:
    """A booktabs tabular: benchmark headers spanning their columns, best value per column in bold."""
    best = matrix.best()
    n = len(matrix.columns)
    groups: list[tuple[str, int]] = []
    for label in matrix.group_labels():
        if groups and groups[-1][0] == label:
            groups[-1] = (label, groups[-1][1] + 1)
        else:
            groups.append((label, 1))
    lines = ["% lrfr export; needs \\usepackage{booktabs}", f"\\begin{{tabular}}{{l{'r' * n}}}", "\\toprule"]
    head, rules, col = [""], [], 2
    for label, span in groups:
        head.append(f"\\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}")
        rules.append(f"\\cmidrule(lr){{{col}-{col + span - 1}}}")
        col += span
    lines.append(" & ".join(head) + " \\\\")
    lines.append(" ".join(rules))
    lines.append(" & ".join(["Run", *(latex_escape(c.short) for c in matrix.columns)]) + " \\\\")
    lines.append("\\midrule")
    for i, (row, label) in enumerate(zip(matrix.rows, matrix.row_labels(), strict=True)):
        cells = [latex_escape(label)]
        for j, c in enumerate(matrix.columns):
            text = format_value(c.metric, row.values[j])
            text = "--" if text == "-" else latex_escape(text)
            text = f"\\textbf{{{text}}}" if i in best[j] else text
            if row.mark(j):
                text += f"$^{{{row.mark(j)}}}$"
            bounds = row.interval(j)
            if bounds is not None and row.values[j] is not None:
                text += f"\\,{{\\scriptsize {format_interval(*bounds, is_percent(c.metric))}}}"
            cells.append(text)
        lines.append(" & ".join(cells) + " \\\\")
    if matrix.references:
        lines.append("\\midrule")
    for ref in matrix.references:
        cells = [f"\\textit{{{latex_escape(ref.name)}}}"]
        for c, v in zip(matrix.columns, ref.values, strict=True):
            cells.append("--" if v is None else f"\\textit{{{latex_escape(format_value(c.metric, v))}}}")
        lines.append(" & ".join(cells) + " \\\\")
    lines.append("\\bottomrule")
    for text in matrix.legend():
        lines.append(f"\\multicolumn{{{n + 1}}}{{l}}{{\\footnotesize {latex_escape(text)}}} \\\\")
    lines.append("\\end{tabular}")
    return "\n".join(lines) + "\n"


EXPORTERS = {"csv": export_csv, "markdown": export_markdown, "latex": export_latex}


# ---------------------------------------------------------------- compare


@db_errors
def compare_runs(db: sqlite3.Connection | Store, run_ids: Sequence[int]) -> dict[str, Any]:
    """Config keys whose values differ, headline results and last training metrics, side by side."""
    conn = _conn(db)
    if len(run_ids) < 2:
        raise LrfrError("compare needs at least two runs")
    runs = [run_ref(conn, i) for i in run_ids]
    params: list[dict[str, Any]] = []
    for run_id in run_ids:
        params.append({k: _decode_param(v) for k, v in conn.execute(
            "SELECT key, value FROM params WHERE run_id = ?", (run_id,))})
    missing = object()
    keys = sorted(set().union(*params))
    diff = {}
    for key in keys:
        values = [p.get(key, missing) for p in params]
        if any(v != values[0] for v in values[1:]):
            diff[key] = [None if v is missing else v for v in values]
    matrix = results_matrix(conn, runs=list(run_ids))
    if matrix.rows and any(v is not None for v in matrix.rows[0].values):
        # The first run is the one the others are tested against (significance marks).
        matrix = results_matrix(conn, runs=list(run_ids), baseline=run_ids[0])
    value_index = has_value_index(conn)
    metrics: dict[str, list[float | None]] = {}
    metric_keys = sorted({k for i in run_ids for (k,) in conn.execute(
        "SELECT DISTINCT key FROM metrics WHERE run_id = ?", (i,))})
    for key in metric_keys:
        sql, _ = _metric_sql("last", key, "?", value_index)
        metrics[key] = [conn.execute(f"SELECT {sql}", (i, key)).fetchone()[0] for i in run_ids]
    return {"runs": [{"id": r["id"], "name": r["name"], "status": r["status"], "preset": r["preset"]} for r in runs],
            "params": diff, "results": matrix, "metrics": metrics}


# ---------------------------------------------------------------- tags, notes, soft delete (writes)


# ---------------------------------------------------------------- small helpers for displays


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def json_safe(obj: Any) -> Any:
    """NaN and infinities as the strings "nan", "inf", "-inf" (JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
