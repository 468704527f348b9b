"""Known-answer tests of the evaluation protocols: verification (insightface, XQLFW, VAL@FAR), ROC and
TAR@FAR, identification (CMC, trapezoid mAP, chunked streaming)."""

import numpy as np
import pytest
from scipy import interpolate
from sklearn import metrics

from engine.evaluate.identification import (
    MatchRanks,
    average_precision_from_ranks,
    cmc,
    evaluate_identification,
    mean_average_precision,
    true_match_ranks,
)
from engine.evaluate.roc import (
    cosine_from_squared_l2,
    roc_curve,
    similarity_from_distance,
    tar_at_far,
    tar_at_far_from_scores,
)
from engine.evaluate.verification import (
    XQLFW_THRESHOLDS,
    cosine_distance,
    fold_sizes,
    insightface_val_far,
    insightface_verification,
    kfold_accuracy,
    threshold_at_far,
    xqlfw_verification,
)

# ---------------------------------------------------------------- verification


def test_folds_are_contiguous_kfold_blocks():
    # 103 pairs: KFold(10) sizes 11,11,11,10,...; flip the labels of the 4th block only.
    sizes = fold_sizes(103, 10)
    assert list(sizes) == [11, 11, 11] + [10] * 7
    issame = np.tile([True, False], 52)[:103]
    dist = np.where(issame, 0.5, 2.5)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    issame[bounds[3]:bounds[4]] = ~issame[bounds[3]:bounds[4]]
    res = kfold_accuracy(dist, issame)
    np.testing.assert_array_equal(res.fold_accuracies, [1, 1, 1, 0, 1, 1, 1, 1, 1, 1])


def test_std_is_population_std_and_stderr_divides_by_sqrt_folds_minus_one():
    # 10 folds x (5 matched at 1.0, 5 mismatched at 3.0); fold 0 has its distances swapped, so it
    # scores 0 with the threshold learnt elsewhere (first best 1.01) and every other fold scores 1.
    issame = np.tile([True] * 5 + [False] * 5, 10)
    dist = np.where(issame, 1.0, 3.0)
    dist[:10] = 4.0 - dist[:10]
    res = kfold_accuracy(dist, issame)
    np.testing.assert_array_equal(res.fold_accuracies, [0] + [1] * 9)
    np.testing.assert_allclose(res.fold_thresholds, 1.01)
    assert res.accuracy == pytest.approx(0.9)
    assert res.std == pytest.approx(0.3)  # ddof=0; ddof=1 would be 0.316
    assert res.stderr == pytest.approx(0.1)


def test_insightface_verification_also_reports_val_far():
    rng = np.random.default_rng(3)
    issame = np.tile(np.repeat([True, False], 30), 10)
    e1 = rng.normal(size=(600, 16))
    e2 = np.where(issame[:, None], e1 + 0.3 * rng.normal(size=(600, 16)), rng.normal(size=(600, 16)))
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 /= np.linalg.norm(e2, axis=1, keepdims=True)
    res = insightface_verification(e1, e2, issame)
    assert res.accuracy > 0.9
    assert res.val_far is not None and res.val_far.far_target == 1e-3
    assert 0 <= res.val_far.val <= 1 and len(res.val_far.fold_val) == 10


def xqlfw_loop_reference(dist, issame, folds=10):
    """Loop transcription of the XQLFW script's k-fold accuracy part."""
    bounds = np.concatenate([[0], np.cumsum(fold_sizes(len(dist), folds))])
    accs, best = [], []
    for k in range(folds):
        test = np.arange(bounds[k], bounds[k + 1])
        train = np.setdiff1d(np.arange(len(dist)), test)
        acc_train = [np.mean(np.less(dist[train], t) == issame[train]) for t in XQLFW_THRESHOLDS]
        b = int(np.argmax(acc_train))
        best.append(XQLFW_THRESHOLDS[b])
        accs.append(np.mean(np.less(dist[test], XQLFW_THRESHOLDS[b]) == issame[test]))
    return np.array(accs), np.array(best)


