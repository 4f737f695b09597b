"""Sampled evaluation's records and report: k completions per item, scored as avg@k, maj@k and
pass@k, beside greedy decoding on the same items (issue 25).

``loop.evaluate`` with ``settings.generation.samples = k > 1`` draws k completions per
item (vLLM: one request with ``n=k``; transformers: one ``generate`` call with
``num_return_sequences=k``; a plain callable: each prompt k times in one call), scores each
with the harness's one extractor, and writes one record per item holding its k samples
(``sampled_record``). ``SampledReport.from_records`` computes, per task and overall, with
``sampled_stats``:

- **avg@k**: the mean accuracy of the samples, with an interval that counts items, not
  samples, as independent (the k samples of one item are alike);
- **maj@k**: the accuracy of each item's most frequent answer (self-consistency; ties go to
  the answer sampled first), with a Wilson interval;
- **pass@k**: the share of items with at least one right sample among k (Chen et al.'s
  estimator). Not an accuracy: nobody can pick the right sample without the answer key, and a
  model that guesses among four letters has pass@8 = 1 - 0.75^8 = 90%.

``with_greedy(report)`` puts the greedy evaluation of the same items beside them (it refuses
other items, prompts, system prompt, token budget or model), ``summary()`` prints them side
by side with the settings (k, temperature, top_p, seed, max_new_tokens) and how published
numbers decoded (``benchmarks.PUBLISHED``'s ``decoding``), and ``save`` writes it all as JSON
beside the records' JSONL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medreason_lib.data.benchmarks import AUTHORS_DECODING
from medreason_lib.evaluation.records import RecordsReport
from medreason_lib.evaluation.reports import EvalReport, EvalSettings, IncomparableReports, _pct
from medreason_lib.scoring.sampled_stats import (
    SampledScore,
    avg_at_k,
    maj_at_k,
    majority_answer,
    pass_at_k_score,
    signal_share,
)

# What a sample keeps of the harness's one-completion record (``loop._score``).
SAMPLE_FIELDS = ("extracted", "correct", "well_formed", "completion", "truncated", "n_tokens")
ITEM_FIELDS = ("id", "task", "gold", "error", "prompt_hash", "settings_hash", "model")


def sampled_record(scored: list[dict], gold_answer: str | None) -> dict:
    """One item's record from its k scored samples (each a one-completion record, in sampling
    order): the item's fields once, ``samples``, the majority answer and whether it is right.
    ``gold_answer`` is the gold as the extractor normalises it (what ``correct`` compares)."""
    record = {key: scored[0][key] for key in ITEM_FIELDS}
    record["gold_answer"] = gold_answer
    record["samples"] = [{key: s[key] for key in SAMPLE_FIELDS} for s in scored]
    majority = majority_answer([s["extracted"] for s in scored])
    record["majority"] = majority
    record["majority_correct"] = majority is not None and majority == gold_answer
    return record


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class SampledStats:
    """The three protocols over one group of items (a task, or ``all``), and what the samples
    looked like (rates over all n x k samples, failed ones included)."""

    n: int
    k: int
    failed: int  # items whose generation raised (their k samples count as wrong)
    avg: SampledScore
    maj: SampledScore
    pass_k: SampledScore
    format_rate: float
    unparsed_rate: float
    truncation_rate: float | None  # None when the backend could not tell
    mean_tokens: float | None


def sampled_stats(records: list[dict], task: str | None = None) -> SampledStats:
    """avg@k, maj@k and pass@k of ``records`` (``sampled_record``s of equal k; ``task``, the
    group's name, changes nothing: the three scores need no label set)."""
    correct = [[s["correct"] for s in r["samples"]] for r in records]
    answers = [[s["extracted"] for s in r["samples"]] for r in records]
    samples = [(s, r["error"]) for r in records for s in r["samples"]]
    answered = [s for s, error in samples if error is None]
    truncation = [float(s["truncated"]) for s in answered if s["truncated"] is not None]
    k = len(correct[0])
    return SampledStats(
        n=len(records),
        k=k,
        failed=sum(r["error"] is not None for r in records),
        avg=avg_at_k(correct),
        maj=maj_at_k(answers, [r["gold_answer"] for r in records]),
        pass_k=pass_at_k_score(correct, k),
        format_rate=sum(s["well_formed"] for s, _ in samples) / len(samples),
        unparsed_rate=sum(s["extracted"] is None for s in answered) / len(samples),
        truncation_rate=_mean(truncation),
        mean_tokens=_mean([s["n_tokens"] for s in answered if s["n_tokens"] is not None]),
    )


def _score_text(value: float, ci: tuple[float, float]) -> str:
    return f"{_pct(value).strip()} [{_pct(ci[0]).strip()}, {_pct(ci[1]).strip()}]"


def _greedy_figures(report: EvalReport) -> dict:
    groups = {**report.by_task, "all": report.overall}
    return {
        task: {"n": s.n, "correct": s.correct, "accuracy": s.accuracy, "ci95": s.ci95}
        for task, s in groups.items()
    }


@dataclass
class SampledReport(RecordsReport):
    """What ``evaluate`` returns with ``samples = k > 1``: ``overall`` and ``by_task``
    ``SampledStats``, the settings, every item's record, and (``with_greedy``) the greedy
    evaluation's accuracy on the same items."""

    _group_stats = staticmethod(sampled_stats)  # overall and by_task are SampledStats
    _settings_class = EvalSettings
    _kept = (*RecordsReport._kept, "greedy")

    greedy: dict | None = None  # ``with_greedy``: name, model, settings, figures per task

    @property
    def k(self) -> int:
        return self.settings.generation.samples

    def pass_at(self, k: int, task: str | None = None) -> SampledScore:
        """pass@k for any k up to the samples drawn (``task``: one task's items only)."""
        rows = [r for r in self.records if task in (None, r["task"])]
        return pass_at_k_score([[s["correct"] for s in r["samples"]] for r in rows], k)

    def signal_share(self, task: str | None = None) -> float:
        """The share of items with some but not all samples right (``sampled_stats.
        signal_share``): at G = k, the prompts a GRPO step could learn from through
        correctness."""
        rows = [r for r in self.records if task in (None, r["task"])]
        return signal_share([[s["correct"] for s in r["samples"]] for r in rows])

    def with_greedy(self, greedy: EvalReport) -> SampledReport:
        """Put ``greedy``'s accuracy beside the sampled scores. It must be a greedy evaluation
        of the same model on the same items with the same prompts, system prompt, token budget
        and chat-template keywords (``IncomparableReports`` says what differs)."""
        mine, theirs = self.settings.generation, greedy.settings.generation
        problems = [] if theirs.greedy else [f"it is not greedy (temperature {theirs.temperature})"]
        if {r["id"] for r in greedy.records} != {r["id"] for r in self.records}:
            problems.append("the items differ")
        elif greedy.prompts_digest != self.prompts_digest:
            problems.append("the same items were asked with different prompts")
        if greedy.settings.system_prompt != self.settings.system_prompt:
            problems.append("the system prompts differ")
        for key in ("max_new_tokens", "chat_template_kwargs"):
            if getattr(mine, key) != getattr(theirs, key):
                problems.append(f"{key}: {getattr(theirs, key)!r} vs {getattr(mine, key)!r}")
        if greedy.model != self.model:
            problems.append(f"another model ({greedy.model} vs {self.model})")
        if problems:
            raise IncomparableReports(
                f"cannot put {greedy.name or 'that report'} beside {self.name or 'these samples'}"
                ": " + "; ".join(problems)
            )
        self.greedy = {
            "name": greedy.name,
            "model": greedy.model,
            "settings": greedy.settings.to_dict(),
            "by_task": _greedy_figures(greedy),
        }
        return self

    def summary(self) -> str:
        """A table: greedy (when ``with_greedy`` gave it), avg@k, maj@k and pass@k per task."""
        g, k = self.settings.generation, self.k
        lines = [
            f"sampled eval {self.name or '(unsaved)'}: {self.n} items x {k} samples, "
            f"{self.failed} failed; backend {self.backend}; temperature {g.temperature}, "
            f"top_p {g.top_p}, top_k {g.top_k or 'off'}, seed {g.seed}, max_new_tokens "
            f"{g.max_new_tokens}",
            f"{'task':<13}{'n':>5}  "
            + " ".join(
                f"{c:<23}" for c in ("greedy", f"avg@{k}", f"maj@{k}", f"pass@{k}")
            ).rstrip(),
        ]
        if self.model:
            lines.insert(1, f"model {self.model}")
        greedy = (self.greedy or {}).get("by_task", {})
        for task, s in [*self.by_task.items(), ("all", self.overall)]:
            gr = greedy.get(task)
            shown = _score_text(gr["accuracy"], gr["ci95"]) if gr else "-"
            scores = [_score_text(x.value, x.ci95) for x in (s.avg, s.maj, s.pass_k)]
            cells = " ".join(f"{c:<23}" for c in [shown, *scores])
            lines.append(f"{task:<13}{s.n:>5}  {cells}".rstrip())
        o = self.overall
        lines += [
            f"samples: format {_pct(o.format_rate).strip()}, unparsed "
            f"{_pct(o.unparsed_rate).strip()}, truncated {_pct(o.truncation_rate).strip()}"
            + ("" if o.mean_tokens is None else f", {o.mean_tokens:.1f} tokens on average"),
            f"avg@{k}: the samples' mean accuracy, its 95% interval counting items (not "
            "samples) as independent.",
            f"maj@{k}: each item's most frequent answer (ties: the first sampled); greedy and "
            f"maj@{k}: Wilson intervals.",
            f"pass@{k}: at least one of {k} samples right (Chen et al.). NOT an accuracy: nobody "
            "can pick the right sample",
            f"  without the answer key (four letters at random: pass@{k} = {1 - 0.75**k:.0%}).",
            "published numbers (data.benchmarks.PUBLISHED, 'decoding'): none states its decoding;",
            *(f"  {name}'s own evaluator: {d['protocol']}" for name, d in AUTHORS_DECODING.items()),
        ]
        return "\n".join(lines)

    __str__ = summary

    @classmethod
    def load(cls, path: str | Path) -> SampledReport:
        """Read a saved report back, its scores recomputed from its records file."""
        generation = json.loads(Path(path).read_text())["settings"]["generation"]
        if generation.get("samples", 1) < 2:
            raise ValueError(f"{path} is a one-sample report: read it with EvalReport.load")
        return super().load(path)
