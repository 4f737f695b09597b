"""The CPU stand-ins of the 8b and 20b profiles (notebooks 06 and 07) train and evaluate.

``tiny-qwen3`` (Qwen3's chat template, thinking off) and ``tiny-gptoss`` (gpt-oss's harmony
template) are the tiny model with another chat format. Each must: warm-start into the
family's shapes (``sft.warmstart_dataset``), learn from GRPO (the reward rises), and write
completions that ``template.parse_completion``, the rewards and the evaluation read, whether
decoded as the evaluation does or as TRL does (``skip_special_tokens=True``).
"""

import shutil

import pytest

from conftest import TEST_BATCH
from medreason_lib import evaluation
from medreason_lib.evaluation.generation import GenerationSettings, HFGenerator
from medreason_lib.models import load_model
from medreason_lib.scoring import rewards, template
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training import train
from medreason_lib.training.config import training_dataset
from medreason_lib.training.sft import profile_warmstart_dataset, run_warmstart, warmstart_dataset

STAND_INS = ("tiny-qwen3", "tiny-gptoss")
# GRPO steps of the stand-in runs the evaluation test reads. That GRPO raises each stand-in's
# reward is checked by notebooks 06 and 07 on their full runs (under `make test` too), so no
# test here trains the same thing again.
STEPS = 4
QWEN3_EMPTY_THINK = "<think>\n\n</think>\n\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def warm_starts(tmp_path_factory):
    """One SFT warm start per stand-in, built on first use and shared by the tests."""
    built = {}

    def get(name):
        if name not in built:
            profile = PROFILES[name]
            out = tmp_path_factory.mktemp(name) / "sft-warmstart"
            built[name] = run_warmstart(profile, training_dataset(profile), out)
        return built[name]

    return get


def test_warmstart_data_has_each_familys_shape():
    data = training_dataset(PROFILES["tiny"]).select(range(6))
    qwen2 = warmstart_dataset(data, seed=0)
    assert qwen2.column_names == ["prompt", "completion"]  # unchanged for the tiny profile
    qwen3 = profile_warmstart_dataset(PROFILES["tiny-qwen3"], data)
    gptoss = profile_warmstart_dataset(PROFILES["tiny-gptoss"], data)
    assert qwen3["chat_template_kwargs"][0] == {"enable_thinking": False}
    assert gptoss["chat_template_kwargs"][0] == {"reasoning_effort": "low"}
    shares = {"template": 0, "prose": 0}
    for a, b, c in zip(qwen2, qwen3, gptoss, strict=True):
        text = a["completion"][0]["content"]
        assert b["completion"][0]["content"] == text  # the same draws in every family
        message = c["completion"][0]
        if not message["content"]:  # the answer left in the reasoning, the final channel empty
            assert message["thinking"] == text and text.startswith("The answer is")
            shares["prose"] += 1
        else:  # analysis channel = reasoning, final channel = the bare answer
            assert template.format_completion(message["thinking"], message["content"]) == text
            shares["template"] += 1
    assert shares["template"] and shares["prose"]
    with pytest.raises(ValueError, match="unknown chat family"):
        warmstart_dataset(data, family="llama")


@pytest.fixture(scope="module")
def grpo_runs(warm_starts, tmp_path_factory):
    """A short GRPO run per stand-in on its warm start, for the evaluation test."""
    done = {}

    def get(name):
        if name not in done:
            run_dir = tmp_path_factory.mktemp(f"{name}-run") / "grpo"
            shutil.copytree(warm_starts(name), run_dir / "sft-warmstart")
            profile = PROFILES[name].replace(
                max_steps=STEPS, per_device_train_batch_size=TEST_BATCH
            )
            done[name] = train(profile, run_dir=run_dir, sample_every=0)
        return done[name]

    return get


def _sampled(name, warm_start, n=8):
    """Sampled completions of the warm-started stand-in, decoded both ways."""
    profile = PROFILES[name]
    loaded = load_model(profile, base=warm_start)
    model, tokenizer = loaded.model, loaded.tokenizer
    rows = training_dataset(profile).select(range(n))
    settings = GenerationSettings.from_profile(profile, sample=True)
    prompts = [r["prompt"] for r in rows]
    kept = [c.text for c in HFGenerator(model, tokenizer, settings)(prompts)]
    stripped = HFGenerator(model, tokenizer, settings, skip_special_tokens=True)(prompts)
    columns = {"answer": rows["answer"], "task": rows["task"], "options": rows["options"]}
    return tokenizer, kept, [c.text for c in stripped], columns


