"""Statistics for experiment reports, as pure functions.

Wilson score interval for a proportion x/n at normal quantile z:

    centre = (p + z^2 / 2n) / (1 + z^2 / n)
    half   = z * sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n)

Two-proportion z-test (pooled, two-sided) of x2/n2 against x1/n1:

    p = (x1 + x2) / (n1 + n2),  se = sqrt(p (1 - p) (1/n1 + 1/n2)),  z = (x2/n2 - x1/n1) / se
    p-value = erfc(|z| / sqrt 2)
"""

from __future__ import annotations

import math

Z_95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def _check(successes: int, trials: int) -> None:
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of successes/trials; (0, 1) when there are no trials."""
    _check(successes, trials)
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    denominator = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / trials + z2 / (4.0 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p-value) of x2/n2 against x1/n1. NaN for both when either side has
    no trials; (0, 1) when the pooled rate is 0 or 1 (the samples cannot differ)."""
    _check(x1, n1)
    _check(x2, n2)
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return 0.0, 1.0
    z = (x2 / n2 - x1 / n1) / se
    return z, math.erfc(abs(z) / math.sqrt(2.0))
