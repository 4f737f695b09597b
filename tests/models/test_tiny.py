"""Tests of medreason_lib.models.tiny: the locally built random-init model and its tokenizer.

Everything runs offline, in a temporary cache, on a fixed small data folder (so a data file
being added to ``data/`` meanwhile cannot change the fingerprint under the tests).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import torch

from medreason_lib.models import tiny
from medreason_lib.scoring import template
from medreason_lib.settings.profiles import LORA_TARGETS

UNICODE = "β-blocker 5 µg — café"
CONV = [
    {"role": "system", "content": template.SYSTEM_PROMPT},
    {"role": "user", "content": "Does aspirin lower the risk of stroke?"},
]


def _no_network(*args, **kwargs):
    raise OSError("network access attempted during a tiny build")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private cache and data folder, HF offline, one torch thread; every family built.

    The first builds run with socket connections disabled, to show they need no network.
    """
    data = tmp_path_factory.mktemp("data")
    (data / "pubmedqa.jsonl").write_text('{"question": "Is metformin safe?", "answer": "yes"}\n')
    (data / "notes.md").write_text("# Notes\nHypertension is treated with beta-blockers.\n")
    (data / "ignored.txt").write_text("not read: wrong suffix\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 0.4M-parameter model gains nothing from more threads
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDREASON_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("MEDREASON_DATA", str(data))
        mp.setenv("HF_HUB_OFFLINE", "1")
        with pytest.MonkeyPatch.context() as net:
            net.setattr(socket.socket, "connect", _no_network)
            net.setattr(socket, "create_connection", _no_network)
            start = time.perf_counter()
            built = {family: tiny.tiny_model_path(family) for family in tiny.FAMILIES}
            cold = time.perf_counter() - start
        yield {"paths": built, "cold_s": cold, "data": data}
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def qwen2(env):
    return tiny.build_tiny("qwen2")


def _tok(family):
    return tiny.build_tiny(family)[1]


def _prompt_ids(tok, conversation) -> torch.Tensor:
    enc = tok.apply_chat_template(
        conversation, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    return enc["input_ids"]


def test_cold_build_offline_gives_a_loadable_folder(env):
    for family, path in env["paths"].items():
        assert path.parent.name == "tiny" and path.name.startswith(f"{family}-")
        for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
            assert (path / name).is_file(), name
    assert env["cold_s"] < 20


def test_model_shape_and_tokenizer_settings(qwen2):
    model, tok = qwen2
    cfg = model.config
    assert type(model).__name__ == "Qwen2ForCausalLM" and not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert cfg.hidden_size == tiny.TINY_CONFIG["hidden_size"]
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # GQA, as in Qwen
    assert cfg.tie_word_embeddings and cfg.vocab_size == len(tok)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.padding_side == "left" and tok.model_max_length == 1024
    assert cfg.eos_token_id == tok.eos_token_id and cfg.pad_token_id == tok.pad_token_id
    assert tok.eos_token_id in model.generation_config.eos_token_id


def test_same_seed_same_model_other_seed_differs(env, qwen2):
    cached_model, cached_tok = qwen2
    model, tok = tiny.build_tiny("qwen2", seed=0, cache=False)
    other, other_tok = tiny.build_tiny("qwen2", seed=1, cache=False)
    assert tok.get_vocab() == cached_tok.get_vocab() == other_tok.get_vocab()
    ref = cached_model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    emb = "model.embed_tokens.weight"
    assert not torch.equal(other.state_dict()[emb], ref[emb])
    assert tiny.tiny_model_path("qwen2", seed=1) != env["paths"]["qwen2"]


def test_second_call_reuses_the_cache(env, monkeypatch):
    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(tiny, "_build", no_rebuild)
    path = env["paths"]["qwen2"]
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    assert tiny.tiny_model_path("qwen2") == path
    assert time.perf_counter() - start < env["cold_s"]
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    assert tiny.resolve_model_id("tiny:qwen2") == str(path)
    assert tiny.resolve_model_id("Qwen/Qwen2.5-3B-Instruct") == "Qwen/Qwen2.5-3B-Instruct"


def test_fingerprint_follows_the_corpus_and_seed(env):
    before = tiny.fingerprint("qwen2")
    assert tiny.fingerprint("qwen2", seed=1) != before
    extra = env["data"] / "extra.csv"
    extra.write_text("question,answer\nIs it?,maybe\n")
    try:
        assert "Is it?,maybe" in tiny.tokenizer_corpus()
        assert tiny.fingerprint("qwen2") != before
    finally:
        extra.unlink()
    assert tiny.fingerprint("qwen2") == before


def test_corpus_reads_data_files_and_survives_an_empty_folder(env, tmp_path, monkeypatch):
    corpus = tiny.tokenizer_corpus()
    assert '{"question": "Is metformin safe?", "answer": "yes"}' in corpus
    assert "not read: wrong suffix" not in corpus
    assert template.SYSTEM_PROMPT in corpus
    monkeypatch.setenv("MEDREASON_DATA", str(tmp_path / "missing"))
    assert template.SYSTEM_PROMPT in tiny.tokenizer_corpus()


def test_parallel_builds_leave_one_complete_folder(env, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDREASON_CACHE", str(tmp_path))
    results: list = []
    workers = [
        threading.Thread(target=lambda: results.append(tiny.tiny_model_path("qwen2")))
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(results) == 2 and results[0] == results[1]
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == [results[0].name]


def test_auto_classes_roundtrip_gives_identical_logits(env, qwen2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = env["paths"]["qwen2"]
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    fresh, fresh_tok = tiny.build_tiny("qwen2", cache=False)
    ids = _prompt_ids(tok, CONV)
    assert torch.equal(ids, _prompt_ids(fresh_tok, CONV))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, fresh(ids).logits)


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_tokenizer_roundtrips_text_exactly(env, family):
    tok = _tok(family)
    for text in (template.SYSTEM_PROMPT, UNICODE, "日本語 🙂\t  x\r\n", "-3.5 mmHg (1,000)"):
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_template_strings_are_few_tokens(env):
    tok = _tok("qwen2")
    for tag in (template.REASONING_OPEN, template.REASONING_CLOSE):
        assert len(tok.tokenize(tag)) <= 3
    for tag in (template.ANSWER_OPEN, template.ANSWER_CLOSE):
        assert len(tok.tokenize(tag)) <= 3
    for word in ("yes", "no", "maybe", " yes", " no", " maybe", "A", "B", "C", "D"):
        assert len(tok.tokenize(word)) == 1, word
    assert all(len(tok.tokenize(str(d))) == 1 for d in range(10))
    assert len(tok.tokenize(template.SYSTEM_PROMPT)) <= 20


def test_qwen2_chat_template_renders_the_real_layout(env):
    text = _tok("qwen2").apply_chat_template(CONV, tokenize=False, add_generation_prompt=True)
    assert text == (
        f"<|im_start|>system\n{template.SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nDoes aspirin lower the risk of stroke?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_system = _tok("qwen2").apply_chat_template(CONV[1:], tokenize=False)
    assert no_system.startswith("<|im_start|>user\n")  # no default system message


def test_qwen3_enable_thinking_switch(env):
    tok = _tok("qwen3")
    off = tok.apply_chat_template(
        CONV, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    on = tok.apply_chat_template(CONV, tokenize=False, add_generation_prompt=True)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert on.endswith("<|im_start|>assistant\n") and "<think>" not in on
    # a training conversation extends the prompt it was generated from
    answer = {"role": "assistant", "content": template.format_completion("r", "yes")}
    full_off = tok.apply_chat_template([*CONV, answer], tokenize=False, enable_thinking=False)
    assert full_off.startswith(off)
    thought = {"role": "assistant", "content": "yes", "reasoning_content": "Aspirin helps."}
    full_on = tok.apply_chat_template([*CONV, thought], tokenize=False)
    completion = full_on[len(on) :]
    assert full_on.startswith(on) and completion.startswith("<think>\nAspirin helps.\n</think>")
    # <think> is an added, non-special token: one id, kept by skip_special_tokens
    assert len(tok.tokenize("<think>")) == 1
    decoded = tok.decode(tok.encode(completion), skip_special_tokens=True)
    assert decoded == "<think>\nAspirin helps.\n</think>\n\nyes\n"
    parsed = template.parse_completion(decoded)
    assert (parsed.style, parsed.reasoning, parsed.answer) == ("think", "Aspirin helps.", "yes")


def test_gptoss_prompt_has_harmony_layout_and_effort(env):
    tok = _tok("gpt-oss")
    assert tok.eos_token == "<|return|>"
    text = tok.apply_chat_template(
        CONV, tokenize=False, add_generation_prompt=True, reasoning_effort="low"
    )
    assert text.startswith("<|start|>system<|message|>") and "Reasoning: low\n" in text
    assert f"<|start|>developer<|message|># Instructions\n\n{template.SYSTEM_PROMPT}" in text
    assert "<|start|>user<|message|>Does aspirin lower the risk of stroke?<|end|>" in text
    assert text.endswith("<|end|><|start|>assistant")
    default = tok.apply_chat_template(CONV, tokenize=False, add_generation_prompt=True)
    assert "Reasoning: medium\n" in default
    with pytest.raises(Exception, match="reasoning_effort"):
        tok.apply_chat_template(CONV, tokenize=False, reasoning_effort="extreme")
    for marker in ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>"):
        assert tok.added_tokens_decoder[tok.convert_tokens_to_ids(marker)].special, marker


def test_gptoss_thinking_renders_channels_and_parses_both_decodings(env):
    tok = _tok("gpt-oss")
    prompt = tok.apply_chat_template(CONV, tokenize=False, add_generation_prompt=True)
    reply = {"role": "assistant", "content": "yes", "thinking": "Trials show a benefit."}
    full = tok.apply_chat_template([*CONV, reply], tokenize=False)
    assert full.startswith(prompt)
    completion = full[len(prompt) :]
    assert completion == (
        "<|channel|>analysis<|message|>Trials show a benefit.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>yes<|return|>"
    )
    ids = tok.encode(completion, add_special_tokens=False)
    kept = tok.decode(ids, skip_special_tokens=False)
    stripped = tok.decode(ids, skip_special_tokens=True)
    assert kept == completion and stripped == "analysisTrials show a benefit.assistantfinalyes"
    for text in (kept, stripped):
        parsed = template.parse_completion(text)
        assert (parsed.style, parsed.reasoning, parsed.answer) == (
            "harmony",
            "Trials show a benefit.",
            "yes",
        )
    without = tok.apply_chat_template(
        [*CONV, {"role": "assistant", "content": "no"}], tokenize=False
    )
    assert without[len(prompt) :] == "<|channel|>final<|message|>no<|return|>"


def test_generate_with_left_padding(qwen2):
    model, tok = qwen2
    short = [{"role": "user", "content": "Yes?"}]
    batch = tok.apply_chat_template(
        [CONV, short],
        add_generation_prompt=True,
        padding=True,
        return_tensors="pt",
        return_dict=True,
    )
    assert batch["attention_mask"][1, 0] == 0  # the short prompt is padded on the left
    out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] > batch["input_ids"].shape[1]
    alone = _prompt_ids(tok, short)
    with torch.no_grad():
        padded_last = model(**batch).logits[1, -1]
        alone_last = model(alone).logits[0, -1]
    torch.testing.assert_close(padded_last, alone_last, atol=1e-4, rtol=1e-4)


def test_lora_attaches_to_every_projection(qwen2):
    from peft import LoraConfig, get_peft_model

    model = tiny.build_tiny("qwen2")[0]
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS))
    wrapped = {n.split(".")[-2] for n, _ in peft_model.named_modules() if n.endswith("lora_A")}
    assert wrapped == set(LORA_TARGETS)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    ids = torch.tensor([[1, 5, 9, 12]])
    peft_model(ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in trainable)


def test_unknown_family_lists_the_valid_ones():
    with pytest.raises(ValueError, match="qwen2, qwen3, gpt-oss"):
        tiny.build_tiny("llama")
    with pytest.raises(ValueError, match="valid"):
        tiny.tiny_model_path("qwen2.5")
