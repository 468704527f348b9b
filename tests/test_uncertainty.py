"""Bootstrap intervals and paired tests (engine.evaluate.uncertainty) against independent references,
and the per-pair / per-probe correctness they are computed from."""

import math
import time

import numpy as np
import pytest
from scipy import stats

from engine.evaluate import uncertainty as unc
from engine.evaluate.benchmarks import _verification_metrics
from engine.evaluate.identification import evaluate_identification
from engine.evaluate.uncertainty import (
    bootstrap_ci,
    bootstrap_sums,
    discordant_counts,
    mcnemar,
    mcnemar_chi2_p,
    mcnemar_exact_p,
    paired_bootstrap,
    stratified_bootstrap_ci,
)
from engine.evaluate.verification import (
    fold_sizes,
    insightface_verification,
    kfold_accuracy,
    xqlfw_verification,
)


def _statsmodels_mcnemar(b, c, exact, correction=True):
    """Transcribed from statsmodels.stats.contingency_tables.mcnemar (n1 = table[0, 1], n2 = table[1, 0]):
    exact: binom.cdf(min(n1, n2), n1 + n2, 0.5) * 2, capped at 1;
    else: (|n1 - n2| - corr)^2 / (n1 + n2) on chi2 with 1 df."""
    n1, n2 = float(b), float(c)
    if exact:
        return min(stats.binom.cdf(min(n1, n2), int(n1 + n2), 0.5) * 2, 1.0)
    statistic = (abs(n1 - n2) - int(correction)) ** 2 / (n1 + n2)
    return stats.chi2.sf(statistic, 1)


def _pairs_with_counts(b, c, both_right=50, both_wrong=10):
    """Two systems' correctness with b items only A gets right and c items only B gets right."""
    a = np.array([True] * both_right + [False] * both_wrong + [True] * b + [False] * c)
    bb = np.array([True] * both_right + [False] * both_wrong + [False] * b + [True] * c)
    perm = np.random.default_rng(b * 1000 + c).permutation(len(a))
    return a[perm], bb[perm]


# ---------------------------------------------------------------- bootstrap_ci


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    x = np.random.default_rng(0).random(6000) < 0.9
    lo, hi = bootstrap_ci(x, seed=3)
    assert (lo, hi) == bootstrap_ci(x, seed=3)
    assert (lo, hi) != bootstrap_ci(x, seed=4)
    assert lo < x.mean() < hi and hi - lo < 0.03
    assert bootstrap_ci(np.ones(100, bool)) == (1.0, 1.0)
    assert bootstrap_ci(np.zeros(7, int)) == (0.0, 0.0)
    assert bootstrap_ci(x.astype(np.int64), seed=3) == (lo, hi)  # 0/1 integers are the same data
    lo90, hi90 = bootstrap_ci(x, seed=3, level=0.90)
    assert lo <= lo90 <= hi90 <= hi
    for bad in (np.array([]), np.zeros((3, 3), bool), np.array([0, 2, 1])):
        with pytest.raises(ValueError):
            bootstrap_ci(bad)
    with pytest.raises(ValueError):
        bootstrap_ci(x, level=1.0)


def test_bootstrap_chunks_do_not_change_the_draws(monkeypatch):
    x = np.random.default_rng(1).random(999) < 0.7
    whole = bootstrap_sums(x, 300, seed=5)
    monkeypatch.setattr(unc, "CHUNK_ITEMS", 999 * 7)  # 7 resamples per chunk, a ragged last chunk
    assert np.array_equal(bootstrap_sums(x, 300, seed=5), whole)


def test_bootstrap_sums_follow_the_binomial():
    """Resampling n items with k successes: the resampled success count is Binomial(n, k / n)."""
    n, k = 600, 540
    x = np.zeros(n, bool)
    x[:k] = True
    sums = bootstrap_sums(x, 4000, seed=0)
    p = k / n
    assert abs(sums.mean() - n * p) < 4 * math.sqrt(n * p * (1 - p) / 4000)
    assert sums.var() == pytest.approx(n * p * (1 - p), rel=0.1)


