"""Reading the final answer out of a completion, and comparing it with the gold one.

One extractor serves the correctness reward, the evaluation, ``ask`` and the training
callbacks, so a model is scored in training exactly as it is measured afterwards. Only the
answer block counts, never the reasoning. Three answer types:

- ``yes_no_maybe`` (PubMedQA): "yes", "Yes.", "**No**", "Answer: maybe" -> the label.
- ``choice`` (MedQA, MedMCQA, MMLU): "B", "(B)", "B)", "B. Metformin", "Option B", "Answer: B",
  "The answer is (B) Metformin", or an option's own text when the options are known -> "B".
- ``number`` (GSM8K): "$60", "60.00", "1,000", "-3", "1/2", "18 dollars (3 x 6)" -> "18".

How an answer is read, in order:

1. **Stated answers**: "the answer is X", "answer: X", "final answer X", "I choose X",
   "..., so X." (at the end). Every statement must name the same label.
2. **The opening**: a block that starts with a label ("Yes, early feeding reduces infections;
   no increase in mortality.") earns it, whatever other labels its explanation mentions.
   "A patient ..." opens with an article, not option A. A stated label that disagrees with
   the opening one voids both.
3. Otherwise a label found alone in the block ("Based on the trial, it is likely yes."),
   an option's exact text, or the one number the block holds.

A genuine hedge earns nothing: two labels joined by "or", "and", "/", "&", "vs"
("yes or no", "either A or C", "42 or 43", "40-45"), or listed side by side with nothing
after the second ("A, B", "maybe yes, maybe no"). A label repeated ("No, no.") is no hedge.
Numbers are never summed up from the text: the stated number, the leading one (unless it
starts a calculation: "12 * 5 = 60" reads the value after "="), else the only one.

**Any string in, a verdict out, in bounded time** (a policy writes anything, and this is
both its reward and its score). Reading never raises on what a model wrote, and a
pathological answer counts as unparseable (None) and is counted by reason in
``pathological_counts()`` (with one warning per reason, ``PathologicalAnswerWarning``):

- ``too_long``: an answer block over ``MAX_ANSWER_CHARS`` characters;
- ``number_out_of_range``: a number beyond 10**``MAX_NUMBER_DIGITS`` (or, but for 0, below
  its inverse): ``1e999999999``, a thousand digits, ``\\boxed{1000!}``;
- ``latex_refused``: LaTeX too long or nested too deep for math-verify, or an expression
  whose value has no bounded cost, a power in an exponent or a factorial (``9^{9^{9^9}}``);
- ``timeout``: a reading that ran past ``SCORING_SECONDS`` (``time_limit``: a SIGALRM timer
  that covers math-verify's parsing and the conversion of its result alike);
- ``error``: any other exception while reading (a library's surprise on odd input);
- ``latex_off_main_thread``: only the main thread has the timer, so elsewhere LaTeX is not
  handed to math-verify (the plain reading, bounded by the length caps, still runs).
"""

from __future__ import annotations

import math
import re
from decimal import Context, Decimal, InvalidOperation

from medreason_lib.scoring.answer_limits import (  # noqa: F401  (re-exported: answers.time_limit, ...)
    MAX_ANSWER_CHARS,
    MAX_LATEX_CHARS,
    MAX_LATEX_NESTING,
    MAX_NUMBER_DIGITS,
    SCORING_SECONDS,
    PathologicalAnswerWarning,
    ScoringTimeout,
    Unparseable,
    math_verify_parse,
    nesting,
    pathological,
    pathological_counts,
    reset_pathological_counts,
    time_limit,
    timed,
    unbounded,
)
from medreason_lib.scoring.template import parse_completion

TASK_TYPES = {
    "pubmedqa": "yes_no_maybe",
    "medqa": "choice",
    "medmcqa": "choice",
    "mmlu_medical": "choice",
    "gsm8k": "number",
}
ANSWER_TYPES = ("yes_no_maybe", "choice", "number")
LETTERS = "ABCDEFGHIJ"
DEFAULT_CHOICES = 5  # letters A-E are valid when a question's options are not known

# Bounds on reading one answer (see the module docstring): beyond them it is unparseable.
_DIVIDE = Context(prec=28)  # "1/3": 28 digits, whatever the thread's decimal context says
_EXACT = Context(prec=4 * MAX_NUMBER_DIGITS)  # an integer of up to MAX_NUMBER_DIGITS digits

# A number as written: 1,000 / 1000.50 / -3 / .5 / 3/4, not the digits inside a word.
_NUM = r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?|(?<![\w.])-?\.\d+"
_YNM = r"(?<!\w)(?i:yes|no|maybe)\b"
_LETTER = r"(?<![\w'])[\(\[]?[A-J](?:[\)\]]|\b)(?![\w'-])"

