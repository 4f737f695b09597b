"""The stand-in engine: ``LLM.generate`` with Hugging Face generation on the CPU.

Two ways in: ``LLM(model=folder, ...)``, as the course serves a merged model, and
``LLM._over(model, tokenizer, ...)``, the engine the Unsloth stand-in attaches to a model
loaded with ``fast_inference=True`` (sharing its weights, as Unsloth's engine does).
"""

from __future__ import annotations

import itertools
import types

from ..lora.request import LoRARequest
from ..outputs import CompletionOutput, RequestOutput
from ..sampling_params import SamplingParams

_REQUEST_IDS = itertools.count()


def _ledger():
    import _medreason_rehearsal as sim

    return sim


class LLM:
    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        seed: int | None = 0,
        max_lora_rank: int = 16,
        enable_lora: bool = False,
        dtype: str = "auto",
        **engine_args,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        sim = _ledger()
        total = sim.LEDGER.total
        wanted = int(gpu_memory_utilization * total)
        if wanted > sim.LEDGER.free():
            raise ValueError(
                f"Free memory on device ({sim.LEDGER.free() / sim.GIB:.2f}/"
                f"{total / sim.GIB:.2f} GiB) on startup is less than desired GPU memory "
                f"utilization ({gpu_memory_utilization}, {wanted / sim.GIB:.2f} GiB). Decrease "
                "GPU memory utilization or reduce GPU memory used by other processes."
            )
        hf = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(str(tokenizer or model))
        limit = max_model_len or int(getattr(hf.config, "max_position_embeddings", 2048))
        self._setup(hf, tok, limit, max_lora_rank)
        sim.LEDGER.reserve(self, wanted, f"vLLM engine on {model}")

    @classmethod
    def _over(cls, model, tokenizer, *, max_model_len: int, max_lora_rank: int, nbytes: int):
        """The engine of an Unsloth model loaded with ``fast_inference=True``."""
        engine = cls.__new__(cls)
        engine._setup(model, tokenizer, max_model_len, max_lora_rank)
        _ledger().LEDGER.reserve(engine, nbytes, "vLLM engine (fast_inference)")
        return engine

    def _setup(self, model, tokenizer, max_model_len: int, max_lora_rank: int) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_lora_rank = max_lora_rank
        config = types.SimpleNamespace(max_model_len=int(max_model_len))
        # the attributes unsloth_zoo's delete_vllm and the course read: vLLM 0.33's engine
        # holds its executor twice, itself and through its in-process EngineCore
        executor = object()
        core = types.SimpleNamespace(engine_core=types.SimpleNamespace(model_executor=executor))
        self.llm_engine = types.SimpleNamespace(
            model_config=config, model_executor=executor, engine_core=core
        )
        self._loaded: dict[int, str] = {}

    def get_tokenizer(self):
        return self.tokenizer

    # ----------------------------------------------------------------------------- LoRA

    def _adapter(self, lora_request: LoRARequest | None):
        """The peft adapter name to generate with (None: the base weights)."""
        if lora_request is None:
            return None
        import json
        from pathlib import Path

        config = Path(lora_request.lora_path) / "adapter_config.json"
        if not config.is_file():
            raise ValueError(f"Loading lora {lora_request.lora_name} failed: no adapter at "
                             f"{lora_request.lora_path}")  # fmt: skip
        rank = json.loads(config.read_text())["r"]
        if rank > self.max_lora_rank:
            raise ValueError(
                f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}."
            )
        name = f"vllm_lora_{lora_request.lora_int_id}"
        if lora_request.lora_int_id not in self._loaded:
            if not hasattr(self.model, "load_adapter") or not hasattr(self.model, "peft_config"):
                from peft import PeftModel

                self.model = PeftModel.from_pretrained(
                    self.model, lora_request.lora_path, adapter_name=name
                )
            else:
                self.model.load_adapter(lora_request.lora_path, adapter_name=name)
            self._loaded[lora_request.lora_int_id] = name
        return self._loaded[lora_request.lora_int_id]

    # ----------------------------------------------------------------------------- generate

    def generate(self, prompts, sampling_params=None, *, lora_request=None, use_tqdm=True,
                 **kwargs):  # fmt: skip
        import contextlib

        import torch

        params = sampling_params or SamplingParams()
        if isinstance(params, list):
            params = params[0]
        if isinstance(prompts, str):
            prompts = [prompts]
        texts = [p if isinstance(p, str) else p.get("prompt", "") for p in prompts]
        limit = self.llm_engine.model_config.max_model_len
        encoded = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        for ids in encoded:
            if len(ids) >= limit:
                raise ValueError(
                    f"The decoder prompt (length {len(ids)}) is longer than the maximum model "
                    f"length of {limit}. Make sure that `max_model_len` is no smaller than the "
                    "number of text tokens."
                )
        allowed = [min(params.max_tokens or 16, limit - len(ids)) for ids in encoded]
        adapter = self._adapter(lora_request)
        model = self.model
        if adapter is not None:
            model.set_adapter(adapter)
            context = contextlib.nullcontext()
        elif hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
            context = model.disable_adapter()
        else:
            context = contextlib.nullcontext()
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        side, tok.padding_side = tok.padding_side, "left"
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        tok.padding_side = side
        greedy = params.temperature == 0
        gen = {"max_new_tokens": max(allowed), "do_sample": not greedy, "pad_token_id": pad,
               "num_return_sequences": params.n}  # fmt: skip
        if not greedy:
            gen |= {"temperature": params.temperature, "top_p": params.top_p}
            gen["top_k"] = params.top_k if params.top_k and params.top_k > 0 else None
        if params.seed is not None:
            torch.manual_seed(params.seed)
        was_training = model.training
        model.eval()
        try:
            with context, torch.inference_mode():
                out = model.generate(**batch, **gen)
        finally:
            model.train(was_training)
            if adapter is not None and "default" in getattr(model, "peft_config", {}):
                model.set_adapter("default")
        width = batch["input_ids"].shape[1]
        eos = {tok.eos_token_id, *([pad] if pad is not None else [])}
        results = []
        for i, ids in enumerate(encoded):
            outputs = []
            for j in range(params.n):
                row = out[i * params.n + j, width:].tolist()[: allowed[i]]
                cut = next((k for k, t in enumerate(row) if t in eos), None)
                stopped = cut is not None
                row = row[:cut] if stopped else row
                text = tok.decode(row, skip_special_tokens=params.skip_special_tokens)
                for stop in [params.stop] if isinstance(params.stop, str) else params.stop or []:
                    if stop in text:
                        text, stopped = text[: text.index(stop)], True
                reason = "stop" if stopped or len(row) < allowed[i] else "length"
                outputs.append(CompletionOutput(j, text, row, finish_reason=reason))
            results.append(RequestOutput(str(next(_REQUEST_IDS)), texts[i], ids, outputs))
        return results

    def sleep(self, level: int = 1) -> None:
        return None

    def wake_up(self, tags=None) -> None:
        return None