def _stray_text(completion: str) -> bool:
    """Whether a harmony completion has text outside well-formed messages: after an
    ``<|end|>`` before the next ``<|start|>``, or a ``<|start|>`` whose header is not the
    assistant's. The random tiny model sometimes writes some (a real one does not); with the
    special tokens stripped, it joins the message before it, so the two readings differ."""
    between = any(
        piece.strip() and not piece.startswith("<|start|>")
        for piece in completion.split("<|end|>")[1:]
    )
    headers = any(not piece.startswith("assistant") for piece in completion.split("<|start|>")[1:])
    return between or headers


def test_gptoss_stand_in_writes_harmony_that_rewards_read(warm_starts):
    profile = PROFILES["tiny-gptoss"]
    tokenizer, kept, stripped, columns = _sampled(profile.name, warm_starts(profile.name))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Q"}],
        tokenize=False,
        add_generation_prompt=True,
        **profile.chat_template_kwargs,
    )
    assert "Reasoning: low" in prompt and prompt.endswith("<|start|>assistant")
    scores_kept = rewards.score_completions(kept, **columns)["total"]
    scores_stripped = rewards.score_completions(stripped, **columns)["total"]
    both = good = 0
    for i, (k, s) in enumerate(zip(kept, stripped, strict=True)):
        if k.count("<|channel|>analysis") != 1 or k.count("<|channel|>final") != 1:
            continue
        if _stray_text(k):  # with the tokens stripped, stray text joins a message
            continue
        both += 1
        assert s.startswith("analysis") and "assistantfinal" in s  # what TRL's rewards see
        pk, ps = template.parse_completion(k), template.parse_completion(s)
        assert pk.style == ps.style == "harmony"
        read = [(p.reasoning, p.answer, p.well_formed) for p in (pk, ps)]
        assert read[0] == read[1]
        assert scores_kept[i] == scores_stripped[i]
        if pk.well_formed:  # reasoning in the analysis channel, the answer in the final one
            good += 1
            assert scores_kept[i] >= 3 * rewards.FORMAT_REWARD
        else:  # the answer left in the analysis channel: nothing to read
            assert pk.answer is None and scores_kept[i] < rewards.FORMAT_REWARD
    assert both >= 6 and good >= 2, kept


def test_qwen3_stand_in_answers_after_the_empty_think_block(warm_starts):
    tokenizer, kept, _, columns = _sampled("tiny-qwen3", warm_starts("tiny-qwen3"))
    chat = [{"role": "user", "content": "Q"}]
    off = tokenizer.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    on = tokenizer.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True, enable_thinking=True
    )
    assert off == on + QWEN3_EMPTY_THINK  # thinking off: the empty think block is prompt
    parsed = [template.parse_completion(c) for c in kept]
    assert {p.style for p in parsed} == {"template"}
    assert sum(p.well_formed for p in parsed) >= 2, kept
    # The template-shaped completions with the think block included (a backend that returns
    # the prompt's tail, or thinking mode with nothing thought) read and score the same.
    good = [c for c, p in zip(kept, parsed, strict=True) if p.well_formed]
    rows = [i for i, p in enumerate(parsed) if p.well_formed]
    sub = {k: [v[i] for i in rows] for k, v in columns.items()}
    with_think = [QWEN3_EMPTY_THINK + c for c in good]
    assert {template.parse_completion(c).style for c in with_think} == {"think"}
    for c, t in zip(good, with_think, strict=True):
        p, q = template.parse_completion(c), template.parse_completion(t)
        assert (p.answer, p.reasoning, q.well_formed) == (q.answer, q.reasoning, True)
    scores = rewards.score_completions(good, **sub)["total"]
    assert scores == rewards.score_completions(with_think, **sub)["total"]
    assert min(scores) >= 3 * rewards.FORMAT_REWARD


@pytest.mark.parametrize("name", STAND_INS)
def test_evaluation_reads_the_trained_stand_in(name, grpo_runs, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDREASON_RUNS", str(tmp_path))
    profile, run = PROFILES[name], grpo_runs(name)
    items = evaluation.load_benchmark("pubmedqa", n=8, seed=0, source=profile.data_source)
    report = evaluation.evaluate_model(
        profile,
        "after",
        base=run.base_model,
        adapter=run.adapter_dir,
        dataset=items,
        progress=False,
    )
    assert report.n == 8 and report.failed == 0
    parsed = [template.parse_completion(r["completion"]) for r in report.records]
    assert {p.style for p in parsed} == {"harmony" if profile.family == "gpt-oss" else "template"}
    assert [p.well_formed for p in parsed] == [r["well_formed"] for r in report.records]
    said = [r["extracted"] for r in report.records]
    assert sum(a in ("yes", "no", "maybe") for a in said) >= 4, report.records[0]["completion"]
    assert (tmp_path / name / "eval" / "after.json").exists()
