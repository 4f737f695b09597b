"""GRPO's step written out in torch: the formulas that ``grpo_by_hand`` checks against TRL.

Nothing here calls TRL. Each function is one step of the algorithm (notebook 04, section 1):

- ``log_softmax`` / ``token_logprobs``: each completion token's log-probability,
  ``z_t[o_t]/T - log sum_v exp(z_t[v]/T)``, from one forward pass over prompt + completion;
- ``group_rewards`` / ``total_rewards``: the reward functions called as GRPOTrainer calls
  them, summed per completion in float32;
- ``group_advantages``: ``(r - mean) / (std + 1e-4)``, the sample std, in float32 as TRL;
- ``grpo_loss``: the clipped ratio objective, averaged as the loss type says;
- ``learning_rates`` and ``adamw_first_step``: the schedule and AdamW's first update.
"""

from __future__ import annotations

import math

import torch

LOSS_TYPES = ("dapo", "bnpo", "grpo", "dr_grpo")


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``log p_v = z_v - log sum_u exp z_u`` over the last axis, with the largest logit
    subtracted first so that ``exp`` cannot overflow."""
    shifted = logits - logits.max(dim=-1, keepdim=True).values.detach()
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()


def token_logprobs(model, prompt_ids, completion_ids, temperature: float = 1.0):
    """Per completion, the log-probability of each of its tokens given the prompt and the
    tokens before it: one forward pass per completion (no padding), logits / temperature."""
    out = []
    for ids in completion_ids:
        full = torch.tensor([list(prompt_ids) + list(ids)])
        logits = model(input_ids=full).logits[0].float() / temperature
        # the logits at position t predict token t + 1: keep the rows that predict completion tokens
        rows = logits[len(prompt_ids) - 1 : full.shape[1] - 1]
        out.append(log_softmax(rows).gather(-1, torch.tensor(ids).unsqueeze(-1)).squeeze(-1))
    return out


def group_rewards(
    completions: list[str], row: dict, reward_funcs=None, completion_ids=None
) -> dict[str, list[float]]:
    """Each reward function on the group, called as GRPOTrainer calls it: the completions as
    assistant messages, the prompt and the completion token ids, and every other dataset
    column repeated once per completion."""
    from medreason_lib.scoring.rewards import REWARD_FUNCS

    g = len(completions)
    kwargs = {k: [v] * g for k, v in row.items() if k != "prompt"}
    kwargs["prompts"] = [row["prompt"]] * g
    if completion_ids is not None:
        kwargs["completion_ids"] = completion_ids
    messages = [[{"role": "assistant", "content": c}] for c in completions]
    return {fn.__name__: list(fn(messages, **kwargs)) for fn in (reward_funcs or REWARD_FUNCS)}


def total_rewards(rewards: dict[str, list[float]]) -> torch.Tensor:
    """Each completion's reward: the sum of its reward functions' scores, in float32 (the
    precision TRL adds them in: ``0.1 + 0.2`` in float32 is not float64's)."""
    return torch.tensor(list(rewards.values()), dtype=torch.float32).sum(dim=0)


def group_advantages(rewards, scale_rewards: str = "group") -> torch.Tensor:
    """``A_i = r_i - mean(r)``, divided by ``std(r) + 1e-4`` (the sample std, ``ddof=1``)
    unless ``scale_rewards="none"``; one group, so "batch" scaling is "group" scaling.

    In float32, as TRL computes it, so that even the rounding agrees: the float32 mean of six
    rewards of 1.2 is 1.19999993, which gives a group that scored the same everywhere
    advantages of about +1e-3 rather than exactly 0.
    """
    r = torch.as_tensor(rewards, dtype=torch.float32)
    n = len(r)
    centred = r - r.mean()
    if scale_rewards == "none":
        return centred
    if scale_rewards not in ("group", "batch"):
        raise ValueError(f"scale_rewards={scale_rewards!r}: expected 'group', 'batch' or 'none'")
    std = ((centred**2).mean() * (n / (n - 1))).sqrt() if n > 1 else torch.tensor(0.0)
    return centred / (std + 1e-4)


def grpo_loss(
    logps: list[torch.Tensor],
    old_logps: list[torch.Tensor],
    advantages: torch.Tensor,
    *,
    loss_type: str,
    epsilon: float,
    epsilon_high: float,
    max_completion_length: int,
    keep: list[bool] | None = None,
) -> torch.Tensor:
    """The clipped objective, token by token, averaged as ``loss_type`` says.

    Per token: ``-min(rho * A, clip(rho, 1 - epsilon, 1 + epsilon_high) * A)`` with
    ``rho = exp(logp - old_logp)``. "dapo"/"bnpo": sum over every kept token / their number;
    "grpo": each completion's mean, then the mean over completions; "dr_grpo": sum /
    (completions x max_completion_length). ``keep``: completions that count (False: a
    truncated one under ``mask_truncated_completions``).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}: the hand step covers {', '.join(LOSS_TYPES)}")
    keep = keep or [True] * len(logps)
    sums, counts = [], []
    for lp, old, a, kept in zip(logps, old_logps, advantages.tolist(), keep, strict=True):
        rho = torch.exp(lp - old)
        per_token = -torch.minimum(rho * a, rho.clamp(1 - epsilon, 1 + epsilon_high) * a)
        sums.append(per_token.sum() * kept)
        counts.append(len(lp) * kept)
    if loss_type in ("dapo", "bnpo"):
        return torch.stack(sums).sum() / max(sum(counts), 1)
    if loss_type == "grpo":
        return torch.stack([s / max(n, 1) for s, n in zip(sums, counts, strict=True)]).mean()
    return torch.stack(sums).sum() / (len(logps) * max_completion_length)


def learning_rates(settings: dict) -> list[float]:
    """The learning rate of every optimizer step of a run (``learning_rate``,
    ``lr_scheduler_type``, ``warmup_steps``: a float below 1 is a share of ``max_steps``),
    read from transformers' scheduler on a dummy parameter: a warmup starts at 0."""
    from transformers import get_scheduler

    steps = settings["max_steps"]
    warmup = settings["warmup_steps"]
    warmup = math.ceil(warmup * steps) if 0 < warmup < 1 else int(warmup)
    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=settings["learning_rate"])
    kind = settings["lr_scheduler_type"]
    schedule = get_scheduler(getattr(kind, "value", kind), dummy, warmup, steps)  # enum or str
    rates = []
    for _ in range(steps):
        rates.append(schedule.get_last_lr()[0])
        dummy.step()
        schedule.step()
    return rates


