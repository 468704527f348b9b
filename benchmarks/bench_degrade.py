"""Speed and fidelity of batched ``engine.augment.degrade`` against the per-image PIL reference chain.

Times one MAug batch (r drawn per sample from 7 / 14 / 20 px at 1:1:2) through
  - ``degrade_pil`` in a Python loop (what a PIL data loader does; PIL is single-threaded),
  - batched ``degrade`` on uint8 (torchvision's native uint8 kernel) with 1 thread and default threads,
  - the float path that CUDA takes, run here on the CPU with 1 thread (for reference),
then prints the max / mean |difference| to PIL at r = 7, 14, 20.

    .venv/bin/python benchmarks/bench_degrade.py --batch 256 --size 112 --repeats 10
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.augment import SAMPLER_PRESETS, _degrade, degrade, degrade_pil


def smooth_faces(n: int, size: int, seed: int) -> torch.Tensor:
    """Random but image-like uint8 batch: up-sampled coarse colour noise (smooth shading), a dark band and
    two dark blobs (hard edges), plus fine grain."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g) * 200 + 30
    x = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    x[:, :, : size // 6] *= 0.3  # hair line
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for cx in (0.35, 0.65):  # eyes
        eye = ((xx - cx * size) ** 2 / 64 + (yy - 0.45 * size) ** 2 / 16) < 1
        x[:, :, eye] *= 0.2
    x += torch.randn(x.shape, generator=g) * 6
    return x.round().clamp(0, 255).to(torch.uint8)


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best of ``repeats`` runs after one warm-up: the least-disturbed measurement on a shared machine."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    default_threads = torch.get_num_threads()
    images = smooth_faces(args.batch, args.size, args.seed)
    r = SAMPLER_PRESETS["maug"].sample(args.batch, torch.Generator().manual_seed(args.seed))
    r_list = r.tolist()
    pil_images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
    n = args.batch

    def pil_loop() -> list[Image.Image]:
        return [degrade_pil(im, ri) for im, ri in zip(pil_images, r_list, strict=True)]

    print(f"batch {n} x 3 x {args.size} x {args.size} uint8, MAug r counts "
          f"{ {k: r_list.count(k) for k in (7, 14, 20)} }, best of {args.repeats}, "
          f"torch {torch.__version__}, default threads {default_threads}")
    torch.set_num_threads(1)
    rows = [("PIL degrade_pil loop (1 thread)", best_time(pil_loop, args.repeats))]
    rows.append(("degrade uint8 batched, 1 thread", best_time(lambda: degrade(images, r), args.repeats)))
    rows.append(("float path (CUDA-style) on CPU, 1 thread",
                 best_time(lambda: _degrade(images, r, None, path="float"), args.repeats)))
    torch.set_num_threads(default_threads)
    rows.append((f"degrade uint8 batched, {default_threads} threads",
                 best_time(lambda: degrade(images, r), args.repeats)))
    pil_rate = n / rows[0][1]
    for name, seconds in rows:
        print(f"  {name:<44s} {n / seconds:10.0f} images/s  ({n / seconds / pil_rate:5.2f}x PIL)")

    print("difference to the PIL chain (grey levels), all images at one r:")
    for res in (7, 14, 20):
        ref = np.stack([np.asarray(degrade_pil(im, res)) for im in pil_images])
        ref_t = torch.from_numpy(ref).permute(0, 3, 1, 2).to(torch.int32)
        outputs = (("uint8 ", degrade(images, res)), ("float ", _degrade(images, res, None, path="float")))
        for name, out in outputs:
            d = (out.to(torch.int32) - ref_t).abs()
            print(f"  r={res:>2d} {name} max {int(d.max())}  mean {float(d.float().mean()):.5f}  "
                  f"pixels differing {float((d > 0).float().mean()) * 100:.3f}%")


if __name__ == "__main__":
    main()
