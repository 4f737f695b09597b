"""GPU memory planner: will this model, method and setting fit, and what to lower first.

``plan(model, method, gpu=None, **overrides)`` adds up, from the architecture (``SPECS``) and
the settings (a profile's, or ``DEFAULTS``), what training holds at its peak, in GB:

- ``weights``: decoder linear weights at ``BYTES_4BIT`` (bitsandbytes NF4 with its block
  constants) or 2 bytes; embeddings, lm_head and norms 2 bytes (never quantised); no input
  embedding with ``offload_embedding`` (Unsloth's gpt-oss recipe).
- ``lora``: adapter parameters x (fp32 weight + fp32 gradient + Adam's m and v: 2 bytes with
  ``adamw_8bit``, 8 with 32-bit Adam).
- ``activations``: gradient checkpointing keeps one hidden state per token and layer (in CPU
  RAM with Unsloth's ``"unsloth"`` checkpointing: ``offload_activations``, the default) plus
  the tensors of the one layer being recomputed (``LAYER_TENSORS``) for the batch's tokens.
- ``kv_cache`` (grpo): keys and values of every sequence generated at once (the batch, rounded
  up to a multiple of num_generations as Unsloth does) x (prompt + completion) tokens;
  gpt-oss's sliding-window layers keep at most 128 tokens.
- ``logits``: ``LOGIT_BYTES`` per vocabulary entry for the tokens of one sequence: Unsloth and
  TRL compute the loss / GRPO log-probs in chunks, one generation at a time (Unsloth's GRPO
  blog: 20K tokens x 128K vocab = 9.8 GB, i.e. 4 bytes), never the whole batch's logits.
- ``runtime``: CUDA context, allocator slack on activations and logits, one dequantised 4-bit
  weight, vLLM's workspace (fast_inference).

vLLM colocation: vLLM reserves ``gpu_memory_utilization`` x GPU up front, shares the weights
with training and fills the rest with KV cache. The plan counts the KV cache the rollouts
*need*; given a GPU it also checks the split: weights + KV + vLLM workspace must fit in vLLM's
share and the training tensors in the rest (with ``vllm_standby=True``, Unsloth's
UNSLOTH_VLLM_STANDBY, vLLM frees its KV cache while training: only the total must fit).

GB is GiB (2**30 bytes), as nvidia-smi's MiB / 1024 and Unsloth's notebooks
(``torch.cuda.max_memory_reserved() / 1024**3``). ``calibration_table()`` compares with the
published figures on that measure (the total less the CUDA context, which torch does not see).
One formula, a few global constants, no per-model factor.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .profiles import LORA_TARGETS, PROFILES

GB = 2**30
BYTES_4BIT = 0.516  # NF4: 4 bits + 8-bit absmax per 64 + fp32 per 64*256 (double quant)
BYTES_16BIT = 2.0
LORA_BYTES = 8.0  # fp32 adapter weight + fp32 gradient (Adam's states come on top)
ADAM_BYTES = {"adamw_8bit": 2.0, "paged_adamw_8bit": 2.0}  # m + v; any other optimiser: 8
LAYER_TENSORS = (8, 4)  # 16-bit tensors of the recomputed layer: 8 x hidden + 4 x intermediate
LOGIT_BYTES = 4.0  # fp32 log-softmax (or 16-bit logits + their gradient) per vocab entry
CUDA_CONTEXT_GB = 0.5  # driver, cuBLAS and kernels: outside torch's allocator
ALLOCATOR_SLACK = 0.2  # caching-allocator fragmentation, as a share of activations + logits
VLLM_WORKSPACE_GB = 0.5  # vLLM's sampler, CUDA graphs and profiling buffers (fast_inference)
# 4-bit LoRA (SFT), 16-bit LoRA (SFT), GRPO: LoRA on the load_in_4bit model + generation
METHODS = ("qlora", "lora16", "grpo")


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
# total / 3.6B active). The tiny row copies medreason_lib.tiny (TINY_CONFIG, VOCAB_SIZE);
# a test keeps them equal (not imported: this module stays free of the tiny build's imports).
# fmt: off
_DENSE = (
    ("Qwen/Qwen2.5-3B-Instruct",          36, 2048, 11008, 16,  2, 128, 151936, True,  3.09),
    ("Qwen/Qwen3-8B",                     36, 4096, 12288, 32,  8, 128, 151936, False, 8.19),
    ("Qwen/Qwen2.5-7B-Instruct",          28, 3584, 18944, 28,  4, 128, 152064, False, 7.61),
    ("meta-llama/Llama-3.1-8B-Instruct",  32, 4096, 14336, 32,  8, 128, 128256, False, 8.03),
    ("Qwen/Qwen2.5-14B-Instruct",         48, 5120, 13824, 40,  8, 128, 152064, False, 14.7),
    ("Qwen/Qwen2.5-32B-Instruct",         64, 5120, 27648, 40,  8, 128, 152064, False, 32.5),
    ("meta-llama/Llama-3.3-70B-Instruct", 80, 8192, 28672, 64,  8, 128, 128256, False, 70.6),
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
SPECS["tiny"] = dataclasses.replace(SPECS["tiny"], source="medreason_lib.tiny")
COURSE_MODELS = ("3b", "8b", "20b")  # GPU profiles, smallest first


def _key(model_id: str) -> str:
    """'unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit' -> 'llama-3.1-8b'."""
    key = model_id.lower().rsplit("/", 1)[-1].removeprefix("meta-")
    if key.startswith("tiny:"):
        return "tiny"
    for suffix in ("-unsloth-bnb-4bit", "-bnb-4bit", "-unsloth", "-bf16", "-instruct", "-base"):
        key = key.removesuffix(suffix)
    return key


_BY_KEY = {_key(name): spec for name, spec in SPECS.items()}


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gb: float  # nvidia-smi's memory.total in GiB: what the process can address
    nominal_gb: int
    bf16: bool  # Ampere or newer; the T4 (Turing) trains in fp16


# nvidia-smi memory.total: T4 15360 MiB, L4 / A10G ~23030 MiB, A100 40960 / 81920 MiB,
# H100 SXM 81559 MiB, H200 143771 MiB.
GPUS: dict[str, GPU] = {g.name: g for g in (
    GPU("T4", 15.0, 16, False), GPU("L4", 22.5, 24, True), GPU("A10G", 22.5, 24, True),
    GPU("A100-40GB", 40.0, 40, True), GPU("A100-80GB", 80.0, 80, True),
    GPU("H100", 79.6, 80, True), GPU("H200", 140.4, 141, True),
)}  # fmt: skip

# Settings of a model no course profile names: TRL's num_generations, Unsloth's rank.
DEFAULTS = {
    "max_seq_length": 1024, "max_prompt_length": 256, "max_completion_length": 768,
    "num_generations": 8, "per_device_train_batch_size": 8, "lora_rank": 16,
    "lora_targets": LORA_TARGETS, "load_in_4bit": True, "use_vllm": True,
    "gpu_memory_utilization": 0.6, "optim": "adamw_8bit",
}  # fmt: skip
EXTRA = {"offload_embedding": False, "offload_activations": True, "vllm_standby": False}
SETTINGS = (*DEFAULTS, *EXTRA)


def resolve(model: str) -> tuple[ModelSpec, dict]:
    """(architecture, default settings) of a profile name or a model id."""
    profile = PROFILES.get(model)
    if profile is None:
        spec = _BY_KEY.get(_key(model))
        if spec is None:
            raise ValueError(f"unknown model {model!r}; valid: {', '.join([*PROFILES, *SPECS])}")
        same = [p for p in PROFILES.values() if p.model_id == model]
        same += [PROFILES[n] for n in COURSE_MODELS if _spec_of(PROFILES[n]) is spec]
        profile = same[0] if same else None
    else:
        spec = _spec_of(profile)
    settings = {**DEFAULTS, **EXTRA}
    if profile is not None:
        settings |= {k: getattr(profile, k) for k in DEFAULTS}
    settings["offload_embedding"] = spec.family == "gpt-oss"  # as medreason_lib.models loads it
    return spec, settings


def _spec_of(profile) -> ModelSpec:
    return _BY_KEY[_key(profile.model_id)]


def _gpu(gpu) -> tuple[str | None, float | None]:
    if gpu is None:
        return None, None
    if isinstance(gpu, int | float) and not isinstance(gpu, bool):
        return f"{gpu:g} GB", float(gpu)
    if gpu in GPUS:
        return gpu, GPUS[gpu].memory_gb
    raise ValueError(f"unknown GPU {gpu!r}; valid: {', '.join(GPUS)} or a number of GB")


def _breakdown(spec: ModelSpec, method: str, s: dict) -> dict[str, float]:
    """The formula (module docstring), in GB."""
    four_bit = method == "qlora" or (method == "grpo" and s["load_in_4bit"])
    attn, mlp = spec.linear_params()
    linear = spec.layers * (attn + mlp)
    rest = spec.total_params - linear - spec.embedding_params * s["offload_embedding"]
    weights = linear * (BYTES_4BIT if four_bit else BYTES_16BIT) + rest * BYTES_16BIT
    n_lora = spec.lora_params(s["lora_rank"], s["lora_targets"])
    lora = n_lora * (LORA_BYTES + ADAM_BYTES.get(s["optim"], 8.0))
    batch, seq = s["per_device_train_batch_size"], s["max_seq_length"]
    if method == "grpo":
        g = s["num_generations"]
        batch = math.ceil(batch / g) * g  # Unsloth rounds the batch up to a multiple of G
        seq = s["max_prompt_length"] + s["max_completion_length"]
    tokens = batch * seq
    inter = spec.intermediate * max(spec.experts_per_token, 1)
    layer = tokens * (LAYER_TENSORS[0] * spec.hidden + LAYER_TENSORS[1] * inter) * 2
    checkpoints = 0 if s["offload_activations"] else tokens * spec.layers * spec.hidden * 2
    logits = seq * spec.vocab * LOGIT_BYTES  # one sequence per chunk
    kv = 0
    if method == "grpo":  # K and V, 16-bit, per token and layer
        full = (spec.layers - spec.sliding_layers) * seq
        window = spec.sliding_layers * min(seq, spec.sliding_window or seq)
        kv = batch * (full + window) * 2 * spec.kv_heads * spec.head_dim * 2
    dequant = spec.hidden * max(inter, spec.heads * spec.head_dim) * 2 if four_bit else 0
    vllm = VLLM_WORKSPACE_GB * GB if method == "grpo" and s["use_vllm"] else 0
    slack = ALLOCATOR_SLACK * (layer + checkpoints + logits)
    parts = {
        "weights": weights,
        "lora": lora,
        "activations": layer + checkpoints,
        "kv_cache": kv,
        "logits": logits,
        "runtime": CUDA_CONTEXT_GB * GB + slack + dequant + vllm,
    }
    return {k: v / GB for k, v in parts.items()}


@dataclass
class MemoryPlan:
    model: str
    method: str
    settings: dict
    breakdown: dict[str, float]
    gpu: str | None = None
    gpu_gb: float | None = None
    advice: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_gb(self) -> float:
        return sum(self.breakdown.values())

    @property
    def headroom_gb(self) -> float | None:
        return None if self.gpu_gb is None else self.gpu_gb - self.total_gb

    def vllm_split(self, gpu_gb: float) -> tuple[float, float, float, float] | None:
        """(vLLM needs, vLLM's share, training needs, training's share), GB; None: no vLLM."""
        s = self.settings
        if self.method != "grpo" or not s["use_vllm"] or s["vllm_standby"]:
            return None
        need = self.breakdown["weights"] + self.breakdown["kv_cache"] + VLLM_WORKSPACE_GB
        share = s["gpu_memory_utilization"] * gpu_gb
        return need, share, self.total_gb - need, gpu_gb - share

    def fits(self, gpu_gb: float | None = None) -> bool:
        gpu_gb = self.gpu_gb if gpu_gb is None else gpu_gb
        if gpu_gb is None:
            raise ValueError("fits() needs a GPU size: plan(..., gpu=...) or fits(gpu_gb)")
        split = self.vllm_split(gpu_gb)
        split_ok = split is None or (split[0] <= split[1] and split[2] <= split[3])
        return self.total_gb <= gpu_gb and split_ok

    def table(self) -> str:
        s = self.settings
        if self.method == "grpo":
            shape = f"G {s['num_generations']}, {s['max_prompt_length']}+"
            shape += f"{s['max_completion_length']} tokens"
        else:
            shape = f"{s['max_seq_length']} tokens"
        batch = s["per_device_train_batch_size"]
        lines = [f"{self.model} {self.method} (batch {batch}, {shape}, rank {s['lora_rank']})"]
        lines += [f"  {k:<12}{v:8.2f} GB" for k, v in self.breakdown.items()]
        lines.append(f"  {'total':<12}{self.total_gb:8.2f} GB")
        if self.gpu_gb is not None:
            verdict = "fits" if self.fits() else "does NOT fit"
            room = f"headroom {self.headroom_gb:+.2f} GB"
            lines.append(f"  {self.gpu} ({self.gpu_gb:.1f} GB): {verdict}, {room}")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  lower first: {a}" for a in self.advice]
        return "\n".join(lines)

    __str__ = table

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["settings"]["lora_targets"] = list(d["settings"]["lora_targets"])
        fits = None if self.gpu_gb is None else self.fits()
        return {**d, "total_gb": self.total_gb, "headroom_gb": self.headroom_gb, "fits": fits}


def _advice(spec: ModelSpec, method: str, s: dict, gpu_gb: float | None) -> list[str]:
    """The settings to lower, in the order to lower them, each with the total it gives."""
    total = sum(_breakdown(spec, method, s).values())
    b, g, r = s["per_device_train_batch_size"], s["num_generations"], s["lora_rank"]
    batch = "per_device_train_batch_size"
    steps: list[dict] = []  # each: the settings it changes; the first one names it
    if method == "grpo":
        if g > 2:
            steps.append({"num_generations": g // 2, batch: max(g // 2, b // 2)})
        steps.append({"max_completion_length": s["max_completion_length"] // 2})
        if b > g:
            steps.append({batch: g})
    else:
        if b > 1:
            steps.append({batch: b // 2})
        steps.append({"max_seq_length": s["max_seq_length"] // 2})
    if r > 4:
        steps.append({"lora_rank": r // 2})
    out = []
    for change in steps:
        what = ", ".join(f"{k} {s[k]} -> {v}" for k, v in change.items())
        new = sum(_breakdown(spec, method, s | change).values())
        out.append(f"{what}: {new:.1f} GB (saves {total - new:.1f})")
    if method == "lora16":
        new = sum(_breakdown(spec, "qlora", s).values())
        out.append(f"load in 4-bit (method 'qlora'): {new:.1f} GB (saves {total - new:.1f})")
    if method == "grpo" and s["use_vllm"] and not s["vllm_standby"] and gpu_gb is not None:
        split = MemoryPlan(spec.name, method, s, _breakdown(spec, method, s)).vllm_split(gpu_gb)
        need, room = split[0] / gpu_gb, 1 - split[2] / gpu_gb
        works = f"{need:.2f} to {room:.2f} works" if need <= room else "no value works"
        why = f"vLLM needs {need:.2f} of the GPU, training leaves {room:.2f}"
        util = f"gpu_memory_utilization {s['gpu_memory_utilization']}: {works} ({why})"
        out.insert(2, util + "; or UNSLOTH_VLLM_STANDBY=1 (vllm_standby=True)")
    smaller = [n for n in COURSE_MODELS if _spec_of(PROFILES[n]).total_params < spec.total_params]
    if smaller:
        alt = sum(_breakdown(_spec_of(PROFILES[smaller[-1]]), method, s).values())
        out.append(f"a smaller model: profile {smaller[-1]!r}, these settings: {alt:.1f} GB")
    return out


def plan(model: str, method: str, gpu=None, **overrides) -> MemoryPlan:
    """Peak GPU memory of training ``model`` with ``method`` (see the module docstring).

    ``model``: a profile name or a model id; ``gpu``: a name in ``GPUS`` or GB; ``overrides``:
    any of ``SETTINGS`` (``batch_size`` is per_device_train_batch_size).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    spec, settings = resolve(model)
    if "batch_size" in overrides:
        overrides["per_device_train_batch_size"] = overrides.pop("batch_size")
    unknown = sorted(set(overrides) - set(SETTINGS))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; valid: {', '.join(SETTINGS)}")
    settings |= overrides
    settings["lora_targets"] = tuple(settings["lora_targets"])
    gpu_name, gpu_gb = _gpu(gpu)
    result = MemoryPlan(spec.name, method, settings, _breakdown(spec, method, settings))
    result.gpu, result.gpu_gb = gpu_name, gpu_gb
    result.advice = _advice(spec, method, settings, gpu_gb)
    notes = result.notes
    if method == "grpo" and settings["use_vllm"]:
        notes.append(
            "vLLM reserves gpu_memory_utilization x GPU up front: kv_cache is what "
            "the rollouts need, the rest of its share is spare KV cache"
        )
    if gpu_gb is not None:
        split = result.vllm_split(gpu_gb)
        if split is not None:
            need, share, train, rest = (f"{x:.1f} GB" for x in split)
            shown = max(split[0], split[1]) + split[2]  # vLLM's share is taken in full
            notes.append(
                f"vLLM's {share} hold weights + KV + workspace {need}; training "
                f"needs {train} of the other {rest}; nvidia-smi shows ~{shown:.1f} GB"
            )
        if gpu_name in GPUS and not GPUS[gpu_name].bf16:
            notes.append(f"{gpu_name} has no bf16: training runs in fp16")
        if not result.fits():
            notes.append(f"does not fit on {gpu_name}: lower the settings below, in order")
    if spec.experts:
        k = spec.experts_per_token
        notes.append(f"MoE: all {spec.experts} experts stay in memory; {k} per token act")
    return result


