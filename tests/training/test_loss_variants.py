"""The GRPO loss variants as named profile settings (issue 13, item 2).

Each variant must reach TRL's GRPOConfig with its own fields, and on a GPU Unsloth must not
rewrite any of them: its GRPO trainer fills in DAPO's settings when they are unset and turns
Dr. GRPO's group scaling off by itself (unsloth/models/rl.py, read from the pinned wheel), so
the course sets those fields explicitly and a CPU run clips and scales as a GPU run does.
"""

from __future__ import annotations

import pytest

from medreason_lib.settings.profiles import LOSS_VARIANTS, PROFILES
from medreason_lib.training.config import grpo_config, grpo_settings
from tools import api_drift as ad

TINY = PROFILES["tiny"]

EXPECTED = {
    "grpo": {"loss_type": "grpo", "epsilon_high": 0.2, "importance_sampling_level": "token"},
    "dapo": {"loss_type": "dapo", "epsilon_high": 0.28, "mask_truncated_completions": True},
    "dr_grpo": {"loss_type": "dr_grpo", "scale_rewards": "none"},
    "gspo": {"importance_sampling_level": "sequence", "epsilon": 3e-4, "epsilon_high": 4e-4},
}


@pytest.mark.parametrize("name", list(LOSS_VARIANTS))
def test_each_variant_reaches_grpo_config(name, tmp_path):
    config = grpo_config(TINY.with_loss_variant(name), tmp_path)
    for field, value in EXPECTED[name].items():
        assert (
            getattr(config, field) == pytest.approx(value)
            if isinstance(value, float)
            else (getattr(config, field) == value)
        ), (name, field)


def test_the_variants_differ_and_unknown_names_are_refused():
    settings = [
        repr(sorted(grpo_settings(TINY.with_loss_variant(n), ".").items())) for n in LOSS_VARIANTS
    ]
    assert len(set(settings)) == len(LOSS_VARIANTS)
    with pytest.raises(ValueError, match="unknown loss variant 'ppo'"):
        TINY.with_loss_variant("ppo")


def _unsloth_rl_source() -> str:
    pins = ad.gpu_pins()
    return ad.Source(ad.wheel_path("unsloth", pins["unsloth"])).read("unsloth/models/rl.py")


def unsloth_rewrites(settings: dict, source: str) -> dict:
    """What Unsloth's GRPO trainer would change in ``settings`` (its rules, checked to be in
    the pinned source): DAPO's epsilon_high and overlong masking when unset, and Dr. GRPO's
    group scaling switched off."""
    rules = {
        "dapo_eps": "epsilon_high = 0.28",
        "dapo_mask": "mask_truncated_completions = True",
        "dr_grpo": "scale_rewards == True or scale_rewards == 'group'",
    }
    for rule, text in rules.items():
        assert text in source, f"Unsloth's {rule} rewrite changed: recheck the variants"
    out = dict(settings)
    if out["loss_type"] == "dapo":
        if out.get("epsilon_high") is None:
            out["epsilon_high"] = 0.28
        if out.get("mask_truncated_completions") is None:
            out["mask_truncated_completions"] = True
    if out["loss_type"] == "dr_grpo" and out.get("scale_rewards") in (True, "group"):
        out["scale_rewards"] = False
    return out


@pytest.mark.parametrize("name", list(LOSS_VARIANTS))
def test_unsloth_rewrites_none_of_the_variants_settings(name):
    source = _unsloth_rl_source()
    for profile in (TINY, PROFILES["3b"]):
        settings = grpo_settings(profile.with_loss_variant(name), ".")
        assert unsloth_rewrites(settings, source) == settings


def test_the_rewrite_rules_would_change_an_implicit_setting():
    """The check above can fail: left to Unsloth, Dr. GRPO with group scaling is changed."""
    settings = grpo_settings(TINY.replace(loss_type="dr_grpo"), ".")
    assert unsloth_rewrites(settings, _unsloth_rl_source())["scale_rewards"] is False
