import itertools
import math
import random

import pytest

from eval.passk import pass_at_k, pass_at_k_curve
from eval.stats import _t_quantile_bisect, mean_ci, t_quantile


def _subset_enumeration(n, c, k):
    """Independent computation: the fraction of k-subsets of n samples (c correct) holding a correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_known_cases():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)


def test_equals_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_subset_enumeration(n, c, k), abs=1e-12)
    curve = pass_at_k_curve([0, 1, 3], n=4)
    assert list(curve) == [1, 2, 3, 4]
    assert curve[1] == pytest.approx((0 + 0.25 + 0.75) / 3)


def test_unbiased_monte_carlo():
    # problems with true success probabilities p; the expected estimate must equal 1 - (1-p)^k
    rng = random.Random(0)
    n, k, trials = 8, 3, 20000
    for p in (0.05, 0.3, 0.7):
        total = 0.0
        for _ in range(trials):
            c = sum(rng.random() < p for _ in range(n))
            total += pass_at_k(n, c, k)
        est = total / trials
        truth = 1 - (1 - p) ** k
        # standard error of the mean is below 0.5/sqrt(trials) = 0.0035
        assert abs(est - truth) < 0.012, (p, est, truth)
    # the naive plug-in 1-(1-c/n)^k is biased: make sure the check can tell the difference
    p, naive = 0.05, 0.0
    for _ in range(trials):
        c = sum(rng.random() < p for _ in range(n))
        naive += 1 - (1 - c / n) ** k
    assert abs(naive / trials - (1 - (1 - p) ** k)) > 0.012


def test_t_interval():
    xs = [61.2, 63.0, 59.8]
    r = mean_ci(xs)
    mean = sum(xs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / 2)
    # t_{0.975, 2} = 4.302652729911275 (tables)
    assert r["mean"] == pytest.approx(mean)
    assert r["half_width"] == pytest.approx(4.302652729911275 * sd / math.sqrt(3), rel=1e-6)
    assert r["ci_low"] < mean < r["ci_high"]
    assert math.isnan(mean_ci([1.0])["half_width"])


def test_t_quantile_independent():
    # the bisection of our own incomplete-beta CDF agrees with scipy (if present) and with tabulated values
    table = {(1, 0.975): 12.706204736, (2, 0.975): 4.302652730, (4, 0.975): 2.776445105, (30, 0.975): 2.042272456}
    for (df, p), value in table.items():
        assert _t_quantile_bisect(p, df) == pytest.approx(value, rel=1e-6)
        assert t_quantile(p, df) == pytest.approx(value, rel=1e-6)


def test_aggregate_scores():
    from eval.stats import aggregate_scores

    evals = [{"scores": [{"source": "science/student", "metric": "acc", "value": v},
                         {"source": "science/teacher", "metric": "acc", "value": 99.0}]} for v in (60.0, 62.0, 64.0)]
    r = aggregate_scores(evals, "science/student", "acc")
    assert r["values"] == [60.0, 62.0, 64.0] and r["mean"] == pytest.approx(62.0)
    assert r["half_width"] == pytest.approx(4.302652729911275 * 2.0 / math.sqrt(3), rel=1e-6)
    with pytest.raises(KeyError):
        aggregate_scores(evals, "science/student", "missing")


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (37, 100), (1, 3)])
def test_wilson_interval_endpoints_solve_the_score_equation(k, n):
    """The Wilson interval is {p0 : (k/n - p0)^2 <= z^2 p0 (1 - p0) / n}; its finite endpoints solve the equality."""
    from eval.stats import proportion_ci

    z = 1.959963984540054  # the standard normal's 97.5% quantile
    ci = proportion_ci(k, n)
    p = k / n
    assert 0.0 <= ci["ci_low"] <= p <= ci["ci_high"] <= 1.0 and ci["n"] == n
    for end in (ci["ci_low"], ci["ci_high"]):
        if 0.0 < end < 1.0 or end == p:
            assert (p - end) ** 2 == pytest.approx(z * z * end * (1 - end) / n, abs=1e-12)
    assert ci["ci_high"] > ci["ci_low"]  # never empty, also at 0 / n and n / n
    with pytest.raises(ValueError):
        proportion_ci(n + 1, n)
