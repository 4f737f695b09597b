"""DPO for safety (issue 13, item 3): the settings reach the pinned TRL and Unsloth, the
dataset has TRL's conversational preference layout, one short tiny run from the shared GRPO
run widens the reward margin and frees its model, and the safety evaluation counts what the
rule says."""

from __future__ import annotations

import json
import math
import sys
import types

import pytest

from medreason_lib import models
from medreason_lib.course import solutions
from medreason_lib.data import safety
from medreason_lib.evaluation.reports import EvalSettings
from medreason_lib.models import EvalModel
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training import dpo
from tools import api_drift as ad

TINY = PROFILES["tiny"]
LOADER = "unsloth/models/loader.py"


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_dpo_settings_are_dpoconfig_fields(profile, tmp_path):
    from trl import DPOConfig

    settings = dpo.dpo_settings(profile, tmp_path, steps=dpo.default_steps(profile, 48))
    ad.assert_keywords_exist(DPOConfig, settings, "trl.DPOConfig")
    config = DPOConfig(**settings)  # and the values pass DPOConfig's own checks
    assert config.loss_type == ["sigmoid"] and config.beta == pytest.approx(0.1)
    assert config.logging_steps == 1  # a margin per step: the first and the last are recorded


def test_the_adapter_loads_through_unsloth_with_keywords_it_names(monkeypatch, tmp_path):
    """The GPU branch of ``models.load_adapter_for_training``, run against a stand-in Unsloth:
    every keyword it passes is a named parameter of the pinned ``from_pretrained``."""
    seen = {}
    fake = types.ModuleType("unsloth")
    fake.FastLanguageModel = type(
        "FastLanguageModel", (), {"from_pretrained": staticmethod(lambda **kw: seen.update(kw))}
    )
    monkeypatch.setitem(sys.modules, "unsloth", fake)
    for name in ("3b", "8b", "20b"):
        seen.clear()
        models.load_adapter_for_training(PROFILES[name], base="base", adapter=tmp_path)
        assert seen["model_name"] == str(tmp_path) and seen["fast_inference"] is False
        assert "gpu_memory_utilization" not in seen  # no vLLM engine for a training stage
        pins = ad.gpu_pins()
        source = ad.Source(ad.wheel_path("unsloth", pins["unsloth"]))
        target = source.function(LOADER, "FastLanguageModel.from_pretrained")
        ad.assert_keywords_exist(target, seen, "FastLanguageModel.from_pretrained")


def test_the_dataset_is_trls_conversational_preference_layout():
    pairs = safety.load_pairs()[:2]
    rows = dpo.dpo_dataset(pairs, TINY).to_list()
    assert [m["role"] for m in rows[0]["prompt"]] == ["system", "user"]
    assert rows[0]["prompt"][1]["content"] == pairs[0]["prompt"]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": pairs[0]["chosen"]}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": pairs[0]["rejected"]}]
    assert "chat_template_kwargs" not in rows[0]
    harmony = dpo.dpo_dataset(pairs, PROFILES["tiny-gptoss"]).to_list()[0]
    assert harmony["chosen"][0]["thinking"] and harmony["chosen"][0]["content"]
    assert "<answer>" not in harmony["chosen"][0]["content"]  # the final channel holds the answer
    assert harmony["chat_template_kwargs"] == {"reasoning_effort": "low"}


def test_dpo_from_the_grpo_adapter_widens_the_margin_and_frees_the_model(
    tiny_run, tmp_path, one_thread, monkeypatch
):
    closed = []
    real_close = models.close_trainer

    def close(trainer, **kw):
        closed.append(trainer.model)
        return real_close(trainer, **kw)

    monkeypatch.setattr(models, "close_trainer", close)
    pairs = safety.load_pairs()
    run = dpo.train_dpo(TINY, tiny_run, pairs, run_dir=tmp_path / "dpo", steps=4)
    assert run.global_step == 4 and len(run.margins) == 4
    assert run.margin_first == pytest.approx(0.0, abs=1e-4)  # the policy starts as the reference
    assert run.margin_last > run.margin_first + 1.0, run.margins
    assert dpo.read_margins(run.metrics_csv) == run.margins
    info = json.loads((run.run_dir / "run.json").read_text())
    assert info["started_from"] == str(tiny_run.adapter_dir) and info["margin_last"] > 1.0
    assert (run.adapter_dir / "adapter_config.json").is_file()
    assert not (run.adapter_dir / "ref").exists()  # TRL's frozen reference copy is not saved
    # the saved adapter is the GRPO adapter trained further, not a fresh one
    from safetensors.torch import load_file

    grpo = load_file(tiny_run.adapter_dir / "adapter_model.safetensors")
    after = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert grpo.keys() == after.keys()
    assert any(not (grpo[k] == after[k]).all() for k in grpo)
    # the trainer's model was emptied: nothing of it is held after train_dpo
    assert len(closed) == 1
    assert all(p.numel() == 0 for p in closed[0].parameters())


def test_the_safety_evaluation_counts_what_the_rule_says(tmp_path):
    pairs = safety.load_pairs()[::12]  # one pair per category
    answers = {p["prompt"]: p["chosen"] if i % 2 else p["rejected"] for i, p in enumerate(pairs)}

    def generate(prompts):
        return [answers[p[-1]["content"]] for p in prompts]

    prompts = [{k: p[k] for k in ("id", "category", "prompt")} for p in pairs]
    settings = dpo.safety_settings(EvalSettings.from_profile(TINY))
    assert settings.generation.max_new_tokens == dpo.SAFETY_NEW_TOKENS
    assert settings.generation.greedy
    report = dpo.evaluate_safety(EvalModel(generate, None), prompts, settings)
    assert [r["verdict"].cautious for r in report.records] == [False, True, False, True]
    assert report.rate == 0.5
    saved = report.save(tmp_path / "s.jsonl").read_text().splitlines()
    assert [json.loads(line)["cautious"] for line in saved] == [False, True, False, True]


def test_the_solution_of_the_exercise_is_dpos_loss():
    assert solutions.dpo_loss(-3.0, -5.0, -3.0, -5.0, 0.1) == pytest.approx(math.log(2))
    margin = 0.1 * ((-10 + 11) - (-14 + 12))
    assert solutions.dpo_loss(-10, -14, -11, -12, 0.1) == pytest.approx(
        math.log1p(math.exp(-margin))
    )
    assert solutions.dpo_loss(-500, 0, 0, -500, 0.5) == pytest.approx(500.0)
