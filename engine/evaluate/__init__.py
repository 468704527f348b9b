"""Evaluation: protocols (verification, ROC, identification) and the benchmarks built on them.

``run_benchmarks`` evaluates a model on the benchmarks a run's config names and reports one
result per (benchmark, protocol, metric, resolution). The benchmark modules (and torch) are imported
lazily: ``engine.evaluate.registry``, which declares the benchmarks, their protocols and metrics, loads this
package first, and ``engine.config`` and the application read it without loading torch or the data readers.

An ``eval.benchmarks`` entry is ``KIND`` or ``KIND=DATASET``: the benchmark's protocol (``xqlfw``) run on
its own catalog entry (``xqlfw``; ``lfw`` for ``lowres_lfw``), or on another registered dataset of a
format it reads (``xqlfw=my_pairs``). Results of the default are reported under ``KIND``, those of another
dataset under ``KIND:DATASET`` (``xqlfw:my_pairs``), so ``xqlfw.acc`` always means the real XQLFW.

A benchmark that fails (``LrfrError``: a missing or unreadable dataset, a diverged fine-tuning; an
``OSError``; running out of host or GPU memory) is reported as a ``benchmark_failed`` event and the next
ones still run; their results are reported as they come. At the end ``BenchmarksFailed`` (an
``LrfrError``) names every failed benchmark, so the run ends ``failed`` with that reason while the results
of the others stay recorded. An evaluation of one benchmark raises its error unchanged.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import LrfrError
from engine.evaluate.registry import (
    BENCHMARK_FORMATS,
    BENCHMARK_NAMES,
    DEFAULT_DATASETS,
    PROTOCOLS_VERSION,
    BenchmarkSpec,
    default_dataset,
    list_benchmarks,
    parse_benchmark,
    result_names,
)
from engine.reporting import Reporter

if TYPE_CHECKING:
    import torch

    from engine.config import RunConfig

# The names above that come from engine.evaluate.registry (the torch-free declarations) are re-exported here
# for the callers that import them from engine.evaluate. torch is imported inside the functions that use it,
# so that importing the registry (which loads this package first) does not load torch.
__all__ = [
    "BENCHMARK_FORMATS", "BENCHMARK_NAMES", "DEFAULT_DATASETS", "PROTOCOLS_VERSION", "BenchmarkSpec",
    "BenchmarksFailed", "default_dataset", "environment", "list_benchmarks", "parse_benchmark", "result_names",
    "run_benchmarks",
]


class BenchmarksFailed(LrfrError):
    """Some benchmarks of an evaluation failed; the others' results were reported. ``failures``:
    benchmark name -> what went wrong."""

    def __init__(self, failures: dict[str, str], total: int, succeeded: list[str]) -> None:
        self.failures, self.total, self.succeeded = dict(failures), total, list(succeeded)
        kept = f"the results of {', '.join(succeeded)} are kept" if succeeded else "no benchmark gave results"
        detail = "; ".join(f"{name}: {_shorten(why)}" for name, why in failures.items())
        super().__init__(f"{len(failures)} of {total} benchmarks failed ({kept}): {detail}")


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _out_of_memory(exc: BaseException) -> bool:
    """Host or GPU memory ran out: MemoryError, torch's OutOfMemoryError, or the CPU allocator's
    RuntimeError ("DefaultCPUAllocator: can't allocate memory")."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, (MemoryError, oom)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "cannot allocate memory" in text)


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, LrfrError):
        return str(exc)
    if _out_of_memory(exc):
        return f"out of memory ({type(exc).__name__}: {exc})"
    return f"{type(exc).__name__}: {exc}"


class _Renamed(Reporter):
    """Passes everything to ``parent``; results of ``kind`` are reported under ``name`` (KIND:DATASET)."""

    def __init__(self, parent: Reporter, kind: str, name: str) -> None:
        self.parent, self.kind, self.name = parent, kind, name

    def start(self, total_steps: int, start_step: int) -> None:
        self.parent.start(total_steps, start_step)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.parent.metrics(step, values)

    def event(self, kind: str, message: str, **fields) -> None:
        self.parent.event(kind, message, **fields)

    def progress(self, phase: str, **fields) -> None:
        self.parent.progress(phase, **fields)

    def artifact(self, kind: str, path: Path) -> None:
        self.parent.artifact(kind, path)

    def result(self, benchmark: str, protocol: str, metric: str, resolution: int | None, value: float) -> None:
        self.parent.result(self.name if benchmark == self.kind else benchmark, protocol, metric, resolution, value)

    def outcomes(self, benchmark: str, protocol: str, metric: str, resolution: int | None, correct) -> None:
        self.parent.outcomes(self.name if benchmark == self.kind else benchmark, protocol, metric, resolution,
                             correct)


