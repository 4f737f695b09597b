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
- ``reward_trend``: whether a GRPO run's reward rose, judged by Welch's t between its first
  and last windows of steps, not by one noisy difference of means; "too short to judge" for
  a run capped at a few steps.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


def wilson_interval(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for ``k`` successes in ``n`` trials."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at k = 0 (k = n) the bound is exactly 0 (1); computed, it misses by a rounding error
    # (2.8e-17 at 0 of 6), and an interval that excludes its own estimate breaks error bars
    low = 0.0 if k <= 0 else max(0.0, min(p, centre - half))
    high = 1.0 if k >= n else min(1.0, max(p, centre + half))
    return low, high


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


@dataclass(frozen=True)
class RewardTrend:
    """Whether a logged reward curve rose: its first and last windows compared."""

    steps: int
    window: int
    first: float
    last: float
    t: float | None  # Welch's t of last minus first (None: too short, or no variation)
    verdict: str  # "rose" | "fell" | "no clear change" | "too short to judge"

    def __str__(self) -> str:
        t = "" if self.t is None else f", Welch t {self.t:+.1f}"
        return (
            f"reward, mean of the first and last {self.window} of {self.steps} logged steps: "
            f"{self.first:.3f} -> {self.last:.3f} ({self.last - self.first:+.3f}{t}): "
            f"{self.verdict}"
        )


def reward_trend(rewards, window: int | None = None, t_needed: float = 2.0) -> RewardTrend:
    """Compare the mean reward of the first and last ``window`` logged steps (default a fifth
    of the run; at least 3) with Welch's t: "rose" / "fell" when ``|t| > t_needed``, else "no
    clear change"; "too short to judge" under two windows of steps. A single step's reward
    is the mean over one batch's groups and jumps from step to step, so a difference of means
    alone says little: one lucky batch at the end is not a trend."""
    values = [float(r) for r in rewards if r == r]  # NaN (a step not logged) dropped
    n = len(values)
    window = max(3, window or n // 5)  # Welch's t needs a few steps a side
    first, last = values[:window], values[-window:]
    mean_first = sum(first) / len(first) if first else math.nan
    mean_last = sum(last) / len(last) if last else math.nan
    if n < 2 * window:
        return RewardTrend(n, window, mean_first, mean_last, None, "too short to judge")

    def var(xs, m):
        return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)

    se = math.sqrt(var(first, mean_first) / window + var(last, mean_last) / window)
    diff = mean_last - mean_first
    if se == 0:
        t = None
        verdict = "rose" if diff > 0 else "fell" if diff < 0 else "no clear change"
    else:
        t = diff / se
        verdict = "rose" if t > t_needed else "fell" if t < -t_needed else "no clear change"
    return RewardTrend(n, window, mean_first, mean_last, t, verdict)


def largest_remainder(weights: dict[str, float], n: int) -> dict[str, int]:
    """Integer counts of ``n * w`` (the weights normalised) that sum to exactly ``n``: each is
    ``floor(n * w)`` or one more, the extra ones going to the largest remainders (ties: the
    first key). All-zero weights give zeros."""
    total = sum(weights.values())
    exact = {k: n * w / total if total else 0.0 for k, w in weights.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    order = sorted(exact, key=lambda k: (-(exact[k] - counts[k]), list(exact).index(k)))
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    return counts
