"""Continued pretraining's settings: how long and how fast, the trainer's configuration, the
two learning rates, what trains, and the charts of a run (``pretrain`` runs it).

- ``cpt_settings(profile)``: steps, batch, the LoRA and the embedding learning rates.
- ``cpt_config_kwargs``: the keywords of the trainer's config: TRL's ``SFTConfig`` in
  language-modelling mode (a ``text`` column, every token in the loss) on tiny; on a GPU
  Unsloth's ``UnslothTrainingArguments``, the same keywords plus ``embedding_learning_rate``.
- ``embedding_parameter_groups`` / ``optimizer``: on tiny, plain TRL has no
  ``embedding_learning_rate``, so the course builds the optimizer Unsloth's ``UnslothTrainer``
  builds: one group for the LoRA matrices at ``learning_rate``, one for the fully trained
  ``embed_tokens``/``lm_head`` copies (peft names them ``...modules_to_save.default.weight``)
  at ``embedding_learning_rate``.
- ``trainable_parameters``: how many numbers train, by kind (a tied embedding counts once).
- ``plot_cpt_loss``, ``plot_perplexity``: the charts notebook 09 shows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from medreason_lib.settings.profiles import Profile, capped
from medreason_lib.training.config import machine_flags

EMBEDDING_SUFFIX = "modules_to_save.default.weight"  # peft's full copy of a saved module


@dataclass(frozen=True)
class CPTSettings:
    """How long and how fast continued pretraining runs (``cpt_settings(profile)``)."""

    steps: int
    learning_rate: float  # the LoRA matrices
    embedding_learning_rate: float  # embed_tokens and lm_head: smaller (Unsloth: 2-10x)
    batch_size: int
    max_length: int  # tokens per training document (longer ones are cut); perplexity windows
    n_heldout: int  # held-out abstracts
    artificial_docs: int = 0  # PQA-A abstracts added to the training side (GPU profiles)
    lr_scheduler_type: str = "constant"
    warmup_steps: float = 0.0  # below 1: a fraction of the steps
    optim: str = "adamw_torch"


def cpt_settings(profile: Profile, **changes) -> CPTSettings:
    """The CPT settings of a profile; ``changes`` override fields (unknown names: TypeError).

    tiny: 20 steps of 8 abstracts at 5e-3 (embeddings 2e-3), 6 abstracts held out: seconds on
    a CPU. GPU: 200 steps of 8 abstracts at 5e-5 (embeddings 1e-5: the rates of Unsloth's
    continued-pretraining notebook, whose comment asks for an embedding rate 2 to 10x smaller),
    cosine schedule, 10% warm-up, 8-bit AdamW, 100 abstracts held out. A real model on a CPU
    (smol): 20 steps of 8 abstracts at 2e-4 (embeddings 5e-5), 6 of the bundled abstracts
    held out, plain AdamW: about a minute.
    """
    if profile.is_tiny:
        base = CPTSettings(20, 5e-3, 2e-3, 8, profile.max_seq_length, n_heldout=6)
    elif not profile.uses_unsloth:
        base = CPTSettings(20, 2e-4, 5e-5, 8, 512, n_heldout=6)
    else:
        base = CPTSettings(
            200, 5e-5, 1e-5, 8, 768, n_heldout=100, artificial_docs=2000,
            lr_scheduler_type="cosine", warmup_steps=0.1, optim="adamw_8bit",
        )  # fmt: skip
    # the environment's caps (profiles.capped) shrink the defaults, never an explicit change
    base = dataclasses.replace(
        base, steps=capped(base.steps), n_heldout=capped(base.n_heldout, "MEDREASON_MAX_ITEMS")
    )
    settings = dataclasses.replace(base, **changes)
    for name in ("steps", "batch_size", "max_length", "n_heldout"):
        if getattr(settings, name) < 1:
            raise ValueError(
                f"CPT setting {name} must be at least 1, got {getattr(settings, name)}"
            )
    if settings.artificial_docs < 0:
        raise ValueError(
            f"CPT setting artificial_docs must be >= 0, got {settings.artificial_docs}"
        )
    if not 0 < settings.embedding_learning_rate <= settings.learning_rate:
        raise ValueError(
            f"CPT setting embedding_learning_rate={settings.embedding_learning_rate:g} must be "
            f"positive and at most learning_rate={settings.learning_rate:g} (Unsloth's recipe: "
            "2-10x smaller, so the embeddings learn more slowly)"
        )
    return settings


def cpt_config_kwargs(profile: Profile, settings: CPTSettings, output_dir: str | Path) -> dict:
    """Keywords of the trainer's config (``SFTConfig`` on tiny, ``UnslothTrainingArguments``,
    which adds ``embedding_learning_rate``, on a GPU): next-token loss on every token of a
    ``text`` column, no packing, a loss logged every step, no checkpoints."""
    kwargs = {
        "output_dir": str(output_dir),
        "max_steps": settings.steps,
        "per_device_train_batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": settings.lr_scheduler_type,
        "warmup_steps": settings.warmup_steps,
        "weight_decay": 0.0,
        "optim": settings.optim,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "seed": profile.seed,
        "max_length": settings.max_length,
        "dataset_text_field": "text",
        "packing": False,
        "disable_tqdm": True,
        **machine_flags(profile),
    }
    if profile.uses_unsloth:
        kwargs["embedding_learning_rate"] = settings.embedding_learning_rate
    return kwargs


def is_embedding(name: str) -> bool:
    """Whether a parameter name is a fully trained embedding or LM head copy (peft's
    ``modules_to_save``), the rule Unsloth's optimizer uses to give it the embedding rate."""
    return name.endswith(EMBEDDING_SUFFIX)


