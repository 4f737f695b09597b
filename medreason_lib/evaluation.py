"""Measuring a model on the course's benchmarks: ``evaluate``, its report, and ``compare``.

``evaluate(generate, dataset)`` sends every item's chat prompt through ``generate`` (a
callable, or a model that ``generation.make_generate`` wraps), reads each completion with the
same ``answers.extract_answer`` the correctness reward uses, and returns an ``EvalReport``:
accuracy with a 95% Wilson score interval, overall and per task, plus how often the model
kept the template (``format_rate``), gave no readable answer (``unparsed_rate``), ran out of
tokens (``truncation_rate``), which answers it gave against the gold ones, and every item's
record. Failed batches (the generator raised) are recorded and counted as wrong, never
dropped. With a ``name`` the records are appended to ``runs/<profile>/eval/<name>.jsonl``
batch by batch, so ``resume=True`` continues an interrupted run, and the report is saved
beside them as ``<name>.json``.

Every rate is over all ``n`` items of its group, failed ones included. ``compare(before,
after)`` refuses reports whose prompts, settings or items differ: a fair before/after
comparison changes the model and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import answers, data, paths, template
from .generation import GenerationSettings, make_generate, to_completion
from .profiles import Profile, get_profile

# The official evaluation sets (``data.load_task(name, "test")``) and their sizes.
BENCHMARKS = {"pubmedqa": 500, "medqa": 1273, "medmcqa": 4183, "mmlu_medical": 1089, "gsm8k": 1319}
Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


# --------------------------------------------------------------------------- statistics


def wilson_interval(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for ``k`` successes in ``n`` trials.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0/n or n/n.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def ci_half_width(n: int, p: float = 0.5, z: float = Z95) -> float:
    """Half the width of the Wilson interval at accuracy ``p`` with ``n`` items: roughly how
    far the true accuracy may be from the measured one (largest at p = 0.5)."""
    low, high = wilson_interval(p * n, n, z)
    return (high - low) / 2


def mcnemar_p(gained: int, lost: int) -> float:
    """Exact two-sided McNemar p-value: could ``gained`` vs ``lost`` flips be chance?"""
    flips = gained + lost
    if flips == 0:
        return 1.0
    tail = sum(math.comb(flips, i) for i in range(min(gained, lost) + 1)) / 2**flips
    return min(1.0, 2 * tail)


# --------------------------------------------------------------------------- benchmarks


def load_benchmark(name: str, n: int | None = None, seed: int = 0, source=None):
    """The evaluation set of a benchmark, or a seeded subsample of ``n`` items.

    PubMedQA: the official 500 test PMIDs; MedQA: test (1273); MedMCQA: validation (4183,
    data's ``"test"``); MMLU: the six medical subjects (1089); GSM8K: test (1319). The
    subsample is ``shuffle(seed).select(range(n))``, like ``data.load_task``. Asking for more
    than the source holds (the bundled samples have 16-24 items) uses them all and says so.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    full = data.load_task(name, "test", source=source, seed=seed)
    if len(full) != BENCHMARKS[name]:
        print(f"  note: {name}'s official evaluation set has {BENCHMARKS[name]} items")
    if n is None:
        return full
    if n > len(full):
        print(f"  note: asked for {n} {name} items, the source has {len(full)}: using all")
        n = len(full)
    return full.shuffle(seed=seed).select(range(n))


def load_benchmarks(names=None, n: int | None = None, seed: int = 0, source=None):
    """Several benchmarks (default: all five) concatenated into one dataset."""
    from datasets import concatenate_datasets

    parts = [load_benchmark(name, n, seed, source) for name in names or BENCHMARKS]
    return concatenate_datasets(parts)


def gold_baselines(dataset) -> dict[str, dict]:
    """Per task: ``chance`` (1/labels for closed answer sets, None for numbers) and
    ``majority`` (the share of the commonest gold answer, what always saying it scores)."""
    golds: dict[str, Counter] = {}
    for row in dataset:
        golds.setdefault(row["task"], Counter())[row["answer"]] += 1
    result = {}
    for task, counts in golds.items():
        labels = _labels(task)
        label, top = counts.most_common(1)[0]
        result[task] = {
            "n": sum(counts.values()),
            "chance": 1 / len(labels) if labels else None,
            "majority": top / sum(counts.values()),
            "majority_label": label,
        }
    return result


def _labels(task: str) -> tuple[str, ...] | None:
    kind = answers.answer_type(task)
    return {"yes_no_maybe": ("yes", "no", "maybe"), "choice": tuple("ABCD")}.get(kind)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class EvalSettings:
    """What must be identical before and after training: the system prompt (None: no
    system message) and the generation settings (greedy unless a temperature is set)."""

    system_prompt: str | None = template.SYSTEM_PROMPT
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    @classmethod
    def from_profile(cls, profile: Profile, *, sample: bool = False, **changes) -> EvalSettings:
        """The template system prompt and ``GenerationSettings.from_profile`` (greedy)."""
        return cls(generation=GenerationSettings.from_profile(profile, sample=sample), **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EvalSettings:
        return cls(d["system_prompt"], GenerationSettings(**d["generation"]))

    def digest(self) -> str:
        return _digest(self.to_dict())


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def chat_prompt(row: dict, system_prompt: str | None) -> list[dict[str, str]]:
    """The row's conversation with its system message replaced by ``system_prompt``."""
    turns = row.get("prompt") or [{"role": "user", "content": data.user_prompt(row)}]
    turns = [dict(m) for m in turns if m["role"] != "system"]
    system = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return system + turns


# --------------------------------------------------------------------------- report


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


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def _label(record: dict) -> str:
    if record["error"] is not None:
        return "failed"
    return "unparsed" if record["extracted"] is None else record["extracted"]


def task_stats(records: list[dict], task: str | None = None) -> TaskStats:
    """Summarise records (all of one task when ``task`` is given, which enables the
    confusion matrix for closed answer sets)."""
    n = len(records)
    answered = [r for r in records if r["error"] is None]
    correct = sum(r["correct"] for r in records)
    truncation = [r["truncated"] for r in answered if r["truncated"] is not None]
    tokens = [r["n_tokens"] for r in answered if r["n_tokens"] is not None]
    labels = _labels(task) if task else None
    confusion = None
    if labels:
        cols = (*labels, "unparsed", "failed")
        confusion = {g: dict.fromkeys(cols, 0) for g in labels}
        for r in records:
            confusion.setdefault(r["gold"], dict.fromkeys(cols, 0))[_label(r)] += 1
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
    )


def _pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:5.1f}%"


