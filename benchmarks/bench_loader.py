"""Images per second delivered to the training step, per data source and number of loader workers.

Each source feeds the trainer's own reader (``engine.data.feed.epoch_batches``, the seeded epoch sampler,
batches of 256) and the "step" does what the trainer does with a batch before its forward pass: the copy to
the device and ``.contiguous()``. Sources, all holding the same faces (synthetic, 112 px, JPEG quality 95
like insightface's packs):

* ``folder+PIL``: an image folder, PIL decoding in DataLoader worker processes;
* ``recordio+PIL``: the same JPEGs in an insightface RecordIO pack, PIL decoding in worker processes;
* ``pack``: a decoded-face pack (``lrfr data pack``), gathered by worker threads, no decoding;
* ``gpu-decode`` (CUDA only): workers read bytes, ``torchvision.io.decode_jpeg`` decodes each batch on the GPU.

Steady state only: the clock starts at the first batch (worker start-up excluded) and the pack is in the page
cache (a pack bigger than RAM reads at the disk's speed instead: 37.6 kB per face).

    python benchmarks/bench_loader.py                       # 1, 2, 4 workers, 2048 faces
    python benchmarks/bench_loader.py --workers 1 2 --images 4096 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from engine.data import FacePack, ImageFolderDataset, PackSource, RecordIODataset, write_pack, write_recordio
from engine.data.feed import epoch_batches
from engine.data.gpu_decode import EncodedFaces
from engine.data.synthetic import materialise
from engine.train import DistEnv, EpochBatchSampler


def build_sources(work: Path, identities: int, per_identity: int) -> dict[str, Callable[[], Dataset]]:
    """The same faces as a JPEG folder, a RecordIO pack and a decoded-face pack (built once under ``work``)."""
    png = materialise(work / "png", identities, per_identity, seed=0)
    jpg = work / "jpg"
    if not jpg.exists():
        tmp = work / "jpg.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for path in sorted(png.glob("*/*.png")):
            (tmp / path.parent.name).mkdir(parents=True, exist_ok=True)
            Image.open(path).convert("RGB").save(tmp / path.parent.name / f"{path.stem}.jpg", quality=95)
        tmp.rename(jpg)
    folder = ImageFolderDataset(jpg)
    rec = work / "rec"
    if not (rec / "train.idx").exists():
        rec.mkdir(exist_ok=True)
        write_recordio(rec / "train.rec", rec / "train.idx", ((p.read_bytes(), y) for p, y in folder.samples))
    pack = work / "pack"
    if not (pack / "pack.json").exists():
        write_pack(folder, pack, PackSource("bench", str(jpg), "folder"), 112, num_workers=2)
    sources: dict[str, Callable[[], Dataset]] = {
        "folder+PIL": lambda: ImageFolderDataset(jpg),
        "recordio+PIL": lambda: RecordIODataset(rec / "train.rec"),
        "pack": lambda: FacePack(pack),
    }
    if torch.cuda.is_available():
        sources["gpu-decode"] = lambda: EncodedFaces(ImageFolderDataset(jpg))
    return sources


def images_per_s(dataset: Dataset, workers: int, batch: int, epochs: int, device: torch.device) -> float:
    """Steady-state images/s over ``epochs`` epochs (the first batch of each epoch is not timed)."""
    timed, elapsed = 0, 0.0
    for epoch in range(epochs):
        sampler = EpochBatchSampler(len(dataset), batch, seed=0, epoch=epoch, env=DistEnv())
        t0 = None
        for images, _labels, _skipped in epoch_batches(dataset, sampler, workers, device):
            images = images.to(device, non_blocking=True).contiguous()
            if t0 is None:
                t0 = time.perf_counter()
                continue
            timed += len(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed += time.perf_counter() - t0
    return timed / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--images", type=int, default=2048, help="faces per source (a multiple of 32)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="keep the generated sources here between runs")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    identities = 32
    per_identity = max(1, args.images // identities)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        sources = build_sources(work, identities, per_identity)
        load = os.getloadavg()[0]
        print(f"bench_loader: {identities * per_identity} faces of 112 px, batch {args.batch}, {args.epochs} epochs, "
              f"step on {device}; {os.cpu_count()} CPUs, load average {load:.1f} at the start")
        print(f"{'source':<14}" + "".join(f"{f'{w} worker' + ('s' if w > 1 else ''):>22}" for w in args.workers))
        rates: dict[str, list[float]] = {}
        for name, make in sources.items():
            rates[name] = [images_per_s(make(), w, args.batch, args.epochs, device) for w in args.workers]
            cells = "".join(f"{r:>10.0f} img/s {r / w:>5.0f}/w" for r, w in zip(rates[name], args.workers, strict=True))
            print(f"{name:<14}{cells}", flush=True)
        for name in ("folder+PIL", "recordio+PIL"):
            ratios = ", ".join(f"{p / d:.1f}x" for p, d in zip(rates["pack"], rates[name], strict=True))
            print(f"pack / {name}: {ratios} (at {', '.join(map(str, args.workers))} workers)")


if __name__ == "__main__":
    main()
