"""Multiple choice -> open questions (``open_ended``): each rule on made-up items, then the
real test sets of the shared reference data: the counts kept and dropped per rule, and
checks, written apart from the rules, that no kept item breaks them."""

from __future__ import annotations

import re

import pytest

from medreason_lib.data import load_task
from medreason_lib.evaluation.open_ended import (
    HUB_DATASET,
    RULES,
    convert,
    convert_row,
    rejection,
    rewrite_question,
)
from medreason_lib.evaluation.verifier import screen_answer
from medreason_lib.settings import paths

REFERENCE = paths.reference_data_dir()
OPTIONS = ["Metformin", "Insulin glargine", "Sitagliptin", "Glipizide"]
Q = "What is the first-line drug for type 2 diabetes?"


def row(question: str, options=OPTIONS, answer: str = "A", task: str = "medqa") -> dict:
    return {
        "id": "x-1",
        "task": task,
        "question": question,
        "context": "",
        "options": list(options),
        "answer": answer,
        "subject": "",
        "prompt": [{"role": "user", "content": "old"}],
    }


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (
            "Which of the following is the most likely diagnosis?",
            "What is the most likely diagnosis?",
        ),
        ("Which of the following best explains this?", "What best explains this?"),
        (
            "His rash is most likely due to which of the following?",
            "His rash is most likely due to what?",
        ),
        ("Which of the following drugs is most appropriate?", "Which drug is most appropriate?"),
        ("Which of the following findings would you expect?", "Which findings would you expect?"),
        ("Which one of the following enzymes is deficient?", "Which enzyme is deficient?"),
        ("Which of the following viruses is the cause?", "Which viruses is the cause?"),
        (
            "A 4-year-old boy\n  has   a fever.\nWhat is the cause?",
            "A 4-year-old boy\nhas a fever.\nWhat is the cause?",
        ),
    ],
)
def test_rewrite_asks_without_the_options(before, after):
    assert rewrite_question(before) == after


def case(question: str, rule: str, options=OPTIONS):
    """One row of the rules' table: an item, its first option the gold answer, that ``rule``
    drops."""
    return pytest.param(question, options, options[0], rule, id=rule)


WORDY = " ".join(["word"] * 13)


@pytest.mark.parametrize(
    ("question", "options", "gold", "rule"),
    [
        case("All of the following cause hypoglycemia EXCEPT:", "asks_for_exception"),
        case("A man has diabetes. Which drug is not a sulfonylurea?", "asks_for_exception"),
        case("A man has diabetes. Which of the following is true about it?", "asks_for_statement"),
        case("Arrange the following in the order of their onset of action", "refers_to_a_list"),
        case("Of the following options, which drug lowers glucose first?", "refers_to_options"),
        case("A photograph of the rash is shown. What is the diagnosis?", "needs_a_figure"),
        case("Diabetes drug:", "question_too_short"),
        case(Q, "answer_names_options", ["All of the above", *OPTIONS[1:]]),
        case(Q, "answer_names_options", ["Both A and B", *OPTIONS[1:]]),
        case("Is metformin the first-line drug?", "answer_yes_no", ["Yes", "No", "a", "b"]),
        case("What HbA1c should he aim for?", "answer_numeric", ["7%", "8%", "9%", "6%"]),
        case("How long does glargine act?", "answer_numeric", ["24 hours", "2 h", "6 h", "1 h"]),
        case("Which factor does warfarin spare?", "answer_too_short", ["X", "II", "V", "IX"]),
        case(Q, "answer_too_long", [WORDY, *OPTIONS[1:]]),
        case(Q, "duplicate_option", ["Metformin", "metformin.", "c", "d"]),
    ],
)
def test_each_rule_drops_what_it_names(question, options, gold, rule):
    assert rule in RULES
    assert rejection(question, options, gold) == rule


def test_lab_values_shown_below_are_no_figure():
    question = (
        "A 60-year-old man is confused. Laboratory results are shown below:\n"
        "Sodium 118 mEq/L\nOsmolality 250 mOsm/kg\nWhich of the following is the most likely cause?"
    )
    converted, reason = convert_row(row(question, ["SIADH", "Diabetes insipidus", "a", "b"]))
    assert reason is None
    assert converted["question"].endswith("What is the most likely cause?")


