"""What the TUI reads from and writes to runs.db, as plain functions and small models.

Everything here runs in worker threads, each with its own SQLite connection (connections stay
in the thread that opened them); nothing here touches a widget. The screens turn the snapshots
built here into cells and curves. Filters, result matrices and exports are `lrfr_tui.query`'s,
the same code `lrfr ls/results/export` uses.
"""

from __future__ import annotations

import itertools
import json
import math
import shlex
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import LrfrError
from lrfr_tui import query
from lrfr_tui.store import Store, StoreError

# Training curves the detail screen draws, in this order; other keys are listed but not drawn.
LOSS_KEYS = ("loss", "loss_cls", "loss_dist")
RATE_KEY = "images_per_s"
LR_KEY = "lr"
MAX_SWEEP_RUNS = 200
SPARK_POINTS = 10
LOG_TAIL_LINES = 400
# Filters over every point of a run (min(loss), max(...)) cost a pass over the metrics table; their
# matches are recomputed this often, while the rows they select still refresh on every poll.
SLOW_FILTER_S = 10.0
# How often the runs table checks that its "running" runs still have a process.
SETTLE_EVERY_S = 5.0
# Sparklines missing from the cache are read for at most this long per snapshot (index seeks, slow
# on a cold page cache); the rest follow in the next snapshots, which come at once until done.
SPARK_BUDGET_S = 0.25


def open_reader(db: Path) -> sqlite3.Connection:
    """A connection for this thread (WAL: never blocks a training that writes)."""
    return query.open_db(db)


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


def metric_keys(conn: sqlite3.Connection, run_id: int) -> list[str]:
    """The run's metric keys by index seeks (a skip scan), not a pass over every point."""
    keys, last = [], ""
    while True:
        row = conn.execute("SELECT MIN(key) FROM metrics WHERE run_id = ? AND key > ?", (run_id, last)).fetchone()
        if row is None or row[0] is None:
            return keys
        last = row[0]
        keys.append(last)


def series_after(conn: sqlite3.Connection, run_id: int, key: str, after_step: int) -> list[tuple[int, float]]:
    rows = conn.execute("SELECT step, value, special FROM metrics WHERE run_id = ? AND key = ? AND step > ? "
                        "ORDER BY step", (run_id, key, after_step))
    return [(step, float(special) if special else float("nan") if value is None else value)
            for step, value, special in rows]


