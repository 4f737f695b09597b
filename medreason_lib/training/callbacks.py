"""What a GRPO run shows while it trains: metrics to CSV, sample completions, reward timing,
and the answers the policy gives.

- ``RecordedReward`` wraps a reward function (keeping its name, which TRL logs as
  ``rewards/<name>/mean``), remembers the last batch it scored and the time it spent, and
  hands every batch to its ``listeners``.
- ``AnswerShares`` listens to one recorded reward and logs, at every logging step, the share
  of each extracted answer per task and the format rate; it raises the collapse alarm
  (``CollapseWarning``, once) when one answer takes over while the data is not that skewed.
- ``MetricsCSV`` writes every logged metric row to ``metrics.csv`` in the run folder, so the
  plots work offline and after a disconnect; on resume it drops rows past the checkpoint.
- ``SamplePrinter`` prints one completion and its rewards every N steps.
- ``CourseProgress`` is the run's progress bar (``progress.progress_bar``: true in a saved
  notebook), its postfix the last logged reward (or loss); ``use_course_progress`` puts it in
  place of the Trainer's own bar, its "Training Loss" table and its printed ``{'loss': ...}``
  dicts.
"""

from __future__ import annotations

import csv
import functools
import time
import warnings
from collections import Counter
from pathlib import Path

from transformers import TrainerCallback

from medreason_lib.data.user_rewards import RewardError, RewardWarning, describe_call
from medreason_lib.scoring.answers import answer_type, extract_answer, normalize_answer
from medreason_lib.scoring.rewards import follows_format
from medreason_lib.scoring.stats import (
    COLLAPSE_SHARE,  # one answer above this share of a task's completions ...
)
from medreason_lib.scoring.template import completion_text
from medreason_lib.settings.progress import progress_bar

DATA_MAJORITY_LIMIT = 0.7  # ... while the data's commonest label is below this share ...
COLLAPSE_STEPS = 3  # ... for this many logging steps in a row: the alarm
CLOSED_LABELS = {"yes_no_maybe": ("yes", "no", "maybe"), "choice": ("A", "B", "C", "D")}


class RecordedReward:
    """A reward function that also keeps its last inputs/outputs and its total time.

    One bad completion never ends a run: when the reward raises on a batch, each completion
    is scored again alone, and one that still raises gets None (no reward: TRL leaves it out
    of the sum), counted in ``failed``, with a ``user_rewards.RewardWarning``. A reward that
    raises on every completion of a batch of several, or raises a ``RewardError`` (a broken
    contract, ``user_rewards.GuardedReward``), ends the run with an error naming it and the
    step. Returns the scores as a list (a generator is read once, here).
    """

    def __init__(self, fn):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.seconds = 0.0
        self.calls = 0
        self.failed = 0  # completions whose scoring raised, scored None
        self.last_completions: list = []
        self.last_scores: list[float] = []
        self.listeners: list = []  # called as listener(completions, scores, **columns)

    def __call__(self, completions, **kwargs):
        began = time.perf_counter()
        try:
            scores = list(self.fn(completions, **kwargs))
        except RewardError:
            raise
        except Exception as e:
            scores = self._one_by_one(completions, kwargs, e)
        self.seconds += time.perf_counter() - began
        self.calls += 1
        self.last_completions, self.last_scores = list(completions), scores
        for listener in self.listeners:
            listener(self.last_completions, self.last_scores, **kwargs)
        return scores

    def _one_by_one(self, completions, kwargs: dict, error: Exception) -> list:
        """Score each completion alone (its own slice of every per-completion column); None
        where that raises too."""
        n, scores, failed = len(completions), [], 0
        for i in range(n):
            row = {k: v[i : i + 1] if _per_row(v, n) else v for k, v in kwargs.items()}
            try:
                (score,) = self.fn(completions[i : i + 1], **row)
            except RewardError:
                raise
            except Exception:
                score, failed = None, failed + 1
            scores.append(score)
        where = describe_call(kwargs, self.calls + 1)
        said = f"{self.__name__} raised {type(error).__name__}: {error} {where}"
        if failed == n > 1:
            raise RewardError(
                f"{said} on every one of the {n} completions, scored alone too: it cannot score "
                "anything, so the run stops rather than train without it"
            ) from error
        self.failed += failed
        warnings.warn(
            f"{said}; scored one by one, the {failed} of {n} completions that raised alone get "
            f"no reward (None); {self.failed} so far",
            RewardWarning,
            stacklevel=3,
        )
        return scores


