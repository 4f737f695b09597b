"""Multiple choice -> open-ended questions with a reference answer, as HuatuoGPT-o1 trains on.

HuatuoGPT-o1 (Chen et al. 2024, arXiv:2412.18925) rewrote 40k MedQA/MedMCQA items into open
questions for its verifier reward: its ``construct_verifiable_medical_problems.py`` first
asks GPT-4o to drop items that are "Too Simple", have an "Ambiguous Answer" (asking for the
incorrect option, or several correct ones) or are "Not Reformulatable", then to rewrite the
rest as an "Open-ended Verifiable Question" with a concise "Ground-True Answer". The result is
the hub data set a GPU learner would train on: ``FreedomIntelligence/medical-o1-verifiable-
problem`` (``HUB_DATASET``; columns ``Open-ended Verifiable Question`` and ``Ground-True
Answer``, one ``train`` split of about 40k rows).

``convert(rows)`` does the same without a language model, by rules: it drops the options,
keeps the gold option's text as the reference answer, and keeps only items whose answer stands
alone. The rule, applied in this order (the first that fails names the reason, ``RULES``):

- ``asks_for_exception``: EXCEPT or an upper-case NOT anywhere, or a negation (not, n't,
  least, false, incorrect, untrue, wrong, never, except) in the question's last sentence:
  the answer is the odd option out, and without the options there is no odd one.
- ``asks_for_statement``: "true", "correct", "statement(s)" or "false" in the last
  sentence: the answer is whichever statement was listed, not a fact the question names.
- ``refers_to_a_list``: in the last sentence, "all/each/none/both/any of the following",
  "the following:" or "the following statement(s)", "match", "arrange" or "choose".
- ``refers_to_options``: after the one rewrite the converter makes (``rewrite_question``:
  "Which of the following is/are/best/most/would ..." -> "What is/...", "due to which of
  the following?" -> "due to what?", "which of the following drugs is" -> "which drug is";
  "which one/among the following" and "which of these" alike), any remaining "of/among/from/
  in the following", "the above" at the end, "the/these/given/listed ... option(s)/choice(s)"
  (not "the choice of"), or "the following" ending the question.
- ``needs_a_figure``: an image, picture, photograph, figure, diagram or graph, or something
  "shown"/"given below" that is not the lab values on the lines that follow.
- ``question_too_short``: fewer than 4 words ("Resin teeth:"): no question without options.
- ``answer_names_options``: the gold option is "All/None/Both (of the above)", "Both A and
  B", "A and C", "I, II and III", or says "the above".
- ``answer_yes_no``: the gold option is yes, no, true or false.
- ``answer_numeric``: the gold option is a number with at most a unit ("20", "67%", "4 cm",
  "90 minutes"): it came from a calculation or a table whose precision the options fixed.
- ``answer_too_short``: fewer than 2 letters ("X", "↓ ↑ ↓").
- ``answer_too_long``: more than 12 words: a statement, not a short answer a judge can match.
- ``duplicate_option``: another option has the same text as the gold one.

On the reference test sets (``tests/evaluation/test_open_ended.py`` pins the counts per rule) the
rules
keep 1,042 of MedQA's 1,273 test items, 2,863 of MedMCQA's 4,183 dev items and 782 of the
1,089 MMLU medical items.

What rules cannot do is what GPT-4o did for HuatuoGPT-o1: judge whether the question alone
determines the answer ("In a free gingival graft, what happens to the epithelium?" keeps an
answer of "Degenerates" that a doctor might phrase ten ways). The verifier reward is there to
accept those phrasings; a kept item can still be one no answer without the options matches.

A converted row keeps the course's columns so the training pipeline reads it as before
(``task`` stays the source task, ``answer`` the gold letter, which the label shares read), with
``options`` emptied, the open ``prompt`` (``open_prompt``) and a ``reference`` column: the gold
option's text, which ``verifier.verifier_reward`` judges against. Train converted rows with
the verifier in place of ``rewards.correctness_reward`` (``verifier.open_ended_rewards``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from medreason_lib.scoring.template import SYSTEM_PROMPT

__all__ = [
    "CHOICE_TASKS",
    "HUB_DATASET",
    "RULES",
    "ConversionReport",
    "convert",
    "convert_row",
    "open_prompt",
    "rejection",
    "rewrite_question",
]

HUB_DATASET = "FreedomIntelligence/medical-o1-verifiable-problem"
CHOICE_TASKS = ("medqa", "medmcqa", "mmlu_medical")
MIN_QUESTION_WORDS = 4
MIN_ANSWER_LETTERS = 2
MAX_ANSWER_WORDS = 12

RULES = {
    "asks_for_exception": "asks for the option that is not, or the least",
    "asks_for_statement": "asks which statement is true or correct",
    "refers_to_a_list": "asks about a list (all of the following, match, arrange)",
    "refers_to_options": "still refers to the options after the rewrite",
    "needs_a_figure": "refers to an image, figure or something shown",
    "question_too_short": f"fewer than {MIN_QUESTION_WORDS} words",
    "answer_names_options": "the gold option names other options (all/none of the above)",
    "answer_yes_no": "the gold option is yes/no/true/false",
    "answer_numeric": "the gold option is a number, with at most a unit",
    "answer_too_short": f"fewer than {MIN_ANSWER_LETTERS} letters in the gold option",
    "answer_too_long": f"more than {MAX_ANSWER_WORDS} words in the gold option",
    "duplicate_option": "another option has the gold option's text",
}

_AUX = (
    r"is|are|was|were|would|will|could|can|should|may|might|must|has|have|had|does|do|did|"
    r"best|most|least|likely|also|then|now|first"
)
_FOLLOWING = r"([Ww])hich (?:one )?(?:of|among) (?:the following|these)"
_WHICH_AUX = re.compile(rf"\b{_FOLLOWING}\b(?=\s+(?:{_AUX})\b)")
_WHICH_END = re.compile(rf"\b{_FOLLOWING}(?=\s*[?:.]?[\"'”]?\s*$)")
_WHICH_NOUN = re.compile(rf"\b{_FOLLOWING}\s+([A-Za-z-]+)(?=\s+(is|was|has|does)\b)?")

_NEGATION = re.compile(r"(?i)\b(?:not|least|false|incorrect|untrue|wrong|never|except)\b|n't\b")
_SHOUTED = re.compile(r"\bEXCEPT\b|\bNOT\b|(?i:\bexcept\b)")
_STATEMENT = re.compile(r"(?i)\b(?:true|correct|statements?|false)\b")
_LIST = re.compile(
    r"(?i)\b(?:all|each|none|both|any) of the following\b|\bthe following\s*[:\-–]|"
    r"\b(?:match|arrange|choose)\b|\bthe following statements?\b"
)
_OPTIONS = re.compile(
    r"(?i)\b(?:of|among|from|in) (?:the following|the above)\b|\bthe above\s*[?:.]?\s*$|"
    r"\b(?:the|these|given|above|following|listed|each|which) (?:options?|choices?)\b(?!\s+of\b)|"
    r"\bthe following\s*[?.]?\s*$"
)
_FIGURE = re.compile(
    r"(?i)\b(?:images?|pictures?|photo(?:graph)?s?|figures?|diagrams?|graphs?|illustrated)\b"
)
_SHOWN = re.compile(
    r"(?i)\b(?:(?:is|are|as|was|were) shown|shown (?:below|above|here|in)|"
    r"given below)\b"
)
_TABLE_FOLLOWS = re.compile(r"\n[^\n]*\d")  # lab values on the lines after "shown below:"
_PICK = r"(?:i{1,3}|iv|[a-e1-5])"
_ANSWER_OPTIONS = re.compile(
    r"(?i)^\s*(?:all|none|both|neither)\s*(?:of\s+)?(?:the\s+)?(?:above|these|them)?\s*\.?\s*$|"
    r"\b(?:the|of) above\b|\babove (?:all|both)\b|"
    r"^\s*(?:both|either|neither)\s+[a-e1-5]\s+(?:and|or|nor|&)\s+[a-e1-5]\b|"
    rf"^\s*{_PICK}(?:\s*(?:,\s*and|,|&|and|\+|/)\s*{_PICK})+\s*\.?\s*$"
)
_NUMERIC = re.compile(r"^[~<>≥≤±-]?\s*[\d.,/:]+\s*(?:%|°\w?|[A-Za-zµ/]{1,8})?\s*\.?$")
_YES_NO = {"yes", "no", "true", "false"}
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")


def rewrite_question(question: str) -> str:
    """The question with "which of the following" put as an open question: "Which of the
    following is ..." -> "What is ...", "... due to which of the following?" -> "... due to
    what?", "Which of the following drugs ..." -> "Which drugs ..."; "which of these" and
    "which one/among the following" alike. Everything else is left as it is."""
    lines = (" ".join(line.split()) for line in str(question).splitlines())
    text = "\n".join(line for line in lines if line)
    text = _WHICH_AUX.sub(lambda m: m.group(1) + "hat", text)
    text = _WHICH_END.sub(lambda m: m.group(1) + "hat", text)
    return _WHICH_NOUN.sub(_which_noun, text)


def _singular(noun: str) -> str:
    """A plural noun made singular, for "which of the following drugs is" -> "which drug
    is"; nouns it cannot be sure of are left as they are."""
    low = noun.lower()
    if low.endswith("ies") and len(low) > 4:
        return noun[:-3] + "y"
    if low.endswith("ses") and not low.endswith("sses"):  # viruses, diseases: unsure
        return noun
    if low.endswith(("sses", "ches", "shes", "xes")):
        return noun[:-2]
    if low.endswith("s") and not low.endswith(("ss", "us", "is", "as")):
        return noun[:-1]
    return noun


