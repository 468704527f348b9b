import numpy as np
import pytest

from engine.evaluate.verification import INSIGHTFACE_THRESHOLDS, fold_sizes, kfold_accuracy, squared_l2


def reference_kfold(dist, issame, thresholds, folds=10):
    """A direct, loop-by-loop transcription of insightface's calculate_roc accuracy part."""
    n = len(dist)
    sizes = fold_sizes(n, folds)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    accs, best_t = [], []
    for k in range(folds):
        test = np.arange(bounds[k], bounds[k + 1])
        train = np.setdiff1d(np.arange(n), test)
        train_acc = [np.mean((dist[train] < t) == issame[train]) for t in thresholds]
        best = int(np.argmax(train_acc))
        best_t.append(thresholds[best])
        accs.append(np.mean((dist[test] < thresholds[best]) == issame[test]))
    return np.array(accs), np.array(best_t)


def test_matches_loop_reference_on_random_scores():
    rng = np.random.default_rng(0)
    issame = np.tile(np.repeat([True, False], 30), 10)
    dist = np.where(issame, rng.normal(1.0, 0.4, issame.size), rng.normal(2.0, 0.4, issame.size)).clip(0, 4)
    res = kfold_accuracy(dist, issame)
    accs, thr = reference_kfold(dist, issame, INSIGHTFACE_THRESHOLDS)
    np.testing.assert_allclose(res.fold_accuracies, accs)
    np.testing.assert_allclose(res.fold_thresholds, thr)
    assert res.accuracy == pytest.approx(accs.mean())
    assert res.std == pytest.approx(accs.std(ddof=0))
    assert res.stderr == pytest.approx(accs.std(ddof=0) / 3)


def test_known_answer_strict_comparison_and_first_best_tie():
    # Matched pairs at distance exactly 1.0, mismatched at 3.0: "same" needs dist < t strictly,
    # so t = 1.00 misclassifies the matched pairs and the first perfect threshold is 1.01.
    issame = np.tile([True, False], 50)
    dist = np.where(issame, 1.0, 3.0)
    res = kfold_accuracy(dist, issame)
    assert res.accuracy == 1.0
    np.testing.assert_allclose(res.fold_thresholds, 1.01)


def test_uneven_folds_follow_kfold_sizes():
    assert list(fold_sizes(23, 10)) == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    issame = np.array([True, False] * 11 + [True])
    res = kfold_accuracy(np.where(issame, 0.5, 2.5), issame)
    assert res.accuracy == 1.0


def test_squared_l2_of_unit_vectors_is_in_0_4():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[-1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(squared_l2(a, b), [4.0, 0.0])