def _per_row(value, n: int) -> bool:
    """True for a keyword TRL passes with one entry per completion (a dataset column)."""
    return isinstance(value, list) and len(value) == n


def gather_from_processes(obj) -> list:
    """``obj`` from every training process (``torch.distributed.all_gather_object``), in rank
    order; ``[obj]`` in a single process. Every process must call it at the same point."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


class CollapseWarning(UserWarning):
    """The policy gives one answer to nearly every question of a task (``AnswerShares``)."""


def training_label_shares(dataset) -> dict[str, dict[str, float]]:
    """Task -> gold answer (normalised as the extractor writes it) -> share of that task's
    rows, from a dataset's ``task`` and ``answer`` columns (commonest answer first)."""
    columns = getattr(dataset, "column_names", None) or []
    missing = [c for c in ("task", "answer") if c not in columns]
    if missing:
        raise ValueError(f"training_label_shares: the dataset lacks column(s) {missing}")
    counts: dict[str, Counter] = {}
    for i, (task, gold) in enumerate(zip(dataset["task"], dataset["answer"], strict=True)):
        label = normalize_answer(str(gold), task)
        if label is None:
            raise ValueError(
                f"training_label_shares: row {i} ({task}) has no readable answer {gold!r}"
            )
        counts.setdefault(task, Counter())[label] += 1
    return {
        task: {label: n / sum(c.values()) for label, n in c.most_common()}
        for task, c in counts.items()
    }


