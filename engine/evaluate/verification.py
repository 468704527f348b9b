"""Pair verification: the insightface 10-fold protocol, vectorised over thresholds and folds.

Embeddings are L2-normalised flip-fused features; the score is the squared L2 distance
(0..4); a pair is "same" iff distance < threshold; thresholds are arange(0, 4, 0.01); the folds
are KFold(10) contiguous (so the pair list must already mix matched and mismatched pairs within
each fold, as LFW's pairs.txt does); the best threshold on 9 folds (first best on ties) is applied
to the 10th.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INSIGHTFACE_THRESHOLDS = np.arange(0, 4, 0.01)


@dataclass
class VerificationResult:
    accuracy: float  # mean test-fold accuracy
    std: float  # population std (ddof=0) over folds, as insightface reports
    stderr: float  # std / sqrt(folds - 1): the standard error LFW's protocol asks for
    threshold: float  # mean best threshold
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray


def fold_sizes(n: int, folds: int) -> np.ndarray:
    """sklearn KFold(folds) sizes: the first n % folds folds take one extra item."""
    sizes = np.full(folds, n // folds)
    sizes[: n % folds] += 1
    return sizes


def squared_l2(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    diff = np.asarray(emb1, dtype=np.float64) - np.asarray(emb2, dtype=np.float64)
    return np.einsum("ij,ij->i", diff, diff)


def kfold_accuracy(scores: np.ndarray, issame: np.ndarray, thresholds: np.ndarray = INSIGHTFACE_THRESHOLDS,
                   folds: int = 10) -> VerificationResult:
    """``scores`` are distances (smaller = more alike); "same" iff score < threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    if scores.shape != issame.shape or scores.ndim != 1:
        raise ValueError("scores and issame must be 1-D arrays of the same length")
    if len(scores) < folds:
        raise ValueError(f"need at least {folds} pairs for {folds}-fold evaluation, got {len(scores)}")
    sizes = fold_sizes(len(scores), folds)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # correct[t, i]: does threshold t classify pair i correctly? (T x N booleans; 400 x 6000 is 2.4 MB)
    correct = (scores[None, :] < thresholds[:, None]) == issame[None, :]
    per_fold = np.add.reduceat(correct, starts, axis=1)  # T x folds correct counts
    total = per_fold.sum(axis=1, keepdims=True)
    train_acc = (total - per_fold) / (len(scores) - sizes)[None, :]
    best = np.argmax(train_acc, axis=0)  # argmax returns the first maximum: "first best" tie-breaking
    fold_acc = per_fold[best, np.arange(folds)] / sizes
    std = float(np.std(fold_acc))
    return VerificationResult(
        accuracy=float(np.mean(fold_acc)),
        std=std,
        stderr=std / np.sqrt(folds - 1),
        threshold=float(np.mean(thresholds[best])),
        fold_accuracies=fold_acc,
        fold_thresholds=thresholds[best],
    )


def insightface_verification(emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray) -> VerificationResult:
    """The full insightface protocol on normalised embedding pairs."""
    return kfold_accuracy(squared_l2(emb1, emb2), issame, INSIGHTFACE_THRESHOLDS)
