"""Tests of medreason_lib.models.memory (the GPU memory planner: pure arithmetic) and of the memory
part of pre-flight."""

from __future__ import annotations

import json

import pytest

from medreason_lib.models import memory, tiny
from medreason_lib.models.memory import GPUS, PUBLISHED, SPECS, calibration_table, plan
from medreason_lib.settings.profiles import PROFILES

# Points that must stay required (at or above their own floor), whatever else changes.
REQUIRED = {
    ("Qwen/Qwen2.5-3B-Instruct", "qlora"),
    ("Qwen/Qwen2.5-3B-Instruct", "lora16"),
    ("meta-llama/Llama-3.1-8B-Instruct", "lora16"),
    ("Qwen/Qwen3-8B", "lora16"),
    ("Qwen/Qwen2.5-32B-Instruct", "qlora"),
    ("meta-llama/Llama-3.3-70B-Instruct", "qlora"),
    ("openai/gpt-oss-20b", "qlora"),
    ("openai/gpt-oss-20b", "grpo"),
}


@pytest.fixture
def fresh_margin():
    """Recompute the calibration margin around a test that changes a planner constant."""
    memory.margin.cache_clear()
    yield
    memory.margin.cache_clear()


def test_required_points_centre_on_zero_each_within_20_percent():
    rows = calibration_table()
    required = [r for r in rows if r["required"]]
    assert {(r["model"], r["method"]) for r in required} >= REQUIRED
    errors = [r["error_pct"] for r in required]
    assert abs(sum(errors) / len(errors)) <= 5, errors
    assert all(abs(e) <= 20 for e in errors), errors
    for r in rows:  # error_pct is the planned figure's signed error against the published one
        planned = r["published_gb"] * (1 + r["error_pct"] / 100)
        assert r["planned_gb"] == pytest.approx(planned, rel=0.002, abs=0.02)
    text = memory.format_calibration(rows)
    assert "planned" in text and f"{max(map(abs, errors)):.1f}%" in text


def test_a_point_is_required_unless_it_is_below_its_own_weights_and_adapter():
    published = {(p.model, p.method, p.gb): p for p in PUBLISHED}
    for r in calibration_table():
        p = published[(r["model"], r["method"], r["published_gb"])]
        assert r["required"] == (p.comparable and r["published_gb"] >= r["floor_gb"]), r
        plan_ = plan(p.model, p.method, **p.settings)
        assert r["floor_gb"] == pytest.approx(
            plan_.breakdown["weights"] + plan_.breakdown["lora"], abs=0.01
        )
        if not r["required"]:  # shown, not held to the margin: its note says why
            assert r["note"], r
    # the measured gpt-oss run on a T4 is a required point, planned in float32
    measured = [r for r in calibration_table() if "max_memory_reserved" in r["note"]]
    assert measured and all(r["required"] and r["settings"]["bf16"] is False for r in measured)


def test_margin_is_the_largest_required_error():
    errors = [abs(r["error_pct"]) for r in calibration_table() if r["required"]]
    assert memory.margin() == pytest.approx(max(errors) / 100)
    assert 0 < memory.margin() <= 0.2


@pytest.mark.usefixtures("fresh_margin")
def test_overhead_is_the_value_that_gives_the_smallest_margin(monkeypatch):
    fitted = memory.margin()
    for step in (-0.02, 0.02):
        monkeypatch.setattr(memory, "OVERHEAD", memory.OVERHEAD + step)
        memory.margin.cache_clear()
        assert memory.margin() >= fitted - 1e-9, step


def test_fits_keeps_the_margin():
    p = plan("8b", "grpo", vllm_standby=True)  # no vLLM split: only the total counts
    m = memory.margin()
    assert not p.fits(p.total_gb + 0.01)  # fits without the margin, not with it
    assert not p.fits(p.total_gb * (1 + m / 2))
    assert p.fits(p.total_gb * (1 + m) + 0.01)
    assert p.required_gb == pytest.approx(p.total_gb * (1 + m))
    # each side of vLLM's split keeps it too
    q = plan("3b", "grpo")
    need, share, train, rest = q.vllm_split(40.0)
    assert share >= need and rest >= train
    gpu = (train + 0.01) / (1 - q.settings["gpu_memory_utilization"])  # training side: bare fit
    assert q.vllm_split(gpu)[3] >= train and not q.fits(gpu)


def test_published_points_record_their_settings_and_source():
    for p in PUBLISHED:
        assert p.model in SPECS and p.method in memory.METHODS
        # a published figure cites its page; the course's own measurement names its script
        assert p.source.startswith(("https://", "benchmarks/gpu_smoke.py")) and p.gb > 0
        assert set(p.settings) <= set(memory.SETTINGS)


