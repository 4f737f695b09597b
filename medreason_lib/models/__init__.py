"""Loading models: the one module that does it, and the only one that imports Unsloth.

Two paths, chosen by the profile, never by the notebook:

- tiny profiles: the random-init model that ``medreason_lib.models.tiny`` builds and caches, loaded
  with plain transformers; LoRA comes from peft (``lora_config``), attached by TRL.
- GPU profiles: Unsloth's ``FastLanguageModel`` in 4-bit, with LoRA from
  ``FastLanguageModel.get_peft_model`` and, where Unsloth supports it, vLLM fast inference
  (``fast_inference=True``; not for gpt-oss, whose RL path Unsloth runs without vLLM).

``import unsloth`` raises on a machine without a GPU, so it happens inside the GPU path
only. Unsloth patches trl and transformers when imported, so on a GPU it must come first:
``prepare_runtime`` (called by ``course.start``) imports it before anything else loads trl.

The keyword arguments passed to Unsloth, peft and vLLM are built in ``models.kwargs`` by small
functions that return plain dicts (``unsloth_load_kwargs``, ``unsloth_peft_kwargs``, ...,
re-exported here), so the API-drift tests can check every keyword against the pinned sources
without a GPU.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medreason_lib.models.folders import check_before_loading
from medreason_lib.models.kwargs import (  # noqa: F401  (re-exported: models.unsloth_load_kwargs, ...)
    CPT_EMBEDDING_MODULES,
    cpt_lora_config,
    lora_config,
    transformers_dtype,
    unsloth_cpt_load_kwargs,
    unsloth_cpt_peft_kwargs,
    unsloth_load_kwargs,
    unsloth_peft_kwargs,
    vllm_engine_kwargs,
)
from medreason_lib.models.memory import STANDBY_ENV
from medreason_lib.models.smol import resolve_smol
from medreason_lib.models.tiny import resolve_model_id as _resolve_tiny
from medreason_lib.models.tokenizer_checks import check_tokenizer
from medreason_lib.settings.profiles import Profile


def resolve_model_id(model_id: str, seed: int = 0) -> str:
    """The folder or hub id transformers loads for ``model_id``: ``tiny:<family>`` is the tiny
    model's cached folder (built first), SmolLM2-135M-Instruct's hub id its offline build
    where the hub cannot be asked (``smol.resolve_smol``); any other id unchanged."""
    return resolve_smol(_resolve_tiny(model_id, seed=seed))


def prepare_runtime(profile: Profile) -> None:
    """GPU profiles: Unsloth's environment, then ``import unsloth``, before anything imports
    trl, transformers or peft (Unsloth patches them on import). Nothing on tiny profiles.

    With vLLM, ``UNSLOTH_VLLM_STANDBY=1`` first, as Unsloth's GRPO notebooks set it (vLLM
    frees its KV cache while training runs; unsloth_zoo reads it when imported, to turn off
    PyTorch's expandable segments, which standby cannot run with). A value already in the
    environment wins. Unsloth is imported once: after that its environment is fixed, so a
    later call (another notebook's ``start`` in the same kernel) only records standby as
    off ("0") when Unsloth came in without it, for the memory plan (``memory.vllm_standby``)."""
    if not profile.uses_unsloth:
        return
    if "unsloth" in sys.modules:
        os.environ.setdefault(STANDBY_ENV, "0")
        return
    if profile.use_vllm:
        os.environ.setdefault(STANDBY_ENV, "1")
    import unsloth  # noqa: F401  (GPU only: raises NotImplementedError without one)


def _load_tiny(model_path: str, dtype: str = "float32"):
    """The transformers backend: the tiny models (float32), smol, or any causal LM (in
    ``models.kwargs.transformers_dtype(profile)``, which the callers pass)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    return model, _checked_tokenizer(model, tokenizer, model_path)


def _load_unsloth(profile: Profile, model_name: str | None):
    from unsloth import FastLanguageModel  # GPU only

    model, tokenizer = FastLanguageModel.from_pretrained(**unsloth_load_kwargs(profile, model_name))
    return model, _checked_tokenizer(model, tokenizer, model_name or profile.model_id)


def _checked_tokenizer(model, tokenizer, where):
    """``tokenizer_checks.check_tokenizer`` (a refusal raises); a repaired eos or pad token is
    also given to the model's generation config, which is what ``generate`` stops and pads
    with. Unsloth returns a processor for some models: its tokenizer is checked."""
    inner = getattr(tokenizer, "tokenizer", tokenizer)
    if check_tokenizer(inner, str(where)) and getattr(model, "generation_config", None):
        model.generation_config.eos_token_id = inner.eos_token_id
        model.generation_config.pad_token_id = inner.pad_token_id
    return tokenizer


@dataclass
class EvalModel:
    """A loaded model that its holder owns: the model, its tokenizer, and the saved adapter
    that a vLLM engine should apply (``lora_path``; None where the adapter, if any, is
    already in the model).

    Use it as a context manager, or call ``close()``, and keep no other name for ``.model``:
    ``close`` drops the model, its vLLM engine and Unsloth's self-references, then collects
    and empties the CUDA cache, so the next model loads into a free GPU.
    """

    model: Any
    tokenizer: Any
    lora_path: Path | None = None

    def close(self) -> None:
        model, self.model, self.tokenizer = self.model, None, None
        if model is not None:
            _detach(model)
            _hollow(model)
        del model
        free_memory()

    @property
    def closed(self) -> bool:
        return self.model is None

    def __enter__(self) -> EvalModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_model(
    profile: Profile,
    *,
    base: str | Path | None = None,
    adapter: str | Path | None = None,
    dtype: str | None = None,
) -> EvalModel:
    """A model and tokenizer for generation: the profile's model (or ``base``), with a
    trained LoRA ``adapter`` applied when one is given (through peft). ``dtype`` (transformers
    backend only) overrides ``transformers_dtype(profile)``: export merges in float32.

    Returns an ``EvalModel`` (left padding, eval mode) to use in a ``with`` block.
    """
    if adapter is not None and profile.uses_unsloth and profile.use_vllm:
        raise ValueError(
            f"profile {profile.name!r} generates with vLLM, which cannot see a peft-wrapped "
            "adapter: use models.load_for_eval(profile, adapter=...) and pass its lora_path"
        )
    name = str(base) if base else profile.model_id
    if not profile.uses_unsloth:
        name = resolve_model_id(name, seed=profile.seed)
    check_before_loading(name, adapter)
    if profile.uses_unsloth:
        model, tokenizer = _load_unsloth(profile, name)
    else:
        model, tokenizer = _load_tiny(name, dtype or transformers_dtype(profile))
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return for_inference(profile, EvalModel(model, tokenizer))


def for_inference(profile: Profile, loaded: EvalModel) -> EvalModel:
    """Make a model that just trained ready to generate: eval mode, left padding, and on GPU
    profiles Unsloth's inference mode."""
    loaded.model.eval()
    loaded.tokenizer.padding_side = "left"
    if profile.uses_unsloth:
        from unsloth import FastLanguageModel  # GPU only

        FastLanguageModel.for_inference(loaded.model)
    return loaded


def load_for_eval(
    profile: Profile,
    *,
    base: str | Path | None = None,
    adapter: str | Path | None = None,
    max_seq_length: int | None = None,
) -> EvalModel:
    """A model for the evaluation harness.

    Tiny profiles and GPU profiles without vLLM (gpt-oss): ``load_model``, the adapter
    applied through peft. GPU profiles with vLLM: Unsloth's model with its vLLM engine; the
    adapter is not wrapped but returned as ``lora_path``, which ``fast_generate`` loads with
    ``model.load_lora(path)`` (``get_peft_model`` is called only to attach ``load_lora``; its
    fresh in-memory LoRA weights are never used for generation).
    """
    if not profile.uses_unsloth or not profile.use_vllm:
        return load_model(profile, base=base, adapter=adapter)
    from unsloth import FastLanguageModel  # GPU only

    check_before_loading(str(base or profile.model_id), adapter)
    kwargs = unsloth_load_kwargs(profile, str(base) if base else None)
    if max_seq_length:  # the engine's max_model_len: room for the longest prompt + answer
        kwargs["max_seq_length"] = max(kwargs["max_seq_length"], max_seq_length)
    if adapter is not None:  # vLLM refuses a LoRA whose rank exceeds max_lora_rank
        rank = json.loads((Path(adapter) / "adapter_config.json").read_text())["r"]
        kwargs["max_lora_rank"] = max(kwargs["max_lora_rank"], rank)
    model, tokenizer = FastLanguageModel.from_pretrained(**kwargs)
    if adapter is not None:
        model = FastLanguageModel.get_peft_model(model, **unsloth_peft_kwargs(profile))
    FastLanguageModel.for_inference(model)
    tokenizer.padding_side = "left"
    return EvalModel(model, tokenizer, Path(adapter) if adapter is not None else None)


# Attributes through which Unsloth ties a model to itself or to its vLLM engine:
# ``load_lora``/``save_lora`` are ``functools.partial(fn, model)`` (a reference cycle that only
# ``gc.collect()`` breaks) and ``vllm_engine``/``fast_generate*`` hold the engine, set on the
# peft model and on the model inside it (unsloth/models/_utils.py, llama.py).
ENGINE_ATTRS = ("vllm_engine", "fast_generate", "fast_generate_batches", "load_lora", "save_lora")


def _detach(model) -> None:
    """Delete ``model``'s vLLM engine and every attribute that ties it to itself or the engine,
    on the model and each module inside it, so dropping the last name frees it."""
    modules = [model, *model.modules()] if hasattr(model, "modules") else [model]
    engine = next(
        (vars(m)["vllm_engine"] for m in modules if vars(m).get("vllm_engine") is not None), None
    )
    for module in modules:
        for name, value in list(vars(module).items()):
            ties = isinstance(value, functools.partial) and any(
                a is model or a is module for a in value.args
            )
            if name in ENGINE_ATTRS or ties:
                delattr(module, name)
    if engine is not None:
        from unsloth_zoo.vllm_utils import delete_vllm  # GPU only

        # vLLM's in-process engine holds its executor (weights, KV cache) twice:
        # ``llm_engine.model_executor``, which delete_vllm deletes, is set from
        # ``llm_engine.engine_core.engine_core.model_executor`` (vllm/v1/engine/llm_engine.py).
        llm_engine = getattr(engine, "llm_engine", None)
        core = getattr(getattr(llm_engine, "engine_core", None), "engine_core", None)
        if getattr(core, "model_executor", None) is not None:
            core.model_executor = None  # None, not del: EngineCore.shutdown reads it
        delete_vllm(engine)


def _hollow(model) -> None:
    """Replace the storage of every parameter and buffer of ``model`` with an empty tensor
    (and drop bitsandbytes' quantisation state), so its memory comes back even when
    something outside still references one of its modules.

    Measured on an H100 (benchmarks/gpu_smoke.py, 2026-11-27): after an Unsloth model had
    trained or generated and every course reference was dropped, its input embedding (and
    after ``evaluate_model`` the whole 4-bit model, 4.7 GB for Qwen3-8B) stayed allocated,
    reachable only through lists outside the course's code. A closed model is not used
    again, so emptying its tensors is safe and returns that memory."""
    import torch

    if not hasattr(model, "modules"):
        return
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for tensor in store.values():
                if tensor is None:
                    continue
                try:
                    tensor.data = torch.empty(0, dtype=tensor.dtype)
                    if getattr(tensor, "quant_state", None) is not None:
                        tensor.quant_state = None
                except (RuntimeError, TypeError, AttributeError):
                    continue  # a tensor type that refuses: left to the garbage collector


def free_memory() -> None:
    """Collect garbage (Unsloth's models hold reference cycles) and return the CUDA cache.
    Call it after the last reference is gone: memory a live name holds cannot be freed."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def release(obj) -> None:
    """Free an ``EvalModel``, a trainer (its model and optimizer state) or a model.

    The memory comes back only when nothing else refers to the model: drop your own names
    first (``del model``), or better, hold models only in an ``EvalModel`` (``with`` blocks).
    """
    if isinstance(obj, EvalModel):
        obj.close()
        return
    if hasattr(obj, "accelerator") and hasattr(obj, "model"):  # a transformers Trainer
        close_trainer(obj)
    elif obj is not None:
        _detach(obj)
        _hollow(obj)
    del obj
    free_memory()


def close_trainer(trainer, *, keep_model: bool = False):
    """Drop what a finished trainer holds on the GPU: its optimizer and scheduler, the
    accelerator's references, its references to the vLLM engine (TRL 1.15's
    ``trainer.vllm_generation``, whose ``llm`` Unsloth sets to ``model.vllm_engine``, and
    Unsloth's ``trainer.llm``) and (unless ``keep_model``) its model, engine included.
    Returns the model when ``keep_model`` (to evaluate it in place, its engine with it), else
    None."""
    model = trainer.model if keep_model else None
    generation = getattr(trainer, "vllm_generation", None)
    if generation is not None:  # it holds the engine, the model and Unsloth's load_lora
        for name in ("llm", "model", "_unsloth_load_lora"):
            if hasattr(generation, name):
                setattr(generation, name, None)
        trainer.vllm_generation = None
    if not keep_model and trainer.model is not None:
        _detach(trainer.model)
        _hollow(trainer.model)
    for name in ("optimizer", "lr_scheduler", "model_wrapped", "model", "ref_model", "llm"):
        if hasattr(trainer, name):
            setattr(trainer, name, None)
    trainer.accelerator.free_memory()
    if not keep_model:
        free_memory()
    return model


def load_for_training(profile: Profile, *, base: str | Path | None = None):
    """A model ready for GRPO/SFT and the peft config the trainer should apply (or None).

    Tiny: a plain transformers model and a ``LoraConfig`` (``full=True`` callers skip it).
    GPU: Unsloth's 4-bit model with LoRA already attached by ``get_peft_model``, so the
    config is None.
    """
    name = str(base) if base else profile.model_id
    if not profile.uses_unsloth:
        name = resolve_model_id(name, seed=profile.seed)
        check_before_loading(name)
        model, tokenizer = _load_tiny(name, transformers_dtype(profile))
        model.train()
        return model, tokenizer, lora_config(profile)
    from unsloth import FastLanguageModel  # GPU only

    check_before_loading(name)
    model, tokenizer = _load_unsloth(profile, name)
    model = FastLanguageModel.get_peft_model(model, **unsloth_peft_kwargs(profile))
    return model, tokenizer, None


def load_adapter_for_training(profile: Profile, *, base: str | Path, adapter: str | Path):
    """A model whose saved LoRA ``adapter`` trains on (DPO after GRPO) and its tokenizer. Tiny:
    ``base`` with the adapter applied by peft, trainable. GPU: Unsloth's ``from_pretrained`` on
    the adapter folder (the base its config names, 4-bit, adapter trainable, no vLLM). TRL's
    DPOTrainer, given no reference model, uses a frozen copy of the adapter: one model held."""
    if not profile.uses_unsloth:
        from peft import PeftModel

        path = resolve_model_id(str(base), seed=profile.seed)
        model, tokenizer = _load_tiny(path, transformers_dtype(profile))
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=True), tokenizer
    from unsloth import FastLanguageModel  # GPU only

    kwargs = unsloth_load_kwargs(profile, str(adapter)) | {"fast_inference": False}
    kwargs.pop("gpu_memory_utilization", None)
    return FastLanguageModel.from_pretrained(**kwargs)


def load_vllm_engine(profile: Profile, model_path: str | Path):
    """vLLM's own engine on a merged 16-bit model (GPU only): the fastest evaluation path."""
    from vllm import LLM  # GPU only

    return LLM(**vllm_engine_kwargs(profile, model_path))


def vllm_sampling_params(**kwargs):
    """``vllm.SamplingParams(**kwargs)`` (GPU only); ``generation_vllm.vllm_sampling_kwargs``
    builds the keywords. It is here because this is the only module that imports vLLM."""
    from vllm import SamplingParams  # GPU only

    return SamplingParams(**kwargs)


# --------------------------------------------------------------------------- continued pretraining
def load_for_cpt(profile: Profile, *, base: str | Path | None = None):
    """``(model, tokenizer)`` for continued pretraining, LoRA attached (``cpt_lora_config`` on
    tiny, ``unsloth_cpt_*_kwargs`` on a GPU), in train mode, right padding."""
    name = str(base) if base else profile.model_id
    if not profile.uses_unsloth:
        from peft import get_peft_model

        path = resolve_model_id(name, seed=profile.seed)
        model, tokenizer = _load_tiny(path, transformers_dtype(profile))
        tied = bool(getattr(model.config.get_text_config(), "tie_word_embeddings", False))
        model = get_peft_model(model, cpt_lora_config(profile, tied=tied))
    else:
        from unsloth import FastLanguageModel  # GPU only

        kwargs = unsloth_cpt_load_kwargs(profile, name)
        model, tokenizer = FastLanguageModel.from_pretrained(**kwargs)
        model = FastLanguageModel.get_peft_model(model, **unsloth_cpt_peft_kwargs(profile))
    tokenizer.padding_side = "right"
    return model.train(), tokenizer


def cpt_trainer_classes(profile: Profile):
    """(trainer, config) classes for CPT: TRL's SFTTrainer/SFTConfig on tiny, Unsloth's
    UnslothTrainer/UnslothTrainingArguments (SFTConfig + embedding_learning_rate) on a GPU."""
    if not profile.uses_unsloth:
        from trl import SFTConfig, SFTTrainer

        return SFTTrainer, SFTConfig
    from unsloth import UnslothTrainer, UnslothTrainingArguments  # GPU only

    return UnslothTrainer, UnslothTrainingArguments
