"""The GPU check of issue 13, run by ``benchmarks/gpu_check.sh`` (which bounds its time): on one CUDA GPU,

1. samples/s of lrfr's trainer (``engine.train.train``, the real loop) for the ``r34`` and ``r50`` recipes
   on packed synthetic faces (``data.reader=pack``), bf16 autocast, channels-last, ``train.compile`` off
   and on, with MFU = FLOPs per step (torch's ``FlopCounterMode`` over one forward + backward of the same
   Siamese module) x steps/s / the GPU's dense bf16 peak, and the peak GPU memory of each;
2. the same model in the released code's style (fp32, PIL MAug per image in DataLoader workers, PNG
   folder: ``benchmarks/bench_train_throughput.reference_loop``), and the ratio;
3. the batched MAug on the GPU (``engine.augment.make_pair``) vs PIL per image (``degrade_pil``);
4. host synchronisations in the optimisation step (``torch.cuda.set_sync_debug_mode("warn")``).

Each part prints its lines as it finishes; a part that fails prints one ``FAILED`` line and the others run.
Without a CUDA GPU it exits 1 after one line. Synthetic data: 64 identities (the real recipes' heads are
wider: 10,572 / 85k classes, a few percent more FLOPs).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# Dense (no sparsity) bf16 tensor-core peaks, from NVIDIA's data sheets, by a substring of the device name.
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("GH200", 989.4), ("A100", 312.0),
                    ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0))
IDENTITIES, PER_IDENTITY = 64, 32


def peak_tflops(name: str) -> float | None:
    env = os.environ.get("PEAK_TFLOPS")
    if env:
        return float(env)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def recipe(preset: str, compile_: bool, steps: int, batch: int | None = None) -> list[str]:
    sets = ["data.dataset=synthetic", f"data.synthetic_identities={IDENTITIES}",
            f"data.synthetic_images_per_identity={PER_IDENTITY}", "data.reader=pack", "data.num_workers=4",
            f"schedule.max_steps={steps}", "schedule.epochs=1000", "train.log_every=10", "eval.benchmarks=[]",
            "train.amp=bf16", "train.channels_last=true", f"train.compile={str(compile_).lower()}",
            "train.device=cuda", "launch.gpus=1"]
    return sets + ([f"optim.batch_size={batch}"] if batch else [])


def flops_per_step(cfg, device: torch.device) -> float:
    """FLOPs of one optimisation step's forward + backward (both branches), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from engine.losses import build_distance_loss, build_head
    from engine.train import SiameseModule, build_backbone

    module = SiameseModule(build_backbone(cfg), build_head(cfg.loss.head, cfg.model.embedding_size, IDENTITIES,
                                                           s=cfg.loss.s, m=cfg.loss.m),
                           build_distance_loss(cfg.loss.distance, p=cfg.loss.p, reduction=cfg.loss.reduction),
                           cfg.loss.lambda_).to(device).to(memory_format=torch.channels_last)
    n, size = cfg.optim.batch_size, cfg.model.input_size
    x = torch.randn(n, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, IDENTITIES, (n,), device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast("cuda", dtype=torch.bfloat16):
        loss_cls, loss_dist = module(x, x.clone(), labels)
        (loss_cls + loss_dist).backward()
    return float(counter.get_total_flops())


def _windows_reporter(warmup_steps: int):
    from engine.reporting import Reporter

    class Windows(Reporter):
        """The trainer's metric windows: samples/s after the warm-up steps, and peak memory."""

        def __init__(self) -> None:
            self.warmup_steps = warmup_steps
            self.rates: list[float] = []
            self.mem: list[float] = []

        def metrics(self, step, values):
            self.mem.append(values.get("gpu_mem_gib", 0.0))
            if step > self.warmup_steps:
                self.rates.append(values["samples_per_s"])

    return Windows()


def trainer_part(preset: str, compile_: bool, steps: int, warmup: int, work: Path, device: torch.device,
                 peak: float | None) -> float:
    from engine.config import resolve
    from engine.train import train

    cfg = resolve(preset, recipe(preset, compile_, warmup + steps))
    windows = _windows_reporter(warmup)
    t0 = time.perf_counter()
    train(cfg, work / f"{preset}-{compile_}", windows, resume=False)
    wall = time.perf_counter() - t0
    rate = sum(windows.rates) / len(windows.rates)
    flops = flops_per_step(cfg, device)
    achieved = flops * rate / cfg.optim.batch_size
    mfu = f"MFU {100 * achieved / (peak * 1e12):5.1f}%" if peak else "MFU n/a (set PEAK_TFLOPS)"
    print(f"  {preset:<4} {cfg.model.name:<10} batch {cfg.optim.batch_size} compile {'on ' if compile_ else 'off'}: "
          f"{rate:8.0f} samples/s ({2 * rate:6.0f} images/s), {flops / 1e12:6.2f} TFLOP/step, "
          f"{achieved / 1e12:6.1f} TFLOP/s, {mfu}, peak memory {max(windows.mem):5.1f} GiB, {wall:5.0f} s "
          f"wall (with compile and warm-up)", flush=True)
    return rate


def released_style_part(preset: str, steps: int, work: Path, device: torch.device) -> float:
    from bench_train_throughput import reference_loop

    from engine.config import resolve
    from engine.sources import synthetic_train_root

    cfg = resolve(preset, recipe(preset, False, steps))
    root = synthetic_train_root(cfg)  # the PNG folder the pack was made from
    args = argparse.Namespace(model=cfg.model.name, width=1.0, batch=cfg.optim.batch_size,
                              workers=min(16, os.cpu_count() or 1), warmup=5, steps=steps)
    torch.cuda.reset_peak_memory_stats(device)
    images_per_s = reference_loop(root, args, device)
    print(f"  {preset:<4} released-code style (fp32, PIL MAug in {args.workers} workers): {images_per_s / 2:8.0f} "
          f"samples/s, peak memory {torch.cuda.max_memory_allocated(device) / 2**30:5.1f} GiB", flush=True)
    return images_per_s / 2


def maug_part(device: torch.device, batch: int = 256, repeats: int = 50) -> None:
    import numpy as np
    from PIL import Image

    from engine.augment import ResolutionSampler, degrade_pil, make_pair

    sampler = ResolutionSampler((7, 14, 20), (1.0, 1.0, 2.0))
    images = torch.randint(0, 256, (batch, 3, 112, 112), dtype=torch.uint8, device=device)
    gen = torch.Generator().manual_seed(0)
    make_pair(images, sampler, gen)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        make_pair(images, sampler, gen)
    torch.cuda.synchronize(device)
    gpu = batch * repeats / (time.perf_counter() - t0)
    pil_images = [Image.fromarray(a) for a in np.random.default_rng(0).integers(0, 256, (64, 112, 112, 3), np.uint8)]
    rs = [7, 14, 20, 20]
    t0 = time.perf_counter()
    for i, im in enumerate(pil_images * 4):
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        degrade_pil(im, rs[i % 4])
    pil = len(pil_images) * 4 / (time.perf_counter() - t0)
    cores = os.cpu_count() or 1
    print(f"  MAug pairs (flip + 7/14/20 px down/up), batch {batch}: GPU {gpu:9.0f} images/s; PIL {pil:6.0f} "
          f"images/s per core ({pil * cores:7.0f} on all {cores} cores): GPU = {gpu / pil:5.0f} cores", flush=True)


def sync_part(work: Path, device: torch.device, steps: int = 10) -> None:
    """Count the host synchronisations CUDA reports during optimisation steps (log steps excluded)."""
    from engine.config import resolve
    from engine.data.feed import epoch_batches
    from engine.reporting import Reporter
    from engine.train import DistEnv, EpochBatchSampler, _Training

    cfg = resolve("r34", recipe("r34", False, 100, batch=64))
    run = _Training(cfg, work / "sync", Reporter(), DistEnv(), device, None, None, None)
    sampler = EpochBatchSampler(len(run.dataset), 64, 0, 0, DistEnv())
    batches = epoch_batches(run.dataset, sampler, 2, device)
    images, labels, _ = next(batches)
    run.optimisation_step(images, labels, 0.1)  # warm-up: cuDNN autotuning, allocator
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                images, labels, _ = next(batches)
                run.optimisation_step(images, labels, 0.1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    print(f"  host synchronisations in {steps} optimisation steps: {len(syncs)}"
          + (f" (first: {syncs[0]})" if syncs else ""), flush=True)


def prepare_part() -> None:
    """Render the synthetic faces and pack them (once; every trainer part reads this pack)."""
    from engine.config import resolve
    from engine.sources import build_train_dataset

    t0 = time.perf_counter()
    pack = build_train_dataset(resolve("r34", recipe("r34", False, 1)))
    print(f"  {pack!r} in {time.perf_counter() - t0:.0f} s", flush=True)


def _part(title: str | None, fn, *args):
    if title:
        print(title, flush=True)
    try:
        return fn(*args)
    except Exception as exc:  # one part's failure must not hide the others' figures
        print(f"  FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", flush=True)
        traceback.print_exc(file=sys.stderr)
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per trainer configuration")
    parser.add_argument("--warmup", type=int, default=20, help="untimed first steps (compile, cuDNN autotuning)")
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: FAILED: no CUDA GPU visible to torch (torch.cuda.is_available() is False); run it on a "
              "GPU machine", file=sys.stderr)
        return 1
    device = torch.device("cuda:0")
    name = torch.cuda.get_device_name(device)
    peak = peak_tflops(name)
    print(f"gpu_check on {name} (dense bf16 peak {peak or 'unknown'} TFLOP/s), torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("LRFR_CACHE", str(Path(tmp) / "cache"))
        work = Path(tmp)
        rates = {}
        _part("data:", prepare_part)
        print("trainer (packed synthetic faces, bf16, channels-last):", flush=True)
        for preset in ("r34", "r50"):
            for compile_ in (False,) if args.skip_compile else (False, True):
                rates[preset, compile_] = _part(None, trainer_part, preset, compile_, args.steps, args.warmup,
                                                work, device, peak)
        ref = _part("released-code style:", released_style_part, "r34", 20, work, device)
        best = max((r for (p, _), r in rates.items() if p == "r34" and r), default=None)
        if ref and best:
            print(f"  r34: lrfr / released-code style = {best / ref:.1f}x", flush=True)
        _part("batched MAug on the GPU vs PIL:", maug_part, device)
        _part("host syncs:", sync_part, work, device)
    print("gpu_check: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
