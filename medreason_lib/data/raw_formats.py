"""The upstream formats of the five datasets, read into one plain record shape.

Two kinds of input end up here:

- raw release files, exactly as their authors publish them (PubMedQA ``ori_pqal.json`` and
  ``test_ground_truth.json``, MIRAGE ``test_set.json``, MedQA and MedMCQA JSON Lines, GSM8K
  ``train.jsonl``/``test.jsonl``, MMLU header-less ``<subject>_test.csv``);
- rows of the Hugging Face hub versions (``*_from_hub``), whose schemas differ in small and
  dangerous ways: MedMCQA's ``cop`` counts from 0 on the hub and from 1 in the raw files,
  PubMedQA's keys are lower-case on the hub, MMLU's answer is an integer on the hub.

Everything is converted into a *record*: a dict with ``id, task, question, context, options,
answer, subject`` (``medreason_lib.data`` adds the prompt). A row that cannot be read is a
``DataError`` naming the file, the row and the field, never a silent skip.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path

from medreason_lib.settings import paths
from medreason_lib.settings.errors import UserError

LETTERS = ("A", "B", "C", "D")
PUBMEDQA_LABELS = ("yes", "no", "maybe")
MMLU_SUBJECTS = (
    "anatomy", "clinical_knowledge", "college_biology", "college_medicine", "medical_genetics",
    "professional_medicine",
)  # fmt: skip
# The folder each task's raw files live in (under data/ and in the reference layout).
TASK_FOLDERS = {
    "pubmedqa": "pubmedqa", "medqa": "medqa", "medmcqa": "medmcqa", "gsm8k": "gsm8k",
    "mmlu_medical": "mmlu",
}  # fmt: skip
PUBMEDQA_TEST_PMIDS_FILE = "pubmedqa_test_pmids.json"

_GSM8K_FINAL = re.compile(r"####\s*(\S+)\s*$")
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")


class DataError(UserError, ValueError):
    """A row of a data file (or a hub row) that does not match its documented format."""


def _fail(where: str, field: str, problem: str) -> DataError:
    return DataError(f"{where}: field {field!r}: {problem}")


def _text(obj: dict, field: str, where: str, *, allow_empty: bool = False) -> str:
    """``obj[field]`` as a stripped string; a missing or non-string field is a DataError."""
    if not isinstance(obj, dict) or field not in obj:
        raise _fail(where, field, "missing")
    value = obj[field]
    if not isinstance(value, str):
        raise _fail(where, field, f"expected a string, got {type(value).__name__}")
    if not value.strip() and not allow_empty:
        raise _fail(where, field, "empty")
    return value.strip()


def record(
    task: str,
    id: str,
    question: str,
    answer: str,
    *,
    context: str = "",
    options: list[str] | tuple[str, ...] = (),
    subject: str = "",
) -> dict:
    """One row in the common shape (without the prompt)."""
    return {
        "id": str(id),
        "task": task,
        "question": question,
        "context": context,
        "options": list(options),
        "answer": answer,
        "subject": subject,
    }


# --------------------------------------------------------------------------- PubMedQA


def _pubmedqa(pmid: str, question, contexts, decision, where: str) -> dict:
    if not isinstance(question, str) or not question.strip():
        raise _fail(where, "question", "missing or empty")
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise _fail(where, "contexts", "expected a list of strings")
    label = decision.strip().lower() if isinstance(decision, str) else decision
    if label not in PUBMEDQA_LABELS:
        raise _fail(where, "final_decision", f"{decision!r} is not one of {PUBMEDQA_LABELS}")
    context = "\n".join(c.strip() for c in contexts)
    return record("pubmedqa", pmid, question.strip(), label, context=context)


def pubmedqa_from_raw(pmid: str, item: dict, where: str) -> dict:
    """One item of ``ori_pqal.json``/``test_set.json`` (upper-case keys), keyed by PMID."""
    if not isinstance(item, dict):
        raise _fail(where, "QUESTION", "item is not a JSON object")
    for field in ("QUESTION", "CONTEXTS", "final_decision"):
        if field not in item:
            raise _fail(where, field, "missing")
    return _pubmedqa(pmid, item["QUESTION"], item["CONTEXTS"], item["final_decision"], where)


def pubmedqa_from_hub(row: dict, where: str = "hub qiaojin/PubMedQA") -> dict:
    """One row of ``qiaojin/PubMedQA`` (``pubid``, ``question``, ``context{contexts,..}``)."""
    for field in ("pubid", "question", "context", "final_decision"):
        if field not in row:
            raise _fail(where, field, "missing")
    context = row["context"]
    if not isinstance(context, dict) or "contexts" not in context:
        raise _fail(where, "context", "expected a dict with a 'contexts' list")
    pmid = str(row["pubid"])
    where = f"{where} (PMID {pmid})"
    return _pubmedqa(pmid, row["question"], context["contexts"], row["final_decision"], where)


def split_pubmedqa(records: list[dict], test_pmids: set[str], split: str) -> list[dict]:
    """The official split: test = the 500 test PMIDs, train = every other labelled item."""
    if split == "test":
        return [r for r in records if r["id"] in test_pmids]
    if split in ("train", "train_artificial"):
        return [r for r in records if r["id"] not in test_pmids]
    raise ValueError(f"unknown PubMedQA split {split!r}")


def official_pubmedqa_test_pmids() -> set[str]:
    """The 500 official PubMedQA test PMIDs, shipped as ``data/pubmedqa_test_pmids.json``.

    Looked up in ``paths.data_dir()`` and then in the checkout's own ``data/`` (in case
    ``MEDREASON_DATA`` points at a folder of other raw files).
    """
    candidates = [paths.data_dir(), paths.PACKAGE_DIR.parent / "data"]
    for folder in candidates:
        file = folder / PUBMEDQA_TEST_PMIDS_FILE
        if file.is_file():
            pmids = json.loads(file.read_text(encoding="utf-8"))
            return {str(p) for p in pmids}
    raise FileNotFoundError(
        f"{PUBMEDQA_TEST_PMIDS_FILE} not found in {[str(c) for c in candidates]}; it lists the "
        "official PubMedQA test PMIDs and ships with the course in data/"
    )


def _read_json(file: Path):
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{file}: line {e.lineno}: invalid JSON ({e.msg})") from None


def read_pubmedqa(file: Path, split: str) -> tuple[list[dict], str]:
    """Read a PubMedQA raw JSON object (PMID -> item) and keep ``split``.

    The test PMIDs come from ``test_ground_truth.json`` beside the file when there is one
    (its labels must agree with the file's), else from the shipped official list. Returns the
    records and a note saying where the split came from.
    """
    data = _read_json(file)
    if not isinstance(data, dict):
        raise DataError(f"{file}: expected a JSON object keyed by PMID")
    records = [pubmedqa_from_raw(str(k), v, f"{file}: PMID {k}") for k, v in data.items()]
    truth_file = file.parent / "test_ground_truth.json"
    if truth_file.is_file() and split != "train_artificial":
        truth = _read_json(truth_file)
        if not isinstance(truth, dict):
            raise DataError(f"{truth_file}: expected a JSON object PMID -> label")
        by_id = {r["id"]: r for r in records}
        for pmid, label in truth.items():
            where = f"{truth_file}: PMID {pmid}"
            if label not in PUBMEDQA_LABELS:
                raise _fail(where, "label", f"{label!r} is not one of {PUBMEDQA_LABELS}")
            if split == "test" and pmid not in by_id:
                raise _fail(where, "PMID", f"listed as a test item but absent from {file.name}")
            if pmid in by_id and by_id[pmid]["answer"] != label:
                raise _fail(
                    where, "label", f"{label!r} but {file.name} says {by_id[pmid]['answer']!r}"
                )
        test_pmids, note = set(truth), f"test PMIDs from {truth_file.name}"
    else:
        test_pmids, note = official_pubmedqa_test_pmids(), "official test PMID list"
    kept = split_pubmedqa(records, test_pmids, split)
    if not kept:
        raise DataError(
            f"{file}: none of its {len(records)} items belong to the PubMedQA {split!r} split "
            f"({note})"
        )
    return kept, note


# --------------------------------------------------------------------------- MedQA


def _letter(value, where: str, field: str) -> str:
    letter = value.strip().upper() if isinstance(value, str) else value
    if letter not in LETTERS:
        raise _fail(where, field, f"{value!r} is not one of A, B, C, D")
    return letter


def medqa_record(obj: dict, id: str, where: str) -> dict:
    """One MedQA item (raw JSON Lines and ``GBaker/MedQA-USMLE-4-options`` share a schema).

    The gold is ``answer_idx``. The redundant ``answer`` text is not compared with the option
    it names: upstream has a few option texts with stray characters (jind11/MedQA issue 5).
    """
    question = _text(obj, "question", where)
    options = obj.get("options")
    if not isinstance(options, dict):
        raise _fail(where, "options", "missing or not an object with keys A..D")
    if sorted(options) != list(LETTERS):
        raise _fail(where, "options", f"keys {sorted(options)}, expected exactly A, B, C, D")
    texts = [_text(options, k, f"{where} options") for k in LETTERS]
    if "answer_idx" not in obj:
        raise _fail(where, "answer_idx", "missing")
    letter = _letter(obj["answer_idx"], where, "answer_idx")
    subject = obj.get("meta_info") if isinstance(obj.get("meta_info"), str) else ""
    return record("medqa", id, question, letter, options=texts, subject=subject)


# --------------------------------------------------------------------------- MedMCQA


def _medmcqa(obj: dict, cop_base: int, where: str) -> dict:
    question = _text(obj, "question", where)
    texts = [_text(obj, f"op{c}", where, allow_empty=True) for c in "abcd"]
    if "cop" not in obj:
        raise _fail(where, "cop", "missing")
    cop = obj["cop"]
    if isinstance(cop, bool) or not isinstance(cop, int) or not 0 <= cop - cop_base < 4:
        hint = "raw files count from 1" if cop_base == 1 else "the hub counts from 0"
        raise _fail(where, "cop", f"{cop!r} is outside {cop_base}..{cop_base + 3} ({hint})")
    subject = obj.get("subject_name") if isinstance(obj.get("subject_name"), str) else ""
    id = _text(obj, "id", where)
    return record("medmcqa", id, question, LETTERS[cop - cop_base], options=texts, subject=subject)


def medmcqa_from_raw(obj: dict, where: str = "MedMCQA raw row") -> dict:
    """One line of MedMCQA's raw ``train.json``/``dev.json``: ``cop`` is 1-based there."""
    return _medmcqa(obj, 1, where)


def medmcqa_from_hub(row: dict, where: str = "hub openlifescienceai/medmcqa") -> dict:
    """One row of ``openlifescienceai/medmcqa``: ``cop`` is 0-based (a ClassLabel) there."""
    return _medmcqa(row, 0, where)


# --------------------------------------------------------------------------- GSM8K


def canonical_number(text: str) -> str:
    """``"1,000"`` -> ``"1000"``, ``"2.50"`` -> ``"2.5"``, ``"-3"`` -> ``"-3"``.

    The same canonical form as ``answers.normalize_number``, so gold and prediction compare
    as strings. Raises ``ValueError`` when ``text`` is not one plain number.
    """
    s = text.strip()
    if not _NUMBER.fullmatch(s):
        raise ValueError(f"{text!r} is not a number")
    try:
        value = Decimal(s.replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


def gsm8k_record(obj: dict, id: str, where: str) -> dict:
    """One GSM8K item (raw JSON Lines and ``openai/gsm8k`` share a schema)."""
    question = _text(obj, "question", where)
    solution = _text(obj, "answer", where)
    match = _GSM8K_FINAL.search(solution)
    if match is None:
        raise _fail(where, "answer", "does not end with '#### <number>'")
    try:
        answer = canonical_number(match.group(1))
    except ValueError as e:
        raise _fail(where, "answer", f"final answer after '####': {e}") from None
    return record("gsm8k", id, question, answer)


# --------------------------------------------------------------------------- MMLU


def mmlu_record(cells: list[str], subject: str, id: str, where: str) -> dict:
    """One MMLU CSV row: ``question, A, B, C, D, answer_letter``."""
    if len(cells) != 6:
        raise _fail(where, "columns", f"{len(cells)} columns, expected 6 (question, A-D, answer)")
    if not cells[0].strip():
        raise _fail(where, "question", "empty")
    letter = _letter(cells[5], where, "answer")
    options = [c.strip() for c in cells[1:5]]
    return record("mmlu_medical", id, cells[0].strip(), letter, options=options, subject=subject)


def mmlu_from_hub(row: dict, subject: str, id: str, where: str = "hub cais/mmlu") -> dict:
    """One row of ``cais/mmlu`` (``question``, ``choices`` list of 4, ``answer`` int 0-3)."""
    choices = row.get("choices")
    if not isinstance(choices, list) or len(choices) != 4:
        raise _fail(where, "choices", "missing or not a list of 4 options")
    answer = row.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 4:
        raise _fail(where, "answer", f"{answer!r} is not an option index 0..3")
    question = _text(row, "question", where)
    cells = [question, *[str(c) for c in choices], LETTERS[answer]]
    return mmlu_record(cells, subject, id, where)


# --------------------------------------------------------------------------- files


def json_lines(
    file: Path, *, unit: str = "line", blank_ok: bool = True
) -> Iterator[tuple[int, dict]]:
    """(number, object) for every line of a JSON Lines file; a line that is not a JSON object
    is a DataError naming the file and the ``unit`` ("line", "row") and its number. A blank
    line is skipped, or with ``blank_ok=False`` an error."""
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            where = f"{file}: {unit} {number}"
            if not line.strip():
                if blank_ok:
                    continue
                raise DataError(f"{where}: empty line")
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield number, obj


def read_medqa(file: Path, split: str) -> list[dict]:
    return [
        medqa_record(obj, f"medqa-{split}-{i:05d}", f"{file}: line {line}")
        for i, (line, obj) in enumerate(json_lines(file))
    ]


def read_medmcqa(file: Path) -> list[dict]:
    return [medmcqa_from_raw(obj, f"{file}: line {line}") for line, obj in json_lines(file)]


def read_gsm8k(file: Path, split: str) -> list[dict]:
    return [
        gsm8k_record(obj, f"gsm8k-{split}-{i:04d}", f"{file}: line {line}")
        for i, (line, obj) in enumerate(json_lines(file))
    ]


def mmlu_subject(file: Path) -> str:
    """``anatomy_test.csv`` -> ``anatomy``."""
    return file.stem.removesuffix("_test")


def read_mmlu(file: Path) -> list[dict]:
    subject = mmlu_subject(file)
    with file.open(encoding="utf-8-sig", newline="") as handle:
        try:
            rows = list(csv.reader(handle))
        except csv.Error as e:
            raise DataError(f"{file}: invalid CSV ({e})") from None
    return [
        mmlu_record(cells, subject, f"mmlu-{subject}-{i:03d}", f"{file}: row {i + 1}")
        for i, cells in enumerate(rows)
        if cells  # csv.reader yields [] for a blank line
    ]


# --------------------------------------------------------------------------- discovery

# Upstream file names, in order of preference, per task and split.
RAW_FILE_NAMES = {
    "pubmedqa": {
        "train": ("ori_pqal.json",),
        "test": ("ori_pqal.json", "test_set.json"),
        "train_artificial": ("ori_pqaa.json",),
    },
    "medqa": {
        "train": ("phrases_no_exclude_train.jsonl", "train.jsonl"),
        "test": ("phrases_no_exclude_test.jsonl", "test.jsonl"),
    },
    "medmcqa": {"train": ("train.json",), "test": ("dev.json",)},
    "gsm8k": {"train": ("train.jsonl",), "test": ("test.jsonl",)},
    "mmlu_medical": {"test": tuple(f"{s}_test.csv" for s in MMLU_SUBJECTS)},
}


def find_raw_files(task: str, split: str, path: Path) -> list[Path]:
    """The raw file(s) to read for ``task``/``split`` from a file or folder.

    A file is read as the requested split. A folder is searched for the upstream file names,
    directly, then in ``<folder>/<task folder>`` and ``<folder>/mirage/<task folder>`` (so the
    root of the reference layout and ``data/`` both work). MMLU needs all six subject files.
    """
    if not path.exists():
        raise FileNotFoundError(f"{task}/{split}: no such file or folder: {path}")
    if path.is_file():
        return [path]
    names = RAW_FILE_NAMES[task][split]
    sub = TASK_FOLDERS[task]
    for folder in (path, path / sub, path / "mirage" / sub):
        found = [folder / n for n in names if (folder / n).is_file()]
        if not found:
            continue
        if task == "mmlu_medical":
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise FileNotFoundError(f"mmlu_medical: {folder} lacks {', '.join(missing)}")
            return found
        return found[:1]
    raise FileNotFoundError(
        f"{task}/{split}: none of {list(names)} found in {path} (nor in {sub}/ or mirage/{sub}/ "
        "under it)"
    )


def read_raw(task: str, split: str, path: Path) -> tuple[list[dict], str, list[str]]:
    """Records of ``task``/``split`` from raw upstream files.

    Also returns where they came from (a file, or the MMLU folder) and notes about how they
    were read, for the one line ``load_task`` prints.
    """
    files = find_raw_files(task, split, path)
    file = files[0]
    notes = ["raw upstream format"]
    if task == "pubmedqa":
        records, note = read_pubmedqa(file, split)
        return records, str(file), [*notes, note]
    if task == "medqa":
        return read_medqa(file, split), str(file), notes
    if task == "medmcqa":
        return read_medmcqa(file), str(file), notes
    if task == "gsm8k":
        return read_gsm8k(file, split), str(file), notes
    records = [r for f in files for r in read_mmlu(f)]
    if len(files) == 1:
        return records, str(file), notes
    return records, str(file.parent), [f"{len(files)} subject files", *notes]
