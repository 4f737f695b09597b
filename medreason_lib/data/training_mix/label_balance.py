"""Choose a training set's answer distribution instead of inheriting it from the source.

A policy trained with GRPO drifts towards whatever answer pays most often. Train it on
PubMedQA's machine-labelled ``pqa_artificial`` (yes/no only, about 93% "yes" by the PubMedQA
paper) and "always yes" is the best policy it can find; the test set is 55% yes, 34% no and
11% maybe. So the training rows of each task with a closed answer set are drawn towards a
*target* distribution:

- ``sample_by_label(pool, target, n)``: yes/no/maybe (or letters, when options may not be
  shuffled). Each label gets its largest-remainder share of ``n`` rows. A label with fewer
  rows than its share is *scarce*, and ``scarce`` decides what happens, out loud:
  ``"replace"`` uses every row once and draws the rest with replacement (the target is met,
  rows repeat), ``"cap"`` uses every row once and gives the missing rows to the other labels
  in proportion to their targets (no repeats, the target is missed), ``"error"`` refuses.
- ``balance_choices(rows, target)``: multiple-choice rows keep their questions; the options
  are shuffled so that the correct letter follows the target (uniform A-D by default), the
  answer remapped to its option (the gold option's text never changes). Options that point
  at other options by position ("all of the above", "both A and B", "none") are detected
  (``positional_options``) and stay where they are: a row with "all/none of the above" at
  the end shuffles only the options above it, a row naming letters ("both A and B",
  "A and C") or with a set reference elsewhere is not shuffled at all.

Both return the new rows and a ``TaskBalance`` that says what the source held, what was
asked, what was delivered, and every compromise made on the way.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset

from medreason_lib.data import build_prompt
from medreason_lib.scoring.answers import answer_type
from medreason_lib.scoring.stats import largest_remainder

LABELS = {"yes_no_maybe": ("yes", "no", "maybe"), "choice": ("A", "B", "C", "D")}
SCARCE_POLICIES = ("replace", "cap", "error")
LETTERS = LABELS["choice"]

# "all of the above", "none of these", "any of the above", "all the above"; "None" / "All".
_SET_REF = re.compile(
    r"\b(?:all|none|any|some)\s+(?:of\s+)?(?:the\s+)?(?:above|these|those|following)\b"
    r"|^\s*(?:all|none)\s*\.?\s*$",
    re.IGNORECASE,
)
# Options that name other options: "both A and B", "A & C", "either ab", "Both", "A only".
_LETTER_REF = re.compile(
    r"(?<![\w'’-])\(?[A-Da-d]\)?\s*(?:,|&|/|\+|\band\b|\bor\b|\bnor\b)\s*\(?[A-Da-d]\)?(?![\w'’-])"
    r"|\b(?:both|either|neither)\s+\(?[A-Da-d]{1,4}\)?(?![\w'’-])"
    r"|^\s*(?:both|either|neither)(?:\s+of\s+(?:the\s+)?(?:above|these|them))?\s*\.?\s*$"
    r"|^\s*(?:only\s+)?\(?[A-D]\)?(?:\s+only)?\s*\.?\s*$",
    re.IGNORECASE,
)


def task_labels(task: str) -> tuple[str, ...] | None:
    """The closed answer set of a task (yes/no/maybe, A-D), or None (numbers)."""
    return LABELS.get(answer_type(task))


def positional_options(options: list[str]) -> dict[int, str]:
    """Index -> kind for the options that refer to other options by position.

    ``"set"``: "all/none/any of the above", "all of these", a bare "None"/"All" (true of the
    options as a group; kept in place). ``"letters"``: "both A and B", "A, C", "either ab",
    a bare "Both"/"Neither", a bare letter (they name positions; the row is not shuffled).
    """
    found = {}
    for i, text in enumerate(options):
        if _LETTER_REF.search(text):
            found[i] = "letters"
        elif _SET_REF.search(text):
            found[i] = "set"
    return found


def shuffle_slots(options: list[str]) -> list[int]:
    """The option positions that may be permuted among themselves ([] = keep the row).

    No positional option: all of them. Set references only, all at the end ("all of the
    above" as the last option): the options before them. Anything else: none.
    """
    fixed = positional_options(options)
    if not fixed:
        return list(range(len(options)))
    if "letters" in fixed.values():
        return []
    first = min(fixed)
    if sorted(fixed) != list(range(first, len(options))) or first < 2:
        return []
    return list(range(first))


# --------------------------------------------------------------------------- reports


@dataclass
class TaskBalance:
    """What happened to one task's labels: the source (``pool``), the ``target`` shares,
    and the rows delivered (``counts``, of which ``distinct`` different rows)."""

    task: str
    method: str  # "sampled by label" | "shuffled options" | "inherited"
    target: dict[str, float] | None
    pool: dict[str, int]  # label -> rows in the source
    counts: dict[str, int]  # label -> rows in the result
    distinct: dict[str, int]  # label -> different source rows behind ``counts``
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    @property
    def shares(self) -> dict[str, float]:
        return {k: v / self.n for k, v in self.counts.items()} if self.n else {}

    @property
    def pool_shares(self) -> dict[str, float]:
        total = sum(self.pool.values())
        return {k: v / total for k, v in self.pool.items()} if total else {}

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "rows": self.n,
            "target": self.target,
            "shares": {k: round(v, 4) for k, v in self.shares.items()},
            "pool_shares": {k: round(v, 4) for k, v in self.pool_shares.items()},
            "counts": self.counts,
            "distinct": self.distinct,
            "notes": self.notes,
        }

    def table(self) -> str:
        lines = [
            f"{self.task}: {self.n} rows, {self.method}",
            f"  {'label':<6}{'source':>8}{'target':>8}{'mix':>8}{'rows':>7}{'distinct':>9}",
        ]
        pool, shares = self.pool_shares, self.shares
        for label in self.counts:
            target = "-" if self.target is None else f"{100 * self.target.get(label, 0):.1f}%"
            lines.append(
                f"  {label:<6}{100 * pool.get(label, 0):>7.1f}%{target:>8}"
                f"{100 * shares.get(label, 0):>7.1f}%{self.counts[label]:>7}"
                f"{self.distinct[label]:>9}"
            )
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])

    __str__ = table


def label_counts(ds: Dataset) -> dict[str, dict[str, int]]:
    """Task -> label -> rows, for the tasks with a closed answer set (in label order)."""
    found: dict[str, Counter] = {}
    for task, answer in zip(ds["task"], ds["answer"], strict=True):
        found.setdefault(task, Counter())[answer] += 1
    result = {}
    for task, counts in found.items():
        labels = task_labels(task)
        if labels:
            result[task] = {label: counts.get(label, 0) for label in labels}
    return result


def label_shares(ds: Dataset) -> dict[str, dict[str, float]]:
    """Task -> label -> share of that task's rows (closed answer sets only)."""
    return {
        task: {label: round(c / sum(counts.values()), 4) for label, c in counts.items()}
        for task, counts in label_counts(ds).items()
    }


# --------------------------------------------------------------------------- targets


def check_target(task: str, target: dict, where: str = "target") -> dict[str, float]:
    """A target as ``{label: share}`` in label order; a clear error names ``where``."""
    labels = task_labels(task)
    if labels is None:
        raise ValueError(f"{where}: {task} answers with numbers; it has no labels to balance")
    if not isinstance(target, dict) or not target:
        raise ValueError(f"{where}: expected a dict label -> share for {task}, got {target!r}")
    unknown = sorted(set(target) - set(labels))
    if unknown:
        raise ValueError(f"{where}: {task} has no label(s) {unknown}; its labels: {labels}")
    shares = {label: target.get(label, 0.0) for label in labels}
    bad = {k: v for k, v in shares.items() if not isinstance(v, int | float) or v < 0}
    if bad:
        raise ValueError(f"{where}: shares must be numbers >= 0, got {bad}")
    total = sum(shares.values())
    if abs(total - 1.0) > 1e-3:
        raise ValueError(f"{where}: the shares for {task} sum to {total:.4f}, not 1")
    return {k: v / total for k, v in shares.items()}


def uniform_target(task: str) -> dict[str, float]:
    labels = task_labels(task)
    return {label: 1 / len(labels) for label in labels}


# --------------------------------------------------------------------------- sampling


def _cap(target: dict[str, float], available: dict[str, int], n: int) -> dict[str, int]:
    """Counts towards ``target`` with no label above its available rows."""
    capped: dict[str, int] = {}
    while True:
        free = {k: w for k, w in target.items() if k not in capped}
        counts = {**capped, **largest_remainder(free, n - sum(capped.values()))}
        over = [k for k in free if counts[k] > available[k]]
        if not over or len(capped) + len(over) == len(target):
            capped.update({k: available[k] for k in over})
            return {k: capped.get(k, counts[k]) for k in target}  # in label order
        capped.update({k: available[k] for k in over})


def sample_by_label(
    pool: Dataset,
    target: dict[str, float],
    n: int,
    *,
    seed: int = 0,
    scarce: str = "replace",
    task: str | None = None,
    where: str = "target",
) -> tuple[Dataset, TaskBalance]:
    """``n`` rows of ``pool`` whose answers follow ``target`` (see the module docstring).

    Rows of a label are taken in a seeded random order without repeats while they last;
    ``scarce`` says what happens when they do not. Labels outside the target get no rows
    (a note says how many were left out). Returns the rows (seeded order) and the balance.
    """
    task = task or (pool[0]["task"] if len(pool) else "pubmedqa")
    if scarce not in SCARCE_POLICIES:
        raise ValueError(f"scarce_labels must be one of {SCARCE_POLICIES}, got {scarce!r}")
    target = check_target(task, target, where)
    rng = np.random.default_rng(seed)
    answers = list(pool["answer"])
    by_label = {label: [i for i, a in enumerate(answers) if a == label] for label in target}
    available = {label: len(rows) for label, rows in by_label.items()}
    notes = []
    outside = Counter(a for a in answers if a not in target)
    if outside:
        notes.append(f"left out {dict(outside)}: labels that are not {task}'s")
    if sum(available[k] for k, w in target.items() if w > 0) < n and scarce != "replace":
        raise ValueError(
            f"{task}: {n} rows asked for, but the pool holds only "
            f"{sum(available.values())} rows of the target's labels (scarce_labels={scarce!r}; "
            "'replace' would repeat rows)"
        )
    counts = largest_remainder(target, n)
    short = {k: (c, available[k]) for k, c in counts.items() if c > available[k]}
    if short and scarce == "error":
        detail = ", ".join(f"{k}: {c} wanted, {a} available" for k, (c, a) in short.items())
        raise ValueError(f"{task}: scarce labels ({detail}); {where} or scarce_labels='replace'")
    if short and scarce == "cap":
        counts = _cap(target, available, n)
        for k, (wanted, have) in short.items():
            notes.append(
                f"{k} is scarce: {have} rows for a target of {wanted} ({100 * target[k]:.1f}%); "
                f"capped at {have} ({100 * have / n:.1f}% of the mix), the other labels "
                "take the rest in proportion to their targets (no row repeated)"
            )
    chosen, distinct = [], {}
    for label, count in counts.items():
        rows = [by_label[label][i] for i in rng.permutation(available[label])]
        take = rows[:count]
        if count > len(rows):
            if not rows:
                raise ValueError(
                    f"{task}: the target asks for {count} '{label}' rows and the pool has "
                    f"none; lower its share in {where}, or use scarce_labels='cap'"
                )
            extra = rng.choice(rows, size=count - len(rows), replace=True).tolist()
            take = rows + extra
            notes.append(
                f"{label} is scarce: {len(rows)} rows for a target of {count} "
                f"({100 * target[label]:.1f}%); every row used once and {len(extra)} more drawn "
                f"with replacement (each row about {count / len(rows):.1f} times)"
            )
        chosen += take
        distinct[label] = len(set(take))
    order = rng.permutation(len(chosen))
    rows = pool.select([chosen[i] for i in order]) if chosen else pool.select([])
    balance = TaskBalance(
        task, "sampled by label", dict(target), available, counts, distinct, notes
    )
    return rows, balance


# --------------------------------------------------------------------------- choices


def _assign(slots: list[list[int]], fixed: list[int | None], want: dict[int, int]) -> list[int]:
    """A target position for each row's gold option: fixed rows keep theirs; movable rows
    fill the positions furthest below their wanted count (rows with fewer choices first)."""
    have = Counter(p for p in fixed if p is not None)
    result = list(fixed)
    movable = sorted((i for i, p in enumerate(fixed) if p is None), key=lambda i: len(slots[i]))
    for i in movable:
        result[i] = max(slots[i], key=lambda p: (want.get(p, 0) - have[p], -p))
        have[result[i]] += 1
    return result


def balance_choices(
    rows: Dataset,
    target: dict[str, float] | None = None,
    *,
    seed: int = 0,
    task: str | None = None,
    where: str = "target",
) -> tuple[Dataset, TaskBalance]:
    """The same questions with their options shuffled so the correct letters follow
    ``target`` (default uniform). Positional options stay in place (``shuffle_slots``), the
    answer letter moves with its option, and the prompt is rebuilt. Rows that cannot move
    their gold option keep it, and the note says how many; the delivered shares are
    reported as they are, not as asked."""
    task = task or (rows[0]["task"] if len(rows) else "medqa")
    target = check_target(task, target or uniform_target(task), where)
    rng = np.random.default_rng(seed)
    records = [dict(r) for r in rows]
    before = Counter(r["answer"] for r in records)
    slots, fixed = [], []
    for r in records:
        if len(r["options"]) != len(LETTERS):
            raise ValueError(f"{task} row {r['id']}: {len(r['options'])} options, expected 4")
        s = shuffle_slots(r["options"])
        gold = LETTERS.index(r["answer"])
        slots.append(s)
        fixed.append(None if gold in s and len(s) > 1 else gold)
    want = largest_remainder({LETTERS.index(k): w for k, w in target.items()}, len(records))
    positions = _assign(slots, fixed, want)
    moved = 0
    for r, s, new in zip(records, slots, positions, strict=True):
        gold = LETTERS.index(r["answer"])
        if len(s) < 2:
            continue
        others = [r["options"][i] for i in s if i != gold]
        order = [others[i] for i in rng.permutation(len(others))]
        options = list(r["options"])
        for slot in s:
            options[slot] = r["options"][gold] if slot == new else order.pop()
        r["options"], r["answer"] = options, LETTERS[new]
        r["prompt"] = build_prompt(r)
        moved += 1
    after = Counter(r["answer"] for r in records)
    kept = sum(f is not None for f in fixed)
    notes = [f"options shuffled in {moved} of {len(records)} rows"]
    if kept:
        notes.append(
            f"{kept} rows keep their gold letter: options that refer to positions "
            "('all of the above', 'both A and B', a bare 'None') are not moved"
        )
    balance = TaskBalance(
        task,
        "shuffled options",
        dict(target),
        {k: before.get(k, 0) for k in LETTERS},
        {k: after.get(k, 0) for k in LETTERS},
        {k: after.get(k, 0) for k in LETTERS},
        notes,
    )
    out = Dataset.from_list(records, features=rows.features) if records else rows
    return out, balance