def spark_samples(conn: sqlite3.Connection, run_id: int, key: str, last_step: int,
                  n: int = SPARK_POINTS) -> list[float]:
    """``n`` bucket means along the run's steps, each from at most 64 points found by an index seek."""
    if last_step <= 0:
        return []
    out = []
    edges = [last_step * i // n for i in range(n + 1)]
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        row = conn.execute("SELECT AVG(value) FROM (SELECT value FROM metrics WHERE run_id = ? AND key = ? "
                           "AND step > ? AND step <= ? AND value IS NOT NULL LIMIT 64)",
                           (run_id, key, lo, hi)).fetchone()
        if row[0] is not None:
            out.append(float(row[0]))
    return out


def step_rate(conn: sqlite3.Connection, run_id: int, window: int = 20) -> tuple[float, float] | None:
    """(steps per second over the last ``window`` logged points, wall time of the last one)."""
    rows = conn.execute("SELECT step, wall FROM metrics WHERE run_id = ? AND key = 'loss' "
                        "ORDER BY step DESC LIMIT ?", (run_id, window)).fetchall()
    if len(rows) < 2:
        return None
    (s1, w1), (s0, w0) = rows[0], rows[-1]
    if w1 <= w0 or s1 <= s0:
        return None
    return (s1 - s0) / (w1 - w0), w1


# ---------------------------------------------------------------- the queue


@dataclass(frozen=True)
class QueueState:
    """What the app's scheduler worker saw in one pass."""

    mode: str  # "driving" | "watching" | "off" | "no-db" | "error" | "starting"
    holder: str = ""  # who drives the queue when we do not
    queued: int = 0
    running: int = 0
    free_gpus: int = 0
    total_gpus: int = 0
    error: str = ""

    def describe(self) -> list[tuple[str, str]]:
        """(text, theme colour variable) pieces."""
        if self.mode == "starting":
            return [("looking at the queue…", "")]
        if self.mode == "no-db":
            return [("no runs.db yet: n launches a run", "text-warning")]
        if self.mode == "error":
            return [(f"runs.db: {self.error}", "text-error")]
        if self.mode == "driving":
            head = [("▶ driving queue", "text-success")]
        elif self.mode == "watching":
            head = [(f"driven by {self.holder or 'another scheduler'}", "")]
        else:
            head = [("not driving", "text-warning")]
        gpus = f"{self.free_gpus}/{self.total_gpus} GPUs free" if self.total_gpus else "CPU"
        return head + [(f" · {self.queued} queued · {self.running} running · {gpus}", "")]


class QueueDriver:
    """One scheduler pass at a time for the TUI: drive the queue if we hold (or can take) the lock,
    else just watch it. Never creates runs.db (launching a run does)."""

    GPU_EVERY_S = 5.0

    def __init__(self, db: Path, mode: str = "auto", discover: Callable | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"mode={mode!r}")
        self.db = Path(db).resolve()
        self.mode = mode
        self.discover = discover
        self.on_event = on_event
        self.sched = None
        self.holding = False
        self._gpus: tuple[float, int, int] | None = None  # (when, free, total)

    @property
    def lock_path(self) -> Path:
        return self.db.with_name(self.db.name + ".scheduler.lock")

    def holder(self) -> str:
        try:
            return self.lock_path.read_text().strip()
        except OSError:
            return ""

    def step(self, now: float | None = None) -> QueueState:
        from lrfr_tui.scheduler import Scheduler, SchedulerLocked

        now = time.monotonic() if now is None else now
        if not self.db.exists():
            return QueueState("no-db")
        try:
            if self.sched is None:
                kwargs = {"discover": self.discover} if self.discover is not None else {}
                self.sched = Scheduler(self.db, on_event=self.on_event, **kwargs)
            if self.mode != "off" and not self.holding:
                try:
                    self.sched.acquire()
                    self.holding = True
                except SchedulerLocked:
                    pass
            if self.holding:
                self.sched.step()
            counts = dict(self.sched.store.conn.execute(
                "SELECT status, COUNT(*) FROM runs WHERE deleted = 0 AND status IN ('queued', 'running') "
                "GROUP BY status").fetchall())
            if self._gpus is None or now - self._gpus[0] >= self.GPU_EVERY_S:
                free, _ = self.sched.free_gpus()
                total = len(self.sched.discover())
                self._gpus = (now, len(free), total)
        except (LrfrError, sqlite3.Error, OSError) as exc:
            self.close()
            return QueueState("error", error=str(exc))
        mode = "driving" if self.holding else ("off" if self.mode == "off" else "watching")
        return QueueState(mode, holder="" if self.holding else self.holder(), queued=counts.get("queued", 0),
                          running=counts.get("running", 0), free_gpus=self._gpus[1], total_gpus=self._gpus[2])

    def close(self) -> None:
        if self.sched is not None:
            if self.holding:
                self.sched.release()
            self.sched.store.close()
        self.sched = None
        self.holding = False


# ---------------------------------------------------------------- the runs table


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
        self._filters: list[query.Filter] = []
        self._filter_text = ""
        self._slow_ids: set[int] | None = None
        self._slow_at = 0.0
        self._previous: tuple[list[query.Filter], str] = ([], "")
        self._bad: tuple[str | None, str] = (None, "")
        self._spark_deadline = 0.0
        self._spark_missing = False
        self._settle_at = 0.0

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
            filters = query.parse_filters(text) if text.strip() else []
        except LrfrError as exc:
            self._bad = (text, str(exc))
            return str(exc)
        self._previous = (self._filters, self._filter_text)
        self._filters, self._filter_text = filters, text
        self._slow_ids = None
        return None

    def _select(self, conn: sqlite3.Connection, now: float) -> list[query.RunRow]:
        slow = [f for f in self._filters if f.term.kind == "metric" and f.term.func != "last"]
        if not slow:
            return query.select_runs(conn, self._filters, now=now)
        if self._slow_ids is None or time.monotonic() - self._slow_at >= SLOW_FILTER_S:
            self._slow_ids = {r.id for r in query.select_runs(conn, slow, now=now)}
            self._slow_at = time.monotonic()
        fast = [f for f in self._filters if f not in slow]
        return [r for r in query.select_runs(conn, fast, now=now) if r.id in self._slow_ids]

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
            extra = {r[0]: r for r in conn.execute(
                "SELECT id, gpus, gpus_requested, queue_pos, status FROM runs WHERE deleted = 0")}
            self._spark_deadline = time.monotonic() + SPARK_BUDGET_S
            self._spark_missing = False
            # Live runs first: their sparklines change; the others are read once and cached.
            order = sorted(range(len(rows)), key=lambda i: rows[i].status not in ("running", "queued"))
            built = {i: self._line(conn, rows[i], extra.get(rows[i].id), now) for i in order}
            lines = [built[i] for i in range(len(rows))]
        except (StoreError, sqlite3.Error) as exc:
            self.close()
            return RunsSnapshot([], 0, filter_error, error=str(exc))
        queued = sorted((r for r in extra.values() if r[4] == "queued"), key=lambda r: (r[3] or 0, r[0]))
        position = {r[0]: i + 1 for i, r in enumerate(queued)}
        for line in lines:
            line.queue_pos = position.get(line.id)
        return RunsSnapshot(lines, len(extra), filter_error, complete=not self._spark_missing)

    def _line(self, conn: sqlite3.Connection, row: query.RunRow, extra: tuple | None, now: float) -> RunLine:
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
        eta = None
        if row.status == "running" and row.total_steps:
            rate = step_rate(conn, row.id)
            if rate is not None:
                steps_per_s, last_wall = rate
                eta = max(0.0, (row.total_steps - row.step) / steps_per_s - max(0.0, now - last_wall))
        return RunLine(id=row.id, name=row.name, preset=row.preset or "", status=row.status, step=row.step,
                       total_steps=row.total_steps, created=row.created, gpus=gpus, tags=row.tags,
                       group=row.group or "", results=dict(row.results), spark=spark, eta_s=eta)


# ---------------------------------------------------------------- one run


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
        run = query.run_ref(conn, self.run_id)  # the whole row, config (JSON text) included
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
        results_count = conn.execute("SELECT COUNT(*) FROM results WHERE run_id = ?", (self.run_id,)).fetchone()[0]
        if results_count != self._results_seen:
            latest = query.latest_results(conn, [self.run_id]).get(self.run_id, {})
            kinds = query.latest_sources(conn, [self.run_id]).get(self.run_id, {})
            self._results = [{"benchmark": b, "protocol": p, "metric": m, "resolution": r, "value": v,
                              "standin": kinds.get((b, p, m, r)) == "standin",
                              "ci95": query.stored_interval(latest, (b, p, m, r))}
                             for (b, p, m, r), v in sorted(latest.items(), key=lambda kv: _result_order(kv[0]))]
            self._results_seen = results_count
        artifacts = [dict(r) for r in conn.execute(
            "SELECT kind, path FROM artifacts WHERE run_id = ? ORDER BY wall", (self.run_id,))]
        lines, reset = self._read_log(run)
        eta = rate_now = None
        if running and run.get("total_steps"):
            rate = step_rate(conn, self.run_id)
            if rate is not None:
                eta = max(0.0, (run["total_steps"] - run["step"]) / rate[0] - max(0.0, now - rate[1]))
        if self._points.get(RATE_KEY):
            rate_now = self._points[RATE_KEY][-1][1]
        return DetailSnapshot(
            run=run, tags=query.run_tags(conn, [self.run_id]).get(self.run_id, []), keys=list(self._keys),
            curves=self._curve_cache[1], curves_version=self._curve_cache[0], results=self._results,
            resolution_curve=resolution_curve(self._results), artifacts=artifacts,
            log_path=str(self._log) if self._log else None, log_lines=lines, log_reset=reset,
            eta_s=eta, images_per_s=rate_now)

    def _read_log(self, run: dict[str, Any]) -> tuple[list[str], bool]:
        """New complete lines of the run's log; the first read starts at the last few hundred lines."""
        path = query.log_file(self.db, run)
        reset = False
        if path != self._log or not self._log_read:
            self._log_read = True
            self._log, self._log_pos, self._log_partial, reset = path, 0, b"", True
            if path is None:
                return [], True
            try:
                size = path.stat().st_size
                tail = query.tail_lines(path, LOG_TAIL_LINES)
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
    rank = query.BENCH_ORDER.index(bench) if bench in query.BENCH_ORDER else len(query.BENCH_ORDER)
    return (rank, bench, protocol, metric, res is not None, -(res or 0))


def resolution_curve(results: Sequence[dict[str, Any]]) -> list[tuple[int, float]]:
    """lowres_lfw accuracy per probe resolution, for the protocol with the most resolutions."""
    by_protocol: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if r["benchmark"] == "lowres_lfw" and r["metric"] == "acc" and r["resolution"] is not None:
            by_protocol.setdefault(r["protocol"], []).append((int(r["resolution"]), float(r["value"])))
    if not by_protocol:
        return []
    preferred = query.PROTOCOL_PREFERENCE["lowres_lfw"]
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


# ---------------------------------------------------------------- several runs


@dataclass
class CompareSnapshot:
    runs: list[dict[str, Any]]
    params: dict[str, list[Any]]  # only the keys whose values differ
    matrix: query.Matrix
    curves: dict[str, dict[int, Curve]]  # metric key -> run id -> curve
    keys: list[str]


def load_compare(conn: sqlite3.Connection, run_ids: Sequence[int], buckets: int) -> CompareSnapshot:
    data = query.compare_runs(conn, run_ids)
    try:
        matrix = query.results_matrix(conn, runs=list(run_ids), baseline=run_ids[0])
    except LrfrError:  # the first run has no results yet: no deltas
        matrix = data["results"]
    params = {k: v for k, v in data["params"].items() if k not in ("name", "description")}
    curves: dict[str, dict[int, Curve]] = {}
    keys: list[str] = []
    for run_id in run_ids:
        for key in metric_keys(conn, run_id):
            if key not in keys:
                keys.append(key)
    for key in keys:
        for run_id in run_ids:
            points = series_after(conn, run_id, key, -(2 ** 62))
            if points:
                xs, ys = downsample(points, buckets)
                curves.setdefault(key, {})[run_id] = Curve(key, xs, ys)
    ordered = [k for k in (*LOSS_KEYS, LR_KEY, RATE_KEY) if k in keys] + sorted(
        k for k in keys if k not in (*LOSS_KEYS, LR_KEY, RATE_KEY))
    return CompareSnapshot(data["runs"], params, matrix, curves, ordered)


def export_results(conn: sqlite3.Connection, fmt: str, directory: Path, filter_text: str, now: float,
                   run_ids: Sequence[int] | None = None) -> Path:
    """Write the results matrix (the runs matching the filter, or ``run_ids``) as csv/markdown/latex."""
    if fmt not in query.EXPORTERS:
        raise LrfrError(f"unknown export format {fmt!r}; choose one of {', '.join(query.EXPORTERS)}")
    from lrfr_tui.paper_layout import attach_references, group_baseline_run, group_in_filter

    filters = query.parse_filters(filter_text) if filter_text.strip() else []
    group = group_in_filter(filter_text)
    baseline = group_baseline_run(conn, group)
    if run_ids and baseline not in run_ids:
        baseline = None
    matrix = query.results_matrix(conn, runs=list(run_ids) if run_ids else None, filters=filters, baseline=baseline)
    if not matrix.rows:
        raise LrfrError("no run with results to export")
    attach_references(conn, matrix, group)
    ext = {"csv": "csv", "markdown": "md", "latex": "tex"}[fmt]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    path = directory / f"lrfr-results-{stamp}.{ext}"
    counter = 1
    while path.exists():
        counter += 1
        path = directory / f"lrfr-results-{stamp}-{counter}.{ext}"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(query.EXPORTERS[fmt](matrix))
    return path


# ---------------------------------------------------------------- writes (launch, kill, resume, tag)


@dataclass
class LaunchForm:
    """What the launch screen holds; ``build`` resolves it with the CLI's validator."""

    preset: str
    overrides: str = ""  # one key=value per line (# comments allowed)
    grid: str = ""  # one key=v1,v2,... per line
    name: str = ""
    group: str = ""
    gpus: str = ""  # empty: the preset's launch.gpus
    parent_id: int | None = None

    def override_lines(self) -> list[tuple[int, str]]:
        return _lines(self.overrides)

    def grid_lines(self) -> list[tuple[int, str]]:
        return _lines(self.grid)


def _lines(text: str) -> list[tuple[int, str]]:
    """Non-empty lines that are not ``#`` comments, with their 1-based line numbers."""
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.strip().startswith("#")]


