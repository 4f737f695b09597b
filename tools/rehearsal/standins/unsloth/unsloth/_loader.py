"""``FastLanguageModel``: loads the tiny model of the asked family, as Unsloth would load the
real one (its dtype, vLLM engine, LoRA and saving methods), and books its GPU memory."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import _medreason_rehearsal as sim
import torch

FAMILY_FILE = "rehearsal_family.txt"
GB = 2**30  # the memory planner's unit (medreason_lib.models.memory.GB)
# family -> the course profile whose model the tiny one stands in for (its memory plan)
PROFILE_OF_FAMILY = {"qwen2": "3b", "qwen3": "8b", "gpt-oss": "20b"}


def family_of(name: str) -> str:
    lower = name.lower()
    if "gpt-oss" in lower or "gpt_oss" in lower:
        return "gpt-oss"
    if "qwen3" in lower:
        return "qwen3"
    return "qwen2"


def _family(folder: Path) -> str:
    """The tiny model's family (its build record), else a guess from its config."""
    build = folder / "tiny_build.json"
    if build.is_file():
        return json.loads(build.read_text())["family"]
    if (folder / FAMILY_FILE).is_file():  # a merged copy the stand-in saved
        return (folder / FAMILY_FILE).read_text().strip()
    return family_of((folder / "config.json").read_text())


def _plan(family: str, method: str, **settings):
    """The memory planner's plan for the real model the tiny one stands in for."""
    from medreason_lib.models.memory import plan

    gpu = sim.FACTS["gpu"]
    bf16 = tuple(gpu["capability"]) >= (8, 0)
    return plan(PROFILE_OF_FAMILY[family], method, gpu=gpu["memory_gb"], bf16=bf16, **settings)


def _load_hf(name: str):
    """(model, tokenizer, family, adapter folder or None) for a hub id (the rehearsal's hub
    cache holds the tiny model of its family under that id) or a local folder."""
    from huggingface_hub import snapshot_download
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = None
    folder = Path(name)
    if (folder / "adapter_config.json").is_file():
        adapter = folder
        name = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        folder = Path(name)
    if not (folder / "config.json").is_file():
        folder = Path(snapshot_download(name))  # offline: the rehearsal's hub cache
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    has_tokenizer = adapter is not None and (adapter / "tokenizer_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter if has_tokenizer else folder))
    return model, tokenizer, _family(folder), adapter


class FastLanguageModel:
    @staticmethod
    def from_pretrained(
        model_name: str = "unsloth/Llama-3.2-1B-Instruct",
        max_seq_length: int = 2048,
        dtype=None,
        load_in_4bit: bool = True,
        load_in_8bit: bool = False,
        full_finetuning: bool = False,
        token=None,
        fast_inference: bool = False,
        gpu_memory_utilization: float = 0.5,
        max_lora_rank: int = 64,
        random_state: int = 3407,
        offload_embedding: bool = False,
        **kwargs,
    ):
        held = [h for h in sim.LEDGER.holders() if h.startswith("model ")]
        if held:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory (rehearsal of {sim.FACTS['name']}): loading {model_name} "
                f"while {held[0]} is still held; close it first (models.release / EvalModel.close)"
            )
        model, tokenizer, family, adapter = _load_hf(str(model_name))
        if dtype is None:  # contract load-dtype
            dtype = torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8 else torch.float16
        forced_float32 = family == "gpt-oss" and dtype == torch.float16
        if forced_float32:
            print("Unsloth: Using float16 precision for gpt_oss won't work! Using float32.")
            dtype = torch.float32
        plan = _plan(family, "grpo", load_in_4bit=load_in_4bit, lora_rank=max_lora_rank)
        weights = int(plan.breakdown["weights"] * GB)
        sim.LEDGER.reserve(
            model, weights, f"model {model_name} ({'4' if load_in_4bit else '16'}-bit)"
        )
        model.max_seq_length = max_seq_length
        model._rehearsal_dtype = dtype
        model._rehearsal_forced_float32 = forced_float32
        model._rehearsal_family = family
        if fast_inference and family == "gpt-oss":  # contract gpt-oss-no-fast-inference
            print("Unsloth: fast_inference (vLLM) does not support gpt_oss yet - will switch to "
                  "Unsloth inference!")  # fmt: skip
            fast_inference = False
        if fast_inference:
            if importlib.util.find_spec("vllm") is None:  # contract fast-inference-needs-vllm
                sim.violation("fast-inference-needs-vllm", f"{model_name} without vLLM")
                raise ImportError("Unsloth: Please install vLLM before enabling `fast_inference`!")
            if load_in_4bit and importlib.util.find_spec("vllm_bnb_plugin") is None:
                sim.violation("4bit-vllm-needs-plugin", f"{model_name}: no vllm-bnb-plugin")
                raise RuntimeError(
                    "Unsloth: vLLM >= 0.28 moved bitsandbytes out of tree. Install it with "
                    "`pip install vllm-bnb-plugin` to use load_in_4bit with fast_inference."
                )
            from vllm import LLM

            share = int(gpu_memory_utilization * sim.LEDGER.free())  # contract vllm-engine-size
            engine = LLM._over(model, tokenizer, max_model_len=max_seq_length,
                               max_lora_rank=max_lora_rank, nbytes=share)  # fmt: skip
            model.vllm_engine = engine
            model.fast_generate = engine.generate
        _attach_saving(model)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
            _carry(model)
        return model, tokenizer

    @staticmethod
    def get_peft_model(
        model,
        r: int = 16,
        target_modules=None,
        lora_alpha: int = 16,
        lora_dropout: float = 0.0,
        bias: str = "none",
        use_gradient_checkpointing="unsloth",
        random_state: int = 3407,
        use_rslora: bool = False,
        **kwargs,
    ):
        from peft import LoraConfig, PeftModel, get_peft_model

        targets = list(target_modules or ["q_proj", "k_proj", "v_proj", "o_proj"])
        saved = [t for t in targets if t in ("embed_tokens", "lm_head")]
        engine = getattr(model, "vllm_engine", None)
        if engine is not None and r > engine.max_lora_rank:  # contract lora-rank
            sim.violation("lora-rank", f"r={r} > max_lora_rank {engine.max_lora_rank}")
            raise ValueError(f"LoRA rank {r} is greater than max_lora_rank {engine.max_lora_rank}.")
        if isinstance(model, PeftModel):  # "Already have LoRA adapters! We shall skip this step."
            for name in saved:  # contract embedding-offload (the re-applied path)
                module = getattr(model.get_base_model().model, name, None) or getattr(
                    model.get_base_model(), name, None
                )
                if hasattr(module, "original_module"):
                    module.original_module.to("meta")
            return model
        config = LoraConfig(
            r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, bias=bias,
            target_modules=[t for t in targets if t not in saved], modules_to_save=saved or None,
            use_rslora=use_rslora, task_type="CAUSAL_LM",
        )  # fmt: skip
        torch.manual_seed(random_state)
        peft_model = get_peft_model(model, config)
        _carry(peft_model)
        peft_model.load_lora = functools.partial(_load_lora, peft_model)  # a reference cycle,
        peft_model.save_lora = functools.partial(_save_lora, peft_model)  # as Unsloth's
        return peft_model

    @staticmethod
    def for_inference(model):
        model.eval()
        return model

    @staticmethod
    def for_training(model, use_gradient_checkpointing: bool = True):
        model.train()
        return model


