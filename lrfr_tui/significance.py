"""How sure a table cell is, and whether a difference to the baseline is real, from the stored per-item
correctness (the ``outcomes`` table: one bit per pair or probe behind an accuracy result).

Rules, in one place:

- **Comparable**: two runs' outcomes for a column are compared only when they measured the same items:
  the same ``source_key`` (same stand-in, or the same catalog data by checksum) and the same item count.
- **Pairing runs**: a configuration's runs are matched with the baseline's by training seed
  (``train.seed``); runs whose seed the other side lacks are then matched in id order. One run each
  is the plain single-seed case.
- **Test**: McNemar's test (``engine.evaluate.uncertainty.mcnemar``: exact binomial below 25 discordant
  items, chi-square with continuity correction above) on the discordant counts summed over the matched
  run pairs, i.e. on the seed-matched item vectors laid end to end. Pooling seeds this way counts
  every (seed, item) decision once; it tests the items, not the spread over seeds, which is shown
  beside it as the ± std.
- **Marks**: ``**`` p < 0.01, ``*`` p < 0.05, nothing otherwise (also when nothing is comparable).
- **Interval**: one run: its stored 95% bootstrap interval (``<metric>_ci95_lo``/``_hi``, what the
  evaluation printed). Several runs: the 95% percentile bootstrap interval (1,000 resamples, seed 0) of
  their pooled items, i.e. of the mean over seeds when the seeds saw the same items.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.evaluate.uncertainty import bootstrap_ci, discordant_counts, mcnemar
from lrfr_tui.runsdb.outcomes import has_outcomes_table, run_outcomes, run_seeds

SIGNIFICANT = ((0.01, "**"), (0.05, "*"))
SIGNIFICANCE_LEGEND = ("[lo, hi]: 95% bootstrap interval over pairs/probes; * p < 0.05, ** p < 0.01: differs "
                       "from the baseline row (McNemar test on the same pairs/probes, seeds paired and pooled)")
N_BOOT = 1000


@dataclass(frozen=True)
class Comparison:
    """A configuration against the baseline in one column: McNemar on the pooled discordant items."""

    p: float
    b: int  # items the configuration gets right and the baseline wrong
    c: int  # items the baseline gets right and the configuration wrong
    n: int  # items compared (over all matched run pairs)
    run_pairs: int

    @property
    def mark(self) -> str:
        return next((mark for limit, mark in SIGNIFICANT if self.p < limit), "")

    def as_dict(self) -> dict:
        return {"test": "mcnemar", "p": self.p, "b": self.b, "c": self.c, "n": self.n,
                "run_pairs": self.run_pairs, "mark": self.mark}


class CellUncertainty:
    """Per-column lookups for a table row holding ``intervals`` and ``significance`` lists (either may be
    shorter than the row: no interval, no test)."""

    intervals: list[tuple[float, float] | None]
    significance: list[Comparison | None]

    def interval(self, j: int) -> tuple[float, float] | None:
        return self.intervals[j] if len(self.intervals) > j else None

    def mark(self, j: int) -> str:
        """``*`` / ``**`` where column ``j`` differs significantly from the baseline's."""
        test = self.significance[j] if len(self.significance) > j else None
        return test.mark if test is not None else ""


def match_runs(conn: sqlite3.Connection, runs: Sequence[int], baseline_runs: Sequence[int]) -> list[tuple[int, int]]:
    """(run, baseline run) pairs: same training seed first, the rest in id order."""
    seeds = run_seeds(conn, [*runs, *baseline_runs])
    left, right = sorted(runs), sorted(baseline_runs)
    pairs = []
    for run in list(left):
        partner = next((b for b in right if seeds[b] is not None and seeds[b] == seeds[run]), None)
        if partner is not None:
            pairs.append((run, partner))
            left.remove(run)
            right.remove(partner)
    pairs.extend(zip(left, right, strict=False))
    return pairs


def compare_to_baseline(conn: sqlite3.Connection, runs: Sequence[int], baseline_runs: Sequence[int],
                        benchmark: str, protocol: str | None, metric: str,
                        resolution: int | None) -> Comparison | None:
    """McNemar of ``runs`` against ``baseline_runs`` in one column; None when no matched pair measured the
    same items (or no outcomes are stored: results of an older lrfr)."""
    if not has_outcomes_table(conn):
        return None
    mine, theirs = [], []
    for run, base in match_runs(conn, runs, baseline_runs):
        if run == base:
            continue
        a = run_outcomes(conn, run, benchmark, protocol, metric, resolution)
        b = run_outcomes(conn, base, benchmark, protocol, metric, resolution)
        if a is None or b is None or a[0] != b[0] or a[1].shape != b[1].shape:
            continue
        mine.append(a[1])
        theirs.append(b[1])
    if not mine:
        return None
    a, b = np.concatenate(mine), np.concatenate(theirs)
    better, worse = discordant_counts(a, b)
    return Comparison(mcnemar(a, b), better, worse, len(a), len(mine))


def pooled_interval(conn: sqlite3.Connection, runs: Sequence[int], benchmark: str, protocol: str | None,
                    metric: str, resolution: int | None) -> tuple[float, float] | None:
    """95% bootstrap interval of the pooled items of ``runs`` (those that measured the same data as the
    first); None without stored outcomes."""
    if not has_outcomes_table(conn):
        return None
    found = [o for o in (run_outcomes(conn, r, benchmark, protocol, metric, resolution) for r in runs) if o]
    if not found:
        return None
    same = [correct for key, correct in found if key == found[0][0]]
    return bootstrap_ci(np.concatenate(same), n_boot=N_BOOT, seed=0)


def format_interval(lo: float, hi: float, percent: bool) -> str:
    return f"[{100 * lo:.2f}, {100 * hi:.2f}]" if percent else f"[{lo:.4g}, {hi:.4g}]"
