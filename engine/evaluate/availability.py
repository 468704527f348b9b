"""Where each benchmark's data comes from, checked before any work: a catalog entry of a format the
benchmark reads. Torch-free, so `lrfr eval` can refuse a missing dataset before it records a run
or loads a model.
"""

from __future__ import annotations

from engine.catalog import DatasetEntry, lookup
from engine.errors import DatasetError
from engine.evaluate.registry import BENCHMARK_FORMATS, default_dataset, parse_benchmark


def catalog_entry(kind: str, dataset: str | None) -> DatasetEntry:
    """The registered dataset benchmark ``kind`` reads (its own entry, or ``dataset`` from
    ``KIND=DATASET``); a DatasetError naming the fix when it is missing or of the wrong format."""
    entry = lookup(dataset or default_dataset(kind))
    needs = BENCHMARK_FORMATS[kind]
    if dataset is not None and entry.format not in needs:
        raise DatasetError(f"{kind}={entry.name}: dataset {entry.name!r} is registered as format "
                           f"{entry.format!r}, but the {kind} benchmark reads {' or '.join(map(repr, needs))}; "
                           f"register one of that format (`lrfr data add NAME PATH --format {needs[0]}`)")
    return entry


def check_benchmark_data(cfg) -> None:
    """Every entry of ``cfg.eval.benchmarks`` has its data (nothing to check for synthetic stand-ins)."""
    if cfg.eval.source != "catalog":
        return
    for text in cfg.eval.benchmarks:
        spec = parse_benchmark(text)
        catalog_entry(spec.kind, spec.dataset)