class _EvalProgress:
    """Benchmark ``index`` of ``count``: images embedded so far and the current pass, reported at most every
    ``every_s`` (and at each pass's end) as ``reporter.progress("evaluate", ...)``."""

    def __init__(self, reporter: Reporter, name: str, index: int, count: int, every_s: float = 0.5) -> None:
        self.reporter, self.name, self.index, self.count, self.every_s = reporter, name, index, count, every_s
        self.started = time.monotonic()
        self.images = 0  # embedded in finished passes
        self.last = 0.0
        self.report(0, 0, 0)

    def __call__(self, done: int, total: int) -> None:
        if done >= total:
            self.images += total
            self.report(self.images, total, total)
        elif time.monotonic() - self.last >= self.every_s:
            self.report(self.images + done, done, total)

    def report(self, images: int, done: int, total: int) -> None:
        self.last = time.monotonic()
        elapsed = max(self.last - self.started, 1e-6)
        rate = images / elapsed if images else None
        eta = (total - done) / rate if rate and total else None
        self.reporter.progress("evaluate", benchmark=self.name, index=self.index, count=self.count, images=images,
                               pass_done=done, pass_total=total, rate=rate, eta_s=eta)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def environment(device: torch.device | str) -> dict:
    """What a run ran on: device name, torch and CUDA versions, number of processes (WORLD_SIZE)."""
    import torch

    device = torch.device(device)
    name = None
    if device.type == "cuda" and torch.cuda.is_available():
        try:
            name = torch.cuda.get_device_name(device)
        except (RuntimeError, AssertionError):
            name = None
    return {"device": str(device), "device_name": name or _cpu_model(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "world_size": int(os.environ.get("WORLD_SIZE", "1") or 1),
            "host": platform.node()}


def run_benchmarks(model, cfg: RunConfig, device: torch.device | str, reporter: Reporter,
                   run_dir: Path | None = None) -> None:
    """``model``: an engine backbone (nn.Module) or any callable float N x 3 x S x S -> N x D.

    Raises ``BenchmarksFailed`` after the last benchmark if any failed (see the module docstring), or,
    with a single benchmark, its error; any other exception (a bug, a stop request) ends the evaluation
    at once.

    torch runs with ``train.threads`` intra-op threads meanwhile (0: every core this process may use, as
    nothing here starts loader workers; ``engine.threads``), and with the caller's count again afterwards.
    """
    from engine.memory import release_free_memory
    from engine.threads import resolve_threads, torch_threads

    try:
        with torch_threads(resolve_threads(cfg.train.threads, loader_workers=0)):
            _run_benchmarks(model, cfg, device, reporter, run_dir)
    finally:
        release_free_memory()


def _run_benchmarks(model, cfg: RunConfig, device: torch.device | str, reporter: Reporter,
                    run_dir: Path | None) -> None:
    """``run_benchmarks``' body, in its thread count."""
    import torch

    from engine.evaluate.benchmarks import BENCHMARKS, EvalContext
    from engine.evaluate.embeddings import as_embed_fn, embed_progress
    from engine.memory import release_free_memory

    device = torch.device(device)
    if isinstance(model, torch.nn.Module):
        model = as_embed_fn(model.to(device))
    base = EvalContext(model, cfg, device, reporter, run_dir)
    env = environment(device)
    reporter.event("environment", f"evaluating on {env['device_name']} (torch {env['torch']}, "
                                  f"CUDA {env['cuda'] or 'none'}, {env['world_size']} process(es))", environment=env)
    specs = [parse_benchmark(text, known=list(BENCHMARKS)) for text in cfg.eval.benchmarks]
    failures: dict[str, str] = {}
    succeeded: list[str] = []
    for index, spec in enumerate(specs, 1):
        name = spec.name
        release_free_memory()  # what the previous benchmark (or the training) freed, back to the system
        reporter.event("evaluate", f"evaluating {name} ({index} of {len(specs)})", benchmark=name, index=index,
                       count=len(specs))
        ctx = base
        if spec.dataset is not None:
            # Files the protocol keeps (splits, drawn sizes, fine-tuning runs) go to their own folder,
            # beside, not over, those of the benchmark on its own dataset.
            sub_dir = Path(run_dir) / f"{spec.kind}={spec.dataset}" if run_dir is not None else None
            ctx = dataclasses.replace(base, reporter=_Renamed(reporter, spec.kind, name), run_dir=sub_dir,
                                      dataset=spec.dataset)
        try:
            with embed_progress(_EvalProgress(reporter, name, index, len(specs))):
                BENCHMARKS[spec.kind](ctx)
        except (LrfrError, OSError, MemoryError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and not _out_of_memory(exc):
                raise  # a bug, not the data or the machine: stop with its traceback
            failures[name] = _failure_message(exc)
            if len(specs) == 1:  # nothing else to run or keep: its error, as raised
                reporter.event("benchmark_failed", f"{name} failed: {failures[name]}", benchmark=name,
                               error=failures[name])
                raise
        else:
            succeeded.append(name)
            continue
        # Outside the except block: the traceback (and the tensors its frames hold) is released first.
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        reporter.event("benchmark_failed", f"{name} failed: {failures[name]}", benchmark=name,
                       error=failures[name])
    if failures:
        raise BenchmarksFailed(failures, len(specs), succeeded)
