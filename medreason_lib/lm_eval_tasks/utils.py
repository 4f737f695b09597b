"""Prompts, choices and data of the course's lm-evaluation-harness tasks (the YAML files here).

lm-eval imports this file by path (``!function utils.<name>`` in the YAML). The documents come
from the course's own readers (``medreason_lib.data.benchmarks.load_benchmark``, which reads the
upstream raw files through ``raw_formats``), so there is one reader per format: lm-eval never
downloads anything. Where they come from is the task metadata that
``medreason_lib.evaluation.loglik.task_manager`` passes: ``source`` (``"bundled"``, ``"hub"`` or a
folder
of upstream raw files), ``n`` (a seeded subsample, or None for the whole evaluation set) and
``seed``.

The prompts copy lm-eval's own tasks of the same benchmarks (``pubmedqa``, ``medqa_4options``,
``medmcqa``, ``mmlu_<subject>``, lm_eval 0.4.13), so zero-shot numbers measured here are the
kind that published lm-eval tables report.
"""

from __future__ import annotations

PUBMEDQA_CHOICES = ["yes", "no", "maybe"]
LETTERS = ["A", "B", "C", "D"]


def _load(name: str, source=None, n=None, seed=0, **_metadata) -> dict:
    """``{"test": Dataset}`` of one course benchmark (lm-eval's ``custom_dataset`` hook)."""
    from medreason_lib.data import benchmarks as eval_sets

    if source is None:
        raise ValueError(
            f"lm-eval task for {name}: no 'source' in the task metadata; build the tasks with "
            "medreason_lib.evaluation.loglik.task_manager(source=...)"
        )
    n = None if n in (None, "", "None") else int(n)
    return {"test": eval_sets.load_benchmark(name, n=n, seed=int(seed), source=source)}


def load_pubmedqa(**metadata) -> dict:
    return _load("pubmedqa", **metadata)


def load_medqa(**metadata) -> dict:
    return _load("medqa", **metadata)


def load_medmcqa(**metadata) -> dict:
    return _load("medmcqa", **metadata)


def load_mmlu_medical(**metadata) -> dict:
    return _load("mmlu_medical", **metadata)


# --------------------------------------------------------------------------- prompts


def pubmedqa_text(doc: dict) -> str:
    """lm-eval's ``pubmedqa``: the abstract's sections (one per line), then the question."""
    return f"Abstract: {doc['context']}\nQuestion: {doc['question']}\nAnswer:"


def _options(doc: dict) -> str:
    return "".join(
        f"{letter}. {text}\n" for letter, text in zip(LETTERS, doc["options"], strict=True)
    )


def medqa_text(doc: dict) -> str:
    """lm-eval's ``medqa_4options``."""
    return f"Question: {doc['question']}\n{_options(doc)}Answer:"


def medmcqa_text(doc: dict) -> str:
    """lm-eval's ``medmcqa``."""
    return f"Question: {doc['question']}\nChoices:\n{_options(doc)}Answer:"


def mmlu_text(doc: dict) -> str:
    """lm-eval's ``mmlu_<subject>`` (its description, the subject line, is in the YAML)."""
    return f"{doc['question'].strip()}\n{_options(doc)}Answer:"


def target(doc: dict) -> int:
    """The gold answer as an index into the task's choices."""
    choices = PUBMEDQA_CHOICES if doc["task"] == "pubmedqa" else LETTERS
    if doc["answer"] not in choices:
        raise ValueError(
            f"{doc['task']} item {doc['id']}: answer {doc['answer']!r} not in {choices}"
        )
    return choices.index(doc["answer"])
