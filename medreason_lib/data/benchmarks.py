"""The course's benchmarks: their evaluation sets, what the gold answers alone score, and
what published models scored on them.

- ``load_benchmark(name, n, seed)`` / ``load_benchmarks``: the official evaluation set of
  each benchmark, or a seeded subsample; ``profile_benchmarks(profile)`` is the sample every
  course evaluation on that profile uses (``eval_size`` items per benchmark).
- ``gold_baselines``: chance and always-the-commonest-answer, the scores that cost nothing.
- ``PUBLISHED``: reference numbers as their authors published them, with how they were
  scored (``method``: the course's ``generate`` or ``loglik``, or None when unstated), how
  they decoded (``decoding``: greedy, sampled runs, or not stated) and which of the course's
  numbers they can stand beside; ``published_comparable(method)``. ``AUTHORS_DECODING``: how
  HuatuoGPT-o1's and m1's own released evaluators decode, read from their code.
"""

from __future__ import annotations

from collections import Counter

from medreason_lib import data
from medreason_lib.scoring import answers
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import Profile

# The official evaluation sets (``data.load_task(name, "test")``) and their sizes.
BENCHMARKS = {"pubmedqa": 500, "medqa": 1273, "medmcqa": 4183, "mmlu_medical": 1089, "gsm8k": 1319}


_NOTED: set[str] = set()  # benchmarks whose size note this process has printed


def _note_sizes(sizes: dict[str, int]) -> None:
    """One line for every benchmark read from fewer items than its official evaluation set
    (the bundled samples, a partial download), each benchmark once per process."""
    new = {name: n for name, n in sizes.items() if n != BENCHMARKS[name] and name not in _NOTED}
    if new:
        _NOTED.update(new)
        parts = ", ".join(f"{name} {n} of {BENCHMARKS[name]}" for name, n in new.items())
        print(f"  note: items in this source / in the official evaluation set: {parts}")


