"""The course's solutions to the notebooks' exercises, one function per answer.

A notebook's exercise has a learner cell (``my_answer = None  # your code``) and a check cell.
The check tests the learner's value; while that value is still ``None`` it tests the solution
below instead, and says so (``exercises.yours_or_solution``), so that every notebook runs from
top to bottom. Read a solution after trying: ``help(solutions.<name>)`` or the source.
"""

from __future__ import annotations

import math

# --------------------------------------------------------------------------- 00 setup and tour


def profiles_that_fit(gpu_gb: float) -> dict[str, float]:
    """GPU profile -> GB its planned GRPO run leaves free on a ``gpu_gb`` GPU, for the
    profiles whose plan fits (``MemoryPlan.fits``: with the planner's margin)."""
    from medreason_lib.models.memory import plan_for_profile
    from medreason_lib.settings.profiles import PROFILES

    plans = {p.name: plan_for_profile(p, gpu=gpu_gb) for p in PROFILES.values() if not p.is_tiny}
    return {name: round(gpu_gb - plan.total_gb, 1) for name, plan in plans.items() if plan.fits()}


# --------------------------------------------------------------------------- 01 format rewards


def best_completion(row: dict) -> list[dict]:
    """A conversational completion that earns the maximum total reward on ``row``: the exact
    template, a reasoning block that holds reasoning, and the gold answer."""
    from medreason_lib.scoring.template import format_completion

    reasoning = "I read the abstract's results and weighed them against the question."
    return [{"role": "assistant", "content": format_completion(reasoning, row["answer"])}]


# --------------------------------------------------------------------------- 02 data


def fifty_fifty_mix(pools: dict, limit: int, seed: int):
    """A 50/50 mix of the two datasets in ``pools``, as large as they allow without repeating
    a row and no larger than ``limit``."""
    from medreason_lib import data

    names = list(pools)
    if len(names) != 2:
        raise ValueError(f"fifty_fifty_mix wants two datasets, got {names}")
    n = min(limit, 2 * min(len(ds) for ds in pools.values()))
    return data.mix(pools, {name: 0.5 for name in names}, n=n, seed=seed, verbose=False)


# --------------------------------------------------------------------------- 03 baseline


def always_answer_accuracy(golds, answer: str) -> float:
    """What always giving ``answer`` scores: its share of the gold answers."""
    golds = list(golds)
    if not golds:
        raise ValueError("always_answer_accuracy: no gold answers")
    return golds.count(answer) / len(golds)


def items_for_half_width(half_width: float, accuracy: float = 0.5) -> int:
    """The fewest items whose 95% Wilson interval at ``accuracy`` is at most ``half_width``."""
    from medreason_lib.scoring.stats import ci_half_width

    n = 1
    while ci_half_width(n, accuracy) > half_width:
        n += 1
    return n


# --------------------------------------------------------------------------- 04 GRPO


def advantages(rewards, scale_rewards: str = "group"):
    """GRPO's advantages of one group, as TRL computes them: reward minus the group mean,
    divided by the group's sample std plus 1e-4 when ``scale_rewards="group"``."""
    import numpy as np

    r = np.asarray(rewards, dtype=float)
    centred = r - r.mean()
    if scale_rewards == "none":
        return centred
    if scale_rewards != "group":
        raise ValueError(f"scale_rewards must be 'group' or 'none', got {scale_rewards!r}")
    return centred / (r.std(ddof=1) + 1e-4)


def dr_grpo_settings() -> dict:
    """GRPOConfig overrides for Dr. GRPO: its loss (a constant normaliser, no per-length
    division) and no division by the group's std."""
    return {"loss_type": "dr_grpo", "scale_rewards": "none"}


# --------------------------------------------------------------------------- 05 evaluation


def mcnemar_p(gained: int, lost: int) -> float:
    """McNemar's exact two-sided p-value from the flipped items alone."""
    flips = gained + lost
    if flips == 0:
        return 1.0
    tail = sum(math.comb(flips, i) for i in range(min(gained, lost) + 1)) / 2**flips
    return min(1.0, 2 * tail)


def tasks_below_majority(report, baselines: dict) -> list[str]:
    """Tasks whose always-the-commonest-answer score is above the upper end of the report's
    95% interval: where a constant demonstrably beats the model."""
    return sorted(
        task for task, s in report.by_task.items() if baselines[task]["majority"] > s.ci95[1]
    )


