"""What the TUI's screens show, read from runs.db as snapshots: the runs table, one run's curves, results and
log, several runs side by side.

Everything here runs in worker threads, each with its own SQLite connection (connections stay in the
thread that opened them); nothing here touches a widget. Filters, result matrices and exports are the same
code `lrfr ls/results/export` use.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import LrfrError
from lrfr_tui import results_table, run_logs, runsdb
from lrfr_tui.runsdb import Store, StoreError, reads, result_keys
from lrfr_tui.runsdb.series import metric_keys, series_after, spark_samples, step_rate, unknown_metric_hint
from lrfr_tui.runsdb.states import ACTIVE_STATUSES

# Training curves the detail screen draws, in this order; other keys are listed but not drawn.
LOSS_KEYS = ("loss", "loss_cls", "loss_dist")
RATE_KEY = "images_per_s"
LR_KEY = "lr"
GPU_KEYS = ("gpu_mem_gib", "gpu_util")  # what a run on a GPU reports of its device (shown while it runs)
LOG_TAIL_LINES = 400
# Filters over every point of a run (min(loss), max(...)) cost a pass over the metrics table; their
# matches are recomputed this often, while the rows they select still refresh on every poll.
SLOW_FILTER_S = 10.0
# How often the runs table checks that its "running" runs still have a process.
SETTLE_EVERY_S = 5.0
# Sparklines missing from the cache are read for at most this long per snapshot (index seeks, slow
# on a cold page cache); the rest follow in the next snapshots, which come at once until done.
SPARK_BUDGET_S = 0.25
# The result columns the runs table can show: the paper's headline row, from the engine's benchmark registry.
HEADLINE = result_keys.headline_results()
HEADLINE_TERMS = tuple(h.term for h in HEADLINE)
HEADLINE_METRICS = {bench: metrics for bench, (metrics, _) in result_keys.HEADLINE.items()}
# Runs of one group (a sweep) or of one name are told apart by the config keys whose values differ among them
# (at most this many keys, for clusters of at most VARIANT_MAX_RUNS runs); never by these keys.
VARIANT_KEYS = 2
VARIANT_MAX_RUNS = 200
VARIANT_IGNORED = ("name", "description", "launch.")



def open_reader(db: Path) -> sqlite3.Connection:
    """A connection for this thread (WAL: never blocks a training that writes)."""
    return runsdb.open_db(db)


# ---------------------------------------------------------------- curves


def downsample(points: Sequence[tuple[float, float]], buckets: int) -> tuple[list[float], list[float]]:
    """Bucket means of (x, y) points (non-finite values dropped), at most ``buckets`` of them."""
    finite = [(x, y) for x, y in points if math.isfinite(y)]
    n = len(finite)
    if n <= buckets or buckets <= 0:
        return [x for x, _ in finite], [y for _, y in finite]
    xs, ys = [], []
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        if hi <= lo:
            continue
        chunk = finite[lo:hi]
        xs.append(sum(x for x, _ in chunk) / len(chunk))
        ys.append(sum(y for _, y in chunk) / len(chunk))
    return xs, ys


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard-style exponential moving average with bias correction (0 = raw)."""
    if weight <= 0:
        return list(values)
    out, last, norm = [], 0.0, 0.0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out




def evaluating(phase: dict[str, Any] | None) -> dict[str, Any] | None:
    """The phase when it is the evaluation (benchmark k of n, images embedded), else None."""
    return phase if phase and phase.get("phase") == "evaluate" else None


def running_eta(conn: sqlite3.Connection, run_id: int, status: str, step: int, total_steps: int | None,
                phase: dict[str, Any] | None, now: float) -> float | None:
    """Seconds left: of the evaluation's current pass while evaluating (as the engine measured it), else of
    the training, from this attempt's own step rate (a resumed run's pause is not counted)."""
    if status != "running":
        return None
    ev = evaluating(phase)
    if ev is not None:
        eta = ev.get("eta_s")
        return None if eta is None else max(0.0, float(eta) - max(0.0, now - float(ev.get("wall") or now)))
    if not total_steps:
        return None
    since = phase.get("since") if phase and phase.get("phase") == "train" else None
    rate = step_rate(conn, run_id, since=since)
    if rate is None:
        return None
    steps_per_s, last_wall = rate
    return max(0.0, (total_steps - step) / steps_per_s - max(0.0, now - last_wall))


