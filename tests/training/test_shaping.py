"""TRL's shaping rewards by name (``shaping``): TRL's own functions with the profile's
parameters, the course's correctness in the cosine reward, the profile's list checked before a
model loads and wired into GRPOTrainer's rewards and weights, and the table a notebook plots."""

from __future__ import annotations

import math

import pytest

from conftest import CapturingTrainer
from medreason_lib import training
from medreason_lib.scoring.rewards import REWARD_FUNCS
from medreason_lib.scoring.template import format_completion
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training.shaping import (
    SHAPING_REWARDS,
    plot_shaping_table,
    rewards_for_profile,
    shaping_reward,
    shaping_table,
    with_shaping_rewards,
)

TINY = PROFILES["tiny"]  # max_completion_length 48


def test_they_are_trls_own_functions_with_the_profiles_lengths():
    from trl.rewards.accuracy_rewards import _CosineScaledReward
    from trl.rewards.other_rewards import _RepetitionPenalty, _SoftOverlongPunishment

    overlong = shaping_reward("soft_overlong", TINY)
    assert isinstance(overlong.trl_fn, _SoftOverlongPunishment)
    assert (overlong.trl_fn.max_completion_len, overlong.trl_fn.soft_punish_cache) == (48, 9)
    assert isinstance(shaping_reward("repetition", TINY).trl_fn, _RepetitionPenalty)
    cosine = shaping_reward("cosine_length", TINY)
    assert isinstance(cosine.trl_fn, _CosineScaledReward) and cosine.trl_fn.max_len == 48
    assert set(SHAPING_REWARDS) == {"soft_overlong", "cosine_length", "repetition"}


def test_soft_overlong_and_repetition_by_hand():
    overlong = shaping_reward("soft_overlong", TINY)
    ids = [[1] * n for n in (10, 39, 42, 48, 60)]
    # DAPO Eq. 13 with L_max 48, L_cache 9: 0 up to 39 tokens, (39 - n) / 9 up to 48, then -1
    assert overlong(["c"] * 5, completion_ids=ids) == pytest.approx([0, 0, -1 / 3, -1, -1])
    repetition = shaping_reward("repetition", TINY)
    # 3-grams of 1 2 3 1 2 3: 4, of which 3 unique -> (1 - 3/4) * -1
    assert repetition(["a", "b"], completion_ids=[[1, 2, 3, 4], [1, 2, 3, 1, 2, 3]]) == [0.0, -0.25]
    with pytest.raises(ValueError, match="completion_ids"):
        repetition(["a"])


def test_cosine_uses_the_courses_correctness():
    cosine = shaping_reward("cosine_length", TINY)
    right, wrong = format_completion("Trial.", "yes"), format_completion("Trial.", "no")
    ids = [[1] * 4, [1] * 40, [1] * 4, [1] * 40, [1] * 4]
    scores = cosine(
        [right, right, wrong, wrong, right],
        completion_ids=ids,
        answer=["yes"] * 5,
        task="pubmedqa",
        reference=["", "", "", "", "a reference"],  # the last row is an open question
    )
    short_right, long_right, short_wrong, long_wrong, open_row = scores
    assert 1.0 >= short_right > long_right >= 0.5
    assert -1.0 <= short_wrong < long_wrong <= -0.5
    assert short_right == pytest.approx(0.5 + 0.25 * (1 + math.cos(math.pi * 4 / 48)))
    assert open_row is None  # no exact verdict for an open answer: TRL leaves it out


def test_unknown_name_is_a_clear_error_before_any_model_loads(monkeypatch, tmp_path):
    def build_trainer(*args, **kwargs):
        raise AssertionError("the trainer was built")

    monkeypatch.setattr(training, "build_trainer", build_trainer)
    profile = TINY.replace(sft_warmup_steps=0, shaping_rewards={"overlong": 1.0})
    with pytest.raises(ValueError, match=r"unknown shaping reward.*'overlong'.*soft_overlong"):
        training.train(profile, run_dir=tmp_path / "run", sample_every=0)
    with pytest.raises(ValueError, match="must be a number"):
        rewards_for_profile(TINY.replace(shaping_rewards={"repetition": "high"}))


