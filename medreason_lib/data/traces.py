"""Reasoning traces (a question, a chain of thought, a response) as SFT rows in the template.

The published medical reasoners start with supervised fine-tuning on distilled reasoning
traces before any RL. Two public trace sets, and how their rows are read (``SCHEMAS``):

- ``medical-o1``: ``FreedomIntelligence/medical-o1-reasoning-SFT`` (config ``en``, file
  ``medical_o1_sft.json``, split ``train``): ``Question``, ``Complex_CoT``, ``Response``, all
  three required. The chain of thought is the reasoning; the answer is read from the
  response (``short_answer``).
- ``reasonmed``: ``lingshu-medical-mllm/ReasonMed`` (file ``ReasonMed.json``, split
  ``train``): Alpaca-style ``instruction`` (the question, options included, after a
  "Please answer the following multiple-choice question:" preamble, which is removed),
  ``input`` (optional extra text, appended to the question when not empty) and ``output``
  (the chain of thought and its conclusion in one text). The whole output is the
  reasoning; the answer is read from it (``short_answer``). This schema was taken from
  public code that reads the dataset (its card describes the three files ReasonMed,
  CoTMed and ResponseMed but lists no fields): an assumption, checked at load time.

Every row is checked when it is loaded: a missing field, an empty one or one that is not
text is a ``TraceSchemaError`` naming the file, the row and the field; nothing is dropped.

**The answer.** ``short_answer`` reads the last "the answer is X" (X an option letter, or
yes/no/maybe) or "Answer: ..." line of the response. When a response states no short answer
(free-text questions: "What advice is given to ...?"), the whole response becomes the
answer text, and the row says so (``answer_source``: ``"stated"`` or ``"response"``);
``answer_sources`` counts both, so a learner sees how many rows teach a short answer.

``sft_rows`` maps traces onto TRL's conversational prompt/completion layout, per chat
family, exactly as ``sft.warmstart_dataset`` does: the system prompt of the template and
the question as the user turn; the completion is ``<reasoning>...</reasoning><answer>...
</answer>`` (qwen2, qwen3 with thinking off), or for gpt-oss the reasoning in the
``thinking`` (analysis channel) and the answer as ``content`` (final channel).
``decontaminate_traces`` removes traces that are, or overlap, an evaluation item.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from medreason_lib.data.decontamination import Contamination, decontaminate_against
from medreason_lib.scoring.template import SYSTEM_PROMPT, format_completion
from medreason_lib.settings import paths
from medreason_lib.settings.progress import say_once

TASK = "reasoning_traces"  # the ``task`` of every trace row (decontamination counts by task)
FAMILIES = ("qwen2", "qwen3", "gpt-oss")


@dataclass(frozen=True)
class TraceSchema:
    """Where a trace set lives and which upstream fields hold what."""

    name: str
    hub_id: str
    config: str | None
    file_name: str  # the upstream file (a folder given as source is searched for it)
    question: str
    response: str
    reasoning: str | None = None  # None: the response holds the reasoning too (ReasonMed)
    extra: str | None = None  # optional text appended to the question (ReasonMed's input)
    preamble: str = ""  # a regex removed from the start of the question

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f for f in (self.question, self.reasoning, self.response) if f)


SCHEMAS = {
    "medical-o1": TraceSchema(
        name="medical-o1",
        hub_id="FreedomIntelligence/medical-o1-reasoning-SFT",
        config="en",
        file_name="medical_o1_sft.json",
        question="Question",
        reasoning="Complex_CoT",
        response="Response",
    ),
    "reasonmed": TraceSchema(
        name="reasonmed",
        hub_id="lingshu-medical-mllm/ReasonMed",
        config=None,
        file_name="ReasonMed.json",
        question="instruction",
        response="output",
        extra="input",
        preamble=r"^\s*please answer the following multiple-choice question:?\s*",
    ),
}
BUNDLED = "reasoning_traces/medical_o1_sft.json"  # under paths.data_dir(); medical-o1 schema


class TraceSchemaError(ValueError):
    """A trace row that does not have the fields its schema needs."""


# "the answer is B" / "answer is: (C)" (the letter upper-case only, so "the answer is a
# combination" is no letter), "the answer is yes", and an "Answer: ..." line.
_STATED = re.compile(
    r"(?i:answer\s+is)\s*:?\s*\**\s*\(?(?:(?P<letter>[A-J])\b(?![-'])|(?P<word>(?i:yes|no|maybe))\b)"
)
# An "Answer: ..." at the start of a line or after a sentence ("Yes. It helps. Answer: yes"),
# up to the end of the line.
_ANSWER_LINE = re.compile(
    r"(?im)(?:^|(?<=[.!?])[ \t]+)\**(?:final\s+)?answer\**[ \t]*:"
    r"[ \t]*\**(?P<text>[^\n]*?)\**[ \t]*$"
)


def short_answer(response: str) -> str | None:
    """The short answer a response states, or None: the last "answer is X" (X a capital
    option letter, or yes/no/maybe, lower-cased) or "Answer: ..." (at the start of a line or
    after a sentence's full stop, read to the end of the line) in the text (a line
    whose text is a letter or yes/no/maybe gives that, else the line's text, its final full
    stop removed)."""
    found: list[tuple[int, str]] = []
    for m in _STATED.finditer(response):
        found.append((m.start(), m.group("letter") or m.group("word").lower()))
    for m in _ANSWER_LINE.finditer(response):
        text = m.group("text").strip().rstrip(".").strip()
        if not text:
            continue
        inner = _STATED.match(f"answer is {text}")
        whole = inner is not None and inner.end() >= len(f"answer is {text}")
        found.append(
            (m.start(), (inner.group("letter") or inner.group("word").lower()) if whole else text)
        )
    return max(found)[1] if found else None


def _text(row: dict, field: str, where: str, i: int, *, required: bool) -> str:
    if field not in row:
        if not required:
            return ""
        raise TraceSchemaError(f"{where}: row {i}: field {field!r} is missing (has {sorted(row)})")
    value = row[field]
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise TraceSchemaError(
            f"{where}: row {i}: field {field!r} must be text, got {type(value).__name__}"
        )
    if required and not value.strip():
        raise TraceSchemaError(f"{where}: row {i}: field {field!r} is empty")
    return value.strip()


def _looks_like(row: dict) -> str | None:
    """The schema whose fields a row has, when it is not the one asked for."""
    for name, schema in SCHEMAS.items():
        if all(f in row for f in schema.required):
            return name
    return None


def trace_record(row, schema: TraceSchema, i: int, where: str) -> dict:
    """One upstream row -> the course's trace record (checked; see the module docstring)."""
    if not isinstance(row, dict):
        raise TraceSchemaError(f"{where}: row {i}: expected an object, got {type(row).__name__}")
    missing = [f for f in schema.required if f not in row]
    other = _looks_like(row) if missing else None
    if other and other != schema.name:
        raise TraceSchemaError(
            f"{where}: row {i}: field {missing[0]!r} is missing; the row has the fields of "
            f"schema {other!r}: pass schema={other!r}"
        )
    question = _text(row, schema.question, where, i, required=True)
    if schema.preamble:
        question = re.sub(schema.preamble, "", question, flags=re.IGNORECASE).strip()
        if not question:
            raise TraceSchemaError(
                f"{where}: row {i}: field {schema.question!r} is only a preamble"
            )
    if schema.extra:
        extra = _text(row, schema.extra, where, i, required=False)
        question = f"{question}\n{extra}" if extra else question
    response = _text(row, schema.response, where, i, required=True)
    reasoning = (
        _text(row, schema.reasoning, where, i, required=True) if schema.reasoning else response
    )
    stated = short_answer(response)
    return {
        "id": f"{schema.name}-{i:06d}",
        "task": TASK,
        "source": schema.name,
        "question": question,
        "context": "",
        "reasoning": reasoning,
        "answer": stated if stated is not None else response,
        "answer_source": "stated" if stated is not None else "response",
    }


