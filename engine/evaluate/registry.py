"""What the engine knows about its benchmarks and their metrics, without torch or numpy.

Each benchmark is declared once here, in the order of the paper's tables, with its display label, the
protocols it reports (in the order a ``BENCH.METRIC`` query without a protocol prefers them), its headline
metrics, the catalog formats it reads and the catalog entry it reads by default. The function that runs it
(``engine.evaluate.benchmarks``) is registered against this declaration (``benchmark_runner``), so a benchmark
cannot run without being declared, nor be declared without something that runs it.

This module imports nothing heavier than ``engine.errors``: ``engine.config`` validates ``eval.benchmarks``
against it, and the application reads labels, units and directions from it, without loading torch.

Metric rules (``metric_info``): which metric names are fractions shown as percentages, which direction is
better, and their short column labels. They apply to any name a benchmark or the trainer reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import ConfigError

# The version of the benchmark protocols as implemented here; stored with each result's data source.
PROTOCOLS_VERSION = "2026.12"


@dataclass(frozen=True)
class BenchmarkInfo:
    """One benchmark, as the engine runs and reports it.

    ``protocols``: every protocol name its results are reported under, in preference order (the first
    present is what ``BENCH.METRIC`` means without a protocol). ``headline_metrics``: the columns of the
    paper's table; ``headline_single_protocol``: show them for the first present protocol only (True) or for
    each present protocol (False). ``formats``: the catalog formats (``engine.catalog.FORMATS``) its reader
    takes. ``catalog_entry``: the catalog entry it reads when ``eval.benchmarks`` names none (None: the entry
    of its own name).
    """

    name: str
    label: str
    task: str  # "verification" or "identification": which protocol family (engine.evaluate.*)
    description: str
    protocols: tuple[str, ...]
    headline_metrics: tuple[str, ...]
    headline_single_protocol: bool
    formats: tuple[str, ...]
    catalog_entry: str | None = None
    # The resolutions (px) of the paper's headline row for a benchmark reported per resolution (Figure 3a).
    headline_resolutions: tuple[int, ...] = ()

    @property
    def default_dataset(self) -> str:
        """The catalog entry read when ``eval.benchmarks`` names no dataset (``lowres_lfw`` reads ``lfw``)."""
        return self.catalog_entry or self.name


# eval.lowres_mode: which images of a pair lowres_lfw degrades; each mode reports its own protocol.
LOWRES_MODES = ("second", "both", "random")
LOWRES_PROTOCOL_PREFIX = "insightface_10fold_"
# eval.scface_protocols, in preference order: the DCR test ids without and with fine-tuning (the paper's
# Table 1), then every subject without fine-tuning (not in the paper, so never preferred over those two).
SCFACE_PROTOCOLS = ("zero_shot", "finetune", "zero_shot_all130")

# Paper order (Tables 1-3, then Figure 3a): the order of results tables and of benchmarks().
_DECLARED = (
    BenchmarkInfo(
        name="lfw", label="LFW", task="verification",
        description="LFW: 6,000 pairs, insightface 10-fold accuracy (with VAL@FAR=1e-3), and TAR@FAR of one ROC",
        protocols=("insightface_10fold", "roc"),
        headline_metrics=("acc",), headline_single_protocol=True,
        formats=("bin", "pairs"),
    ),
    BenchmarkInfo(
        name="xqlfw", label="XQLFW", task="verification",
        description="XQLFW: the official cosine protocol and insightface 10-fold accuracy",
        protocols=("xqlfw_official", "insightface_10fold"),
        headline_metrics=("acc",), headline_single_protocol=True,
        formats=("bin", "pairs"),
    ),
    BenchmarkInfo(
        name="scface", label="SCface", task="identification",
        description="SCface: rank-1 per distance d1..d3 and their mean on the DCR test ids, zero-shot and "
                    "fine-tuned on the other ids",
        protocols=SCFACE_PROTOCOLS,
        headline_metrics=("rank1_d1", "rank1_d2", "rank1_d3", "rank1_mean"), headline_single_protocol=False,
        formats=("scface",),
    ),
    BenchmarkInfo(
        name="tinyface", label="TinyFace", task="identification",
        description="TinyFace: rank-k and mAP with distractors, without and with fine-tuning on its training set",
        protocols=("no_finetune", "finetune"),
        headline_metrics=("rank1", "mAP"), headline_single_protocol=False,
        formats=("tinyface",),
    ),
    BenchmarkInfo(
        name="lowres_lfw", label="LR-LFW", task="verification",
        description="LFW with one or both images of a pair synthesised at each resolution (Figure 3a): "
                    "10-fold accuracy and SSIM per resolution",
        protocols=tuple(LOWRES_PROTOCOL_PREFIX + mode for mode in LOWRES_MODES),
        headline_metrics=("acc",), headline_single_protocol=False,
        formats=("bin", "pairs"), catalog_entry="lfw", headline_resolutions=(112, 20, 14, 7),
    ),
)
_BY_NAME = {info.name: info for info in _DECLARED}

# Kept for the callers of engine.evaluate: the names sorted (the order "choose from" messages list them in),
# the default catalog entries that differ from the benchmark's name, and the formats each reads.
BENCHMARK_NAMES = tuple(sorted(_BY_NAME))
DEFAULT_DATASETS = {info.name: info.catalog_entry for info in _DECLARED if info.catalog_entry}
BENCHMARK_FORMATS: dict[str, tuple[str, ...]] = {info.name: info.formats for info in _DECLARED}


def benchmarks() -> tuple[BenchmarkInfo, ...]:
    """Every benchmark, in paper order."""
    return _DECLARED


def benchmark_names() -> tuple[str, ...]:
    """Every benchmark's name, in paper order."""
    return tuple(info.name for info in _DECLARED)