class FormError(LrfrError):
    """A launch-form problem, located: ``field`` is overrides | grid | gpus | preset | form."""

    def __init__(self, message: str, field: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message, self.field, self.line = message, field, line


@dataclass
class BuiltRun:
    config: Any  # engine.config.RunConfig
    point: list[str] = field(default_factory=list)  # the sweep point's overrides


def build_runs(form: LaunchForm) -> list[BuiltRun]:
    """Resolve the form into validated configs (one per sweep point), or raise FormError naming the field."""
    from engine.config import ConfigError, parse_override, resolve

    if not form.preset:
        raise FormError("choose a preset", "preset")
    overrides = []
    for number, text in form.override_lines():
        try:
            parse_override(text)
        except ConfigError as exc:
            raise FormError(str(exc), "overrides", number) from None
        overrides.append((number, text))
    if form.gpus.strip():
        gpus = form.gpus.strip()
        if not gpus.isdigit():
            raise FormError(f"GPUs: {gpus!r} is not a whole number (0 = CPU)", "gpus")
        overrides.append((None, f"launch.gpus={int(gpus)}"))
    axes: list[tuple[int, str, list[str]]] = []
    for number, text in form.grid_lines():
        try:
            key, values = parse_override(text)
        except ConfigError as exc:
            raise FormError(str(exc), "grid", number) from None
        parts = values.split(";") if ";" in values else values.split(",")
        points = [p.strip() for p in parts if p.strip()]
        if not points:
            raise FormError(f"{key}: give the values to sweep, e.g. {key}=0.1,0.05", "grid", number)
        axes.append((number, key, points))
    count = math.prod(len(a[2]) for a in axes) if axes else 1
    if count > MAX_SWEEP_RUNS:
        raise FormError(f"the sweep grid makes {count} runs; at most {MAX_SWEEP_RUNS} at once", "grid")
    texts = [t for _, t in overrides]
    built = []
    for combo in itertools.product(*(a[2] for a in axes)) if axes else [()]:
        point = [f"{key}={value}" for (_, key, _), value in zip(axes, combo, strict=True)]
        try:
            cfg = resolve(form.preset, texts + point)
        except ConfigError as exc:
            raise _locate(exc, form, overrides, axes) from None
        if form.name.strip():
            cfg.name = form.name.strip()
        if point:
            cfg.name = f"{cfg.name} " + " ".join(point)
        built.append(BuiltRun(cfg, point))
    if built and built[0].config.data.dataset != "synthetic":
        from engine.catalog import lookup

        try:
            lookup(built[0].config.data.dataset)
        except LrfrError as exc:
            raise _locate(exc, form, overrides, axes, key="data.dataset") from None
    return built


def _locate(exc: Exception, form: LaunchForm, overrides, axes, key: str | None = None) -> FormError:
    """Attach a ConfigError (which names its key) to the form line that set that key."""
    message = str(exc)
    for number, text in reversed(overrides):
        name = text.partition("=")[0].strip()
        if name and (name == key or f"{name}=" in message or f"'{name}'" in message or message.startswith(name)):
            if number is None:
                return FormError(message, "gpus")
            return FormError(message, "overrides", number)
    for number, name, _ in axes:
        if name == key or f"{name}=" in message or f"'{name}'" in message or message.startswith(name):
            return FormError(message, "grid", number)
    if "preset" in message:
        return FormError(message, "preset")
    return FormError(message, "form")


def cli_command(form: LaunchForm, sweep: bool) -> str:
    """The `lrfr` command line that queues the same run(s), recorded as the runs' command."""
    args = ["lrfr", "sweep" if sweep else "run", "--preset", form.preset]
    if not sweep:
        args.append("--queue")
    if form.name.strip() and not sweep:
        args += ["--name", form.name.strip()]
    for _, text in form.override_lines():
        args += ["--set", text]
    if form.gpus.strip():
        args += ["--set", f"launch.gpus={form.gpus.strip()}"]
    for _, text in form.grid_lines():
        args += ["--grid", text]
    if form.group.strip():
        args += ["--group", form.group.strip()]
    return shlex.join(args) + "  # from lrfr tui"


def launch(db: Path, form: LaunchForm, start_now: bool) -> list[int]:
    """Create the run rows (queued); ``start_now`` puts them at the head of the queue."""
    from engine.config import flatten, to_dict

    built = build_runs(form)
    sweep = bool(form.grid_lines())
    group = form.group.strip() or (f"sweep-{time.strftime('%Y%m%d-%H%M%S')}" if sweep and len(built) > 1 else None)
    command = cli_command(form, sweep)
    store = Store(db, create=True)
    try:
        ids = [store.create_run(to_dict(b.config), flatten(b.config), command, parent_id=form.parent_id,
                                launcher=b.config.launch.launcher, group=group) for b in built]
        if start_now:
            for position, run_id in enumerate(ids, start=1):
                store.move_in_queue(run_id, position)
    finally:
        store.close()
    return ids


def duplicate_form(conn: sqlite3.Connection, run_id: int) -> LaunchForm:
    """A launch form that recreates run ``run_id``: its preset plus the keys where it differs from it."""
    from engine.config import flatten, resolve

    run = query.run_ref(conn, run_id)
    config = json.loads(conn.execute("SELECT config FROM runs WHERE id = ?", (run_id,)).fetchone()[0])
    preset = run["preset"] or config.get("preset") or ""
    flat = flat_config(config)
    base = flatten(resolve(preset)) if preset else {}
    lines = []
    for key, value in flat.items():
        if key in ("name", "preset", "description"):
            continue
        if base.get(key, object()) != value:
            lines.append(f"{key}={_override_value(value)}")
    gpus = flat.get("launch.gpus")
    lines = [x for x in lines if not x.startswith("launch.gpus=")]
    name = config.get("name") or ""
    return LaunchForm(preset=preset, overrides="\n".join(lines), name=name if name != preset else "",
                      group=run.get("group_name") or "", gpus="" if gpus is None else str(gpus), parent_id=run_id)


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in config.items() if not isinstance(v, dict)}
    for section, table in config.items():
        if isinstance(table, dict):
            flat.update({f"{section}.{k}": v for k, v in table.items()})
    return flat


