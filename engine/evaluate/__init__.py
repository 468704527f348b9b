"""Evaluation: protocols (verification, ROC, identification) and the benchmarks built on them.

``run_benchmarks`` evaluates a model on the benchmarks a run's config names and reports one
result per (benchmark, protocol, metric, resolution). The benchmark modules are imported lazily
so that ``engine.config`` can validate names without loading data readers.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.config import RunConfig
from engine.reporting import Reporter

BENCHMARK_NAMES = ("lfw", "lowres_lfw", "scface", "tinyface", "xqlfw")


def list_benchmarks() -> list[str]:
    return list(BENCHMARK_NAMES)


def run_benchmarks(model, cfg: RunConfig, device: torch.device | str, reporter: Reporter,
                   run_dir: Path | None = None) -> None:
    """``model``: an engine backbone (nn.Module) or any callable float N x 3 x S x S -> N x D."""
    from engine.evaluate.benchmarks import BENCHMARKS, EvalContext
    from engine.evaluate.embeddings import as_embed_fn

    device = torch.device(device)
    if isinstance(model, torch.nn.Module):
        model = as_embed_fn(model.to(device))
    ctx = EvalContext(model, cfg, device, reporter, run_dir)
    for name in cfg.eval.benchmarks:
        reporter.event("evaluate", f"evaluating {name}", benchmark=name)
        BENCHMARKS[name](ctx)
