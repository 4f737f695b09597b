"""Reading the final answer out of a completion, and comparing it with the gold one.

One extractor serves both the correctness reward and the evaluation, so a model is scored
in training exactly as it is measured afterwards. Three answer types:

- ``yes_no_maybe`` (PubMedQA): "yes", "Yes.", "YES", "The answer is yes" -> ``"yes"``.
- ``choice`` (MedQA, MedMCQA, MMLU): "B", "(B)", "B.", "B) text", "Answer: B",
  "The answer is B", or an option's own text when the options are known -> ``"B"``.
- ``number`` (GSM8K): "$60", "60.00", "1,000", "Agatha had $60." -> ``"60"``/``"1000"``.

Only the answer block counts, never the reasoning. An answer that hedges ("yes or no",
"A and C", "A/B/C/D", two numbers, or two answer blocks that disagree) extracts to None and
earns nothing: otherwise a policy learns to list every option and collect the reward.
"""

from __future__ import annotations

import re
import string
from decimal import Decimal, InvalidOperation

from .template import parse_completion

TASK_TYPES = {
    "pubmedqa": "yes_no_maybe",
    "medqa": "choice",
    "medmcqa": "choice",
    "mmlu_medical": "choice",
    "gsm8k": "number",
}
ANSWER_TYPES = ("yes_no_maybe", "choice", "number")
LETTERS = "ABCDEFGHIJ"

_YNM = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)
_LEADING_LETTER = re.compile(r"^[\s*_`\"']*[\(\[]?([A-J])(?:[\)\].:]|\s|$)")
_LETTER_HEDGE = re.compile(
    r"^[\s*_`\"']*[\(\[]?[A-J][\)\]]?\s*(?:,|/|&|\band\b|\bor\b)\s*[\(\[]?[A-J]\b"
)
# "Answer: B", "the correct option is (C)"; the letter itself must be upper case, so
# "the answer is a matter of ..." does not read as A.
_NAMED_LETTER = re.compile(
    r"\b(?i:answer|option|choice)\s*(?i:is|would be|:|-)?\s*(?i:option\s*)?"
    r"[\(\[]?([A-J])\b(?![\w'])"
)
_HEDGE_AFTER = re.compile(r"^[\)\]]?\s*(?:,|/|&|\band\b|\bor\b)\s*[\(\[]?[A-J]\b")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_FRACTION = re.compile(r"^\s*(-?\d+)\s*/\s*(\d+)\s*$")


def answer_type(task: str) -> str:
    """The answer type of a task name (or an answer type given as is)."""
    if task in ANSWER_TYPES:
        return task
    try:
        return TASK_TYPES[task]
    except KeyError:
        raise ValueError(
            f"unknown task {task!r}; valid tasks: {sorted(TASK_TYPES)} "
            f"(or an answer type: {list(ANSWER_TYPES)})"
        ) from None


def _clean(text: str) -> str:
    return text.strip().strip("*_` \n\t")


def _norm_words(text: str) -> str:
    table = str.maketrans({c: " " for c in string.punctuation})
    return " ".join(text.lower().translate(table).split())


def _yes_no_maybe(block: str) -> str | None:
    found = {m.lower() for m in _YNM.findall(block)}
    return found.pop() if len(found) == 1 else None


def _choice(block: str, options: list[str] | None) -> str | None:
    n = len(options) if options else 4
    valid = LETTERS[: max(n, 1)]
    text = _clean(block)
    if _LETTER_HEDGE.match(text):
        return None
    m = _LEADING_LETTER.match(text)
    if m and m.group(1) in valid:
        return m.group(1)
    named = _NAMED_LETTER.search(text)
    if named and named.group(1) in valid:
        if _HEDGE_AFTER.match(text[named.end() :]):
            return None
        return named.group(1)
    if options:
        said = _norm_words(re.sub(r"(?i)^(?:the )?(?:correct )?answer is", "", text))
        matches = [i for i, opt in enumerate(options) if said and _norm_words(opt) == said]
        if len(matches) == 1:
            return LETTERS[matches[0]]
    return None


def normalize_number(text: str) -> str | None:
    """Canonical string of one number ("1,000" -> "1000", "60.00" -> "60", "-0.50" -> "-0.5").

    Returns None when ``text`` is not one number.
    """
    s = text.strip().replace(",", "").replace("$", "").rstrip(".")
    frac = _FRACTION.match(s)
    try:
        value = Decimal(frac.group(1)) / Decimal(frac.group(2)) if frac else Decimal(s)
    except (InvalidOperation, ZeroDivisionError):
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


def _number(block: str) -> str | None:
    text = _clean(block)
    direct = normalize_number(text)
    if direct is not None:
        return direct
    if "\\" in text:  # LaTeX: \frac{1}{2}, \boxed{60}
        return _math_verify_number(text)
    if "=" in text:  # "12 * 5 = 60": the value after the last '='
        after = text.rsplit("=", 1)[1].split()
        tail = normalize_number(after[0]) if after else None
        if tail is not None:
            return tail
    values = {normalize_number(m) for m in _NUMBER.findall(text)}
    values.discard(None)
    return values.pop() if len(values) == 1 else None


def _math_verify_number(text: str) -> str | None:
    """LaTeX answers ("\\frac{1}{2}", "\\boxed{60}") through math-verify; slow, so rare."""
    try:
        from math_verify import parse

        parsed = parse(text if "$" in text else f"${text}$")
        return normalize_number(str(float(parsed[0]))) if parsed else None
    except Exception:  # math-verify raises many kinds on odd input; a reward must not
        return None


def normalize_answer(block: str, task: str, options: list[str] | None = None) -> str | None:
    """Normalise one answer text (not a whole completion) for a task; None if unreadable."""
    kind = answer_type(task)
    if not isinstance(block, str) or not block.strip():
        return None
    if kind == "yes_no_maybe":
        return _yes_no_maybe(block)
    if kind == "choice":
        return _choice(block, options)
    return _number(block)


def extract_answer(completion, task: str, options: list[str] | None = None) -> str | None:
    """The normalised answer of a completion (string or chat messages), or None.

    Reads only the ``<answer>`` blocks (or the gpt-oss final channel / the reply after a
    Qwen3 think block, through ``parse_completion``). Several blocks count only if they all
    normalise to the same answer.
    """
    kind = answer_type(task)
    blocks = parse_completion(completion).answer_blocks
    if not blocks:
        return None
    answers = {normalize_answer(b, kind, options) for b in blocks}
    if len(answers) != 1:
        return None
    return answers.pop()


def is_correct(completion, gold: str, task: str, options: list[str] | None = None) -> bool:
    """True when the completion's extracted answer equals the gold answer (normalised too)."""
    predicted = extract_answer(completion, task, options)
    if predicted is None:
        return False
    return predicted == normalize_answer(str(gold), task, options)