def test_bootstrap_coverage_and_width_on_a_known_bernoulli():
    p, n, reps = 0.9, 600, 200
    rng = np.random.default_rng(2026)
    covered, widths = 0, []
    for rep in range(reps):
        x = rng.random(n) < p
        lo, hi = bootstrap_ci(x, n_boot=1000, seed=rep)
        covered += lo <= p <= hi
        widths.append(hi - lo)
    coverage = covered / reps
    expected_width = 2 * 1.96 * math.sqrt(p * (1 - p) / n)  # 0.0480
    # 95% nominal; a binomial 95% band for 200 repetitions is about +-3 points.
    assert 0.90 <= coverage <= 0.99, coverage
    assert np.mean(widths) == pytest.approx(expected_width, rel=0.05)


def test_bootstrap_speed_6000_pairs_1000_resamples():
    x = np.random.default_rng(0).random(6000) < 0.95
    bootstrap_ci(x)  # warm-up
    t = time.perf_counter()
    bootstrap_ci(x, n_boot=1000)
    assert time.perf_counter() - t < 0.5


def test_stratified_bootstrap_resamples_each_group_within_itself():
    rng = np.random.default_rng(0)
    groups = [rng.random(400) < 0.5, np.ones(400, bool), rng.random(400) < 0.9]
    lo, hi = stratified_bootstrap_ci(groups, seed=1)
    assert (lo, hi) == stratified_bootstrap_ci(groups, seed=1)
    mean = np.mean([g.mean() for g in groups])
    assert lo < mean < hi
    # A constant group adds no spread: the interval is that of the two others averaged over three.
    only = stratified_bootstrap_ci([groups[1]] * 3)
    assert only == (1.0, 1.0)
    # Narrower than pooling the groups (the between-group spread is not resampled).
    pooled_lo, pooled_hi = bootstrap_ci(np.concatenate(groups), seed=1)
    assert hi - lo <= (pooled_hi - pooled_lo) * 1.1


# ---------------------------------------------------------------- McNemar


def test_mcnemar_exact_matches_scipy_binomtest():
    for b in range(0, 31):
        for c in range(0, 31):
            if b + c == 0:
                assert mcnemar_exact_p(0, 0) == 1.0
                continue
            ref = stats.binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue
            assert mcnemar_exact_p(b, c) == pytest.approx(ref, rel=1e-12, abs=1e-300), (b, c)
            assert mcnemar_exact_p(b, c) == pytest.approx(_statsmodels_mcnemar(b, c, exact=True), rel=1e-10)
    # Large counts stay finite and match the reference.
    for b, c in [(400, 455), (480, 520), (600, 640), (5000, 5300), (2900, 3100)]:
        assert mcnemar_exact_p(b, c) == pytest.approx(stats.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)
    assert mcnemar_exact_p(0, 3000) < 1e-300 and mcnemar_exact_p(1000, 1000) == 1.0


def test_mcnemar_chi2_matches_statsmodels_formula_and_published_values():
    # statsmodels' own test values for mcnemar(exact=False) on [[101, 121], [59, 33]], [[101, 70], [59, 33]],
    # [[101, 80], [59, 33]] (discordant cells n1 = table[0, 1], n2 = table[1, 0]).
    assert mcnemar_chi2_p(121, 59) == pytest.approx(5.450095e-06, rel=1e-6)
    assert mcnemar_chi2_p(70, 59) == pytest.approx(0.3786151, rel=1e-6)
    assert mcnemar_chi2_p(80, 59) == pytest.approx(0.08981434, rel=1e-6)
    assert mcnemar_chi2_p(121, 59, correction=False) == pytest.approx(3.815136e-06, rel=1e-6)
    for b, c in [(25, 0), (13, 12), (40, 70), (300, 260), (1, 30)]:
        assert mcnemar_chi2_p(b, c) == pytest.approx(_statsmodels_mcnemar(b, c, exact=False), rel=1e-12)
    assert mcnemar_chi2_p(0, 0) == 1.0


