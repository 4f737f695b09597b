"""Supervised fine-tuning before GRPO: teach the template first.

GRPO learns only from differences between the completions of one prompt. A model that never
writes ``<reasoning>...</reasoning><answer>...</answer>`` earns 0 from every reward, every
completion in every group scores the same, and there is nothing to learn from
(``frac_reward_zero_std`` = 1). Instruction-tuned models follow the system prompt well enough
to start; a base model (and the course's random tiny model) needs a short SFT step first,
the "cold start" that DeepSeek-R1 and the Qwen3 medical reasoners use before RL.

``warmstart_dataset`` builds that step's data for the tiny profile. It imitates an
instruction-tuned model that follows the requested format only part of the time: a share of
the completions (``template_share``) use the template, the rest answer in plain prose
("The answer is yes."), which earns no format reward and, having no answer block, no
correctness either. Every answer is drawn at random from the task's answer set: the warm
start teaches the *shapes* of an answer, deliberately not which answer is right. What the
model does better afterwards (using the template every time, then preferring the answers
that pay) it learned from GRPO's rewards.

The shapes depend on the chat family (``Profile.family``), because the rewards read each
family's output through ``template.parse_completion``:

- ``qwen2``: the template text (or the prose) is the assistant message's content.
- ``qwen3`` with thinking off: the same content; the chat template puts the empty think
  block before it, which with ``enable_thinking=False`` belongs to the prompt, as in GRPO.
- ``gpt-oss``: the template's two parts go to the two harmony channels: the reasoning is
  the message's ``thinking`` (the analysis channel), the bare answer its ``content`` (the
  final channel). TRL decodes completions with ``skip_special_tokens=True``, which turns
  that into ``analysis<reasoning>assistantfinal<answer>``, a form the parser maps onto the
  template. The share that does not follow the format leaves its answer in the reasoning:
  "The answer is yes." in the analysis channel and an empty final channel. Like the prose
  of the Qwen families it has no answer to read, so it earns no correctness and almost no
  format credit, and it reads the same with the special tokens kept or stripped. (A
  final-channel-only answer would not: stripped, it decodes to ``final...``, which the
  parser does not recognise.)

The rows carry the profile's ``chat_template_kwargs`` (``enable_thinking``,
``reasoning_effort``) in a ``chat_template_kwargs`` column, which ``SFTTrainer`` passes to
the chat template, so the warm start sees the prompts exactly as GRPO renders them.

A finished tiny warm start is also kept in ``paths.cache_dir()/warmstart`` under a hash of
its stamp (the base model, the data, the settings) and of the torch/transformers/trl/peft
versions, like the tiny model itself: the tests and the notebooks (``make test``,
``make course``) then train each one once, and a different stamp is a different entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

from datasets import Dataset

from medreason_lib.scoring.answers import answer_type
from medreason_lib.scoring.template import format_completion
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import Profile
from medreason_lib.training.config import machine_flags

_ANSWER_SETS = {
    "yes_no_maybe": ["yes", "no", "maybe"],
    "choice": ["A", "B", "C", "D"],
    "number": [str(n) for n in range(0, 100)],
}


_FAMILIES = ("qwen2", "qwen3", "gpt-oss")

# One short reasoning line per answer type: the warm start is about the layout, and a
# fixed line is learned in a few dozen steps where a varied one would take hundreds.
_REASONING = {
    "yes_no_maybe": "Weigh what the context reports against the question.",
    "choice": "Compare each option with the findings.",
    "number": "Work through the quantities step by step.",
}


def _message(family: str, kind: str, answer: str, follows: bool) -> dict:
    """The warm start's assistant message for one drawn answer (see the module docstring)."""
    if family == "gpt-oss":
        if follows:
            return {"role": "assistant", "thinking": _REASONING[kind], "content": answer}
        return {"role": "assistant", "thinking": f"The answer is {answer}.", "content": ""}
    text = format_completion(_REASONING[kind], answer) if follows else f"The answer is {answer}."
    return {"role": "assistant", "content": text}