def bench_kind(name: str) -> str:
    """A result's benchmark name -> the benchmark it ran: ``xqlfw:my_pairs`` (the xqlfw protocol on another
    registered dataset) -> ``xqlfw``."""
    return name.partition(":")[0]


def find_benchmark(name: str) -> BenchmarkInfo | None:
    """The benchmark a name or result name (``xqlfw:my_pairs``) belongs to; None for one the engine lacks."""
    return _BY_NAME.get(bench_kind(name))


def benchmark_info(name: str) -> BenchmarkInfo:
    """Like ``find_benchmark``, but a name the engine does not know raises KeyError listing those it knows."""
    info = find_benchmark(name)
    if info is None:
        raise KeyError(f"unknown benchmark {name!r}; the engine's benchmarks are: {', '.join(benchmark_names())}")
    return info


def benchmark_label(name: str) -> str:
    """The display label of a benchmark (``LR-LFW``). A result name on another dataset (``xqlfw:my_pairs``) and
    an unknown name are returned as they are: only the real XQLFW is labelled XQLFW."""
    info = _BY_NAME.get(name)
    return info.label if info is not None else name


def benchmark_rank(name: str) -> tuple[int, str]:
    """Sort key: the paper's benchmarks in paper order, then every other name (other datasets) by name."""
    order = benchmark_names()
    return (order.index(name) if name in order else len(order), name)


def preferred_protocols(name: str) -> tuple[str, ...]:
    """The protocols of a benchmark (or of a result name on another dataset) in preference order; () if unknown."""
    info = find_benchmark(name)
    return info.protocols if info is not None else ()


def protocol_rank(name: str, protocol: str) -> tuple[int, str]:
    """Sort key of a benchmark's protocols: preference order, then any undeclared one by name."""
    preferred = preferred_protocols(name)
    return (preferred.index(protocol) if protocol in preferred else len(preferred), protocol)


# ---------------------------------------------------------------- eval.benchmarks entries

