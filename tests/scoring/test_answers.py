"""Answer extraction: one extractor for the rewards and the evaluation."""

import pytest

from medreason_lib.scoring.answers import answer_type, extract_answer, is_correct, normalize_number
from medreason_lib.scoring.template import format_completion

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
        # more than one number: the stated or the leading one
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
def test_number_variants_and_the_stated_or_leading_one(said, value):
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
    from medreason_lib import evaluation
    from medreason_lib.evaluation.generation import Completion
    from medreason_lib.scoring import answers
    from medreason_lib.scoring.rewards import CORRECT_REWARD, correctness_reward

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


# --------------------------------------------------------------------------- bounded reading
# Issue 22: any string in, a verdict out, within a time limit; a pathological answer is
# unparseable and counted (answers.pathological_counts). The fuzz, and the power towers that
# hung before (so in a child process): test_extractor_fuzz.py.


@pytest.fixture
def counts():
    """``pathological_counts()`` from zero, and the warnings of this test recorded."""
    from medreason_lib.scoring import answers

    answers.reset_pathological_counts()
    with pytest.warns(answers.PathologicalAnswerWarning):
        yield answers.pathological_counts
    answers.reset_pathological_counts()


@pytest.mark.parametrize(
    "said", ["1e999999999", "-1E+999999999", "1e-999999999", "1e100000", "9" * 500, "$1e999999999"]
)
def test_numbers_out_of_range_are_unparseable_and_counted_not_an_error(said, counts):
    assert normalize_number(said) is None
    assert extract_answer(wrap(said), "gsm8k") is None  # not "1" read out of "1e999999999"
    assert not is_correct(wrap(said), "1", "gsm8k")
    assert counts()["number_out_of_range"] == 3


def test_integers_beyond_28_digits_read_exactly():
    long = "123456789012345678901234567890"  # decimal's default precision is 28 digits
    assert normalize_number(long) == long
    assert normalize_number("9" * 100) == "9" * 100
    assert normalize_number("1" + ",000" * 11) == "1" + "0" * 33
    assert normalize_number("1e30") == "1" + "0" * 30
    assert extract_answer(wrap(f"The answer is {long}."), "gsm8k") == long
    assert normalize_number("1/3") == "0.3333333333333333333333333333"  # as before


def test_answer_blocks_over_the_cap_are_unparseable_and_counted(counts):
    from medreason_lib.scoring.answers import MAX_ANSWER_CHARS, normalize_answer

    padded = "B. " + "Because " * (MAX_ANSWER_CHARS // 8)
    assert normalize_answer(padded, "medqa") is None
    assert normalize_answer(padded[:MAX_ANSWER_CHARS], "medqa") == "B"
    assert counts() == {"too_long": 1}


def test_the_time_limit_covers_math_verify_and_the_conversion(monkeypatch, counts):
    """Were a tower to pass the guards, the time limit would still end its conversion."""
    import time

    from medreason_lib.scoring import answers

    monkeypatch.setattr(answers, "unbounded", lambda expr: False)
    monkeypatch.setattr(answers, "SCORING_SECONDS", 0.5)
    began = time.perf_counter()
    assert extract_answer(wrap(r"\boxed{9^{9^{9^{9}}}}"), "gsm8k") is None
    assert time.perf_counter() - began < 5
    assert counts() == {"timeout": 1}


def test_a_reading_that_raises_is_unparseable_and_counted(monkeypatch, counts):
    from medreason_lib.scoring import answers

    def broken(block):
        raise RecursionError("deep")

    monkeypatch.setattr(answers, "_number", broken)
    assert extract_answer(wrap("42"), "gsm8k") is None
    assert extract_answer(object(), "gsm8k") is None  # no text at all: no answer either
    assert counts()["error"] >= 1


def test_time_limits_nest():
    import signal
    import time

    from medreason_lib.scoring.answers import time_limit

    class Outer(BaseException):
        pass

    before = signal.getsignal(signal.SIGALRM)
    began = time.monotonic()
    with pytest.raises(Outer), time_limit(0.4, Outer):
        with time_limit(0.1):  # ends first, quietly: it gives the outer limit back
            pass
        with time_limit(5.0):  # the outer limit falls due inside: the outer error
            while True:
                time.sleep(0.01)
    assert 0.3 < time.monotonic() - began < 2
    assert signal.getsignal(signal.SIGALRM) == before
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0


def test_off_the_main_thread_latex_is_left_to_the_plain_reading(counts):
    import threading

    from medreason_lib.scoring.answers import normalize_answer

    got = {}

    def run():
        got["boxed"] = normalize_answer(r"\boxed{60}", "gsm8k")
        got["frac"] = normalize_answer(r"\boxed{\frac{1}{2}}", "gsm8k")

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(30)
    assert got == {"boxed": "60", "frac": None}
    assert counts() == {"latex_off_main_thread": 2}


# --------------------------------------------------------------------------- real test sets
# Natural answers built from the public test sets (shared reference data, when present):
# each gold label opening, or stated before, the item's own explanation text.


@pytest.fixture(scope="module")
def reference():
    from medreason_lib.settings import paths

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
    from medreason_lib.data import load_task
    from medreason_lib.scoring.answers import LETTERS

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
