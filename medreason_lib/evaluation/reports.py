"""What an evaluation produces and how two of them are compared.

- ``EvalSettings``: what must be identical before and after training (system prompt and
  generation settings).
- ``EvalReport``: accuracy with a 95% Wilson interval, overall and per task (``TaskStats``),
  plus the format, unparsed and truncation rates, the answers given against the gold ones,
  and every item's record. Saved as ``<name>.json`` beside the records' ``<name>.jsonl``.
- ``outcome(record)``: one word for what happened to an item (right, wrong, unparsed,
  truncated, failed), for error analysis.
- ``compare(before, after)``: per-task deltas and McNemar's test on the items that flipped;
  it refuses (``IncomparableReports``) reports whose prompts, settings or items differ: a fair
  before/after comparison changes the model and nothing else. When a model gives one answer
  to more than 90% of a task's items (``COLLAPSE_SHARE``), the comparison carries a caveat
  beside that task's p-value (and the ``all`` row's) wherever it is printed: a significant
  p-value then says the answer distribution moved, not that the model reasons better.
- Closed answer sets (yes/no/maybe, A-D) get a confusion matrix (gold x answered, with the
  ``unparsed`` and ``failed`` columns) and the recall of each gold label (``TaskStats``);
  the summary prints PubMedQA's, so "did it learn to say maybe" has an answer.

Every rate is over all ``n`` items of its group, failed ones included.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from medreason_lib.data.benchmarks import answer_labels
from medreason_lib.evaluation.generation import GenerationSettings
from medreason_lib.evaluation.records import RecordsReport, digest
from medreason_lib.scoring import template
from medreason_lib.scoring.answer_stats import (
    collapse_note,
    confusion_text,
    recall_per_label,
    recall_text,
)
from medreason_lib.scoring.stats import (
    COLLAPSE_SHARE,
    dominant_answer_share,
    mcnemar_p,
    wilson_interval,
)
from medreason_lib.settings.profiles import Profile

OUTCOMES = ("right", "wrong", "unparsed", "truncated", "failed")
CONFUSION_TASKS = ("pubmedqa",)  # tasks whose confusion matrix the summary prints


@dataclass(frozen=True)
class EvalSettings:
    """What must be identical before and after training: the system prompt (None: no
    system message) and the generation settings (greedy unless a temperature is set)."""

    system_prompt: str | None = template.SYSTEM_PROMPT
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    @classmethod
    def from_profile(
        cls, profile: Profile, *, sample: bool = False, samples: int = 1, **changes
    ) -> EvalSettings:
        """The template system prompt and ``GenerationSettings.from_profile`` (greedy unless
        ``sample``; ``samples > 1``: that many sampled completions per item)."""
        generation = GenerationSettings.from_profile(profile, sample=sample, samples=samples)
        return cls(generation=generation, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EvalSettings:
        return cls(d["system_prompt"], GenerationSettings(**d["generation"]))

    def digest(self) -> str:
        d = self.to_dict()
        if d["generation"]["samples"] == 1:  # hashed as before the setting: old records resume
            del d["generation"]["samples"]
        return digest(d)


# --------------------------------------------------------------------------- statistics


@dataclass
class TaskStats:
    """Metrics of one group of records (a task, or ``all``). Rates are over all ``n``."""

    n: int
    correct: int
    failed: int
    accuracy: float
    ci95: tuple[float, float]
    format_rate: float
    unparsed_rate: float
    truncation_rate: float | None  # None when the backend could not tell
    mean_chars: float | None
    mean_tokens: float | None
    answer_counts: dict[str, int]  # predicted answer -> count ("unparsed", "failed" too)
    gold_counts: dict[str, int]
    confusion: dict[str, dict[str, int]] | None  # gold -> predicted -> count; None for numbers
    recall: dict[str, float | None] | None = None  # gold label -> share answered right
    dominant_answer: str | None = None  # the answer given most often (readable answers only)
    dominant_share: float = 0.0  # ... and its share of all n items


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def _label(record: dict) -> str:
    if record["error"] is not None:
        return "failed"
    return "unparsed" if record["extracted"] is None else record["extracted"]


def outcome(record: dict) -> str:
    """What happened to one item, one of ``OUTCOMES``: ``failed`` (the generator raised),
    ``right``, ``truncated`` (not right, and cut off at the token limit), ``unparsed`` (no
    readable answer: a hedge such as "yes or no", or no answer block), or ``wrong`` (a
    readable answer that is not the gold one)."""
    if record["error"] is not None:
        return "failed"
    if record["correct"]:
        return "right"
    if record["truncated"]:
        return "truncated"
    return "unparsed" if record["extracted"] is None else "wrong"


def task_stats(records: list[dict], task: str | None = None) -> TaskStats:
    """Summarise records (all of one task when ``task`` is given, which enables the
    confusion matrix for closed answer sets)."""
    n = len(records)
    answered = [r for r in records if r["error"] is None]
    correct = sum(r["correct"] for r in records)
    truncation = [r["truncated"] for r in answered if r["truncated"] is not None]
    tokens = [r["n_tokens"] for r in answered if r["n_tokens"] is not None]
    labels = answer_labels(task) if task else None
    confusion = None
    if labels:
        cols = (*labels, "unparsed", "failed")
        confusion = {g: dict.fromkeys(cols, 0) for g in labels}
        for r in records:
            confusion.setdefault(r["gold"], dict.fromkeys(cols, 0))[_label(r)] += 1
    top, top_share = dominant_answer_share(records)
    return TaskStats(
        n=n,
        correct=correct,
        failed=n - len(answered),
        accuracy=correct / n,
        ci95=wilson_interval(correct, n),
        format_rate=sum(r["well_formed"] for r in records) / n,
        unparsed_rate=sum(r["extracted"] is None for r in answered) / n,
        truncation_rate=_mean([float(t) for t in truncation]),
        mean_chars=_mean([len(r["completion"]) for r in answered]),
        mean_tokens=_mean(tokens),
        answer_counts=dict(Counter(_label(r) for r in records).most_common()),
        gold_counts=dict(Counter(r["gold"] for r in records).most_common()),
        confusion=confusion,
        recall=recall_per_label(confusion) if confusion else None,
        dominant_answer=top,
        dominant_share=top_share,
    )


def _pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:5.1f}%"


# --------------------------------------------------------------------------- report


@dataclass
class EvalReport(RecordsReport):
    """The result of ``evaluate``: ``overall`` and ``by_task`` stats, settings, records."""

    _group_stats = staticmethod(task_stats)  # overall and by_task are TaskStats
    _settings_class = EvalSettings

    @property
    def accuracy(self) -> float:
        return self.overall.accuracy

    def summary(self) -> str:
        """A table: one row per task and one for all items."""
        g = self.settings.generation
        mode = "greedy" if g.greedy else f"T={g.temperature}, top_p={g.top_p}, seed={g.seed}"
        lines = [
            f"eval {self.name or '(unsaved)'}: {self.n} items, {self.failed} failed; backend "
            f"{self.backend}, {mode}, max_new_tokens {g.max_new_tokens}; 95% CI = Wilson",
            f"{'task':<13}{'n':>5} {'accuracy':>8}  {'95% CI':<16} {'format':>6} "
            f"{'unparsed':>8} {'truncated':>9} {'failed':>6} {'chars':>6} {'tokens':>6}",
        ]
        if self.model:
            lines.insert(1, f"model {self.model}")
        for task, s in [*self.by_task.items(), ("all", self.overall)]:
            ci = f"[{_pct(s.ci95[0]).strip()}, {_pct(s.ci95[1]).strip()}]"
            chars = "-" if s.mean_chars is None else f"{s.mean_chars:.0f}"
            tokens = "-" if s.mean_tokens is None else f"{s.mean_tokens:.1f}"
            lines.append(
                f"{task:<13}{s.n:>5} {_pct(s.accuracy):>8}  {ci:<16} {_pct(s.format_rate):>6} "
                f"{_pct(s.unparsed_rate):>8} {_pct(s.truncation_rate):>9} {s.failed:>6} "
                f"{chars:>6} {tokens:>6}"
            )
        for task, s in self.by_task.items():
            if s.confusion is not None:
                lines.append(f"{task} recall per gold label: {recall_text(s)}")
            note = collapse_note(s, task)
            if note:
                lines.append(f"WARNING: {note}")
        lines += [confusion_text(self.by_task[t], t) for t in CONFUSION_TASKS if t in self.by_task]
        return "\n".join(lines)

    __str__ = summary


# --------------------------------------------------------------------------- compare


class IncomparableReports(ValueError):
    """The two reports were not made on the same items with the same prompts and settings."""


@dataclass
class Comparison:
    """Per-task accuracy before and after, and the paired flips behind the difference."""

    before: str  # the reports' names
    after: str
    rows: dict[str, dict]  # task (and "all") -> n, before, after, delta, gained, lost, p_value
    notes: list[str]
    flips: dict[str, list[str]] = field(default_factory=dict)  # gained/lost -> item ids
    # task (and "all") -> why its p-value must not be read alone (a collapsed policy)
    caveats: dict[str, str] = field(default_factory=dict)
    # closed-answer task -> gold label -> (recall before, recall after)
    recall: dict[str, dict[str, tuple]] = field(default_factory=dict)

    def p_value_text(self, task: str = "all") -> str:
        """``McNemar p = 0.0123``, followed by the task's caveat whenever it has one: the
        one way to show a p-value of a comparison."""
        text = f"McNemar p = {self.rows[task]['p_value']:.4f}"
        return f"{text} (CAVEAT: {self.caveats[task]})" if task in self.caveats else text

    def __str__(self) -> str:
        lines = [
            f"{self.before} -> {self.after} (same items, prompts and settings)",
            f"{'task':<13}{'n':>5} {'before':>7} {'after':>7} {'delta':>7} "
            f"{'gained':>6} {'lost':>5} {'McNemar p':>9}",
        ]
        for task, r in self.rows.items():
            mark = " !" if task in self.caveats else ""
            lines.append(
                f"{task:<13}{r['n']:>5} {_pct(r['before']):>7} {_pct(r['after']):>7} "
                f"{100 * r['delta']:+6.1f}  {r['gained']:>6} {r['lost']:>5} {r['p_value']:>9.3f}"
                f"{mark}"
            )
        for task, labels in self.recall.items():
            shown = ", ".join(
                f"{k} {_pct(b).strip()} -> {_pct(a).strip()}" for k, (b, a) in labels.items()
            )
            lines.append(f"{task} recall per gold label, before -> after: {shown}")
        lines += [f"! CAVEAT ({task}): {text}" for task, text in self.caveats.items()]
        return "\n".join(lines + self.notes)


def _flat(settings: EvalSettings) -> dict:
    return {"system_prompt": settings.system_prompt, **settings.generation.to_dict()}


def _problems(before: EvalReport, after: EvalReport) -> list[str]:
    problems = []
    b_set, a_set = _flat(before.settings), _flat(after.settings)
    diff = [f"{k}: {b_set[k]!r} vs {a_set[k]!r}" for k in b_set if b_set[k] != a_set[k]]
    if diff:
        problems.append("settings differ: " + "; ".join(diff))
    b_ids, a_ids = {r["id"] for r in before.records}, {r["id"] for r in after.records}
    if b_ids != a_ids:
        problems.append(
            f"items differ: {len(b_ids - a_ids)} only before, {len(a_ids - b_ids)} only after"
        )
    elif before.prompts_digest != after.prompts_digest:
        problems.append("the same items were asked with different prompts")
    return problems


def compare(before: EvalReport, after: EvalReport) -> Comparison:
    """Accuracy deltas per task; refuses (``IncomparableReports``) unless both reports used
    the same settings, the same items and the same prompts. ``gained``/``lost`` count items
    that flipped to right/wrong (``flips`` lists their ids); ``p_value`` is McNemar's exact
    test on those flips."""
    problems = _problems(before, after)
    if problems:
        raise IncomparableReports(
            f"cannot compare {before.name or 'before'} with {after.name or 'after'}: "
            + "; ".join(problems)
        )
    after_by_id = {r["id"]: r for r in after.records}
    rows = {}
    for task in [*before.by_task, "all"]:
        pairs = [(r, after_by_id[r["id"]]) for r in before.records if task in ("all", r["task"])]
        gained = sum(not b["correct"] and a["correct"] for b, a in pairs)
        lost = sum(b["correct"] and not a["correct"] for b, a in pairs)
        b_acc = sum(b["correct"] for b, _ in pairs) / len(pairs)
        a_acc = sum(a["correct"] for _, a in pairs) / len(pairs)
        rows[task] = {
            "n": len(pairs),
            "before": b_acc,
            "after": a_acc,
            "delta": a_acc - b_acc,
            "gained": gained,
            "lost": lost,
            "p_value": mcnemar_p(gained, lost),
        }
    pairs = [(r, after_by_id[r["id"]]) for r in before.records]
    flips = {
        "gained": [b["id"] for b, a in pairs if not b["correct"] and a["correct"]],
        "lost": [b["id"] for b, a in pairs if b["correct"] and not a["correct"]],
    }
    caveats = _caveats(before, after, rows)
    recall = {
        task: {k: (v, after.by_task[task].recall[k]) for k, v in s.recall.items()}
        for task, s in before.by_task.items()
        if s.recall is not None
    }
    notes = []
    if before.backend != after.backend:
        notes.append(f"note: backends differ ({before.backend} vs {after.backend})")
    if before.failed or after.failed:
        notes.append(
            f"note: failed items (counted wrong): {before.failed} before, {after.failed} after"
        )
    names = (before.name or "before", after.name or "after")
    return Comparison(*names, rows, notes, flips, caveats, recall)


def _caveats(before: EvalReport, after: EvalReport, rows: dict) -> dict[str, str]:
    """Per task, and for ``all`` when any task has one: a model (after, or before) that
    gives one answer to more than ``COLLAPSE_SHARE`` of the task's items. Each caveat reads
    on its own, wherever the p-value it belongs to is shown."""
    caveats, short = {}, []
    for task in before.by_task:
        found = []
        for who, report in (("after", after), ("before", before)):
            s = report.by_task[task]
            if collapse_note(s, task, who):
                found.append(collapse_note(s, task, who))
                short.append(f"{who} {s.dominant_answer!r} {100 * s.dominant_share:.0f}% of {task}")
        if found:
            caveats[task] = (
                "; ".join(found) + ". Its accuracy is then that answer's share of the gold "
                f"labels, so McNemar's p ({rows[task]['p_value']:.3f}) says the answers' "
                "distribution changed, not that the model reasons better"
            )
    if caveats:
        caveats["all"] = (
            f"one answer to over {100 * COLLAPSE_SHARE:.0f}% of a task's items ("
            + ", ".join(short)
            + "): those tasks' changes follow the answer distribution, not better reasoning"
        )
    return caveats