# A dataset named in KIND=DATASET: a catalog name that also reads as one part of a result query.
_DATASET_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def list_benchmarks() -> list[str]:
    return list(BENCHMARK_NAMES)


def default_dataset(kind: str) -> str:
    return DEFAULT_DATASETS.get(kind, kind)


@dataclass(frozen=True)
class BenchmarkSpec:
    """One ``eval.benchmarks`` entry: the protocol ``kind`` and the catalog ``dataset`` it reads
    (None: the kind's own entry)."""

    kind: str
    dataset: str | None = None

    @property
    def name(self) -> str:
        """The benchmark name its results are reported (and queried) under."""
        return self.kind if self.dataset is None else f"{self.kind}:{self.dataset}"

    @property
    def catalog_entry(self) -> str:
        return self.dataset or default_dataset(self.kind)


def parse_benchmark(text: str, known: list[str] | tuple[str, ...] | None = None) -> BenchmarkSpec:
    """``KIND`` or ``KIND=DATASET`` -> BenchmarkSpec; ConfigError naming ``eval.benchmarks`` otherwise.
    Naming the kind's own entry (``xqlfw=xqlfw``) is the default: reported as ``xqlfw``.

    ``known``: the benchmark names accepted (default: the declared ones; ``run_benchmarks`` passes those it
    can run)."""
    known = list(known) if known is not None else list_benchmarks()
    kind, sep, dataset = (part.strip() for part in str(text).partition("="))
    if kind not in known:
        raise ConfigError(f"eval.benchmarks: unknown benchmark {kind!r}"
                          + (f" in {text!r}" if sep else "") + f"; choose from: {', '.join(known)}")
    if not sep:
        return BenchmarkSpec(kind)
    if not _DATASET_RE.fullmatch(dataset):
        raise ConfigError(f"eval.benchmarks: {text!r} is not BENCHMARK=DATASET with DATASET a registered "
                          f"dataset name (letters, digits and _ . + -), e.g. xqlfw=my_pairs")
    return BenchmarkSpec(kind, None if dataset == default_dataset(kind) else dataset)


def result_names(specs: list[str]) -> list[str]:
    """The benchmark names the results of ``eval.benchmarks`` entries are reported under."""
    return [parse_benchmark(s).name for s in specs]


# ---------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricInfo:
    """How a metric name is shown: ``label`` (a short column title), ``percent`` (a fraction in [0, 1] shown
    as a percentage) and ``better`` (+1 higher is better, -1 lower is better, 0 neither)."""

    name: str
    label: str
    percent: bool
    better: int


# Short column titles; every other metric is titled by its name.
METRIC_LABELS = {"rank1_d1": "d1", "rank1_d2": "d2", "rank1_d3": "d3", "rank1_mean": "avg", "rank1": "rank-1",
                 "rank5": "rank-5", "rank10": "rank-10", "rank20": "rank-20"}
# Fractions: accuracies and their spreads and intervals (acc_std, acc_ci95_lo), CMC ranks (rank1_d2,
# rank1_mean_ci95_hi), VAL@FAR, TAR@FAR and mAP. Not ssim, threshold or the training losses.
_PERCENT_PREFIXES = ("acc", "rank", "val@", "tar@")


def is_percent(metric: str) -> bool:
    return metric == "mAP" or metric.startswith(_PERCENT_PREFIXES)


def better_direction(metric: str) -> int:
    """+1 higher is better, -1 lower is better, 0 neither (a threshold).

    Spreads (``*_std``, ``*_stderr``), losses and the equal error rate are better lower; a spread is checked
    first, so ``threshold_std`` is -1."""
    if metric.endswith(("_std", "_stderr")) or "loss" in metric or metric in ("eer",):
        return -1
    if metric.startswith("threshold"):
        return 0
    return 1


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def metric_info(metric: str) -> MetricInfo:
    return MetricInfo(metric, metric_label(metric), is_percent(metric), better_direction(metric))
