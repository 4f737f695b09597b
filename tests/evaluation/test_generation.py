"""Tests of medreason_lib.evaluation.generation: the generate callables behind the evaluation.

The transformers backend runs on the tiny models, built in memory (nothing is cached or
downloaded). vLLM and Unsloth need a GPU, so their paths run here against fakes with the
same call signatures (``LLM.generate``, ``model.fast_generate``, ``model.load_lora``,
``SamplingParams``); the keyword dicts are checked as data.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

from medreason_lib import data, evaluation
from medreason_lib.evaluation.generation import (
    Completion,
    GenerationSettings,
    HFGenerator,
    cut_at_stop,
    detect_backend,
    hf_generate_kwargs,
    make_generate,
    render_prompts,
    scripted_generator,
    to_completion,
)
from medreason_lib.evaluation.generation_vllm import vllm_generate_kwargs, vllm_sampling_kwargs
from medreason_lib.models import tiny
from medreason_lib.scoring import template
from medreason_lib.settings.profiles import PROFILES


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # several times faster for the tiny model on a 2-core CPU
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def prompts():
    rows = data.load_task("gsm8k", "test", source="bundled", verbose=False)
    long = data.load_task("pubmedqa", "test", source="bundled", verbose=False)
    return rows["prompt"][:3] + long["prompt"][:2]  # lengths differ: padding is needed


@pytest.fixture(scope="module")
def qwen2():
    return tiny.build_tiny("qwen2", cache=False)


@pytest.fixture(scope="module")
def chaotic():
    """The tiny model with large random weights: its greedy output depends on the prompt
    (the stock random init writes the same token whatever it reads)."""
    model, tokenizer = tiny.build_tiny("qwen2", cache=False)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model, tokenizer


# --------------------------------------------------------------------------- settings


def test_settings_from_profile_are_greedy_unless_sampling():
    p = PROFILES["tiny-qwen3"]
    greedy = GenerationSettings.from_profile(p)
    assert greedy.greedy and greedy.max_new_tokens == p.max_completion_length
    assert greedy.chat_template_kwargs == {"enable_thinking": False}
    sampled = GenerationSettings.from_profile(p, sample=True)
    assert not sampled.greedy and sampled.temperature == p.temperature
    for bad in ({"max_new_tokens": 0}, {"temperature": -1.0}, {"top_p": 0.0}):
        with pytest.raises(ValueError):
            GenerationSettings(**bad)


def test_hf_kwargs_override_the_model_defaults():
    greedy = hf_generate_kwargs(GenerationSettings(max_new_tokens=9), pad_token_id=0)
    assert greedy == {
        "max_new_tokens": 9,
        "pad_token_id": 0,
        "repetition_penalty": 1.0,
        "do_sample": False,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }
    sampled = hf_generate_kwargs(GenerationSettings(temperature=0.8, top_p=0.9), pad_token_id=3)
    assert sampled["do_sample"] is True and (sampled["temperature"], sampled["top_p"]) == (0.8, 0.9)


# --------------------------------------------------------------------------- completions


def test_to_completion_reads_every_accepted_shape():
    assert to_completion("yes") == Completion("yes", None, None)
    assert to_completion({"text": "a", "truncated": True, "n_tokens": 3}) == Completion(
        "a", True, 3
    )
    vllm_like = types.SimpleNamespace(text="b", finish_reason="length", token_ids=[1, 2])
    assert to_completion(vllm_like) == Completion("b", True, 2)
    stopped = types.SimpleNamespace(text="c", finish_reason="stop", token_ids=[5])
    assert to_completion(types.SimpleNamespace(outputs=[stopped])) == Completion("c", False, 1)
    for bad in (42, {"content": "x"}, {"text": "x", "truncated": "yes"}):
        with pytest.raises(TypeError):
            to_completion(bad)


def test_cut_at_stop():
    assert cut_at_stop([5, 6, 2, 0, 0], {0, 2}) == ([5, 6], False)
    assert cut_at_stop([5, 6, 7], {0, 2}) == ([5, 6, 7], True)


# --------------------------------------------------------------------------- transformers


def test_hf_backend_left_pads_so_a_batch_equals_one_at_a_time(chaotic, prompts):
    model, tokenizer = chaotic
    tokenizer.padding_side = "right"  # the generator must pad left whatever the tokenizer says
    generate = make_generate((model, tokenizer), settings=GenerationSettings(max_new_tokens=10))
    assert generate.backend == "hf"
    batch = generate(prompts)
    single = [generate([p])[0] for p in prompts]
    assert [c.text for c in batch] == [c.text for c in single]
    assert len({c.text for c in batch}) == len(prompts)  # the texts really depend on the prompt
    assert all(isinstance(c.text, str) for c in batch)


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(chaotic, prompts):
    def texts(seed):
        settings = GenerationSettings(max_new_tokens=8, temperature=1.0, seed=seed)
        return [c.text for c in make_generate(chaotic, settings=settings)(prompts)]

    state = torch.random.get_rng_state()
    first = texts(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert texts(1) == first and texts(2) != first


def test_hf_backend_reports_truncation_at_max_new_tokens(qwen2, prompts):
    model, tokenizer = qwen2
    out = make_generate((model, tokenizer), settings=GenerationSettings(max_new_tokens=3))(prompts)
    assert len(out) == len(prompts)
    assert all(c.truncated and c.n_tokens == 3 for c in out)


def test_hf_backend_evaluates_with_token_counts(qwen2):
    rows = data.load_task("medqa", "test", n=4, source="bundled", verbose=False)
    settings = evaluation.EvalSettings(generation=GenerationSettings(max_new_tokens=4))
    report = evaluation.evaluate(
        qwen2, rows, settings=settings, profile=PROFILES["tiny"], progress=False
    )
    assert report.backend == "hf" and report.n == 4 and report.failed == 0
    assert report.overall.mean_tokens == 4 and report.overall.truncation_rate == 1.0


class Scripted(torch.nn.Module):
    """A stand-in causal LM whose ``generate`` appends a fixed token sequence to each row
    (then pads), like ``model.generate`` does after a row has stopped."""

    def __init__(self, new_tokens: list[int], pad: int, eos: list[int]):
        super().__init__()
        self.config = types.SimpleNamespace()
        self.generation_config = types.SimpleNamespace(eos_token_id=eos)
        self.new_tokens, self.pad, self.calls = new_tokens, pad, []
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self):
        return self.anchor.device

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls.append({"input_ids": input_ids, "attention_mask": attention_mask, **kwargs})
        tail = torch.tensor(self.new_tokens + [self.pad] * 2).repeat(input_ids.shape[0], 1)
        return torch.cat([input_ids, tail], dim=1)


def _harmony_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_harmony_decoding_keeps_the_channel_markers(prompts):
    _, tokenizer = tiny.build_tiny("gpt-oss", cache=False)
    said = "<|channel|>analysis<|message|>Reasoning here.<|end|><|start|>assistant"
    said += "<|channel|>final<|message|>yes"
    ids = _harmony_ids(tokenizer, said + "<|return|>")
    model = Scripted(ids, pad=tokenizer.pad_token_id, eos=[tokenizer.eos_token_id])
    out = make_generate((model, tokenizer), settings=GenerationSettings(max_new_tokens=99))(
        prompts[:2]
    )
    assert [c.text for c in out] == [said, said]  # markers kept, eos and padding cut
    assert all(c.truncated is False and c.n_tokens == len(ids) - 1 for c in out)
    parsed = template.parse_completion(out[0].text)
    assert parsed.style == "harmony" and parsed.answer == "yes"
    mask = model.calls[0]["attention_mask"]
    assert mask[:, -1].all() and not mask[:, 0].all()  # left padding


def test_qwen_decoding_strips_special_tokens_and_passes_template_kwargs(prompts):
    _, tokenizer = tiny.build_tiny("qwen3", cache=False)
    body = template.format_completion("Short.", "no")
    ids = _harmony_ids(tokenizer, body + "<|im_end|>")
    model = Scripted(ids, pad=tokenizer.pad_token_id, eos=[tokenizer.eos_token_id])
    settings = GenerationSettings(chat_template_kwargs={"enable_thinking": False})
    out = HFGenerator(model, tokenizer, settings)(prompts[:1])
    assert out[0].text == body and out[0].truncated is False
    prompt_text = tokenizer.decode(model.calls[0]["input_ids"][0])
    assert prompt_text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


# --------------------------------------------------------------------------- vLLM / Unsloth


def test_vllm_keyword_dicts():
    greedy = GenerationSettings(max_new_tokens=512, seed=3407)
    kw = vllm_sampling_kwargs(greedy, skip_special_tokens=True)
    assert kw == {
        "n": 1,
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": -1,
        "repetition_penalty": 1.0,
        "max_tokens": 512,
        "seed": 3407,
        "skip_special_tokens": True,
    }
    sampled = vllm_sampling_kwargs(
        GenerationSettings(temperature=0.9, top_p=0.95, top_k=20), skip_special_tokens=False
    )
    assert (sampled["temperature"], sampled["top_p"], sampled["top_k"]) == (0.9, 0.95, 20)
    assert sampled["skip_special_tokens"] is False
    assert vllm_generate_kwargs("SP") == {"sampling_params": "SP", "use_tqdm": False}
    assert vllm_generate_kwargs("SP", "LORA")["lora_request"] == "LORA"


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class FakeEngine:
    """``LLM.generate(prompts, sampling_params=..., use_tqdm=..., lora_request=...)``."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, []

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None):
        self.calls.append((prompts, sampling_params, use_tqdm, lora_request))
        outputs = []
        for i, _ in enumerate(prompts):
            reason = "length" if i == 0 else "stop"
            done = types.SimpleNamespace(
                text=f"out {i}<|im_end|>", finish_reason=reason, token_ids=[1] * (i + 1)
            )
            outputs.append(types.SimpleNamespace(outputs=[done]))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.SamplingParams = FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def test_vllm_engine_backend(fake_vllm, qwen2, prompts):
    _, tokenizer = qwen2
    engine_class = type("LLM", (FakeEngine,), {"__module__": "vllm.entrypoints.llm"})
    engine = engine_class(tokenizer)  # detect_backend recognises vLLM by the module
    generate = make_generate(engine, settings=GenerationSettings(max_new_tokens=5))
    out = generate(prompts[:3])
    assert generate.backend == "vllm"
    texts, params, use_tqdm, lora = engine.calls[0]
    assert texts == render_prompts(tokenizer, prompts[:3], {})
    assert params.kwargs["max_tokens"] == 5 and use_tqdm is False and lora is None
    assert [c.text for c in out] == ["out 0", "out 1", "out 2"]  # trailing eos removed
    assert [c.truncated for c in out] == [True, False, False]
    assert [c.n_tokens for c in out] == [1, 2, 3]


