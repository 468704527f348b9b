"""Pair verification: the insightface 10-fold protocol, vectorised over thresholds and folds.

Embeddings are L2-normalised flip-fused features; the score is the squared L2 distance
(0..4); a pair is "same" iff distance < threshold; thresholds are arange(0, 4, 0.01); the folds
are KFold(10) contiguous (so the pair list must already mix matched and mismatched pairs within
each fold, as LFW's pairs.txt does); the best threshold on 9 folds (first best on ties) is applied
to the 10th.

Also here: insightface's VAL@FAR (``insightface_val_far``, made safe against repeated FAR values) and the
XQLFW protocol (``xqlfw_verification``: cosine distance, thresholds arange(0, 2, 0.001), same folds).
All "scores" in this module are distances (smaller = more alike); see ``engine.evaluate.roc`` for the
similarity-based ROC / TAR@FAR functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INSIGHTFACE_THRESHOLDS = np.arange(0, 4, 0.01)
INSIGHTFACE_VAL_THRESHOLDS = np.arange(0, 4, 0.001)  # insightface's calculate_val grid
XQLFW_THRESHOLDS = np.arange(0, 2, 0.001)  # the XQLFW evaluation script's grid (cosine distance)


@dataclass
class ValFarResult:
    """insightface's "VAL@FAR": per fold, the threshold that gives FAR = target on the 9 training folds,
    applied to the test fold."""

    val: float  # mean test-fold VAL (= TAR: accepted matched pairs / matched pairs)
    val_std: float  # population std (ddof=0) of the test-fold VALs
    far: float  # mean test-fold FAR (accepted mismatched pairs / mismatched pairs)
    far_target: float
    fold_val: np.ndarray
    fold_far: np.ndarray
    fold_thresholds: np.ndarray


@dataclass
class VerificationResult:
    accuracy: float  # mean test-fold accuracy
    std: float  # population std (ddof=0) over folds, as insightface reports
    stderr: float  # std / sqrt(folds - 1): the standard error LFW's protocol asks for
    threshold: float  # mean best threshold
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray
    val_far: ValFarResult | None = None  # insightface's VAL@FAR=1e-3, filled by insightface_verification
    # (N,) bool: pair i classified correctly by its own test fold's best threshold - the decisions whose
    # per-fold means are ``fold_accuracies`` (and whose mean is ``accuracy`` when the folds are equal-sized).
    correct: np.ndarray | None = None


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
    scores, issame = _check_pairs(scores, issame, folds)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    sizes = fold_sizes(len(scores), folds)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # correct[t, i]: does threshold t classify pair i correctly? (T x N booleans; 400 x 6000 is 2.4 MB)
    correct = (scores[None, :] < thresholds[:, None]) == issame[None, :]
    per_fold = np.add.reduceat(correct, starts, axis=1)  # T x folds correct counts
    total = per_fold.sum(axis=1, keepdims=True)
    train_acc = (total - per_fold) / (len(scores) - sizes)[None, :]
    best = np.argmax(train_acc, axis=0)  # argmax returns the first maximum: "first best" tie-breaking
    fold_acc = per_fold[best, np.arange(folds)] / sizes
    pair_correct = correct[np.repeat(best, sizes), np.arange(len(scores))]
    std = float(np.std(fold_acc))
    return VerificationResult(
        accuracy=float(np.mean(fold_acc)),
        std=std,
        stderr=std / np.sqrt(folds - 1),
        threshold=float(np.mean(thresholds[best])),
        fold_accuracies=fold_acc,
        fold_thresholds=thresholds[best],
        correct=pair_correct,
    )



def _check_pairs(scores: np.ndarray, issame: np.ndarray, folds: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    if scores.shape != issame.shape or scores.ndim != 1:
        raise ValueError("scores and issame must be 1-D arrays of the same length")
    if len(scores) < folds:
        raise ValueError(f"need at least {folds} pairs for {folds}-fold evaluation, got {len(scores)}")
    return scores, issame


def threshold_at_far(far: np.ndarray, thresholds: np.ndarray, far_target: float) -> float:
    """The threshold at which the training FAR curve reaches ``far_target``, safe for repeated FARs.

    ``far[i]`` is the FAR at ``thresholds[i]`` (increasing thresholds, so ``far`` is non-decreasing and,
    on a finite pair list, full of repeated values). insightface does
    ``interp1d(far, thresholds, kind="slinear")(far_target)``, which current SciPy refuses as soon as
    two FARs are equal. Rule used here: the LARGEST threshold on the piecewise-linear
    (threshold, FAR) curve whose FAR is <= ``far_target``. Where the FARs around the target are
    distinct this is exactly interp1d's answer (linear interpolation between the last grid point with
    FAR <= target and the next one); where the target equals a plateau of FAR values it is the
    plateau's last (largest) threshold; when FAR already exceeds the target at the first threshold it
    is ``thresholds[0]``. As in insightface, a curve that never reaches the target gives 0.0.
    """
    far = np.asarray(far, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if far.max() < far_target:
        return 0.0
    j = int(np.searchsorted(far, far_target, side="right"))  # first grid point with FAR > target
    if j == len(far):
        return float(thresholds[-1])
    if j == 0:
        return float(thresholds[0])
    i = j - 1
    return float(thresholds[i] + (far_target - far[i]) * (thresholds[j] - thresholds[i]) / (far[j] - far[i]))


def insightface_val_far(scores: np.ndarray, issame: np.ndarray, far_target: float = 1e-3,
                        thresholds: np.ndarray = INSIGHTFACE_VAL_THRESHOLDS, folds: int = 10) -> ValFarResult:
    """insightface's ``calculate_val`` on distances ("same" iff score < threshold), vectorised.

    Per fold: FAR at every threshold on the 9 training folds; if the largest training FAR reaches
    ``far_target`` the threshold is ``threshold_at_far`` (no interp1d, so repeated FARs are fine), else
    0.0; then VAL and FAR of that threshold on the test fold. A test fold without matched (mismatched)
    pairs gets VAL (FAR) 0 instead of insightface's division by zero.
    """
    scores, issame = _check_pairs(scores, issame, folds)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or len(thresholds) == 0 or np.any(np.diff(thresholds) <= 0):
        raise ValueError("thresholds must be a non-empty, strictly increasing 1-D array")
    bounds = np.concatenate([[0], np.cumsum(fold_sizes(len(scores), folds))])
    neg = ~issame
    # False accepts (mismatched pairs with score < t) at every threshold: all pairs minus the test fold.
    all_fa = np.searchsorted(np.sort(scores[neg]), thresholds, side="left")
    n_neg = int(neg.sum())
    fold_thr = np.zeros(folds)
    for k in range(folds):
        part = slice(bounds[k], bounds[k + 1])
        fold_neg = np.sort(scores[part][neg[part]])
        n_train = n_neg - len(fold_neg)
        if n_train == 0:
            continue  # no training FAR to match: threshold 0 as for an unreachable target
        train_far = (all_fa - np.searchsorted(fold_neg, thresholds, side="left")) / n_train
        fold_thr[k] = threshold_at_far(train_far, thresholds, far_target)
    # Test-fold VAL / FAR with each fold's own threshold, all folds at once.
    starts = bounds[:-1]
    accept = scores < np.repeat(fold_thr, np.diff(bounds))
    ta = np.add.reduceat(accept & issame, starts)
    fa = np.add.reduceat(accept & neg, starts)
    n_same = np.add.reduceat(issame.astype(np.int64), starts)
    n_diff = np.add.reduceat(neg.astype(np.int64), starts)
    fold_val = np.divide(ta, n_same, out=np.zeros(folds), where=n_same > 0)
    fold_far = np.divide(fa, n_diff, out=np.zeros(folds), where=n_diff > 0)
    return ValFarResult(val=float(fold_val.mean()), val_std=float(fold_val.std()), far=float(fold_far.mean()),
                        far_target=far_target, fold_val=fold_val, fold_far=fold_far, fold_thresholds=fold_thr)


def cosine_distance(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    """1 - cos, computed as sklearn's ``paired_distances(metric="cosine")`` does (the XQLFW script's
    call): half the squared L2 distance of the L2-normalised vectors (zero vectors stay zero)."""

    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        norm = np.sqrt(np.einsum("ij,ij->i", x, x))
        norm[norm == 0] = 1.0
        return x / norm[:, None]

    return 0.5 * squared_l2(unit(emb1), unit(emb2))


def insightface_verification(emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray,
                             folds: int = 10) -> VerificationResult:
    """The full insightface protocol on normalised embedding pairs: accuracy (thresholds 0..4 step 0.01)
    plus VAL@FAR=1e-3 (thresholds 0..4 step 0.001) in ``val_far``. ``folds``: the pairs file's own
    fold count (its header; 10 for LFW's view 2)."""
    dist = squared_l2(emb1, emb2)
    result = kfold_accuracy(dist, issame, INSIGHTFACE_THRESHOLDS, folds=folds)
    result.val_far = insightface_val_far(dist, issame, folds=folds)
    return result


def xqlfw_verification(emb1: np.ndarray, emb2: np.ndarray, issame: np.ndarray,
                       folds: int = 10) -> VerificationResult:
    """The official XQLFW protocol: cosine distance (1 - cos), thresholds arange(0, 2, 0.001),
    KFold(10) contiguous folds, "same" iff distance < threshold, first best threshold on the training
    folds. The script reports ``accuracy`` (mean) and ``threshold`` (mean best threshold)."""
    return kfold_accuracy(cosine_distance(emb1, emb2), issame, XQLFW_THRESHOLDS, folds=folds)
