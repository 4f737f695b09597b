"""The pinned libraries' contracts that the stand-ins enforce, each tied to its source.

Every rule a stand-in applies (``standins/``) names one of these. ``CONTRACTS`` cites, for
each, the distribution, the file in its pinned wheel and a line of that file that states the
rule. ``tests/gpu_path/test_rehearsal.py`` opens the pinned wheels (``make wheels``; the
versions come from ``requirements-gpu.txt``) and fails when a cited line is gone: the stand-in
would then enforce a rule the real library no longer has, or miss a new one. Read the cited
file around the line to see the whole rule.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Contract:
    name: str
    dist: str  # the distribution whose pinned wheel holds the source
    path: str  # the file in the wheel
    cited: str  # a line (stripped) that the file must still contain
    rule: str  # what the stand-in enforces


CONTRACTS: dict[str, Contract] = {c.name: c for c in (
    Contract(
        "import-order", "unsloth", "unsloth/_gpu_init.py",
        'critical_modules = ["trl", "transformers", "peft"]',
        "importing unsloth after trl, transformers or peft warns that its patches may not "
        "apply; the rehearsal counts the warning as a broken contract",
    ),
    Contract(
        "no-gpu", "unsloth", "unsloth/device_type.py",
        'raise NotImplementedError("Unsloth cannot find any torch accelerator? You need a GPU.")',
        "import unsloth raises NotImplementedError on a machine without an accelerator",
    ),
    Contract(
        "bf16-by-capability", "unsloth", "unsloth/models/_utils.py",
        "SUPPORTS_BFLOAT16 = _bf16_cap is not None and _bf16_cap[0] >= 8",
        "bfloat16 only from compute capability 8.0 (a T4, 7.5, has none)",
    ),
    Contract(
        "load-dtype", "unsloth", "unsloth/models/loader.py",
        "dtype = torch.float16 if not SUPPORTS_BFLOAT16 else torch.bfloat16",
        "from_pretrained loads float16 below compute capability 8.0, bfloat16 above",
    ),
    Contract(
        "precision-mismatch", "unsloth", "unsloth/models/rl.py",
        "\"if not force_float32 and (float16 and use_bf16): raise TypeError('Unsloth: Model is "
        "in float16 precision but you want to use bfloat16 precision. Set fp16 to `True` and "
        "bf16 to `False`')\\n\"",
        "a trainer whose config asks bf16 for a float16 model (or fp16 for a bfloat16 one) "
        "raises TypeError",
    ),
    Contract(
        "fast-inference-needs-vllm", "unsloth", "unsloth/models/loader.py",
        "raise _vllm_unavailable_error()",
        "fast_inference=True without vLLM installed raises ImportError",
    ),
    Contract(
        "4bit-vllm-needs-plugin", "unsloth_zoo", "unsloth_zoo/vllm_utils.py",
        '"Install it with `pip install vllm-bnb-plugin` to use "',
        "load_in_4bit with fast_inference on vLLM >= 0.28 raises without vllm-bnb-plugin",
    ),
    Contract(
        "gpt-oss-no-fast-inference", "unsloth", "unsloth/models/loader.py",
        'VLLM_UNSUPPORTED_MODEL_TYPES = ("gpt_oss",)',
        "gpt-oss loads without vLLM even when fast_inference=True is asked (a printed switch)",
    ),
    Contract(
        "embedding-offload", "unsloth", "unsloth/models/llama.py",
        "module.original_module.to(device = offload_device, non_blocking = True)",
        "when embed_tokens/lm_head train, the frozen original copy may live off the GPU: a "
        "model's first parameter is not where its inputs go",
    ),
    Contract(
        "vllm-engine-size", "unsloth_zoo", "unsloth_zoo/vllm_utils.py",
        "def load_vllm(",
        "fast_inference starts a vLLM engine of max_model_len = max_seq_length that takes "
        "gpu_memory_utilization of the GPU memory free at that moment",
    ),
    Contract(
        "vllm-max-model-len", "vllm", "vllm/engine/arg_utils.py",
        "max_model_len: int = ModelConfig.max_model_len",
        "a prompt at or over max_model_len raises for the request; prompt plus output stops "
        "at max_model_len",
    ),
    Contract(
        "vllm-greedy-n", "vllm", "vllm/sampling_params.py",
        'f"n must be 1 when using greedy sampling, got {self.n}."',
        "SamplingParams refuses n > 1 at temperature 0 (several samples of one request must be "
        "sampled)",
    ),
    Contract(
        "load-lora", "unsloth_zoo", "unsloth_zoo/vllm_utils.py",
        "def load_lora(model, save_directory, load_tensors = False, lora_request_id = None):",
        "fast_generate sees an adapter only as a LoRARequest from model.load_lora(path)",
    ),
    Contract(
        "delete-vllm", "unsloth_zoo", "unsloth_zoo/vllm_utils.py",
        "del llm.llm_engine.model_executor",
        "delete_vllm(llm) drops the engine's model executor; the memory comes back when "
        "nothing else holds the engine",
    ),
    Contract(
        "lora-rank", "unsloth", "unsloth/models/loader.py",
        "max_lora_rank = 64,",
        "vLLM serves LoRA up to max_lora_rank (from_pretrained's setting): a larger adapter "
        "is refused",
    ),
)}  # fmt: skip


def contract(name: str) -> Contract:
    return CONTRACTS[name]
