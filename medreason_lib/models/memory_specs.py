"""The memory planner's data: model architectures, a GPU catalogue, and published figures.

Plain data, no arithmetic beyond parameter counts: ``medreason_lib.models.memory`` plans with it and
re-exports every name here (``memory.SPECS``, ``memory.GPUS``, ``memory.PUBLISHED``...).

- ``SPECS``: each model's architecture from its ``config.json``; a test checks each against
  the published parameter count.
- ``DEFAULTS``/``EXTRA`` (``SETTINGS``): the planner's settings, and ``resolve``, which
  gives a profile name's or a model id's architecture and default settings.
- ``GPUS``: memory and bf16 support of the GPUs a learner meets (Colab, cloud, clusters).
- ``PUBLISHED``: memory figures that Unsloth published, each with the settings it was taken
  at, its source, and the GPU precision it ran in: the planner's calibration points.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from medreason_lib.settings.profiles import LORA_TARGETS, PROFILES


@dataclass(frozen=True)
class ModelSpec:
    """Architecture facts, from the model's config.json (``source``)."""

    name: str  # canonical hub id
    layers: int
    hidden: int
    intermediate: int  # per expert for a mixture of experts
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    published_params_b: float | None  # total parameters as published, billions
    source: str = ""
    family: str = "dense"
    experts: int = 0  # 0: a dense MLP
    experts_per_token: int = 0
    sliding_window: int = 0
    sliding_layers: int = 0  # layers whose KV cache stops at sliding_window tokens
    lora_on_experts: bool = True
    published_active_b: float | None = None

    def linear_params(self) -> tuple[int, int]:
        """(attention, MLP) linear weights of one decoder layer, all experts counted."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attn = 2 * self.hidden * (q + kv)
        return attn, 3 * self.hidden * self.intermediate * max(self.experts, 1)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def total_params(self) -> int:
        """Linear layers, routers, norms and embeddings (biases left out: < 0.1%)."""
        attn, mlp = self.linear_params()
        per_layer = attn + mlp + 2 * self.hidden + self.hidden * self.experts
        lm_head = 0 if self.tied_embeddings else self.embedding_params
        return self.layers * per_layer + self.embedding_params + lm_head + self.hidden

    @property
    def active_params(self) -> int:
        """Parameters a token passes through (lm_head counted, the embedding lookup not)."""
        attn, mlp = self.linear_params()
        if self.experts:
            mlp = mlp // self.experts * self.experts_per_token
        return self.layers * (attn + mlp) + self.embedding_params

    def lora_params(self, rank: int, targets=LORA_TARGETS) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        sizes = {"q_proj": h + q, "k_proj": h + kv, "v_proj": h + kv, "o_proj": q + h}
        copies = (self.experts or 1) if self.lora_on_experts else 0
        sizes |= {t: (h + i) * copies for t in ("gate_proj", "up_proj", "down_proj")}
        return self.layers * rank * sum(sizes.get(t, 0) for t in targets)


# Values of each model's config.json on the hub (https://huggingface.co/<id>/blob/main/
# config.json): num_hidden_layers, hidden_size, intermediate_size, num_attention_heads,
# num_key_value_heads, head_dim (hidden/heads where absent), vocab_size, tie_word_embeddings;
# the parameter count is the model card's (Qwen2.5-3B 3.09B, Qwen3-8B 8.2B, gpt-oss-20b 21B
# total / 3.6B active; SmolLM2-135M 135M, its config as the smol build reads it). The tiny
# row copies medreason_lib.models.tiny (TINY_CONFIG, VOCAB_SIZE); a test keeps them equal (not
# imported: this module stays free of the tiny build's imports).
# fmt: off
_DENSE = (
    ("Qwen/Qwen2.5-3B-Instruct",          36, 2048, 11008, 16,  2, 128, 151936, True,  3.09),
    ("Qwen/Qwen3-8B",                     36, 4096, 12288, 32,  8, 128, 151936, False, 8.19),
    ("Qwen/Qwen2.5-7B-Instruct",          28, 3584, 18944, 28,  4, 128, 152064, False, 7.61),
    ("meta-llama/Llama-3.1-8B-Instruct",  32, 4096, 14336, 32,  8, 128, 128256, False, 8.03),
    ("Qwen/Qwen2.5-14B-Instruct",         48, 5120, 13824, 40,  8, 128, 152064, False, 14.7),
    ("Qwen/Qwen2.5-32B-Instruct",         64, 5120, 27648, 40,  8, 128, 152064, False, 32.5),
    ("meta-llama/Llama-3.3-70B-Instruct", 80, 8192, 28672, 64,  8, 128, 128256, False, 70.6),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", 30, 576,  1536,  9,  3,  64,  49152, True,  0.135),
    ("tiny",                               2,  128,   256,  4,  2,  32,   3072, True,  None),
)
# fmt: on
SPECS: dict[str, ModelSpec] = {
    row[0]: ModelSpec(*row, source="https://huggingface.co/" + row[0]) for row in _DENSE
}
# gpt-oss-20b: a mixture of experts, 32 SwiGLU experts of 2880, 4 per token; layers alternate
# sliding-window (128) and full attention. The checkpoint keeps the experts in MXFP4 (4-bit
# values + an 8-bit scale per 32: 4.25 bits) and attention, router and embeddings in bf16;
# load_in_4bit loads Unsloth's bitsandbytes 4-bit copy, about the same bytes. LoRA: Unsloth's
# gpt-oss notebook reports 3,981,312 trainable parameters at r=8 with all seven targets, which
# is the attention projections alone: the experts are not adapted.
SPECS["openai/gpt-oss-20b"] = ModelSpec(
    "openai/gpt-oss-20b", 24, 2880, 2880, 64, 8, 64, 201088, False, 20.91,
    source="https://huggingface.co/openai/gpt-oss-20b", family="gpt-oss", experts=32,
    experts_per_token=4, sliding_window=128, sliding_layers=12, lora_on_experts=False,
    published_active_b=3.61,
)  # fmt: skip
SPECS["tiny"] = dataclasses.replace(SPECS["tiny"], source="medreason_lib.models.tiny")
COURSE_MODELS = ("3b", "8b", "20b")  # GPU profiles, smallest first


def model_key(model_id: str) -> str:
    """'unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit' -> 'llama-3.1-8b'."""
    key = model_id.lower().rsplit("/", 1)[-1].removeprefix("meta-")
    if key.startswith("tiny:"):
        return "tiny"
    for suffix in ("-unsloth-bnb-4bit", "-bnb-4bit", "-unsloth", "-bf16", "-instruct", "-base"):
        key = key.removesuffix(suffix)
    return key


SPECS_BY_KEY = {model_key(name): spec for name, spec in SPECS.items()}


# Settings of a model no course profile names: TRL's num_generations, Unsloth's rank.
DEFAULTS = {
    "max_seq_length": 1024, "max_prompt_length": 256, "max_completion_length": 768,
    "num_generations": 8, "per_device_train_batch_size": 8, "lora_rank": 16,
    "lora_targets": LORA_TARGETS, "load_in_4bit": True, "use_vllm": True,
    "gpu_memory_utilization": 0.6, "optim": "adamw_8bit",
}  # fmt: skip
EXTRA = {"offload_embedding": False, "offload_activations": True, "vllm_standby": False,
         "bf16": True}  # fmt: skip
SETTINGS = (*DEFAULTS, *EXTRA)


def resolve(model: str) -> tuple[ModelSpec, dict]:
    """(architecture, default settings) of a profile name or a model id."""
    profile = PROFILES.get(model)
    if profile is None:
        spec = SPECS_BY_KEY.get(model_key(model))
        if spec is None:
            raise ValueError(f"unknown model {model!r}; valid: {', '.join([*PROFILES, *SPECS])}")
        same = [p for p in PROFILES.values() if p.model_id == model]
        same += [PROFILES[n] for n in COURSE_MODELS if spec_of(PROFILES[n]) is spec]
        profile = same[0] if same else None
    else:
        spec = spec_of(profile)
    settings = {**DEFAULTS, **EXTRA}
    if profile is not None:
        settings |= {k: getattr(profile, k) for k in DEFAULTS}
    settings["offload_embedding"] = spec.family == "gpt-oss"  # as medreason_lib.models loads it
    return spec, settings


def spec_of(profile) -> ModelSpec:
    """The architecture of a ``Profile``'s model."""
    return SPECS_BY_KEY[model_key(profile.model_id)]


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gb: float  # nvidia-smi's memory.total in GiB: what the process can address
    nominal_gb: int
    bf16: bool  # Ampere (compute capability 8.0) or newer; the T4 (Turing, 7.5) has no bf16


