"""Evaluation: protocols (verification, identification) and the benchmarks built on them.

``run_benchmarks`` evaluates a trained backbone on the benchmarks a run's config names and
reports one result per (benchmark, protocol, metric, resolution).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from engine.config import RunConfig
from engine.reporting import Reporter


def _synthetic_lfw(model: nn.Module, cfg: RunConfig, device: torch.device, reporter: Reporter) -> None:
    from engine.evaluate.embeddings import embed
    from engine.evaluate.synthetic_lfw import make_pairs
    from engine.evaluate.verification import insightface_verification

    size = cfg.model.input_size
    pairs = make_pairs(cfg.eval.synthetic_identities, cfg.eval.synthetic_pairs, seed=cfg.data.synthetic_seed,
                       size=size)
    hr = embed(model, pairs.images, device, cfg.eval.batch_size)
    for r in cfg.eval.resolutions:
        # Cross-resolution protocol: the first face stays HR, the second is degraded to r px.
        low = hr if r >= size else embed(model, pairs.images, device, cfg.eval.batch_size, resolution=r)
        res = insightface_verification(hr[pairs.first], low[pairs.second], pairs.issame)
        for metric, value in (("acc", res.accuracy), ("acc_std", res.std), ("threshold", res.threshold)):
            reporter.result("synthetic_lfw", "insightface_10fold", metric, r, value)


BENCHMARKS: dict[str, Callable[[nn.Module, RunConfig, torch.device, Reporter], None]] = {
    "synthetic_lfw": _synthetic_lfw,
}


def list_benchmarks() -> list[str]:
    return sorted(BENCHMARKS)


def run_benchmarks(model: nn.Module, cfg: RunConfig, device: torch.device | str, reporter: Reporter) -> None:
    device = torch.device(device)
    model = model.to(device).eval()
    for name in cfg.eval.benchmarks:
        reporter.event("evaluate", f"evaluating {name}", benchmark=name)
        BENCHMARKS[name](model, cfg, device, reporter)
