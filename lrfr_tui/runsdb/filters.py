"""The filter language of runs.db: what `lrfr ls/results/export` and the TUI's filter bar accept.

Pure parsing, no SQL (``runsdb.filter_sql`` turns a parsed filter into a query). Filter terms
(``parse_filter``), combined with AND::

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

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from engine.errors import LrfrError
from lrfr_tui.runsdb.states import STATUSES

OPERATORS = ("!=", "<=", ">=", "==", "=", "<", ">", "~")
NUMERIC_OPS = ("=", "!=", "<", "<=", ">", ">=")
TEXT_OPS = ("=", "!=", "~")

CONFIG_SECTIONS = ("model", "data", "augment", "loss", "optim", "schedule", "train", "eval", "launch")
TOP_LEVEL_PARAMS = ("description",)
METRIC_FUNCS = ("last", "min", "max")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# Run columns a filter or a sort may name, with the kind of value they hold (runsdb.filter_sql has
# each one's SQL).
FIELD_KINDS: dict[str, str] = {
    "id": "num",
    "name": "text",
    "preset": "text",
    "status": "text",
    "group": "text",
    "host": "text",
    "launcher": "text",
    "parent": "num",
    "step": "num",
    "total_steps": "num",
    "progress": "num",
    "exit_code": "num",
    "created": "num",
    "started": "num",
    "ended": "num",
    "age": "duration",
    "duration": "duration",
}
FIELD_ALIASES = {"group_name": "group", "parent_id": "parent", "tags": "tag"}


class FilterError(LrfrError):
    """A malformed filter or sort expression."""


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
            text = ".".join(quote_part(p) for p in parts if p)
            return text + (f"@{self.resolution}" if self.resolution is not None else "")
        return self.name


@dataclass(frozen=True)
class Filter:
    term: Term
    op: str | None  # None: free text
    value: Any
    source: str


_IDENT = re.compile(r"[A-Za-z0-9_\-/+]+")


def quote_part(part: str) -> str:
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
        return _function_term(func.group(1).lower(), func.group(2).strip(), prefix, source)
    body, resolution = text, None
    at = find_at(text)
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
    return _bare_term(parts, key)


def _function_term(name: str, inner: str, prefix: str | None, source: str) -> Term:
    """``min(loss)``: an aggregate over a training metric's points."""
    if name not in METRIC_FUNCS:
        raise FilterError(f"filter {source!r}: unknown function {name}(); use "
                          + ", ".join(f"{f}(KEY)" for f in METRIC_FUNCS))
    if prefix not in (None, "metric"):
        raise FilterError(f"filter {source!r}: {name}() applies to training metrics only")
    return Term("metric", ".".join(_split_dotted(inner, source)), func=name)


def _bare_term(parts: list[str], key: str) -> Term:
    """A name without a prefix that is not a result: a config key, a run column, tags, else a metric."""
    if len(parts) > 1 or key in TOP_LEVEL_PARAMS:
        return Term("param", key)
    name = FIELD_ALIASES.get(key, key)
    if name == "tag":
        return Term("tag", "tag")
    if name in FIELD_KINDS:
        return Term("field", name)
    return Term("metric", key)


def find_at(text: str) -> int | None:
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
    if name not in FIELD_KINDS:
        raise FilterError(f"filter {source!r}: unknown run column {key!r}; columns: {', '.join(FIELD_KINDS)}")
    return Term("field", name)


def unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _number(text: str, source: str, durations: bool = False) -> float:
    raw = unquote(text)
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
        return Filter(Term("text", "text"), None, unquote(stripped), source)
    pos, op = found
    lhs, rhs = stripped[:pos], stripped[pos + len(op):].strip()
    op = "=" if op == "==" else op
    if not rhs:
        raise FilterError(f"filter {source!r}: nothing after {op}")
    term = parse_term(lhs, source)
    if term.kind in ("field", "tag"):
        kind = "text" if term.kind == "tag" else FIELD_KINDS[term.name]
        if kind == "text":
            if op not in TEXT_OPS:
                raise FilterError(f"filter {source!r}: {term.name} takes =, != or ~ (not {op})")
            values = [unquote(v) for v in rhs.split(",")] if op != "~" else [unquote(rhs)]
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
        return Filter(term, op, unquote(rhs), source)
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