@dataclass
class EvalReport:
    """The result of ``evaluate``: ``overall`` and ``by_task`` stats, settings, records."""

    name: str | None
    settings: EvalSettings
    backend: str
    overall: TaskStats
    by_task: dict[str, TaskStats]
    items_digest: str  # the evaluated ids (sorted)
    prompts_digest: str  # every item's exact chat prompt
    records: list[dict] = field(repr=False)
    seconds: float | None = None
    records_path: str | None = None

    @classmethod
    def from_records(cls, records: list[dict], settings: EvalSettings, **meta) -> EvalReport:
        tasks = sorted({r["task"] for r in records})
        by_task = {t: task_stats([r for r in records if r["task"] == t], t) for t in tasks}
        return cls(
            settings=settings,
            overall=task_stats(records),
            by_task=by_task,
            items_digest=_digest(sorted(r["id"] for r in records)),
            prompts_digest=_digest(sorted((r["id"], r["prompt_hash"]) for r in records)),
            records=records,
            **meta,
        )

    @property
    def accuracy(self) -> float:
        return self.overall.accuracy

    @property
    def n(self) -> int:
        return self.overall.n

    @property
    def failed(self) -> int:
        return self.overall.failed

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
        for task, s in [*self.by_task.items(), ("all", self.overall)]:
            ci = f"[{_pct(s.ci95[0]).strip()}, {_pct(s.ci95[1]).strip()}]"
            chars = "-" if s.mean_chars is None else f"{s.mean_chars:.0f}"
            tokens = "-" if s.mean_tokens is None else f"{s.mean_tokens:.1f}"
            lines.append(
                f"{task:<13}{s.n:>5} {_pct(s.accuracy):>8}  {ci:<16} {_pct(s.format_rate):>6} "
                f"{_pct(s.unparsed_rate):>8} {_pct(s.truncation_rate):>9} {s.failed:>6} "
                f"{chars:>6} {tokens:>6}"
            )
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self, records: bool = False) -> dict:
        d = asdict(self)
        if not records:
            d.pop("records")
        return d

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON: the stats, settings and the item ids in order; the
        records themselves live in the JSONL file of the same name."""
        path = Path(path)
        meta = self.to_dict() | {"ids": [r["id"] for r in self.records]}
        path.write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> EvalReport:
        """Read a saved report back, its stats recomputed from its records file."""
        meta = json.loads(Path(path).read_text())
        jsonl = Path(path).with_suffix(".jsonl")
        done = read_records(jsonl)
        missing = [i for i in meta["ids"] if i not in done]
        if missing:
            raise ValueError(f"{jsonl} lacks {len(missing)} of the report's items")
        return cls.from_records(
            [done[i] for i in meta["ids"]],
            EvalSettings.from_dict(meta["settings"]),
            name=meta["name"],
            backend=meta["backend"],
            seconds=meta["seconds"],
            records_path=str(jsonl),
        )


# --------------------------------------------------------------------------- records


def read_records(path: Path) -> dict[str, dict]:
    """The records of a JSONL file by id (a later line for an id replaces an earlier one).

    A last line cut short by an interruption is ignored; a damaged line elsewhere raises.
    """
    lines = path.read_text().splitlines() if path.exists() else []
    done = {}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                print(f"{path}: ignoring a cut-off last line")
                continue
            raise ValueError(f"{path}, line {i + 1}: not valid JSON") from None
        done[record["id"]] = record
    return done


def _score(item: dict, completion, error: str | None, tokenizer) -> dict:
    """One record: what the model said and whether it is right (the rewards' extractor)."""
    text = "" if completion is None else completion.text
    extracted = None if error else answers.extract_answer(text, item["task"], item["options"])
    gold = answers.normalize_answer(item["gold"], item["task"], item["options"])
    n_tokens = None if completion is None else completion.n_tokens
    if n_tokens is None and tokenizer is not None and completion is not None:
        n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return {
        "id": item["id"],
        "task": item["task"],
        "gold": item["gold"],
        "extracted": extracted,
        "correct": extracted is not None and extracted == gold,
        "well_formed": error is None and template.parse_completion(text).well_formed,
        "completion": text,
        "error": error,
        "truncated": None if completion is None else completion.truncated,
        "n_tokens": n_tokens,
        "prompt_hash": item["prompt_hash"],
        "settings_hash": item["settings_hash"],
    }


def _items(dataset, settings: EvalSettings) -> list[dict]:
    items, seen = [], set()
    settings_hash = settings.digest()
    for row in dataset:
        row = dict(row)
        if row["id"] in seen:
            raise ValueError(f"duplicate item id {row['id']!r}: ids must be unique")
        seen.add(row["id"])
        messages = chat_prompt(row, settings.system_prompt)
        items.append(
            {
                "id": row["id"],
                "task": row["task"],
                "gold": str(row["answer"]),
                "options": list(row.get("options") or []) or None,
                "messages": messages,
                "prompt_hash": _digest(messages),
                "settings_hash": settings_hash,
            }
        )
    if not items:
        raise ValueError("the dataset is empty: there is nothing to evaluate")
    return items


def _prompt_chars(item: dict) -> int:
    return sum(len(m["content"]) for m in item["messages"])


def _resumed(path: Path, items: list[dict]) -> dict[str, dict]:
    """Finished records of ``path`` for these items; failed ones are tried again."""
    by_id = {it["id"]: it for it in items}
    done = {}
    for rid, rec in read_records(path).items():
        item = by_id.get(rid)
        if item is None or rec["error"] is not None:
            continue
        if (rec["prompt_hash"], rec["settings_hash"]) != (
            item["prompt_hash"],
            item["settings_hash"],
        ):
            raise ValueError(
                f"{path}: item {rid!r} was evaluated with another prompt or other settings; "
                "evaluate under another name, or with resume=False to start over"
            )
        done[rid] = rec
    return done


# --------------------------------------------------------------------------- evaluate


def _progress(total: int, desc: str, enabled: bool):
    """tqdm's notebook bar where ipywidgets is installed (Colab), else the text bar."""
    try:
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="item", disable=not enabled)