@pytest.mark.parametrize("name", [n for n in SPECS if n != "tiny"])
def test_architecture_data_gives_the_published_parameter_count(name):
    spec = SPECS[name]
    assert spec.total_params / 1e9 == pytest.approx(spec.published_params_b, rel=0.02)
    assert spec.hidden * 4 >= spec.heads * spec.head_dim  # a sanity check on the transcription


def test_gpt_oss_is_a_mixture_of_experts_with_a_small_active_part():
    spec = SPECS["openai/gpt-oss-20b"]
    assert (spec.experts, spec.experts_per_token) == (32, 4)
    assert spec.active_params / 1e9 == pytest.approx(spec.published_active_b, rel=0.02)
    # LoRA on attention only: Unsloth's notebook reports 3,981,312 trainable parameters at r=8
    assert spec.lora_params(8) == 3_981_312


def test_tiny_spec_mirrors_the_tiny_model():
    spec, c = SPECS["tiny"], tiny.TINY_CONFIG
    assert (spec.hidden, spec.intermediate, spec.layers) == (
        c["hidden_size"],
        c["intermediate_size"],
        c["num_hidden_layers"],
    )
    assert (spec.heads, spec.kv_heads, spec.vocab) == (
        c["num_attention_heads"],
        c["num_key_value_heads"],
        tiny.VOCAB_SIZE,
    )
    assert spec.head_dim == c["hidden_size"] // c["num_attention_heads"]
    assert spec.tied_embeddings == c["tie_word_embeddings"]


@pytest.mark.parametrize("name", list(PROFILES))
@pytest.mark.parametrize("method", list(memory.METHODS))
def test_breakdown_sums_to_total(name, method):
    p = plan(name, method)
    assert set(p.breakdown) == {"weights", "lora", "activations", "kv_cache", "logits", "runtime"}
    assert sum(p.breakdown.values()) == pytest.approx(p.total_gb)
    assert all(v >= 0 for v in p.breakdown.values())
    assert (p.breakdown["kv_cache"] > 0) == (method == "grpo")


@pytest.mark.parametrize("name", ["3b", "8b", "20b"])
def test_grpo_needs_more_than_qlora_and_16_bit_more_than_4_bit(name):
    grpo, qlora, lora16 = (plan(name, m).total_gb for m in ("grpo", "qlora", "lora16"))
    assert grpo > qlora
    assert lora16 > qlora


def test_more_generations_or_longer_completions_need_more_memory():
    totals = [plan("8b", "grpo", num_generations=g).total_gb for g in (2, 4, 8, 16, 32)]
    assert totals == sorted(totals) and totals[-1] > totals[2]  # G 16 > the batch of 8
    totals = [plan("8b", "grpo", max_completion_length=n).total_gb for n in (128, 512, 2048)]
    assert totals[0] < totals[1] < totals[2]
    assert plan("3b", "grpo", lora_rank=128).total_gb > plan("3b", "grpo").total_gb
    assert plan("3b", "qlora", batch_size=16).total_gb > plan("3b", "qlora").total_gb


def test_batch_is_rounded_up_to_a_multiple_of_num_generations():
    a = plan("8b", "grpo", per_device_train_batch_size=6, num_generations=4)
    b = plan("8b", "grpo", per_device_train_batch_size=8, num_generations=4)
    assert a.breakdown == b.breakdown


def test_fits_and_advice_for_8b_grpo_on_a_t4():
    p = plan("8b", "grpo", gpu="T4")
    assert p.gpu_gb == GPUS["T4"].memory_gb == 15.0
    assert p.fits() == (p.fits(15.0) and p.required_gb <= 15.0)
    assert p.advice[0].startswith("num_generations")
    assert p.advice[1].startswith("max_completion_length")
    assert any(a.startswith("gpu_memory_utilization") for a in p.advice)
    assert p.fits(80) and not p.fits(8)
    first = plan("8b", "grpo", gpu="T4", num_generations=4, per_device_train_batch_size=4)
    assert first.total_gb < p.total_gb
    assert "T4 has no bf16" in str(p)
    assert plan("8b", "grpo", gpu="H100").fits()


def test_vllm_split_the_training_share_must_hold_the_training_tensors():
    # 3b on a T4: the total fits, but with 95% of the GPU given to vLLM training has 0.75 GB.
    p = plan("3b", "grpo", gpu="T4", gpu_memory_utilization=0.95)
    assert p.total_gb < 15 and not p.fits()
    assert any("does not fit" in n for n in p.notes)
    assert plan("3b", "grpo", gpu="T4", gpu_memory_utilization=0.95, vllm_standby=True).fits()
    assert plan("20b", "grpo").vllm_split(15.0) is None  # gpt-oss RL runs without vLLM


