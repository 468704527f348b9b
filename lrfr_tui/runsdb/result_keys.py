"""Result keys (benchmark, protocol, metric, resolution) and which stored result a term means."""

from __future__ import annotations

from lrfr_tui.runsdb.filters import Term

# Benchmarks in the order of the paper's tables; others follow alphabetically.
BENCH_ORDER = ("lfw", "xqlfw", "scface", "tinyface", "lowres_lfw")
BENCH_LABELS = {"lfw": "LFW", "xqlfw": "XQLFW", "scface": "SCface", "tinyface": "TinyFace",
                "lowres_lfw": "LR-LFW"}


# Which protocol ``BENCH.METRIC`` means when no protocol is given (first present wins).
def bench_kind(benchmark: str) -> str:
    """``xqlfw:my_pairs`` (the xqlfw protocol on another registered dataset) -> ``xqlfw``."""
    return benchmark.partition(":")[0]


PROTOCOL_PREFERENCE: dict[str, tuple[str, ...]] = {
    "lfw": ("insightface_10fold", "roc"),
    "xqlfw": ("xqlfw_official", "insightface_10fold"),
    "scface": ("zero_shot", "finetune"),
    "tinyface": ("no_finetune", "finetune"),
    "lowres_lfw": ("insightface_10fold_second", "insightface_10fold_both", "insightface_10fold_random"),
}
# Headline columns of the results matrix: (metrics, one protocol only?) per benchmark.
HEADLINE: dict[str, tuple[tuple[str, ...], bool]] = {
    "lfw": (("acc",), True),
    "xqlfw": (("acc",), True),
    "scface": (("rank1_d1", "rank1_d2", "rank1_d3", "rank1_mean"), False),
    "tinyface": (("rank1", "mAP"), False),
    "lowres_lfw": (("acc",), False),
}
FALLBACK_HEADLINE = ("acc", "rank1_mean", "rank1", "mAP")
# Key results shown by `lrfr ls` when present.
KEY_RESULTS = ("lfw.acc", "xqlfw.acc", "scface.rank1_mean", "lowres_lfw.acc@7")
METRIC_LABELS = {"rank1_d1": "d1", "rank1_d2": "d2", "rank1_d3": "d3", "rank1_mean": "avg", "rank1": "rank-1",
                 "rank5": "rank-5", "rank10": "rank-10", "rank20": "rank-20"}


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
