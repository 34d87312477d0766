import numpy as np
import pytest

from flea_report.fields import percentile
from flea_report.stats import cv, mann_whitney, median_ratio_ci, min_attainable_p

# The hand-written exact U distribution (and its test, counts summing to C(n1+n2, n1)) is gone:
# the exact and normal p-values are scipy.stats.mannwhitneyu's now. The tests below still pin the
# p-values and the exact/normal switch (exact up to 25 per side without ties) the gate relied on.


def test_complete_separation_exact_p():
    r = mann_whitney([1, 2, 3], [4, 5, 6])
    assert r["method"] == "exact" and r["u"] == 0
    assert r["p"] == pytest.approx(2 / 20)
    r = mann_whitney(range(5), range(10, 15))
    assert r["p"] == pytest.approx(2 / 252)
    assert min_attainable_p(5, 5) == pytest.approx(2 / 252)


def test_identical_samples_give_p_one():
    assert mann_whitney([5, 5, 5], [5, 5, 5])["p"] == 1.0


def test_normal_approximation_close_to_exact():
    rng = np.random.default_rng(3)
    for shift in (0.3, 0.8):
        x, y = rng.normal(0, 1, 20), rng.normal(shift, 1, 20)
        exact = mann_whitney(x, y, method="exact")
        approx = mann_whitney(x, y, method="normal")
        assert exact["method"] == "exact" and approx["method"] == "normal"
        assert approx["p"] == pytest.approx(exact["p"], rel=0.1)
    assert mann_whitney([1, 1, 2], [3, 4, 4])["method"] == "normal"  # ties


def test_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    for n1, n2, tie in ((5, 5, False), (7, 12, False), (30, 30, False), (15, 15, True)):
        x, y = rng.normal(0, 1, n1), rng.normal(0.6, 1, n2)
        if tie:
            x, y = np.round(x), np.round(y)
        ours = mann_whitney(x, y)
        method = "exact" if ours["method"] == "exact" else "asymptotic"
        ref = stats.mannwhitneyu(x, y, alternative="two-sided", method=method)
        assert ours["u"] == pytest.approx(ref.statistic)
        assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)


def test_cv_and_percentile():
    assert cv([1.0, 1.0]) is None
    assert cv([9.0, 10.0, 11.0]) == pytest.approx(0.1)
    values = sorted([3.0, 1.0, 2.0, 4.0])
    assert percentile(values, 50) == pytest.approx(np.percentile(values, 50))
    assert percentile(values, 95) == pytest.approx(np.percentile(values, 95))


def test_exact_p_values_pinned():
    """Values the hand-written implementation gave (exact null distribution, no ties)."""
    assert mann_whitney([1, 2, 3, 4], [5, 6, 7, 8, 9, 10])["p"] == pytest.approx(2 / 210)
    r = mann_whitney([1, 3, 5, 7], [2, 4, 6, 8, 9])
    assert r["method"] == "exact" and r["u"] == 6.0
    assert r["p"] == pytest.approx(0.4126984126984127)


def test_median_ratio_interval_is_seeded_and_covers_the_ratio():
    rng = np.random.default_rng(11)
    base = rng.normal(100, 3, 10)
    cur = base * 1.3
    first = median_ratio_ci(base, cur)
    assert first == median_ratio_ci(base, cur)  # deterministic: fixed seed
    assert first[0] < 1.3 < first[1]
    assert first[1] - first[0] < 0.15
    wide = median_ratio_ci(base, cur, confidence=0.99)
    assert wide[0] <= first[0] and wide[1] >= first[1]
    assert median_ratio_ci([5, 5, 5], [5, 5, 5]) == (1.0, 1.0)
    assert median_ratio_ci([0, 0, 0], [1, 2, 3]) is None  # no ratio to a zero median
