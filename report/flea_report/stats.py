"""Statistics on raw timing samples: coefficient of variation and the Mann-Whitney U test.

Mann-Whitney U is distribution-free, so it suits timings on a shared machine (skewed, with outliers).
Small samples without ties get the exact null distribution; otherwise the normal approximation with
tie correction and continuity correction.
"""
import math

import numpy as np

EXACT_MAX_N = 25  # per group; C(50, 25) ~ 1.3e14 counts still exact in float64


def cv(values):
    """Coefficient of variation (sample std / mean); None for fewer than 3 values or mean 0."""
    a = np.asarray(values, dtype=float)
    if a.size < 3 or a.mean() == 0:
        return None
    return float(a.std(ddof=1) / a.mean())


def rank_sum_u(x, y):
    """(U of x, True if any ties) using mid-ranks over the pooled sample."""
    pooled = np.concatenate([x, y])
    order = np.argsort(pooled, kind="mergesort")
    ranks = np.empty(pooled.size)
    sorted_vals = pooled[order]
    i = 0
    while i < pooled.size:
        j = i
        while j + 1 < pooled.size and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    has_ties = np.unique(pooled).size != pooled.size
    u_x = ranks[:x.size].sum() - x.size * (x.size + 1) / 2.0
    return float(u_x), has_ties


def exact_u_counts(n1, n2):
    """counts[u] = number of orderings of n1 x's and n2 y's giving U = u (length n1*n2 + 1).

    Recurrence on the largest pooled value: if it is an x it beats all n2 y's (U shifts by n2),
    else it is a y and adds nothing: c(n1, n2) = shift(c(n1-1, n2), n2) + c(n1, n2-1).
    """
    # table[a] holds c(a, b) for the current b
    table = [np.ones(1)] + [None] * n1
    for a in range(1, n1 + 1):
        table[a] = np.ones(1)  # c(a, 0): one ordering, U = 0
    for b in range(1, n2 + 1):
        new = [np.ones(1)]  # c(0, b)
        for a in range(1, n1 + 1):
            size = a * b + 1
            c = np.zeros(size)
            prev_a = new[a - 1]  # c(a-1, b)
            c[b:b + prev_a.size] += prev_a
            prev_b = table[a]  # c(a, b-1)
            c[:prev_b.size] += prev_b
            new.append(c)
        table = new
    return table[n1]


def mann_whitney(x, y, method="auto"):
    """Two-sided Mann-Whitney U test. Returns dict(u, p, method).

    method: "auto" (exact when no ties and both n <= EXACT_MAX_N), "exact" or "normal".
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney needs at least one sample in each group")
    u, has_ties = rank_sum_u(x, y)
    if method == "exact" and has_ties:
        raise ValueError("the exact distribution assumes no ties")
    use_exact = method == "exact" or (method == "auto" and not has_ties
                                      and max(n1, n2) <= EXACT_MAX_N)
    if use_exact:
        counts = exact_u_counts(n1, n2)
        total = counts.sum()
        k = int(round(u))
        p_low = counts[:k + 1].sum() / total
        p_high = counts[k:].sum() / total
        return {"u": u, "p": float(min(1.0, 2.0 * min(p_low, p_high))), "method": "exact"}
    n = n1 + n2
    pooled = np.concatenate([x, y])
    _, tie_counts = np.unique(pooled, return_counts=True)
    tie_term = float(((tie_counts ** 3) - tie_counts).sum()) / (n * (n - 1))
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:  # every value identical
        return {"u": u, "p": 1.0, "method": "normal"}
    z = (abs(u - n1 * n2 / 2.0) - 0.5) / math.sqrt(var)
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return {"u": u, "p": float(min(1.0, p)), "method": "normal"}


def min_attainable_p(n1, n2):
    """Smallest two-sided p the exact test can give: 2 / C(n1+n2, n1)."""
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))
