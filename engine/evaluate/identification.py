"""Closed-set identification: CMC (rank-k) and mAP, streamed in bounded memory.

Protocol (SCface, TinyFace): every probe is compared with every gallery item by cosine similarity
of the L2-normalised embeddings; the gallery is sorted by decreasing similarity, ties broken by
gallery index (the order of ``np.argsort(-sim, kind="stable")``); the "true matches" of a probe are
the gallery items with its label.

- rank-k: the fraction of probes whose first true match is within the top k.
- AP: the Market-1501 / TinyFace ``compute_AP`` trapezoid rule. With the true matches at 0-based
  ranks r_0 < r_1 < ... (n of them): AP = sum_i (1/n) * (p_old + p_i) / 2 where p_i = (i+1)/(r_i+1)
  and p_old = i/r_i (1 when r_i = 0). One true match at rank 2 (r = 1) scores (0 + 1/2)/2 = 0.25,
  not the 0.5 of sklearn's step-wise AP. mAP is the mean over probes.

Distractors: gallery items whose label equals ``distractor_label`` (a sentinel such as -1) never
match any probe; they only compete for ranks. With ``distractor_label=None`` every label is real.

Closed set: a probe without any true match in the gallery is an error (ValueError), not a silent
miss.

Memory: the P x G similarity matrix is never built. The gallery is streamed in chunks of
``gallery_chunk`` rows (default 4096: wide blocks keep BLAS efficient) and the probes in chunks of
``chunk`` rows (default 1024), so the working set is O(chunk x gallery_chunk) (about 20 MB at the
defaults) plus O(P x D) for the normalised probes and O(number of true matches). For each true match (probe p, gallery j) the rank is the number of gallery items k
with s_k > s_j, or s_k == s_j and k < j, counted chunk by chunk. s_j is computed once beforehand (in
float64, rounded to float32) and written over the corresponding entry of every similarity block,
so every comparison involving a true match uses one single value for it: ranks stay a consistent
permutation even though BLAS may round the same dot product differently in differently shaped
products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RANKS = (1, 5, 10, 20)


@dataclass
class MatchRanks:
    """1-based ranks of every true match of every probe, CSR-style, in probe order.

    The ranks of probe p are ``ranks[offsets[p]:offsets[p + 1]]``, sorted ascending."""

    ranks: np.ndarray  # (M,) int64
    offsets: np.ndarray  # (P + 1,) int64

    @property
    def n_matches(self) -> np.ndarray:
        return np.diff(self.offsets)

    def first(self) -> np.ndarray:
        """(P,) 1-based rank of each probe's first true match."""
        return self.ranks[self.offsets[:-1]]


@dataclass
class IdentificationResult:
    cmc: dict[int, float]  # k -> fraction of probes whose first true match is in the top k
    mean_ap: float
    average_precision: np.ndarray  # (P,) per-probe AP (trapezoid rule)
    first_match_rank: np.ndarray  # (P,) 1-based
    match_ranks: MatchRanks

    def hits(self, k: int = 1) -> np.ndarray:
        """(P,) bool: is the probe's first true match within the top ``k``? (``hits(k).mean() == cmc[k]``:
        the per-probe decisions behind rank-k, for bootstrap intervals and paired tests.)"""
        if int(k) < 1:
            raise ValueError("ranks are 1-based: k >= 1")
        return self.first_match_rank <= int(k)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 rows divided by their L2 norm (norm clamped at 1e-12, as torch's F.normalize)."""
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.maximum(norm, np.float32(1e-12))[:, None]


def _true_matches(probe_labels: np.ndarray, gallery_labels: np.ndarray,
                  distractor_label: object) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (P+1,), gallery indices (M,)) of each probe's true matches, ascending gallery index."""
    valid = np.ones(len(gallery_labels), dtype=bool)
    if distractor_label is not None:
        valid = ~np.broadcast_to(np.asarray(gallery_labels == distractor_label, dtype=bool), valid.shape)
    g_index = np.flatnonzero(valid)
    _, codes = np.unique(np.concatenate([probe_labels, gallery_labels[valid]]), return_inverse=True)
    p_code, g_code = codes[: len(probe_labels)], codes[len(probe_labels):]
    order = np.argsort(g_code, kind="stable")  # stable: ascending gallery index within a label
    g_code, g_index = g_code[order], g_index[order]
    lo = np.searchsorted(g_code, p_code, side="left")
    hi = np.searchsorted(g_code, p_code, side="right")
    n = hi - lo
    missing = np.flatnonzero(n == 0)
    if len(missing):
        raise ValueError(f"closed-set identification: {len(missing)} of {len(n)} probes have no true match in "
                         f"the gallery (first probe indices: {missing[:5].tolist()})")
    offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], n)
    return offsets, g_index[np.repeat(lo, n) + within]


