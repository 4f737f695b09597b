"""A profile's GRPO training data: the task mix, each task's labels chosen, decontaminated.

The training mix is this folder, read top-down: this module builds it (the pools, the task
shares through ``data.mix``, each task's labels, decontamination, the report), and
``label_balance`` does the label sampling it asks for (targets, scarce labels, shuffled
options). Nothing in ``label_balance`` calls back here.

``build_training_mix(profile)`` draws ``profile.train_size`` rows, ``profile.mix_weights``
of them per task (70% PubMedQA / 30% GSM8K by default), from each task's training pool
(``profile.train_splits``: on the GPU profiles PubMedQA's 500 labelled non-test items
together with the 211k machine-labelled ``pqa_artificial``). Tasks with a closed answer set
get the label distribution the profile chooses (``label_balance``):

- ``profile.label_targets[task]``: ``{label: share}``; a task left out gets its default:
  PubMedQA the shares of its *labelled* training split (yes/no/maybe as the experts
  labelled them, about 55/34/11), multiple choice a uniform A-D; ``None`` keeps the
  source's own distribution.
- ``profile.scarce_labels``: what to do when a label has fewer rows than its target
  ("replace", "cap", "error"; the printed notes say which happened).
- ``profile.shuffle_options``: balance the correct letter by shuffling options (else by
  sampling rows by letter).

``decontaminate_training_set(rows, profile)`` removes every training row that is, or
overlaps, an item of an evaluation set the course reports (PubMedQA test with the official
test PMIDs, MedQA test, MedMCQA validation, MMLU medical test, GSM8K test), counting the
removals per task. ``prepare_training_data`` is both steps, and what ``training.train``
calls: it returns the rows to train on and what ``run.json`` records about them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset, concatenate_datasets

from medreason_lib import data
from medreason_lib.data.benchmarks import evaluation_source
from medreason_lib.data.decontamination import Contamination, decontaminate_against
from medreason_lib.data.raw_formats import official_pubmedqa_test_pmids
from medreason_lib.data.training_mix import label_balance
from medreason_lib.data.training_mix.label_balance import TaskBalance, label_shares, task_labels
from medreason_lib.scoring.stats import largest_remainder
from medreason_lib.settings.profiles import Profile
from medreason_lib.settings.progress import say_once

EVAL_SPLITS = {task: "test" for task in data.TASKS}  # MedMCQA's "test" is its validation set


@dataclass
class MixReport:
    """What ``build_training_mix`` built: rows per task and, per closed-answer task, the
    source's label shares, the target, and the shares delivered (``TaskBalance``)."""

    n: int
    seed: int
    rows: dict[str, int]
    tasks: dict[str, TaskBalance] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # where each target came from

    @property
    def targets(self) -> dict[str, dict[str, float] | None]:
        return {t: b.target for t, b in self.tasks.items()}

    @property
    def label_shares(self) -> dict[str, dict[str, float]]:
        return {t: {k: round(v, 4) for k, v in b.shares.items()} for t, b in self.tasks.items()}

    @property
    def notes(self) -> list[str]:
        return [f"{t}: {note}" for t, b in self.tasks.items() for note in b.notes]

    def shares_text(self, task: str) -> str:
        """``yes 55.2% / no 33.8% / maybe 11.0%``: the mix's label shares of ``task``."""
        return " / ".join(f"{k} {100 * v:.1f}%" for k, v in self.tasks[task].shares.items())

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "label_targets": self.targets,
            "target_origins": self.origins,
            "tasks": {t: b.to_dict() for t, b in self.tasks.items()},
        }

    def __str__(self) -> str:
        lines = [f"training mix labels ({self.n} rows, seed {self.seed}):"]
        for task, balance in self.tasks.items():
            lines.append(f"{balance}\n  target: {self.origins.get(task, '-')}")
        return "\n".join(lines)

    def plot(self):
        """Bars per task: the source's label shares, the target and the mix's shares."""
        import matplotlib.pyplot as plt
        import pandas as pd

        tasks = list(self.tasks)
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 2.8), squeeze=False)
        for ax, task in zip(axes[0], tasks, strict=True):
            b = self.tasks[task]
            shares = {"source": b.pool_shares, "target": b.target or {}, "mix": b.shares}
            frame = pd.DataFrame(shares, index=list(b.counts)).fillna(0.0)
            frame.plot.bar(ax=ax, rot=0, width=0.8, ylim=(0, 1), legend=False)
            ax.set_title(f"{task} ({b.n} rows)")
        axes[0][0].set_ylabel("share of the task's rows")
        axes[0][0].legend(fontsize="small")
        fig.tight_layout()
        return fig