def plan_for_profile(profile, method: str = "grpo", gpu=None) -> MemoryPlan:
    """``plan`` for a ``Profile`` object as it is, changed settings included (a profile made
    with ``profile.replace(num_generations=4)`` is planned with 4 generations)."""
    settings = {k: getattr(profile, k) for k in DEFAULTS}
    return plan(profile.model_id, method, gpu=gpu, **settings)


# --- calibration ------------------------------------------------------------------------
_TABLE_URL = "https://unsloth.ai/docs/get-started/fine-tuning-for-beginners/unsloth-requirements"
# The "absolute minimum" the table implies: batch 1, 512 tokens, rank 16, 8-bit Adam (the
# Unsloth notebooks' optimiser), no generation.
MINIMUM = {"per_device_train_batch_size": 1, "max_seq_length": 512, "lora_rank": 16,
           "optim": "adamw_8bit"}  # fmt: skip
# Unsloth's gpt-oss-20b GRPO notebook: max_seq_length 768, rank 4, 2 generations, no vLLM,
# offload_embedding; its prompts are short, so most of the 768 tokens are completion.
GPTOSS_GRPO = {"per_device_train_batch_size": 2, "num_generations": 2, "lora_rank": 4,
               "max_prompt_length": 128, "max_completion_length": 640, "use_vllm": False,
               "offload_embedding": True}  # fmt: skip


