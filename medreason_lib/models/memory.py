"""GPU memory planner: will this model, method and setting fit, and what to lower first.

``plan(model, method, gpu=None, **overrides)`` adds up, from the architecture (``SPECS``, in
``memory_specs``) and the settings (a profile's, or ``DEFAULTS``), what training holds at
its peak, in GB:

- ``weights``: decoder linear weights at ``BYTES_4BIT`` (bitsandbytes NF4 with its block
  constants) or 2 bytes; embeddings, lm_head and norms 2 bytes (never quantised); no input
  embedding with ``offload_embedding`` (Unsloth's gpt-oss recipe).
- ``lora``: adapter parameters x (fp32 weight + fp32 gradient + Adam's m and v: 2 bytes with
  ``adamw_8bit``, 8 with 32-bit Adam).
- ``activations``: gradient checkpointing keeps one hidden state per token and layer (in CPU
  RAM with Unsloth's ``"unsloth"`` checkpointing: ``offload_activations``, the default) plus
  the tensors of the one layer being recomputed (``LAYER_TENSORS``) for the batch's tokens,
  at the compute precision (below).
- ``kv_cache`` (grpo): keys and values of every sequence generated at once (the batch, rounded
  up to a multiple of num_generations as Unsloth does) x (prompt + completion) tokens;
  gpt-oss's sliding-window layers keep at most 128 tokens.
- ``logits``: ``LOGIT_BYTES`` per vocabulary entry for the tokens of one sequence: Unsloth and
  TRL compute the loss / GRPO log-probs in chunks, one generation at a time (Unsloth's GRPO
  blog: 20K tokens x 128K vocab = 9.8 GB, i.e. 4 bytes), never the whole batch's logits.
- ``runtime``: ``CUDA_CONTEXT_GB``; ``OVERHEAD`` x the tensors above (what torch reserves
  beyond them); the largest weight dequantised at once (one matrix of a dense model; one
  projection of *all* experts for a mixture of experts, as unsloth_zoo's grouped QLoRA path
  dequantises them); vLLM's workspace (fast_inference).

Precision: 16-bit compute, except where Unsloth forces float32 (``FORCED_FLOAT32``): gpt-oss
on a GPU without bf16 (a T4) trains in float32, so its activations and dequantised experts
take 4 bytes. ``bf16`` is a setting; a GPU named from ``GPUS`` sets it.

vLLM colocation: vLLM reserves ``gpu_memory_utilization`` x GPU up front, shares the weights
with training and fills the rest with KV cache. The plan counts the KV cache the rollouts
*need*; given a GPU it also checks the split: weights + KV + vLLM workspace must fit in vLLM's
share and the training tensors in the rest (with ``vllm_standby=True``, Unsloth's
UNSLOTH_VLLM_STANDBY, vLLM frees its KV cache while training: only the total must fit).

"Fits" keeps a margin: ``MemoryPlan.fits`` asks for ``(1 + margin()) x`` the plan, where
``margin()`` is the largest error of the planner against the published figures it is
calibrated on (``calibration_table``). GB is GiB (2**30 bytes), as nvidia-smi's MiB / 1024 and
Unsloth's notebooks (``torch.cuda.max_memory_reserved() / 1024**3``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass, field

from medreason_lib.models.memory_specs import (  # noqa: F401  (re-exported: memory.SPECS, memory.GPUS, ...)
    COURSE_MODELS,
    DEFAULTS,
    GPU,
    GPUS,
    PUBLISHED,
    SETTINGS,
    SLOW_GENERATION,
    SPECS,
    SPECS_BY_KEY,
    ModelSpec,
    Published,
    model_key,
    resolve,
    spec_of,
)
from medreason_lib.settings.profiles import PROFILES

_key, _BY_KEY = model_key, SPECS_BY_KEY  # their former names here

GB = 2**30
BYTES_4BIT = 0.516  # NF4: 4 bits + 8-bit absmax per 64 + fp32 per 64*256 (double quant)
BYTES_16BIT = 2.0
LORA_BYTES = 8.0  # fp32 adapter weight + fp32 gradient (Adam's states come on top)
ADAM_BYTES = {"adamw_8bit": 2.0, "paged_adamw_8bit": 2.0}  # m + v; any other optimiser: 8
LAYER_TENSORS = (8, 4)  # tensors of the recomputed layer: 8 x hidden + 4 x intermediate
LOGIT_BYTES = 4.0  # fp32 log-softmax (or 16-bit logits + their gradient) per vocab entry
CUDA_CONTEXT_GB = 0.5  # driver, cuBLAS and kernels: outside torch's allocator
# What torch reserves beyond the tensors listed, as a share of them: the caching allocator's
# rounding and fragmentation, bitsandbytes' quantisation states, loading buffers kept in the
# pool, temporaries no term names. Not measured term by term here: fitted, as the value that
# minimises the largest |error| on the required calibration points (so the smallest margin;
# a test checks that 0.02 either way does no better), which keeps their mean error within 5%.
# For scale: Unsloth's notebooks reserve 1.04-1.10 x these weights right after loading
# (Llama-3.1-8B, Qwen2.5-7B, Llama-3.3-70B, gpt-oss-20b), before any training tensor exists.
OVERHEAD = 0.13
VLLM_WORKSPACE_GB = 0.5  # vLLM's sampler, CUDA graphs and profiling buffers (fast_inference)
# Families Unsloth trains in float32 on a GPU without bf16 (unsloth_zoo.model_lists'
# FORCE_FLOAT32 lists gpt_oss: "Switching to float32 training since model cannot work with
# float16").
FORCED_FLOAT32 = ("gpt-oss",)
# 4-bit LoRA (SFT), 16-bit LoRA (SFT), GRPO: LoRA on the load_in_4bit model + generation
METHODS = ("qlora", "lora16", "grpo")


def _gpu(gpu) -> tuple[str | None, float | None]:
    if gpu is None:
        return None, None
    if isinstance(gpu, int | float) and not isinstance(gpu, bool):
        return f"{gpu:g} GB", float(gpu)
    if gpu in GPUS:
        return gpu, GPUS[gpu].memory_gb
    raise ValueError(f"unknown GPU {gpu!r}; valid: {', '.join(GPUS)} or a number of GB")


def _forced_float32(spec: ModelSpec, s: dict) -> bool:
    return spec.family in FORCED_FLOAT32 and not s["bf16"]


def _breakdown(spec: ModelSpec, method: str, s: dict) -> dict[str, float]:
    """The formula (module docstring), in GB."""
    four_bit = method == "qlora" or (method == "grpo" and s["load_in_4bit"])
    compute = 4 if _forced_float32(spec, s) else 2  # bytes of an activation
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
    layer = tokens * (LAYER_TENSORS[0] * spec.hidden + LAYER_TENSORS[1] * inter) * compute
    checkpoints = 0 if s["offload_activations"] else tokens * spec.layers * spec.hidden * compute
    logits = seq * spec.vocab * LOGIT_BYTES  # one sequence per chunk
    kv = 0
    if method == "grpo":  # K and V, 16-bit, per token and layer
        full = (spec.layers - spec.sliding_layers) * seq
        window = spec.sliding_layers * min(seq, spec.sliding_window or seq)
        kv = batch * (full + window) * 2 * spec.kv_heads * spec.head_dim * 2
    dequant = 0
    if four_bit and spec.experts:  # gate_up of every expert at once, 16-bit (grouped QLoRA;
        dequant = spec.experts * spec.hidden * 2 * spec.intermediate * 2  # T4: down, fp32)
    elif four_bit:  # one matrix at a time (Unsloth's fast_dequantize)
        dequant = spec.hidden * max(inter, spec.heads * spec.head_dim) * 2
    vllm = VLLM_WORKSPACE_GB * GB if method == "grpo" and s["use_vllm"] else 0
    tensors = weights + lora + layer + checkpoints + kv + logits + dequant
    parts = {
        "weights": weights,
        "lora": lora,
        "activations": layer + checkpoints,
        "kv_cache": kv,
        "logits": logits,
        "runtime": CUDA_CONTEXT_GB * GB + OVERHEAD * tensors + dequant + vllm,
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
    impractical: list[str] = field(default_factory=list)  # why not to run it on this GPU

    @property
    def total_gb(self) -> float:
        return sum(self.breakdown.values())

    @property
    def required_gb(self) -> float:
        """The GPU memory ``fits`` asks for: the plan plus the calibration margin."""
        return self.total_gb * (1 + margin())

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
        """Whether the plan, and each side of vLLM's split, fits with ``margin()`` to spare."""
        gpu_gb = self.gpu_gb if gpu_gb is None else gpu_gb
        if gpu_gb is None:
            raise ValueError("fits() needs a GPU size: plan(..., gpu=...) or fits(gpu_gb)")
        k = 1 + margin()
        split = self.vllm_split(gpu_gb)
        split_ok = split is None or (split[0] * k <= split[1] and split[2] * k <= split[3])
        return self.total_gb * k <= gpu_gb and split_ok

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
        lines.append(f"  {'+ margin':<12}{self.required_gb:8.2f} GB (+{margin():.1%})")
        if self.gpu_gb is not None:
            verdict = "fits" if self.fits() else "does NOT fit"
            room = f"headroom {self.headroom_gb:+.2f} GB"
            lines.append(f"  {self.gpu} ({self.gpu_gb:.1f} GB): {verdict}, {room}")
        lines += [f"  IMPRACTICAL: {r}" for r in self.impractical]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  lower first: {a}" for a in self.advice]
        return "\n".join(lines)

    __str__ = table

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["settings"]["lora_targets"] = list(d["settings"]["lora_targets"])
        fits = None if self.gpu_gb is None else self.fits()
        extra = {"total_gb": self.total_gb, "required_gb": self.required_gb, "margin": margin()}
        return {**d, **extra, "headroom_gb": self.headroom_gb, "fits": fits}


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
        k = 1 + margin()
        need, room = split[0] * k / gpu_gb, 1 - split[2] * k / gpu_gb
        works = f"{need:.2f} to {room:.2f} works" if need <= room else "no value works"
        why = f"vLLM needs {need:.2f} of the GPU, training leaves {room:.2f}, margin included"
        util = f"gpu_memory_utilization {s['gpu_memory_utilization']}: {works} ({why})"
        out.insert(2, util + "; or UNSLOTH_VLLM_STANDBY=1 (vllm_standby=True)")
    smaller = [n for n in COURSE_MODELS if spec_of(PROFILES[n]).total_params < spec.total_params]
    if smaller:
        alt = sum(_breakdown(spec_of(PROFILES[smaller[-1]]), method, s).values())
        out.append(f"a smaller model: profile {smaller[-1]!r}, these settings: {alt:.1f} GB")
    return out