def _which_noun(m: re.Match) -> str:
    noun = _singular(m.group(2)) if m.group(3) else m.group(2)
    return f"{m.group(1)}hich {noun}"


def last_sentence(question: str) -> str:
    """The question's last sentence (with the one before it when the last is under four
    words: "... What is the diagnosis? Explain." has its question in the one before)."""
    parts = [p for p in _SENTENCES.split(str(question).strip()) if p.strip()]
    if not parts:
        return ""
    if len(parts) > 1 and len(parts[-1].split()) < 4:
        return " ".join(parts[-2:])
    return parts[-1]


def _needs_a_figure(question: str) -> bool:
    """An image named, or something "shown" that is not the lab values on the lines below."""
    if _FIGURE.search(question):
        return True
    return any(not _TABLE_FOLLOWS.search(question, m.end()) for m in _SHOWN.finditer(question))


def _letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", str(text).lower()).split())


def rejection(question: str, options: list[str], gold: str) -> str | None:
    """The first rule of ``RULES`` that the item fails, or None when it converts.

    ``question`` is the multiple-choice stem, ``options`` the option texts, ``gold`` the
    gold option's text."""
    asked = last_sentence(question)
    if _SHOUTED.search(question) or _NEGATION.search(asked):
        return "asks_for_exception"
    if _STATEMENT.search(asked):
        return "asks_for_statement"
    rewritten = rewrite_question(question)
    if _LIST.search(last_sentence(rewritten)):
        return "refers_to_a_list"
    if _OPTIONS.search(rewritten):
        return "refers_to_options"
    if _needs_a_figure(question):
        return "needs_a_figure"
    if len(rewritten.split()) < MIN_QUESTION_WORDS:
        return "question_too_short"
    answer = " ".join(str(gold).split())
    if _ANSWER_OPTIONS.search(answer):
        return "answer_names_options"
    if _norm(answer) in _YES_NO:
        return "answer_yes_no"
    if _NUMERIC.match(answer):
        return "answer_numeric"
    if _letters(answer) < MIN_ANSWER_LETTERS:
        return "answer_too_short"
    if len(answer.split()) > MAX_ANSWER_WORDS:
        return "answer_too_long"
    if sum(_norm(o) == _norm(answer) for o in options) > 1:
        return "duplicate_option"
    return None