def _generate_batch(gen, batch: list[dict], number: int) -> tuple[list, str | None]:
    """Completions of one batch, or ``([None...], error)`` when the generator raised."""
    try:
        outputs = list(gen([it["messages"] for it in batch]))
    except Exception as exc:  # a failed batch is recorded, never silently dropped
        return [None] * len(batch), f"{type(exc).__name__}: {exc}"
    where = f"batch {number} (items {batch[0]['id']} .. {batch[-1]['id']})"
    if len(outputs) != len(batch):
        raise ValueError(
            f"{where}: generate returned {len(outputs)} completions for {len(batch)} prompts"
        )
    try:
        return [to_completion(o) for o in outputs], None
    except TypeError as exc:
        raise TypeError(f"{where}: {exc}") from None


def _records_path(name: str | None, out_dir, profile: Profile) -> Path | None:
    if name is None:
        return None
    folder = Path(out_dir) if out_dir else paths.runs_dir(profile.name) / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.jsonl"


def _run(gen, items, done: dict, path: Path | None, batch_size: int, tokenizer, bar) -> None:
    """Generate and score the items not in ``done``, shortest prompt first (less padding),
    adding each batch's records to ``done`` and appending them to ``path``."""
    pending = sorted((it for it in items if it["id"] not in done), key=_prompt_chars)
    for number, start in enumerate(range(0, len(pending), batch_size)):
        batch = pending[start : start + batch_size]
        completions, error = _generate_batch(gen, batch, number)
        records = [
            _score(it, c, error, tokenizer) for it, c in zip(batch, completions, strict=True)
        ]
        done.update((r["id"], r) for r in records)
        if path:
            with path.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        bar.update(len(batch))
        bar.set_postfix_str(f"accuracy {sum(r['correct'] for r in done.values()) / len(done):.1%}")


