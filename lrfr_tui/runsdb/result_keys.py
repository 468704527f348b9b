"""Result keys (benchmark, protocol, metric, resolution) and which stored result a term means."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from engine.evaluate import registry
from lrfr_tui.runsdb.filters import Term

# What each benchmark reports comes from the engine's registry (declared once, next to the code that runs it).
BENCH_ORDER = registry.benchmark_names()  # the paper's table order; others follow alphabetically
BENCH_LABELS = {b.name: b.label for b in registry.benchmarks()}
# Which protocol ``BENCH.METRIC`` means when no protocol is given (first present wins).
PROTOCOL_PREFERENCE: dict[str, tuple[str, ...]] = {b.name: b.protocols for b in registry.benchmarks()}
# Headline columns of the results matrix: (metrics, one protocol only?) per benchmark.
HEADLINE: dict[str, tuple[tuple[str, ...], bool]] = {
    b.name: (b.headline_metrics, b.headline_single_protocol) for b in registry.benchmarks()}
bench_kind = registry.bench_kind
# A benchmark the registry does not know (a result imported from elsewhere): these columns if it has them.
FALLBACK_HEADLINE = ("acc", "rank1_mean", "rank1", "mAP")
# Key results shown by `lrfr ls` when present.
KEY_RESULTS = ("lfw.acc", "xqlfw.acc", "scface.rank1_mean", "lowres_lfw.acc@7")
METRIC_LABELS = registry.METRIC_LABELS


ResultKey = tuple[str, str, str, "int | None"]


def protocol_rank(bench: str, protocol: str) -> tuple[int, str]:
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
    candidates.sort(key=lambda kv: (*protocol_rank(kv[0][0], kv[0][1]), kv[0][3] is not None, -(kv[0][3] or 0)))
    return candidates[0][0]


def result_sort_key(key: ResultKey) -> tuple:
    bench, protocol, metric, res = key
    bench_rank = BENCH_ORDER.index(bench) if bench in BENCH_ORDER else len(BENCH_ORDER)
    return (bench_rank, bench, *protocol_rank(bench, protocol), metric, res is not None, -(res or 0))


@dataclass(frozen=True)
class WideColumn:
    """One headline number of a benchmark as a fixed column (runs.db's ``results_wide`` view)."""

    benchmark: str
    metric: str
    resolution: int | None

    @property
    def name(self) -> str:
        """``lfw_acc``, ``scface_rank1_d1``, ``lowres_lfw_acc_7``: a plain SQL identifier, part of the public view."""
        return f"{self.benchmark}_{self.metric}" + ("" if self.resolution is None else f"_{self.resolution}")


def wide_columns(benchmarks: Iterable[registry.BenchmarkInfo] | None = None) -> list[WideColumn]:
    """Every declared benchmark's headline numbers in paper order: its headline metrics, each at every headline
    resolution (or once, without one). Read from the registry at each call, so a new benchmark is a new column."""
    infos = registry.benchmarks() if benchmarks is None else benchmarks
    return [WideColumn(b.name, metric, res) for b in infos for metric in b.headline_metrics
            for res in (b.headline_resolutions or (None,))]


@dataclass(frozen=True)
class HeadlineResult:
    """One number of the paper's headline row, as a narrow column: ``term`` (``lowres_lfw.acc@7``), ``label``
    (``LR@7``) and ``tier`` (0: the benchmark's main number - its mean or first metric, at its lowest
    resolution; 1: its other resolutions; 2: its other metrics). Narrow terminals keep the low tiers."""

    term: str
    label: str
    tier: int


def headline_results() -> tuple[HeadlineResult, ...]:
    """The headline row of every benchmark the registry declares, in paper order."""
    out = []
    for info in registry.benchmarks():
        short = info.label if len(info.label) <= 5 else "".join(c for c in info.label if c.isupper())[:2]
        metrics = info.headline_metrics
        main = next((m for m in metrics if m.endswith("_mean")), metrics[0])
        lowest = min(info.headline_resolutions, default=None)
        for metric in metrics:
            name = METRIC_LABELS.get(metric, metric).replace("rank-", "r")
            base = short if len(metrics) == 1 else f"{short} {name}"
            if not info.headline_resolutions:
                out.append(HeadlineResult(f"{info.name}.{metric}", base, 0 if metric == main else 2))
                continue
            for res in info.headline_resolutions:
                tier = (0 if res == lowest else 1) if metric == main else 2
                out.append(HeadlineResult(f"{info.name}.{metric}@{res}", f"{base}@{res}", tier))
    return tuple(out)