def test_advice_for_sft_and_for_a_model_too_big_for_the_gpu():
    p = plan("Llama-3.3-70B-Instruct", "lora16", gpu="A100-80GB")
    assert not p.fits() and p.headroom_gb < 0
    assert p.advice[0].startswith("per_device_train_batch_size")
    assert any("4-bit" in a for a in p.advice)
    assert "smaller model" in p.advice[-1]


def test_profile_name_and_model_ids_give_the_same_plan():
    for name in ("3b", "8b", "20b", "tiny"):
        by_name = plan(name, "grpo", gpu="L4")
        by_id = plan(PROFILES[name].model_id, "grpo", gpu="L4")
        assert by_id.to_dict() == by_name.to_dict()
    ids = ["Qwen/Qwen2.5-3B-Instruct", "unsloth/Qwen2.5-3B-Instruct-bnb-4bit"]
    assert all(plan(i, "qlora").to_dict() == plan("3b", "qlora").to_dict() for i in ids)
    assert plan("openai/gpt-oss-20b", "grpo").total_gb == plan("20b", "grpo").total_gb
    assert plan("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit", "qlora").model == (
        "meta-llama/Llama-3.1-8B-Instruct"
    )


def test_unknown_names_raise_value_error_listing_valid_ones():
    with pytest.raises(ValueError, match="3b.*openai/gpt-oss-20b"):
        plan("llama-2-7b", "qlora")
    with pytest.raises(ValueError, match="qlora, lora16, grpo"):
        plan("3b", "full")
    with pytest.raises(ValueError, match="T4.*H200"):
        plan("3b", "grpo", gpu="V100")
    with pytest.raises(TypeError, match="num_generations"):
        plan("3b", "grpo", generations=4)
    with pytest.raises(ValueError, match="needs a GPU size"):
        plan("3b", "grpo").fits()


def test_gpu_as_a_number_and_the_readable_outputs():
    p = plan("20b", "grpo", gpu=40)
    assert p.gpu == "40 GB" and p.fits() and p.headroom_gb == pytest.approx(40 - p.total_gb)
    assert p.settings["bf16"] is True  # a GPU given in GB is assumed to have bf16
    d = json.loads(json.dumps(p.to_dict()))
    assert d["fits"] is True and d["total_gb"] == pytest.approx(p.total_gb)
    assert d["required_gb"] == pytest.approx(p.required_gb) and d["margin"] == memory.margin()
    assert d["impractical"] == [] and d["settings"]["bf16"] is True
    assert d["settings"]["offload_embedding"] is True  # as medreason_lib.models loads gpt-oss
    text = p.table()
    assert text == str(p) and "total" in text and "weights" in text and "40 GB" in text
    assert "margin" in text
    assert plan("3b", "qlora").headroom_gb is None
    assert all(g.bf16 for n, g in GPUS.items() if n != "T4") and not GPUS["T4"].bf16


def test_offloads_lower_the_plan():
    base = plan("20b", "grpo", offload_embedding=False).breakdown["weights"]
    assert plan("20b", "grpo").breakdown["weights"] < base - 1.0  # 201K x 2880 x 2 bytes
    on_gpu = plan("8b", "grpo", offload_activations=False).breakdown["activations"]
    assert on_gpu > plan("8b", "grpo").breakdown["activations"]


def test_gpt_oss_without_bf16_trains_in_float32():
    t4, l4 = plan("20b", "grpo", gpu="T4"), plan("20b", "grpo", gpu="L4")
    assert (t4.settings["bf16"], l4.settings["bf16"]) == (False, True)
    assert t4.breakdown["activations"] == pytest.approx(2 * l4.breakdown["activations"])
    assert t4.breakdown["weights"] == l4.breakdown["weights"]
    assert "float32" in str(t4) and "float32" not in str(l4)
    # the same without naming a GPU, and overriding the catalogue's flag
    assert plan("20b", "grpo", bf16=False).breakdown == t4.breakdown
    assert plan("20b", "grpo", gpu="T4", bf16=True).breakdown == l4.breakdown
    # dense models train in fp16 on a T4: the same bytes as bf16
    assert plan("8b", "grpo", gpu="T4").breakdown == plan("8b", "grpo", gpu="L4").breakdown