def variants(params: dict[int, dict[str, str]]) -> dict[int, str]:
    """``lr=0.1 p=2`` per run: the (at most VARIANT_KEYS) config keys whose values differ among these runs."""
    keys = sorted({k for p in params.values() for k in p if not k.startswith(VARIANT_IGNORED)})
    differ = [k for k in keys if len({p.get(k) for p in params.values()}) > 1][:VARIANT_KEYS]

    def shown(raw: str | None) -> str:
        if raw is None:
            return "-"
        try:
            value = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(value, list):
            return ",".join(map(str, value))
        return str(value).lower() if isinstance(value, bool) else str(value)

    return {run_id: " ".join(f"{k.split('.')[-1]}={shown(p.get(k))}" for k in differ) for run_id, p in params.items()}


@dataclass
class RunLine:
    """One row of the runs table."""

    id: int
    name: str
    preset: str
    status: str
    step: int
    total_steps: int | None
    created: float
    gpus: str
    tags: list[str]
    group: str
    results: dict[str, float]
    spark: list[float]
    eta_s: float | None = None
    queue_pos: int | None = None
    phase: dict[str, Any] | None = None  # a running run's evaluation (benchmark k of n), None while training
    variant: str = ""  # what sets it apart from its sweep (or same-name) siblings: "lr=0.1 p=2"


@dataclass
class RunsSnapshot:
    lines: list[RunLine]
    total: int  # runs in the database (not deleted), before filtering
    filter_error: str | None = None
    error: str | None = None  # the database could not be read
    complete: bool = True  # False: some sparklines are still to be read (poll again soon)