@dataclass(frozen=True)
class Published:
    model: str
    method: str
    gb: float
    settings: dict
    source: str
    required: bool = True  # the tests hold these within 30%
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
_NOTES = {
    ("Qwen/Qwen2.5-14B-Instruct", "qlora"): "its 4-bit weights alone (9.3 GB: embeddings stay "
    "16-bit) exceed 8.5; the 4-bit column reads like ~0.5 byte for every parameter",
    ("meta-llama/Llama-3.1-8B-Instruct", "lora16"): "the 16-bit column grows ~2.4 GB per "
    "billion parameters, more than 16-bit weights' 2 bytes: one formula lands low here and "
    "high on the 4-bit 7B-14B",
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
    Published("openai/gpt-oss-20b", "qlora", 14.0, MINIMUM | {"lora_rank": 8},
              "https://unsloth.ai/blog/gpt-oss (gpt-oss-20b LoRA fits in 14GB VRAM)"),
    Published("openai/gpt-oss-20b", "grpo", 15.0, GPTOSS_GRPO,
              "https://docs.unsloth.ai/new/gpt-oss-reinforcement-learning (GRPO in 15GB)"),
    Published("meta-llama/Llama-3.1-8B-Instruct", "grpo", 54.3,
              {"per_device_train_batch_size": 8, "num_generations": 8, "max_prompt_length": 256,
               "max_completion_length": 20224, "offload_activations": False},
              "https://unsloth.ai/blog/grpo (20K context, 8 generations)", False, _BLOG_NOTE),
)  # fmt: skip


