"""The course's datasets, all in one shape: ``load_task``, ``mix`` and ``decontaminate``.

Five tasks, each a ``datasets.Dataset`` with exactly these columns (so any of them can be
concatenated or mixed)::

    id        str   PMID (PubMedQA), uuid (MedMCQA), or "<task>-<split>-<row>" (the others)
    task      str   "pubmedqa" | "medqa" | "medmcqa" | "gsm8k" | "mmlu_medical"
    question  str
    context   str   the abstract for PubMedQA, "" elsewhere
    options   list[str]  the four option texts A..D; [] for PubMedQA and GSM8K
    answer    str   "yes"/"no"/"maybe"; "A".."D"; a canonical number ("1000", "-3", "2.5")
    subject   str   MMLU subject, MedMCQA subject_name, MedQA meta_info ("step1"), else ""
    prompt    list[{"role", "content"}]   system prompt (the template) + the user turn

Where the rows come from (``source``): ``"bundled"`` (small original samples in ``data/``,
written for this course in the upstream raw layouts), ``"hub"`` (the Hugging Face datasets),
or a path to raw upstream files. ``None`` asks the profile. A source that was asked for and
cannot be had is an error; nothing falls back to the bundled samples behind your back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import Dataset, Features, List, Value, concatenate_datasets

from medreason_lib.data.decontamination import DecontaminationReport, decontaminate
from medreason_lib.data.raw_formats import (
    MMLU_SUBJECTS,
    DataError,
    gsm8k_record,
    medmcqa_from_hub,
    medqa_record,
    mmlu_from_hub,
    official_pubmedqa_test_pmids,
    pubmedqa_from_hub,
    read_raw,
    split_pubmedqa,
)
from medreason_lib.scoring import template
from medreason_lib.scoring.stats import largest_remainder
from medreason_lib.settings import paths, profiles
from medreason_lib.settings.progress import say_once

__all__ = [
    "DEFAULT_MIX",
    "FEATURES",
    "HUB_IDS",
    "SPLITS",
    "TASKS",
    "DataError",
    "DecontaminationReport",
    "build_prompt",
    "choice_user_prompt",
    "decontaminate",
    "gsm8k_user_prompt",
    "load_task",
    "mix",
    "pubmedqa_user_prompt",
    "records_to_dataset",
    "user_prompt",
]

TASKS = ("pubmedqa", "medqa", "medmcqa", "gsm8k", "mmlu_medical")
SPLITS = {
    "pubmedqa": ("train", "test", "train_artificial"),
    "medqa": ("train", "test"),
    "medmcqa": ("train", "test"),
    "gsm8k": ("train", "test"),
    "mmlu_medical": ("test",),
}
# MedQwen3B-Reasoner's training mixture.
DEFAULT_MIX = {"pubmedqa": 0.7, "gsm8k": 0.3}

FEATURES = Features(
    {
        "id": Value("string"),
        "task": Value("string"),
        "question": Value("string"),
        "context": Value("string"),
        "options": List(Value("string")),
        "answer": Value("string"),
        "subject": Value("string"),
        "prompt": List({"role": Value("string"), "content": Value("string")}),
    }
)

# (hub id, config, hub split per our split)
HUB_IDS = {
    "pubmedqa": ("qiaojin/PubMedQA", "pqa_labeled", {"train": "train", "test": "train"}),
    "medqa": ("GBaker/MedQA-USMLE-4-options", None, {"train": "train", "test": "test"}),
    "medmcqa": ("openlifescienceai/medmcqa", None, {"train": "train", "test": "validation"}),
    "gsm8k": ("openai/gsm8k", "main", {"train": "train", "test": "test"}),
    "mmlu_medical": ("cais/mmlu", None, {"test": "test"}),  # one config per subject
}
PUBMEDQA_ARTIFICIAL = ("qiaojin/PubMedQA", "pqa_artificial")


# --------------------------------------------------------------------------- prompts
# The only place the user-turn formats live.


def pubmedqa_user_prompt(question: str, context: str) -> str:
    return f"Context: {context}\n\nQuestion: {question}\n\nAnswer with yes, no or maybe."


def choice_user_prompt(question: str, options: list[str]) -> str:
    if len(options) != 4:
        raise ValueError(f"a choice question needs 4 options, got {len(options)}")
    a, b, c, d = options
    return (
        f"Question: {question}\n\nOptions:\nA. {a}\nB. {b}\nC. {c}\nD. {d}\n\n"
        "Answer with the letter of the correct option."
    )


def gsm8k_user_prompt(question: str) -> str:
    return f"{question}\n\nAnswer with the final number only."


def user_prompt(row: dict) -> str:
    """The user turn for a row of any task."""
    task = row["task"]
    if task == "pubmedqa":
        return pubmedqa_user_prompt(row["question"], row["context"])
    if task == "gsm8k":
        return gsm8k_user_prompt(row["question"])
    if task in ("medqa", "medmcqa", "mmlu_medical"):
        return choice_user_prompt(row["question"], row["options"])
    raise ValueError(f"unknown task {task!r}; valid: {TASKS}")


def build_prompt(row: dict) -> list[dict[str, str]]:
    """``[system: template.SYSTEM_PROMPT, user: user_prompt(row)]``."""
    return [
        {"role": "system", "content": template.SYSTEM_PROMPT},
        {"role": "user", "content": user_prompt(row)},
    ]


def records_to_dataset(records: list[dict]) -> Dataset:
    """Records (the common shape without a prompt) -> a Dataset with ``FEATURES``."""
    rows = [{**r, "prompt": build_prompt(r)} for r in records]
    return Dataset.from_list(rows, features=FEATURES)


# --------------------------------------------------------------------------- sources


def _subsample(ds: Dataset, n: int | None, seed: int, task: str, split: str) -> Dataset:
    if n is None:
        return ds
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n > len(ds):
        raise ValueError(f"{task}/{split}: asked for n={n} rows but only {len(ds)} are available")
    return ds.shuffle(seed=seed).select(range(n))


def _hub_load(hub_id: str, config: str | None, split: str) -> Dataset:
    import datasets

    try:
        return datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:  # anything from the network, the cache or the hub
        name = f"{hub_id}" + (f" (config {config!r})" if config else "")
        raise RuntimeError(
            f"could not load {name}, split {split!r}, from the Hugging Face hub: "
            f"{type(e).__name__}: {e}. If HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set (the tiny "
            "profile sets both) only the local cache is used; pass source='bundled' or a "
            "folder of raw files to work offline."
        ) from e


def _convert(rows: Dataset, convert, hub_id: str, split: str) -> list[dict]:
    return [convert(row, i, f"hub {hub_id} [{split}] row {i}") for i, row in enumerate(rows)]


def _from_hub(task: str, split: str, n: int | None, seed: int) -> tuple[Dataset, int, str]:
    """Load from the hub: (dataset already subsampled, rows before subsampling, description)."""
    hub_id, config, hub_splits = HUB_IDS[task]
    if task == "pubmedqa":
        if split == "train_artificial":
            hub_id, config = PUBMEDQA_ARTIFICIAL
        raw = _hub_load(hub_id, config, "train")  # every PubMedQA config has only "train"
        rows = _convert(raw, lambda r, i, w: pubmedqa_from_hub(r, w), hub_id, "train")
        records = split_pubmedqa(rows, official_pubmedqa_test_pmids(), split)
        where = f"hub {hub_id} ({config}; official test PMID list)"
    elif task == "mmlu_medical":
        records = []
        for subject in MMLU_SUBJECTS:
            raw = _hub_load(hub_id, subject, "test")
            records += _convert(
                raw,
                lambda r, i, w, s=subject: mmlu_from_hub(r, s, f"mmlu-{s}-{i:03d}", w),
                hub_id,
                f"{subject}/test",
            )
        where = f"hub {hub_id} (configs {', '.join(MMLU_SUBJECTS)})"
    else:
        converters = {
            "medqa": lambda r, i, w: medqa_record(r, f"medqa-{split}-{i:05d}", w),
            "medmcqa": lambda r, i, w: medmcqa_from_hub(r, w),
            "gsm8k": lambda r, i, w: gsm8k_record(r, f"gsm8k-{split}-{i:04d}", w),
        }
        hub_split = hub_splits[split]
        raw = _hub_load(hub_id, config, hub_split)
        total = len(raw)
        # shuffle(seed).select(range(n)) depends only on the length, so subsampling the hub
        # rows before converting them picks the same rows as converting all first, only
        # faster (MedMCQA train has 182k rows). Ids keep the original row number.
        raw = _subsample(raw.add_column("_row", list(range(total))), n, seed, task, split)
        convert = converters[task]
        records = [
            convert(r, r["_row"], f"hub {hub_id} [{hub_split}] row {r['_row']}") for r in raw
        ]
        where = f"hub {hub_id}" + (f" ({config})" if config else "") + f", split {hub_split!r}"
        return records_to_dataset(records), total, where
    full = records_to_dataset(records)
    return _subsample(full, n, seed, task, split), len(full), where


def _resolve_source(source: str | Path | None) -> str | Path:
    if source is None:
        source = profiles.get_profile().data_source
    if isinstance(source, str) and source in ("bundled", "hub"):
        return source
    return Path(source).expanduser()


def load_task(
    name: str,
    split: str,
    n: int | None = None,
    source: str | Path | None = None,
    seed: int = 0,
    verbose: bool = True,
) -> Dataset:
    """Load one task's split in the common shape (see the module docstring).

    name: ``pubmedqa``, ``medqa``, ``medmcqa``, ``gsm8k`` or ``mmlu_medical`` (the six MMLU
    medical subjects: anatomy, clinical_knowledge, college_biology, college_medicine,
    medical_genetics, professional_medicine).
    split: ``"train"`` or ``"test"``. PubMedQA: test = the official 500 test PMIDs of the
    expert-labelled 1000, train = the other 500; ``"train_artificial"`` = the machine-labelled
    PQA-A set (hub, or a raw ``ori_pqaa.json``). MedMCQA: ``"test"`` is its validation
    (dev) set of 4183 questions, because the labels of its test set are not public (everyone
    reports on validation). MMLU has only ``"test"``.
    n: a seeded subsample (``shuffle(seed).select(range(n))``); None keeps every row in the
    file's order. More than available is a ValueError.
    source: ``"bundled"``, ``"hub"``, a path to raw upstream files (a file is read as the
    requested split; a folder is searched by the upstream file names), or None for the
    profile's ``data_source``.

    Prints one line saying where the rows came from (unless ``verbose=False``). Raises
    ``FileNotFoundError`` for a missing path, ``RuntimeError`` when the hub cannot be
    reached, and ``DataError`` (a ValueError) for a malformed row.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    if split not in SPLITS[name]:
        extra = " (MMLU is a test-only benchmark)" if name == "mmlu_medical" else ""
        raise ValueError(
            f"{name} has no split {split!r}{extra}; valid splits: {', '.join(SPLITS[name])}"
        )
    resolved = _resolve_source(source)
    if resolved == "hub":
        ds, total, where = _from_hub(name, split, n, seed)
    else:
        folder = paths.data_dir() if resolved == "bundled" else resolved
        records, location, notes = read_raw(name, split, folder)
        if resolved == "bundled":
            notes = ["bundled samples", *notes]
        where = f"{location} ({'; '.join(notes)})"
        full = records_to_dataset(records)
        total = len(full)
        ds = _subsample(full, n, seed, name, split)
    if verbose:
        count = f"{total} items" if n is None else f"{len(ds)} of {total} items (seed {seed})"
        say_once(f"{name}/{split}: {count} from {where}")
    return ds