def test_a_kept_row_is_an_open_question_with_the_option_text_as_reference():
    converted, reason = convert_row(
        row("Which of the following is the first-line drug for type 2 diabetes?", answer="A")
    )
    assert reason is None
    assert converted["options"] == [] and converted["reference"] == "Metformin"
    assert converted["answer"] == "A" and converted["task"] == "medqa"  # what label shares read
    user = converted["prompt"][-1]["content"]
    assert "What is the first-line drug for type 2 diabetes?" in user
    assert not any(o in user for o in OPTIONS) and "letter" not in user
    with pytest.raises(ValueError, match="not multiple choice"):
        convert_row(row("What?", task="pubmedqa"))
    assert HUB_DATASET == "FreedomIntelligence/medical-o1-verifiable-problem"


# --------------------------------------------------------------------- the real test sets

# kept, and dropped per rule, by the rules as documented (computed 2026-12-06)
EXPECTED = {
    "medqa": (
        1042,
        {
            "answer_numeric": 16,
            "answer_too_long": 21,
            "answer_too_short": 3,
            "asks_for_exception": 33,
            "asks_for_statement": 40,
            "needs_a_figure": 106,
            "refers_to_options": 12,
        },
    ),
    "medmcqa": (
        2863,
        {
            "answer_names_options": 64,
            "answer_numeric": 165,
            "answer_too_long": 37,
            "answer_too_short": 39,
            "asks_for_exception": 768,
            "asks_for_statement": 74,
            "duplicate_option": 6,
            "needs_a_figure": 28,
            "question_too_short": 109,
            "refers_to_a_list": 10,
            "refers_to_options": 20,
        },
    ),
    "mmlu_medical": (
        782,
        {
            "answer_names_options": 11,
            "answer_numeric": 43,
            "answer_too_long": 60,
            "answer_too_short": 2,
            "asks_for_exception": 86,
            "asks_for_statement": 68,
            "needs_a_figure": 4,
            "question_too_short": 25,
            "refers_to_a_list": 4,
            "refers_to_options": 4,
        },
    ),
}
SOURCES = {"medqa": "mirage/medqa", "medmcqa": "mirage/medmcqa", "mmlu_medical": "mirage/mmlu"}


@pytest.fixture(scope="module", params=list(SOURCES))
def converted(request):
    if REFERENCE is None:
        pytest.skip("no reference data (set MEDREASON_REFERENCE_DATA)")
    task = request.param
    rows = load_task(task, "test", source=REFERENCE / SOURCES[task], verbose=False)
    kept, report = convert(rows, verbose=False)
    return task, rows, kept, report


def test_counts_kept_and_dropped_per_rule(converted):
    task, rows, kept, report = converted
    expected_kept, expected_dropped = EXPECTED[task]
    print(report)
    assert len(kept) == report.kept[task] == expected_kept
    assert {rule: n for (_, rule), n in report.dropped.items()} == expected_dropped
    assert report.total == len(rows)
    frame = report.to_frame()
    assert frame.loc[task, "kept"] == expected_kept and frame.loc[task, "items"] == len(rows)


_OPTION_WORDS = re.compile(r"(?i)\b(?:of|among) the following\b|\bwhich of these\b|\bexcept\b")
_ODD_ONE_OUT = re.compile(r"(?i)\b(?:not|least|false|incorrect|true|correct|statements?)\b")
_NAMES_OPTIONS = re.compile(r"(?i)^(?:all|none|both)(?: of)?(?: the)?(?: above)?\.?$|the above")


def test_no_kept_item_breaks_the_rule(converted):
    """Checks written apart from the rules' own regexes, on every kept item."""
    task, rows, kept, _ = converted
    gold = {r["id"]: r["options"][ord(r["answer"]) - ord("A")] for r in rows}
    for item in kept:
        question, reference = item["question"], item["reference"]
        last = re.split(r"(?<=[.!?])\s+|\n+", question.strip())[-1]
        assert not _OPTION_WORDS.search(question), question
        assert not re.search(r"\bNOT\b", question), question
        assert len(last.split()) < 4 or not _ODD_ONE_OUT.search(last), question
        assert reference == " ".join(gold[item["id"]].split())
        assert not _NAMES_OPTIONS.search(reference.strip()), reference
        assert sum(ch.isalpha() for ch in reference) >= 2 and len(reference.split()) <= 12
        assert item["options"] == []
        user = item["prompt"][-1]["content"]
        assert question in user and "\nA. " not in user


def test_the_judge_guard_passes_every_kept_reference(converted):
    """No false alarm of ``verifier.screen_answer`` on real answers: each kept reference,
    given as the answer, reaches the judge."""
    _, _, kept, _ = converted
    flagged = [(r["reference"], screen_answer(r["reference"], r["reference"])) for r in kept]
    assert [f for f in flagged if f[1]] == []
