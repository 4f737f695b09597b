"""Evaluation through vLLM, with a fake engine that enforces ``max_model_len`` as vLLM does.

vLLM stops a request when prompt + output reaches ``max_model_len`` (the answer is cut short
and counted as truncated) and raises for the whole ``generate`` call when a prompt reaches it.
The course sizes its evaluation engines from the longest prompt plus ``max_new_tokens``,
reports over-long items on their own, and never loses a batch to one item.
"""

from __future__ import annotations

import pytest

from medreason_lib import evaluation
from medreason_lib.data import load_task
from medreason_lib.evaluation import EvalSettings
from medreason_lib.evaluation.generation_vllm import (
    NO_ADAPTER,
    VLLMGenerator,
    engine_model_len,
    fast_generate_lora,
)
from medreason_lib.models import load_model
from medreason_lib.settings.profiles import PROFILES

TINY = PROFILES["tiny"]


class FakeEngine:
    """``LLM.generate`` of an engine with a ``max_model_len``: raises for the whole call when
    any prompt reaches it, else answers every prompt within what is left."""

    def __init__(self, tokenizer, max_model_len: int) -> None:
        self.tokenizer, self.max_model_len, self.calls = tokenizer, max_model_len, 0

    def generate(self, texts, sampling_params=None, use_tqdm=False, lora_request=None):
        self.calls += 1
        sizes = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        if max(sizes) >= self.max_model_len:
            raise ValueError(f"prompt of {max(sizes)} tokens >= max_model_len")
        return [{"text": "<reasoning>r</reasoning><answer>yes</answer>", "truncated": False}] * len(
            texts
        )


@pytest.fixture(scope="module")
def tokenizer():
    with load_model(TINY) as loaded:
        return loaded.tokenizer


@pytest.fixture(scope="module")
def items():
    return load_task("pubmedqa", "test", n=6, seed=0, source="bundled")


def _generator(engine, tokenizer, settings, max_model_len):
    gen = VLLMGenerator(
        engine.generate, tokenizer, settings.generation, backend="vllm", max_model_len=max_model_len
    )
    gen._sampling_params = object()  # no vLLM here: SamplingParams would need it
    return gen


def _evaluate(engine, tokenizer, settings, items, max_model_len):
    """The harness on ``items`` in one batch, through a generator on ``engine``."""
    gen = _generator(engine, tokenizer, settings, max_model_len)
    return evaluation.evaluate(
        gen, items, settings=settings, profile=TINY, batch_size=6, progress=False
    )


def test_an_engine_sized_from_the_data_answers_every_item(tokenizer, items):
    settings = EvalSettings.from_profile(TINY)
    prompts = [it["messages"] for it in evaluation._items(items, settings, None)]
    needed = engine_model_len(tokenizer, prompts, settings.generation)
    engine = FakeEngine(tokenizer, needed)
    report = _evaluate(engine, tokenizer, settings, items, needed)
    assert report.failed == 0 and report.n == 6 and engine.calls == 1


def test_one_over_long_item_fails_alone_and_is_reported(tokenizer, items, capsys):
    settings = EvalSettings.from_profile(TINY)
    prompts = [it["messages"] for it in evaluation._items(items, settings, None)]
    rendered = [engine_model_len(tokenizer, [p], settings.generation) for p in prompts]
    limit = sorted(rendered)[-1] - 1  # only the longest prompt leaves too little room
    engine = FakeEngine(tokenizer, limit)
    report = _evaluate(engine, tokenizer, settings, items, limit)
    errors = [r["error"] for r in report.records if r["error"]]
    assert report.n == 6 and len(errors) == 1 and errors[0].startswith("PromptTooLong")
    assert "1 of them: prompt too long for the engine's max_model_len" in capsys.readouterr().out


def test_a_batch_the_engine_rejects_is_retried_item_by_item(tokenizer, items):
    """Without a known max_model_len the engine's own error fails the batch; the harness
    retries each item so only the over-long one is lost."""
    settings = EvalSettings.from_profile(TINY)
    prompts = [it["messages"] for it in evaluation._items(items, settings, None)]
    sizes = sorted(engine_model_len(tokenizer, [p], settings.generation) for p in prompts)
    engine = FakeEngine(tokenizer, sizes[-1] - settings.generation.max_new_tokens)
    report = _evaluate(engine, tokenizer, settings, items, None)
    assert report.failed == 1 and engine.calls == 1 + 6


def test_before_evaluates_the_base_on_purpose():
    class Model:
        peft_config = {"default": object()}

        def load_lora(self, path):
            return ("lora", path)

    assert fast_generate_lora(Model(), NO_ADAPTER) is None
    assert fast_generate_lora(Model(), "adapter") == ("lora", "adapter")
    with pytest.raises(ValueError, match="does not see"):
        fast_generate_lora(Model(), None)
