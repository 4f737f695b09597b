"""SmolLM2-135M-Instruct built offline from the pinned wheel's GGUF (issue 23): a real small
instruct model for the laptop track. The first build takes about half a minute; later tests
read the cached folder."""

from __future__ import annotations

import json

import pytest

from medreason_lib.models import smol


def test_the_gguf_is_the_pinned_file():
    gguf = smol.find_gguf()
    assert gguf.name == smol.SOURCE["file"]
    assert gguf.stat().st_size == smol.SOURCE["bytes"]


def test_a_gguf_with_another_checksum_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / smol.SOURCE["file"]
    fake.write_bytes(b"GGUF not the pinned weights")
    monkeypatch.setenv(smol.GGUF_ENV, str(fake))
    with pytest.raises(smol.SmolUnavailable, match="is not the pinned"):
        smol.find_gguf()


def test_the_build_is_a_plain_model_with_an_end_of_turn_eos_and_pad():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smol.smol_model_path()
    info = json.loads((folder / "smol_build.json").read_text())
    assert info["source"]["sha256"] == smol.SOURCE["sha256"]
    assert 130e6 < info["parameters"] < 140e6
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == tokenizer.pad_token == smol.END_OF_TURN
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    messages = [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>system\nAnswer in one word.<|im_end|>" in text  # the system turn renders
    batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(0)
    out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in reply, reply  # a real model: it knows this (the tiny one writes noise)


def test_offline_the_hub_id_resolves_to_the_local_build(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert smol.resolve_smol(smol.HUB_ID) == str(smol.smol_model_path())
    assert smol.resolve_smol("tiny:qwen2") == "tiny:qwen2"


@pytest.mark.slow
def test_smol_trains_two_grpo_steps_from_its_trace_warm_start(tmp_path):
    """The real-model check of issue 23: SmolLM2 loads offline, its warm start (LoRA SFT on the
    bundled reasoning traces, merged) writes the course template, and two GRPO steps run from
    it on a CPU. Slow (about 70 s of warm start the first time, then about a minute a GRPO
    step on a busy 2-core CPU): `make test-slow`."""
    import pandas as pd

    from medreason_lib.settings.profiles import PROFILES
    from medreason_lib.training import train

    # the profile's own warm start (cached after its first run), two short GRPO steps; a
    # warm start too short to teach the template would stop the run (learnability.Unlearnable)
    profile = PROFILES["smol"].replace(
        max_steps=2, train_size=8, max_completion_length=96, per_device_train_batch_size=8
    )
    run = train(profile, run_dir=tmp_path / "grpo", sample_every=0)
    assert run.global_step == 2 and (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert (tmp_path / "grpo" / "sft-warmstart" / "config.json").is_file()  # merged warm start
    metrics = pd.read_csv(run.metrics_csv)
    fmt = metrics["rewards/soft_format_reward/mean"]
    print(metrics[["step", "reward", "rewards/soft_format_reward/mean"]].to_string())
    assert fmt.max() > 0, "after the warm start some completions follow the template"


def test_the_build_is_trainable_not_a_gguf_quantized_model():
    """transformers refuses to fine-tune a model whose config still says GGUF quantization
    (the first build kept it: LoRA SFT then raised)."""
    config = json.loads((smol.smol_model_path() / "config.json").read_text())
    assert "quantization_config" not in config


@pytest.mark.slow
def test_untrained_smol_is_stopped_after_one_grpo_step(tmp_path):
    """The untrained instruct model never writes the template (issue 23: 0 of 32 samples), so
    GRPO from it cannot learn: the run stops at step 1 and says to warm start first."""
    from medreason_lib.settings.profiles import PROFILES
    from medreason_lib.training import train
    from medreason_lib.training.learnability import Unlearnable

    profile = PROFILES["smol"].replace(
        max_steps=3, sft_warmup_steps=0, train_size=8, max_completion_length=96,
        per_device_train_batch_size=8,
    )  # fmt: skip
    with pytest.raises(Unlearnable, match="warm start"):
        train(profile, run_dir=tmp_path / "grpo", sample_every=0)
    assert not (tmp_path / "grpo" / "adapter").exists()
