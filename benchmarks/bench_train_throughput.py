"""Training throughput: lrfr's trainer vs a loop in the style of the paper's released code.

lrfr: data loader workers only decode uint8 images; flips + MAug degradation + normalisation run
batched on the training device; bf16 autocast and channels-last on CUDA.
reference: PIL MAug per image inside DataLoader workers (decode, flip, bicubic down/up, ToTensor,
normalise), fp32, two forward passes - how the released training script feeds its model.

Both train the same backbone with the same batch on the same synthetic image folder, and count
images through the network per second (2 per sample for the Siamese pair).

    python benchmarks/bench_train_throughput.py --model iresnet18 --width 0.25 --batch 64 --steps 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from engine.augment import ResolutionSampler, degrade_pil
from engine.config import resolve
from engine.data.synthetic import materialise
from engine.losses import build_distance_loss, build_head
from engine.models import get_model
from engine.reporting import Reporter
from engine.train import train


class PilMAugFolder(Dataset):
    """The reference pipeline: everything per image, in the worker, with PIL."""

    def __init__(self, root: Path, sampler: ResolutionSampler, seed: int = 0) -> None:
        self.files = sorted(root.glob("*/*.png"))
        self.labels = [int(p.parent.name) for p in self.files]
        self.probs = np.array(sampler.probabilities)
        self.resolutions = sampler.resolutions
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.files)

    @staticmethod
    def to_tensor(img: Image.Image) -> torch.Tensor:
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)
        return arr / 127.5 - 1.0

    def __getitem__(self, i: int):
        img = Image.open(self.files[i]).convert("RGB")
        hr = img.transpose(Image.FLIP_LEFT_RIGHT) if self.rng.random() < 0.5 else img
        lr_src = img.transpose(Image.FLIP_LEFT_RIGHT) if self.rng.random() < 0.5 else img
        r = int(self.rng.choice(self.resolutions, p=self.probs))
        return self.to_tensor(hr), self.to_tensor(degrade_pil(lr_src, r)), self.labels[i]


def reference_loop(root: Path, args, device: torch.device) -> float:
    sampler = ResolutionSampler((7, 14, 20), (1.0, 1.0, 2.0))
    ds = PilMAugFolder(root, sampler)
    num_classes = max(ds.labels) + 1
    model = get_model(args.model, width=args.width).to(device)
    head = build_head("cosface", 512, num_classes, s=16.0, m=0.1).to(device)
    dist = build_distance_loss("logexp", p=1)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9)
    loader = DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
                        persistent_workers=args.workers > 0)
    model.train()
    seen, t0 = 0, None
    it = iter(loader)
    for step in range(args.warmup + args.steps):
        try:
            hr, lr, y = next(it)
        except StopIteration:
            it = iter(loader)
            hr, lr, y = next(it)
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        hr, lr, y = hr.to(device), lr.to(device), y.to(device)
        f_hr, f_lr = model(hr), model(lr)
        loss = 0.5 * head(f_hr, y) + 0.5 * head(f_lr, y) + dist(F.normalize(f_hr), F.normalize(f_lr))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= args.warmup:
            seen += 2 * len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


class Throughput(Reporter):
    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.rates: list[float] = []

    def metrics(self, step, values):
        if step > self.warmup:
            self.rates.append(values["images_per_s"])


def lrfr_loop(root_cache: Path, args, run_dir: Path) -> float:
    overrides = [
        f"model.name={args.model}", f"model.width={args.width}", f"optim.batch_size={args.batch}",
        f"data.synthetic_identities={args.identities}", f"data.synthetic_images_per_identity={args.images}",
        f"data.num_workers={args.workers}", f"schedule.max_steps={args.warmup + args.steps}", "schedule.epochs=1000",
        "train.log_every=1", "eval.benchmarks=[]",
    ]
    rep = Throughput(args.warmup)
    train(resolve("tiny", overrides), run_dir, rep, resume=False)
    return float(np.median(rep.rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="iresnet18")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["LRFR_CACHE"] = tmp
        root = materialise(Path(tmp) / f"synthetic-s0-n{args.identities}-k{args.images}-112px", args.identities,
                           args.images, seed=0)
        ours = lrfr_loop(Path(tmp), args, Path(tmp) / "run")
        ref = reference_loop(root, args, device)
    name = f"{args.model} x{args.width} batch {args.batch} on {device} ({torch.get_num_threads()} threads)"
    print(f"{name}")
    print(f"  lrfr trainer        : {ours:8.1f} images/s")
    print(f"  reference-style loop: {ref:8.1f} images/s")
    print(f"  speed-up            : {ours / ref:8.2f}x")


if __name__ == "__main__":
    main()