# nvidia-smi memory.total: T4 15360 MiB, L4 / A10G ~23030 MiB, A100 40960 / 81920 MiB,
# H100 SXM 81559 MiB, H200 143771 MiB. Smallest first.
GPUS: dict[str, GPU] = {g.name: g for g in (
    GPU("T4", 15.0, 16, False), GPU("L4", 22.5, 24, True), GPU("A10G", 22.5, 24, True),
    GPU("A100-40GB", 40.0, 40, True), GPU("A100-80GB", 80.0, 80, True),
    GPU("H100", 79.6, 80, True), GPU("H200", 140.4, 141, True),
)}  # fmt: skip


# --- published figures (the calibration points) -------------------------------------------
_TABLE_URL = "https://unsloth.ai/docs/get-started/fine-tuning-for-beginners/unsloth-requirements"
_NB = "https://github.com/unslothai/notebooks/blob/bdda2efc7ad5ae129ea63cd2065d23c391406283/nb/"
# The "absolute minimum" the table implies: batch 1, 512 tokens, rank 16, 8-bit Adam (the
# Unsloth notebooks' optimiser), no generation.
MINIMUM = {"per_device_train_batch_size": 1, "max_seq_length": 512, "lora_rank": 16,
           "optim": "adamw_8bit"}  # fmt: skip