def true_match_ranks(probe_emb: np.ndarray, probe_labels: Sequence | np.ndarray, gallery_emb: np.ndarray,
                     gallery_labels: Sequence | np.ndarray, chunk: int = 1024,
                     distractor_label: object = None, gallery_chunk: int = 4096) -> MatchRanks:
    """The 1-based rank of every true match of every probe (see the module docstring for the order)."""
    probe_labels = np.asarray(probe_labels)
    gallery_labels = np.asarray(gallery_labels)
    probe_emb = np.asarray(probe_emb)
    gallery_emb = np.asarray(gallery_emb)  # no copy for arrays and memmaps
    if probe_emb.ndim != 2 or gallery_emb.ndim != 2 or probe_emb.shape[1] != gallery_emb.shape[1]:
        raise ValueError("probe and gallery embeddings must be 2-D with the same dimension")
    if probe_labels.shape != (len(probe_emb),) or gallery_labels.shape != (len(gallery_emb),):
        raise ValueError("one label per embedding expected")
    if len(probe_emb) == 0 or len(gallery_emb) == 0:
        raise ValueError("empty probe set or gallery")
    if chunk < 1 or gallery_chunk < 1:
        raise ValueError("chunk and gallery_chunk must be >= 1")
    n_gallery = len(gallery_emb)
    offsets, matches = _true_matches(probe_labels, gallery_labels, distractor_label)
    n_true = np.diff(offsets)

    # Work in an order of decreasing match count: the probes that own a k-th match are then a prefix.
    perm = np.argsort(-n_true, kind="stable")
    n_perm = n_true[perm]
    starts = np.concatenate([[0], np.cumsum(n_perm)]).astype(np.int64)
    flat_row = np.repeat(np.arange(len(perm)), n_perm)
    # src[f]: position in the caller's layout of the match at position f of the permuted layout
    src = np.repeat(offsets[perm], n_perm) + (np.arange(starts[-1]) - np.repeat(starts[:-1], n_perm))
    flat_j = matches[src]  # gallery index of each match, permuted CSR layout
    probes = _unit_rows(probe_emb[perm])

    # The one value each true match's similarity takes everywhere (float64 dot, rounded to float32).
    flat_v = np.empty(len(flat_j), dtype=np.float32)
    for b in range(0, len(flat_j), 1024):
        g = _unit_rows(gallery_emb[flat_j[b:b + 1024]])
        flat_v[b:b + 1024] = np.einsum("ij,ij->i", probes[flat_row[b:b + 1024]], g, dtype=np.float64)
    # S >= v  <=>  S > nextafter(v, -inf): one strict comparison covers ties that rank ahead.
    flat_v_down = np.nextafter(flat_v, np.float32(-np.inf))
    # slot_idx[t]: flat positions of the t-th match of permuted probes 0 .. (number owning one) - 1
    slot_idx = [starts[: int(np.sum(n_perm > t))] + t for t in range(int(n_perm[0]))]
    by_j = np.argsort(flat_j, kind="stable")
    sorted_j = flat_j[by_j]
    before = np.zeros(len(flat_j), dtype=np.int64)  # gallery items ranked ahead of each true match

    n_probes = len(probes)
    # One similarity block and one comparison block, reused (contiguous views of flat buffers).
    sim_buf = np.empty(min(chunk, n_probes) * min(gallery_chunk, n_gallery), dtype=np.float32)
    cmp_buf = np.empty(len(sim_buf), dtype=bool)
    for g0 in range(0, n_gallery, gallery_chunk):
        g1 = min(g0 + gallery_chunk, n_gallery)
        gal_t = None  # drop the previous chunk before normalising the next
        gal_t = _unit_rows(gallery_emb[g0:g1]).T  # a view: BLAS takes the transpose as is
        here = by_j[np.searchsorted(sorted_j, g0):np.searchsorted(sorted_j, g1)]  # matches in this chunk
        here_row = flat_row[here]
        col_index = np.arange(g1 - g0)[None, :]
        for p0 in range(0, n_probes, chunk):
            p1 = min(p0 + chunk, n_probes)
            block = sim_buf[: (p1 - p0) * (g1 - g0)].reshape(p1 - p0, g1 - g0)
            sim = np.matmul(probes[p0:p1], gal_t, out=block)
            own = here[(here_row >= p0) & (here_row < p1)]
            own_row, own_col = flat_row[own] - p0, flat_j[own] - g0
            sim[own_row, own_col] = flat_v[own]
            for idx in slot_idx:
                hi = min(p1, len(idx))
                if hi <= p0:
                    break
                f = idx[p0:hi]
                # Items in a chunk wholly before j rank ahead on ties (>=); elsewhere only if > (ties
                # before j inside j's own chunk are added below). j itself never exceeds its own value.
                thr = np.where(flat_j[f] >= g1, flat_v_down[f], flat_v[f])
                rows = sim[: hi - p0]
                above = np.greater(rows, thr[:, None], out=cmp_buf[: rows.size].reshape(rows.shape))
                before[f] += np.count_nonzero(above, axis=1)
            for e0 in range(0, len(own), 64):  # small batches: a probe may own many matches in one chunk
                e = slice(e0, e0 + 64)
                ties = (sim[own_row[e]] == flat_v[own[e]][:, None]) & (col_index < own_col[e, None])
                before[own[e]] += np.count_nonzero(ties, axis=1)

    # Back to the caller's probe order, each probe's ranks sorted ascending.
    ranks = np.empty_like(before)
    ranks[src] = before + 1
    owner = np.repeat(np.arange(len(n_true)), n_true)
    ranks = ranks[np.lexsort((ranks, owner))]
    return MatchRanks(ranks=ranks, offsets=offsets)


