"""One GRPO step by hand, checked against TRL's ``GRPOTrainer``.

``record_trainer_step`` lets the course's trainer (``training.build_trainer``) take exactly
one optimizer step on one prompt and keeps what a learner needs to redo that step: the
group it sampled (token ids and decoded texts), the rewards it computed, the trainable
weights before and after the step, and what it logged (``loss``, ``grad_norm``).

``hand_step`` then redoes the step from the recorded group and the weights before it, with
the formulas of ``grpo_math`` (code of its own that never calls TRL's loss):

1. per-token log-probabilities: one forward pass of a fresh copy of the model, then a
   log-softmax written out (``log_softmax``), divided by the sampling temperature as TRL does;
2. the rewards: the reward functions called as GRPOTrainer calls them;
3. the group advantages: ``(r - mean) / (std + 1e-4)``, the sample std (``group_advantages``);
4. the loss of ``profile.loss_type`` (``grpo_loss``): the clipped ratio objective, with the
   ratio against the weights that sampled the group, averaged as the loss type says;
5. backward, the gradient norm, clipping to ``max_grad_norm``, and the first step of AdamW
   written out (``adamw_first_step``).

``compare`` puts the two side by side. Covers what the course trains with: ``beta = 0`` (no
KL term), one update per generated batch, one process; other settings raise ``ValueError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medreason_lib.settings.profiles import Profile
from medreason_lib.training.grpo_math import (
    adamw_first_step,
    adamw_settings,
    group_advantages,
    group_rewards,
    grpo_loss,
    learning_rate_at_first_step,
    token_logprobs,
    total_rewards,
)


@dataclass
class TrainerStep:
    """What one GRPOTrainer step on one prompt did (``record_trainer_step``)."""

    profile: Profile  # the profile the step ran with (one prompt per step)
    row: dict  # the dataset row: prompt messages, answer, task, ...
    base_model: str  # the model the LoRA adapter sits on
    prompt_ids: list[int]
    completion_ids: list[list[int]]  # each completion's tokens, up to and including EOS
    completions: list[str]  # as TRL decoded them for the reward functions
    rewards: dict[str, list[float]]  # reward function -> the scores TRL got from it
    before: dict[str, torch.Tensor]  # trainable weights before the step, by name
    grads: dict[str, torch.Tensor]  # their gradients, after clipping, as the optimizer got them
    after: dict[str, torch.Tensor]  # the weights after the step
    logged: dict[str, float]  # TRL's logged row for the step: loss, grad_norm, reward, ...
    settings: dict = field(default_factory=dict)  # GRPOConfig values the hand step needs


def _trainable(model, what: str = "data") -> dict[str, torch.Tensor]:
    """Copies of the trainable weights (``what="data"``) or of their gradients ("grad"; a
    weight the loss did not reach gets zeros)."""
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            value = getattr(p, what)
            out[name] = torch.zeros_like(p) if value is None else value.detach().clone()
    return out


def _gradient_recorder(into: dict):
    """A callback that copies the gradients the optimizer is about to apply (after
    clipping) into ``into``."""
    from transformers import TrainerCallback

    class RecordGradients(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            into.update(_trainable(model, "grad"))

    return RecordGradients()


def record_trainer_step(
    profile: Profile,
    row: dict,
    base_model: str | Path,
    run_dir: str | Path,
    *,
    num_generations: int | None = None,
    max_completion_length: int | None = None,
    reward_funcs=None,
    **config_overrides,
) -> TrainerStep:
    """Run the course's GRPOTrainer (``training.build_trainer``) for one step on ``row``
    alone, and record it.

    The batch is one prompt's group: ``num_generations`` (default: the profile's) completions
    of at most ``max_completion_length`` tokens. ``base_model``: the model the LoRA adapter
    goes on (on tiny, the SFT warm start). A tiny profile only, on the CPU in float32 whatever
    the machine: an exact comparison needs the same arithmetic on both sides. No checkpoint
    is written and no metrics line is printed; ``run_dir`` gets ``metrics.csv``.
    ``config_overrides`` go to ``GRPOConfig`` (e.g. ``mask_truncated_completions=True``).
    """
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from medreason_lib.models import close_trainer, free_memory
    from medreason_lib.training import build_trainer
    from medreason_lib.training.config import preflight

    if not profile.is_tiny:
        raise ValueError(
            f"the step by hand runs on a tiny profile (CPU, float32); {profile.name!r} loads "
            f"{profile.model_id}. Use PROFILES['tiny']"
        )
    missing = [c for c in ("prompt", "answer", "task") if c not in row]
    if missing:
        raise ValueError(f"the row lacks {missing}: pass a row of the training mix")
    g = num_generations or profile.num_generations
    if g < 2:
        raise ValueError(f"num_generations={g}: a group needs at least 2 completions")
    profile = profile.replace(
        num_generations=g,
        per_device_train_batch_size=g,
        gradient_accumulation_steps=1,
        max_steps=1,
        logging_steps=1,
        max_completion_length=max_completion_length or profile.max_completion_length,
    )
    dataset = Dataset.from_list([dict(row)])
    preflight(profile, dataset)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = {"use_cpu": True, "bf16": False, "fp16": False, **config_overrides}
    trainer, rewards = build_trainer(
        profile,
        run_dir,
        dataset=dataset,
        reward_funcs=reward_funcs,
        base_model=str(base_model),
        save_strategy="no",
        **overrides,
    )
    for quiet in (PrinterCallback, ProgressCallback):  # no {'loss': ...} lines, no bar
        trainer.remove_callback(quiet)
    seen: dict = {}
    rewards[0].listeners.append(lambda completions, scores, **kw: seen.update(kw))
    grads: dict = {}
    trainer.add_callback(_gradient_recorder(grads))
    before = _trainable(trainer.model)
    trainer.train()
    args = trainer.args
    names = (
        "learning_rate", "lr_scheduler_type", "warmup_steps", "max_steps", "weight_decay",
        "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon", "optim", "temperature",
        "loss_type", "scale_rewards", "epsilon", "epsilon_high", "beta", "num_iterations",
        "mask_truncated_completions", "max_completion_length", "num_generations",
    )  # fmt: skip
    settings = {name: getattr(args, name) for name in names}
    settings["chat_template_kwargs"] = dict(args.chat_template_kwargs or {})
    step = TrainerStep(
        profile=profile,
        row=dict(row),
        base_model=str(base_model),
        prompt_ids=prompt_token_ids(
            trainer.processing_class, row, settings["chat_template_kwargs"]
        ),
        completion_ids=[list(ids) for ids in seen["completion_ids"]],
        completions=[_text(c) for c in rewards[0].last_completions],
        rewards={r.__name__: list(r.last_scores) for r in rewards},
        before=before,
        grads=grads,
        after=_trainable(trainer.model),
        logged=dict(next(r for r in trainer.state.log_history if "loss" in r)),
        settings=settings,
    )
    close_trainer(trainer)
    del trainer
    free_memory()
    return step


def record_tiny_step(task: str = "pubmedqa", index: int = 0, run_dir=None) -> TrainerStep:
    """Notebook 04's step: the tiny profile, its training mix as ``train`` prepares it, its
    SFT warm start (made once in ``runs/tiny/grpo/sft-warmstart``, which ``train`` reuses),
    and the ``index``-th row of ``task``. Runs on the CPU whatever the machine."""
    from medreason_lib.data.training_mix import prepare_training_data
    from medreason_lib.settings import paths
    from medreason_lib.settings.profiles import PROFILES
    from medreason_lib.training import default_run_dir
    from medreason_lib.training.sft import run_warmstart

    profile = PROFILES["tiny"]
    rows, _ = prepare_training_data(profile)
    matching = [r for r in rows if r["task"] == task]
    if index >= len(matching):
        tasks = sorted(set(rows["task"]))
        raise ValueError(
            f"the tiny training mix has {len(matching)} {task!r} rows, no row {index} "
            f"(its tasks: {', '.join(tasks)})"
        )
    base = run_warmstart(profile, rows, default_run_dir(profile) / "sft-warmstart")
    run_dir = run_dir or paths.runs_dir(profile.name) / "grpo-by-hand"
    return record_trainer_step(profile, matching[index], base, run_dir)


def prompt_token_ids(tokenizer, row: dict, chat_template_kwargs: dict) -> list[int]:
    """The prompt's tokens as GRPOTrainer renders them: the chat template with the
    generation prompt (and the profile's template keywords)."""
    ids = tokenizer.apply_chat_template(
        row["prompt"],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
        **chat_template_kwargs,
    )
    return [int(i) for i in ids]


def _text(completion) -> str:
    return completion[0]["content"] if isinstance(completion, list) else completion


def load_model_before(step: TrainerStep):
    """A fresh copy of the model the trainer started from: the base model, a LoRA adapter
    of the profile's shape, and the adapter weights recorded before the step."""
    from peft import get_peft_model

    from medreason_lib.models import load_for_training

    model, tokenizer, peft_config = load_for_training(step.profile, base=step.base_model)
    if peft_config is not None:
        model = get_peft_model(model, peft_config)
    params = dict(model.named_parameters())
    missing = sorted(set(step.before) - set(params))
    if missing:
        raise ValueError(f"the recorded weights {missing[:3]} are not in the fresh model")
    with torch.no_grad():
        for name, value in step.before.items():
            params[name].copy_(value)
    for name, p in params.items():
        p.requires_grad_(name in step.before)
    model.train()
    return model, tokenizer


@dataclass
class HandStep:
    """The step redone by hand from a ``TrainerStep``."""

    completions: list[str]  # decoded from the recorded token ids
    logprobs: list[torch.Tensor]  # per completion, per token (before the step)
    rewards: dict[str, list[float]]  # per reward function
    total: torch.Tensor  # their sum per completion
    advantages: torch.Tensor
    n_tokens: list[int]  # tokens per completion (EOS included)
    keep: list[bool]  # completions that count in the loss
    loss: float
    grad_norm: float  # before clipping, as TRL logs it
    clip_coef: float  # what clipping multiplied the gradient by (1: no clipping)
    lr: float
    grads: dict[str, torch.Tensor]  # the gradient, after clipping
    after: dict[str, torch.Tensor]  # the weights after the hand-made AdamW step


def hand_step(step: TrainerStep, reward_funcs=None) -> HandStep:
    """Redo ``step`` by hand (see the module docstring); nothing here calls TRL."""
    s = step.settings
    if s["beta"] != 0.0 or s["num_iterations"] != 1:
        raise ValueError(
            f"the hand step covers beta=0 and num_iterations=1 (the course's settings); this "
            f"run has beta={s['beta']}, num_iterations={s['num_iterations']}"
        )
    model, tokenizer = load_model_before(step)
    texts = tokenizer.batch_decode(step.completion_ids, skip_special_tokens=True)
    rewards = group_rewards(texts, step.row, reward_funcs, step.completion_ids)
    total = total_rewards(rewards)
    advantages = group_advantages(total, s["scale_rewards"])
    eos = getattr(model.generation_config, "eos_token_id", None)
    stops = {
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        *(eos if isinstance(eos, list) else [eos]),
    }
    keep = [
        not (s["mask_truncated_completions"] and ids[-1] not in stops)
        for ids in step.completion_ids
    ]

    logps = token_logprobs(model, step.prompt_ids, step.completion_ids, s["temperature"])
    loss = grpo_loss(
        logps,
        [lp.detach() for lp in logps],  # the weights that sampled the group: rho = 1
        advantages,
        loss_type=s["loss_type"],
        epsilon=s["epsilon"],
        epsilon_high=s["epsilon_high"] if s["epsilon_high"] is not None else s["epsilon"],
        max_completion_length=s["max_completion_length"],
        keep=keep,
    )
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    loss.backward()
    grads = {
        n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
        for n, p in params.items()
    }
    grad_norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))
    clip_coef = min(1.0, s["max_grad_norm"] / (grad_norm + 1e-6))
    grads = {n: g * clip_coef for n, g in grads.items()}
    lr = learning_rate_at_first_step(s)
    with torch.no_grad():
        before = {n: p.detach() for n, p in params.items()}
        after = adamw_first_step(before, grads, **adamw_settings(s, lr))
    return HandStep(
        completions=texts,
        logprobs=[lp.detach() for lp in logps],
        rewards=rewards,
        total=total,
        advantages=advantages,
        n_tokens=[len(ids) for ids in step.completion_ids],
        keep=keep,
        loss=loss.item(),
        grad_norm=grad_norm,
        clip_coef=clip_coef,
        lr=lr,
        grads=grads,
        after=after,
    )