# Unsloth's gpt-oss-20b notebooks run on a free Colab T4 (their output: "Tesla T4 ...
# Bfloat16 = FALSE", "Using float16 precision for gpt_oss won't work! Using float32").
# Fine-tuning: max_seq_length 1024, batch 1, r=8, adamw_8bit, the embedding on the GPU.
GPTOSS_SFT = {"per_device_train_batch_size": 1, "max_seq_length": 1024, "lora_rank": 8,
              "optim": "adamw_8bit", "offload_embedding": False, "bf16": False}  # fmt: skip
# GRPO: max_seq_length 768, a 50-token prompt (49 + 1), so 718 completion tokens; 2
# generations (the batch of 1 is raised to 2), rank 4, no vLLM, offload_embedding.
GPTOSS_GRPO = {"per_device_train_batch_size": 2, "num_generations": 2, "lora_rank": 4,
               "max_prompt_length": 50, "max_completion_length": 718, "use_vllm": False,
               "offload_embedding": True, "bf16": False}  # fmt: skip


@dataclass(frozen=True)
class Published:
    """One published memory figure: ``gb`` for ``model`` trained with ``method`` at
    ``settings`` (planner settings; ``bf16=False`` where it ran on a T4)."""

    model: str
    method: str
    gb: float
    settings: dict
    source: str
    comparable: bool = True  # False: the figure counts other things than the plan (see note)
    note: str = ""


