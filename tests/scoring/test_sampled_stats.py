"""avg@k, pass@k and maj@k against values computed by hand (issue 25 part 1)."""

from __future__ import annotations

import math

import pytest

from medreason_lib.scoring.sampled_stats import (
    avg_at_k,
    maj_at_k,
    majority_answer,
    pass_at_k,
    pass_at_k_score,
    signal_share,
)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 0, 1, 0.0),  # c = 0: no sample right, whatever k
        (5, 0, 5, 0.0),
        (3, 1, 3, 1.0),  # n = k: right when any sample is
        (3, 0, 3, 0.0),
        (10, 3, 1, 0.3),  # k = 1: the share of right samples
        (10, 3, 2, 1 - 21 / 45),  # 1 - C(7,2)/C(10,2)
        (10, 3, 8, 1.0),  # n - c = 7 < k: every choice of 8 holds a right one
        (20, 5, 4, 1 - math.comb(15, 4) / math.comb(20, 4)),
    ],
)
def test_pass_at_k_matches_the_hand_computed_value(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_refuses_impossible_counts():
    for n, c, k in [(3, 4, 1), (3, 1, 4), (3, 1, 0), (3, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_majority_answer_ties_and_unparseable_samples():
    assert majority_answer(["A", "B", "A"]) == "A"
    assert majority_answer(["B", "A", "A", "B"]) == "B"  # tie: the first sampled wins
    assert majority_answer([None, None, "yes"]) == "yes"  # None never beats an answer
    assert majority_answer([None, None]) is None


def test_avg_at_k_counts_items_not_samples_as_independent():
    score = avg_at_k([[True, True], [False, False]])
    assert score.value == 0.5 and score.k == 2 and score.n_items == 2
    # two items whose shares are 1 and 0: sd 0.707, se 0.5, 1.96 se > 0.5 -> [0, 1]
    assert score.ci95 == (0.0, 1.0)
    many = avg_at_k([[True, False, True, False]] * 50)  # every item right half the time
    assert many.value == 0.5 and many.ci95 == (0.5, 0.5)  # no item differs from another
    with pytest.raises(ValueError, match="same number"):
        avg_at_k([[True], [True, False]])


def test_pass_at_k_is_not_an_accuracy():
    """A model that answers at random among four letters: accuracy 25%, pass@4 far higher."""
    rows = [[j == i % 4 for j in range(4)] for i in range(40)]  # one right of 4 per item
    assert avg_at_k(rows).value == 0.25
    assert pass_at_k_score(rows, 4).value == 1.0 and pass_at_k_score(rows, 1).value == 0.25


def test_maj_at_k_can_beat_greedy_and_reports_a_wilson_interval():
    answers = [["A", "A", "B"], ["C", "C", "C"], ["B", "D", "D"], [None, "A", None]]
    golds = ["A", "C", "D", "A"]
    score = maj_at_k(answers, golds)
    assert score.value == 1.0 and score.n_items == 4 and score.ci95[1] == 1.0
    assert str(score).startswith("maj@3 100.0%")


def test_maj_at_k_never_counts_an_unanswered_item_right():
    """An item whose samples give no answer is wrong even when its gold is unreadable too."""
    assert maj_at_k([[None, None], ["A", "A"]], [None, "A"]).value == 0.5


def test_signal_share_counts_the_items_a_grpo_group_could_learn_from():
    """Mixed items teach; all-right and all-wrong ones do not, though pass@k counts the
    all-right ones: pass@k is an upper bound on the share of items with a signal."""
    rows = [[True, True], [True, False], [False, True], [False, False]]
    assert signal_share(rows) == 0.5
    assert pass_at_k_score(rows, 2).value == 0.75 >= signal_share(rows)
    assert signal_share([[True]] * 3) == 0.0  # one sample: never mixed


def test_a_random_guesser_among_four_letters_has_pass_at_8_near_90_percent():
    """pass@k is unbiased: its expectation over a guesser's right counts c ~ Bin(8, 1/4) is
    exactly 1 - (3/4)^8 (notebook 05's question)."""
    expected = sum(
        math.comb(8, c) * 0.25**c * 0.75 ** (8 - c) * pass_at_k(8, c, 8) for c in range(9)
    )
    assert expected == pytest.approx(1 - 0.75**8) and round(expected, 2) == 0.90
