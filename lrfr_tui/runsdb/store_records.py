"""What ``Store`` writes and reads about what a run produced: metric series, results, per-item outcomes,
events and artifacts. A mixin only so that store.py stays one screenful of concerns; these are Store methods."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lrfr_tui.runsdb.codec import decode, pack_outcomes
from lrfr_tui.runsdb.run import result_source_key


class RecordsMixin:
    """Needs ``self.conn`` and ``self.transaction()`` (``Store``)."""

    def metric_series(self, run_id: int, key: str) -> list[tuple[int, float]]:
        rows = self.conn.execute(
            "SELECT step, value, special FROM metrics WHERE run_id=? AND key=? ORDER BY step", (run_id, key))
        return [(step, decode(value, special)) for step, value, special in rows]

    def add_results(self, run_id: int, rows: Iterable[tuple[str, str, str, int | None, float]],
                    source: dict[str, Any] | str | None = None) -> None:
        """Results measured on ``source`` (see ``_insert_result``); one transaction."""
        now = time.time()
        with self.transaction():
            for b, p, m, r, v in rows:
                self._insert_result(run_id, b, p, m, r, v, now, source)

    def _insert_result(self, run_id: int, benchmark: str, protocol: str, metric: str, resolution: int | None,
                       value: float, wall: float, source: dict[str, Any] | str | None) -> None:
        """A result with a known source replaces the run's earlier one of the same (benchmark, protocol,
        metric, resolution, source_key) - a re-evaluation never adds a duplicate - and keeps those measured
        on other data. Without a source (an older worker) it is added, as before."""
        data = json.loads(source) if isinstance(source, str) else source
        key = result_source_key(data)
        if key is not None:
            self.conn.execute("DELETE FROM results WHERE run_id=? AND benchmark=? AND protocol=? AND metric=? "
                              "AND resolution IS ? AND source_key=?",
                              (run_id, benchmark, protocol, metric, resolution, key))
        self.conn.execute(
            "INSERT INTO results (run_id, benchmark, protocol, metric, resolution, value, created, source, "
            "source_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, benchmark, protocol, metric, resolution, value, wall,
             json.dumps(data, sort_keys=True) if data else None, key))

    def add_outcomes(self, run_id: int, benchmark: str, protocol: str, metric: str, resolution: int | None,
                     correct, source: dict[str, Any] | None = None) -> None:
        n, bits = pack_outcomes(correct)
        with self.transaction():
            self._insert_outcomes(run_id, benchmark, protocol, metric, resolution, n, bits, time.time(), source)

    def _insert_outcomes(self, run_id: int, benchmark: str, protocol: str, metric: str, resolution: int | None,
                         n: int, bits: bytes, wall: float, source: dict[str, Any] | str | None) -> None:
        """The per-item correctness behind a result; replaces the run's earlier one on the same data (as
        ``_insert_result`` does for the value)."""
        key = result_source_key(json.loads(source) if isinstance(source, str) else source)
        if len(bits) != (n + 7) // 8:
            raise ValueError(f"outcomes of {benchmark}/{protocol} {metric}: {len(bits)} bytes for {n} items")
        self.conn.execute("DELETE FROM outcomes WHERE run_id=? AND benchmark=? AND protocol=? AND metric=? "
                          "AND resolution IS ? AND source_key IS ?",
                          (run_id, benchmark, protocol, metric, resolution, key))
        self.conn.execute("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          (run_id, benchmark, protocol, metric, resolution, key, n, bits, wall))

    def results(self, run_id: int) -> list[dict[str, Any]]:
        """The latest value of each (benchmark, protocol, metric, resolution): a re-evaluation wins. Each
        with its ``source`` (dict; None: unknown, stored before schema v6) and ``source_key``."""
        rows = self.conn.execute(
            "SELECT benchmark, protocol, metric, resolution, value, source, source_key FROM results WHERE rowid IN ("
            "  SELECT MAX(rowid) FROM results WHERE run_id=? "
            "  GROUP BY benchmark, protocol, metric, COALESCE(resolution, -1)) "
            "ORDER BY benchmark, protocol, metric, resolution DESC", (run_id,))
        out = []
        for r in rows:
            row = dict(r)
            try:
                row["source"] = json.loads(row["source"]) if row["source"] else None
            except ValueError:
                row["source"] = None
            out.append(row)
        return out

    def add_event(self, run_id: int, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                          (run_id, kind, message, json.dumps(data or {}, default=str), time.time()))

    def add_artifact(self, run_id: int, kind: str, path: Path) -> None:
        self.conn.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?)",
                          (run_id, kind, str(path), time.time()))

    def artifacts(self, run_id: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT kind, path FROM artifacts WHERE run_id=?", (run_id,))]
