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


# --------------------------------------------------------------------------- natural answers
# Issue 10: answers as models write them. An answer that opens with one label, or states it,
# earns it even when its explanation uses other labels' words; a genuine hedge earns nothing.


def test_the_three_natural_answers_of_issue_10():
    assert (
        extract_answer(
            wrap("Yes, early feeding reduces infections; no increase in mortality."), "pubmedqa"
        )
        == "yes"
    )
    assert extract_answer(wrap("The answer is yes, although no trial exists."), "pubmedqa") == "yes"
    assert extract_answer(wrap("18 dollars (3 x 6)"), "gsm8k") == "18"


@pytest.mark.parametrize(
    ("completion", "label"),
    [
        # the MedQwen3B-Reasoner card's layout: a reasoning block, then the answer block
        (
            "<reasoning>\nThe trial shows fewer infections.\n</reasoning>\n<answer>yes</answer>",
            "yes",
        ),
        (
            "<reasoning>Benefit shown.</reasoning><answer>Yes, the trial supports it.</answer>",
            "yes",
        ),
        (
            wrap("No. The study found no benefit, maybe harm."),
            "no",
        ),
        (
            wrap("Maybe; the evidence is mixed (yes in one arm)."),
            "maybe",
        ),
        (wrap("Answer: no"), "no"),
        (wrap("Final answer: Yes"), "yes"),
        (wrap("**Yes**\n\nThe randomised trial showed benefit; no safety signal."), "yes"),
        (wrap("No, no."), "no"),
        (wrap("Yes, no adverse events were reported."), "yes"),
        (wrap("There is no evidence of harm, so yes."), "yes"),
        (wrap("Based on the trial, the effect is likely: yes."), "yes"),
        (wrap("Not sure, maybe."), "maybe"),
        # Qwen3 thinking mode and gpt-oss harmony (read through the template parser)
        ("<think>\nLooking at the cohort.\n</think>\n\nYes, mortality fell; no harm seen.", "yes"),
        ("analysisThe cohort shows harm.assistantfinalNo. Maybe in subgroups, but no.", "no"),
        (
            "<|channel|>analysis<|message|>Weigh it.<|end|><|start|>assistant"
            "<|channel|>final<|message|>The answer is maybe, as yes and no both appear.<|return|>",
            "maybe",
        ),
    ],
)
def test_yes_no_maybe_as_models_write_it(completion, label):
    assert extract_answer(completion, "pubmedqa") == label


@pytest.mark.parametrize(
    "said",
    [
        "yes or no",
        "yes and no",
        "Yes/No",
        "either yes or no",
        "maybe yes maybe no",
        "Maybe yes, maybe no",
        "Yes, maybe",
        "The answer is yes or no.",
        "No doubt, the answer is yes.",  # the opening and the stated answer disagree
        "The answer is not yes",
        "   \n\t ",
        "yesterday",
        "nobody knows",
        "Amaybe",
        "I don't know",
    ],
)
def test_yes_no_maybe_hedges_contradictions_and_non_labels_are_none(said):
    assert extract_answer(wrap(said), "pubmedqa") is None


CHOICES = ["Insulin", "Metformin", "Hypertension", "Warfarin"]


@pytest.mark.parametrize(
    ("said", "letter"),
    [
        ("C", "C"),
        ("C)", "C"),
        ("(C)", "C"),
        ("C. Hypertension", "C"),
        ("Option C", "C"),
        ("The answer is (C) Hypertension", "C"),
        ("Answer: (D)", "D"),
        ("**B**", "B"),
        ("B, because A would cause hypoglycaemia", "B"),
        ("B. A 45-year-old with obesity benefits most from it.", "B"),
        ("A patient with obesity and type 2 diabetes, so the answer is B", "B"),
        ("I would choose B", "B"),
        ("I think the answer is D", "D"),
        ("A is correct", "A"),
        ("D is the best answer.", "D"),
        ("Therefore, C.", "C"),
        ("Hypertension", "C"),
    ],
)
def test_choice_as_models_write_it(said, letter):
    assert extract_answer(wrap(said), "medqa", CHOICES) == letter


@pytest.mark.parametrize(
    "said",
    [
        "A or C",
        "either A or C",
        "Both A and C",
        "A & C",
        "Options B and C",
        "the answer is B or C",
        "B. Metformin ... so the answer is C",  # contradicts itself
        "A patient",
        "Bradycardia",  # B inside a word
        "A-fib",
        "",
    ],
)
def test_choice_hedges_and_letters_inside_words_are_none(said):
    assert extract_answer(wrap(said), "medqa", CHOICES) is None


def test_letters_are_valid_only_for_the_options_given():
    assert extract_answer(wrap("E"), "medqa", CHOICES) is None  # four options
    assert extract_answer(wrap("E. Warfarin"), "medqa", [*CHOICES, "Aspirin"]) == "E"
    assert extract_answer(wrap("E"), "medqa") == "E"  # options unknown: A-E