class AnswerShares(TrainerCallback):
    """Log what the policy answers, per task, and sound the alarm when it collapses.

    It listens to a ``RecordedReward`` (``watch``), so it sees every completion the rewards
    scored, with the dataset columns TRL passed along, and reads each answer with the
    extractor the correctness reward uses. At every logging step it adds to the logs (and so
    to ``metrics.csv``), for the completions scored since the previous log:

    - ``answers/format_rate``: the share that ``rewards.follows_format`` (the soft format);
    - ``answers/<task>/<label>``: the share of each answer, for tasks with a closed answer set
      (every label of the set and of the training data, even at 0);
    - ``answers/<task>/none``: the share without a readable answer (hedged, missing);
    - ``answers/<task>/top_share``: the share of the commonest readable answer (any task);
    - ``answers/collapse_alarm``: 1.0 at the step the alarm goes off, else 0.0.

    The alarm goes off once per run: when a task's top answer holds more than ``share``
    of its completions for ``steps`` logging steps in a row while the commonest label of
    that task in the training data (``label_shares``, from ``training_label_shares``) holds
    less than ``data_limit``. A policy that answers "yes" to 95% of questions whose labels are
    55% "yes" has stopped reading them, however the reward moves. Tasks missing from
    ``label_shares`` are logged but not watched.

    Under DDP each process scores only its own completions: at every log the processes pool
    their counts (``gather_from_processes``), so every process logs the shares of the whole
    batch and reaches the same alarm, which process 0 alone prints and warns.
    """

    def __init__(
        self,
        label_shares: dict[str, dict[str, float]],
        watch: RecordedReward | None = None,
        *,
        share: float = COLLAPSE_SHARE,
        data_limit: float = DATA_MAJORITY_LIMIT,
        steps: int = COLLAPSE_STEPS,
    ):
        if not 0 < share <= 1 or not 0 < data_limit <= 1:
            raise ValueError(
                f"AnswerShares: share={share} and data_limit={data_limit} must be in (0, 1]"
            )
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"AnswerShares: steps must be a positive integer, got {steps!r}")
        for task, shares in label_shares.items():
            answer_type(task)  # an unknown task name is a clear error
            if not shares or abs(sum(shares.values()) - 1) > 1e-6:
                raise ValueError(
                    f"AnswerShares: label_shares[{task!r}] must sum to 1, got {shares}"
                )
        self.label_shares = {t: dict(s) for t, s in label_shares.items()}
        self.share, self.data_limit, self.steps = share, data_limit, steps
        self.streak: dict[str, int] = {}
        self.alarm: dict | None = None  # what the alarm said, once it went off
        self.history: list[dict] = []  # every logged row of answer metrics, with its step
        self._answers: dict[str, Counter] = {}
        self._formatted = self._seen = 0
        self._speaks = True  # False on the processes other than 0 (on_log sets it)
        if watch is not None:
            watch.listeners.append(self.observe)

    def observe(self, completions, scores=None, *, task, options=None, **columns) -> None:
        """Count the answers of one scored batch (a ``RecordedReward`` listener)."""
        n = len(completions)
        tasks = [task] * n if isinstance(task, str) else list(task)
        option_lists = [None] * n if options is None else list(options)
        for completion, t, opts in zip(completions, tasks, option_lists, strict=True):
            answer = extract_answer(completion, t, opts or None)
            self._answers.setdefault(t, Counter())[answer] += 1
            self._formatted += follows_format(completion)
        self._seen += n

    def _labels(self, task: str, counts: Counter) -> list[str]:
        closed = CLOSED_LABELS.get(answer_type(task))
        if closed is None:
            return []
        seen = [a for a in counts if a is not None]
        return list(dict.fromkeys([*closed, *self.label_shares.get(task, {}), *sorted(seen)]))

    def flush(self, step: int) -> dict[str, float]:
        """The answer metrics of the completions seen since the last flush (then forgotten),
        with the alarm checked; empty when nothing was scored."""
        if not self._seen:
            return {}
        metrics = {"answers/format_rate": self._formatted / self._seen}
        for task, counts in sorted(self._answers.items()):
            n = sum(counts.values())
            for label in self._labels(task, counts):
                metrics[f"answers/{task}/{label}"] = counts.get(label, 0) / n
            metrics[f"answers/{task}/none"] = counts.get(None, 0) / n
            top = max((c for a, c in counts.items() if a is not None), default=0)
            metrics[f"answers/{task}/top_share"] = top / n
            self._check(task, counts, n, step)
        metrics["answers/collapse_alarm"] = float(bool(self.alarm) and self.alarm["step"] == step)
        self._answers, self._formatted, self._seen = {}, 0, 0
        self.history.append({"step": step, **metrics})
        return metrics

    def _check(self, task: str, counts: Counter, n: int, step: int) -> None:
        readable = [(c, a) for a, c in counts.items() if a is not None]
        top_count, top = max(readable, default=(0, None))
        collapsed = top_count / n > self.share
        self.streak[task] = self.streak.get(task, 0) + 1 if collapsed else 0
        data = self.label_shares.get(task)
        if self.alarm or not data or self.streak[task] < self.steps:
            return
        data_label, data_share = max(data.items(), key=lambda kv: kv[1])
        if data_share >= self.data_limit:
            return
        self.alarm = {
            "step": step,
            "task": task,
            "answer": top,
            "share": top_count / n,
            "steps": self.streak[task],
            "data_label": data_label,
            "data_share": data_share,
        }
        message = (
            f"COLLAPSE ALARM at step {step}: {top_count / n:.0%} of the {task} completions "
            f"answer {top!r}, for {self.streak[task]} logging steps in a row, while the "
            f"training data's commonest {task} label ({data_label!r}) is only "
            f"{data_share:.0%}. The policy gives one answer whatever the question; its reward "
            "can still rise. Check the label balance of the training mix and the rewards."
        )
        if self._speaks:
            print(f"\n{'!' * 88}\n{message}\n{'!' * 88}\n")
            warnings.warn(message, CollapseWarning, stacklevel=2)

    def _pool_processes(self) -> None:
        """Replace this process's counts since the last log by those of all processes."""
        parts = gather_from_processes((self._answers, self._formatted, self._seen))
        if len(parts) == 1:
            return
        answers: dict[str, Counter] = {}
        for part_answers, _, _ in parts:
            for task, counts in part_answers.items():
                answers.setdefault(task, Counter()).update(counts)
        self._answers = answers
        self._formatted = sum(p[1] for p in parts)
        self._seen = sum(p[2] for p in parts)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "train_runtime" in logs:
            return
        self._speaks = state.is_world_process_zero
        self._pool_processes()
        metrics = self.flush(state.global_step)
        logs.update(metrics)
        last = state.log_history[-1] if state.log_history else None
        if metrics and last is not None and last.get("step") == state.global_step:
            last.update(metrics)  # so trainer_state.json in each checkpoint keeps them too