def _load(name: str, n: int | None, seed: int, source) -> tuple:
    """``(dataset, size of the source, whether n was more than the source holds)``."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    full = data.load_task(name, "test", source=source, seed=seed)
    if n is None:
        return full, len(full), False
    short = n > len(full)
    return full.shuffle(seed=seed).select(range(min(n, len(full)))), len(full), short


def load_benchmark(name: str, n: int | None = None, seed: int = 0, source=None):
    """The evaluation set of a benchmark, or a seeded subsample of ``n`` items.

    PubMedQA: the official 500 test PMIDs; MedQA: test (1273); MedMCQA: validation (4183,
    data's ``"test"``); MMLU: the six medical subjects (1089); GSM8K: test (1319). The
    subsample is ``shuffle(seed).select(range(n))``, like ``data.load_task``. Asking for more
    than the source holds (the bundled samples have 16-24 items) uses them all and says so.
    A source smaller than the official set is noted once per process.
    """
    dataset, size, short = _load(name, n, seed, source)
    _note_sizes({name: size})
    if short:
        print(f"  note: asked for {n} {name} items, the source has {size}: using all")
    return dataset


def load_benchmarks(names=None, n: int | None = None, seed: int = 0, source=None):
    """Several benchmarks (default: all five) concatenated into one dataset; the notes on
    their sizes are one line each, not one per benchmark."""
    from datasets import concatenate_datasets

    loaded = {name: _load(name, n, seed, source) for name in names or BENCHMARKS}
    _note_sizes({name: size for name, (_, size, _) in loaded.items()})
    short = {name: size for name, (_, size, was_short) in loaded.items() if was_short}
    if short:
        held = ", ".join(f"{name} {size}" for name, size in short.items())
        print(f"  note: asked for {n} items per benchmark; fewer in the source, all used: {held}")
    return concatenate_datasets([dataset for dataset, _, _ in loaded.values()])


_SOURCE_SHOWN: set[tuple[str, str]] = set()


def evaluation_source(profile: Profile):
    """Where ``profile``'s evaluation items come from: its ``eval_source``, else its
    ``data_source``. ``eval_source="reference"`` is the shared folder of real test sets
    (``paths.reference_data_dir``) where this machine has it, else ``data_source``; which
    one is said once per process."""
    if not profile.eval_source:
        return profile.data_source
    if profile.eval_source != "reference":
        return profile.eval_source
    folder = paths.reference_data_dir()
    source = str(folder) if folder else profile.data_source
    if (profile.name, source) not in _SOURCE_SHOWN:
        _SOURCE_SHOWN.add((profile.name, source))
        print(
            f"profile {profile.name!r} evaluates on the real test sets in {folder}"
            if folder
            else f"profile {profile.name!r}: no shared/reference-data here "
            f"(MEDREASON_REFERENCE_DATA), so it evaluates on data_source {source!r}"
        )
    return source


def profile_benchmarks(profile: Profile):
    """The items every course evaluation on ``profile`` uses: ``eval_size`` per benchmark,
    drawn with ``profile.seed`` from ``evaluation_source(profile)``. Before and after
    training are measured on exactly these."""
    source = evaluation_source(profile)
    return load_benchmarks(n=profile.eval_size, seed=profile.seed, source=source)


def answer_labels(task: str) -> tuple[str, ...] | None:
    """The closed answer set of a task (yes/no/maybe, A-D), or None for numbers."""
    kind = answers.answer_type(task)
    return {"yes_no_maybe": ("yes", "no", "maybe"), "choice": tuple("ABCD")}.get(kind)


def gold_baselines(dataset) -> dict[str, dict]:
    """Per task: ``chance`` (1/labels for closed answer sets, None for numbers) and
    ``majority`` (the share of the commonest gold answer, what always saying it scores)."""
    golds: dict[str, Counter] = {}
    for row in dataset:
        golds.setdefault(row["task"], Counter())[row["answer"]] += 1
    result = {}
    for task, counts in golds.items():
        labels = answer_labels(task)
        label, top = counts.most_common(1)[0]
        result[task] = {
            "n": sum(counts.values()),
            "chance": 1 / len(labels) if labels else None,
            "majority": top / sum(counts.values()),
            "majority_label": label,
        }
    return result


# --------------------------------------------------------------------------- published

_GENERATIVE = "generative (reasoning, then an answer); prompt and extractor not published with it"
_PARTLY = (
    "partly, with `eval --method generate` only: generative like ours, but another prompt and "
    "extractor, full test sets; never with log-likelihood numbers"
)
_LOGLIK = "log-likelihood of the answer letter (lm-evaluation-harness), no generation"
_LOGLIK_COMPARABLE = (
    "no with generative numbers (`eval --method generate`): it measures which letter the model "
    "finds likeliest, not what it answers; yes, as far as its source says, with `eval --method "
    "loglik --full` (lm-eval's zero-shot scoring on the full test set; the card gives no more "
    "settings than that)"
)

_UNSTATED = (
    "not stated with the number (greedy or sampled, how many runs): set it beside both our "
    "greedy accuracy and our avg@k (`eval --samples k`); their gap is how much the unstated "
    "decoding can matter"
)
_NO_DECODING = "none: log-likelihood scoring generates nothing, so there is no decoding to match"

# How two reference systems decode in their own released evaluation code (the numbers in
# PUBLISHED come from another model card, which does not say how it decoded).
AUTHORS_DECODING = {
    "HuatuoGPT-o1": {
        "protocol": "one sampled run: temperature 0.5, top_p 0.9, no seed (an avg@1)",
        "source": "FreedomIntelligence/HuatuoGPT-o1 evaluation/eval.py (call_model), commit "
        "2c8d7fc; the paper (arXiv 2412.18925, sec. 4.1) averages 5 runs on GPQA only, for its "
        "few questions",
    },
    "m1": {
        "protocol": "greedy: temperature 0.0, seed 42, one run",
        "source": "UCSC-VLAA/m1 exp/eval_commands.sh and src/eval/configs/base.yaml, commit "
        "c65dfc6",
    },
}


def _authors(name: str) -> str:
    return f"; {name}'s own evaluator: {AUTHORS_DECODING[name]['protocol']}"


# How a number was scored, by the names of the course's own `eval --method` choices:
# "generate" (the course's harness, notebook 03) or "loglik" (lm-evaluation-harness,
# medreason_lib.evaluation.loglik). None: the source does not say.
SCORING_METHODS = ("generate", "loglik")

# Accuracy in percent, as published (see shared/field-notes.md, "How published medical
# results were scored"). ``method`` is the course method that scores the same way (or None);
# ``comparable`` says which of the course's numbers a published one can stand beside.
PUBLISHED: list[dict] = [
    {
        "model": "Qwen2.5-7B-Instruct",
        "medqa": 61.5,
        "medmcqa": 56.6,
        "pubmedqa": 71.3,
        "source": "II-Medical-7B-Preview model card (comparison table)",
        "scoring": _GENERATIVE,
        "method": "generate",
        "comparable": _PARTLY,
        "decoding": _UNSTATED,
    },
    {
        "model": "II-Medical-7B-Preview (SFT + DAPO on Qwen2.5-7B-Instruct)",
        "medqa": 85.2,
        "medmcqa": 69.4,
        "pubmedqa": 77.9,
        "source": "II-Medical-7B-Preview model card",
        "scoring": _GENERATIVE,
        "method": "generate",
        "comparable": _PARTLY,
        "decoding": _UNSTATED,
    },
    {
        "model": "HuatuoGPT-o1-8B",
        "medqa": 74.8,
        "source": "as published (II-Medical-7B-Preview model card)",
        "scoring": "generative; the HuatuoGPT-o1 authors' own scorer takes the better of "
        "first-match and last-match accuracy and falls back to the most similar option",
        "method": "generate",
        "comparable": "no: a best-of-two extractor that never leaves an answer unparsed",
        "decoding": _UNSTATED + _authors("HuatuoGPT-o1"),
    },
    {
        "model": "m1 ('M1' in the source's table; the variant is not named there)",
        "medqa": 75.8,
        "medmcqa": 62.5,
        "pubmedqa": 75.8,
        "source": "II-Medical-7B-Preview model card (comparison table)",
        "scoring": _GENERATIVE,
        "method": "generate",
        "comparable": _PARTLY,
        "decoding": _UNSTATED + _authors("m1"),
    },
    {
        "model": "MedGemma-4B-it",
        "medqa": 64.4,
        "source": "MedGemma model card",
        "scoring": _GENERATIVE,
        "method": "generate",
        "comparable": _PARTLY,
        "decoding": _UNSTATED,
    },
    {
        "model": "MedGemma-27B-text-it",
        "medqa": 87.7,
        "source": "MedGemma model card",
        "scoring": _GENERATIVE,
        "method": "generate",
        "comparable": _PARTLY,
        "decoding": _UNSTATED,
    },
    {
        "model": "Qwen3-8B (base)",
        "medqa": 43.9,
        "source": "Q3X1 model card",
        "scoring": _LOGLIK,
        "method": "loglik",
        "comparable": _LOGLIK_COMPARABLE,
        "decoding": _NO_DECODING,
    },
    {
        "model": "Q3X1 (QLoRA-tuned Qwen3-8B)",
        "medqa": 66.3,
        "source": "Q3X1 model card",
        "scoring": _LOGLIK,
        "method": "loglik",
        "comparable": _LOGLIK_COMPARABLE,
        "decoding": _NO_DECODING,
    },
    {
        "model": "gpt-oss-20b",
        "medqa": 62.0,
        "source": "Reasoning-Medical-20B model card",
        "scoring": "not stated with the number",
        "method": None,
        "comparable": "unknown: the source does not say how it was scored",
        "decoding": _UNSTATED,
    },
    {
        "model": "Reasoning-Medical-20B (fine-tuned gpt-oss-20b)",
        "medqa": 67.0,
        "source": "Reasoning-Medical-20B model card",
        "scoring": "not stated with the number",
        "method": None,
        "comparable": "unknown: the source does not say how it was scored",
        "decoding": _UNSTATED,
    },
]


def published_comparable(method: str) -> list[dict]:
    """The published rows scored the way the course's ``eval --method <method>`` scores
    (``"generate"`` or ``"loglik"``): the only ones a number of that method may stand beside,
    and then with the caveats of their ``comparable`` text."""
    if method not in SCORING_METHODS:
        raise ValueError(f"unknown scoring method {method!r}; valid: {', '.join(SCORING_METHODS)}")
    return [row for row in PUBLISHED if row["method"] == method]