def weights_without_correctness(reward_funcs) -> list[float]:
    """``reward_weights`` (one per reward function) that keep the format rewards and pay
    nothing for correctness: TRL still computes and logs it."""
    return [0.0 if fn.__name__ == "correctness_reward" else 1.0 for fn in reward_funcs]


# --------------------------------------------------------------------------- 06 Qwen3-8B


def largest_group(gpu: str = "L4", **settings) -> int:
    """The largest ``num_generations`` (1-64) whose 8b GRPO plan fits ``gpu``."""
    from medreason_lib.models.memory import plan

    fits = [
        g for g in range(1, 65) if plan("8b", "grpo", gpu=gpu, num_generations=g, **settings).fits()
    ]
    if not fits:
        raise ValueError(f"no group size fits the 8b recipe on {gpu} with {settings}")
    return max(fits)


def bigger_groups(profile, factor: int = 2):
    """``profile`` with ``factor`` times its group size and the same per-device batch, so each
    step sees fewer prompts, each with more completions. A step's completions (per-device
    batch x accumulation) must divide into whole groups: where they no longer do (the 8b
    recipe: one prompt of 8 already fills a batch of 8), the accumulation steps grow too."""
    group = profile.num_generations * factor
    accumulation = profile.gradient_accumulation_steps
    while (profile.per_device_train_batch_size * accumulation) % group:
        accumulation *= 2
    return profile.replace(num_generations=group, gradient_accumulation_steps=accumulation)


# --------------------------------------------------------------------------- 07 gpt-oss-20b


def gpus_that_fit(model: str, gpus, **settings) -> list[str]:
    """Which of ``gpus`` the GRPO plan of ``model`` fits, with ``settings`` changed."""
    from medreason_lib.models.memory import plan

    return [g for g in gpus if plan(model, "grpo", gpu=g, **settings).fits()]


def harmony_text_for_rewards(tokenizer, chat: list[dict], thinking: str, answer: str, **kw) -> str:
    """What TRL hands the rewards for a gpt-oss reply: the rendered assistant turn decoded with
    ``skip_special_tokens=True`` (the channel names stay, their markers go)."""
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, **kw)
    turn = {"role": "assistant", "thinking": thinking, "content": answer}
    rendered = tokenizer.apply_chat_template(chat + [turn], tokenize=False, **kw)
    ids = tokenizer(rendered.removeprefix(prompt), add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids, skip_special_tokens=True)


def reward_total(completion, answer: str, task: str) -> float:
    """The total of the course's four rewards for one completion (TRL's sum, weights 1)."""
    from medreason_lib.scoring.rewards import score_completions

    return score_completions([completion], answer=[answer], task=[task])["total"][0]


# --------------------------------------------------------------------------- 08 export


def lora_update_sizes(lora_a, lora_b, alpha: float, rank: int) -> dict[str, int]:
    """For one adapted matrix: the rank of the merge's update (alpha/r) B A, the numbers the
    adapter stores (A and B) and the numbers of the full update matrix."""
    import torch

    delta = alpha / rank * lora_b.float() @ lora_a.float()
    return {
        "rank": int(torch.linalg.matrix_rank(delta)),
        "adapter_numbers": lora_a.numel() + lora_b.numel(),
        "full_numbers": delta.numel(),
    }


# ------------------------------------------------------------------------- 09 continued pretraining


def corpus_perplexity(per_document) -> float:
    """Token-weighted perplexity from ``(total NLL in nats, predicted tokens)`` per document:
    exp(sum of the NLLs / sum of the tokens), not the mean of each document's perplexity."""
    nll = sum(float(n) for n, _ in per_document)
    tokens = sum(int(t) for _, t in per_document)
    return math.exp(nll / tokens)


# --------------------------------------------------------------------------- 10 SFT, then GRPO


def trace_completion(trace: dict) -> dict:
    """One trace record (``traces.load_traces``) as the assistant message SFT imitates in the
    qwen2/qwen3 families: its reasoning and its answer in the template."""
    from medreason_lib.scoring.template import format_completion

    return {"role": "assistant", "content": format_completion(trace["reasoning"], trace["answer"])}


# --------------------------------------------------------------------------- 11 DPO for safety


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float) -> float:
    """DPO's loss for one pair (TRL's ``loss_type="sigmoid"``) from the sequence log-probs of
    the policy and the reference: margin = beta * ((pc - rc) - (pr - rr)), loss =
    -log sigmoid(margin) = log(1 + exp(-margin)), written to stay finite for any margin."""
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return math.log1p(math.exp(-margin)) if margin > -30 else -margin + math.log1p(math.exp(margin))
