"""Evaluation-protocol speed and memory.

- verification on 6,000 random pairs (LFW layout: 300 matched + 300 mismatched per fold):
  insightface 10-fold accuracy (400 thresholds), insightface VAL@FAR (4,000 thresholds), the whole
  insightface protocol from 512-d embeddings, and the XQLFW protocol (2,000 thresholds);
- ROC + TAR@FAR (both conventions) on the same 6,000 pairs;
- identification at TinyFace scale: 3,728 probes x 157,871 gallery (4,443 genuine + 153,428
  distractors), random normalised 512-d float32 embeddings, 1-3 true matches per probe: rank-1/5/10/20
  and mAP in one streaming pass; wall time, tracemalloc peak (numpy allocations) and the growth of
  the process's peak RSS (ru_maxrss after it, minus VmRSS before it).

    python benchmarks/bench_eval.py            # full size
    python benchmarks/bench_eval.py --quick    # 20,000-item gallery
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np

from engine.evaluate.identification import evaluate_identification
from engine.evaluate.roc import roc_curve, similarity_from_distance, tar_at_far
from engine.evaluate.verification import (
    insightface_val_far,
    insightface_verification,
    kfold_accuracy,
    squared_l2,
    xqlfw_verification,
)


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_verification(pairs: int, repeats: int, rng: np.random.Generator) -> None:
    per_fold = pairs // 10
    issame = np.tile(np.repeat([True, False], per_fold // 2), 10)
    e1 = unit(rng.standard_normal((len(issame), 512)).astype(np.float32))
    noise = rng.standard_normal((len(issame), 512)).astype(np.float32)
    e2 = unit(np.where(issame[:, None], e1 + 0.25 * noise, noise))
    dist = squared_l2(e1, e2)
    print(f"verification, {len(issame)} pairs, 512-d (best of {repeats}):")
    print(f"  insightface 10-fold accuracy, 400 thresholds      {best_ms(lambda: kfold_accuracy(dist, issame), repeats):8.2f} ms")
    print(f"  insightface VAL@FAR=1e-3, 4000 thresholds         {best_ms(lambda: insightface_val_far(dist, issame), repeats):8.2f} ms")
    print(f"  insightface protocol from embeddings (acc + VAL)  {best_ms(lambda: insightface_verification(e1, e2, issame), repeats):8.2f} ms")
    print(f"  XQLFW protocol from embeddings, 2000 thresholds   {best_ms(lambda: xqlfw_verification(e1, e2, issame), repeats):8.2f} ms")
    score = similarity_from_distance(dist)

    def roc_tar():
        curve = roc_curve(issame, score)
        return tar_at_far(curve.fpr, curve.tpr, thresholds=curve.thresholds)

    print(f"  ROC + TAR@FAR (6 targets, both conventions)       {best_ms(roc_tar, repeats):8.2f} ms")
    res = insightface_verification(e1, e2, issame)
    print(f"  (sanity: accuracy {res.accuracy:.4f}, VAL@FAR=1e-3 {res.val_far.val:.4f}, "
          f"XQLFW accuracy {xqlfw_verification(e1, e2, issame).accuracy:.4f})")


def make_identification_data(probes: int, genuine: int, distractors: int, identities: int, dim: int,
                             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gallery filled in place, chunk by chunk, so that building it leaves no large temporaries."""
    centres = unit(rng.standard_normal((identities, dim)).astype(np.float32))
    # every identity gets >= 1 genuine gallery image; the rest spread at random
    genuine_ids = np.concatenate([np.arange(identities), rng.integers(0, identities, genuine - identities)])
    gallery_labels = np.concatenate([genuine_ids, np.full(distractors, -1)])
    gallery_labels = gallery_labels[rng.permutation(len(gallery_labels))]
    gallery = np.empty((len(gallery_labels), dim), dtype=np.float32)
    for s in range(0, len(gallery), 8192):
        lab = gallery_labels[s:s + 8192]
        x = rng.standard_normal((len(lab), dim), dtype=np.float32)
        real = lab >= 0
        x[real] = centres[lab[real]] + 0.09 * x[real]
        gallery[s:s + 8192] = unit(x)
    probe_labels = rng.integers(0, identities, probes)
    probe = unit(centres[probe_labels] + 0.09 * rng.standard_normal((probes, dim), dtype=np.float32))
    return probe, probe_labels, gallery, gallery_labels


def bench_identification(probes: int, gallery_size: int, genuine: int, chunk: int, gallery_chunk: int,
                         rng: np.random.Generator) -> None:
    identities = min(2570, genuine)
    probe, probe_labels, gallery, gallery_labels = make_identification_data(
        probes, genuine, gallery_size - genuine, identities, 512, rng)
    n_true = np.bincount(gallery_labels[gallery_labels >= 0], minlength=identities)[probe_labels]
    print(f"identification: {probes} probes x {len(gallery)} gallery ({genuine} genuine, "
          f"{len(gallery) - genuine} distractors), 512-d float32, chunks {chunk} x {gallery_chunk}; "
          f"true matches per probe {n_true.min()}-{n_true.max()} (mean {n_true.mean():.2f}); "
          f"gallery array {gallery.nbytes / 2**20:.0f} MiB (input, not counted below)")
    rss_now, peak0 = current_rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    res = evaluate_identification(probe, probe_labels, gallery, gallery_labels, chunk=chunk, distractor_label=-1,
                                  gallery_chunk=gallery_chunk)
    wall = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ranks = ", ".join(f"rank-{k} {v:.4f}" for k, v in res.cmc.items())
    print(f"  rank-1/5/10/20 + mAP, one pass                    {wall:8.2f} s")
    print(f"  tracemalloc peak (numpy allocations)              {peak / 2**20:8.1f} MiB")
    bound = "<=" if rss1 == peak0 else "  "  # the earlier high-water mark was not exceeded: only a bound
    print(f"  peak RSS during it minus RSS before it          {bound}{(rss1 - rss_now) / 1024:8.1f} MiB")
    print(f"  dense P x G float32 similarity matrix would be    {probes * len(gallery) * 4 / 2**20:8.1f} MiB")
    print(f"  ({ranks}, mAP {res.mean_ap:.4f})")


def current_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="identification on a 20,000-item gallery")
    ap.add_argument("--pairs", type=int, default=6000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=1024, help="probe rows per block")
    ap.add_argument("--gallery-chunk", type=int, default=4096, help="gallery rows per block")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    gallery = 20_000 if args.quick else 157_871
    bench_identification(3728, gallery, 4443, args.chunk, args.gallery_chunk, rng)  # first: before other work raises peak RSS
    bench_verification(args.pairs, args.repeats, rng)


if __name__ == "__main__":
    main()
