"""How sure each number is: bootstrap intervals and paired significance tests on per-item correctness.

Every accuracy the benchmarks report is the mean of a boolean per item: per pair for verification
(each pair classified with its own test fold's best threshold, ``VerificationResult.correct``), per
probe for identification (rank-1 hit, ``IdentificationResult.hits(1)``). From such arrays:

- ``bootstrap_ci``: the percentile bootstrap interval of the mean. ``n_boot`` resamples of the items
  with replacement (seeded ``numpy.random.default_rng(seed)``), the mean of each, and the
  ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those means (``np.quantile``'s default
  linear interpolation). Resamples are drawn in chunks of about ``CHUNK_ITEMS`` indices, so memory
  stays at a few MB whatever ``n_boot``; 1,000 resamples of 6,000 pairs take tens of milliseconds.
- ``stratified_bootstrap_ci``: the same for a mean of group means (SCface's rank-1 averaged over the
  three distances): each group is resampled within itself.
- ``mcnemar``: McNemar's test of two systems on the same items, from the discordant counts
  b (A right, B wrong) and c (A wrong, B right). With b + c < ``MCNEMAR_EXACT_BELOW`` (25) it is the
  exact conditional binomial test, p = min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)]), computed in
  exact integer arithmetic; otherwise the chi-square test with Edwards' continuity correction,
  X2 = (|b - c| - 1)^2 / (b + c), p = P[chi2_1 >= X2] = erfc(sqrt(X2 / 2)). Both as statsmodels'
  ``statsmodels.stats.contingency_tables.mcnemar`` (``exact=True`` / ``exact=False, correction=True``).
  No discordant item: p = 1.
- ``paired_bootstrap``: the accuracy difference A - B, its percentile interval from resampling the
  items (the same indices for both systems, so the pairing is kept), and a two-sided bootstrap
  p-value for "no difference": the share of resampled differences whose distance from the observed
  difference is at least the observed difference's distance from 0 (the bootstrap distribution
  shifted to the null, Efron & Tibshirani 1993, 16.4), with the usual +1 correction:
  p = (1 + #{|d* - d| >= |d|}) / (1 + n_boot), so p is never 0 and never above 1.

All functions take boolean (or 0/1) 1-D arrays and use only numpy and the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CHUNK_ITEMS = 1 << 20  # resampled indices drawn at once (int32: 4 MB)
MCNEMAR_EXACT_BELOW = 25  # discordant counts below this use the exact binomial test
EXACT_INTEGER_UP_TO = 1000  # exact McNemar in integer arithmetic up to this many discordant items


def _as_correct(correct: np.ndarray, name: str = "correct") -> np.ndarray:
    x = np.asarray(correct)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array")
    if x.dtype != bool:
        if not np.isin(x, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans or 0/1 values")
        x = x.astype(bool)
    return x


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError("level must lie strictly between 0 and 1")


def bootstrap_sums(values: np.ndarray, n_boot: int = 1000, seed: int | np.random.SeedSequence = 0) -> np.ndarray:
    """(n_boot,) int64 sums of the integer (or boolean) 1-D array ``values`` over seeded resamples of
    its items with replacement, drawn in chunks of about ``CHUNK_ITEMS`` indices."""
    values = np.asarray(values)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError("values must be a non-empty 1-D array")
    if not (values.dtype == bool or np.issubdtype(values.dtype, np.integer)):
        raise ValueError("values must be booleans or integers")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    data = values.astype(np.int8) if values.dtype == bool else values
    n = len(data)
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_ITEMS // n)
    out = np.empty(n_boot, dtype=np.int64)
    index_type = np.int32 if n < 2**31 else np.int64
    for b0 in range(0, n_boot, rows):
        b1 = min(b0 + rows, n_boot)
        idx = rng.integers(0, n, size=(b1 - b0, n), dtype=index_type)
        out[b0:b1] = data[idx].sum(axis=1, dtype=np.int64)
    return out


def _percentiles(means: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (lo, hi) of the mean of a boolean per pair / per probe."""
    _check_level(level)
    return _percentiles(bootstrap_sums(_as_correct(correct), n_boot, seed) / len(correct), level)