def test_xqlfw_matches_loop_reference_and_uses_cosine_distance():
    rng = np.random.default_rng(1)
    issame = np.tile(np.repeat([True, False], 6), 10)
    e1 = rng.normal(size=(120, 8))
    e2 = np.where(issame[:, None], e1 + 0.8 * rng.normal(size=(120, 8)), rng.normal(size=(120, 8))) * 7.0
    dist = cosine_distance(e1, e2)
    cos = np.einsum("ij,ij->i", e1, e2) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
    np.testing.assert_allclose(dist, 1 - cos, atol=1e-12)  # scale-free 1 - cos
    np.testing.assert_allclose(dist, metrics.pairwise.paired_distances(e1, e2, metric="cosine"), rtol=1e-12)
    res = xqlfw_verification(e1, e2, issame)
    accs, best = xqlfw_loop_reference(dist, issame)
    np.testing.assert_allclose(res.fold_accuracies, accs)
    np.testing.assert_allclose(res.fold_thresholds, best)
    assert res.accuracy == pytest.approx(accs.mean())
    assert res.threshold == pytest.approx(best.mean())


def test_xqlfw_strict_threshold_and_first_best():
    # Matched pairs identical (cosine distance exactly 0), mismatched orthogonal (exactly 1): t = 0 accepts
    # nothing, so the first perfect threshold on the 0.001 grid is 0.001.
    issame = np.tile([True, False], 50)
    e1 = np.tile([[1.0, 0.0]], (100, 1))
    e2 = np.where(issame[:, None], [[2.0, 0.0]], [[0.0, 3.0]])
    res = xqlfw_verification(e1, e2, issame)
    assert res.accuracy == 1.0
    np.testing.assert_allclose(res.fold_thresholds, 0.001)
    assert res.threshold == pytest.approx(0.001)
    assert len(XQLFW_THRESHOLDS) == 2000 and XQLFW_THRESHOLDS[-1] == pytest.approx(1.999)


def test_threshold_at_far_rule_on_plateaus():
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    far = np.array([0.0, 0.0, 0.001, 0.001, 0.002])
    assert threshold_at_far(far, t, 0.001) == 3.0  # target hits a plateau: its largest threshold
    assert threshold_at_far(far, t, 0.0015) == pytest.approx(3.5)  # between plateaus: interpolate
    assert threshold_at_far(far, t, 0.0005) == pytest.approx(1.5)
    assert threshold_at_far(far, t, 0.002) == 4.0
    assert threshold_at_far(far, t, 0.01) == 0.0  # never reached: insightface's 0
    assert threshold_at_far(np.array([0.01, 0.02]), np.array([1.0, 2.0]), 0.001) == 1.0


def test_threshold_at_far_equals_interp1d_when_fars_are_distinct():
    rng = np.random.default_rng(2)
    far = np.sort(rng.uniform(0, 0.01, 50))
    far = far[np.r_[True, np.diff(far) > 0]]
    thresholds = np.sort(rng.uniform(0, 4, len(far)))
    for target in (far[3], (far[10] + far[11]) / 2, 0.004):
        expected = float(interpolate.interp1d(far, thresholds, kind="slinear")(target))
        assert threshold_at_far(far, thresholds, target) == pytest.approx(expected, rel=1e-12)


def val_far_loop_reference(dist, issame, far_target, thresholds, folds=10):
    """insightface's calculate_val loop, with interp1d replaced by threshold_at_far's rule written out."""
    bounds = np.concatenate([[0], np.cumsum(fold_sizes(len(dist), folds))])
    vals, fars = [], []
    for k in range(folds):
        test = np.arange(bounds[k], bounds[k + 1])
        train = np.setdiff1d(np.arange(len(dist)), test)
        far_train = np.array([np.sum((dist[train] < t) & ~issame[train]) / np.sum(~issame[train])
                              for t in thresholds])
        if far_train.max() >= far_target:
            ok = np.flatnonzero(far_train <= far_target)
            i = ok[-1]
            if i == len(thresholds) - 1:
                thr = thresholds[i]
            else:
                j = i + 1
                thr = thresholds[i] + (far_target - far_train[i]) * (thresholds[j] - thresholds[i]) / (
                    far_train[j] - far_train[i])
        else:
            thr = 0.0
        acc = dist[test] < thr
        vals.append(np.sum(acc & issame[test]) / np.sum(issame[test]))
        fars.append(np.sum(acc & ~issame[test]) / np.sum(~issame[test]))
    return np.array(vals), np.array(fars)


