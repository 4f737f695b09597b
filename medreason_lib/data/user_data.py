"""Your own questions in the course's shape: ``load_user_data("my_questions.csv")``.

A CSV (or TSV) file with a header line, or a JSON Lines file (one JSON object per line),
becomes a ``datasets.Dataset`` with exactly the columns of ``data.load_task`` (``data.FEATURES``:
``id, task, question, context, options, answer, subject, prompt``), so the rewards, the
trainer (``training.train(profile, dataset=rows)``) and the evaluation read it unchanged.

The columns (CSV header names or JSONL keys; case and surrounding spaces do not matter):

=============  ========  ======================================================================
column         needed    what it holds
=============  ========  ======================================================================
question       always    the question, not empty
answer         always    the gold answer, in one of the forms below
task_type      always*   ``yes_no_maybe``, ``multiple_choice`` (or ``choice``), ``number``, or
                         a course task: ``pubmedqa`` (needs a context), ``medqa``, ``medmcqa``,
                         ``mmlu_medical`` (multiple choice), ``gsm8k`` (number)
context        no        the passage a yes/no/maybe question is about (those questions only)
options        choice    the four options: a JSON list ``["a", "b", "c", "d"]`` (in JSONL also
                         a real list, or an object with keys A-D), or ``a | b | c | d``
A, B, C, D     choice    instead of ``options``: one column per option (or option_a..option_d)
id             no        a unique id; default ``<file name>-<line number>``
subject        no        free text, kept in the ``subject`` column
=============  ========  ======================================================================

\\* unless ``load_user_data(path, task_type=...)`` gives one type for every row. Any other
column is ignored, and the loader prints which. Multiple choice means exactly four options,
A-D, as in every multiple-choice task of the course (its prompt, rewards and label balance).

Answers: yes/no/maybe in any case (``"Yes"``, ``"MAYBE."``); for multiple choice the letter
(``"B"``, ``"b"``, ``"(B)"``, ``"B."``) or the exact text of one option (case and spacing
ignored); numbers as written (``"1,000"``, ``"2.5"``, ``"-3"``, ``"$60"``, ``"3/4"``, a JSON
number). They are stored as ``answers.py`` normalises them (``"yes"``, ``"B"``, ``"1000"``),
and each stored answer is checked to read back as itself through the course's extractor.

Row numbers are the file's line numbers as an editor shows them (the CSV header is line 1; a
CSV record with a line break inside a quoted field is named by its first line). Blank lines
are not rows. A file that is not UTF-8, lacks a required column or holds a bad row raises
``UserDataError``: every problem found, each naming the file, the line and the field; nothing
is skipped and nothing is loaded. Yes/no/maybe questions without a context get the PubMedQA
prompt without its ``Context:`` part; everything else uses the course's own prompts.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from pathlib import Path

from datasets import Dataset

from medreason_lib import data
from medreason_lib.data.user_files import LETTERS, OPTION_COLUMNS, UserDataError, read_records
from medreason_lib.scoring import template
from medreason_lib.scoring.answers import normalize_answer, normalize_number

__all__ = ["TASK_TYPES", "UserDataError", "load_user_data", "user_turn"]

# task_type as written -> (the row's ``task``, its answer type)
TASK_TYPES = {
    "yes_no_maybe": ("yes_no_maybe", "yes_no_maybe"),
    "multiple_choice": ("choice", "choice"),
    "choice": ("choice", "choice"),
    "number": ("number", "number"),
    "pubmedqa": ("pubmedqa", "yes_no_maybe"),
    "medqa": ("medqa", "choice"),
    "medmcqa": ("medmcqa", "choice"),
    "mmlu_medical": ("mmlu_medical", "choice"),
    "gsm8k": ("gsm8k", "number"),
}

_LETTER = re.compile(r"[(\[]?\s*([A-Za-z])\s*[)\].:]?")


# --------------------------------------------------------------------------- one row


def _text(row: dict, key: str) -> str:
    """A text field: JSON numbers become text; None, a missing key and spaces are ''."""
    value = row.get(key)
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected text, got a JSON {type(value).__name__}: {value!r}")
    return value.replace("\r\n", "\n").strip()


def _options(row: dict) -> tuple[list[str], str]:
    """The row's options (``[]`` when it gives none) and the field they came from."""
    given = row.get("options")
    texts = {letter: _text(row, name) for name, letter in OPTION_COLUMNS.items() if name in row}
    by_letter = {letter: text for letter, text in texts.items() if text}
    if given in (None, "") or (isinstance(given, str) and not given.strip()):
        if not by_letter:
            return [], "options"
        missing = [c for c in LETTERS if c not in by_letter]
        if missing:
            raise ValueError(f"options in columns A-D, but {', '.join(missing)} empty or missing")
        return [by_letter[c] for c in LETTERS], "A-D"
    if by_letter:
        raise ValueError("give the options either in 'options' or in columns A-D, not both")
    if isinstance(given, str):
        text = given.strip()
        if text[:1] in "[{":
            try:
                given = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"looks like JSON but is not valid: {e.msg}") from None
        elif "|" in text:
            given = [part.strip() for part in text.split("|")]
        else:
            raise ValueError('four options as a JSON list ["..", ...] or separated by "|"')
    if isinstance(given, dict):
        if sorted(k.strip().upper() for k in given) != list(LETTERS):
            raise ValueError(f"an options object needs exactly the keys A-D, got {sorted(given)}")
        given = [given[k] for k in sorted(given, key=lambda k: k.strip().upper())]
    if not isinstance(given, list) or not all(isinstance(o, str) for o in given):
        raise ValueError("options must be a list of texts")
    return [o.strip() for o in given], "options"