FastModel = FastLanguageModel


def _carry(peft_model) -> None:
    """Unsloth sets the engine and saving methods on the peft model too."""
    base = peft_model.get_base_model()
    for name in ("vllm_engine", "fast_generate", "max_seq_length", "_rehearsal_dtype",
                 "_rehearsal_forced_float32", "_rehearsal_family"):  # fmt: skip
        if name in vars(base):
            setattr(peft_model, name, vars(base)[name])
    _attach_saving(peft_model)


_LORA_IDS = iter(range(1, 10**6))


def _load_lora(model, save_directory, load_tensors=False, lora_request_id=None):
    """``model.load_lora(path)`` (contract load-lora): a ``LoRARequest`` for the engine."""
    from vllm.lora.request import LoRARequest

    if not (Path(save_directory) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"Unsloth: no LoRA adapter in {save_directory}")
    ident = lora_request_id or next(_LORA_IDS)
    return LoRARequest(str(ident), ident, str(save_directory))


def _save_lora(model, save_directory):
    model.save_pretrained(str(save_directory))


def _attach_saving(model) -> None:
    model.save_pretrained_merged = functools.partial(_save_merged, model)
    model.save_pretrained_gguf = functools.partial(_save_gguf, model)
    model.push_to_hub_merged = functools.partial(_refuse_push, "push_to_hub_merged")
    model.push_to_hub_gguf = functools.partial(_refuse_push, "push_to_hub_gguf")


def _save_merged(model, save_directory, tokenizer=None, save_method="merged_16bit", **kwargs):
    if save_method not in ("merged_16bit", "merged_4bit_forced", "lora"):
        raise RuntimeError(
            f"Unsloth: save_method={save_method!r} is not supported by this stand-in's pinned "
            "contract (merged_16bit, lora)"
        )
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    if save_method == "lora":
        model.save_pretrained(str(out))
    else:
        import copy

        merged = copy.deepcopy(model)
        if hasattr(merged, "merge_and_unload"):
            merged = merged.merge_and_unload()
        for name in ("vllm_engine", "fast_generate", "load_lora", "save_lora"):
            vars(merged).pop(name, None)
        merged.save_pretrained(str(out))
        (out / FAMILY_FILE).write_text(getattr(model, "_rehearsal_family", "qwen2"))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return str(out)


def _save_gguf(model, save_directory, tokenizer=None, quantization_method="q8_0", **kwargs):
    """llama.cpp cannot run here: the merged 16-bit model is saved and a file marked as a
    rehearsal placeholder stands for the .gguf Unsloth would convert it to."""
    out = Path(save_directory)
    _save_merged(model, out, tokenizer)
    method = quantization_method if isinstance(quantization_method, str) else quantization_method[0]
    family = getattr(model, "_rehearsal_family", "qwen2")
    if family == "gpt-oss":
        method = "mxfp4"  # GGUF export of gpt-oss is MXFP4 whatever is asked
    path = out / f"unsloth.{method.upper()}.gguf"
    path.write_bytes(b"GGUF" + b"rehearsal placeholder: no llama.cpp conversion ran\n")
    sim.event("gguf", f"placeholder {path.name}")
    return [str(path)]


def _refuse_push(name, *args, **kwargs):
    raise RuntimeError(f"rehearsal: {name} would upload to the Hugging Face Hub; not simulated")
