"""The statistics behind every accuracy the course reports.

- ``wilson_interval``: the 95% Wilson score interval of ``k`` right out of ``n``. Unlike the
  textbook ``p ± 1.96·sqrt(p(1-p)/n)`` it stays inside [0, 1] and is sensible at 0/n and n/n.
- ``ci_half_width``: roughly how far a measured accuracy may be from the true one with ``n``
  items (largest at 50%): ±13 points at n = 50, ±4 at n = 500.
- ``mcnemar_p``: the exact two-sided McNemar test on paired results. When two models answer
  the same items, only the items that *flipped* (wrong -> right, right -> wrong) carry
  information about a difference; under "no difference" each flip is a coin toss.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


def wilson_interval(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for ``k`` successes in ``n`` trials."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def ci_half_width(n: int, p: float = 0.5, z: float = Z95) -> float:
    """Half the width of the Wilson interval at accuracy ``p`` with ``n`` items."""
    low, high = wilson_interval(p * n, n, z)
    return (high - low) / 2


def mcnemar_p(gained: int, lost: int) -> float:
    """Exact two-sided McNemar p-value: could ``gained`` vs ``lost`` flips be chance?

    Under the null hypothesis each of the ``gained + lost`` flips goes either way with
    probability 1/2, so the p-value is twice the binomial tail of the rarer direction.
    """
    flips = gained + lost
    if flips == 0:
        return 1.0
    tail = sum(math.comb(flips, i) for i in range(min(gained, lost) + 1)) / 2**flips
    return min(1.0, 2 * tail)
