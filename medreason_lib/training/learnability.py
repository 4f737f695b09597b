"""Can GRPO learn from this model at all? The first step says, before the run spends more.

GRPO learns from the differences between the rewards of one prompt's completions: each
completion's advantage is its reward minus its group's mean (divided by the group's spread).
When every completion of every group gets the same reward, every advantage is 0 and the
update is 0, step after step. A model that never writes the course template is that case:
the format rewards are 0, and so is correctness, which reads the answer from the
``<answer>`` tag. SmolLM2-135M-Instruct untrained wrote 0 template tags in 32 sampled
completions (issue 23): GRPO from it ran at reward 0 with an all-zero adapter.

``UnlearnableStop`` reads the first logged step (``answers/format_rate`` from
``callbacks.AnswerShares``, ``frac_reward_zero_std`` from TRL): when no completion followed
the template and every group's rewards were equal, it says so, points to the warm start, and
(``action="stop"``, ``training.train``'s default) stops the run, which then raises
``Unlearnable`` instead of saving an adapter that learned nothing. ``action="warn"`` only says
it (a run whose own rewards do not need the template, or a demonstration of the failure).
"""

from __future__ import annotations

import warnings

from transformers import TrainerCallback

from medreason_lib.settings.errors import UserError

ACTIONS = ("stop", "warn")


class Unlearnable(UserError):
    """The first GRPO step had no completion in the template and no reward spread."""


def unlearnable_message(format_rate: float, zero_std: float, step: int) -> str:
    return (
        f"GRPO cannot learn here: at step {step} no completion followed the template (format "
        f"rate {format_rate:.0%}) and every group's rewards were equal (frac_reward_zero_std "
        f"{zero_std:.0%}), so every advantage and every update is 0. Teach the template first: "
        "the warm start (profile.sft_warmup_steps, `train --sft-warmup-steps N`) or SFT on "
        "reasoning traces (notebook 10)"
    )


class UnlearnableStop(TrainerCallback):
    """Check the first logged step (see the module docstring); ``message`` holds the finding."""

    def __init__(self, action: str = "stop"):
        if action not in ACTIONS:
            raise ValueError(f"if_unlearnable={action!r}: valid {', '.join(ACTIONS)}")
        self.action = action
        self.checked = False
        self.message: str | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if self.checked or "answers/format_rate" not in logs or "frac_reward_zero_std" not in logs:
            return
        self.checked = True
        rate, zero_std = logs["answers/format_rate"], logs["frac_reward_zero_std"]
        if rate == 0 and zero_std == 1:
            self.message = unlearnable_message(rate, zero_std, state.global_step)
            if state.is_world_process_zero:
                print(f"WARNING: {self.message}")
            warnings.warn(self.message, stacklevel=2)
            if self.action == "stop":
                control.should_training_stop = True

    @property
    def stopped(self) -> bool:
        return self.message is not None and self.action == "stop"
