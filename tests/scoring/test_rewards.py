"""Rewards: good, bad and adversarial completions, in TRL's calling convention."""

import re

import pytest

from medreason_lib.scoring.rewards import (
    CORRECT_REWARD,
    FORMAT_REWARD,
    REWARD_FUNCS,
    correctness_reward,
    score_completions,
    soft_format_reward,
    strict_format_reward,
    xml_count_reward,
)
from medreason_lib.scoring.template import format_completion

FORMAT_FUNCS = [strict_format_reward, soft_format_reward, xml_count_reward]
GOOD = format_completion("Randomised trial, n=400.\nMortality fell from 12% to 8%.", "yes")


def format_total(text: str) -> float:
    return sum(fn([text])[0] for fn in FORMAT_FUNCS)


def as_chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_well_formed_multiline_completion_earns_full_format_credit():
    assert strict_format_reward([GOOD]) == [FORMAT_REWARD]
    assert soft_format_reward([GOOD]) == [FORMAT_REWARD]
    assert xml_count_reward([GOOD]) == [pytest.approx(0.5)]


def test_the_widely_copied_regexes_score_multiline_reasoning_zero():
    # The strict/soft patterns pasted into most GRPO notebooks: re.match, no re.DOTALL.
    copied_strict = r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$"
    copied_soft = r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>"
    assert re.match(copied_strict, GOOD + "\n") is None
    assert re.match(copied_soft, GOOD) is None
    # ... while the course's rewards give the same completion full credit.
    assert strict_format_reward([GOOD + "\n"]) == [FORMAT_REWARD]
    assert soft_format_reward([GOOD]) == [FORMAT_REWARD]


def test_conversational_and_plain_completions_score_the_same():
    for fn in FORMAT_FUNCS:
        assert fn([GOOD]) == fn([as_chat(GOOD)])


@pytest.mark.parametrize(
    "cheat",
    [
        GOOD + "\n" + GOOD,  # the whole block twice
        GOOD.replace("<answer>", "<answer>\n<answer>"),
        "<reasoning>\n<reasoning>\nx\n</reasoning>\n</reasoning>\n<answer>\nyes\n</answer>",
        "<reasoning>\n</reasoning>\n" * 20 + "<answer>\nyes\n</answer>",
        GOOD + "\n</answer>\n</answer>",
    ],
)
def test_repeating_tags_never_earns_more_than_one_block(cheat):
    assert format_total(cheat) < format_total(GOOD)


def test_text_after_answer_costs_credit():
    chatty = GOOD + "\nI hope this helps! Let me know if you have other questions."
    assert strict_format_reward([chatty]) == [0.0]
    assert xml_count_reward([chatty])[0] < xml_count_reward([GOOD])[0]
    assert format_total(chatty) < format_total(GOOD)


def test_partial_template_gets_partial_credit_only():
    partial = "<reasoning>\nthinking about it\n</reasoning>\n"
    assert strict_format_reward([partial]) == [0.0]
    assert soft_format_reward([partial]) == [0.0]
    assert xml_count_reward([partial]) == [0.25]


def test_soft_accepts_inline_layout_strict_does_not():
    inline = "<reasoning>short reasoning</reasoning> <answer>yes</answer>"
    assert soft_format_reward([inline]) == [FORMAT_REWARD]
    assert strict_format_reward([inline]) == [0.0]


@pytest.mark.parametrize(
    "hollow",
    ["", "   \n\t ", "...", "?!", "Reasoning", "yes", "**Thinking**", "yes yes yes", "-- 42 --"],
)
def test_hollow_reasoning_earns_no_strict_or_soft_format_credit(hollow):
    for text in (
        f"<reasoning>\n{hollow}\n</reasoning>\n<answer>\nyes\n</answer>",
        f"<reasoning>{hollow}</reasoning><answer>yes</answer>",
        f"<think>\n{hollow}\n</think>\n\nyes",  # Qwen3's think block, read as the template
    ):
        assert strict_format_reward([text]) == [0.0], text
        assert soft_format_reward([text]) == [0.0], text
    full = score_completions([format_completion(hollow, "yes")], answer=["yes"], task=["pubmedqa"])[
        "total"
    ][0]
    assert full < score_completions([GOOD], answer=["yes"], task=["pubmedqa"])["total"][0]


