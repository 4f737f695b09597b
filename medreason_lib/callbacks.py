"""What a GRPO run shows while it trains: metrics to CSV, sample completions, reward timing.

- ``RecordedReward`` wraps a reward function (keeping its name, which TRL logs as
  ``rewards/<name>/mean``), remembers the last batch it scored and the time it spent.
- ``MetricsCSV`` writes every logged metric row to ``metrics.csv`` in the run folder, so the
  plots work offline and after a disconnect; on resume it drops rows past the checkpoint.
- ``SamplePrinter`` prints one completion and its rewards every N steps.
"""

from __future__ import annotations

import csv
import functools
import time
from pathlib import Path

from transformers import TrainerCallback

from .template import completion_text


class RecordedReward:
    """A reward function that also keeps its last inputs/outputs and its total time."""

    def __init__(self, fn):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.seconds = 0.0
        self.calls = 0
        self.last_completions: list = []
        self.last_scores: list[float] = []

    def __call__(self, completions, **kwargs):
        began = time.perf_counter()
        scores = self.fn(completions, **kwargs)
        self.seconds += time.perf_counter() - began
        self.calls += 1
        self.last_completions, self.last_scores = list(completions), list(scores)
        return scores


class MetricsCSV(TrainerCallback):
    """Append each ``on_log`` row (with its step) to a CSV; the header grows as keys appear."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if self.path.exists():
            with self.path.open() as f:
                kept = [r for r in csv.DictReader(f) if float(r["step"]) <= state.global_step]
            self.rows = kept
            self._write()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "train_runtime" in logs:
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
        scores = ", ".join(f"{r.__name__}={r.last_scores[0]:.2f}" for r in self.rewards)
        print(f"\n--- step {state.global_step} sample completion ({scores}) ---\n{text}\n")
