"""Sampled evaluation in the harness (issue 25 part 1): k completions per item as a setting of
the same ``evaluate``, on the tiny profile and with fakes (nothing downloaded).

- the settings: ``samples`` needs a temperature, and one sample hashes as before;
- transformers: k seeded samples per item from one ``generate`` call (the tiny model);
- a plain callable: each prompt k times; the report's avg@k, maj@k and pass@k equal
  ``sampled_stats`` on the recorded samples and values computed by hand; resume, save/load,
  greedy beside it (and refused when it is not the same items);
- vLLM: one request per prompt with ``SamplingParams(n=k)`` (the rehearsal stand-in's class,
  which keeps vLLM's rule that n > 1 needs sampling) and its k outputs read back;
- the command line: ``eval --samples K`` writes the report, bad values are one line.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from types import SimpleNamespace

import pytest

from conftest import run_cli
from medreason_lib import evaluation
from medreason_lib.data import load_task
from medreason_lib.evaluation import (
    EvalSettings,
    IncomparableReports,
    SamplingSettingsError,
    eval_plots,
)
from medreason_lib.evaluation.generation import (
    GenerationSettings,
    hf_generate_kwargs,
    scripted_generator,
)
from medreason_lib.evaluation.generation_vllm import VLLMGenerator, vllm_sampling_kwargs
from medreason_lib.evaluation.records import read_records
from medreason_lib.evaluation.reports import digest
from medreason_lib.evaluation.sampled_report import SampledReport
from medreason_lib.models import load_model
from medreason_lib.scoring import template
from medreason_lib.scoring.sampled_stats import avg_at_k, maj_at_k, pass_at_k_score
from medreason_lib.settings.paths import repo_root
from medreason_lib.settings.profiles import PROFILES

TINY = PROFILES["tiny"]
K = 4
SAMPLED = EvalSettings.from_profile(TINY, samples=K)
CYCLE = ("yes", "no", "yes", "maybe")  # sample j of every item answers CYCLE[j]


@pytest.fixture(scope="module")
def tiny():
    """The tiny profile's model and tokenizer, loaded once for this module."""
    with load_model(TINY) as loaded:
        yield loaded.model, loaded.tokenizer


@pytest.fixture(scope="module")
def items():
    return load_task("pubmedqa", "test", n=8, seed=0, source="bundled", verbose=False)


def cycling(prompts):
    """A plain sampler: asked each prompt K times in a row, the j-th time it says CYCLE[j]."""
    return [template.format_completion("r", CYCLE[i % K]) for i in range(len(prompts))]


# --------------------------------------------------------------------------- settings


def test_samples_need_a_temperature_and_one_sample_hashes_as_before():
    with pytest.raises(ValueError, match="samples=4 at temperature 0"):
        GenerationSettings(samples=4)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="samples must be a whole number"):
            GenerationSettings(temperature=1.0, samples=bad)
    assert SAMPLED.generation.samples == K and SAMPLED.generation.temperature == TINY.temperature
    greedy = EvalSettings.from_profile(TINY)
    before = greedy.to_dict()
    del before["generation"]["samples"]  # records made before the setting existed resume
    assert greedy.digest() == digest(before) and SAMPLED.digest() != greedy.digest()
    assert hf_generate_kwargs(SAMPLED.generation, 0)["num_return_sequences"] == K
    assert "num_return_sequences" not in hf_generate_kwargs(greedy.generation, 0)
    assert vllm_sampling_kwargs(SAMPLED.generation, skip_special_tokens=True)["n"] == K
    cold = TINY.replace(temperature=0.0)  # a profile that never samples its rollouts
    with pytest.raises(SamplingSettingsError, match="--temperature"):
        evaluation.sampled_settings(cold, K)
    chosen = evaluation.sampled_settings(cold, K, temperature=0.7, top_p=0.9).generation
    assert (chosen.samples, chosen.temperature, chosen.top_p) == (K, 0.7, 0.9)


# --------------------------------------------------------------------------- transformers


def test_the_tiny_model_gives_k_seeded_samples_per_item(items, tiny):
    settings = EvalSettings(generation=GenerationSettings(max_new_tokens=6, temperature=1.0,
                                                          samples=3))  # fmt: skip
    rows = items.select(range(4))
    first = evaluation.evaluate(tiny, rows, settings=settings, profile=TINY, progress=False)
    again = evaluation.evaluate(tiny, rows, settings=settings, profile=TINY, progress=False)
    assert isinstance(first, SampledReport) and first.backend == "hf" and first.k == 3
    texts = [[s["completion"] for s in r["samples"]] for r in first.records]
    assert all(len(t) == 3 for t in texts) and len(first.records) == 4
    assert any(len(set(t)) > 1 for t in texts)  # sampled, not one answer copied k times
    assert texts == [[s["completion"] for s in r["samples"]] for r in again.records]  # seeded
    assert all(s["n_tokens"] <= 6 for r in first.records for s in r["samples"])