def test_the_profiles_list_reaches_the_trainer_with_its_weights(monkeypatch, tmp_path):
    handed = {}

    def build_trainer(profile, run_dir, *, reward_funcs=None, **kwargs):
        handed.update(reward_funcs=reward_funcs, overrides=kwargs)
        return CapturingTrainer(kwargs.get("dataset")), []

    monkeypatch.setattr(training, "build_trainer", build_trainer)
    profile = TINY.replace(
        sft_warmup_steps=0, max_steps=1, shaping_rewards={"soft_overlong": 0.5, "repetition": 1}
    )
    training.train(profile, run_dir=tmp_path / "run", sample_every=0)
    names = [fn.__name__ for fn in handed["reward_funcs"]]
    assert names == [
        *(fn.__name__ for fn in REWARD_FUNCS),
        "soft_overlong_punishment_reward",
        "repetition_penalty_reward",
    ]
    assert handed["overrides"]["reward_weights"] == [1.0, 1.0, 1.0, 1.0, 0.5, 1.0]
    # weight 1 everywhere: GRPOConfig's default (equal weights), nothing passed
    funcs, overrides = with_shaping_rewards(
        TINY.replace(shaping_rewards={"repetition": 1}), REWARD_FUNCS, {}
    )
    assert len(funcs) == 5 and "reward_weights" not in overrides
    with pytest.raises(ValueError, match="4 weights for 5 rewards"):
        with_shaping_rewards(
            TINY.replace(shaping_rewards={"repetition": 1}),
            REWARD_FUNCS,
            {"reward_weights": [1, 1, 1, 1]},
        )


def test_table_shows_what_each_does_to_length_and_reward():
    table = shaping_table(TINY)
    print(table.to_string())
    assert {"tokens", "correct", "reasoning", "shaping_total", *SHAPING_REWARDS} <= set(table)
    varied = table[table.reasoning == "varied"]
    # overlong: nothing up to L_max - L_cache (39 tokens), -1 from L_max (48) on
    assert (varied[varied.tokens <= 39].soft_overlong == 0).all()
    assert (varied[varied.tokens >= 48].soft_overlong == -1).all()
    # cosine: shorter is better when right, worse when wrong
    right = varied[varied.correct].sort_values("tokens").cosine_length.tolist()
    wrong = varied[~varied.correct].sort_values("tokens").cosine_length.tolist()
    assert right == sorted(right, reverse=True) and wrong == sorted(wrong)
    assert min(right) > 0 > max(wrong)
    # repetition: ordinary text costs nothing, one phrase repeated costs more the longer it runs
    assert (varied.repetition == 0).all()
    repeated = table[(table.reasoning == "repetitive") & table.correct].sort_values("tokens")
    assert repeated.repetition.iloc[-1] < -0.7 and repeated.repetition.is_monotonic_decreasing
    fig = plot_shaping_table(table, TINY.max_completion_length)  # one panel per reward
    assert [ax.get_title() for ax in fig.axes] == list(SHAPING_REWARDS)
    assert all(len(ax.get_lines()) == 4 + 1 for ax in fig.axes)  # 4 kinds of row, the cap


def test_the_table_finds_a_real_models_tokenizer_offline(monkeypatch):
    """smol's hub id resolves to its offline build, as the models module loads it: looked up
    on the hub instead, notebook 04's section 10 stopped on the laptop track."""
    from medreason_lib import models

    asked = []
    tiny_folder = models.resolve_model_id("tiny:qwen2")

    def resolve(model_id, seed=0):
        asked.append(model_id)
        return tiny_folder

    monkeypatch.setattr(models, "resolve_model_id", resolve)
    table = shaping_table(PROFILES["smol"], lengths=[4, 8])
    assert asked == [PROFILES["smol"].model_id] and len(table) == 8
