"""What every generation backend shares: the sampling settings, the completion, the prompt text.

``GenerationSettings`` says how completions are sampled (every backend applies the same
values); ``Completion(text, truncated, n_tokens)`` is one result, and ``to_completion`` reads
whatever a generate callable returns (strings, dicts, vLLM's outputs) as one.
``render_prompts`` turns chat prompts into the text the model reads with the tokenizer's chat
template, the same for the transformers and the vLLM backends (``generation`` and
``generation_vllm``, which both build on this module), and ``keeps_special_tokens`` says when
the special tokens must survive decoding (gpt-oss's harmony channels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from medreason_lib.settings.profiles import Profile

Messages = list[dict[str, str]]
GenerateFn = Callable[[list[Messages]], Sequence[Any]]

HARMONY_MARKER = "<|channel|>"


@dataclass(frozen=True)
class GenerationSettings:
    """How completions are sampled; every backend applies the same values.

    ``temperature == 0`` means greedy decoding (the default for evaluation). ``top_k == 0``
    means no top-k filter. ``seed`` seeds sampling (ignored by greedy decoding). ``samples``:
    completions drawn per prompt (sampled evaluation, ``sampled_report``): one request with
    vLLM's ``n``, one ``generate`` call with transformers' ``num_return_sequences``; more
    than one needs a temperature above 0 (greedy decoding would repeat one answer).
    ``chat_template_kwargs`` go to ``apply_chat_template`` (Qwen3 ``enable_thinking``,
    gpt-oss ``reasoning_effort``). The model's own ``generation_config`` defaults (Qwen2.5
    ships temperature 0.7 and repetition_penalty 1.05) are overridden, never inherited.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    chat_template_kwargs: dict = field(default_factory=dict)
    samples: int = 1

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples must be a whole number >= 1, got {self.samples!r}")
        if self.samples > 1 and self.greedy:
            raise ValueError(
                f"samples={self.samples} at temperature 0 would be {self.samples} copies of the "
                "greedy answer: set a temperature above 0"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_profile(
        cls, profile: Profile, *, sample: bool = False, samples: int = 1
    ) -> GenerationSettings:
        """Greedy decoding up to the profile's ``max_completion_length`` with its chat-template
        keywords; ``sample=True`` (implied by ``samples > 1``) uses the profile's rollout
        temperature and top_p instead."""
        sample = sample or samples > 1
        return cls(
            max_new_tokens=profile.max_completion_length,
            temperature=profile.temperature if sample else 0.0,
            top_p=profile.top_p if sample else 1.0,
            seed=profile.seed,
            chat_template_kwargs=dict(profile.chat_template_kwargs),
            samples=samples,
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    """One generated text; ``truncated``/``n_tokens`` are None when the backend cannot tell."""

    text: str
    truncated: bool | None = None
    n_tokens: int | None = None


def _optional_bool(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise TypeError(f"{what}: 'truncated' must be True, False or None, got {value!r}")


def to_completion(item: Any) -> Completion:
    """Read one entry of a generate callable's result as a ``Completion``.

    Accepts a ``Completion``; a ``str`` (truncation unknown); a dict with ``text`` and
    optionally ``truncated``, ``n_tokens`` or ``finish_reason``; an object with ``.text``
    (``finish_reason == "length"`` means truncated, ``token_ids`` gives the length), such as
    vLLM's ``CompletionOutput``; or a vLLM ``RequestOutput`` (its first output). Anything
    else is a ``TypeError``.
    """
    if isinstance(item, Completion):
        return item
    if isinstance(item, str):
        return Completion(item)
    if isinstance(item, dict):
        get = item.get
    elif hasattr(item, "text"):

        def get(key, default=None):
            return getattr(item, key, default)
    elif isinstance(getattr(item, "outputs", None), list | tuple) and item.outputs:
        return to_completion(item.outputs[0])
    else:
        raise TypeError(
            "a completion must be a str, a dict with 'text', or an object with .text; "
            f"got {type(item).__name__}"
        )
    text = get("text")
    if not isinstance(text, str):
        raise TypeError(f"a completion's text must be a str, got {type(text).__name__}")
    truncated = _optional_bool(get("truncated"), "completion")
    if truncated is None and get("finish_reason") is not None:
        truncated = get("finish_reason") == "length"
    n_tokens = get("n_tokens")
    if n_tokens is None and get("token_ids") is not None:
        n_tokens = len(get("token_ids"))
    return Completion(text, truncated, None if n_tokens is None else int(n_tokens))


# --------------------------------------------------------------------------- shared pieces


def render_prompts(tokenizer, prompts: Sequence[Messages], chat_template_kwargs: dict) -> list[str]:
    """Each chat prompt as the text the model reads, ending with the assistant's turn opener."""
    return [
        tokenizer.apply_chat_template(
            list(p), tokenize=False, add_generation_prompt=True, **chat_template_kwargs
        )
        for p in prompts
    ]


def keeps_special_tokens(tokenizer, family: str | None = None) -> bool:
    """True for the harmony (gpt-oss) family, whose channel markers are special tokens that
    must survive decoding; detected from ``family`` or the tokenizer's vocabulary."""
    if family is not None:
        return family == "gpt-oss"
    return HARMONY_MARKER in tokenizer.get_vocab()
