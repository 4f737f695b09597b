"""The estimators of sampled evaluation: ``avg@k``, ``pass@k`` and ``maj@k`` (issue 25).

Several medical reasoning papers sample each item several times and report what the samples
give; three protocols, three different questions:

- ``avg@k``: the mean accuracy over k samples per item at a temperature. One sampled run
  per item is avg@1 (HuatuoGPT-o1's released evaluator samples once at temperature 0.5;
  ``benchmarks.AUTHORS_DECODING``); avg@k estimates the same quantity with less noise. Its
  interval must count *items* as the independent units: the k samples of one item are
  alike, so treating n x k samples as independent would make the interval too narrow.
  ``avg_at_k`` takes each item's share of right samples and gives the mean with a normal
  interval on those n shares (a cluster-robust interval, items as clusters), clipped to
  [0, 1].
- ``pass@k`` (Chen et al. 2021, https://arxiv.org/abs/2107.03374): the chance that at least
  one of k samples is right, estimated without bias from n >= k samples of which c are right:
  ``1 - C(n - c, k) / C(n, k)``. It is not an accuracy: a model that answers at random among
  four letters has pass@4 near 1 - (3/4)^4 = 68% on multiple choice.
- ``maj@k`` (self-consistency, Wang et al. 2022, https://arxiv.org/abs/2203.11171): the
  majority answer of k samples, scored once per item. Ties: the tied answer sampled first
  wins; an unparseable sample (None) never wins while any sample has an answer.

- ``signal_share``: the share of items whose k samples are neither all right nor all wrong.
  A GRPO group of G = k completions of such a prompt has a correctness reward that varies,
  so it can teach; pass@k counts the all-right items too, which teach nothing (every
  advantage 0), so pass@G is an upper bound on the share of prompts that can give a learning
  signal through correctness (TRL logs the rest as ``frac_reward_zero_std``).

These are pure functions of the samples' extracted answers and correctness; the evaluation
harness supplies them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from medreason_lib.scoring.stats import Z95, wilson_interval


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of Chen et al. 2021 from ``n`` samples with ``c`` right:
    ``1 - C(n-c, k) / C(n, k)``, computed as a product (no huge binomials)."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"pass_at_k takes whole numbers, got n={n!r}, c={c!r}, k={k!r}")
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every choice of k samples holds a right one
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer of ``answers`` (one item's samples, in sampling order); ties go
    to the tied answer sampled first; None (unparseable) wins only when nothing else is there."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


@dataclass(frozen=True)
class SampledScore:
    """One protocol's score over n items with k samples each, with a 95% interval."""

    protocol: str  # "avg@k", "pass@k" or "maj@k"
    k: int
    n_items: int
    value: float
    ci95: tuple[float, float]

    def __str__(self) -> str:
        low, high = self.ci95
        name = self.protocol.replace("k", str(self.k))
        return f"{name} {self.value:.1%} [{low:.1%}, {high:.1%}] over {self.n_items} items"


def _items_interval(shares: Sequence[float]) -> tuple[float, float]:
    """Mean of per-item values with a normal 95% interval over items, clipped to [0, 1]."""
    n = len(shares)
    mean = sum(shares) / n
    if n < 2:
        return max(0.0, mean), min(1.0, mean)
    var = sum((s - mean) ** 2 for s in shares) / (n - 1)
    half = Z95 * math.sqrt(var / n)
    return max(0.0, mean - half), min(1.0, mean + half)


def _check(correct: Sequence[Sequence[bool]], k: int | None) -> int:
    if not correct:
        raise ValueError("no items")
    sizes = {len(row) for row in correct}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"every item needs the same number (>= 1) of samples, got {sorted(sizes)}")
    n = sizes.pop()
    if k is not None and not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the {n} samples per item")
    return n


def avg_at_k(correct: Sequence[Sequence[bool]]) -> SampledScore:
    """The mean accuracy over each item's k samples (``correct[i][j]``: sample j of item i
    right), with an interval that counts items, not samples, as independent."""
    k = _check(correct, None)
    shares = [sum(map(bool, row)) / k for row in correct]
    return SampledScore("avg@k", k, len(shares), sum(shares) / len(shares), _items_interval(shares))


def pass_at_k_score(correct: Sequence[Sequence[bool]], k: int) -> SampledScore:
    """The mean unbiased pass@k over items, each from its n >= k samples."""
    n = _check(correct, k)
    values = [pass_at_k(n, sum(map(bool, row)), k) for row in correct]
    return SampledScore(
        "pass@k", k, len(values), sum(values) / len(values), _items_interval(values)
    )


def maj_at_k(answers: Sequence[Sequence[str | None]], golds: Sequence[str]) -> SampledScore:
    """The accuracy of each item's majority answer (``majority_answer``) against its gold, with
    the Wilson interval of that one-per-item score. An item whose samples give no answer is
    wrong, whatever its gold (None is never right, as in the greedy harness)."""
    if len(answers) != len(golds):
        raise ValueError(f"{len(answers)} items of answers for {len(golds)} golds")
    k = _check([[True] * len(a) for a in answers], None)
    majorities = [majority_answer(a) for a in answers]
    right = sum(m is not None and m == g for m, g in zip(majorities, golds, strict=True))
    n = len(golds)
    return SampledScore("maj@k", k, n, right / n, wilson_interval(right, n))


def signal_share(correct: Sequence[Sequence[bool]]) -> float:
    """The share of items with some but not all of their k samples right: the prompts whose
    GRPO group of k completions would get a correctness reward that varies."""
    k = _check(correct, None)
    return sum(0 < sum(map(bool, row)) < k for row in correct) / len(correct)