# "the answer is", "Answer:", "final answer", "the correct option is", "I choose", "####".
_STATED = (
    r"(?:\b(?i:(?:final\s+|correct\s+|best\s+)?(?:answer|option|choice))\b"
    r"\s*(?i:is|would\s+be|should\s+be|will\s+be|:|-|=)?\s*(?i:that\s+)?"
    r"|\b(?i:i\s+(?:would\s+)?(?:choose|pick|select|go\s+with))\s+(?i:option\s+)?"
    r"|####\s*)"
)
# "..., so yes." / "Therefore, C." at the very end of the block.
_CONCLUDED = r"\b(?i:so|therefore|thus|hence)\b,?\s*"
_END = r"(?=\s*[.!]?\s*$)"
_STRONG = r"(?i:or|and|nor|vs|versus)\b\.?|/|&|\+"
_ARTICLE_NEXT = re.compile(r"\s+[a-z]")
_LETTER_STATES = re.compile(r"\s+(?:is|was|would\s+be)\s+(?:the\s+)?(?:correct|right|best|answer)")


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
    """Drop markdown emphasis (``**B**``, ``*B*``), code marks, quotes and heading marks
    around the answer; a lone ``*`` inside stays (it may be a multiplication)."""
    text = text.replace("**", "").replace("__", "").replace("`", "").replace("\u2212", "-")
    text = re.sub(r"^\s*(?:#+|>+)\s+", "", text)  # "## Answer", "> yes" (not ">50 degree")
    return text.strip().strip("*_\"'\u201c\u201d \n\t")


def _norm_words(text: str) -> str:
    """Lower case, every punctuation mark (curly quotes too) a space, spaces collapsed."""
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.lower()).split())