def test_gpt_oss_grpo_without_bf16_is_impractical_and_says_why():
    for p in (plan("20b", "grpo", gpu="T4"), plan("20b", "grpo", gpu=32, bf16=False)):
        assert p.impractical and "minutes" in p.impractical[0]
        assert "bf16" in p.impractical[0] and "IMPRACTICAL" in str(p)
    assert plan("20b", "grpo", gpu="T4").fits() is False  # nor does it fit a T4
    assert not plan("20b", "grpo", gpu="L4").impractical
    assert not plan("20b", "qlora", gpu="T4").impractical  # SFT does not generate
    assert not plan("3b", "grpo", gpu="T4").impractical
    assert plan("20b", "grpo", gpu=32, bf16=False).fits()  # it fits: slowness is the reason


@pytest.mark.parametrize("name", ["3b", "8b", "20b"])
def test_smallest_gpu_is_the_first_that_fits_and_is_practical(name):
    profile = PROFILES[name]
    label = memory.smallest_gpu(profile)
    first = label.split(" ")[0]
    assert first in GPUS and memory.plan_for_profile(profile, gpu=first).fits()
    assert not memory.plan_for_profile(profile, gpu=first).impractical
    for g in GPUS.values():
        if g.memory_gb < GPUS[first].memory_gb:
            p = memory.plan_for_profile(profile, gpu=g.name)
            assert not p.fits() or (p.impractical and g.name in label)


def test_smallest_gpu_names_a_gpu_it_fits_but_should_not_use(monkeypatch):
    # a 20 GB card without bf16 holds the 20b plan, but gpt-oss would train there in float32
    small = PROFILES["20b"].replace(
        max_prompt_length=128, max_completion_length=128, max_seq_length=256,
        num_generations=4, per_device_train_batch_size=4, lora_rank=4,
    )  # fmt: skip
    card = memory.GPU("no-bf16-20GB", 20.0, 20, False)
    monkeypatch.setitem(GPUS, card.name, card)
    assert memory.plan_for_profile(small, gpu=card.name).fits()
    assert memory.smallest_gpu(small) == "L4 (no-bf16-20GB: too slow)"
    huge = PROFILES["8b"].replace(num_generations=512, per_device_train_batch_size=512)
    assert memory.smallest_gpu(huge) == "none listed"


def _one_row():
    from datasets import Dataset

    prompt = [{"role": "user", "content": "Is aspirin an NSAID?"}]
    return Dataset.from_dict({"prompt": [prompt], "answer": ["yes"], "task": ["pubmedqa"]})


def test_preflight_refuses_a_gpu_the_plan_fits_only_without_the_margin(capsys):
    from medreason_lib.training.config import ConfigError, preflight

    profile = PROFILES["8b"].replace(use_vllm=False)  # no vLLM split: the total decides
    planned = memory.plan_for_profile(profile, gpu=40.0, bf16=True)
    bare = planned.total_gb + 0.05  # the plan fits, the margin does not
    assert planned.vllm_split(bare) is None and not planned.fits(bare)
    with pytest.raises(ConfigError, match="margin") as err:
        preflight(profile, _one_row(), gpu_gb=bare, bf16=True)
    assert f"{planned.required_gb:.1f} GB" in str(err.value)
    preflight(profile, _one_row(), gpu_gb=planned.required_gb * 1.7, bf16=True)  # plenty
    assert "WARNING" not in capsys.readouterr().out


def test_preflight_warns_when_gpt_oss_grpo_runs_without_bf16(capsys):
    from medreason_lib.training.config import ConfigError, preflight

    profile = PROFILES["20b"]
    roomy = memory.plan_for_profile(profile, gpu=80.0, bf16=False).required_gb + 1
    with pytest.warns(UserWarning, match="impractical.*minutes"):
        preflight(profile, _one_row(), gpu_gb=roomy, bf16=False)
    out = capsys.readouterr().out
    assert "WARNING" in out and "bf16" in out and "'3b'" in out
    with pytest.raises(ConfigError, match="Besides: .*minutes"):  # a T4: neither fits nor fast
        preflight(profile, _one_row(), gpu_gb=GPUS["T4"].memory_gb, bf16=False)
    preflight(profile, _one_row(), gpu_gb=roomy, bf16=True)  # with bf16: no warning
    assert "WARNING" not in capsys.readouterr().out


def test_the_course_gpu_measurements_are_required_and_within_the_margin():
    """benchmarks/gpu_smoke.py's H100 peaks (random weights, 2026-11-27) are calibration
    points held to the same ±20% as the published figures."""
    measured = [r for r in memory.calibration_table() if "gpu_smoke" in r["source"]]
    assert {r["model"] for r in measured} == {"Qwen/Qwen2.5-3B-Instruct", "Qwen/Qwen3-8B"}
    for row in measured:
        assert row["required"] and abs(row["error_pct"]) <= 20
        assert row["settings"]["use_vllm"] is False  # the smoke generates without vLLM