def learning_rate_at_first_step(settings: dict) -> float:
    """The learning rate the first optimizer step uses (``learning_rates(settings)[0]``)."""
    return learning_rates({**settings, "max_steps": max(1, settings["max_steps"])})[0]


def adamw_settings(settings: dict, lr: float) -> dict:
    return {
        "lr": lr,
        "beta1": settings["adam_beta1"],
        "beta2": settings["adam_beta2"],
        "eps": settings["adam_epsilon"],
        "weight_decay": settings["weight_decay"],
    }


def adamw_first_step(params: dict, grads: dict, *, lr, beta1, beta2, eps, weight_decay) -> dict:
    """AdamW's first update, written out. With empty moments, ``m = (1 - beta1) g`` and
    ``v = (1 - beta2) g^2``; bias correction divides them by ``1 - beta1`` and ``1 - beta2``,
    so the step is ``lr * g / (|g| + eps)``: about ``lr`` times the sign of the gradient.
    Weight decay first shrinks each weight by ``lr * weight_decay`` (decoupled: AdamW); as in
    transformers' Trainer, biases and norm weights are exempt (LoRA adapters have neither)."""
    new = {}
    for name, p in params.items():
        g = grads[name]
        m_hat = (1 - beta1) * g / (1 - beta1)
        v_hat = (1 - beta2) * g * g / (1 - beta2)
        decays = weight_decay and "bias" not in name and "norm" not in name
        decayed = p * (1 - lr * weight_decay) if decays else p
        new[name] = decayed - lr * m_hat / (v_hat.sqrt() + eps)
    return new
