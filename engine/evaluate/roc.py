"""ROC curves and TAR@FAR, computed with numpy alone.

Convention: scores are SIMILARITIES (larger = more alike) and a pair is accepted iff
``score >= threshold``, as in sklearn's ``roc_curve`` and insightface's IJB evaluation. Distances
(smaller = more alike) convert with ``similarity_from_distance`` (exact negation: it keeps every tie
and every ordering, so the ROC points are those of "accept iff distance <= t"), or, for squared L2 on
unit vectors, ``cosine_from_squared_l2`` (1 - d/2: the cosine itself, but rounding may merge
distances that differ in their last bits).

``roc_curve`` reproduces ``sklearn.metrics.roc_curve(y, score, drop_intermediate=...)`` exactly
(fpr, tpr and thresholds, including ties and the leading +inf threshold). ``tar_at_far`` reads
TAR at FAR targets off a curve by two conventions, both reported:

- "nearest": the ROC point whose FPR is nearest to the target, first such point on ties
  (insightface's IJB evaluation: ``min(zip(abs(fpr - target), range(len(fpr))))``, i.e.
  ``np.argmin(np.abs(fpr - target))``). Its FPR may exceed the target. insightface builds that curve
  with sklearn's default ``drop_intermediate=True``; pass the same to reproduce its numbers.
- "conservative": the best TAR among the ROC points with FPR <= target (an operating point that
  honours the FAR budget on this data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

FAR_TARGETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


class RocCurve(NamedTuple):
    fpr: np.ndarray  # false positive rate at each threshold, non-decreasing
    tpr: np.ndarray  # true positive rate at each threshold, non-decreasing
    thresholds: np.ndarray  # decreasing; thresholds[0] = +inf (accept nothing); accept iff score >= t


def similarity_from_distance(distance: np.ndarray) -> np.ndarray:
    """Exact order-reversing map from distances to similarities: ``-distance``."""
    return -np.asarray(distance, dtype=np.float64)


def cosine_from_squared_l2(distance: np.ndarray) -> np.ndarray:
    """Cosine similarity of unit vectors from their squared L2 distance: ``1 - d / 2``."""
    return 1.0 - np.asarray(distance, dtype=np.float64) / 2.0


def roc_curve(y_true: np.ndarray, y_score: np.ndarray, drop_intermediate: bool = False) -> RocCurve:
    """ROC of similarity scores; equal to ``sklearn.metrics.roc_curve`` with the same
    ``drop_intermediate``. ``y_true``: booleans or 0/1, both classes present."""
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape or y_true.ndim != 1:
        raise ValueError("y_true and y_score must be 1-D arrays of the same length")
    if y_true.dtype != bool:
        if not np.all((y_true == 0) | (y_true == 1)):
            raise ValueError("y_true must hold booleans or 0/1 labels")
        y_true = y_true.astype(bool)
    if np.isnan(y_score).any():
        raise ValueError("y_score contains NaN")
    n_pos = int(y_true.sum())
    if n_pos == 0 or n_pos == len(y_true):
        raise ValueError("a ROC curve needs at least one positive and one negative pair")
    order = np.argsort(-y_score, kind="stable")  # descending scores
    score = y_score[order]
    # One ROC point per distinct score: the last position of each run of equal scores.
    last = np.flatnonzero(np.r_[score[1:] != score[:-1], True])
    tps = np.cumsum(y_true[order], dtype=np.int64)[last]
    fps = last + 1 - tps
    thresholds = score[last]
    if drop_intermediate and len(fps) > 2:
        # Keep only the corners: points where the second difference of fps or tps is non-zero.
        corner = np.r_[True, (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), True]
        fps, tps, thresholds = fps[corner], tps[corner], thresholds[corner]
    fps = np.r_[0, fps]
    tps = np.r_[0, tps]
    thresholds = np.r_[np.inf, thresholds]
    return RocCurve(fpr=fps / fps[-1], tpr=tps / tps[-1], thresholds=thresholds)


@dataclass(frozen=True)
class TarAtFar:
    """TAR at one FAR target, by both conventions (see the module docstring)."""

    far_target: float
    nearest_tar: float  # insightface IJB: TAR of the point whose FPR is nearest to the target
    nearest_fpr: float  # the FPR actually reached there (may exceed the target)
    conservative_tar: float  # best TAR among the points with FPR <= target
    conservative_fpr: float
    nearest_threshold: float | None = None  # similarity thresholds, when the curve's were given
    conservative_threshold: float | None = None


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, targets: tuple[float, ...] = FAR_TARGETS,
               thresholds: np.ndarray | None = None) -> dict[float, TarAtFar]:
    """TAR at each FAR target, keyed by target, from a ROC curve (e.g. ``roc_curve``'s fpr, tpr)."""
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    if fpr.shape != tpr.shape or fpr.ndim != 1 or len(fpr) == 0:
        raise ValueError("fpr and tpr must be non-empty 1-D arrays of the same length")
    if thresholds is not None and np.shape(thresholds) != fpr.shape:
        raise ValueError("thresholds must have the shape of fpr")
    out: dict[float, TarAtFar] = {}
    for target in targets:
        near = int(np.argmin(np.abs(fpr - target)))
        allowed = np.flatnonzero(fpr <= target)
        if len(allowed):
            cons = int(allowed[np.argmax(tpr[allowed])])  # first best: the strictest such threshold
            cons_tar, cons_fpr = float(tpr[cons]), float(fpr[cons])
        else:  # only on curves without the (0, 0) point
            cons, cons_tar, cons_fpr = None, 0.0, 0.0
        out[target] = TarAtFar(
            far_target=target,
            nearest_tar=float(tpr[near]),
            nearest_fpr=float(fpr[near]),
            conservative_tar=cons_tar,
            conservative_fpr=cons_fpr,
            nearest_threshold=None if thresholds is None else float(thresholds[near]),
            conservative_threshold=None if thresholds is None or cons is None else float(thresholds[cons]),
        )
    return out


def tar_at_far_from_scores(y_true: np.ndarray, y_score: np.ndarray, targets: tuple[float, ...] = FAR_TARGETS,
                           drop_intermediate: bool = False) -> dict[float, TarAtFar]:
    """``tar_at_far`` of ``roc_curve(y_true, y_score)``, thresholds included (similarity scores)."""
    curve = roc_curve(y_true, y_score, drop_intermediate=drop_intermediate)
    return tar_at_far(curve.fpr, curve.tpr, targets, thresholds=curve.thresholds)