def cmc_from_ranks(match_ranks: MatchRanks, ranks: Sequence[int] = DEFAULT_RANKS) -> dict[int, float]:
    first = match_ranks.first()
    out = {}
    for k in ranks:
        if int(k) < 1:
            raise ValueError("ranks are 1-based: k >= 1")
        out[int(k)] = float(np.mean(first <= k))
    return out


def average_precision_from_ranks(match_ranks: MatchRanks) -> np.ndarray:
    """(P,) trapezoid-rule AP per probe (see the module docstring)."""
    n = match_ranks.n_matches
    r = match_ranks.ranks.astype(np.float64) - 1.0  # 0-based ranks, ascending per probe
    i = np.arange(len(r)) - np.repeat(match_ranks.offsets[:-1], n)  # 0-based index among true matches
    precision = (i + 1) / (r + 1)
    old = np.divide(i, r, out=np.ones_like(r), where=r != 0)
    contrib = (old + precision) / 2 / np.repeat(n, n)
    return np.add.reduceat(contrib, match_ranks.offsets[:-1])


def evaluate_identification(probe_emb: np.ndarray, probe_labels: Sequence | np.ndarray, gallery_emb: np.ndarray,
                            gallery_labels: Sequence | np.ndarray, ranks: Sequence[int] = DEFAULT_RANKS,
                            chunk: int = 1024, distractor_label: object = None,
                            gallery_chunk: int = 4096) -> IdentificationResult:
    """CMC and mAP from one streaming pass over the gallery."""
    mr = true_match_ranks(probe_emb, probe_labels, gallery_emb, gallery_labels, chunk, distractor_label,
                          gallery_chunk)
    ap = average_precision_from_ranks(mr)
    return IdentificationResult(cmc=cmc_from_ranks(mr, ranks), mean_ap=float(ap.mean()), average_precision=ap,
                                first_match_rank=mr.first(), match_ranks=mr)


def cmc(probe_emb: np.ndarray, probe_labels: Sequence | np.ndarray, gallery_emb: np.ndarray,
        gallery_labels: Sequence | np.ndarray, ranks: Sequence[int] = DEFAULT_RANKS, chunk: int = 1024,
        distractor_label: object = None, gallery_chunk: int = 4096) -> dict[int, float]:
    """Rank-k identification rates: {k: fraction of probes whose first true match is in the top k}."""
    mr = true_match_ranks(probe_emb, probe_labels, gallery_emb, gallery_labels, chunk, distractor_label,
                          gallery_chunk)
    return cmc_from_ranks(mr, ranks)


def mean_average_precision(probe_emb: np.ndarray, probe_labels: Sequence | np.ndarray, gallery_emb: np.ndarray,
                           gallery_labels: Sequence | np.ndarray, chunk: int = 1024,
                           distractor_label: object = None, gallery_chunk: int = 4096) -> float:
    """mAP over probes with the TinyFace / Market-1501 trapezoid AP."""
    mr = true_match_ranks(probe_emb, probe_labels, gallery_emb, gallery_labels, chunk, distractor_label,
                          gallery_chunk)
    return float(average_precision_from_ranks(mr).mean())
