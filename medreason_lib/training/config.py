"""GRPO settings from a profile, the training dataset, and the checks run before training.

Every hyperparameter that matters is set here on purpose (none is left to a library
default that may change), and the ones the hardware dictates are derived:

- ``num_generations`` (G): completions sampled per prompt. GRPO's advantage is each
  completion's reward minus its group's mean (divided by the group's std with
  ``scale_rewards="group"``); more completions give a better baseline and more chances that
  at least one differs from the rest. 8 on the GPU profiles, 4 on tiny.
- ``learning_rate``: LoRA on a 3-8B model moves with 5e-6 (Unsloth's GRPO notebooks); the
  tiny model has 30 steps to show anything and uses 5e-3 at a constant rate.
- ``beta`` (KL weight): 0.0, TRL's default. No reference model is kept, which saves a copy
  of the weights in memory; recent work (DAPO, Dr. GRPO) finds the KL term unnecessary for
  verifiable rewards. Set it (e.g. 0.04, the original GRPO paper's) to stay near the base.
- ``loss_type="dapo"``: normalises by the number of tokens in the whole batch, so long and
  short completions weigh the same per token (the original "grpo" per-sequence mean favours
  long wrong answers and short right ones).
- ``scale_rewards="group"``: divide by the group's std. Dr. GRPO argues for "none" (no
  difficulty bias); "group" keeps the signal of near-unanimous groups visible. A choice.
- ``temperature``: sampling temperature of the rollouts; too low and the group's completions
  are identical (no signal), too high and they are noise. 0.9 on GPU, 1.0 on the tiny model.
- ``max_completion_length``: completions are cut here. Watch ``completions/clipped_ratio``:
  near 1 means the cap cuts answers off before ``</answer>``.
- prompt length: TRL removed ``max_prompt_length``; ``filter_long_prompts`` drops the
  prompts longer than ``profile.max_prompt_length`` tokens from the dataset instead, and
  says how many.
- ``bf16``/``fp16``/``use_cpu``: bf16 needs an Ampere or newer GPU (compute capability 8.0,
  Unsloth's rule, not torch's ``is_bf16_supported``, which says True on a T4); a T4 gets
  fp16, a CPU neither (TRL's default ``bf16=True`` fails on both).
- the batch: per-device batch x accumulation steps must be divisible by G (each group is
  one prompt's G completions); ``preflight`` says so before anything heavy starts.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from datasets import Dataset

from medreason_lib.data.training_mix import build_training_mix
from medreason_lib.models.kwargs import cpu_has_bf16, vllm_server_refusal
from medreason_lib.models.memory import plan_for_profile
from medreason_lib.runtime.install import read_gpu
from medreason_lib.settings.profiles import TRACKERS, Profile

REQUIRED_COLUMNS = ("prompt", "answer", "task")


class ConfigError(ValueError):
    """A setting or input that would make training fail or mislead; raised before loading."""


def machine_flags(profile: Profile) -> dict:
    """The trainer settings that depend on the machine: ``precision_flags(profile)``, and no
    gradient checkpointing on the tiny models or on a CPU. Recomputing activations in the
    backward pass saves GPU memory; on a CPU it only costs time. Measured on SmolLM2-135M
    (LoRA SFT on the bundled traces, 8 rows a step, this 2-core CPU with native bf16, one run
    of ``benchmarks/bench_cpu_precision.py``, 2026-12-06): 58.1 s a step with checkpointing,
    21.9 s without, 4.2 s without it and with bf16 autocast (14x)."""
    flags = precision_flags(profile)
    if profile.is_tiny or flags["use_cpu"]:
        flags["gradient_checkpointing"] = False
    return flags


def precision_flags(profile: Profile | None = None) -> dict:
    """``use_cpu``/``bf16``/``fp16`` for the machine this runs on.

    bf16 by Unsloth's rule (``unsloth/models/_utils.py``: ``SUPPORTS_BFLOAT16`` is compute
    capability major >= 8 of the current card, of the weakest visible one under a distributed
    launch), which is also the dtype it loads in: float16 below 8.0, and its trainer raises
    "Model is in float16 precision but you want to use bfloat16" on bf16=True. Not
    ``torch.cuda.is_bf16_supported()``: it counts emulation and says True on a T4 (7.5).
    On a CPU: float32 for the tiny models (their recorded results), bf16 autocast for a real
    model where the CPU has bf16 (``cpu_has_bf16``), which ``models.kwargs.transformers_dtype``
    also loads in bf16 (so autocast has nothing to cast)."""
    import os

    import torch

    if not torch.cuda.is_available():  # a real model (not tiny) in bf16 autocast where native
        bf16 = profile is not None and not profile.is_tiny and cpu_has_bf16()
        return {"use_cpu": True, "bf16": bf16, "fp16": False}
    capability = tuple(torch.cuda.get_device_capability())
    if int(os.environ.get("WORLD_SIZE", "1") or "1") > 1:  # every rank must pick the same
        visible = [
            tuple(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())
        ]
        capability = min(visible or [capability])
    bf16 = capability >= (8, 0)
    return {"use_cpu": False, "bf16": bf16, "fp16": not bf16}


def training_dataset(profile: Profile, n: int | None = None, seed: int | None = None) -> Dataset:
    """The GRPO training mix: ``profile.mix_weights`` over the tasks' training pools, each
    task's labels drawn towards ``profile.label_targets`` (``training_mix.build_training_mix``,
    which prints the label shares). ``train`` decontaminates it before training."""
    return build_training_mix(profile, n=n, seed=seed)[0]


def prompt_lengths(dataset: Dataset, tokenizer, profile: Profile) -> list[int]:
    """Token count of each prompt, rendered with the chat template as the trainer will."""
    lengths = []
    for row in dataset:
        text = tokenizer.apply_chat_template(
            row["prompt"],
            add_generation_prompt=True,
            tokenize=False,
            **profile.chat_template_kwargs,
        )
        lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return lengths


def filter_long_prompts(dataset: Dataset, tokenizer, profile: Profile) -> Dataset:
    """Drop prompts over ``profile.max_prompt_length`` tokens (counted after the chat
    template, as the trainer renders them), and report rows kept and dropped per task.

    Raises ``ConfigError`` when any task loses more than ``profile.max_prompt_drop_share`` of
    its rows: the mix would silently change (e.g. PubMedQA abstracts under gpt-oss's long
    harmony header). The message names the task, the share lost and the setting to raise.
    """
    lengths = prompt_lengths(dataset, tokenizer, profile)
    limit = profile.max_prompt_length
    tasks = dataset["task"] if "task" in dataset.column_names else ["all"] * len(lengths)
    keep = [i for i, n in enumerate(lengths) if n <= limit]
    per_task: dict[str, list[int]] = {}
    for task, n in zip(tasks, lengths, strict=True):
        per_task.setdefault(task, [0, 0, 0])
        per_task[task][0 if n <= limit else 1] += 1
        per_task[task][2] = max(per_task[task][2], n)
    summary = ", ".join(
        f"{t} {kept}/{kept + lost}" + (f" (dropped {lost}, longest {longest})" if lost else "")
        for t, (kept, lost, longest) in per_task.items()
    )
    print(f"prompt length filter (max_prompt_length {limit} tokens): kept {summary}")
    for task, (kept, lost, longest) in per_task.items():
        share = lost / (kept + lost)
        if share > profile.max_prompt_drop_share:
            raise ConfigError(
                f"task {task!r} loses {share:.0%} of its rows ({lost} of {kept + lost}, longest "
                f"{longest} tokens) to max_prompt_length={limit} (profile {profile.name!r}); the "
                f"limit is max_prompt_drop_share={profile.max_prompt_drop_share:.0%}. Raise "
                "max_prompt_length (and max_seq_length with it) or shorten the prompts"
            )
    if not keep:
        raise ConfigError(
            f"every prompt is longer than max_prompt_length={limit} tokens; "
            "raise it in the profile or shorten the prompts"
        )
    return dataset.select(keep)


def clip_range(profile: Profile) -> tuple[float, float]:
    """``(epsilon, epsilon_high)`` passed to GRPOConfig: DAPO's clip-higher (0.28) for
    loss_type "dapo" unless the profile sets ``epsilon_high``, as Unsloth does on a GPU."""
    if profile.epsilon_high is not None:
        return profile.epsilon, profile.epsilon_high
    return profile.epsilon, 0.28 if profile.loss_type == "dapo" else profile.epsilon


def gpu_has_bf16() -> bool | None:
    """Whether the first NVIDIA GPU has bf16 (compute capability 8.0 or newer: Ampere, a T4 is
    7.5), from ``nvidia-smi`` (``install.read_gpu``) so that CUDA is not initialised; None
    when it cannot tell."""
    gpu = read_gpu()
    return None if gpu is None else gpu.compute_capability >= (8, 0)


def check_trackers(report_to) -> None:
    """Every tracker in ``report_to`` is one the course documents and is installed; wandb
    also needs a login (``WANDB_API_KEY``) or ``WANDB_MODE=offline``, or it would stop the
    run at its first step to ask for one."""
    import importlib.util
    import os

    if isinstance(report_to, str):
        raise ConfigError(
            f"report_to must be a list of tracker names, got the string {report_to!r}"
        )
    for tracker in report_to:
        if tracker not in TRACKERS:
            raise ConfigError(
                f"report_to: unknown tracker {tracker!r}; the course supports "
                f"{sorted(TRACKERS)} (metrics.csv is always written)"
            )
        package = TRACKERS[tracker]
        if importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"report_to: {tracker!r} needs the {package!r} package: pip install {package}"
            )
    if "wandb" in report_to and not (
        os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled")
    ):
        raise ConfigError(
            "report_to: 'wandb' needs WANDB_API_KEY (run `wandb login`) or WANDB_MODE=offline "
            "(logs to ./wandb, `wandb sync` later); trackio needs neither"
        )


def preflight(
    profile: Profile, dataset: Dataset, *, gpu_gb: float | None = None, bf16: bool | None = None
) -> None:
    """Fail early, with the setting at fault named, before a model is loaded.

    Checks the dataset's columns, the batch/num_generations divisibility, that prompt plus
    completion fit the sequence length, and that the GPU (if any) has the memory the
    memory planner says the run needs with its margin (``memory.plan_for_profile``; vLLM's
    share included). ``bf16``: whether the GPU has bf16 (None: ``gpu_has_bf16()``). A run
    that fits but is impractical on this GPU (``MemoryPlan.impractical``: gpt-oss GRPO
    without bf16) gets a printed warning with the reason and what to do instead.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ConfigError(
            f"training dataset lacks column(s) {missing}; it has {dataset.column_names}. "
            "The correctness reward needs `answer` and `task` (use medreason_lib.data.load_task)."
        )
    if len(dataset) == 0:
        raise ConfigError("training dataset is empty")
    check_trackers(profile.report_to)
    batch = profile.per_device_train_batch_size * profile.gradient_accumulation_steps
    if batch % profile.num_generations:
        raise ConfigError(
            f"per_device_train_batch_size x gradient_accumulation_steps = {batch} is not "
            f"divisible by num_generations = {profile.num_generations} (profile "
            f"{profile.name!r}): each prompt's {profile.num_generations} completions must "
            "fit in one batch"
        )
    prompts_per_step = batch // profile.num_generations
    if len(dataset) < prompts_per_step:  # TRL would stop at step 0 with a log line, no error
        raise ConfigError(
            f"the training data has {len(dataset)} rows and one step takes {prompts_per_step} "
            f"prompts (per_device_train_batch_size x gradient_accumulation_steps {batch} / "
            f"num_generations {profile.num_generations}, profile {profile.name!r}): give more "
            "rows (train_size, MEDREASON_MAX_ITEMS) or a smaller batch"
        )
    if profile.max_prompt_length + profile.max_completion_length > profile.max_seq_length:
        raise ConfigError(
            f"max_prompt_length {profile.max_prompt_length} + max_completion_length "
            f"{profile.max_completion_length} > max_seq_length {profile.max_seq_length} "
            f"(profile {profile.name!r}): lower one or raise max_seq_length"
        )
    if profile.uses_unsloth:
        if gpu_gb is None:
            raise ConfigError(
                f"profile {profile.name!r} needs an NVIDIA GPU and none was found; "
                "use MEDREASON_PROFILE=tiny on a CPU"
            )
        bf16 = gpu_has_bf16() if bf16 is None else bf16
        planned = plan_for_profile(profile, "grpo", gpu=gpu_gb, bf16=bf16)
        slow = " ".join(planned.impractical)
        if not planned.fits():
            advice = "; ".join(planned.advice[:3]) or "use a smaller profile"
            raise ConfigError(
                f"profile {profile.name!r} needs about {planned.total_gb:.1f} GB of GPU memory "
                f"(medreason_lib.models.memory plan), {planned.required_gb:.1f} GB with the "
                "planner's "
                f"{planned.required_gb / planned.total_gb - 1:.0%} margin (its largest error "
                f"against published figures), and this GPU has {gpu_gb:.1f} GB. Lower first: "
                f"{advice}" + (f". Besides: {slow}" if slow else "")
            )
        if slow:
            message = f"profile {profile.name!r} fits this GPU but is impractical on it: {slow}"
            print(f"WARNING: {message}")
            warnings.warn(message, stacklevel=2)


