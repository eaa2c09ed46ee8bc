"""Confidence intervals: Wilson for rates (sane at 0 % and 100 %, unlike the normal approximation),
Student t for means."""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


# Student t 97.5 % quantiles for 1..30 degrees of freedom (standard tables); above 30 the normal
# quantile is within 2 % of t, and the table avoids a scipy dependency.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    return _T975[df - 1] if df <= len(_T975) else Z95 + 2.5 / df  # +2.5/df: the first-order t correction


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) with a 95 % Student-t interval; a single value has no interval (nan)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return (mean, float("nan"), float("nan"))
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return (mean, mean - half, mean + half)