def _override_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    return str(value)


def kill_runs(db: Path, run_ids: Sequence[int], grace_s: float = 60.0,
              on_done: Callable[[int, str], None] | None = None) -> dict[int, str]:
    """Stop each run (queued: marked killed; running: SIGTERM, checkpoint, SIGKILL after ``grace_s``)."""
    from lrfr_tui.scheduler import Scheduler, stop_run

    store = Store(db, create=False)
    sched = Scheduler(db)
    out: dict[int, str] = {}
    try:
        for run_id in run_ids:
            try:
                status = stop_run(store, store.get_run(run_id), grace_s=grace_s, scheduler=sched)
            except LrfrError as exc:
                status = f"not stopped: {exc}"
            out[run_id] = status
            if on_done is not None:
                on_done(run_id, status)
    finally:
        sched.store.close()
        store.close()
    return out


def resume_runs(db: Path, run_ids: Sequence[int]) -> dict[int, str]:
    """Queue killed or failed runs again; they continue from their last checkpoint as the same run."""
    from lrfr_tui.worker import check_checkpoint_resumable

    store = Store(db, create=False)
    out = {}
    try:
        for run_id in run_ids:
            try:
                check_checkpoint_resumable(db, store.get_run(run_id))
                store.requeue(run_id)  # atomic: a resume from the CLI at the same moment wins or loses whole
            except LrfrError as exc:
                out[run_id] = str(exc).removeprefix(f"run {run_id} ")
                continue
            out[run_id] = "queued to resume"
    finally:
        store.close()
    return out


def tag_runs(db: Path, run_ids: Sequence[int], text: str) -> dict[int, list[str]]:
    """``paper best -old``: add tags, remove those with a leading '-'."""
    words = text.replace(",", " ").split()
    add = [w for w in words if not w.startswith("-")]
    remove = [w[1:] for w in words if w.startswith("-") and len(w) > 1]
    if not add and not remove:
        raise LrfrError("type tags to add (paper best) or remove (-old)")
    store = Store(db, create=False)
    out = {}
    try:
        for run_id in run_ids:
            if add:
                out[run_id] = store.set_tags(run_id, add)
            if remove:
                out[run_id] = store.set_tags(run_id, remove, remove=True)
    finally:
        store.close()
    return out


# ---------------------------------------------------------------- text helpers

def short_duration(seconds: float | None) -> str:
    """3s 4m 2h 5d: one unit, for narrow columns."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"