# --------------------------------------------------------------------------- pools


def train_splits(profile: Profile, task: str) -> tuple[str, ...]:
    """The splits whose rows make ``task``'s training pool (``profile.train_splits``)."""
    value = profile.train_splits.get(task, "train")
    splits = (value,) if isinstance(value, str) else tuple(value)
    allowed = [s for s in data.SPLITS[task] if s != EVAL_SPLITS[task]]
    bad = [s for s in splits if s not in allowed]
    if bad or not splits:
        raise ValueError(
            f"profile.train_splits[{task!r}] = {value!r}: {task} trains on {allowed or 'nothing'}"
            f" (its {EVAL_SPLITS[task]!r} split is what the course evaluates on)"
        )
    return splits


def training_pool(profile: Profile, task: str, seed: int) -> tuple[Dataset, dict[str, Dataset]]:
    """Every training row of ``task`` (its splits concatenated, an id seen twice kept once)
    and the splits themselves."""
    parts = {
        split: data.load_task(task, split, seed=seed, source=profile.data_source)
        for split in train_splits(profile, task)
    }
    pool = (
        concatenate_datasets(list(parts.values())) if len(parts) > 1 else next(iter(parts.values()))
    )
    if len(parts) > 1:
        seen, keep = set(), []
        for i, row_id in enumerate(pool["id"]):
            if row_id not in seen:
                seen.add(row_id)
                keep.append(i)
        if len(keep) < len(pool):
            print(f"{task}: {len(pool) - len(keep)} rows in more than one split kept once")
            pool = pool.select(keep)
    return pool, parts


def label_target(
    profile: Profile, task: str, parts: dict[str, Dataset], seed: int
) -> tuple[dict[str, float] | None, str]:
    """The target label shares of ``task`` and a sentence saying where they come from."""
    where = f"profile.label_targets[{task!r}]"
    if task_labels(task) is None:
        if profile.label_targets.get(task) is not None:
            raise ValueError(f"{where}: {task} answers with numbers; it has no labels to balance")
        return None, "none (answers are numbers)"
    if task in profile.label_targets:
        chosen = profile.label_targets[task]
        if chosen is None:
            return None, f"{where} = None: the source's own distribution, inherited"
        return label_balance.check_target(task, chosen, where), f"{where}"
    if task != "pubmedqa":
        return label_balance.uniform_target(task), "default: uniform over the letters"
    labelled = parts.get("train")
    if labelled is None:
        labelled = data.load_task(task, "train", seed=seed, source=profile.data_source)
    shares = label_shares(labelled)[task]
    return shares, f"default: the labelled train split's own shares ({len(labelled)} rows)"


# --------------------------------------------------------------------------- the mix