def _json_lines(path: Path, text: str) -> list:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise TraceSchemaError(f"{path}: line {n}: not JSON ({e.msg})") from e
    return rows


def _read_file(path: Path) -> list:
    """The rows of a ``.jsonl`` file, or of a ``.json`` file holding a list (a ``.json`` file
    that is JSON Lines, one object per line, is read as such)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return _json_lines(path, text)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and text.lstrip().startswith("{"):  # JSON Lines named .json
            return _json_lines(path, text)
        raise TraceSchemaError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(rows, list):
        raise TraceSchemaError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
    return rows


def _hub_rows(schema: TraceSchema) -> tuple[list, str]:
    import datasets

    try:
        rows = datasets.load_dataset(schema.hub_id, schema.config, split="train")
    except Exception as e:  # anything from the network, the cache or the hub
        raise RuntimeError(
            f"could not load {schema.hub_id} (config {schema.config!r}, split 'train') from "
            f"the Hugging Face hub: {type(e).__name__}: {e}. Offline (HF_HUB_OFFLINE, set by "
            "the tiny profile) only the local cache is used; pass source='bundled' or the path "
            f"of a downloaded {schema.file_name}."
        ) from e
    return rows, f"hub {schema.hub_id} [train]"


def load_traces(
    source: str | Path = "bundled",
    schema: str = "medical-o1",
    *,
    n: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Trace records (columns ``id, task, source, question, context, reasoning, answer,
    answer_source``) from ``source``: ``"bundled"`` (the course's sample, medical-o1 schema),
    ``"hub"`` (``datasets.load_dataset`` of the schema's hub id) or a path (a ``.json`` list
    or ``.jsonl`` file, or a folder holding the schema's upstream file). Every row is
    checked (``TraceSchemaError``). ``n``: a seeded subsample after checking. Prints where
    the rows came from and how many state a short answer."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown trace schema {schema!r}; valid: {', '.join(SCHEMAS)}")
    spec = SCHEMAS[schema]
    if source == "hub":
        rows, where = _hub_rows(spec)
    else:
        path = paths.data_dir() / BUNDLED if source == "bundled" else Path(source)
        if source == "bundled" and schema != "medical-o1":
            raise ValueError("the bundled traces are in the medical-o1 schema")
        path = path / spec.file_name if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"no trace file {path} (schema {schema!r})")
        rows, where = _read_file(path), str(path)
    records = [trace_record(row, spec, i, where) for i, row in enumerate(rows)]
    if not records:
        raise TraceSchemaError(f"{where}: no rows")
    traces = Dataset.from_list(records)
    if n is not None:
        if not 1 <= n <= len(traces):
            raise ValueError(f"n={n}: {where} holds {len(traces)} traces")
        traces = traces.shuffle(seed=seed).select(range(n))
    counts = answer_sources(traces)
    say_once(
        f"{len(traces)} traces from {where} ({schema} schema): {counts['stated']} state a short "
        f"answer, {counts['response']} keep the whole response as the answer",
        again=f"{len(traces)} traces: as above",
    )
    return traces


def answer_sources(traces: Dataset) -> Counter:
    """How many traces stated a short answer (``"stated"``) and how many keep the whole
    response as the answer (``"response"``)."""
    counts = Counter(traces["answer_source"])
    return Counter({"stated": counts["stated"], "response": counts["response"]})


def decontaminate_traces(
    traces: Dataset,
    evals: dict[str, Dataset],
    *,
    test_ids: dict[str, set[str]] | None = None,
    verbose: bool = True,
) -> tuple[Dataset, Contamination]:
    """The traces minus every one that is, or overlaps, an item of an evaluation set
    (``decontaminate.decontaminate_against``: a shared 13-word run of question + context, or
    a fuzzy question similarity of 90 or more). The ``Contamination`` says how many went
    and why (``by_reason``, ``collisions``)."""
    return decontaminate_against(traces, evals, test_ids=test_ids, verbose=verbose)


def _message(family: str, reasoning: str, answer: str) -> dict:
    if family == "gpt-oss":
        return {"role": "assistant", "thinking": reasoning, "content": answer}
    return {"role": "assistant", "content": format_completion(reasoning, answer)}


def sft_rows(
    traces: Dataset, family: str = "qwen2", chat_template_kwargs: dict | None = None
) -> Dataset:
    """Prompt/completion rows for TRL's ``SFTTrainer`` (see the module docstring), one per
    trace, with the trace's ``id``; ``chat_template_kwargs`` become a column of that name."""
    if family not in FAMILIES:
        raise ValueError(f"unknown chat family {family!r}; valid: {', '.join(FAMILIES)}")
    rows = []
    for t in traces:
        row = {
            "id": t["id"],
            "prompt": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": t["question"]},
            ],
            "completion": [_message(family, t["reasoning"], t["answer"])],
        }
        if chat_template_kwargs:
            row["chat_template_kwargs"] = dict(chat_template_kwargs)
        rows.append(row)
    return Dataset.from_list(rows)