def calibration_table() -> list[dict]:
    """Published vs planned: the total less the CUDA context, as torch reports memory."""
    rows = []
    for p in PUBLISHED:
        total = plan(p.model, p.method, **p.settings).total_gb - CUDA_CONTEXT_GB
        error = round(100 * (total / p.gb - 1), 1)
        row = {"model": p.model, "method": p.method, "published_gb": p.gb}
        row |= {"planned_gb": round(total, 2), "error_pct": error, "required": p.required}
        rows.append(row | {"settings": p.settings, "source": p.source, "note": p.note})
    return rows


def format_calibration(rows: list[dict] | None = None) -> str:
    rows = calibration_table() if rows is None else rows
    out = [f"{'model':<34}{'method':<8}{'published':>10}{'planned':>9}{'error':>8}  required"]
    for r in rows:
        gbs = f"{r['published_gb']:>10.1f}{r['planned_gb']:>9.2f}{r['error_pct']:>+7.1f}%"
        req = "yes" if r["required"] else "no: " + r["note"][:40]
        out.append(f"{r['model']:<34}{r['method']:<8}{gbs}  {req}")
    return "\n".join(out)


if __name__ == "__main__":  # python -m medreason_lib.memory
    print(format_calibration(), end="\n\n")
    for name in COURSE_MODELS:
        print(plan(name, "grpo"))
        for gpu_name in ("T4", "L4", "A100-40GB", "H100"):
            p = plan(name, "grpo", gpu=gpu_name)
            verdict = "fits" if p.fits() else "does NOT fit"
            print(f"  {gpu_name:<10} {verdict:<13} headroom {p.headroom_gb:+6.2f} GB")
        print()