# --------------------------------------------------------------------------- the report


def test_the_report_is_sampled_stats_of_its_records_and_the_hand_computed_values(items, tmp_path):
    calls = []

    def sampler(prompts):
        calls.append(len(prompts))
        return cycling(prompts)

    report = evaluation.evaluate(sampler, items, settings=SAMPLED, profile=TINY, name="s",
                                 out_dir=tmp_path, progress=False)  # fmt: skip
    assert calls and all(n % K == 0 for n in calls)  # each prompt asked K times in one call
    records = list(read_records(tmp_path / "s.jsonl").values())
    assert [s["extracted"] for s in records[0]["samples"]] == list(CYCLE)
    correct = [[s["correct"] for s in r["samples"]] for r in records]
    answers = [[s["extracted"] for s in r["samples"]] for r in records]
    saved = json.loads((tmp_path / "s.json").read_text())["overall"]
    assert saved["avg"]["value"] == pytest.approx(avg_at_k(correct).value)
    assert saved["avg"]["ci95"] == pytest.approx(list(avg_at_k(correct).ci95))
    assert saved["maj"]["value"] == maj_at_k(answers, [r["gold"] for r in records]).value
    assert saved["pass_k"]["value"] == pytest.approx(pass_at_k_score(correct, K).value)
    # by hand: "yes" is right in 2 of the 4 samples, "no" and "maybe" in 1; the majority
    # answer is always "yes"; every gold answer is among the 4 samples
    golds = [r["answer"] for r in items]
    share = {"yes": 2 / 4, "no": 1 / 4, "maybe": 1 / 4}
    assert report.overall.avg.value == pytest.approx(sum(share[g] for g in golds) / len(golds))
    assert report.overall.maj.value == golds.count("yes") / len(golds)
    assert report.overall.pass_k.value == 1.0
    pass_2 = {"yes": 1 - 1 / 6, "no": 1 - 3 / 6, "maybe": 1 - 3 / 6}  # 1 - C(4-c,2)/C(4,2)
    expected = sum(pass_2[g] for g in golds) / len(golds)
    assert report.pass_at(2).value == pytest.approx(expected)

    mixed = sum(0 < sum(row) < K for row in correct) / len(correct)
    assert report.signal_share() == mixed
    fig = eval_plots.plot_pass_at(report)  # one line per task, "all", two guessing curves
    assert len(fig.axes[0].lines) == len(report.by_task) + 1 + 2

    calls.clear()  # resuming costs nothing, and the saved report reads back the same
    again = evaluation.evaluate(sampler, items, settings=SAMPLED, profile=TINY, name="s",
                                out_dir=tmp_path, resume=True, progress=False)  # fmt: skip
    assert not calls and again.overall == report.overall
    assert SampledReport.load(tmp_path / "s.json").overall == report.overall


def test_greedy_stands_beside_the_samples_only_on_the_same_items(items):
    sampled = evaluation.evaluate(cycling, items, settings=SAMPLED, profile=TINY, progress=False)
    greedy_settings = EvalSettings.from_profile(TINY)
    greedy = evaluation.evaluate(scripted_generator("yes"), items, settings=greedy_settings,
                                 profile=TINY, progress=False)  # fmt: skip
    sampled.with_greedy(greedy)
    assert sampled.greedy["by_task"]["all"]["accuracy"] == greedy.accuracy
    text = sampled.summary()
    assert f"temperature {TINY.temperature}, top_p {TINY.top_p}" in text and "seed 0" in text
    assert f"maj@{K}" in text and f"pass@{K}" in text and "NOT an accuracy" in text
    assert "HuatuoGPT-o1's own evaluator" in text
    fewer = evaluation.evaluate(scripted_generator("yes"), items.select(range(3)),
                                settings=greedy_settings, profile=TINY, progress=False)  # fmt: skip
    with pytest.raises(IncomparableReports, match="the items differ"):
        sampled.with_greedy(fewer)
    with pytest.raises(IncomparableReports, match="not greedy"):
        sampled.with_greedy(SimpleNamespace(**vars(greedy) | {"settings": SAMPLED}))