def build_training_mix(
    profile: Profile, n: int | None = None, seed: int | None = None
) -> tuple[Dataset, MixReport]:
    """The GRPO training mix of ``profile`` and what it holds (see the module docstring).
    Prints where each pool came from, the label table and every compromise."""
    n = n or profile.train_size
    seed = profile.seed if seed is None else seed
    weights = profile.mix_weights
    unknown = sorted(set(weights) - set(data.TASKS))
    if unknown:
        raise ValueError(
            f"profile.mix_weights names unknown task(s) {unknown}; valid: {data.TASKS}"
        )
    extra = sorted(set(profile.label_targets) - set(data.TASKS))
    if extra:
        raise ValueError(
            f"profile.label_targets names unknown task(s) {extra}; valid: {data.TASKS}"
        )
    counts = largest_remainder(weights, n)
    parts, report = {}, MixReport(n, seed, counts)
    for task, k in counts.items():
        pool, splits = training_pool(profile, task, seed)
        target, origin = label_target(profile, task, splits, seed)
        report.origins[task] = origin
        where = f"profile.label_targets[{task!r}]"
        if target is None or k == 0:
            parts[task] = pool  # data.mix takes its share
            continue
        if task_labels(task) == label_balance.LETTERS and profile.shuffle_options:
            if len(pool) < k:
                parts[task] = pool  # data.mix says why it cannot take its share
                continue
            chosen = pool.shuffle(seed=seed).select(range(k))
            parts[task], balance = label_balance.balance_choices(
                chosen, target, seed=seed, where=where
            )
        else:
            parts[task], balance = label_balance.sample_by_label(
                pool, target, k, seed=seed, scarce=profile.scarce_labels, task=task, where=where
            )
        balance.pool = label_balance.label_counts(pool)[task]
        report.tasks[task] = balance
    mixed = data.mix(parts, weights, n=n, seed=seed)
    delivered = label_balance.label_counts(mixed)
    for task in counts:
        if task in delivered and task not in report.tasks:  # inherited: say what it holds
            pool_counts = label_balance.label_counts(parts[task])[task]
            report.tasks[task] = TaskBalance(
                task, "inherited", None, pool_counts, delivered[task], delivered[task]
            )
    say_once(str(report), again=f"training mix labels: as above ({len(mixed)} rows, seed {seed})")
    return mixed, report


# --------------------------------------------------------------------------- decontamination


def evaluation_sets(profile: Profile) -> dict[str, Dataset]:
    """Every evaluation set the course reports, from the profile's data source, its
    evaluation source (``benchmarks.evaluation_source``) and the bundled samples (the
    notebooks' items on ``tiny``): name -> rows."""
    sources = dict.fromkeys([profile.data_source, evaluation_source(profile), "bundled"])
    sets = {}
    for source in sources:
        for task, split in EVAL_SPLITS.items():
            label = "validation" if task == "medmcqa" else split
            where = "" if source == profile.data_source else f" ({source})"
            name = f"{task} {label}{where}"
            sets[name] = data.load_task(task, split, source=source, verbose=False)
    return sets


def decontaminate_training_set(
    rows: Dataset, profile: Profile, *, verbose: bool = True
) -> tuple[Dataset, Contamination]:
    """``rows`` without any item of ``evaluation_sets(profile)`` or the official PubMedQA
    test PMIDs, nor any overlapping one (``decontaminate.decontaminate_against``)."""
    test_ids = {"pubmedqa": official_pubmedqa_test_pmids()}
    return decontaminate_against(rows, evaluation_sets(profile), test_ids=test_ids, verbose=verbose)


def prepare_training_data(profile: Profile, rows: Dataset | None = None) -> tuple[Dataset, dict]:
    """The rows ``train`` trains on (``rows``, or ``build_training_mix(profile)``), with
    every evaluation item removed, and the record ``run.json`` keeps: the label targets and
    the shares after decontamination, the notes, and the rows removed per task."""
    report = None
    if rows is None:
        rows, report = build_training_mix(profile)
    rows, contamination = decontaminate_training_set(rows, profile)
    shares = label_shares(rows)
    print(
        f"training data: {len(rows)} rows; label shares "
        + "; ".join(
            f"{task} " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in s.items())
            for task, s in shares.items()
        )
    )
    record = {
        "training_rows": len(rows),
        "label_targets": report.targets if report else None,
        "label_shares": shares,
        "label_notes": report.notes if report else [],
        "decontamination_removed": contamination.removed,
        "decontamination": contamination.to_dict(),
    }
    return rows, record