def stratified_bootstrap_ci(groups: Sequence[np.ndarray], n_boot: int = 1000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the group means (each group resampled within
    itself, with its own stream spawned from ``seed``): e.g. SCface's rank-1 mean over distances."""
    _check_level(level)
    if len(groups) == 0:
        raise ValueError("need at least one group")
    streams = np.random.SeedSequence(seed).spawn(len(groups))
    means = np.zeros(n_boot)
    for group, stream in zip(groups, streams, strict=True):
        group = _as_correct(group)
        means += bootstrap_sums(group, n_boot, stream) / len(group)
    return _percentiles(means / len(groups), level)


def discordant_counts(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int]:
    """(b, c): items A gets right and B wrong, items A gets wrong and B right."""
    a, b = _paired(correct_a, correct_b)
    return int(np.count_nonzero(a & ~b)), int(np.count_nonzero(~a & b))


def _paired(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_correct(correct_a, "correct_a"), _as_correct(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError("correct_a and correct_b must be evaluated on the same items (same length)")
    return a, b


def mcnemar_exact_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)]). Up to
    ``EXACT_INTEGER_UP_TO`` discordant items in exact integer arithmetic (one rounding, at the final
    division); beyond, a log-sum-exp of the log-gamma binomial terms (relative error ~1e-11)."""
    n, k = int(b) + int(c), min(int(b), int(c))
    if n == 0:
        return 1.0
    if n <= EXACT_INTEGER_UP_TO:
        tail = sum(math.comb(n, i) for i in range(k + 1))
        return min(1.0, 2 * tail / (1 << n))  # int / int: correctly rounded, underflows to 0.0
    i = np.arange(k + 1)
    log_terms = (math.lgamma(n + 1) - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in i])
                 - n * math.log(2.0))
    top = float(log_terms.max())
    log_tail = top + math.log(float(np.exp(log_terms - top).sum()))
    return min(1.0, math.exp(math.log(2.0) + log_tail))


def mcnemar_chi2_p(b: int, c: int, correction: bool = True) -> float:
    """Chi-square McNemar p-value, (|b - c| - 1)^2 / (b + c) on 1 df (without the -1 if not
    ``correction``)."""
    n = b + c
    if n == 0:
        return 1.0
    stat = (abs(b - c) - int(correction)) ** 2 / n
    return float(math.erfc(math.sqrt(stat / 2.0)))


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray, exact: bool | None = None) -> float:
    """McNemar's p-value for two systems on the same items. ``exact=None``: the exact binomial test
    when the discordant count b + c is below ``MCNEMAR_EXACT_BELOW``, else the continuity-corrected
    chi-square test; ``True`` / ``False`` force one."""
    b, c = discordant_counts(correct_a, correct_b)
    if exact is None:
        exact = b + c < MCNEMAR_EXACT_BELOW
    return mcnemar_exact_p(b, c) if exact else mcnemar_chi2_p(b, c)


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float, float]:
    """(delta, lo, hi, p): accuracy of A minus accuracy of B on the same items, its percentile bootstrap
    interval (items resampled jointly) and the two-sided shifted-bootstrap p-value (module docstring)."""
    _check_level(level)
    a, b = _paired(correct_a, correct_b)
    diff = a.astype(np.int8) - b.astype(np.int8)
    total = int(diff.sum(dtype=np.int64))
    sums = bootstrap_sums(diff, n_boot, seed)
    lo, hi = _percentiles(sums / len(diff), level)
    extreme = int(np.count_nonzero(np.abs(sums - total) >= abs(total)))  # exact, in integer counts
    return total / len(diff), lo, hi, (1 + extreme) / (1 + n_boot)
