"""The run journal's speed: what a journaled worker pays per step, what ingesting costs the scheduler.

(a) the training thread's cost per step of reporting 6 metrics through ``StoreReporter`` into a
    ``JournalWriter`` (queued; the writer thread appends and fsyncs every ``flush_every_s``), and the
    journal's size per step;
(b) ``journal_ingest.ingest`` of that journal into runs.db: records/s and metric points/s, and the
    cost of a pass that finds nothing new (what every scheduler pass pays per running journaled run).

    .venv/bin/python benchmarks/bench_journal.py --steps 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from engine.config import RunConfig, flatten, to_dict
from lrfr_tui.journal import JOURNAL_FILE, JournalWriter, read_journal
from lrfr_tui.runsdb import Store, journal_ingest
from lrfr_tui.worker import StoreReporter

STEP_KEYS = ("loss", "loss_cls", "loss_dist", "lr", "epoch", "images_per_s")  # what the trainer reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--flush-every", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "runs.db"
        store = Store(db)
        cfg = RunConfig()
        run_id = store.create_run(to_dict(cfg), flatten(cfg), "bench")
        run_dir = Path(tmp) / "runs" / str(run_id)
        store.claim(run_id, "bench", [], "local", run_dir / "train.log", run_dir)
        journal_ingest.register(store, run_id)
        uuid = store.get_run(run_id).uuid

        writer = JournalWriter(run_dir, run_id, uuid, flush_every_s=args.flush_every).start()
        reporter = StoreReporter(writer)
        reporter.start(args.steps, 0)
        t0 = time.perf_counter()
        for step in range(1, args.steps + 1):
            reporter.metrics(step, {k: 1.0 / step for k in STEP_KEYS})
        put_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert writer.close(wait_s=120)
        drain_s = time.perf_counter() - t0
        size = (run_dir / JOURNAL_FILE).stat().st_size
        records = len(read_journal(run_dir / JOURNAL_FILE).records)
        print(f"== (a) {args.steps} steps x {len(STEP_KEYS)} metrics into the journal "
              f"(flush every {args.flush_every} s)")
        print(f"   training thread: {put_s / args.steps * 1e6:.1f} us per step; writer drained the rest in "
              f"{drain_s * 1e3:.0f} ms; {records} records, {size / args.steps:.0f} bytes per step")

        t0 = time.perf_counter()
        done = journal_ingest.ingest(store, run_id)
        ingest_s = time.perf_counter() - t0
        points = store.conn.execute("SELECT COUNT(*) FROM metrics WHERE run_id=?", (run_id,)).fetchone()[0]
        t0 = time.perf_counter()
        for _ in range(100):
            journal_ingest.ingest(store, run_id)
        idle_s = (time.perf_counter() - t0) / 100
        print(f"== (b) ingest: {done.applied} records ({points} metric points) in {ingest_s * 1e3:.0f} ms = "
              f"{done.applied / ingest_s:,.0f} records/s, {points / ingest_s:,.0f} points/s; "
              f"a pass with nothing new: {idle_s * 1e6:.0f} us")
        store.close()


if __name__ == "__main__":
    main()