def test_mcnemar_on_correctness_arrays_switches_at_25_discordant():
    a, b = _pairs_with_counts(15, 5)  # 20 discordant: exact
    assert discordant_counts(a, b) == (15, 5)
    assert mcnemar(a, b) == pytest.approx(stats.binomtest(5, 20, 0.5).pvalue, rel=1e-12)
    assert mcnemar(a, b) == mcnemar(b, a)
    a, b = _pairs_with_counts(121, 59)  # 180 discordant: corrected chi-square
    assert mcnemar(a, b) == pytest.approx(5.450095e-06, rel=1e-6)
    assert mcnemar(a, b, exact=True) == pytest.approx(stats.binomtest(59, 180, 0.5).pvalue, rel=1e-12)
    a, b = _pairs_with_counts(13, 11)  # 24: still exact
    assert mcnemar(a, b) == pytest.approx(stats.binomtest(11, 24, 0.5).pvalue, rel=1e-12)
    a, b = _pairs_with_counts(13, 12)  # 25: chi-square
    assert mcnemar(a, b) == pytest.approx(_statsmodels_mcnemar(13, 12, exact=False), rel=1e-12)
    assert mcnemar(a, a) == 1.0
    with pytest.raises(ValueError):
        mcnemar(a, b[:-1])


# ---------------------------------------------------------------- paired bootstrap


def test_paired_bootstrap():
    a, b = _pairs_with_counts(121, 59, both_right=5000, both_wrong=300)
    delta, lo, hi, p = paired_bootstrap(a, b, n_boot=1000, seed=0)
    assert delta == pytest.approx((121 - 59) / len(a))
    assert lo < delta < hi and lo > 0
    assert p == 1 / 1001  # no resample as far from delta as delta is from 0
    assert (delta, lo, hi, p) == paired_bootstrap(a, b, n_boot=1000, seed=0)
    d2, lo2, hi2, p2 = paired_bootstrap(b, a, n_boot=1000, seed=0)
    assert (d2, lo2, hi2, p2) == pytest.approx((-delta, -hi, -lo, p))
    # Identical systems: no difference, p = 1.
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0, 1.0)
    # Close systems: p agrees with McNemar in order of magnitude.
    a, b = _pairs_with_counts(70, 59, both_right=5000, both_wrong=300)
    delta, lo, hi, p = paired_bootstrap(a, b, n_boot=2000, seed=1)
    assert lo < 0 < hi and 0.2 < p < 0.6 and mcnemar(a, b) == pytest.approx(0.3786151, rel=1e-6)
    # The interval is the percentile interval of the resampled per-item differences, same draws.
    diff = a.astype(np.int8) - b.astype(np.int8)
    sums = bootstrap_sums(diff, 2000, seed=1) / len(diff)
    assert (lo, hi) == tuple(np.quantile(sums, [0.025, 0.975]))


# ---------------------------------------------------------------- per-pair and per-probe correctness


@pytest.mark.parametrize("n", [6000, 6003, 57])
def test_kfold_correct_reproduces_the_fold_accuracies(n):
    rng = np.random.default_rng(n)
    issame = np.tile([True, False], n)[:n]
    scores = np.where(issame, rng.normal(1.0, 0.4, n), rng.normal(1.8, 0.4, n)).clip(0, 4)
    res = kfold_accuracy(scores, issame)
    assert res.correct.dtype == bool and res.correct.shape == (n,)
    bounds = np.concatenate([[0], np.cumsum(fold_sizes(n, 10))])
    per_fold = [res.correct[bounds[k]:bounds[k + 1]].mean() for k in range(10)]
    np.testing.assert_array_equal(per_fold, res.fold_accuracies)
    # Each pair's decision is its own fold's threshold applied to it.
    thr = np.repeat(res.fold_thresholds, np.diff(bounds))
    np.testing.assert_array_equal(res.correct, (scores < thr) == issame)
    # Pooled over pairs it is the size-weighted fold mean, which is ``accuracy`` when the folds are equal.
    sizes = np.diff(bounds)
    assert res.correct.mean() == pytest.approx(np.sum(res.fold_accuracies * sizes) / n, abs=1e-15)
    if n % 10 == 0:
        assert res.correct.mean() == pytest.approx(res.accuracy, abs=1e-15)