# Unsloth's VRAM table, GB (QLoRA 4-bit, LoRA 16-bit), with the model used for each size.
UNSLOTH_TABLE = {
    "Qwen/Qwen2.5-3B-Instruct": (3.5, 8.0),
    "Qwen/Qwen2.5-7B-Instruct": (5.0, 19.0),
    "meta-llama/Llama-3.1-8B-Instruct": (6.0, 22.0),
    "Qwen/Qwen3-8B": (6.0, 22.0),  # the course's 8B, the same row
    "Qwen/Qwen2.5-14B-Instruct": (8.5, 33.0),
    "Qwen/Qwen2.5-32B-Instruct": (26.0, 76.0),
    "meta-llama/Llama-3.3-70B-Instruct": (41.0, 164.0),
}
# The table is by parameter count ("sometimes more VRAM is required depending on the
# model"). Unsloth's own Colab notebooks print the memory reserved after loading, before any
# training step: Qwen2.5-7B 5.764 GB, Llama-3.1-8B 5.984 GB, Qwen3-14B 11.898 GB (Tesla T4;
# nb/Qwen2.5_(7B)-Alpaca, nb/Llama3.1_(8B)-Alpaca, nb/Qwen3_(14B) at the commit in _NB).
_BELOW = "below these weights + adapter (the table is by size; 16-bit embeddings of a "
_NOTES = {
    ("Qwen/Qwen2.5-7B-Instruct", "qlora"): _BELOW + "152K vocabulary are 2 GB); Unsloth's "
    "notebook reserves 5.76 GB for this model after loading alone",
    ("Qwen/Qwen3-8B", "qlora"): _BELOW + "152K vocabulary are 2.3 GB)",
    ("meta-llama/Llama-3.1-8B-Instruct", "qlora"): "Unsloth's notebook reserves 5.98 GB for "
    "this model after loading alone, before any training tensor",
    ("Qwen/Qwen2.5-14B-Instruct", "qlora"): _BELOW + "152K vocabulary are 2.9 GB); "
    "Unsloth's notebook reserves 11.9 GB for Qwen3-14B after loading",
}
_BLOG_NOTE = (
    "not comparable: the blog's 54.3 = checkpoints 42 + logits 9.8 + the KV cache of one 20K "
    "sequence 2.5 (this plan: 40.0 and 9.8, the same); it leaves out the weights, the "
    "recomputed layer's tensors and the other 7 sequences' KV cache"
)
PUBLISHED: tuple[Published, ...] = (
    *(
        Published(m, method, gb, MINIMUM, _TABLE_URL, note=_NOTES.get((m, method), ""))
        for m, gbs in UNSLOTH_TABLE.items()
        for method, gb in zip(("qlora", "lora16"), gbs, strict=True)
    ),
    Published("openai/gpt-oss-20b", "qlora", 14.0, GPTOSS_SFT,
              "https://unsloth.ai/blog/gpt-oss (gpt-oss-20b LoRA training fits on a 14GB VRAM; "
              "free Colab T4)"),
    Published("openai/gpt-oss-20b", "qlora", 12.975, GPTOSS_SFT,
              _NB + "gpt-oss-(20B)-Fine-tuning.ipynb (printed: Peak reserved memory = 12.975 "
              "GB, Tesla T4)", note="measured by Unsloth: torch.cuda.max_memory_reserved()"),
    Published("openai/gpt-oss-20b", "grpo", 15.0, GPTOSS_GRPO,
              "https://docs.unsloth.ai/new/gpt-oss-reinforcement-learning (GRPO on 15GB VRAM, "
              "free Colab T4); settings: " + _NB + "gpt-oss-(20B)-GRPO.ipynb"),
    Published("meta-llama/Llama-3.1-8B-Instruct", "grpo", 54.3,
              {"per_device_train_batch_size": 8, "num_generations": 8, "max_prompt_length": 256,
               "max_completion_length": 20224, "offload_activations": False},
              "https://unsloth.ai/blog/grpo (20K context, 8 generations)", False, _BLOG_NOTE),
    # The course's own measurements: benchmarks/gpu_smoke.py, random weights, H100,
    # 2026-11-27, torch.cuda.max_memory_reserved() over 3 GRPO steps with HF generation (no
    # vLLM), batch 8, 8 generations, 64-token completions. The plan counts every sequence at
    # max_prompt_length, so these points use the run's longest prompt (259 and 265 tokens of
    # the bundled mix), not the profile's budget (640 / 768: +29.9% and +18.6% there).
    Published("Qwen/Qwen2.5-3B-Instruct", "grpo", 3.736,
              {"per_device_train_batch_size": 8, "num_generations": 8, "max_prompt_length": 259,
               "max_completion_length": 64, "lora_rank": 64, "use_vllm": False},
              "benchmarks/gpu_smoke.py (random weights, H100, 2026-11-27)",
              note="measured by the course; peak allocated 3.304 GB"),
    Published("Qwen/Qwen3-8B", "grpo", 8.539,
              {"per_device_train_batch_size": 8, "num_generations": 8, "max_prompt_length": 265,
               "max_completion_length": 64, "lora_rank": 32, "use_vllm": False},
              "benchmarks/gpu_smoke.py (random weights, H100, 2026-11-27)",
              note="measured by the course; peak allocated 7.793 GB"),
)  # fmt: skip

# Unsloth's gpt-oss GRPO notebook, under its training cell: "A T4 free GPU might take 5
# minutes for one generation sadly since it's an old GPU - A100 or H100 will be much faster!"
# GRPO generates once per step, so that is minutes per step.
SLOW_GENERATION = {
    "family": "gpt-oss",
    "minutes_per_generation": 5.0,
    "source": _NB + "gpt-oss-(20B)-GRPO.ipynb",
}