@pytest.mark.parametrize("short", ["Trial positive.", "RR 0.7", "因为试验有效"])
def test_longer_reasoning_earns_nothing_extra(short):
    long = "\n".join(["The randomised trial enrolled 400 patients across 12 centres."] * 40)
    short_c, long_c = format_completion(short, "yes"), format_completion(long, "yes")
    assert len(long_c) > 20 * len(short_c)
    for fn in [*FORMAT_FUNCS, correctness_reward]:
        scores = fn([short_c, long_c], answer=["yes", "yes"], task=["pubmedqa", "pubmedqa"])
        assert scores[0] == scores[1] > 0, fn.__name__
    totals = score_completions([short_c, long_c], answer=["yes"] * 2, task=["pubmedqa"] * 2)
    assert totals["total"][0] == totals["total"][1] == 3 * FORMAT_REWARD + CORRECT_REWARD


def test_think_and_harmony_completions_are_read_as_the_template():
    think = "<think>\nThe trial shows benefit.\n</think>\n\nyes"
    harmony = "analysisThe trial shows benefit.assistantfinalyes"
    for text in (think, harmony):
        assert strict_format_reward([text]) == [FORMAT_REWARD]
        assert correctness_reward([text], answer=["yes"], task=["pubmedqa"]) == [CORRECT_REWARD]


BAD_INPUTS = [
    None,
    "",
    "x" * 1_000_000,
    "<reasoning>" * 50_000 + "</answer>" * 50_000,
    "<answer>\nyes",
    "</answer><answer></reasoning><reasoning>",
    "\x00\ud800\U0001f489 ∑ <answer>\n是\n</answer>",
    [{"role": "assistant"}],
    [None],
    12,
]


@pytest.mark.parametrize("fn", REWARD_FUNCS, ids=lambda f: f.__name__)
def test_rewards_never_raise_and_return_floats(fn):
    n = len(BAD_INPUTS)
    scores = fn(BAD_INPUTS, answer=["yes"] * n, task=["pubmedqa"] * n)
    assert len(scores) == n
    assert all(isinstance(s, float) for s in scores)
    assert all(0.0 <= s <= CORRECT_REWARD for s in scores)
    assert scores[0] == 0.0 and scores[1] == 0.0


def test_correctness_never_raises_on_numbers_decimal_cannot_hold():
    said = ["1e999999999", "Infinity", "NaN", "9" * 40, "1" + ",000" * 11]
    completions = [format_completion("Work.", s) for s in said]
    n = len(completions)
    assert correctness_reward(completions, answer=["18"] * n, task=["gsm8k"] * n) == [0.0] * n
    right = correctness_reward(completions[3:], answer=said[3:], task=["gsm8k"] * 2)
    assert right == [CORRECT_REWARD] * 2  # long numbers are read exactly, the gold ones too


def test_correctness_full_value_for_right_zero_for_wrong_mixed_tasks():
    completions = [
        as_chat(format_completion("r", "yes")),
        as_chat(format_completion("r", "no")),
        as_chat(format_completion("r", "(C)")),
        as_chat(format_completion("r", "Agatha had $1,000.")),
        as_chat(format_completion("r", "A or C")),
        as_chat(format_completion("r", "Warfarin")),
    ]
    scores = correctness_reward(
        completions,
        answer=["yes", "yes", "C", "1000", "C", "D"],
        task=["pubmedqa", "pubmedqa", "medqa", "gsm8k", "medmcqa", "mmlu_medical"],
        options=[
            [],
            [],
            ["a", "b", "c", "d"],
            [],
            ["a", "b", "c", "d"],
            ["Insulin", "Metformin", "Aspirin", "Warfarin"],
        ],
    )
    assert scores == [CORRECT_REWARD, 0.0, CORRECT_REWARD, CORRECT_REWARD, 0.0, CORRECT_REWARD]


def test_correctness_reads_only_the_answer_block():
    sneaky = format_completion("The answer is yes. Or no. Or maybe.", "maybe")
    assert correctness_reward([sneaky], answer=["yes"], task=["pubmedqa"]) == [0.0]
    assert correctness_reward([sneaky], answer=["maybe"], task=["pubmedqa"]) == [CORRECT_REWARD]


def test_correctness_column_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="answer has 1 entries for 2 completions"):
        correctness_reward(["a", "b"], answer=["yes"], task="pubmedqa")


def test_score_completions_totals_every_reward():
    scores = score_completions([GOOD], answer=["yes"], task=["pubmedqa"])
    assert set(scores) == {f.__name__ for f in REWARD_FUNCS} | {"total"}
    assert scores["total"] == [pytest.approx(3 * FORMAT_REWARD + CORRECT_REWARD)]
