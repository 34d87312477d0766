"""Statistics on raw timing samples: coefficient of variation, the Mann-Whitney U test and a
bootstrap confidence interval for the ratio of medians. The tests themselves are scipy's.

Mann-Whitney U is distribution-free, so it suits timings on a shared machine (skewed, with outliers).
Small samples without ties get the exact null distribution; otherwise the normal approximation with
tie correction and continuity correction (scipy.stats.mannwhitneyu, method chosen here, not by
scipy's "auto", which goes asymptotic above 8 samples).
"""
import math

import numpy as np
from scipy import stats as sps

EXACT_MAX_N = 25  # per group: exact null distribution up to here (no ties), as before scipy
BOOTSTRAP_SEED = 20261123  # fixed: the same two files always print the same interval
BOOTSTRAP_RESAMPLES = 1999


def cv(values):
    """Coefficient of variation (sample std / mean); None for fewer than 3 values or mean 0."""
    a = np.asarray(values, dtype=float)
    if a.size < 3 or a.mean() == 0:
        return None
    return float(a.std(ddof=1) / a.mean())


def mann_whitney(x, y, method="auto"):
    """Two-sided Mann-Whitney U test. Returns dict(u, p, method), u being the U of x.

    method: "auto" (exact when no ties and both n <= EXACT_MAX_N), "exact" or "normal".
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.size == 0 or y.size == 0:
        raise ValueError("mann_whitney needs at least one sample in each group")
    pooled = np.concatenate([x, y])
    has_ties = np.unique(pooled).size != pooled.size
    if method == "exact" and has_ties:
        raise ValueError("the exact distribution assumes no ties")
    if np.unique(pooled).size == 1:  # every value identical: no evidence either way
        return {"u": x.size * y.size / 2.0, "p": 1.0, "method": "normal"}
    use_exact = method == "exact" or (method == "auto" and not has_ties
                                      and max(x.size, y.size) <= EXACT_MAX_N)
    res = sps.mannwhitneyu(x, y, alternative="two-sided", use_continuity=True,
                           method="exact" if use_exact else "asymptotic")
    return {"u": float(res.statistic), "p": float(min(1.0, res.pvalue)),
            "method": "exact" if use_exact else "normal"}


def min_attainable_p(n1, n2):
    """Smallest two-sided p the exact test can give: 2 / C(n1+n2, n1)."""
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def _median_ratio(base, cur, axis=-1):
    return np.median(cur, axis=axis) / np.median(base, axis=axis)


def median_ratio_ci(base, cur, confidence=0.90, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """(low, high): bootstrap interval for median(cur) / median(base), each side resampled on its own.

    scipy.stats.bootstrap with two unpaired samples; percentile method, because BCa's acceleration
    comes from a jackknife of the statistic and the jackknife of a median is not consistent (with a
    handful of samples it swings between two order statistics, and BCa then gives NaN or a shifted
    interval). Seeded, so the same files always give the same interval.
    """
    b = np.asarray(base, dtype=float)
    c = np.asarray(cur, dtype=float)
    if b.size == 0 or c.size == 0 or np.median(b) == 0:
        return None
    res = sps.bootstrap((b, c), _median_ratio, paired=False, vectorized=True,
                        n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                        random_state=np.random.default_rng(seed))
    low, high = res.confidence_interval
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return float(low), float(high)