# --------------------------------------------------------------------------- mixing


def mix(
    datasets: dict[str, Dataset],
    weights: dict[str, float],
    n: int,
    seed: int = 0,
    replace: bool = False,
    verbose: bool = True,
) -> Dataset:
    """A seeded mixture of ``n`` rows: about ``n * w`` from each dataset (weights are
    normalised; the shares sum to exactly ``n``), shuffled together.

    Each dataset gives ``shuffle(seed).select(range(share))``. A dataset with fewer rows than
    its share is an error, unless ``replace=True``: then its rows are sampled with
    replacement (and this says so). Datasets without a weight are left out.
    """
    unknown = sorted(set(weights) - set(datasets))
    if unknown:
        raise ValueError(f"weights name datasets that were not given: {unknown}")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    shares = largest_remainder(weights, n)
    parts = []
    for k, (name, share) in enumerate(shares.items()):
        ds = datasets[name]
        if share <= len(ds):
            parts.append(ds.shuffle(seed=seed).select(range(share)))
            continue
        if not replace:
            raise ValueError(
                f"mix: {name} has {len(ds)} rows but its share of n={n} is {share}; "
                "use more data, a smaller n, or replace=True to sample with replacement"
            )
        rng = np.random.default_rng([seed, k])
        parts.append(ds.select(rng.integers(0, len(ds), size=share).tolist()))
        print(f"mix: {name} has {len(ds)} rows for a share of {share}: sampled with replacement")
    mixed = concatenate_datasets(parts).shuffle(seed=seed).flatten_indices()
    if verbose:
        detail = " + ".join(f"{name} {share}" for name, share in shares.items())
        say_once(f"mix: {len(mixed)} rows = {detail} (seed {seed})")
    return mixed
