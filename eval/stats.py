"""Mean and 95% confidence interval over seeds, from the Student t distribution (n - 1 degrees of freedom)."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Sequence


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t. Uses scipy when installed, else inverts the CDF by bisection."""
    try:
        from scipy import stats

        return float(stats.t.ppf(p, df))
    except ImportError:
        return _t_quantile_bisect(p, df)


def _t_cdf(x: float, df: int) -> float:
    # regularized incomplete beta via continued fraction (Numerical Recipes, betacf)
    xx = df / (df + x * x)
    ib = _betainc(df / 2.0, 0.5, xx)
    return 1 - 0.5 * ib if x >= 0 else 0.5 * ib


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(lbeta) * _betacf(a, b, x) / a
    return 1 - math.exp(lbeta) * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float, iters: int = 300, eps: float = 1e-15) -> float:
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > 1e-300 else 1e-300)
    h = d
    for m in range(1, iters + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > 1e-300 else 1e-300)
        c = 1 + aa / c if abs(1 + aa / c) > 1e-300 else 1e-300
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > 1e-300 else 1e-300)
        c = 1 + aa / c if abs(1 + aa / c) > 1e-300 else 1e-300
        delta = d * c
        h *= delta
        if abs(delta - 1) < eps:
            break
    return h


def _t_quantile_bisect(p: float, df: int) -> float:
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """``{"mean", "ci_low", "ci_high", "half_width", "std", "n"}``; with one value the interval is undefined (NaN)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("no values")
    mean = sum(xs) / n
    if n == 1:
        return {"mean": mean, "ci_low": math.nan, "ci_high": math.nan, "half_width": math.nan, "std": math.nan, "n": 1}
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "half_width": half, "std": std, "n": n}


def aggregate_scores(evals: Sequence[dict], source: str, metric: str, confidence: float = 0.95) -> dict:
    """Mean and t-interval of one score over several ``eval.json`` contents (one per seed).

    ``source`` and ``metric`` select the score in each file's flat ``scores`` list (e.g. ``"science/student"``,
    ``"answer_letter_exact"``; or ``"prior:paper:mmlu"``, ``"acc,none"``). Raises if a file lacks it.
    """
    values = []
    for i, ev in enumerate(evals):
        hits = [s for s in ev.get("scores", []) if s.get("source") == source and s.get("metric") == metric]
        if len(hits) != 1:
            raise KeyError(f"eval #{i}: expected one score {source}/{metric}, found {len(hits)}")
        values.append(hits[0]["value"])
    return {**mean_ci(values, confidence), "values": values, "source": source, "metric": metric}


def proportion_ci(successes: int, n: int, confidence: float = 0.95) -> dict:
    """Wilson score interval of a proportion (in [0, 1]): ``{"p", "ci_low", "ci_high", "n"}``. Unlike the normal
    approximation it stays inside [0, 1] and is not empty at 0 / n or n / n."""
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: rounding would leave 1e-17 off
    high = 1.0 if successes == n else min(1.0, centre + half)
    return {"p": p, "ci_low": low, "ci_high": high, "n": n}