def test_insightface_and_xqlfw_results_carry_the_pair_decisions():
    rng = np.random.default_rng(0)
    e1 = rng.normal(size=(600, 16))
    e2 = e1 + rng.normal(scale=1.2, size=e1.shape) * np.tile([[0.3], [3.0]], (300, 1))
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 /= np.linalg.norm(e2, axis=1, keepdims=True)
    issame = np.tile([True, False], 300)
    for res in (insightface_verification(e1, e2, issame), xqlfw_verification(e1, e2, issame)):
        assert res.correct.shape == (600,) and res.correct.mean() == pytest.approx(res.accuracy, abs=1e-15)


def test_verification_metrics_report_the_interval():
    rng = np.random.default_rng(0)
    e1 = rng.normal(size=(6000, 32))
    e2 = e1 + rng.normal(size=e1.shape) * np.tile([[0.7], [3.0]], (3000, 1))
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 /= np.linalg.norm(e2, axis=1, keepdims=True)
    issame = np.tile([True, False], 3000)
    t = time.perf_counter()
    m, correct = _verification_metrics(e1, e2, issame, 10)
    elapsed = time.perf_counter() - t
    assert {"acc", "acc_std", "acc_stderr", "threshold", "acc_ci95_lo", "acc_ci95_hi"} <= set(m)
    assert m["acc_ci95_lo"] < m["acc"] < m["acc_ci95_hi"]
    assert m == _verification_metrics(e1, e2, issame, 10)[0]  # seeded
    res = insightface_verification(e1, e2, issame)
    assert np.array_equal(correct, res.correct) and correct.mean() == pytest.approx(m["acc"], abs=1e-15)
    assert (m["acc_ci95_lo"], m["acc_ci95_hi"]) == bootstrap_ci(res.correct, 1000, seed=0)
    assert elapsed < 5.0  # the whole protocol (VAL@FAR included); the bootstrap is ~30 ms of it


def test_identification_hits_reproduce_the_cmc():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(50, 8))
    labels = np.arange(50)
    probe_labels = rng.integers(0, 50, 300)
    probes = gallery[probe_labels] + rng.normal(scale=0.9, size=(300, 8))
    res = evaluate_identification(probes, probe_labels, gallery, labels, ranks=(1, 5))
    for k in (1, 5):
        assert res.hits(k).dtype == bool and res.hits(k).mean() == res.cmc[k]
    assert 0 < res.cmc[1] < 1
    with pytest.raises(ValueError):
        res.hits(0)


def test_benchmarks_report_intervals_next_to_their_accuracies(micro_config):
    import torch

    from engine.evaluate import run_benchmarks
    from engine.train import build_backbone
    from tests.test_benchmarks import Results

    torch.manual_seed(0)
    model = build_backbone(micro_config).eval()
    micro_config.eval.benchmarks = ["lfw", "xqlfw", "scface", "tinyface", "lowres_lfw"]
    micro_config.eval.scface_protocols = ["zero_shot"]
    rec = Results()
    run_benchmarks(model, micro_config, "cpu", rec)
    rows = {(b, p, m, r): v for (b, p, m, r), v in rec.rows.items()}
    checked = 0
    for (b, p, m, r), v in rows.items():
        if m in ("acc", "rank1", "rank1_mean") or (m.startswith("rank1_d") and "_ci95" not in m):
            lo, hi = rows[(b, p, f"{m}_ci95_lo", r)], rows[(b, p, f"{m}_ci95_hi", r)]
            assert 0.0 <= lo <= v <= hi <= 1.0, (b, p, m, r, lo, v, hi)
            checked += 1
    # lfw acc, xqlfw official + insightface, lowres per resolution, scface d1..d3 + mean, tinyface rank1
    assert checked >= 1 + 2 + 2 + 4 + 1
    assert ("xqlfw", "xqlfw_official", "acc_ci95_lo", None) in rows
