"""One shape for every way of producing completions: ``generate(prompts) -> completions``.

``prompts`` is a list of chat prompts (each a list of ``{"role", "content"}`` messages, the
``prompt`` column of the course's datasets). The result has one entry per prompt, in order.
The evaluation accepts any callable of this shape, so a transformers model, a vLLM engine,
an HTTP endpoint or a scripted fake all plug in the same way. ``make_generate`` builds the
callable from what ``models`` returns:

- ``hf``: a transformers model (or an Unsloth model loaded without vLLM) and its tokenizer:
  batched ``model.generate`` with left padding (``HFGenerator``).
- ``fast_generate``: an Unsloth model loaded with ``fast_inference=True`` (it carries a vLLM
  engine as ``model.vllm_engine``): ``model.fast_generate(texts, sampling_params=...,
  lora_request=model.load_lora(adapter))``.
- ``vllm``: a ``vllm.LLM`` engine on a merged model (``models.load_vllm_engine``):
  ``engine.generate(texts, sampling_params=...)``.

The two vLLM backends live in ``generation_vllm`` (imported when one is chosen), and what
every backend shares (``GenerationSettings``, ``Completion``, ``render_prompts``) in
``generation_base``, re-exported here. All three
render the prompts with the tokenizer's chat template
(``apply_chat_template(..., add_generation_prompt=True, **chat_template_kwargs)``), so the
model sees the same text whichever backend runs it.

A completion is a ``Completion(text, truncated, n_tokens)``. ``truncated`` is True when the
generation stopped at ``max_new_tokens`` instead of at an end-of-sequence token (None when
the backend cannot tell). A plain callable may return strings, ``Completion`` objects, dicts
with a ``text`` key (and optional ``truncated``/``n_tokens``/``finish_reason``), or objects
with a ``.text`` attribute such as vLLM's outputs; ``to_completion`` reads them all.

gpt-oss writes harmony channels (``<|channel|>final<|message|>...``) whose markers are
special tokens: for that family the backends decode with ``skip_special_tokens=False`` so
``template.parse_completion`` can still find the final channel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medreason_lib.evaluation.generation_base import (  # noqa: F401  (re-exported: the names the course imports)
    HARMONY_MARKER,
    Completion,
    GenerateFn,
    GenerationSettings,
    Messages,
    keeps_special_tokens,
    render_prompts,
    to_completion,
)
from medreason_lib.scoring import template

BACKENDS = ("auto", "hf", "fast_generate", "vllm", "callable")


# --------------------------------------------------------------------------- transformers


def hf_generate_kwargs(settings: GenerationSettings, pad_token_id: int) -> dict:
    """Keyword arguments for ``model.generate``: every sampling knob set explicitly, so the
    model's ``generation_config`` defaults cannot change what "greedy" means."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "pad_token_id": pad_token_id,
        "repetition_penalty": 1.0,
    }
    if settings.greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(
            do_sample=True,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
        )
    if settings.samples > 1:  # k rows per prompt, prompt by prompt (one generate call)
        kwargs["num_return_sequences"] = settings.samples
    return kwargs


def stop_token_ids(model, tokenizer) -> set[int]:
    """The ids that end a generation: the model's ``generation_config.eos_token_id`` (one id
    or a list) and the tokenizer's eos."""
    ids: set[int] = set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos is not None:
        ids.update(int(i) for i in config_eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def cut_at_stop(token_ids: Sequence[int], stop_ids: set[int]) -> tuple[list[int], bool]:
    """``(tokens before the first stop token, truncated)``; truncated means no stop token was
    generated, i.e. the row ran until ``max_new_tokens``. Padding only follows a stop token,
    so it is cut away with it."""
    for i, tok in enumerate(token_ids):
        if tok in stop_ids:
            return list(token_ids[:i]), False
    return list(token_ids), True


class HFGenerator:
    """Batched greedy (or seeded sampled) generation with a transformers model.

    Prompts are rendered with the chat template, tokenized with left padding (so every row's
    last prompt token sits at the same position and generation continues from there), run
    through one ``model.generate`` call per batch under ``torch.inference_mode``, cut at the
    first stop token and decoded (``skip_special_tokens=False`` for the harmony family).
    Sampling is seeded with ``settings.seed`` at each call inside ``torch.random.fork_rng``:
    the same batch gives the same completions, and the caller's random state is untouched.
    With ``settings.samples = k > 1`` each prompt gets k sampled completions from the same
    call (``num_return_sequences``), returned as one list of k per prompt.
    """

    backend = "hf"
    default_batch_size = 16

    def __init__(
        self,
        model,
        tokenizer,
        settings: GenerationSettings,
        *,
        skip_special_tokens: bool | None = None,
    ) -> None:
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        if skip_special_tokens is None:
            skip_special_tokens = not keeps_special_tokens(tokenizer)
        self.skip_special_tokens = skip_special_tokens
        self.stop_ids = stop_token_ids(model, tokenizer)
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token first")
        self.pad_token_id = int(tokenizer.pad_token_id)

    def _encode(self, prompts: Sequence[Messages]):
        texts = render_prompts(self.tokenizer, prompts, self.settings.chat_template_kwargs)
        enc = self.tokenizer(
            texts,
            padding=True,
            padding_side="left",
            return_tensors="pt",
            add_special_tokens=False,  # the chat template already wrote every special token
        )
        return enc.to(self.model.device)

    def __call__(self, prompts: Sequence[Messages]) -> list:
        """Completions of ``prompts`` (``samples > 1``: a list of that many per prompt); a
        batch that runs out of GPU memory is split in two and retried (down to one prompt), so
        a too-large batch size costs time, not items."""
        import torch

        if not prompts:
            return []
        try:
            return self._generate(prompts)
        except torch.OutOfMemoryError:
            if len(prompts) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(prompts) // 2
            return self(prompts[:half]) + self(prompts[half:])

    def _generate(self, prompts: Sequence[Messages]) -> list:
        import torch

        enc = self._encode(prompts)
        kwargs = hf_generate_kwargs(self.settings, self.pad_token_id)
        device = self.model.device
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.settings.seed)
            out = self.model.generate(**enc, **kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
        completions = []
        for row in new_tokens:
            ids, truncated = cut_at_stop(row, self.stop_ids)
            text = self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)
            completions.append(Completion(text, truncated, len(ids)))
        k = self.settings.samples
        if k == 1:
            return completions
        return [completions[i : i + k] for i in range(0, len(completions), k)]