def grpo_settings(profile: Profile, output_dir: str | Path, **overrides) -> dict:
    """The keyword arguments of ``GRPOConfig`` for a profile (``overrides`` win)."""
    settings = {
        "output_dir": str(output_dir),
        "max_steps": profile.max_steps,
        "learning_rate": profile.learning_rate,
        "lr_scheduler_type": profile.lr_scheduler_type,
        "warmup_steps": profile.warmup_steps,
        "weight_decay": profile.weight_decay,
        "max_grad_norm": profile.max_grad_norm,
        "optim": profile.optim,
        "per_device_train_batch_size": profile.per_device_train_batch_size,
        "gradient_accumulation_steps": profile.gradient_accumulation_steps,
        "num_generations": profile.num_generations,
        "max_completion_length": profile.max_completion_length,
        "temperature": profile.temperature,
        "top_p": profile.top_p,
        "beta": profile.beta,
        "loss_type": profile.loss_type,
        "epsilon": clip_range(profile)[0],
        "epsilon_high": clip_range(profile)[1],
        "scale_rewards": profile.scale_rewards,
        "mask_truncated_completions": profile.mask_truncated_completions,
        "importance_sampling_level": profile.importance_sampling_level,
        "chat_template_kwargs": dict(profile.chat_template_kwargs) or None,
        "logging_steps": profile.logging_steps,
        "save_steps": profile.save_steps,
        "save_total_limit": 2,
        "report_to": list(profile.report_to),  # [] = only the course's metrics.csv
        "project": f"medreason-{profile.name}",  # the trackio/wandb project, when one is on
        "disable_tqdm": True,  # the course's own bar instead (callbacks.use_course_progress)
        "seed": profile.seed,
        "data_seed": profile.seed,
        **machine_flags(profile),
    }
    settings.update(overrides)
    refusal = vllm_server_refusal(profile)
    if settings.get("use_vllm") and settings.get("vllm_mode") == "server" and refusal:
        raise ConfigError(refusal)
    return settings


def grpo_config(profile: Profile, output_dir: str | Path, **overrides):
    """TRL ``GRPOConfig`` for a profile. ``overrides`` replace any setting by name."""
    from trl import GRPOConfig

    return GRPOConfig(**grpo_settings(profile, output_dir, **overrides))