def embedding_parameter_groups(model, learning_rate: float, embedding_learning_rate: float):
    """Two optimizer groups over the trainable parameters: the rest at ``learning_rate``, the
    embedding copies at ``embedding_learning_rate``. ``ValueError`` when no embedding trains
    (the model was not prepared with ``models.load_for_cpt``)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    embeddings = [p for n, p in named if is_embedding(n)]
    if not embeddings:
        raise ValueError(
            "no trainable embed_tokens/lm_head copy (modules_to_save) in the model: "
            "embedding_learning_rate would apply to nothing; load it with models.load_for_cpt"
        )
    rest = [p for n, p in named if not is_embedding(n)]
    return [
        {"params": rest, "lr": learning_rate, "weight_decay": 0.0},
        {"params": embeddings, "lr": embedding_learning_rate, "weight_decay": 0.0},
    ]


def optimizer(model, settings: CPTSettings):
    """``torch.optim.AdamW`` over ``embedding_parameter_groups`` (tiny; Unsloth builds its own)."""
    import torch

    groups = embedding_parameter_groups(
        model, settings.learning_rate, settings.embedding_learning_rate
    )
    return torch.optim.AdamW(groups, lr=settings.learning_rate)


def trainable_parameters(model) -> dict[str, int]:
    """Parameter counts: ``lora`` (A and B matrices), ``embeddings`` (the fully trained
    ``embed_tokens``/``lm_head`` copies; one shared matrix when they are tied), ``other``
    trainable, ``trainable`` in all and ``total`` (each tensor once; a 4-bit model's frozen
    weights count as stored, two to a byte)."""
    counts = {"lora": 0, "embeddings": 0, "other": 0, "trainable": 0, "total": 0}
    for name, p in model.named_parameters():  # shared tensors are listed once
        counts["total"] += p.numel()
        if not p.requires_grad:
            continue
        counts["trainable"] += p.numel()
        kind = "embeddings" if is_embedding(name) else "lora" if "lora_" in name else "other"
        counts[kind] += p.numel()
    return counts


def plot_cpt_loss(result, vocab_size: int | None = None):
    """The training loss per step (nats per token); with ``vocab_size``, a dashed line at
    ln(vocab size), the loss of a model that spreads its bet evenly over every token."""
    import matplotlib.pyplot as plt

    steps, losses = zip(*result.losses, strict=True)
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.plot(steps, losses, marker=".", label="training loss")
    if vocab_size:
        ax.axhline(math.log(vocab_size), color="grey", ls="--", label=f"ln({vocab_size:,})")
    ax.set_xlabel("step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("next-token loss (nats/token)")
    ax.set_title("Continued pretraining: loss on the training abstracts")
    ax.legend(loc="lower left")  # the loss falls from the top left
    fig.tight_layout()
    return fig


def plot_perplexity(result):
    """Perplexity before and after CPT on the held-out abstracts and on as many training
    abstracts (log scale), each bar labelled with its value."""
    import matplotlib.pyplot as plt

    groups = {
        "held-out abstracts": (result.before.value, result.after.value),
        "training abstracts (sample)": (result.train_before.value, result.train_after.value),
    }
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for k, (label, color) in enumerate((("before", "tab:grey"), ("after", "tab:blue"))):
        xs = [g + (k - 0.5) * 0.38 for g in range(len(groups))]
        values = [pair[k] for pair in groups.values()]
        bars = ax.bar(xs, values, 0.38, label=label, color=color)
        ax.bar_label(bars, labels=[f"{v:,.1f}" for v in values], fontsize="small")
    ax.set_yscale("log")
    ax.set_ylim(1, 40 * max(max(pair) for pair in groups.values()))  # a perplexity is >= 1
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title("Perplexity before and after continued pretraining")
    ax.legend(loc="upper right", ncols=2)
    fig.tight_layout()
    return fig