def warmstart_dataset(
    dataset: Dataset,
    seed: int = 0,
    template_share: float = 0.5,
    copies: int = 4,
    *,
    family: str = "qwen2",
    chat_template_kwargs: dict | None = None,
) -> Dataset:
    """Prompt/completion pairs with random (not gold) answers, ``template_share`` of them in
    the template and the rest in plain prose, shaped for the chat ``family``.

    Each prompt appears ``copies`` times with independently drawn completions, so the model
    learns a *distribution* per prompt. With one completion per prompt it would memorise it,
    sample the same completion G times, and GRPO's groups would carry no signal.
    Keeps TRL's conversational prompt-completion layout: ``prompt`` is the list of chat
    messages, ``completion`` a one-message assistant turn. ``chat_template_kwargs`` (a
    profile's) become a column of that name, which ``SFTTrainer`` applies per row.
    The same ``seed`` draws the same answers and shares in every family.
    """
    if family not in _FAMILIES:
        raise ValueError(f"unknown chat family {family!r}; valid: {', '.join(_FAMILIES)}")
    rng = random.Random(seed)
    rows = []
    for row in [r for r in dataset for _ in range(copies)]:
        kind = answer_type(row["task"])
        answer = rng.choice(_ANSWER_SETS[kind])
        follows = rng.random() < template_share
        out = {"prompt": row["prompt"], "completion": [_message(family, kind, answer, follows)]}
        if chat_template_kwargs:
            out["chat_template_kwargs"] = dict(chat_template_kwargs)
        rows.append(out)
    return Dataset.from_list(rows)


def profile_warmstart_dataset(profile: Profile, dataset: Dataset) -> Dataset:
    """``warmstart_dataset`` for a profile: its seed, chat family and chat-template keywords."""
    return warmstart_dataset(
        dataset,
        seed=profile.seed,
        family=profile.family,
        chat_template_kwargs=dict(profile.chat_template_kwargs),
    )


def sft_settings(profile: Profile, output_dir: Path, steps: int, **overrides) -> dict:
    """The keyword arguments of ``SFTConfig`` for the warm start (``overrides`` win)."""
    settings = {
        "output_dir": str(output_dir),
        "max_steps": steps,
        "per_device_train_batch_size": 8,
        "learning_rate": 2e-3 if profile.is_tiny else 2e-4,
        "lr_scheduler_type": "constant",
        "logging_steps": max(1, steps // 4),
        "save_strategy": "no",
        "report_to": list(profile.report_to),
        "project": f"medreason-{profile.name}",
        "seed": profile.seed,
        "max_length": profile.max_seq_length,
        "completion_only_loss": True,
        "disable_tqdm": True,
        **machine_flags(profile),
    }
    settings.update(overrides)
    return settings


def sft_config(profile: Profile, output_dir: Path, steps: int, **overrides):
    """TRL ``SFTConfig`` for the warm start (CPU-safe precision, no checkpoints)."""
    from trl import SFTConfig

    return SFTConfig(**sft_settings(profile, output_dir, steps, **overrides))


def run_warmstart(
    profile: Profile, dataset: Dataset, output_dir: Path, *, force: bool = False
) -> Path:
    """Fine-tune the profile's model on ``profile_warmstart_dataset(profile, dataset)`` and
    save it.

    Full fine-tuning (the tiny model has 0.7M parameters; LoRA on a random model learns
    little). Reuses a finished warm start in ``output_dir`` unless ``force``. Returns the
    folder, which then serves as the GRPO base model.
    """
    from medreason_lib.training.trl_compat import install_cpu_logprob_fallback

    install_cpu_logprob_fallback()
    data = profile_warmstart_dataset(profile, dataset)
    steps = profile.sft_warmup_steps
    stamp = _warmstart_stamp(profile, data, steps)
    stamp_path = output_dir / "warmstart.json"
    if not force and stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        print(f"SFT warm start: reusing {output_dir} (same model, data and settings)")
        return output_dir
    cached = warmstart_cache_dir(stamp) if profile.is_tiny else None
    if cached is None or int(os.environ.get("WORLD_SIZE", "1")) > 1:  # DDP: all ranks train
        return _build_or_copy(profile, data, stamp, output_dir, cached, force)
    # Test processes (pytest -n 2) and notebooks running side by side ask for the same cached
    # warm start: one builds it, the others wait for the lock and then copy it.
    from filelock import FileLock

    cached.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cached.parent / f".{cached.name}.lock")):
        return _build_or_copy(profile, data, stamp, output_dir, cached, force)