def test_unsloth_fast_generate_backend_loads_the_lora(fake_vllm, qwen2, prompts, tmp_path):
    _, tokenizer = qwen2
    engine = FakeEngine(tokenizer)
    model = types.SimpleNamespace(
        vllm_engine=engine,
        fast_generate=engine.generate,
        load_lora=lambda path: ("LoRARequest", path),
        generate=None,
        config=None,
    )
    assert detect_backend(model) == "fast_generate"
    generate = make_generate(model, tokenizer, lora_path=tmp_path / "adapter")
    generate(prompts[:2])
    assert generate.backend == "fast_generate"
    assert engine.calls[0][3] == ("LoRARequest", str(tmp_path / "adapter"))


def test_fast_generate_never_silently_drops_a_lora(fake_vllm, qwen2, tmp_path):
    _, tokenizer = qwen2
    engine = FakeEngine(tokenizer)
    peft_model = types.SimpleNamespace(
        vllm_engine=engine, fast_generate=engine.generate, peft_config={"default": "LoRA"}
    )
    with pytest.raises(ValueError, match="lora_path"):
        make_generate(peft_model, tokenizer)
    with pytest.raises(ValueError, match="no load_lora"):
        make_generate(peft_model, tokenizer, lora_path=tmp_path)


def test_make_generate_refuses_what_it_cannot_use(qwen2, tmp_path):
    model, tokenizer = qwen2
    with pytest.raises(ValueError, match="tokenizer"):
        make_generate(model)
    with pytest.raises(ValueError, match="lora_path"):
        make_generate(model, tokenizer, lora_path=tmp_path)
    with pytest.raises(TypeError, match="cannot generate"):
        make_generate(object())
    with pytest.raises(ValueError, match="unknown backend"):
        make_generate(model, tokenizer, backend="onnx")


def test_plain_callables_pass_through_and_scripted_generator(prompts):
    fn = scripted_generator("maybe")
    assert make_generate(fn) is fn
    assert template.parse_completion(fn(prompts[:1])[0]).answer == "maybe"
    with pytest.raises(ValueError, match="dataset"):
        scripted_generator(lambda row: row["answer"])