def compare(step: TrainerStep, hand: HandStep) -> dict[str, float]:
    """Hand against trainer, as absolute differences: the loss and the gradient norm (against
    TRL's logged values), any reward, any gradient entry (after clipping), and any weight
    after the step; and the same AdamW formula applied to TRL's own gradient against TRL's
    weights, which isolates the optimizer from the gradient."""
    trl_rewards = [v for name in hand.rewards for v in step.rewards[name]]
    hand_rewards = [v for vals in hand.rewards.values() for v in vals]
    adamw_on_trl = adamw_first_step(
        step.before, step.grads, **adamw_settings(step.settings, hand.lr)
    )
    return {
        "loss_hand": hand.loss,
        "loss_trl": float(step.logged["loss"]),
        "loss_abs_diff": abs(hand.loss - float(step.logged["loss"])),
        "grad_norm_abs_diff": abs(hand.grad_norm - float(step.logged["grad_norm"])),
        "reward_max_abs_diff": max(
            abs(a - b) for a, b in zip(hand_rewards, trl_rewards, strict=True)
        ),
        "grad_max_abs_diff": _max_diff(hand.grads, step.grads),
        "grad_max_abs": max(float(g.abs().max()) for g in step.grads.values()),
        "adamw_max_abs_diff": _max_diff(adamw_on_trl, step.after),
        "weight_max_abs_diff": _max_diff(hand.after, step.after, _resolved(step.grads)),
        "weight_unresolved_share": _unresolved_share(step.grads),
    }


# A gradient entry below this (100 x AdamW's epsilon, but not 0) moves its weight by an amount
# that a rounding difference in the gradient changes visibly (eta g / (|g| + eps)), so the
# whole-chain weight comparison leaves such entries out and reports their share instead.
RESOLVED_GRAD = 1e-6


def _resolved(grads: dict) -> dict:
    return {n: (g == 0) | (g.abs() >= RESOLVED_GRAD) for n, g in grads.items()}


def _unresolved_share(grads: dict) -> float:
    total = sum(g.numel() for g in grads.values())
    return sum(int((~m).sum()) for m in _resolved(grads).values()) / total


def _max_diff(a: dict, b: dict, masks: dict | None = None) -> float:
    diffs = {n: (a[n] - b[n]).abs() for n in b}
    if masks is not None:
        diffs = {n: d[masks[n]] if n in masks else d for n, d in diffs.items()}
    return max((float(d.max()) for d in diffs.values() if d.numel()), default=0.0)