def open_prompt(question: str) -> list[dict[str, str]]:
    """The chat prompt of an open question: the course's system prompt (the template) and a
    user turn that asks for a short answer, with no options."""
    user = (
        f"Question: {question}\n\n"
        "Answer with the specific term, name or short phrase that answers the question."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def convert_row(row: dict) -> tuple[dict | None, str | None]:
    """``(converted row, None)`` or ``(None, reason)`` for one multiple-choice row of the
    course's shape (``data.load_task``: question, options, answer letter)."""
    task = row.get("task")
    if task not in CHOICE_TASKS:
        raise ValueError(f"convert: row {row.get('id')!r} is {task!r}, not multiple choice")
    options = list(row["options"])
    index = ord(str(row["answer"]).strip().upper()[:1] or "?") - ord("A")
    if not 0 <= index < len(options):
        raise ValueError(
            f"convert: row {row.get('id')!r} has answer {row['answer']!r} "
            f"for {len(options)} options"
        )
    gold = " ".join(str(options[index]).split())
    reason = rejection(row["question"], options, gold)
    if reason is not None:
        return None, reason
    question = rewrite_question(row["question"])
    converted = {**row, "question": question, "options": [], "reference": gold}
    converted["prompt"] = open_prompt(question)
    return converted, None


@dataclass
class ConversionReport:
    """What ``convert`` kept and dropped: counts per task and per rule, and examples."""

    kept: Counter = field(default_factory=Counter)  # task -> rows kept
    dropped: Counter = field(default_factory=Counter)  # (task, rule) -> rows dropped
    examples: dict = field(default_factory=dict)  # rule -> (id, question) of the first dropped

    @property
    def total(self) -> int:
        return sum(self.kept.values()) + sum(self.dropped.values())

    def by_rule(self) -> Counter:
        """Rows dropped per rule, all tasks together."""
        out: Counter = Counter()
        for (_, rule), n in self.dropped.items():
            out[rule] += n
        return out

    def to_frame(self):
        """One row per task: items, kept, share kept, and the rows each rule dropped."""
        import pandas as pd

        tasks = sorted(set(self.kept) | {t for t, _ in self.dropped})
        rows = []
        for task in tasks:
            dropped = {rule: self.dropped.get((task, rule), 0) for rule in RULES}
            n = self.kept.get(task, 0) + sum(dropped.values())
            kept = self.kept.get(task, 0)
            rows.append(
                {
                    "task": task,
                    "items": n,
                    "kept": kept,
                    "kept_share": kept / n if n else 0.0,
                    **dropped,
                }
            )
        return pd.DataFrame(rows).set_index("task")

    def __str__(self) -> str:
        kept = sum(self.kept.values())
        lines = [f"open-ended conversion: kept {kept} of {self.total} items"]
        for rule, n in self.by_rule().most_common():
            lines.append(f"  dropped {n:5d}  {rule}: {RULES[rule]}")
        return "\n".join(lines)


def convert(rows, *, verbose: bool = True):
    """``(kept rows, ConversionReport)`` for multiple-choice rows (a ``datasets.Dataset`` or
    a list of dicts from ``data.load_task``). A Dataset comes back as a Dataset (with the
    ``reference`` column), a list as a list. Prints the report unless ``verbose=False``."""
    report = ConversionReport()
    kept = []
    for row in rows:
        row = dict(row)
        converted, reason = convert_row(row)
        if converted is None:
            report.dropped[(row["task"], reason)] += 1
            report.examples.setdefault(reason, (row.get("id"), row["question"]))
        else:
            report.kept[row["task"]] += 1
            kept.append(converted)
    if verbose:
        print(report)
    if isinstance(rows, list):
        return kept, report
    from datasets import Dataset, Value

    features = rows.features.copy()
    features["reference"] = Value("string")
    return Dataset.from_list(kept, features=features), report