class RunsModel:
    """Builds runs-table snapshots; caches sparklines by (step, status) across refreshes."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.conn: sqlite3.Connection | None = None
        self._spark: dict[int, tuple[int, str, list[float]]] = {}
        self._filters: list[runsdb.Filter] = []
        self._filter_text = ""
        self._slow_ids: set[int] | None = None
        self._slow_at = 0.0
        self._previous: tuple[list[runsdb.Filter], str] = ([], "")
        self._bad: tuple[str | None, str] = (None, "")
        self._spark_deadline = 0.0
        self._spark_missing = False
        self._settle_at = 0.0
        self._variants: dict[frozenset[int], dict[int, str]] = {}
        self._hint: tuple[str | None, str | None] = (None, None)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connect(self) -> sqlite3.Connection:
        if self.conn is None:
            self.conn = open_reader(self.db)
        return self.conn

    def set_filter(self, text: str) -> str | None:
        """Parse a filter line; on an error keep the last good filter and return the error."""
        if text == self._filter_text:
            return None
        if text == self._bad[0]:
            return self._bad[1]
        try:
            filters = runsdb.parse_filters(text) if text.strip() else []
        except LrfrError as exc:
            self._bad = (text, str(exc))
            return str(exc)
        self._previous = (self._filters, self._filter_text)
        self._filters, self._filter_text = filters, text
        self._slow_ids = None
        return None

    def _select(self, conn: sqlite3.Connection, now: float) -> list[runsdb.RunRow]:
        slow = [f for f in self._filters if f.term.kind == "metric" and f.term.func != "last"]
        if not slow:
            return runsdb.select_runs(conn, self._filters, now=now, key_results=HEADLINE_TERMS)
        if self._slow_ids is None or time.monotonic() - self._slow_at >= SLOW_FILTER_S:
            self._slow_ids = {r.id for r in runsdb.select_runs(conn, slow, now=now)}
            self._slow_at = time.monotonic()
        fast = [f for f in self._filters if f not in slow]
        return [r for r in runsdb.select_runs(conn, fast, now=now, key_results=HEADLINE_TERMS) if r.id in self._slow_ids]

    def snapshot(self, filter_text: str, now: float) -> RunsSnapshot:
        filter_error = self.set_filter(filter_text)
        try:
            conn = self._connect()
            if time.monotonic() >= self._settle_at:
                # A run whose process died (kill -9, OOM) is shown as ended, not "running" forever.
                Store.over(conn, self.db).settle_running()
                self._settle_at = time.monotonic() + SETTLE_EVERY_S
            try:
                rows = self._select(conn, now)
            except LrfrError as exc:  # e.g. an unknown config key: a filter error, not a db error
                if isinstance(exc, StoreError):
                    raise
                filter_error = str(exc)
                self._bad = (self._filter_text, filter_error)
                self._filters, self._filter_text = self._previous
                self._slow_ids = None
                rows = self._select(conn, now)
            if not rows and filter_error is None:
                filter_error = self._unknown_hint(conn)
            extra = reads.placement(conn)
            phases = reads.live_phases(conn)
            self._spark_deadline = time.monotonic() + SPARK_BUDGET_S
            self._spark_missing = False
            # Live runs first: their sparklines change; the others are read once and cached.
            order = sorted(range(len(rows)), key=lambda i: rows[i].status not in ACTIVE_STATUSES)
            built = {i: self._line(conn, rows[i], extra.get(rows[i].id), phases.get(rows[i].id), now) for i in order}
            lines = [built[i] for i in range(len(rows))]
            self._set_variants(conn, lines)
        except (StoreError, sqlite3.Error) as exc:
            self.close()
            return RunsSnapshot([], 0, filter_error, error=str(exc))
        queued = sorted((r for r in extra.values() if r[4] == "queued"), key=lambda r: (r[3] or 0, r[0]))
        position = {r[0]: i + 1 for i, r in enumerate(queued)}
        for line in lines:
            line.queue_pos = position.get(line.id)
        return RunsSnapshot(lines, len(extra), filter_error, complete=not self._spark_missing)

    def _unknown_hint(self, conn: sqlite3.Connection) -> str | None:
        """Nothing matched: say so when a metric term names a key no (recent) run logged, as `foo=1` would."""
        terms = [f.term.name for f in self._filters if f.term.kind == "metric"]
        if terms and self._hint[0] != self._filter_text:  # once per filter: it reads 50 runs' keys
            recent = [r.id for r in runsdb.select_runs(conn, [], limit=50, now=time.time(), key_results=())]
            self._hint = (self._filter_text, unknown_metric_hint(conn, terms, recent))
        return self._hint[1] if terms else None

    def _set_variants(self, conn: sqlite3.Connection, lines: list[RunLine]) -> None:
        """Name the config differences within each sweep (group) or set of same-name runs; cached per set."""
        clusters: dict[tuple[str, str], list[int]] = {}
        for line in lines:
            clusters.setdefault(("group", line.group) if line.group else ("name", line.name), []).append(line.id)
        by_id = {line.id: line for line in lines}
        for ids in clusters.values():
            if not 1 < len(ids) <= VARIANT_MAX_RUNS:
                continue
            key = frozenset(ids)
            if key not in self._variants:
                self._variants[key] = variants(reads.params_of(conn, ids))
            for run_id, text in self._variants[key].items():
                by_id[run_id].variant = text

    def _line(self, conn: sqlite3.Connection, row: runsdb.RunRow, extra: tuple | None, phase: dict | None,
              now: float) -> RunLine:
        gpus = ""
        if extra is not None:
            if extra[1]:
                gpus = extra[1].strip("[]").replace(" ", "")
            elif extra[2]:
                gpus = f"({extra[2]})"  # requested, not allocated yet
            if row.status == "running" and not gpus:
                gpus = "cpu"
        cached = self._spark.get(row.id)
        if cached is not None and cached[0] == row.step and cached[1] == row.status:
            spark = cached[2]
        elif time.monotonic() < self._spark_deadline:
            spark = spark_samples(conn, row.id, "loss", row.step)
            self._spark[row.id] = (row.step, row.status, spark)
        else:  # over budget: the stale sparkline (or none) for now
            spark = cached[2] if cached is not None else []
            self._spark_missing = True
        eta = running_eta(conn, row.id, row.status, row.step, row.total_steps, phase, now)
        return RunLine(id=row.id, name=row.name, preset=row.preset or "", status=row.status, step=row.step,
                       total_steps=row.total_steps, created=row.created, gpus=gpus, tags=row.tags,
                       group=row.group or "", results=dict(row.results), spark=spark, eta_s=eta,
                       phase=evaluating(phase) if row.status == "running" else None)


@dataclass
class Curve:
    key: str
    xs: list[float]
    ys: list[float]


@dataclass
class DetailSnapshot:
    run: dict[str, Any]
    tags: list[str]
    keys: list[str]
    curves: dict[str, Curve]  # downsampled (and smoothed) curves, by key
    curves_version: tuple  # changes exactly when the curves change
    results: list[dict[str, Any]]
    resolution_curve: list[tuple[int, float]]  # lowres_lfw acc by resolution (Figure 3a)
    artifacts: list[dict[str, Any]]
    log_path: str | None
    log_lines: list[str]  # new lines since the previous snapshot
    log_reset: bool  # the log was replaced (or first read): clear before appending
    eta_s: float | None = None
    images_per_s: float | None = None
    phase: dict[str, Any] | None = None  # the evaluation's progress while the run evaluates
    notes: list[str] = field(default_factory=list)
    gpu: dict[str, float] = field(default_factory=dict)  # last gpu_mem_gib / gpu_util the run reported


class DetailModel:
    """Incremental reader of one run: new metric points and log bytes only, after the first pass."""

    def __init__(self, db: Path, run_id: int) -> None:
        self.db = db
        self.run_id = run_id
        self.conn: sqlite3.Connection | None = None
        self._points: dict[str, list[tuple[int, float]]] = {}
        self._keys: list[str] = []
        self._keys_checked_at = -1.0
        self._log: Path | None = None
        self._log_read = False
        self._log_pos = 0
        self._log_partial = b""
        self._results_seen: int | None = None
        self._results: list[dict[str, Any]] = []
        self._curve_cache: tuple[tuple, dict[str, Curve]] | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def snapshot(self, smoothing: float, buckets: int, now: float) -> DetailSnapshot:
        """Raises StoreError when the run is gone or the database cannot be read."""
        try:
            if self.conn is None:
                self.conn = open_reader(self.db)
            return self._snapshot(self.conn, smoothing, buckets, now)
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"runs database error: {exc}") from None

    def _snapshot(self, conn: sqlite3.Connection, smoothing: float, buckets: int, now: float) -> DetailSnapshot:
        run = runsdb.run_ref(conn, self.run_id)  # the whole row, config (JSON text) included
        if run.get("deleted"):
            raise StoreError(f"run {self.run_id} was deleted")
        running = run["status"] == "running"
        if not self._keys or running or now - self._keys_checked_at > 30:
            self._keys = metric_keys(conn, self.run_id)
            self._keys_checked_at = now
        for key in self._keys:
            points = self._points.setdefault(key, [])
            points.extend(series_after(conn, self.run_id, key, points[-1][0] if points else -(2 ** 62)))
        version = (tuple((k, len(p), p[-1][0] if p else None) for k, p in self._points.items()),
                   round(smoothing, 4), buckets)
        if self._curve_cache is None or self._curve_cache[0] != version:
            curves = {}
            for key, points in self._points.items():
                ys = smooth([v for _, v in points], smoothing) if key in LOSS_KEYS else [v for _, v in points]
                xs, ys = downsample(list(zip((s for s, _ in points), ys, strict=True)), buckets)
                curves[key] = Curve(key, xs, ys)
            self._curve_cache = (version, curves)
        results_count = reads.result_count(conn, self.run_id)
        if results_count != self._results_seen:
            latest = runsdb.latest_results(conn, [self.run_id]).get(self.run_id, {})
            kinds = runsdb.latest_sources(conn, [self.run_id]).get(self.run_id, {})
            self._results = [{"benchmark": b, "protocol": p, "metric": m, "resolution": r, "value": v,
                              "standin": kinds.get((b, p, m, r)) == "standin",
                              "ci95": results_table.stored_interval(latest, (b, p, m, r))}
                             for (b, p, m, r), v in sorted(latest.items(), key=lambda kv: _result_order(kv[0]))]
            self._results_seen = results_count
        artifacts = [{"kind": a["kind"], "path": a["path"]} for a in reads.run_artifacts(conn, self.run_id)]
        lines, reset = self._read_log(run)
        phase = None
        if running and run.get("phase"):
            try:
                phase = json.loads(run["phase"])
            except ValueError:
                phase = None
        eta = running_eta(conn, self.run_id, run["status"], run["step"], run.get("total_steps"), phase, now)
        rate_now = None
        if self._points.get(RATE_KEY):
            rate_now = self._points[RATE_KEY][-1][1]
        return DetailSnapshot(
            run=run, tags=runsdb.run_tags(conn, [self.run_id]).get(self.run_id, []), keys=list(self._keys),
            curves=self._curve_cache[1], curves_version=self._curve_cache[0], results=self._results,
            resolution_curve=resolution_curve(self._results), artifacts=artifacts,
            log_path=str(self._log) if self._log else None, log_lines=lines, log_reset=reset,
            eta_s=eta, images_per_s=rate_now, phase=evaluating(phase),
            notes=[n["text"] for n in reads.run_notes(conn, self.run_id)],
            gpu={k: self._points[k][-1][1] for k in GPU_KEYS if self._points.get(k) and running})

    def _read_log(self, run: dict[str, Any]) -> tuple[list[str], bool]:
        """New complete lines of the run's log; the first read starts at the last few hundred lines."""
        path = run_logs.log_file(self.db, run)
        reset = False
        if path != self._log or not self._log_read:
            self._log_read = True
            self._log, self._log_pos, self._log_partial, reset = path, 0, b"", True
            if path is None:
                return [], True
            try:
                size = path.stat().st_size
                tail = run_logs.tail_lines(path, LOG_TAIL_LINES)
            except OSError:
                self._log = None
                return [], True
            self._log_pos = size
            return tail, True
        if path is None:
            return [], reset
        try:
            size = path.stat().st_size
            if size < self._log_pos:  # truncated or replaced: read again from its start
                self._log_pos, self._log_partial, reset = 0, b"", True
            if size == self._log_pos:
                return [], reset
            with path.open("rb") as fh:
                fh.seek(self._log_pos)
                data = fh.read(min(size - self._log_pos, 1 << 20))
        except OSError:
            return [], reset
        self._log_pos += len(data)
        data = self._log_partial + data
        complete, newline, self._log_partial = data.rpartition(b"\n")
        if not newline:
            return [], reset
        return complete.decode("utf-8", errors="replace").splitlines(), reset


