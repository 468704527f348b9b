"""runs.db speed: metric writes from a training process, and the query commands on a big database.

(a) writes: rows/s of ``Store.add_metrics`` at several batch sizes, and the cost per training step
    of reporting 6 metrics through ``StoreReporter`` (queued for the run's StoreWriter thread, which
    writes every 2 s): what the training thread pays, and how long the writer then takes to drain.
(b) queries: ``lrfr ls`` (``select_runs``: plain, limited, with a last-value / best-of metric
    filter, a result filter, a result sort, a param filter), ``lrfr results`` (``results_matrix``)
    and ``lrfr show`` (``run_detail``) over a database of RUNS runs x POINTS metric points each
    (default 1,000 x 10,000 = 10M metric rows, built with executemany in large transactions).
    The index metrics(run_id, key, value) that the best-of filters use ships in the schema (a
    migration adds it), so the figures are the schema as users get it.

    .venv/bin/python benchmarks/bench_store.py                        # full size (~1.2 GB temp file)
    .venv/bin/python benchmarks/bench_store.py --runs 100 --points 2000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from engine.config import RunConfig, flatten, to_dict
from lrfr_tui import results_table, run_views, runsdb
from lrfr_tui.runsdb import Store
from lrfr_tui.worker import StoreReporter, StoreWriter

KEYS = ("loss", "loss_cls", "loss_dist", "lr", "images_per_s")
STEP_KEYS = ("loss", "loss_cls", "loss_dist", "lr", "epoch", "images_per_s")  # what the trainer reports


def timed(fn: Callable[[], object], repeats: int = 3) -> tuple[float, float, object]:
    """(first, best of the rest) wall seconds, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times[0], min(times[1:] or times), result


# ---------------------------------------------------------------- (a) writes