def _option_key(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def _gold(answer: str, kind: str, options: list[str]) -> str:
    """The normalised gold answer, or a ValueError saying why ``answer`` is not one."""
    if kind == "yes_no_maybe":
        label = answer.lower().rstrip(".").strip()
        if label not in ("yes", "no", "maybe"):
            raise ValueError(f"{answer!r} is not yes, no or maybe")
        return label
    if kind == "number":
        value = normalize_number(answer)
        if value is None:
            comma = re.fullmatch(r"-?\d+,\d{1,2}", answer)
            hint = f" (a decimal comma? write {answer.replace(',', '.')})" if comma else ""
            raise ValueError(f"{answer!r} is not a number{hint}")
        return value
    letter = _LETTER.fullmatch(answer)
    if letter and letter.group(1).upper() in LETTERS:
        return letter.group(1).upper()
    matches = [LETTERS[i] for i, o in enumerate(options) if _option_key(o) == _option_key(answer)]
    if len(matches) == 1:
        return matches[0]
    if letter:
        raise ValueError(f"{answer!r} is not among the options A-D")
    if answer.isdigit():
        raise ValueError(f"{answer!r}: write the letter A-D (is 1 the first option or the second?)")
    raise ValueError(f"{answer!r} is neither a letter A-D nor the text of one of the options")


def _record(
    row: dict, line: int, path: Path, default_type: str | None, problems: list
) -> dict | None:
    """One row as a record (``data.records_to_dataset``'s shape), or None after adding its
    problems (every field is checked, so one pass finds them all)."""
    found = len(problems)

    def field(key: str, empty: str | None = None) -> str:
        """The text of ``key``; a problem (``empty``, or the wrong JSON type) when it has none."""
        try:
            text = _text(row, key)
        except ValueError as e:
            problems.append((line, key, str(e)))
            return ""
        if not text and empty:
            problems.append((line, key, empty))
        return text

    question, answer = field("question", "empty"), field("answer", "missing (empty)")
    context, subject = field("context"), field("subject")
    row_id = field("id") or f"{path.stem}-{line}"
    written = field("task_type") or (default_type or "")
    key = written.lower().replace("-", "_").replace(" ", "_")
    if key not in TASK_TYPES:
        close = difflib.get_close_matches(key, TASK_TYPES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        what = f"unknown task type {written!r}{hint}" if written else "missing (empty)"
        problems.append((line, "task_type", f"{what}; valid: {', '.join(TASK_TYPES)}"))
        return None
    task, kind = TASK_TYPES[key]
    try:
        options, options_field = _options(row)
    except ValueError as e:
        problems.append((line, "options", str(e)))
        return None
    if kind == "choice":
        if not options:
            problems.append((line, "options", "a multiple-choice question needs options A-D"))
        elif len(options) != 4 or not all(options):
            problems.append(
                (line, options_field, f"exactly 4 non-empty options (A-D), got {options}")
            )
        elif len({_option_key(o) for o in options}) < 4:
            problems.append((line, options_field, f"two options have the same text: {options}"))
    elif options:
        problems.append(
            (line, options_field, f"a {kind} question takes no options (is task_type right?)")
        )
    if context and kind != "yes_no_maybe":
        problems.append(
            (
                line,
                "context",
                "only yes/no/maybe questions are shown a context; put it into the question",
            )
        )
    if task == "pubmedqa" and not context:
        problems.append((line, "context", "a pubmedqa question needs its abstract"))
    gold = None
    if answer and len(problems) == found:
        try:
            gold = _gold(answer, kind, options)
        except ValueError as e:
            problems.append((line, "answer", str(e)))
        else:
            read = normalize_answer(gold, kind, options or None)
            if read != gold:
                problems.append(
                    (line, "answer", f"the course's extractor reads {gold!r} as {read!r}")
                )
    if len(problems) > found:
        return None
    return {
        "id": row_id,
        "task": task,
        "question": question,
        "context": context,
        "options": options,
        "answer": gold,
        "subject": subject,
    }


def user_turn(record: dict) -> str:
    """The user turn of a record: the course's own prompt for its task (``data.user_prompt``)."""
    task = record["task"]
    if task in data.TASKS:
        return data.user_prompt(record)
    if task == "choice":
        return data.choice_user_prompt(record["question"], record["options"])
    if task == "number":
        return data.gsm8k_user_prompt(record["question"])
    if record["context"]:
        return data.pubmedqa_user_prompt(record["question"], record["context"])
    return f"Question: {record['question']}\n\nAnswer with yes, no or maybe."


# --------------------------------------------------------------------------- the loader


def load_user_data(
    path: str | Path,
    *,
    task_type: str | None = None,
    file_format: str | None = None,
    verbose: bool = True,
) -> Dataset:
    """A user's CSV/TSV or JSON Lines file as course rows (see the module docstring).

    ``task_type``: the type of every row whose ``task_type`` field is empty or absent.
    ``file_format``: ``"csv"`` or ``"jsonl"`` (default: from the file's extension).
    Raises ``FileNotFoundError`` for a missing file and ``UserDataError`` (a ``DataError``,
    so a ``ValueError``) listing every problem. Prints what it read unless ``verbose=False``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no data file {path}" + (" (it is a folder)" if path.is_dir() else "")
        )
    rows, ignored, problems = read_records(path, file_format, task_type)
    records, seen_ids, seen = [], {}, {}
    for line, row in rows:
        record = _record(row, line, path, task_type, problems)
        if record is None:
            continue
        if record["id"] in seen_ids:
            problems.append(
                (line, "id", f"{record['id']!r} is also the id of line {seen_ids[record['id']]}")
            )
        seen_ids.setdefault(record["id"], line)
        key = (
            record["task"],
            _option_key(record["question"]),
            record["context"],
            tuple(record["options"]),
        )
        if key in seen and seen[key][1] != record["answer"]:
            problems.append(
                (line, "answer", f"line {seen[key][0]} asks the same with answer {seen[key][1]!r}")
            )
        seen.setdefault(key, (line, record["answer"]))
        records.append(record)
    if not problems and not records:
        problems.append((None, None, "no rows (only a header, or empty)"))
    if problems:
        raise UserDataError(path, problems)
    rows_out = [
        {
            **r,
            "prompt": [
                {"role": "system", "content": template.SYSTEM_PROMPT},
                {"role": "user", "content": user_turn(r)},
            ],
        }
        for r in records
    ]
    dataset = Dataset.from_list(rows_out, features=data.FEATURES)
    if verbose:
        counts = ", ".join(f"{t} {n}" for t, n in Counter(dataset["task"]).items())
        repeats = len(records) - len(seen)
        print(
            f"{path.name}: {len(dataset)} rows ({counts})"
            + (f"; {repeats} repeat an earlier question" if repeats else "")
            + (f"; ignored columns: {', '.join(ignored)}" if ignored else "")
        )
    return dataset