def _impractical(spec: ModelSpec, method: str, s: dict, gpu_name: str | None) -> list[str]:
    """Reasons a run that may fit is not worth starting: gpt-oss GRPO without bf16."""
    slow = SLOW_GENERATION
    if method != "grpo" or spec.family != slow["family"] or s["bf16"]:
        return []
    minutes = slow["minutes_per_generation"]
    return [
        f"{spec.name} on {gpu_name or 'a GPU without bf16'}: Unsloth trains it in float32 and "
        f"its gpt-oss GRPO notebook warns that a T4 'might take {minutes:g} minutes for one "
        f"generation'; GRPO generates every step, so 100 steps take about "
        f"{100 * minutes / 60:.0f} hours. Use a GPU with bf16 (L4, A100, H100) or a "
        "smaller profile ('3b')"
    ]


def plan(model: str, method: str, gpu=None, **overrides) -> MemoryPlan:
    """Peak GPU memory of training ``model`` with ``method`` (see the module docstring).

    ``model``: a profile name or a model id; ``gpu``: a name in ``GPUS`` (which also sets
    ``bf16`` unless given) or GB; ``overrides``: any of ``SETTINGS`` (``batch_size`` is
    per_device_train_batch_size; ``bf16=False`` plans a GPU without bf16, such as a T4).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    spec, settings = resolve(model)
    if "batch_size" in overrides:
        overrides["per_device_train_batch_size"] = overrides.pop("batch_size")
    unknown = sorted(set(overrides) - set(SETTINGS))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; valid: {', '.join(SETTINGS)}")
    gpu_name, gpu_gb = _gpu(gpu)
    if gpu_name in GPUS and overrides.get("bf16") is None:
        overrides["bf16"] = GPUS[gpu_name].bf16
    if overrides.get("bf16") is None:  # unknown (a GPU given in GB, or none): assume bf16
        overrides.pop("bf16", None)
    settings |= overrides
    settings["lora_targets"] = tuple(settings["lora_targets"])
    result = MemoryPlan(spec.name, method, settings, _breakdown(spec, method, settings))
    result.gpu, result.gpu_gb = gpu_name, gpu_gb
    result.advice = _advice(spec, method, settings, gpu_gb)
    result.impractical = _impractical(spec, method, settings, gpu_name)
    notes = result.notes
    if method == "grpo" and settings["use_vllm"]:
        notes.append(
            "vLLM reserves gpu_memory_utilization x GPU up front: kv_cache is what "
            "the rollouts need, the rest of its share is spare KV cache"
        )
    where = gpu_name or "this GPU"
    if not settings["bf16"]:
        precision = "float32 (Unsloth forces it)" if _forced_float32(spec, settings) else "fp16"
        notes.append(f"{where} has no bf16: training runs in {precision}")
    if gpu_gb is not None:
        split = result.vllm_split(gpu_gb)
        if split is not None:
            need, share, train, rest = (f"{x:.1f} GB" for x in split)
            shown = max(split[0], split[1]) + split[2]  # vLLM's share is taken in full
            notes.append(
                f"vLLM's {share} hold weights + KV + workspace {need}; training "
                f"needs {train} of the other {rest}; nvidia-smi shows ~{shown:.1f} GB"
            )
        if not result.fits():
            notes.append(
                f"does not fit on {where} with the planner's {margin():.1%} margin "
                f"({result.required_gb:.1f} GB): lower the settings below, in order"
            )
    if spec.experts:
        k = spec.experts_per_token
        notes.append(f"MoE: all {spec.experts} experts stay in memory; {k} per token act")
    return result


STANDBY_ENV = "UNSLOTH_VLLM_STANDBY"


def vllm_standby(profile) -> bool:
    """Whether a GPU run of ``profile`` uses Unsloth's vLLM standby: where it uses vLLM, unless
    ``UNSLOTH_VLLM_STANDBY`` is "0" (``models.prepare_runtime`` sets "1" before importing
    Unsloth, and "0" when Unsloth was imported without it; unsloth_zoo's ``load_vllm`` reads
    any value but "0" as on)."""
    return bool(profile.use_vllm) and os.environ.get(STANDBY_ENV, "1") != "0"


def plan_for_profile(profile, method: str = "grpo", gpu=None, bf16: bool | None = None):
    """``plan`` for a ``Profile`` object as it is, changed settings included (a profile made
    with ``profile.replace(num_generations=4)`` is planned with 4 generations), and vLLM
    standby as the run will have it (``vllm_standby``). ``bf16``: whether the GPU has bf16
    (None: from ``gpu``'s name, else assumed)."""
    settings = {k: getattr(profile, k) for k in DEFAULTS}
    settings["vllm_standby"] = vllm_standby(profile)
    return plan(profile.model_id, method, gpu=gpu, bf16=bf16, **settings)


def smallest_gpu(profile, method: str = "grpo") -> str:
    """The smallest GPU of ``GPUS`` on which ``profile`` fits (margin included) and is
    practical; larger ones it fits but should not run on are named: 'L4 (T4: too slow)'."""
    slow = []
    for g in sorted(GPUS.values(), key=lambda g: g.memory_gb):
        p = plan_for_profile(profile, method, gpu=g.name)
        if p.fits() and p.impractical:
            slow.append(g.name)
        elif p.fits():
            return g.name + (f" ({', '.join(slow)}: too slow)" if slow else "")
    return "none listed"


# --- calibration ------------------------------------------------------------------------
def calibration_table() -> list[dict]:
    """Published vs planned: the total less the CUDA context, as torch reports memory.

    A point is ``required`` (held to the margin) when it is comparable and at least its
    ``floor_gb``: the planned weights + adapter state, which no run can go below. Below
    that, the figure cannot be this model's peak (the notes say why).
    """
    rows = []
    for p in PUBLISHED:
        planned = plan(p.model, p.method, **p.settings)
        total = planned.total_gb - CUDA_CONTEXT_GB
        floor = planned.breakdown["weights"] + planned.breakdown["lora"]
        error = round(100 * (total / p.gb - 1), 1)
        row = {"model": p.model, "method": p.method, "published_gb": p.gb}
        row |= {"planned_gb": round(total, 2), "floor_gb": round(floor, 2), "error_pct": error}
        row["required"] = p.comparable and p.gb >= floor
        rows.append(row | {"settings": p.settings, "source": p.source, "note": p.note})
    return rows


@functools.cache
def margin() -> float:
    """The largest |error| of the required calibration points, as a fraction: the headroom
    ``MemoryPlan.fits`` asks for."""
    return max(abs(r["error_pct"]) for r in calibration_table() if r["required"]) / 100


def format_calibration(rows: list[dict] | None = None) -> str:
    rows = calibration_table() if rows is None else rows
    head = f"{'model':<34}{'method':<8}{'published':>10}{'planned':>9}{'error':>8}  required"
    out = [head]
    for r in rows:
        gbs = f"{r['published_gb']:>10.2f}{r['planned_gb']:>9.2f}{r['error_pct']:>+7.1f}%"
        req = "yes" if r["required"] else "no: " + r["note"][:44]
        out.append(f"{r['model']:<34}{r['method']:<8}{gbs}  {req}")
    errors = [r["error_pct"] for r in rows if r["required"]]
    out.append(
        f"required points: {len(errors)}, mean error {sum(errors) / len(errors):+.1f}%, "
        f"largest |error| {max(map(abs, errors)):.1f}% = the margin fits() keeps"
    )
    return "\n".join(out)


if __name__ == "__main__":  # python -m medreason_lib.models.memory
    print(format_calibration(), end="\n\n")
    for name in COURSE_MODELS:
        print(plan(name, "grpo"), f"\n  smallest GPU: {smallest_gpu(PROFILES[name])}\n")
