"""Q3X1's QLoRA settings as a named profile setting (issue 13, item 5), planned by the memory
planner."""

from __future__ import annotations

import pytest

from medreason_lib.models import memory, unsloth_peft_kwargs
from medreason_lib.settings.profiles import PROFILES, SFT_SETTINGS


def test_q3x1_is_qlora_rank_128_alpha_256_on_qwen3_8b():
    q3x1 = PROFILES["8b"].with_sft_setting("q3x1")
    assert (q3x1.lora_rank, q3x1.lora_alpha, q3x1.load_in_4bit) == (128, 256, True)
    assert q3x1.model_id == PROFILES["8b"].model_id  # Qwen3-8B; nothing else changed
    assert (
        q3x1.replace(**{k: getattr(PROFILES["8b"], k) for k in SFT_SETTINGS["q3x1"]})
        == (PROFILES["8b"])
    )
    kwargs = unsloth_peft_kwargs(q3x1)  # what the GPU SFT hands to get_peft_model
    assert (kwargs["r"], kwargs["lora_alpha"]) == (128, 256)
    with pytest.raises(ValueError, match="unknown SFT setting 'q3x2'; valid: q3x1"):
        PROFILES["8b"].with_sft_setting("q3x2")


def test_the_memory_planner_plans_q3x1_and_grows_with_the_rank():
    q3x1 = PROFILES["8b"].with_sft_setting("q3x1")
    plan = memory.plan_for_profile(q3x1, "qlora")
    assert plan.method == "qlora" and plan.settings["lora_rank"] == 128
    assert "rank 128" in plan.table()
    by_rank = {
        r: memory.plan_for_profile(q3x1.replace(lora_rank=r, lora_alpha=2 * r), "qlora")
        for r in (16, 32, 64, 128)
    }
    lora = [by_rank[r].breakdown["lora"] for r in (16, 32, 64, 128)]
    total = [by_rank[r].total_gb for r in (16, 32, 64, 128)]
    assert lora == sorted(lora) and len(set(lora)) == 4
    assert total == sorted(total) and total[-1] > total[0]
    assert by_rank[128].breakdown["lora"] == pytest.approx(plan.breakdown["lora"])
    # rank 128 holds 8x the adapter of rank 16 (same targets, same optimiser)
    assert lora[-1] == pytest.approx(8 * lora[0], rel=1e-6)