def _verbatim(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def _option_key(text: str) -> str:
    """An option's text for comparison: its words, or its symbols if it has no words."""
    return _norm_words(text) or " ".join(text.split())


def normalize_number(text: str) -> str | None:
    """Canonical string of one number ("1,000" -> "1000", "60.00" -> "60", "-0.50" -> "-0.5",
    "$1,000.50" -> "1000.5", "3/4" -> "0.75", "25%" -> "25").

    Returns None when ``text`` is not one number; commas must group thousands. A number out
    of range (``MAX_NUMBER_DIGITS``) is None too, and counted (``pathological_counts``).
    """
    try:
        return _read_number(text)
    except Unparseable as e:
        return pathological(e.reason)


def _read_number(text: str) -> str | None:
    """``normalize_number``, raising ``Unparseable`` for a number out of range."""
    s = text.strip().replace("\u2212", "-").rstrip(".")
    if "," in s and not re.search(r"^[-$€£]*\d{1,3}(?:,\d{3})+(?:\.\d+)?%?$", s):
        return None  # "1,2" is two numbers (or a decimal comma), not twelve
    s = s.replace(",", "").lstrip("$€£").removesuffix("%").strip()
    s = s[0] + s[1:].lstrip("$€£") if s[:1] == "-" else s  # "-$5"
    frac = re.fullmatch(r"(-?\d+)\s*/\s*(\d+)", s)
    try:
        if frac:
            value = _DIVIDE.divide(Decimal(frac.group(1)), Decimal(frac.group(2)))
        else:
            value = Decimal(s)
    except (InvalidOperation, ZeroDivisionError):
        return None
    if not value.is_finite():
        return None
    if value and abs(value.adjusted()) > MAX_NUMBER_DIGITS:  # 1e999999999 (or its inverse)
        raise Unparseable("number_out_of_range")
    if value == value.to_integral_value(context=_EXACT):
        return str(value.quantize(Decimal(1), context=_EXACT))
    return format(value.normalize(context=_DIVIDE), "f")


class _Reader:
    """How one answer type writes a label, reads it, and tells a hedge from an explanation.

    ``stated_wins``: a stated answer outranks the opening one instead of contradicting it
    (numbers: "5 apples and 3 pears, so the answer is 8"). ``calculation``: a pattern that,
    right after an opening label, says it starts a calculation rather than answering.
    """

    def __init__(
        self, label, normalise, *, strong=_STRONG, prefix="", stated_wins=False, calculation=None
    ):
        self.normalise = normalise  # raw label text -> canonical label (None: not valid)
        self.stated = re.compile(rf"{_STATED}{prefix}(?P<label>{label})")
        self.concluded = re.compile(rf"{_CONCLUDED}{prefix}(?P<label>{label}){_END}")
        self.opening = re.compile(rf"{prefix}(?P<label>{label})")
        self.second = re.compile(
            rf"\s*(?:(?P<strong>{strong})|(?P<weak>[,;]))?\s*(?i:either\s+|both\s+)?"
            rf"{prefix}(?P<label>{label})"
        )
        # what follows a second label that makes a list of them ("A, B", "maybe yes maybe no")
        self.after_second = re.compile(rf"\s*(?:$|[.,;:!?)\]/&]|{strong}|{prefix}{label})")
        self.stated_wins = stated_wins
        self.calculation = calculation

    def is_label_at(self, text: str, m: re.Match) -> bool:
        """False for "A"/"I" used as a word ("A patient ...", "I think ...")."""
        if m.group("label") not in ("A", "I"):
            return True
        end = m.end("label")
        return not _ARTICLE_NEXT.match(text, end) or bool(_LETTER_STATES.match(text, end))

    def hedged(self, text: str, m: re.Match) -> bool:
        """True when the label matched by ``m`` is joined to a different one: "yes or no",
        "A/B", "42 or 43", "maybe yes, maybe no" (not "Yes, no adverse events ...")."""
        first = self.normalise(m.group("label"))
        nxt = self.second.match(text, m.end("label"))
        if nxt and not (nxt.group("strong") or nxt.group("weak")) and _closed(text, m):
            return False  # "B) I, III and IV", "(C) C,A,D,B", "C. A 45-year-old": its text
        while (nxt := self.second.match(text, m.end("label"))) and self.is_label_at(text, nxt):
            if self.normalise(nxt.group("label")) != first:
                if nxt.group("strong"):
                    return True
                return bool(self.after_second.match(text, nxt.end("label")))
            m = nxt  # "No, no." repeats itself; "A, A or C" still hedges
        return False

    def _add(self, found: set, text: str, m: re.Match | None) -> None:
        """Add the label at ``m`` (None when hedged); skip what is no label of this question
        ("E" among four options, "A" as an article)."""
        if m and self.is_label_at(text, m) and self.normalise(m.group("label")) is not None:
            found.add(None if self.hedged(text, m) else self.normalise(m.group("label")))

    def read(self, text: str, fallback) -> str | None:
        """The label of a cleaned answer text (see the module docstring for the order)."""
        found: set[str | None] = set()
        for pattern in (self.stated, self.concluded):
            for m in pattern.finditer(text):
                self._add(found, text, m)
        m = self.opening.match(text)
        if m and self.calculation is not None and self.calculation.match(text, m.end()):
            m = None
        if not (found and self.stated_wins):
            self._add(found, text, m)
        if found:
            return found.pop() if len(found) == 1 else None
        return fallback(text)


def _closed(text: str, m: re.Match) -> bool:
    """True when the label at ``m`` is closed by a bracket or a period/colon ("B)", "C.")."""
    return m.group("label")[-1] in ")]" or text[m.end("label") : m.end("label") + 1] in (".", ":")


def _letter_reader(valid: str) -> _Reader:
    def normalise(raw: str) -> str | None:
        letter = raw.strip("()[]")
        return letter if letter in valid else None

    return _Reader(_LETTER, normalise, prefix=r"(?i:option\s+|choice\s+)?")


_YES_NO = _Reader(_YNM, str.lower)
_NEGATED = re.compile(r"(?i:\bnot|n't)\s*$")
# A leading number that starts a calculation ("12 * 5 = 60", "3 x 6 = 18") is no answer.
_CALCULATION = re.compile(r"\s*(?:[+*/×÷=^]|[x-]\s*[\d(]|\\)")
_NUMBERS = _Reader(
    _NUM,
    normalize_number,
    strong=_STRONG + r"|(?i:to)\b|-|\u2013",
    prefix=r"[$€£]?\s*",
    stated_wins=True,
    calculation=_CALCULATION,
)


def _yes_no_maybe(block: str) -> str | None:
    def alone(text: str) -> str | None:  # the one label the text holds, unless negated
        found = {
            m.group().lower()
            for m in re.finditer(_YNM, text)
            if not _NEGATED.search(text[max(0, m.start() - 12) : m.start()])
        }
        return found.pop() if len(found) == 1 else None

    return _YES_NO.read(_clean(block), alone)


def _choice(block: str, options: list[str] | None) -> str | None:
    valid = LETTERS[: len(options)] if options else LETTERS[:DEFAULT_CHOICES]

    def option_text(text: str) -> str | None:  # the whole answer is one option's text
        if not options:
            return None
        said = re.sub(r"(?i)^(?:the )?(?:correct |final )?answer(?: is|:)?", "", text)
        for key in (_verbatim, _option_key):  # "Mean < Mode" must not match "Mean > Mode"
            matches = [i for i, opt in enumerate(options) if key(said) and key(opt) == key(said)]
            if matches:
                return LETTERS[matches[0]] if len(matches) == 1 else None
        return None

    text = _clean(block)
    # An option written out in full wins over reading its first word: "A Western blot ..."
    # is that option, not option A. A bare letter stays a letter even if an option says "B".
    spelled = option_text(text) if len(_norm_words(text)) > 1 else None
    return spelled or _letter_reader(valid).read(text, option_text)


def _number(block: str) -> str | None:
    text = _clean(block)
    direct = _read_number(text)  # one number out of range: the whole answer is unparseable
    if direct is not None:
        return direct

    def unstated(text: str) -> str | None:
        if "\\" in text:  # LaTeX: \frac{1}{2}, \boxed{60}
            value = _math_verify_number(text)
            if value is not None:
                return value
        if "=" in text:  # "12 * 5 = 60": the value after the last '='
            tail = re.match(rf"\s*[$€£]?\s*({_NUM})", text.rsplit("=", 1)[1])
            if tail and normalize_number(tail.group(1)) is not None:
                return normalize_number(tail.group(1))
        values = {normalize_number(m) for m in set(re.findall(_NUM, text))}
        values.discard(None)
        return values.pop() if len(values) == 1 else None

    return _NUMBERS.read(text, unstated)


def _math_verify_number(text: str) -> str | None:
    """LaTeX answers ("\\frac{1}{2}", "\\boxed{60}") through math-verify; slow, so rare.

    Runs inside ``normalize_answer``'s ``time_limit``, which covers the ``float()`` of the
    parsed expression too (math-verify's own timeout ends with its parsing: a power tower
    parsed in 0.1 s then took minutes to convert). Expressions with no bounded cost are
    refused before that (``answer_limits.unbounded``).
    """
    if not timed():
        return pathological("latex_off_main_thread")
    if len(text) > MAX_LATEX_CHARS or nesting(text) > MAX_LATEX_NESTING:
        raise Unparseable("latex_refused")
    # our time limit replaces math-verify's (a second SIGALRM timer would cancel ours)
    parsed = math_verify_parse()(text if "$" in text else f"${text}$", parsing_timeout=None)
    if not parsed:
        return None
    if unbounded(parsed[0]):
        raise Unparseable("latex_refused")
    try:
        value = float(parsed[0])
    except Exception:  # a symbol, a set, a string that is no number: no number
        return None
    if math.isinf(value):  # 1000!: not one of the numbers its text holds
        raise Unparseable("number_out_of_range")
    return _read_number(str(value))


def normalize_answer(block: str, task: str, options: list[str] | None = None) -> str | None:
    """Normalise one answer text (not a whole completion) for a task; None if unreadable.

    Total and bounded: None for an answer over ``MAX_ANSWER_CHARS``, past ``SCORING_SECONDS``
    or that raised while being read, counted in ``pathological_counts()``.
    """
    kind = answer_type(task)
    if not isinstance(block, str) or not block.strip():
        return None
    return _bounded([block], kind, options)


def extract_answer(completion, task: str, options: list[str] | None = None) -> str | None:
    """The normalised answer of a completion (string or chat messages), or None.

    Reads only the ``<answer>`` blocks (or the gpt-oss final channel / the reply after a
    Qwen3 think block, through ``parse_completion``). Several blocks count only if they all
    normalise to the same answer. Total and bounded like ``normalize_answer``: all its
    blocks are read within one ``SCORING_SECONDS``.
    """
    kind = answer_type(task)
    try:
        blocks = parse_completion(completion).answer_blocks
    except Exception:  # parse_completion reads any text; this is for what is no text at all
        return pathological("error")
    if not blocks:
        return None
    return _bounded(blocks, kind, options)


def _bounded(blocks, kind: str, options) -> str | None:
    """The one answer that every block of ``blocks`` normalises to (else None), read within
    ``SCORING_SECONDS``; a pathological block makes the whole unparseable, counted."""
    if kind == "number" and timed() and any("\\" in b for b in blocks):
        math_verify_parse()  # imported before the clock starts
    try:
        with time_limit(SCORING_SECONDS, ScoringTimeout):
            answers = set()
            for block in dict.fromkeys(blocks):  # each distinct block once
                answers.add(_normalize(block, kind, options))
                if len(answers) > 1:
                    return None
            return answers.pop()
    except ScoringTimeout:
        return pathological("timeout")
    except Unparseable as e:
        return pathological(e.reason)
    except Exception:  # a bug, or a library's surprise on odd input: no answer, counted
        return pathological("error")


def _normalize(block: str, kind: str, options) -> str | None:
    if not block.strip():
        return None
    if len(block) > MAX_ANSWER_CHARS:
        raise Unparseable("too_long")
    if kind == "yes_no_maybe":
        return _yes_no_maybe(block)
    if kind == "choice":
        return _choice(block, options)
    return _number(block)


def is_correct(completion, gold: str, task: str, options: list[str] | None = None) -> bool:
    """True when the completion's extracted answer equals the gold answer (normalised too)."""
    predicted = extract_answer(completion, task, options)
    if predicted is None:
        return False
    return predicted == normalize_answer(str(gold), task, options)