# --------------------------------------------------------------------------- vLLM


def _standin(name: str):
    """A module of the rehearsal's vLLM stand-in, read from its file (vLLM is not installed)."""
    path = repo_root() / "tools" / "rehearsal" / "standins" / "vllm" / "vllm" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"standin_vllm_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_vllm_path_asks_n_k_in_one_request(items, tiny, monkeypatch):
    params, outputs = _standin("sampling_params"), _standin("outputs")
    monkeypatch.setattr("medreason_lib.models.vllm_sampling_params", params.SamplingParams)
    with pytest.raises(ValueError, match="n must be 1 when using greedy sampling"):
        params.SamplingParams(n=2, temperature=0.0)  # what vLLM 0.33 says (contracts.py)
    asked = []

    def generate(texts, sampling_params=None, use_tqdm=True, lora_request=None):
        """vLLM's ``LLM.generate``: one RequestOutput per prompt, n CompletionOutputs each."""
        asked.append((len(texts), sampling_params))
        said = [template.format_completion("r", a) for a in CYCLE[: sampling_params.n]]
        done = [outputs.CompletionOutput(j, c, [1, 2], finish_reason="stop") for j, c in
                enumerate(said)]  # fmt: skip
        return [outputs.RequestOutput(str(i), t, [1], done) for i, t in enumerate(texts)]

    tokenizer = tiny[1]
    gen = VLLMGenerator(generate, tokenizer, SAMPLED.generation, backend="vllm")
    report = evaluation.evaluate(gen, items, settings=SAMPLED, profile=TINY, progress=False)
    assert [n for n, _ in asked] == [len(items)]  # one call, one request per prompt
    sent = asked[0][1]
    assert (sent.n, sent.temperature, sent.seed) == (K, TINY.temperature, TINY.seed)
    assert report.backend == "vllm" and report.k == K
    assert [s["extracted"] for s in report.records[0]["samples"]] == list(CYCLE)
    assert all(s["n_tokens"] == 2 and s["truncated"] is False for s in report.records[0]["samples"])

    def ignores_n(texts, sampling_params=None, use_tqdm=True, lora_request=None):
        one = dataclasses.replace(sampling_params, n=1)
        return generate(texts, sampling_params=one)

    deaf = VLLMGenerator(ignores_n, tokenizer, SAMPLED.generation, backend="vllm")
    with pytest.raises(ValueError, match="not k"):  # an engine that dropped n is caught
        deaf([[{"role": "user", "content": "Is it?"}]])


# --------------------------------------------------------------------------- command line


def test_eval_samples_writes_greedy_and_sampled_side_by_side(tmp_path):
    env = {"MEDREASON_RUNS": str(tmp_path), "HF_HUB_OFFLINE": "1", "MEDREASON_PROFILE": None}
    args = ("eval", "--profile", "tiny", "--baseline", "--n", "1", "--quiet")
    done = run_cli(*args, "--samples", "2", "--temperature", "0.7", "--top-p", "0.9", env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    path = tmp_path / "tiny" / "eval" / "baseline-n1-k2-t0.7.json"
    assert f"report: {path}" in done.stdout
    report = json.loads(path.read_text())
    generation = report["settings"]["generation"]
    assert {k: generation[k] for k in ("samples", "temperature", "top_p", "seed")} == {
        "samples": 2, "temperature": 0.7, "top_p": 0.9, "seed": TINY.seed,
    }  # fmt: skip
    assert generation["max_new_tokens"] == TINY.max_completion_length
    assert report["greedy"]["name"] == "baseline-n1" and len(report["ids"]) == 5
    assert report["greedy"]["settings"]["generation"]["temperature"] == 0.0
    assert {"avg", "maj", "pass_k"} <= set(report["overall"])
    assert (tmp_path / "tiny" / "eval" / "baseline-n1.json").exists()  # the greedy report too
    for bad, message in {
        ("--samples", "1"): "--samples must be at least 2",
        ("--samples", "2", "--temperature", "0"): "--temperature must be above 0",
        ("--samples", "2", "--top-p", "1.5"): "--top-p must be in (0, 1]",
        ("--temperature", "0.7"): "are for --samples K",
        ("--samples", "2", "--method", "loglik"): "--samples is for --method generate",
    }.items():
        done = run_cli(*args, *bad, env=env)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, bad
        assert message in done.stderr, (bad, done.stderr)