def test_val_far_survives_heavily_duplicated_fars():
    # Integer distances: the training FAR curve is a staircase of long plateaus. interp1d chokes on it.
    rng = np.random.default_rng(4)
    issame = np.tile(np.repeat([True, False], 50), 10)
    dist = np.where(issame, rng.integers(0, 3, 1000), rng.integers(1, 4, 1000)).astype(float)
    thresholds = np.arange(0, 4, 0.001)
    train = np.arange(100, 1000)
    far_train = np.array([np.mean(dist[train][~issame[train]] < t) for t in thresholds])
    with pytest.raises(ValueError):
        interpolate.interp1d(far_train, thresholds, kind="slinear")(0.3)
    for target in (1e-3, 0.3, 0.5):
        res = insightface_val_far(dist, issame, far_target=target)
        vals, fars = val_far_loop_reference(dist, issame, target, thresholds)
        assert np.isfinite(res.fold_thresholds).all()
        np.testing.assert_allclose(res.fold_val, vals)
        np.testing.assert_allclose(res.fold_far, fars)
        assert res.val == pytest.approx(vals.mean())
        assert res.val_std == pytest.approx(vals.std(ddof=0))
        assert res.far == pytest.approx(fars.mean())


def test_val_far_on_continuous_scores_matches_reference():
    rng = np.random.default_rng(5)
    issame = np.tile(np.repeat([True, False], 25), 10)
    dist = np.where(issame, rng.normal(1.0, 0.3, 500), rng.normal(2.0, 0.3, 500)).clip(0, 4)
    thresholds = np.arange(0, 4, 0.01)
    res = insightface_val_far(dist, issame, far_target=0.05, thresholds=thresholds)
    vals, fars = val_far_loop_reference(dist, issame, 0.05, thresholds)
    np.testing.assert_allclose(res.fold_val, vals)
    np.testing.assert_allclose(res.fold_far, fars)


# ---------------------------------------------------------------- ROC and TAR@FAR


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("drop", [False, True])
def test_roc_curve_equals_sklearn_including_ties(seed, drop):
    rng = np.random.default_rng(seed)
    y = rng.random(400) < 0.3
    score = np.round(rng.normal(size=400) + y, 1)  # heavy ties, mixed labels within ties
    ours = roc_curve(y, score, drop_intermediate=drop)
    fpr, tpr, thr = metrics.roc_curve(y, score, drop_intermediate=drop)
    np.testing.assert_array_equal(ours.fpr, fpr)
    np.testing.assert_array_equal(ours.tpr, tpr)
    np.testing.assert_array_equal(ours.thresholds, thr)
    assert ours.thresholds[0] == np.inf
    ours_int = roc_curve(y.astype(int), score.astype(np.float32), drop_intermediate=drop)
    fpr32, tpr32, thr32 = metrics.roc_curve(y.astype(int), score.astype(np.float32), drop_intermediate=drop)
    np.testing.assert_array_equal(ours_int.fpr, fpr32)
    np.testing.assert_array_equal(ours_int.thresholds, thr32)


def test_roc_of_distances_via_negation():
    y = np.array([True, True, False, False, True])
    dist = np.array([0.5, 1.0, 1.0, 3.0, 0.5])
    ours = roc_curve(y, similarity_from_distance(dist))
    fpr, tpr, _ = metrics.roc_curve(y, -dist, drop_intermediate=False)
    np.testing.assert_array_equal(ours.fpr, fpr)
    np.testing.assert_array_equal(ours.tpr, tpr)
    np.testing.assert_allclose(cosine_from_squared_l2(np.array([0.0, 2.0, 4.0])), [1.0, 0.0, -1.0])


def test_roc_rejects_single_class():
    with pytest.raises(ValueError):
        roc_curve(np.ones(4, bool), np.arange(4.0))