def _result_order(key: tuple) -> tuple:
    bench, protocol, metric, res = key
    rank = result_keys.BENCH_ORDER.index(bench) if bench in result_keys.BENCH_ORDER else len(result_keys.BENCH_ORDER)
    return (rank, bench, protocol, metric, res is not None, -(res or 0))


def resolution_curve(results: Sequence[dict[str, Any]]) -> list[tuple[int, float]]:
    """lowres_lfw accuracy per probe resolution, for the protocol with the most resolutions."""
    by_protocol: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if r["benchmark"] == "lowres_lfw" and r["metric"] == "acc" and r["resolution"] is not None:
            by_protocol.setdefault(r["protocol"], []).append((int(r["resolution"]), float(r["value"])))
    if not by_protocol:
        return []
    preferred = result_keys.PROTOCOL_PREFERENCE["lowres_lfw"]
    best = max(by_protocol, key=lambda p: (len(by_protocol[p]), -(preferred.index(p) if p in preferred else 9)))
    return sorted(by_protocol[best])


def config_text(config: dict[str, Any]) -> str:
    """A stored config as TOML-like text (top-level keys, then one table per section)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"{k} = {value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for section, table in config.items():
        if isinstance(table, dict):
            lines += ["", f"[{section}]", *(f"{k} = {value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"