def _build_or_copy(
    profile: Profile, data: Dataset, stamp: dict, output_dir: Path, cached, force: bool
) -> Path:
    """``run_warmstart``'s work: copy the cached warm start, or train and store it."""
    from trl import SFTTrainer

    from medreason_lib.models import close_trainer, free_memory, load_for_training
    from medreason_lib.training.callbacks import use_course_progress

    steps = profile.sft_warmup_steps
    stamp_path = output_dir / "warmstart.json"
    if not force and cached is not None and (cached / "warmstart.json").is_file():
        if _rank() > 0:  # under accelerate/torchrun: process 0 copies it, the others wait
            return _wait_for_stamp(stamp_path, stamp)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        shutil.copytree(cached, output_dir, ignore=shutil.ignore_patterns("warmstart.json"))
        shutil.copy2(cached / "warmstart.json", stamp_path)  # last: it marks a finished copy
        print("SFT warm start: reusing the cached one (same model, data and settings)")
        return output_dir
    model, tokenizer, _ = load_for_training(profile)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(profile, output_dir / "_trainer", steps),
        train_dataset=data,
        processing_class=tokenizer,
    )
    use_course_progress(trainer, "SFT warm start")  # one bar, no printed loss dicts
    result = trainer.train()
    print(f"SFT warm start: {steps} steps, mean loss {result.training_loss:.3f} -> {output_dir}")
    trainer.save_model(str(output_dir))
    if _rank() == 0:  # one writer; under DDP every process trained the same weights
        tokenizer.save_pretrained(str(output_dir))
        stamp_path.write_text(json.dumps(stamp, indent=2))
        if cached is not None:
            store_in_cache(output_dir, cached)
    close_trainer(trainer)  # the GRPO model loads next: free this one first
    del trainer, model
    free_memory()
    return output_dir if _rank() == 0 else _wait_for_stamp(stamp_path, stamp)


def _rank() -> int:
    """This process's rank under ``accelerate launch``/``torchrun`` (0 when alone)."""
    return int(os.environ.get("RANK", "0"))


def _wait_for_stamp(stamp_path: Path, stamp: dict, timeout_s: float = 1800) -> Path:
    """Wait until process 0 has written ``stamp_path`` with ``stamp`` (written last, after
    the weights), then return its folder: the other processes never read half a model."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stamp_path.is_file():
            try:
                if json.loads(stamp_path.read_text()) == stamp:
                    return stamp_path.parent
            except json.JSONDecodeError:  # being written
                pass
        time.sleep(0.5)
    raise TimeoutError(
        f"process {_rank()} waited {timeout_s:.0f} s for process 0's SFT warm start in "
        f"{stamp_path.parent}; did process 0 fail?"
    )


def warmstart_cache_dir(stamp: dict) -> Path:
    """Where a tiny warm start with this stamp is cached (it may not exist yet)."""
    from importlib.metadata import version

    libraries = {name: version(name) for name in ("torch", "transformers", "trl", "peft")}
    key = json.dumps({"stamp": stamp, "libraries": libraries}, sort_keys=True)
    return paths.cache_dir() / "warmstart" / hashlib.sha256(key.encode()).hexdigest()[:16]


def store_in_cache(folder: Path, cached: Path, marker: str = "warmstart.json") -> None:
    """Copy a finished model folder (a warm start, a trace SFT) into the cache: into a
    temporary folder first, moved into place with ``os.replace``, so a reader never sees half
    a model (when two processes store the same one, the first move wins and the other copy is
    discarded). ``marker`` is the file a finished entry holds."""
    with paths.building(cached, marker) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("_trainer"))


def _warmstart_stamp(profile: Profile, data: Dataset, steps: int) -> dict:
    """What a saved warm start was made from; a different stamp means it must be redone."""
    from medreason_lib.models.tiny import resolve_model_id

    digest = hashlib.sha256(json.dumps(data.to_list(), sort_keys=True).encode()).hexdigest()
    return {
        "base": profile.model_id,
        "base_path": resolve_model_id(profile.model_id, seed=profile.seed),
        "data_sha256": digest,
        "settings": {  # where the run reports is not what it learns
            k: str(v)
            for k, v in sft_settings(profile, Path("."), steps).items()
            if k not in ("report_to", "project")
        },
    }
