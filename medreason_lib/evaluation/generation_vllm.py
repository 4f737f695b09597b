"""The vLLM backends of ``generation.make_generate``: a ``vllm.LLM`` engine, or Unsloth's
``model.fast_generate`` (the same ``LLM.generate`` of the engine an Unsloth model loaded with
``fast_inference=True`` carries).

vLLM runs on a GPU only; nothing imports it until a generator is first called (then
``models.vllm_sampling_params``, the only module that imports vLLM), and
``make_generate`` imports this module only when it picks one of these backends, so the
keyword builders below can be tested as data on any machine. It builds on
``generation_base`` (settings, ``Completion``, prompt rendering), never on ``generation``.

A LoRA adapter reaches Unsloth's engine only as a saved folder: ``fast_generate_lora`` turns
``lora_path`` into ``model.load_lora(path)``'s request, and refuses a peft-wrapped model
without one (its adapter lives in the transformers weights, which the engine never reads).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medreason_lib.evaluation.generation_base import (
    Completion,
    GenerationSettings,
    Messages,
    keeps_special_tokens,
    render_prompts,
    to_completion,
)


def vllm_sampling_kwargs(settings: GenerationSettings, *, skip_special_tokens: bool) -> dict:
    """Keyword arguments for ``vllm.SamplingParams`` equivalent to ``hf_generate_kwargs``.

    vLLM decodes greedily at temperature 0; ``top_k=-1`` (no filter) is accepted by every
    vLLM release; ``seed`` makes each request's sampling reproducible on its own. ``n`` is
    ``settings.samples``: k samples of a prompt come from one request (vLLM refuses ``n > 1``
    at temperature 0, as ``GenerationSettings`` does).
    """
    return {
        "n": settings.samples,
        "temperature": settings.temperature,
        "top_p": settings.top_p if not settings.greedy else 1.0,
        "top_k": settings.top_k if settings.top_k > 0 else -1,
        "repetition_penalty": 1.0,
        "max_tokens": settings.max_new_tokens,
        "seed": settings.seed,
        "skip_special_tokens": skip_special_tokens,
    }


def vllm_generate_kwargs(sampling_params, lora_request=None) -> dict:
    """Keyword arguments for ``LLM.generate`` (Unsloth's ``model.fast_generate`` is that same
    method of the engine it carries): sampling parameters, vLLM's own progress bar off (the
    evaluation draws one per batch), and the LoRA request when there is an adapter."""
    kwargs: dict[str, Any] = {"sampling_params": sampling_params, "use_tqdm": False}
    if lora_request is not None:
        kwargs["lora_request"] = lora_request
    return kwargs


class PromptTooLong(ValueError):
    """A prompt that leaves the engine no room for ``max_new_tokens`` (vLLM would cut the
    answer short, or raise for the whole batch when the prompt reaches ``max_model_len``)."""


# ``lora_path=NO_ADAPTER``: the base model on purpose (``lora_request=None``), as Unsloth's
# notebooks evaluate "before" on a model that carries a LoRA.
NO_ADAPTER = "<no adapter>"


def engine_model_len(tokenizer, prompts: Sequence[Messages], settings: GenerationSettings) -> int:
    """The ``max_model_len`` an evaluation engine needs: the longest rendered prompt plus
    ``max_new_tokens``, so no item is cut short by the engine rather than by the setting."""
    texts = render_prompts(tokenizer, prompts, settings.chat_template_kwargs)
    longest = max(
        (len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts), default=0
    )
    return longest + settings.max_new_tokens


class VLLMGenerator:
    """Generation through vLLM: ``generate_fn(texts, **vllm_generate_kwargs(...))``.

    ``generate_fn`` is ``engine.generate`` (a ``vllm.LLM``) or Unsloth's
    ``model.fast_generate``; prompts are rendered with ``tokenizer``'s chat template first.
    Each output's ``finish_reason == "length"`` marks it truncated. A trailing eos text
    (vLLM may keep it when special tokens are not skipped) is removed. With
    ``settings.samples = k > 1`` (``SamplingParams(n=k)``) each prompt's request output holds
    k completions, returned as one list of k per prompt.
    """

    default_batch_size = 64

    def __init__(
        self,
        generate_fn: Callable,
        tokenizer,
        settings: GenerationSettings,
        *,
        backend: str,
        lora_request=None,
        skip_special_tokens: bool | None = None,
        max_model_len: int | None = None,
    ) -> None:
        self.max_model_len = max_model_len
        self.generate_fn, self.tokenizer, self.settings = generate_fn, tokenizer, settings
        self.backend, self.lora_request = backend, lora_request
        if skip_special_tokens is None:
            skip_special_tokens = not keeps_special_tokens(tokenizer)
        self.skip_special_tokens = skip_special_tokens
        self._sampling_params = None

    def sampling_params(self):
        if self._sampling_params is None:
            from medreason_lib.models import vllm_sampling_params  # imports vLLM: GPU only

            kwargs = vllm_sampling_kwargs(
                self.settings, skip_special_tokens=self.skip_special_tokens
            )
            self._sampling_params = vllm_sampling_params(**kwargs)
        return self._sampling_params

    def __call__(self, prompts: Sequence[Messages]) -> list:
        if not prompts:
            return []
        texts = render_prompts(self.tokenizer, prompts, self.settings.chat_template_kwargs)
        if self.max_model_len is not None:
            sizes = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
            over = [n for n in sizes if n + self.settings.max_new_tokens > self.max_model_len]
            if over:
                raise PromptTooLong(
                    f"{len(over)} of {len(texts)} prompts ({max(over)} tokens) + max_new_tokens "
                    f"{self.settings.max_new_tokens} exceed the engine's max_model_len "
                    f"{self.max_model_len}"
                )
        kwargs = vllm_generate_kwargs(self.sampling_params(), self.lora_request)
        outputs = self.generate_fn(texts, **kwargs)
        k = self.settings.samples
        if k == 1:
            return [self._clean(out) for out in outputs]
        grouped = [list(getattr(out, "outputs", None) or []) for out in outputs]
        if any(len(group) != k for group in grouped):
            raise ValueError(
                f"samples={k}: the engine returned {sorted({len(g) for g in grouped})} "
                "completions per request, not k (SamplingParams(n=k) was not applied)"
            )
        return [[self._clean(c) for c in group] for group in grouped]

    def _clean(self, output) -> Completion:
        c = to_completion(output)
        eos = self.tokenizer.eos_token or ""
        if eos and c.text.endswith(eos):
            c = Completion(c.text[: -len(eos)], c.truncated, c.n_tokens)
        return c


def fast_generate_lora(model, lora_path: str | Path | None):
    """The LoRA request for Unsloth's vLLM engine, or None for the base model.

    The engine holds the base weights only: a LoRA attached to the transformers model (a peft
    model) is invisible to ``fast_generate`` unless it is passed as a saved adapter, so a peft
    model without ``lora_path`` is refused rather than silently evaluated as the base model.
    """
    if lora_path == NO_ADAPTER:
        return None
    if lora_path is None:
        if getattr(model, "peft_config", None):
            raise ValueError(
                "this model carries a LoRA adapter that Unsloth's vLLM engine does not see: "
                "save it (model.save_lora(path)) and pass lora_path=path, or use backend='hf'"
            )
        return None
    if not hasattr(model, "load_lora"):
        raise ValueError(
            "this Unsloth model has no load_lora (Unsloth attaches it in "
            "FastLanguageModel.get_peft_model); load the model for LoRA first"
        )
    return model.load_lora(str(lora_path))
