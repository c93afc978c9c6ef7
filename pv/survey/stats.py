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
    method: str  # "normal", "normal (no continuity correction)", "exact", "permutation", "monte carlo"


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
