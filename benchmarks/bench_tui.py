"""TUI refresh cost on a big runs.db: the runs screen and the detail screen, in ms per refresh.

Builds (or reuses) a database of RUNS runs x POINTS metric points each (default 1,000 x 10,000 =
10M metric rows over 5 keys, written with executemany in large transactions, the index rebuilt
once at the end), then measures, for each screen, the two halves of one refresh:

- worker: what the screen's thread does each poll (``RunsModel.snapshot`` / ``DetailModel.snapshot``),
  first (cold caches) and then steady state, with nothing new and with new points arriving;
- UI: what the event loop does with the snapshot (diff into the table / redraw the plots), timed
  inside a headless ``LrfrApp`` (``App.run_test``), plus one full frame render.

    .venv/bin/python benchmarks/bench_tui.py                      # full size (about 1 GB temp file)
    .venv/bin/python benchmarks/bench_tui.py --runs 200 --points 2000 --db /tmp/tui-bench.db
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from engine.config import RunConfig, flatten, to_dict
from lrfr_tui.runsdb import Store

KEYS = ("loss", "loss_cls", "loss_dist", "lr", "images_per_s")
NOW = time.time()


def build(path: Path, runs: int, points: int, seed: int = 0) -> None:
    """``runs`` runs (1% running, 1% queued, 3% failed, the rest finished with results), ``points``
    metric rows per run spread over KEYS."""
    rng = random.Random(seed)
    Store(path).close()  # the schema, through the real migrations
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    # bulk-load without the metrics indexes, then build them once (much faster than row-by-row upkeep)
    index_sql = conn.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='metrics' "
                             "AND sql IS NOT NULL").fetchall()
    for name, _ in index_sql:
        conn.execute(f"DROP INDEX {name}")
    cfg = RunConfig()
    config, params = json.dumps(to_dict(cfg), sort_keys=True), [(k, json.dumps(v)) for k, v in flatten(cfg).items()]
    steps = max(1, points // len(KEYS))
    conn.execute("BEGIN")
    for i in range(1, runs + 1):
        status = ("running" if i % 100 == 0 else "queued" if i % 100 == 1 else "failed" if i % 33 == 0
                  else "finished")
        created = NOW - (runs - i) * 600
        done = steps
        conn.execute(
            "INSERT INTO runs (id, name, preset, status, created, started, ended, host, command, launcher, config, "
            "step, total_steps, heartbeat, group_name, gpus_requested, queue_pos) "
            "VALUES (?, ?, 'r34', ?, ?, ?, ?, 'gpu-box', 'lrfr run', 'local', ?, ?, ?, ?, ?, 1, ?)",
            (i, f"run-{i:04d} lr={rng.choice([0.1, 0.05, 0.01])}", status, created,
             None if status == "queued" else created + 5, created + 500 if status in ("finished", "failed") else None,
             config, 0 if status == "queued" else done, 2 * steps if status == "running" else steps,
             NOW if status == "running" else None,
             f"sweep-{i // 50}", i))
        conn.executemany("INSERT INTO params (run_id, key, value) VALUES (?, ?, ?)", [(i, k, v) for k, v in params])
        if status != "queued":
            end = NOW if status == "running" else created + 500
            rows = []
            for s in range(1, done + 1):
                wall = end - (done - s) * 0.05
                loss = 8 * math.exp(-s / (steps / 4)) + 1 + rng.gauss(0, 0.05)
                rows += [(i, "loss", s, loss, None, wall), (i, "loss_cls", s, 0.9 * loss, None, wall),
                         (i, "loss_dist", s, 0.1 * loss, None, wall), (i, "lr", s, 0.1, None, wall),
                         (i, "images_per_s", s, 2000 + rng.gauss(0, 20), None, wall)]
            conn.executemany("INSERT INTO metrics (run_id, key, step, value, special, wall) VALUES (?, ?, ?, ?, ?, ?)", rows[:points])
        if status == "finished":
            lfw = rng.uniform(0.97, 0.995)
            res = [("lfw", "insightface_10fold", "acc", None, lfw), ("xqlfw", "xqlfw_official", "acc", None, lfw - 0.1)]
            res += [("scface", "zero_shot", m, None, rng.uniform(0.4, 0.9))
                    for m in ("rank1_d1", "rank1_d2", "rank1_d3", "rank1_mean")]
            res += [("lowres_lfw", "insightface_10fold_second", "acc", r, lfw - (112 - r) / 400)
                    for r in (112, 56, 28, 20, 14, 7)]
            conn.executemany("INSERT INTO results (run_id, benchmark, protocol, metric, resolution, value, created) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(i, b, p, m, r, v, created + 600) for b, p, m, r, v in res])
        if i % 50 == 0:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            print(f"\r  building: {i}/{runs} runs", end="", flush=True)
    conn.execute("COMMIT")
    print("\r  building: indexing metrics ...", end="", flush=True)
    for _, sql in index_sql:
        conn.execute(sql)
    conn.execute("ANALYZE")
    conn.close()
    print("\r" + " " * 40 + "\r", end="")


def ms(samples: list[float]) -> str:
    return f"{1000 * statistics.median(samples):8.1f} ms" + (f"  (max {1000 * max(samples):.1f})"
                                                              if len(samples) > 1 else "")


def timed(fn: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def add_points(db: Path, run_id: int, count: int) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    last = conn.execute("SELECT COALESCE(MAX(step), 0) FROM metrics WHERE run_id=?", (run_id,)).fetchone()[0]
    now = time.time()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO metrics (run_id, key, step, value, special, wall) VALUES (?, ?, ?, ?, NULL, ?)",
                     [(run_id, k, last + s, 1.0, now) for s in range(1, count + 1) for k in KEYS])
    conn.execute("UPDATE runs SET step = step + ? WHERE id = ?", (count, run_id))
    conn.execute("COMMIT")
    conn.close()


def bench_workers(db: Path, repeats: int, running_id: int) -> None:
    from lrfr_tui.tui_models import DetailModel, RunsModel

    print("worker thread (reading runs.db):")
    model = RunsModel(db)
    first, snap = timed(lambda: model.snapshot("", time.time()), 1)
    print(f"  runs screen, first snapshot ({len(snap.lines)} runs, sparkline budget)    {ms(first)}")
    t0, passes = time.perf_counter(), 1
    while not snap.complete:
        snap = model.snapshot("", time.time())
        passes += 1
    print(f"  runs screen, all sparklines read (cold cache, {passes} snapshots)       "
          f"{1000 * (time.perf_counter() - t0 + first[0]):8.1f} ms")
    steady, _ = timed(lambda: model.snapshot("", time.time()), repeats)
    print(f"  runs screen, steady refresh                                  {ms(steady)}")
    for text in ("status=finished lfw.acc>0.99", "optim.lr=0.1 tag=paper", "min(loss)<1.2"):
        t0 = time.perf_counter()
        model.snapshot(text, time.time())
        typed = time.perf_counter() - t0
        t, snap = timed(lambda t=text: model.snapshot(t, time.time()), repeats)
        print(f"  runs screen, filter {text!r:32} typed {1000 * typed:6.1f} ms, then {ms(t)}"
              f"  -> {len(snap.lines)} runs")
    model.close()

    detail = DetailModel(db, running_id)
    first, snap = timed(lambda: detail.snapshot(0.0, 240, time.time()), 1)
    points = sum(len(c.xs) for c in snap.curves.values())
    print(f"  detail screen, first snapshot (all points, downsampled to {points} drawn)  {ms(first)}")
    steady, _ = timed(lambda: detail.snapshot(0.0, 240, time.time()), repeats)
    print(f"  detail screen, steady refresh (nothing new)                  {ms(steady)}")
    samples = []
    for _ in range(repeats):
        add_points(db, running_id, 20)
        t, _ = timed(lambda: detail.snapshot(0.0, 240, time.time()), 1)
        samples += t
    print(f"  detail screen, refresh with 20 new steps                     {ms(samples)}")
    t, _ = timed(lambda: detail.snapshot(0.9, 240, time.time()), 1)
    print(f"  detail screen, smoothing changed (recompute all curves)      {ms(t)}")
    detail.close()


async def bench_ui(db: Path, repeats: int, running_id: int, size: tuple[int, int]) -> None:
    from lrfr_tui.app import LrfrApp
    from lrfr_tui.screens.detail import DetailScreen
    from lrfr_tui.screens.runs import RunsScreen
    from lrfr_tui.tui_models import DetailModel, RunsModel
    from lrfr_tui.widgets.loss_plot import CurvePlot

    print(f"UI thread (event loop, {size[0]}x{size[1]} terminal):")
    app = LrfrApp(db, drive=False, poll_s=3600.0, discover=lambda: [])
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + 120
        while not (isinstance(app.screen, RunsScreen) and app.screen.loads) and time.monotonic() < deadline:
            await pilot.pause(0.1)
        screen = app.screen
        model = RunsModel(db)
        snap = model.snapshot("", time.time())
        while not snap.complete:
            snap = model.snapshot("", time.time())
        screen.table.clear()
        screen.table._shown.clear()
        t, _ = timed(lambda: screen.on_runs_screen_loaded(RunsScreen.Loaded(snap)), 1)
        print(f"  runs screen, first fill ({len(snap.lines)} rows)                        {ms(t)}")
        same = []
        for _ in range(repeats):
            snap = model.snapshot("", time.time())
            t, _ = timed(lambda s=snap: screen.on_runs_screen_loaded(RunsScreen.Loaded(s)), 1)
            same += t
        print(f"  runs screen, live refresh (only changed cells updated)      {ms(same)}")
        frames = []
        for _ in range(repeats):
            screen.table.refresh()
            t0 = time.perf_counter()
            app.screen._compositor.render_update(full=True)
            frames.append(time.perf_counter() - t0)
        print(f"  runs screen, one full frame render                           {ms(frames)}")
        model.close()

        app.push_screen(DetailScreen(running_id))
        while not (isinstance(app.screen, DetailScreen) and app.screen.loads) and time.monotonic() < deadline:
            await pilot.pause(0.1)
        await pilot.pause(0.3)
        detail = app.screen
        plot = detail.query_one("#plot-loss", CurvePlot)
        dmodel = DetailModel(db, running_id)
        dsnap = dmodel.snapshot(0.0, plot.buckets(), time.time())
        detail._results_key = None
        t, _ = timed(lambda: detail.on_detail_screen_loaded(DetailScreen.Loaded(dsnap)), 1)
        unchanged, _ = timed(lambda: detail.on_detail_screen_loaded(DetailScreen.Loaded(dsnap)), repeats)
        redraws = []
        for _ in range(repeats):
            add_points(db, running_id, 20)
            dsnap = dmodel.snapshot(0.0, plot.buckets(), time.time())
            t1, _ = timed(lambda s=dsnap: detail.on_detail_screen_loaded(DetailScreen.Loaded(s)), 1)
            t0 = time.perf_counter()
            plot.render()  # plotext builds the figure at the widget's size
            redraws.append(t1[0] + time.perf_counter() - t0)
        print(f"  detail screen, refresh with nothing new (no redraw)          {ms(unchanged)}")
        print(f"  detail screen, refresh with new points (+ plotext build)     {ms(redraws)}  "
              f"[{plot.points} points drawn, plot {plot.size.width}x{plot.size.height}]")
        dmodel.close()
        await pilot.press("escape")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=10_000, help="metric rows per run (over 5 keys)")
    parser.add_argument("--db", type=Path, default=None, help="reuse/build this database (default: a temp file)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=120)
    parser.add_argument("--height", type=int, default=40)
    args = parser.parse_args()

    tmp = None
    db = args.db
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="lrfr-bench-tui-")
        db = Path(tmp.name) / "runs.db"
    if not db.exists():
        t0 = time.perf_counter()
        build(db, args.runs, args.points)
        print(f"built {db}: {args.runs} runs x {args.points} metric points in {time.perf_counter() - t0:.0f} s "
              f"({db.stat().st_size / 2 ** 20:.0f} MiB)")
    conn = sqlite3.connect(db)
    runs, rows = conn.execute("SELECT COUNT(*), (SELECT COUNT(*) FROM metrics) FROM runs").fetchone()
    running_id = conn.execute("SELECT id FROM runs WHERE status='running' ORDER BY id DESC").fetchone()[0]
    conn.close()
    print(f"database: {runs} runs, {rows:,} metric rows; detail screen on running run {running_id}")
    bench_workers(db, args.repeats, running_id)
    asyncio.run(bench_ui(db, args.repeats, running_id, (args.width, args.height)))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
