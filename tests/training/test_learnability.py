"""A GRPO run that cannot learn stops after its first step and says why (issue 23): the
untrained tiny model never writes the template, so every reward is 0 in every group."""

from __future__ import annotations

import json

import pytest

from medreason_lib import training
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training.learnability import Unlearnable, UnlearnableStop, unlearnable_message

UNTRAINED = PROFILES["tiny"].replace(
    sft_warmup_steps=0, max_steps=3, train_size=8, per_device_train_batch_size=8, save_steps=3
)


def test_no_template_and_no_reward_spread_stops_the_run_at_step_one(tmp_path):
    with pytest.raises(Unlearnable, match="GRPO cannot learn here: at step 1") as caught:
        training.train(UNTRAINED, run_dir=tmp_path, sample_every=0, if_unlearnable="stop")
    assert "sft-warmup-steps" in str(caught.value)
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "run.json").exists()
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2  # the header and step 1: the run spent one step, not three


def test_on_tiny_it_warns_trains_on_and_records_the_finding(tmp_path):
    """The tiny models train for the mechanics (a step costs a second): a warning there."""
    with pytest.warns(UserWarning, match="GRPO cannot learn here"):
        run = training.train(UNTRAINED, run_dir=tmp_path, sample_every=0)
    assert run.global_step == 3
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["unlearnable_warning"].startswith("GRPO cannot learn here")


class _State:
    global_step, is_world_process_zero = 1, True


class _Control:
    should_training_stop = False


@pytest.mark.parametrize(
    ("rate", "zero_std", "stops"),
    [(0.0, 1.0, True), (0.0, 0.5, False), (0.25, 1.0, False), (0.5, 0.0, False)],
)
def test_only_no_template_with_no_spread_stops(rate, zero_std, stops):
    probe, control = UnlearnableStop(), _Control()
    logs = {"answers/format_rate": rate, "frac_reward_zero_std": zero_std}
    if stops:
        with pytest.warns(UserWarning):
            probe.on_log(None, _State(), control, logs=logs)
    else:
        probe.on_log(None, _State(), control, logs=logs)
    assert control.should_training_stop is stops and probe.stopped is stops
    probe.on_log(None, _State(), control, logs={**logs, "answers/format_rate": 0.0})
    assert probe.stopped is stops  # only the first logged step is judged


def test_the_message_points_to_the_warm_start():
    message = unlearnable_message(0.0, 1.0, 1)
    assert "format rate 0%" in message and "notebook 10" in message
    with pytest.raises(ValueError, match="if_unlearnable='never'"):
        UnlearnableStop("never")


def test_under_a_completion_cap_a_real_model_only_warns(monkeypatch):
    """The rehearsal and short workshops cap completions ($MEDREASON_MAX_NEW_TOKENS): one cut
    before its template closes says nothing of the model, so the run is not stopped."""
    smol = PROFILES["smol"]
    monkeypatch.delenv("MEDREASON_MAX_NEW_TOKENS", raising=False)
    assert training.unlearnable_action(smol) == "stop"
    assert training.unlearnable_action(PROFILES["tiny"]) == "warn"
    monkeypatch.setenv("MEDREASON_MAX_NEW_TOKENS", "64")
    assert training.unlearnable_action(smol.replace(max_completion_length=64)) == "warn"
    monkeypatch.setenv("MEDREASON_MAX_NEW_TOKENS", "4096")  # above the profile's: nothing cut
    assert training.unlearnable_action(smol) == "stop"
