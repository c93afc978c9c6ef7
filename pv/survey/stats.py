"""Statistics for the study: mean +- standard error, and the Mann-Whitney U test as the paper reports it.

The paper (Section 5) tests per subset with Grad-CAM as the first sample: on wrongly classified images
H1: Acc(Grad-CAM) < Acc(PV) (left-tailed, Z = -6.58), on correctly classified ones H1: Acc(Grad-CAM) >
Acc(PV) (right-tailed, Z = 6.57). Z is the first sample's U standardised with the tie correction and,
by default, the continuity correction; the normal p-value comes from that same Z, so p and Z always
agree. `exact=True` gives an exact p instead (scipy's exact distribution without ties, an exact
permutation test with ties; a seeded Monte Carlo one beyond EXACT_LIMIT arrangements).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALTERNATIVES = ("greater", "less", "two-sided")
PAPER_ALTERNATIVES = {"incorrect": "less", "correct": "greater"}  # Grad-CAM first (the paper's H1 per subset)
EXACT_LIMIT = 200_000  # arrangements enumerated for an exact permutation p; more: Monte Carlo


@dataclass(frozen=True)
class MannWhitney:
    u: float  # U of the first sample
    z: float  # signed: > 0 when the first sample tends to be larger
    p: float
    n1: int
    n2: int
    alternative: str
    method: str  # "normal", "normal (no continuity correction)", "exact", "permutation", "monte carlo", "all values tied"


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation / sqrt(n)); SE is nan for n < 2."""
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=float)
    se = float(array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else math.nan
    return float(array.mean()), se


def u_statistic(x: list[float], y: list[float]) -> float:
    """U of the first sample: pairs x > y plus half the ties."""
    a, b = np.asarray(x, float)[:, None], np.asarray(y, float)[None, :]
    return float((a > b).sum() + 0.5 * (a == b).sum())


def standard_normal_z(u: float, x: list[float], y: list[float], alternative: str, continuity: bool) -> float:
    """(U - n1 n2 / 2 -+ 1/2) / sd with the tie-corrected sd; the 1/2 moves U towards the mean (as scipy does)."""
    n1, n2 = len(x), len(y)
    n = n1 + n2
    _, ties = np.unique(np.concatenate([x, y]), return_counts=True)
    variance = n1 * n2 / 12 * ((n + 1) - float((ties**3 - ties).sum()) / (n * (n - 1)))
    if variance <= 0:
        return math.nan
    deviation = u - n1 * n2 / 2
    if continuity and alternative == "greater":
        deviation -= 0.5
    elif continuity and alternative == "less":
        deviation += 0.5
    elif continuity:
        deviation = math.copysign(max(abs(deviation) - 0.5, 0.0), deviation)
    return deviation / math.sqrt(variance)


def normal_p(z: float, alternative: str) -> float:
    if math.isnan(z):
        return math.nan
    if alternative == "greater":
        return float(stats.norm.sf(z))
    if alternative == "less":
        return float(stats.norm.cdf(z))
    return float(min(1.0, 2 * stats.norm.sf(abs(z))))


def mann_whitney(x: list[float], y: list[float], alternative: str = "greater", continuity: bool = True, exact: bool = False,
                 seed: int = 0) -> MannWhitney | None:  # fmt: skip
    """The U test of x against y; None when a sample is empty."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    if not x or not y:
        return None
    u = u_statistic(x, y)
    if len(np.unique(np.concatenate([x, y]))) == 1:  # every value tied: no evidence either way, Z undefined (as scipy: p = 1)
        return MannWhitney(u, math.nan, 1.0, len(x), len(y), alternative, "all values tied")
    z = standard_normal_z(u, x, y, alternative, continuity)
    method = "normal" if continuity else "normal (no continuity correction)"
    p = normal_p(z, alternative)
    if exact:
        p, method = exact_p(x, y, alternative, seed)
    return MannWhitney(u, z, p, len(x), len(y), alternative, method)


def exact_p(x: list[float], y: list[float], alternative: str, seed: int) -> tuple[float, str]:
    """An exact p for small samples: the exact U distribution without ties, a permutation test with them."""
    if len(np.unique(np.concatenate([x, y]))) == len(x) + len(y):
        return float(stats.mannwhitneyu(x, y, alternative=alternative, method="exact").pvalue), "exact"
    arrangements = math.comb(len(x) + len(y), len(x))
    enumerate_all = arrangements <= EXACT_LIMIT
    method = stats.PermutationMethod(n_resamples=np.inf if enumerate_all else 100_000, random_state=seed)
    result = stats.mannwhitneyu(x, y, alternative=alternative, method=method)
    return float(result.pvalue), "permutation" if enumerate_all else "monte carlo"


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: the k-th smallest of m becomes max over j <= k of
    min(1, (m - j + 1) p_(j)). A NaN p (no test possible) stays NaN and still counts in m (conservative)."""
    m = len(p_values)
    order = sorted((i for i, p in enumerate(p_values) if not math.isnan(p)), key=lambda i: p_values[i])
    adjusted = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def crossed_bootstrap_ci(matrix, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of a (participants, questions) 0/1 matrix, resampling participants and
    questions independently, with replacement (the two-way bootstrap: both are samples of what the study
    generalises to). (nan, nan) for an empty matrix."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    n_rows, n_cols = matrix.shape
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # chunks keep memory small: (chunk, rows, cols)
        count = min(1000, resamples - start)
        rows = rng.integers(n_rows, size=(count, n_rows))
        cols = rng.integers(n_cols, size=(count, n_cols))
        means[start:start + count] = matrix[rows[:, :, None], cols[:, None, :]].mean(axis=(1, 2))
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)
