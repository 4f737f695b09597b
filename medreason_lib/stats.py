"""The statistics behind every accuracy the course reports.

- ``wilson_interval``: the 95% Wilson score interval of ``k`` right out of ``n``. Unlike the
  textbook ``p ± 1.96·sqrt(p(1-p)/n)`` it stays inside [0, 1] and is sensible at 0/n and n/n.
- ``ci_half_width``: roughly how far a measured accuracy may be from the true one with ``n``
  items (largest at 50%): ±13 points at n = 50, ±4 at n = 500.
- ``mcnemar_p``: the exact two-sided McNemar test on paired results. When two models answer
  the same items, only the items that *flipped* (wrong -> right, right -> wrong) carry
  information about a difference; under "no difference" each flip is a coin toss.
- ``dominant_answer_share`` / ``collapsed_tasks``: the answer a model gives most often and
  its share of the items; above ``COLLAPSE_SHARE`` (90%) the model has collapsed onto one
  answer, and an accuracy change (significant or not) mostly measures that answer's base rate.
"""

from __future__ import annotations

import math
from collections import Counter

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


# --------------------------------------------------------------------------- collapse

COLLAPSE_SHARE = 0.9  # one answer to more than this share of items: the policy collapsed


def dominant_answer_share(report, task: str | None = None) -> tuple[str | None, float]:
    """The readable answer given most often and its share of *all* the items.

    ``report`` is an ``EvalReport`` (anything with ``records``) or a list of its records
    (dicts with ``task``, ``extracted`` and ``error``); ``task`` limits it to one task.
    Unparsed and failed items count in the denominator, never as an answer. Returns
    ``(None, 0.0)`` when no item has a readable answer.
    """
    records = getattr(report, "records", report)
    if task is not None:
        records = [r for r in records if r["task"] == task]
    given = Counter(r["extracted"] for r in records if r.get("error") is None and r["extracted"])
    if not given:
        return None, 0.0
    answer, count = given.most_common(1)[0]
    return answer, count / len(records)


def collapsed_tasks(report, share: float = COLLAPSE_SHARE) -> dict[str, tuple[str, float]]:
    """Task -> (answer, share) for every task where one answer goes to more than ``share``
    of the items. A before/after accuracy difference (and its McNemar p-value) for such a
    task says how often that one answer is right, not that the model learned to reason."""
    tasks = sorted({r["task"] for r in getattr(report, "records", report)})
    found = {t: dominant_answer_share(report, t) for t in tasks}
    return {t: (a, s) for t, (a, s) in found.items() if a is not None and s > share}