def test_tar_at_far_nearest_and_conservative_by_hand():
    fpr = np.array([0.0, 0.0, 0.0005, 0.0012, 0.0012, 0.003, 1.0])
    tpr = np.array([0.0, 0.5, 0.6, 0.7, 0.75, 0.8, 1.0])
    thr = np.array([np.inf, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    out = tar_at_far(fpr, tpr, targets=(1e-3, 1e-2, 1e-6), thresholds=thr)
    r = out[1e-3]
    # nearest |fpr - 1e-3|: 0.0012 (0.0002 away) beats 0.0005 (0.0005 away); first of the two 0.0012 points
    assert (r.nearest_tar, r.nearest_fpr, r.nearest_threshold) == (0.7, 0.0012, 4.0)
    assert (r.conservative_tar, r.conservative_fpr, r.conservative_threshold) == (0.6, 0.0005, 5.0)
    assert (out[1e-2].nearest_tar, out[1e-2].conservative_tar) == (0.8, 0.8)
    assert (out[1e-6].nearest_tar, out[1e-6].conservative_tar) == (0.0, 0.5)
    # insightface IJB's own selection, transcribed: min over (|fpr - target|, index) tuples
    _, ijb = min(zip(np.abs(fpr - 1e-3), range(len(fpr)), strict=True))
    assert tpr[ijb] == r.nearest_tar


def test_tar_at_far_from_scores_by_hand():
    # 4 matched, 5 mismatched pairs (similarities), sorted: .9+ .8+ .7- .6+ .5- .4+ .3- .2- .1-
    y = np.array([1, 1, 0, 1, 0, 1, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    # ROC points (fpr, tpr): (0,0) (0,.25) (0,.5) (.2,.5) (.2,.75) (.4,.75) (.4,1) (.6,1) (.8,1) (1,1)
    out = tar_at_far_from_scores(y, s, targets=(0.15, 0.25))
    # FAR .15: nearest FPR is .2, its first point (.2, .5) at threshold .7; within budget: (0, .5) at .8
    assert (out[0.15].nearest_fpr, out[0.15].nearest_tar) == (0.2, 0.5)
    assert out[0.15].nearest_threshold == pytest.approx(0.7)
    assert (out[0.15].conservative_fpr, out[0.15].conservative_tar) == (0.0, 0.5)
    assert out[0.15].conservative_threshold == pytest.approx(0.8)
    # FAR .25: nearest is again the first .2 point (tpr .5); conservative takes the best .2 point (tpr .75)
    assert out[0.25].nearest_tar == 0.5
    assert out[0.25].conservative_tar == 0.75 and out[0.25].conservative_threshold == pytest.approx(0.6)


# ---------------------------------------------------------------- identification


def unit_vectors_at(sims):
    """2-D unit gallery vectors whose cosine with the probe [1, 0] is each of ``sims``."""
    sims = np.asarray(sims, dtype=np.float64)
    return np.stack([sims, np.sqrt(1 - sims**2)], axis=1)


def test_trapezoid_ap_single_match_at_rank_two_is_a_quarter():
    probe = np.array([[1.0, 0.0]])
    gallery = unit_vectors_at([0.9, 0.5])
    assert mean_average_precision(probe, [7], gallery, [3, 7]) == pytest.approx(0.25)
    assert mean_average_precision(probe, [7], gallery, [7, 3]) == pytest.approx(1.0)


def test_trapezoid_ap_multi_match_by_hand():
    # true matches at 1-based ranks 1, 3, 4 of 5:
    # (1 + 1)/2 + (1/2 + 2/3)/2 + (2/3 + 3/4)/2, over 3 matches = 55/72
    probe = np.array([[1.0, 0.0]])
    gallery = unit_vectors_at([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = [1, 0, 1, 1, 0]
    assert mean_average_precision(probe, [1], gallery, labels) == pytest.approx(55 / 72)
    mr = MatchRanks(ranks=np.array([1, 3, 4, 2]), offsets=np.array([0, 3, 4]))
    np.testing.assert_allclose(average_precision_from_ranks(mr), [55 / 72, 0.25])


def test_cmc_by_hand():
    # Gallery order by similarity to [1, 0]: items 0..6; probe labels hit first at ranks 1, 3, 6.
    gallery = unit_vectors_at([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([10, 11, 12, 11, 13, 14, 14])
    probes = np.tile([[1.0, 0.0]], (3, 1))
    out = cmc(probes, [10, 12, 14], gallery, labels, ranks=(1, 2, 3, 5, 6, 10))
    assert out == pytest.approx({1: 1 / 3, 2: 1 / 3, 3: 2 / 3, 5: 2 / 3, 6: 1.0, 10: 1.0})
    res = evaluate_identification(probes, [10, 12, 14], gallery, labels, ranks=(1,))
    np.testing.assert_array_equal(res.first_match_rank, [1, 3, 6])
    np.testing.assert_array_equal(res.match_ranks.ranks, [1, 3, 6, 7])
    assert res.mean_ap == pytest.approx((1 + (0 + 1 / 3) / 2 + ((0 + 1 / 6) / 2 + (1 / 6 + 2 / 7) / 2) / 2) / 3)


def test_distractors_never_match():
    probe = np.array([[1.0, 0.0]])
    gallery = unit_vectors_at([1.0, 0.9, 0.5])  # an exact copy of the probe, labelled as a distractor
    labels = np.array([-1, 5, 5])
    res = evaluate_identification(probe, [5], gallery, labels, distractor_label=-1)
    np.testing.assert_array_equal(res.match_ranks.ranks, [2, 3])
    assert res.cmc[1] == 0.0
    # A probe whose label is the sentinel has no true match: closed-set error, not a silent hit.
    with pytest.raises(ValueError, match="no true match"):
        cmc(probe, [-1], gallery, labels, distractor_label=-1)
    # Without the sentinel, label -1 is an ordinary identity.
    assert cmc(probe, [-1], gallery, labels, ranks=(1,)) == {1: 1.0}
    # String labels and a string sentinel work alike.
    res_s = evaluate_identification(probe, ["bob"], gallery, np.array(["_", "bob", "bob"]), distractor_label="_")
    np.testing.assert_array_equal(res_s.match_ranks.ranks, [2, 3])


def exact_unit_vectors(rng, n, dim):
    """Unit vectors with entries +-1/sqrt(dim) (dim a power of 4): normalisation and every dot product are
    exact in float32, so similarities tie exactly and every evaluation order agrees."""
    return (rng.choice([-1.0, 1.0], size=(n, dim)) / np.sqrt(dim)).astype(np.float32)


def dense_reference_ranks(probes, probe_labels, gallery, gallery_labels, distractor_label=None):
    sims = probes.astype(np.float64) @ gallery.astype(np.float64).T
    ranks = []
    for p in range(len(probes)):
        order = np.argsort(-sims[p], kind="stable")
        hit = gallery_labels[order] == probe_labels[p]
        if distractor_label is not None:
            hit &= gallery_labels[order] != distractor_label
        ranks.append(np.flatnonzero(hit) + 1)
    return ranks


def trapezoid_ap(ranks):
    ap = 0.0
    for i, r1 in enumerate(ranks):
        r = r1 - 1
        ap += ((i / r if r else 1.0) + (i + 1) / (r + 1)) / 2 / len(ranks)
    return ap


@pytest.mark.parametrize("dim", [16, 64])
def test_chunked_equals_dense_with_ties(dim):
    rng = np.random.default_rng(dim)
    gallery = exact_unit_vectors(rng, 300, dim)
    gallery[150:170] = gallery[10:30]  # exact duplicates: ties between distinct gallery items
    gallery_labels = rng.integers(0, 12, 300)
    gallery_labels[rng.random(300) < 0.4] = -1  # distractors
    probes = exact_unit_vectors(rng, 45, dim)
    probes[:5] = gallery[:5]
    probe_labels = rng.integers(0, 12, 45)
    probe_labels[:5] = np.where(gallery_labels[:5] >= 0, gallery_labels[:5], 0)
    probe_labels[5] = 3
    gallery_labels[gallery_labels == 3] = -1
    gallery_labels[299] = 3  # a probe whose only true match sits at the very end
    dense = dense_reference_ranks(probes, probe_labels, gallery, gallery_labels, distractor_label=-1)
    for chunk, gallery_chunk in ((1, 1), (3, 7), (7, 3), (64, 64), (1000, 50), (16, 4096)):
        mr = true_match_ranks(probes, probe_labels, gallery, gallery_labels, chunk=chunk, distractor_label=-1,
                              gallery_chunk=gallery_chunk)
        got = [mr.ranks[mr.offsets[p]:mr.offsets[p + 1]] for p in range(len(probes))]
        for g, d in zip(got, dense, strict=True):
            np.testing.assert_array_equal(g, d)
        res = evaluate_identification(probes, probe_labels, gallery, gallery_labels, ranks=(1, 5, 10, 20),
                                      chunk=chunk, distractor_label=-1, gallery_chunk=gallery_chunk)
        first = np.array([d[0] for d in dense])
        assert res.cmc == {k: float(np.mean(first <= k)) for k in (1, 5, 10, 20)}
        assert res.mean_ap == pytest.approx(np.mean([trapezoid_ap(d) for d in dense]), rel=1e-12)


def test_identification_rejects_bad_input():
    g = np.eye(3)
    with pytest.raises(ValueError):
        cmc(np.ones((1, 2)), [0], g, [0, 1, 2])
    with pytest.raises(ValueError):
        cmc(np.array([[np.nan, 0, 0]]), [0], g, [0, 1, 2])
    with pytest.raises(ValueError):
        cmc(np.ones((1, 3)), [0], g, [0, 1, 2], chunk=0)
