"""Answer extraction: one extractor for the rewards and the evaluation."""

import pytest

from medreason_lib.answers import answer_type, extract_answer, is_correct, normalize_number
from medreason_lib.template import format_completion

OPTIONS = ["Insulin", "Metformin", "Aspirin", "Warfarin"]


def wrap(answer: str) -> str:
    return format_completion("Step by step.\nStill reasoning.", answer)


@pytest.mark.parametrize("said", ["yes", "Yes.", "YES", "The answer is yes", " yes \n"])
def test_yes_variants(said):
    assert extract_answer(wrap(said), "pubmedqa") == "yes"


@pytest.mark.parametrize("said", ["yes or no", "yes/no", "Maybe yes, maybe no", "", "unclear"])
def test_yes_no_hedges_and_blanks_are_none(said):
    assert extract_answer(wrap(said), "pubmedqa") is None


@pytest.mark.parametrize(
    "said",
    [
        "B",
        "(B)",
        "B.",
        "B) Metformin",
        "B. Metformin",
        "Answer: B",
        "The answer is B",
        "The correct option is (B)",
        "**B**",
        "Metformin",
        "metformin.",
    ],
)
def test_choice_variants(said):
    assert extract_answer(wrap(said), "medqa", OPTIONS) == "B"


@pytest.mark.parametrize(
    "said",
    [
        "A and C",
        "A/B/C/D",
        "A, B",
        "The answer is A or B",
        "(A) or (B)",
        "The answer is a matter of debate",
        "E",
        "Insulin or metformin",
    ],
)
def test_choice_hedges_are_none(said):
    assert extract_answer(wrap(said), "medmcqa", OPTIONS) is None


def test_option_text_only_counts_when_options_are_known():
    assert extract_answer(wrap("Metformin"), "mmlu_medical") is None
    assert extract_answer(wrap("Metformin"), "mmlu_medical", OPTIONS) == "B"


@pytest.mark.parametrize(
    ("said", "value"),
    [
        ("$60", "60"),
        ("60.00", "60"),
        ("1,000", "1000"),
        ("Agatha had $60.", "60"),
        ("-3", "-3"),
        ("2.50", "2.5"),
        ("12 * 5 = 60", "60"),
        ("1/2", "0.5"),
        ("\\frac{1}{2}", "0.5"),
        ("\\boxed{1,200}", "1200"),
    ],
)
def test_number_variants(said, value):
    assert extract_answer(wrap(said), "gsm8k") == value


@pytest.mark.parametrize("said", ["60 or 70", "between 5 and 6", "many", "1/0"])
def test_number_hedges_are_none(said):
    assert extract_answer(wrap(said), "gsm8k") is None


def test_only_the_answer_block_counts_not_the_reasoning():
    text = format_completion("The answer is yes, clearly.", "no")
    assert extract_answer(text, "pubmedqa") == "no"
    assert extract_answer("The answer is yes.", "pubmedqa") is None


def test_two_answer_blocks_must_agree():
    assert extract_answer(wrap("B") + wrap("(B)"), "medqa") == "B"
    assert extract_answer(wrap("B") + wrap("C"), "medqa") is None


def test_is_correct_normalises_gold_too():
    assert is_correct(wrap("$1,000.00"), "1,000", "gsm8k")
    assert is_correct(wrap("Yes."), "yes", "pubmedqa")
    assert not is_correct(wrap("no"), "yes", "pubmedqa")


def test_normalize_number():
    assert normalize_number("1,000") == "1000"
    assert normalize_number("-0.50") == "-0.5"
    assert normalize_number("abc") is None
    assert normalize_number("inf") is None


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="valid tasks"):
        answer_type("usmle")
