"""Remove training rows that overlap an evaluation set, and say which and why.

Two checks, the ones commonly used for benchmark contamination:

- **n-gram**: a train row whose question (+ context) shares any run of ``ngram`` words with an
  eval row's question (+ context). Words are lower-cased with punctuation removed. A text
  shorter than ``ngram`` words counts as one n-gram of its own length, so an exact copy of a
  short question is still caught.
- **fuzzy**: a train question whose similarity to an eval question (``rapidfuzz`` ``ratio``,
  0-100, after lower-casing and stripping punctuation) is at least ``fuzzy_threshold``:
  near-duplicates with a few words changed. Computed with ``rapidfuzz.process.cdist`` on all
  cores, in blocks, so thousands x thousands of questions take seconds.

``ratio`` is the default rather than ``token_set_ratio``: the latter scores 100 whenever one
question's words are a subset of the other's, which flags short generic questions.

``decontaminate_against(train, {name: eval set, ...})`` runs both checks against several
evaluation sets at once, adds a third (the same item: an evaluation id, or a listed test id
such as a PubMedQA test PMID, in the training data), and counts the removed rows per
training task (``Contamination``). ``training.train`` calls it on every training mix.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset
from rapidfuzz import fuzz, process, utils

from medreason_lib.settings.progress import say_once

_NON_WORD = re.compile(r"[^\w\s]")
_BLOCK = 2000  # train rows per cdist call: bounds memory at _BLOCK x len(eval) floats


@dataclass(frozen=True)
class Collision:
    """One removed train row: the eval row it overlaps and why."""

    train_id: str
    eval_id: str
    reason: str  # "ngram" | "fuzzy" | "id" (the same item)
    score: float  # 100.0 for an n-gram or id hit, else the fuzzy similarity
    detail: str = ""  # the shared n-gram, or the eval question

    def __str__(self) -> str:
        if self.reason == "id":
            return f"{self.train_id}: an evaluation item itself (same id)"
        what = f"ngram '{self.detail}'" if self.reason == "ngram" else f"fuzzy {self.score:.1f}"
        return f"{self.train_id} ~ {self.eval_id}: {what}"


@dataclass
class DecontaminationReport:
    """What ``decontaminate`` removed. ``str(report)`` is a readable summary."""

    n_train: int
    n_eval: int
    ngram: int
    fuzzy_threshold: float
    removed: list[Collision] = field(default_factory=list)

    @property
    def n_removed(self) -> int:
        return len(self.removed)

    @property
    def n_kept(self) -> int:
        return self.n_train - self.n_removed

    @property
    def removed_ids(self) -> list[str]:
        return [c.train_id for c in self.removed]

    @property
    def counts(self) -> dict[str, int]:
        """Removed rows per reason, e.g. ``{"ngram": 3, "fuzzy": 1}``."""
        found = Counter(c.reason for c in self.removed)
        return {"ngram": found["ngram"], "fuzzy": found["fuzzy"]}

    def summary(self) -> str:
        c = self.counts
        return (
            f"decontaminate: removed {self.n_removed} of {self.n_train} train rows "
            f"({c['ngram']} ngram, {c['fuzzy']} fuzzy) overlapping {self.n_eval} eval rows "
            f"({self.ngram}-gram; fuzzy >= {self.fuzzy_threshold:g}); kept {self.n_kept}"
        )

    def __str__(self, limit: int = 20) -> str:
        lines = [self.summary(), *(f"  {c}" for c in self.removed[:limit])]
        if self.n_removed > limit:
            lines.append(f"  ... and {self.n_removed - limit} more (see report.removed)")
        return "\n".join(lines)


def _words(text: str) -> list[str]:
    return _NON_WORD.sub(" ", text.lower()).split()


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _texts(ds: Dataset) -> list[str]:
    """Question + context of every row (read by column: much faster than row by row)."""
    questions = list(ds["question"])
    contexts = list(ds["context"]) if "context" in ds.column_names else [""] * len(questions)
    return [f"{q}\n{c or ''}" for q, c in zip(questions, contexts, strict=True)]


def _ngram_hits(train: Dataset, eval: Dataset, n: int) -> dict[int, Collision]:
    index: dict[tuple[str, ...], int] = {}
    for j, text in enumerate(_texts(eval)):
        for gram in _grams(_words(text), n):
            index.setdefault(gram, j)
    train_ids, eval_ids = list(train["id"]), list(eval["id"])
    hits = {}
    for i, text in enumerate(_texts(train)):
        for gram in _grams(_words(text), n):
            j = index.get(gram)
            if j is not None:
                hits[i] = Collision(train_ids[i], eval_ids[j], "ngram", 100.0, " ".join(gram))
                break
    return hits


def _fuzzy_hits(
    train: Dataset, eval: Dataset, threshold: float, scorer: Callable, skip: set[int]
) -> dict[int, Collision]:
    train_q, eval_q = list(train["question"]), list(eval["question"])
    train_ids, eval_ids = list(train["id"]), list(eval["id"])
    hits = {}
    for start in range(0, len(train_q), _BLOCK):
        block = train_q[start : start + _BLOCK]
        scores = process.cdist(
            block,
            eval_q,
            scorer=scorer,
            processor=utils.default_process,
            score_cutoff=threshold,
            dtype=np.float32,
            workers=-1,
        )
        best = scores.argmax(axis=1)
        for offset, j in enumerate(best):
            i, score = start + offset, float(scores[offset, j])
            if score >= threshold and i not in skip:
                hits[i] = Collision(train_ids[i], eval_ids[j], "fuzzy", score, eval_q[j])
    return hits


def decontaminate(
    train: Dataset,
    eval: Dataset,
    ngram: int = 13,
    fuzzy_threshold: float = 90.0,
    *,
    scorer: Callable = fuzz.ratio,
    verbose: bool = True,
) -> tuple[Dataset, DecontaminationReport]:
    """Drop the rows of ``train`` that overlap ``eval``; return the rest and a report.

    Both datasets need ``id`` and ``question`` columns (``context`` is used when present).
    A row caught by both checks is reported once, as "ngram". Row order is kept. Prints the
    report (first 20 collisions) unless ``verbose=False``.
    """
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    report = DecontaminationReport(len(train), len(eval), ngram, fuzzy_threshold)
    if len(train) and len(eval):
        hits = _ngram_hits(train, eval, ngram)
        hits.update(_fuzzy_hits(train, eval, fuzzy_threshold, scorer, skip=set(hits)))
        report.removed = [hits[i] for i in sorted(hits)]
        keep = [i for i in range(len(train)) if i not in hits]
        train = train.select(keep) if hits else train
    if verbose:
        print(report)
    return train, report


# --------------------------------------------------------------------------- many eval sets


@dataclass
class Contamination:
    """What ``decontaminate_against`` removed from a training set, per training task.

    ``removed``: training task -> rows removed; ``checked``: evaluation set -> rows checked
    against; ``by_set``: evaluation set -> rows removed because of it; ``by_reason``:
    "id" (the same item: a PubMedQA test PMID, the same task and id), "ngram", "fuzzy".
    """

    n_train: int
    removed: dict[str, int]
    checked: dict[str, int]
    by_set: dict[str, int]
    by_reason: dict[str, int]
    collisions: list[Collision] = field(default_factory=list)

    @property
    def n_removed(self) -> int:
        return sum(self.removed.values())

    def to_dict(self) -> dict:
        return {
            "removed": self.removed,
            "checked": self.checked,
            "by_set": self.by_set,
            "by_reason": self.by_reason,
            "removed_ids": [c.train_id for c in self.collisions[:200]],
        }

    def __str__(self) -> str:
        per_task = ", ".join(f"{t} {n}" for t, n in self.removed.items()) or "none"
        sets = ", ".join(f"{name} ({n})" for name, n in self.checked.items())
        reasons = ", ".join(f"{k} {v}" for k, v in self.by_reason.items())
        lines = [
            f"decontamination: removed {self.n_removed} of {self.n_train} training rows "
            f"(per task: {per_task}; by check: {reasons})",
            f"  checked against every evaluation set: {sets}",
        ]
        lines += [f"  {c}" for c in self.collisions[:10]]
        if len(self.collisions) > 10:
            lines.append(f"  ... and {len(self.collisions) - 10} more")
        return "\n".join(lines)


def decontaminate_against(
    train: Dataset,
    evals: dict[str, Dataset],
    *,
    test_ids: dict[str, set[str]] | None = None,
    ngram: int = 13,
    fuzzy_threshold: float = 90.0,
    verbose: bool = True,
) -> tuple[Dataset, Contamination]:
    """Drop the rows of ``train`` (columns ``id``, ``task``, ``question``, ``context``) that
    are an item of any evaluation set in ``evals`` (name -> dataset), or overlap one.

    Three checks, every training row against every evaluation set, whatever its task:
    the same item (the same task and id, or an id in ``test_ids[task]``, e.g. the official
    PubMedQA test PMIDs), a shared ``ngram``-word run, a fuzzy question similarity of at
    least ``fuzzy_threshold`` (``decontaminate``). Row order is kept. Prints the summary.
    """
    from datasets import concatenate_datasets

    names = {}
    for name, ds in evals.items():
        names.update((e, name) for e in ds["id"])
    blocked = {(t, i) for ds in evals.values() for t, i in zip(ds["task"], ds["id"], strict=True)}
    for task, ids in (test_ids or {}).items():
        blocked |= {(task, str(i)) for i in ids}
    tasks, ids = list(train["task"]), list(train["id"])
    same = {k for k, key in enumerate(zip(tasks, ids, strict=True)) if key in blocked}
    collisions = [Collision(ids[k], ids[k], "id", 100.0, "same item") for k in sorted(same)]
    rest = train.select([k for k in range(len(train)) if k not in same]) if same else train
    columns = ["id", "task", "question", "context"]
    pooled = [ds.select_columns(columns) for ds in evals.values() if len(ds)]
    kept = rest
    if pooled:
        joined = concatenate_datasets(pooled)
        kept, report = decontaminate(rest, joined, ngram, fuzzy_threshold, verbose=False)
        collisions += report.removed
    task_of = dict(zip(ids, tasks, strict=True))
    removed = Counter(task_of[c.train_id] for c in collisions)
    summary = Contamination(
        n_train=len(train),
        removed={t: removed.get(t, 0) for t in dict.fromkeys(tasks)},
        checked={name: len(ds) for name, ds in evals.items()},
        by_set=dict(Counter(names.get(c.eval_id, "test ids") for c in collisions)),
        by_reason={r: sum(c.reason == r for c in collisions) for r in ("id", "ngram", "fuzzy")},
        collisions=collisions,
    )
    if verbose:
        say_once(str(summary), again=f"decontamination: as above ({len(train)} rows checked)")
    return kept, summary
