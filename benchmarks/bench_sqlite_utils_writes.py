"""Metric writes: ``Store.add_metrics`` (one ``executemany`` per batch) against sqlite-utils' ``insert_all``.

The hot write path of runs.db is a worker's metric batch (every 2 s, 6 metrics per training step). sqlite-utils
is a dependency of lrfr, and its ``insert_all(..., replace=True)`` is the library equivalent of that write, so
this measures both on the same database, in the same transaction shape (``BEGIN IMMEDIATE`` .. ``COMMIT`` per
batch, WAL, synchronous=NORMAL). The methods take turns within each round, so a machine that is busy with
something else slows all of them alike; the median of the rounds is reported.

    .venv/bin/python benchmarks/bench_sqlite_utils_writes.py                 # 7 rounds, 20,000 rows each
    .venv/bin/python benchmarks/bench_sqlite_utils_writes.py --rounds 3 --rows 5000
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

from engine.config import RunConfig, flatten, to_dict
from lrfr_tui.runsdb import Store
from lrfr_tui.runsdb.codec import encode

KEYS = ("loss", "loss_cls", "loss_dist", "lr", "epoch", "images_per_s")  # what the trainer reports per step
COLUMNS = ("run_id", "key", "step", "value", "special", "wall")


def executemany(store: Store, run_id: int, points: list[tuple[str, int, float, float]]) -> None:
    store.add_metrics(run_id, points)


def insert_all_dicts(store: Store, run_id: int, points: list[tuple[str, int, float, float]]) -> None:
    db = Database(store.conn, recursive_triggers=False, execute_plugins=False)
    rows = (dict(zip(COLUMNS, (run_id, k, s, *encode(v), w), strict=True)) for k, s, v, w in points)
    with store.transaction():
        db["metrics"].insert_all(rows, replace=True, batch_size=len(points))


def insert_all_lists(store: Store, run_id: int, points: list[tuple[str, int, float, float]]) -> None:
    """sqlite-utils' list mode: a header row, then tuples (no dict per row)."""
    db = Database(store.conn, recursive_triggers=False, execute_plugins=False)
    rows = [COLUMNS, *((run_id, k, s, *encode(v), w) for k, s, v, w in points)]
    with store.transaction():
        db["metrics"].insert_all(rows, replace=True, batch_size=len(points))


METHODS: dict[str, Callable[[Store, int, list], None]] = {
    "executemany (Store.add_metrics)": executemany,
    "sqlite-utils insert_all, dicts": insert_all_dicts,
    "sqlite-utils insert_all, lists": insert_all_lists,
}


def one_trial(store: Store, write: Callable, batch: int, rows: int, rng: random.Random) -> float:
    """rows/s of writing ``rows`` points in batches of ``batch`` into a new run."""
    cfg = RunConfig()
    run_id = store.create_run(to_dict(cfg), flatten(cfg), "bench")
    batches = [[(KEYS[i % len(KEYS)], (b * batch + i) // len(KEYS), rng.random(), time.time()) for i in range(batch)]
               for b in range(max(1, rows // batch))]
    t0 = time.perf_counter()
    for points in batches:
        write(store, run_id, points)
    return batch * len(batches) / (time.perf_counter() - t0)


def check_same_rows(tmp: Path) -> None:
    """The three write the same rows (NaN and infinities through the codec), or the comparison means nothing."""
    points = [("loss", 1, 0.5, 1.0), ("loss", 2, float("nan"), 2.0), ("lr", 2, float("inf"), 2.0)]
    dumps = []
    for i, write in enumerate(METHODS.values()):
        store = Store(tmp / f"check{i}.db")
        run_id = store.create_run(to_dict(RunConfig()), {}, "bench")
        write(store, run_id, points)
        write(store, run_id, points[1:])  # replaces (run, key, step) as add_metrics does
        dumps.append(store.conn.execute("SELECT key, step, value, special, wall FROM metrics ORDER BY rowid").fetchall())
        store.close()
    if any([tuple(r) for r in d] != [tuple(r) for r in dumps[0]] for d in dumps):
        sys.exit(f"the methods wrote different rows: {dumps}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rows", type=int, default=20_000, help="points per trial")
    parser.add_argument("--batches", default="10,100,500,5000")
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        check_same_rows(tmp)
        store = Store(tmp / "writes.db")
        print(f"== metric writes, median of {args.rounds} rounds of {args.rows:,} rows (methods take turns)")
        for batch in (int(b) for b in args.batches.split(",")):
            figures: dict[str, list[float]] = {name: [] for name in METHODS}
            for r in range(args.rounds):
                order = list(METHODS.items())
                order = order[r % len(order):] + order[:r % len(order)]  # no method always runs first
                for name, write in order:
                    figures[name].append(one_trial(store, write, batch, args.rows, rng))
            base = statistics.median(figures["executemany (Store.add_metrics)"])
            for name, values in figures.items():
                median = statistics.median(values)
                print(f"  batch {batch:>5}  {name:<32} {median:>10,.0f} rows/s  ({median / base:.2f}x; "
                      f"rounds {min(values):,.0f}..{max(values):,.0f})")
        store.close()


if __name__ == "__main__":
    main()
