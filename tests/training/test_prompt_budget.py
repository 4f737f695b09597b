"""Prompt budgets and clipping: failures only a GPU run would show, reproduced on a CPU.

- gpt-oss renders a long harmony header before the prompt; with too small a
  ``max_prompt_length`` most PubMedQA rows were dropped without a word and the 70/30 mix became
  mostly GSM8K. The filter now reports per task and stops when a task loses too much.
- Unsloth sets ``epsilon_high=0.28`` by itself for ``loss_type="dapo"``; plain TRL (the CPU
  path) falls back to ``epsilon``. The course passes it explicitly so both clip the same way.
"""

from __future__ import annotations

import pytest
from datasets import Dataset

from medreason_lib.models import load_model
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training.config import (
    ConfigError,
    clip_range,
    filter_long_prompts,
    grpo_config,
    prompt_lengths,
    training_dataset,
)

GPTOSS = PROFILES["tiny-gptoss"]


@pytest.fixture(scope="module")
def gptoss_tokenizer():
    return loaded_tokenizer(GPTOSS)


def _rows(task, words):
    prompt = [{"role": "user", "content": " ".join(["word"] * words)}]
    return {"prompt": prompt, "answer": "yes", "task": task}


def test_a_task_losing_more_than_its_share_stops_the_run(gptoss_tokenizer, capsys):
    data = Dataset.from_list([_rows("pubmedqa", 400)] * 3 + [_rows("gsm8k", 5)] * 7)
    profile = GPTOSS.replace(max_prompt_length=200)
    with pytest.raises(ConfigError, match=r"task 'pubmedqa' loses 100% .*max_prompt_drop_share"):
        filter_long_prompts(data, gptoss_tokenizer, profile)
    # a smaller loss passes, reported per task
    data = Dataset.from_list([_rows("pubmedqa", 400)] + [_rows("pubmedqa", 5)] * 9)
    kept = filter_long_prompts(data, gptoss_tokenizer, profile)
    assert len(kept) == 9
    assert "pubmedqa 9/10 (dropped 1" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="10%"):
        filter_long_prompts(data, gptoss_tokenizer, profile.replace(max_prompt_drop_share=0.05))


def test_the_harmony_header_pushes_pubmedqa_rows_over_the_budget(gptoss_tokenizer):
    """The same mix and limit: every prompt is longer under the gpt-oss template (its
    harmony header: system message, dates, channels, developer message) loses PubMedQA rows,
    so it loses PubMedQA rows the Qwen template keeps, and the run
    stops naming the task. (With the real tokenizers and abstracts the old 20b
    limit of 256 kept 1.8% of PubMedQA: benchmarks/bench_prompt_lengths.py, README.)"""
    qwen = PROFILES["tiny"]
    data = training_dataset(qwen)
    qwen_lengths = prompt_lengths(data, loaded_tokenizer(qwen), qwen)
    gptoss_lengths = prompt_lengths(data, gptoss_tokenizer, GPTOSS)
    assert all(g > q for g, q in zip(gptoss_lengths, qwen_lengths, strict=True))  # the header
    pubmed = sorted(n for n, t in zip(gptoss_lengths, data["task"], strict=True) if t == "pubmedqa")
    limit = pubmed[int(0.7 * len(pubmed))] - 1  # gpt-oss loses about 30% of PubMedQA
    qwen_pubmed = [n for n, t in zip(qwen_lengths, data["task"], strict=True) if t == "pubmedqa"]
    assert sum(n > limit for n in qwen_pubmed) < sum(n > limit for n in pubmed)
    with pytest.raises(ConfigError, match="task 'pubmedqa' loses 3"):
        filter_long_prompts(data, gptoss_tokenizer, GPTOSS.replace(max_prompt_length=limit))


def loaded_tokenizer(profile):
    with load_model(profile) as loaded:
        return loaded.tokenizer


@pytest.mark.parametrize("name", ["3b", "8b", "20b"])
def test_gpu_profiles_leave_room_for_prompt_and_completion(name):
    p = PROFILES[name]
    assert p.max_prompt_length + p.max_completion_length <= p.max_seq_length
    assert p.max_prompt_length >= 512  # measured: PubMedQA p95 is 553-571 tokens (README)


def test_epsilon_high_is_passed_explicitly(tmp_path):
    dapo = PROFILES["tiny"].replace(loss_type="dapo")
    config = grpo_config(dapo, tmp_path)
    assert (config.epsilon, config.epsilon_high) == (0.2, 0.28) == clip_range(dapo)
    grpo = grpo_config(dapo.replace(loss_type="grpo"), tmp_path)
    assert grpo.epsilon_high == grpo.epsilon == 0.2
    assert grpo_config(dapo.replace(epsilon_high=0.3), tmp_path).epsilon_high == 0.3