class MetricsCSV(TrainerCallback):
    """Append each ``on_log`` row (with its step) to a CSV; the header grows as keys appear.
    Under DDP only process 0 writes it (the others' timings and answer shares differ)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if self.path.exists() and state.is_world_process_zero:
            with self.path.open() as f:
                kept = [r for r in csv.DictReader(f) if float(r["step"]) <= state.global_step]
            self.rows = kept
            self._write()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "train_runtime" in logs or not state.is_world_process_zero:
            return
        self.rows.append({"step": state.global_step, **logs})
        self._write()

    def _write(self) -> None:
        fields = list(dict.fromkeys(k for row in self.rows for k in row))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)


class SamplePrinter(TrainerCallback):
    """Every ``every`` steps, print the first completion of the last batch and its rewards."""

    def __init__(self, rewards: list[RecordedReward], every: int, max_chars: int = 400):
        self.rewards, self.every, self.max_chars = rewards, every, max_chars

    def on_step_end(self, args, state, control, **kwargs):
        if (
            self.every <= 0
            or state.global_step % self.every
            or not self.rewards[0].last_completions
        ):
            return
        text = completion_text(self.rewards[0].last_completions[0])[: self.max_chars]
        scores = ", ".join(
            f"{r.__name__}=" + ("none" if r.last_scores[0] is None else f"{r.last_scores[0]:.2f}")
            for r in self.rewards
        )  # None: a completion the reward does not score (or whose scoring raised)
        print(f"\n--- step {state.global_step} sample completion ({scores}) ---\n{text}\n")


# what the progress bar's postfix shows, when the run logs it (GRPO: rewards; SFT: loss)
PROGRESS_KEYS = ("reward", "frac_reward_zero_std", "loss")


class CourseProgress(TrainerCallback):
    """One progress bar over the run's steps; its postfix is the last logged reward and
    ``frac_reward_zero_std`` (GRPO) or loss (SFT). Resumed runs start at their step."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_local_process_zero:
            self.bar = progress_bar(
                state.max_steps, self.label, unit="step", initial=state.global_step
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs or "train_runtime" in logs:
            return
        keys = [k for k in PROGRESS_KEYS if k in logs and (k != "loss" or "reward" not in logs)]
        if keys:
            self.bar.set_postfix({k: f"{float(logs[k]):.3g}" for k in keys}, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def use_course_progress(trainer, label: str) -> None:
    """Replace a Trainer's progress output with ``CourseProgress``: its tqdm bar (a widget
    frozen at 0% in a saved notebook), its HTML "Training Loss" table and the ``{'loss': ...}``
    dicts it prints go; the metrics still reach every other callback and ``metrics.csv``."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    for cls in (PrinterCallback, ProgressCallback, NotebookProgressCallback):
        trainer.remove_callback(cls)
    trainer.add_callback(CourseProgress(label))