def evaluate(
    generate,
    dataset,
    *,
    tokenizer=None,
    settings: EvalSettings | None = None,
    profile: Profile | None = None,
    batch_size: int | None = None,
    name: str | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    lora_path: str | Path | None = None,
    progress: bool = True,
) -> EvalReport:
    """Evaluate ``generate`` on ``dataset`` (rows with ``id, task, answer, options, prompt``).

    ``generate``: a callable ``list of chat prompts -> list of completions`` (strings, or
    ``Completion``/dicts/objects carrying ``text`` and ``truncated``), or a model: a
    ``(model, tokenizer)`` pair, a model with ``tokenizer=``, an Unsloth vLLM model (with
    ``lora_path``) or a vLLM engine, wrapped by ``generation.make_generate``. ``tokenizer``
    also lets token lengths be counted for plain callables.
    ``settings``: default ``EvalSettings.from_profile(profile)`` (the profile defaults to
    ``get_profile()``). ``batch_size``: prompts per generate call (default: the backend's).
    ``name``: save records to ``<out_dir>/<name>.jsonl`` (default out_dir
    ``runs/<profile>/eval``) after every batch and the report to ``<name>.json``;
    ``resume=True`` keeps the finished records of that file and generates only the rest
    (without it, an existing file is replaced). Items run shortest prompt first, to pad less.
    """
    profile = profile or get_profile()
    settings = settings or EvalSettings.from_profile(profile)
    items = _items(dataset, settings)
    gen = make_generate(generate, tokenizer, settings=settings.generation, lora_path=lora_path)
    path = _records_path(name, out_dir, profile)
    done = _resumed(path, items) if (path and resume) else {}
    if path and not resume and path.exists():
        print(f"note: replacing the earlier records in {path} (resume=True would continue them)")
        path.unlink()
    began = time.perf_counter()
    with _progress(len(items), f"eval {name or ''}".strip(), progress) as bar:
        bar.update(len(done))
        batch_size = batch_size or getattr(gen, "default_batch_size", 16)
        try:
            _run(gen, items, done, path, batch_size, tokenizer, bar)
        except KeyboardInterrupt:
            kept = (
                f"records in {path}; resume=True continues" if path else "nothing saved (no name)"
            )
            print(f"\ninterrupted after {len(done)}/{len(items)} items; {kept}")
            raise
    report = EvalReport.from_records(
        [done[it["id"]] for it in items],
        settings,
        name=name,
        backend=getattr(gen, "backend", "callable"),
        seconds=round(time.perf_counter() - began, 2),
        records_path=str(path) if path else None,
    )
    if report.failed:
        print(
            f"WARNING: {report.failed} of {report.n} items failed (see records' 'error'); "
            "they count as wrong"
        )
    if path:
        report.save(path.with_suffix(".json"))
    return report


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

    def __str__(self) -> str:
        lines = [
            f"{self.before} -> {self.after} (same items, prompts and settings)",
            f"{'task':<13}{'n':>5} {'before':>7} {'after':>7} {'delta':>7} "
            f"{'gained':>6} {'lost':>5} {'McNemar p':>9}",
        ]
        for task, r in self.rows.items():
            lines.append(
                f"{task:<13}{r['n']:>5} {_pct(r['before']):>7} {_pct(r['after']):>7} "
                f"{100 * r['delta']:+6.1f}  {r['gained']:>6} {r['lost']:>5} {r['p_value']:>9.3f}"
            )
        return "\n".join(lines + self.notes)


def _flat(settings: EvalSettings) -> dict:
    return {"system_prompt": settings.system_prompt, **settings.generation.to_dict()}


def compare(before: EvalReport, after: EvalReport) -> Comparison:
    """Accuracy deltas per task; refuses (``IncomparableReports``) unless both reports used
    the same settings, the same items and the same prompts. ``gained``/``lost`` count items
    that flipped to right/wrong; ``p_value`` is McNemar's exact test on those flips."""
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
    notes = []
    if before.backend != after.backend:
        notes.append(f"note: backends differ ({before.backend} vs {after.backend})")
    if before.failed or after.failed:
        notes.append(
            f"note: failed items (counted wrong): {before.failed} before, {after.failed} after"
        )
    return Comparison(before.name or "before", after.name or "after", rows, notes)