# --------------------------------------------------------------------------- choosing


def detect_backend(obj: Any) -> str:
    """Which backend ``make_generate`` would use for ``obj`` (see the module docstring)."""
    if type(obj).__module__.split(".")[0] == "vllm" and hasattr(obj, "generate"):
        return "vllm"
    if getattr(obj, "vllm_engine", None) is not None and hasattr(obj, "fast_generate"):
        return "fast_generate"
    if hasattr(obj, "generate") and hasattr(obj, "config"):
        return "hf"
    if callable(obj):
        return "callable"
    raise TypeError(
        f"cannot generate with a {type(obj).__name__}: pass a callable "
        "(list of chat prompts -> list of completions), a (model, tokenizer) pair, a model "
        "with tokenizer=..., or a vLLM engine"
    )


def engine_max_model_len(obj) -> int | None:
    """The ``max_model_len`` of a vLLM engine, or of the one an Unsloth model carries."""
    engine = getattr(obj, "vllm_engine", obj)
    try:
        return int(engine.llm_engine.model_config.max_model_len)
    except (AttributeError, TypeError, ValueError):
        return None


def _vllm_generator(obj, tokenizer, settings, backend, lora_path, skip_special_tokens):
    """A ``VLLMGenerator`` (``generation_vllm``, imported only when it is chosen)."""
    from medreason_lib.evaluation.generation_vllm import VLLMGenerator, fast_generate_lora

    limit = engine_max_model_len(obj)
    if backend == "vllm":
        tok = tokenizer if tokenizer is not None else obj.get_tokenizer()
        return VLLMGenerator(
            obj.generate,
            tok,
            settings,
            backend="vllm",
            skip_special_tokens=skip_special_tokens,
            max_model_len=limit,
        )
    if tokenizer is None:
        raise ValueError(f"the {backend!r} backend needs the model's tokenizer: tokenizer=...")
    return VLLMGenerator(
        obj.fast_generate,
        tokenizer,
        settings,
        backend="fast_generate",
        lora_request=fast_generate_lora(obj, lora_path),
        max_model_len=limit,
        skip_special_tokens=skip_special_tokens,
    )


def make_generate(
    obj: Any,
    tokenizer=None,
    *,
    settings: GenerationSettings | None = None,
    lora_path: str | Path | None = None,
    skip_special_tokens: bool | None = None,
    backend: str = "auto",
) -> Callable[[list[Messages]], list]:
    """A ``generate(prompts)`` callable for ``obj`` (returned as is when it already is one).

    ``obj``: a callable; a ``(model, tokenizer)`` pair; a model (then ``tokenizer`` is
    required); an Unsloth model with vLLM (``fast_generate``; ``lora_path`` is an adapter
    saved with ``save_lora``, loaded with ``model.load_lora``); or a ``vllm.LLM`` engine (its
    own tokenizer is used unless one is given). ``settings`` (default: greedy, 256 new
    tokens) is applied by the model backends; a plain callable is trusted to follow them.
    The model backends' callables carry ``backend`` ("hf", "fast_generate", "vllm") and
    ``default_batch_size`` attributes.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if isinstance(obj, tuple) and len(obj) == 2:
        obj, tokenizer = obj
    settings = settings or GenerationSettings()
    chosen = detect_backend(obj) if backend == "auto" else backend
    if lora_path is not None and chosen != "fast_generate":
        raise ValueError(
            f"lora_path works with Unsloth's fast_generate only, not the {chosen!r} backend: "
            "load the adapter with models.load_model(profile, adapter=...) or merge it first"
        )
    if chosen == "callable":
        return obj
    if chosen in ("vllm", "fast_generate"):
        return _vllm_generator(obj, tokenizer, settings, chosen, lora_path, skip_special_tokens)
    if tokenizer is None:
        raise ValueError(f"the {chosen!r} backend needs the model's tokenizer: tokenizer=...")
    return HFGenerator(obj, tokenizer, settings, skip_special_tokens=skip_special_tokens)


def _user_turn(prompt: Sequence[dict]) -> str:
    return [m["content"] for m in prompt if m["role"] == "user"][-1]


def scripted_generator(
    answer: str | Callable[[dict], str], dataset=None, reasoning: str = "A scripted answer."
):
    """A fake ``generate`` that answers in the template, for checking the harness itself.

    ``answer``: one answer for every prompt (``"yes"``), or ``fn(row) -> answer`` (then
    ``dataset`` is needed: each prompt's row is found by its user turn), e.g.
    ``lambda row: row["answer"]``, which must score 100%.
    """
    rows = {}
    if callable(answer):
        if dataset is None:
            raise ValueError("a per-row answer function needs the dataset to find the rows")
        rows = {_user_turn(row["prompt"]): dict(row) for row in dataset}

    def generate(prompts: Sequence[Messages]) -> list[str]:
        said = [answer(rows[_user_turn(p)]) if callable(answer) else answer for p in prompts]
        return [template.format_completion(reasoning, a) for a in said]

    return generate