@pytest.mark.parametrize(
    ("said", "value"),
    [
        ("The answer is 18", "18"),
        ("18 dollars (3 x 6)", "18"),
        ("18, because 3 x 6 = 18", "18"),
        ("18\n3 x 5 = 15 for the first week", "18"),
        ("$1,000.50", "1000.5"),
        ("−3", "-3"),
        ("-$5", "-5"),
        ("answer: -7.5", "-7.5"),
        ("3/4 cup", "0.75"),
        ("25%", "25"),
        ("#### 72", "72"),
        ("3 x 6 = 18", "18"),
        ("5 apples and 3 pears, so the answer is 8", "8"),
        ("Final answer: 1,234", "1234"),
    ],
)
def test_numbers_take_the_stated_or_leading_one(said, value):
    assert extract_answer(wrap(said), "gsm8k") == value


@pytest.mark.parametrize(
    "said",
    [
        "42 or 43",
        "42-43",
        "40 to 45",
        "18, 20",
        "1,2",
        "The answer is 18 or 20",
        "It costs 18 or so, maybe 20",
    ],
)
def test_number_ranges_and_lists_are_none(said):
    assert extract_answer(wrap(said), "gsm8k") is None


def test_one_extractor_for_rewards_and_evaluation(monkeypatch):
    """The correctness reward and the evaluation both read answers through
    answers.extract_answer: replace it and both change their verdict together."""
    from medreason_lib import answers, evaluation
    from medreason_lib.generation import Completion
    from medreason_lib.rewards import CORRECT_REWARD, correctness_reward

    natural = wrap("Yes, early feeding reduces infections; no increase in mortality.")
    item = {"id": "1", "task": "pubmedqa", "gold": "yes", "options": [], "prompt_hash": "h"}
    item |= {"settings_hash": "s", "model": "m"}
    assert evaluation._score(item, Completion(natural), None, None)["correct"]
    assert correctness_reward([natural], answer=["yes"], task=["pubmedqa"]) == [CORRECT_REWARD]

    monkeypatch.setattr(answers, "extract_answer", lambda *args, **kwargs: "no")
    assert evaluation._score(item, Completion(natural), None, None)["extracted"] == "no"
    assert correctness_reward([natural], answer=["no"], task=["pubmedqa"]) == [CORRECT_REWARD]
    assert correctness_reward([natural], answer=["yes"], task=["pubmedqa"]) == [0.0]


def test_huge_answer_blocks_stay_fast():
    import time

    began = time.perf_counter()
    for text, task in [("A, " * 100_000, "medqa"), ("No, " * 100_000, "pubmedqa")]:
        extract_answer(wrap(text), task)
    assert time.perf_counter() - began < 10


# --------------------------------------------------------------------------- real test sets
# Natural answers built from the public test sets (shared reference data, when present):
# each gold label opening, or stated before, the item's own explanation text.


@pytest.fixture(scope="module")
def reference():
    from medreason_lib import paths

    folder = paths.reference_data_dir()
    if folder is None:
        pytest.skip("no shared reference data on this machine")
    return folder


def test_pubmedqa_label_then_the_abstracts_own_conclusion(reference):
    import json

    truth = json.loads((reference / "pubmedqa" / "test_ground_truth.json").read_text())
    abstracts = json.loads((reference / "pubmedqa" / "ori_pqal.json").read_text())
    wrong = []
    for pmid, label in truth.items():
        conclusion = abstracts[pmid]["LONG_ANSWER"]  # often holds "no", "yes" or "may"
        for said in (f"{label.capitalize()}, {conclusion}", f"The answer is {label}. {conclusion}"):
            if extract_answer(wrap(said), "pubmedqa") != label:
                wrong.append(said[:80])
    assert len(truth) == 500 and not wrong, wrong[:5]


def test_gsm8k_whole_reference_solution_reads_its_final_number(reference):
    import json

    rows = [json.loads(line) for line in (reference / "gsm8k" / "test.jsonl").open()]
    wrong = []
    for row in rows:
        gold = normalize_number(row["answer"].split("####")[-1])
        # the solution is full of other numbers ("48/2 = <<48/2=24>>24"); "#### N" states it
        for said in (row["answer"], f"{row['answer'].split('####')[-1].strip()} (see above)"):
            if extract_answer(wrap(said), "gsm8k") != gold:
                wrong.append(said[-60:])
    assert len(rows) == 1319 and not wrong, wrong[:5]


@pytest.mark.parametrize(
    ("task", "sub"),
    [("medqa", "mirage/medqa"), ("medmcqa", "mirage/medmcqa"), ("mmlu_medical", "mirage/mmlu")],
)
def test_choice_letter_with_option_text_and_hedges_on_real_items(reference, task, sub):
    from medreason_lib.answers import LETTERS
    from medreason_lib.data import load_task

    wrong = []
    for row in load_task(task, "test", source=reference / sub, verbose=False):
        options, gold = row["options"], row["answer"]
        text = options[LETTERS.index(gold)]
        other = next(x for x in LETTERS[: len(options)] if x != gold)
        said = [f"{gold}. {text}", f"The answer is ({gold}) {text}", f"{gold}) {text}"]
        if options.count(text) == 1 and len(text.split()) > 1:  # the text alone names it
            said.append(text)
        for s in said:
            if extract_answer(wrap(s), task, options) != gold:
                wrong.append(s[:60])
        for s in (f"{gold} or {other}", f"either {gold} or {other}", f"{gold}/{other}"):
            if extract_answer(wrap(s), task, options) is not None:
                wrong.append(s)
    assert not wrong, wrong[:5]