def bench_writes(tmp: Path, batches=(1, 10, 100, 500, 5000)) -> None:
    print("== (a) metric writes (Store.add_metrics, WAL, synchronous=NORMAL)")
    path = tmp / "writes.db"
    store = Store(path)
    cfg = RunConfig()
    run_id = store.create_run(to_dict(cfg), flatten(cfg), "bench")
    step = 0
    rng = random.Random(0)
    for batch in batches:
        rows, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 1.5:
            if step >= 10_000:  # a new run every 10,000 points, like a database of many runs
                run_id, step = store.create_run(to_dict(cfg), flatten(cfg), "bench"), 0
            points = [(KEYS[i % len(KEYS)], step + i // len(KEYS), rng.random(), time.time()) for i in range(batch)]
            store.add_metrics(run_id, points)
            rows += batch
            step += batch
        elapsed = time.perf_counter() - t0
        print(f"  batch {batch:>5}: {rows / elapsed:>10,.0f} rows/s  ({elapsed / (rows / batch) * 1e3:.2f} ms per "
              f"transaction)")
    run_id = store.create_run(to_dict(cfg), flatten(cfg), "bench")
    writer = StoreWriter(path, run_id, tmp).start()
    reporter = StoreReporter(writer)
    reporter.start(10**9, 0)
    n = 50_000
    values = {k: 0.0 for k in STEP_KEYS}
    t0 = time.perf_counter()
    for s in range(1, n + 1):
        values["loss"] = 1.0 / s + rng.random()
        values["images_per_s"] = 400 + rng.random()
        reporter.metrics(s, values)
    elapsed = time.perf_counter() - t0
    t1 = time.perf_counter()
    assert writer.close(600), writer.last_error
    drained = time.perf_counter() - t1
    print(f"  StoreReporter, {len(STEP_KEYS)} metrics per step, {n:,} steps in one run: {elapsed / n * 1e6:.1f} us per step "
          f"in the training thread; the writer thread drained the rest in {drained:.2f} s "
          f"({n * len(STEP_KEYS) / (elapsed + drained):,.0f} rows/s overall, a transaction every "
          f"{writer.flush_every_s:g} s)")
    store.close()


# ---------------------------------------------------------------- (b) a big database


def build(path: Path, runs: int, points: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    store = Store(path)
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -500000")
    cfg = RunConfig()
    steps = max(1, points // len(KEYS))
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    now = time.time() - runs * 600
    for i in range(1, runs + 1):
        cfg.name = f"run{i}"
        cfg.preset = rng.choice(["r34", "r50", "tiny", "maug", "baseline"])
        cfg.optim.lr = rng.choice([0.1, 0.05, 0.01])
        cfg.loss.lambda_ = rng.choice([0.5, 1.0, 2.0, 5.0])
        status = rng.choices(["finished", "failed", "killed", "running", "queued"], [80, 8, 4, 4, 4])[0]
        created = now + i * 600
        conn.execute(
            "INSERT INTO runs (id, name, preset, status, created, started, ended, host, command, launcher, config, "
            "group_name, step, total_steps) VALUES (?, ?, ?, ?, ?, ?, ?, 'bench', 'lrfr run', 'local', ?, ?, ?, ?)",
            (i, cfg.name, cfg.preset, status, created, created + 5, created + 500 if status != "running" else None,
             json.dumps(to_dict(cfg)), f"g{i % 20}", steps, steps))
        conn.executemany("INSERT INTO params (run_id, key, value) VALUES (?, ?, ?)",
                         [(i, k, json.dumps(v)) for k, v in flatten(cfg).items()])
        if rng.random() < 0.1:
            conn.execute("INSERT INTO tags (run_id, tag) VALUES (?, 'paper')", (i,))
        # step-major, as a trainer writes them
        floor = rng.uniform(0.2, 2.0)
        rows = []
        for s in range(1, steps + 1):
            base = floor + 5.0 * math.exp(-s / (steps / 5))
            wall = created + s
            rows += [(i, "loss", s, base + rng.random() * 0.1, None, wall),
                     (i, "loss_cls", s, base * 0.8, None, wall), (i, "loss_dist", s, base * 0.2, None, wall),
                     (i, "lr", s, 0.1, None, wall), (i, "images_per_s", s, 400 + rng.random() * 50, None, wall)]
        conn.executemany("INSERT INTO metrics (run_id, key, step, value, special, wall) VALUES (?, ?, ?, ?, ?, ?)",
                         rows[:points])
        if status == "finished":
            lfw = rng.uniform(0.97, 0.995)
            res = [("lfw", "insightface_10fold", m, None, lfw + d) for m, d in (("acc", 0), ("acc_std", -0.97),
                                                                             ("threshold", 0.3))]
            res += [("xqlfw", p, "acc", None, rng.uniform(0.7, 0.93)) for p in ("xqlfw_official", "insightface_10fold")]
            for p in ("zero_shot", "finetune"):
                res += [("scface", p, f"rank{k}_{d}", None, rng.uniform(0.4, 0.99))
                        for k in (1, 5) for d in ("d1", "d2", "d3", "mean")]
            res += [("lowres_lfw", "insightface_10fold_second", m, r, rng.uniform(0.5, 0.99))
                    for r in (112, 56, 42, 28, 20, 14, 10, 7) for m in ("acc", "ssim")]
            conn.executemany("INSERT INTO results (run_id, benchmark, protocol, metric, resolution, value, created) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(i, b, p, m, r, v, created + 600) for b, p, m, r, v in res])
        if i % 50 == 0:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            done = i / runs
            elapsed = time.perf_counter() - t0
            print(f"\r  building: {i}/{runs} runs, {elapsed:.0f} s (eta {elapsed / done - elapsed:.0f} s)",
                  end="", flush=True, file=sys.stderr)
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    print(file=sys.stderr)


def bench_queries(path: Path, label: str) -> None:
    conn = runsdb.open_db(path)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("ls (all runs)", lambda: runsdb.select_runs(conn)),
        ("ls --limit 20", lambda: runsdb.select_runs(conn, limit=20)),
        ("ls status=running", lambda: runsdb.select_runs(conn, ["status=running"])),
        ("ls tag=paper", lambda: runsdb.select_runs(conn, ["tag=paper"])),
        ("ls optim.lr=0.1", lambda: runsdb.select_runs(conn, ["optim.lr=0.1"])),
        ("ls 'lfw.acc>0.99'", lambda: runsdb.select_runs(conn, ["lfw.acc>0.99"])),
        ("ls --sort -xqlfw.acc --limit 20", lambda: runsdb.select_runs(conn, sort="-xqlfw.acc", limit=20)),
        ("ls 'loss<1' (last value)", lambda: runsdb.select_runs(conn, ["loss<1"])),
        ("ls 'min(loss)<1' (best of)", lambda: runsdb.select_runs(conn, ["min(loss)<1"])),
        ("ls --sort 'min(loss)' --limit 20", lambda: runsdb.select_runs(conn, sort="min(loss)", limit=20)),
        ("ls status=running 'min(loss)<1'", lambda: runsdb.select_runs(conn, ["status=running", "min(loss)<1"])),
        ("results (all runs)", lambda: results_table.results_matrix(conn)),
        ("results --group g3 --baseline 1", lambda: results_table.results_matrix(conn, group="g3", baseline=1)),
        ("show 500", lambda: run_views.run_detail(conn, path, min(500, _count(conn)))),
    ]
    print(f"== (b) queries, {label}   (first call / best of 2 more, seconds)")
    for name, fn in cases:
        first, best, result = timed(fn)
        size = f"{len(result)} runs" if isinstance(result, list) else \
            f"{len(result.rows)} x {len(result.columns)}" if isinstance(result, results_table.Matrix) else ""
        print(f"  {name:<38} {first:8.3f} {best:8.3f}   {size}")
    conn.close()


def _count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=10_000, help="metric rows per run")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the database (default: a temp dir)")
    parser.add_argument("--skip-writes", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_writes:
            bench_writes(tmp)
        path = tmp / "big.db"
        print(f"== building {args.runs:,} runs x {args.points:,} metric points = {args.runs * args.points:,} rows")
        t0 = time.perf_counter()
        build(path, args.runs, args.points)
        build_s = time.perf_counter() - t0
        print(f"  built in {build_s:.0f} s ({args.runs * args.points / build_s:,.0f} rows/s), "
              f"{os.path.getsize(path) / 2**20:,.0f} MiB")
        bench_queries(path, "schema as shipped")


if __name__ == "__main__":
    main()
