"""The keyword arguments the loaders in ``models`` pass to Unsloth, peft and vLLM.

Each builder returns a plain dict (or a peft ``LoraConfig``) from a profile and imports
nothing of the GPU stack, so the API-drift tests (tests/gpu_path/test_api_drift.py) check every
keyword against the pinned Unsloth, vLLM and peft releases without a GPU, and the notebooks
show what a GPU profile would load. ``models`` re-exports them: ``models.unsloth_load_kwargs``
and the rest keep working.
"""

from __future__ import annotations

from pathlib import Path

from medreason_lib.settings.profiles import Profile


def unsloth_load_kwargs(profile: Profile, model_name: str | None = None) -> dict:
    """Arguments for ``FastLanguageModel.from_pretrained`` (Unsloth's GRPO notebooks' set).
    ``gpu_memory_utilization`` (vLLM's share of the GPU) only when the profile uses vLLM."""
    kwargs = {
        "model_name": model_name or profile.model_id,
        "max_seq_length": profile.max_seq_length,
        "load_in_4bit": profile.load_in_4bit,
        "fast_inference": profile.use_vllm,
        "max_lora_rank": profile.lora_rank,
        "random_state": profile.seed,
    }
    if profile.use_vllm:
        kwargs["gpu_memory_utilization"] = profile.gpu_memory_utilization
    if profile.family == "gpt-oss":
        kwargs["offload_embedding"] = True  # Unsloth's gpt-oss GRPO recipe: frees ~1 GB
    return kwargs


def unsloth_peft_kwargs(profile: Profile) -> dict:
    """Arguments for ``FastLanguageModel.get_peft_model``."""
    return {
        "r": profile.lora_rank,
        "target_modules": list(profile.lora_targets),
        "lora_alpha": profile.lora_alpha,
        "lora_dropout": 0.0,
        "use_gradient_checkpointing": "unsloth",
        "random_state": profile.seed,
    }


def lora_config(profile: Profile):
    """The peft ``LoraConfig`` used on the tiny profiles (TRL attaches it)."""
    from peft import LoraConfig

    return LoraConfig(
        r=profile.lora_rank,
        lora_alpha=profile.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(profile.lora_targets),
        task_type="CAUSAL_LM",
    )


def vllm_server_refusal(profile: Profile) -> str | None:
    """Why TRL's vLLM server mode cannot train ``profile`` (None: it can). TRL sends the
    ``trl vllm-serve`` server the training model's weights as they are after every step: with
    a bitsandbytes 4-bit base that is packed uint8 data of another shape, not weights the
    server can load."""
    if not profile.load_in_4bit:
        return None
    return (
        f"vLLM server mode: profile {profile.name!r} loads its base in 4-bit, and TRL would send "
        "the server packed 4-bit (uint8) weights it cannot load. Use colocate mode (drop "
        "--vllm-server: the profile's own vLLM engine) or a 16-bit base, about 4x the weights' "
        "memory: training.train(profile.replace(load_in_4bit=False, use_vllm=False), "
        "**cli.vllm_server_overrides(url))"
    )


def vllm_engine_kwargs(profile: Profile, model_path: str | Path) -> dict:
    """Arguments for ``vllm.LLM`` serving a merged model (after ``export``)."""
    return {
        "model": str(model_path),
        "max_model_len": profile.max_seq_length,
        "gpu_memory_utilization": profile.gpu_memory_utilization,
        "seed": profile.seed,
    }


# --------------------------------------------------------------------------- continued pretraining
CPT_EMBEDDING_MODULES = ("embed_tokens", "lm_head")


def cpt_lora_config(profile: Profile, *, tied: bool):
    """Tiny CPT: LoRA on the profile's targets, ``embed_tokens``/``lm_head`` trained in full
    (``modules_to_save``) and kept one matrix where the model ties them (``tied``)."""
    from peft import LoraConfig

    targets, saved = list(profile.lora_targets), list(CPT_EMBEDDING_MODULES)
    return LoraConfig(r=profile.lora_rank, lora_alpha=profile.lora_alpha, lora_dropout=0.0,
                      target_modules=targets, modules_to_save=saved, ensure_weight_tying=tied,
                      task_type="CAUSAL_LM")  # fmt: skip


def unsloth_cpt_peft_kwargs(profile: Profile) -> dict:
    """GPU CPT: ``unsloth_peft_kwargs`` plus ``embed_tokens``/``lm_head`` as targets (Unsloth
    moves them to ``modules_to_save``) and rank-stabilised LoRA, as its CPT notebooks do."""
    kwargs = unsloth_peft_kwargs(profile) | {"use_rslora": True}
    kwargs["target_modules"] = [*kwargs["target_modules"], *CPT_EMBEDDING_MODULES]
    return kwargs


def unsloth_cpt_load_kwargs(profile: Profile, model_name: str | None = None) -> dict:
    """``unsloth_load_kwargs`` for CPT: no vLLM engine (Unsloth refuses to train embeddings
    beside one) and no embedding offload (the embedding trains)."""
    kwargs = unsloth_load_kwargs(profile.replace(use_vllm=False), model_name)
    kwargs.pop("offload_embedding", None)
    return kwargs


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX), where torch's bf16
    autocast is several times faster than float32; elsewhere it would be emulated (slower)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def transformers_dtype(profile: Profile) -> str:
    """The dtype the transformers backend loads a model in: float32 for the tiny models (their
    recorded results); bf16 for a real model where the machine computes in bf16 natively (a
    GPU of compute capability 8.0 or newer, or ``cpu_has_bf16``), as SmolLM2's own weights
    are; float32 elsewhere. A bf16 model needs no autocast, which on a CPU re-casts every
    weight at every generated token: measured on smol, GRPO steps several times longer."""
    import torch

    if profile.is_tiny:
        return "float32"
    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.get_device_capability() >= (8, 0) else "float32"
    return "bfloat16" if cpu_has_bf16() else "float32"
