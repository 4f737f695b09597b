"""GRPO on the tiny profile: it learns, it resumes, it fails early when misconfigured."""

import json

import pandas as pd
import pytest
import torch

from conftest import RUN_STEPS, TEST_BATCH
from medreason_lib.scoring.rewards import REWARD_FUNCS
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training import TrainingRun, train
from medreason_lib.training.config import ConfigError, grpo_config, preflight, training_dataset
from medreason_lib.training.trl_compat import TorchChunkedLogProb

TINY = PROFILES["tiny"]
TEST_TINY = TINY.replace(per_device_train_batch_size=TEST_BATCH)  # the tests' half batch
WINDOW = 6


pytestmark = pytest.mark.usefixtures("one_thread")


def reversed_rewards():
    """Every course reward with its sign flipped: GRPO should then unlearn the template."""
    funcs = []
    for fn in REWARD_FUNCS:

        def neg(completions, _fn=fn, **kwargs):
            return [-s for s in _fn(completions, **kwargs)]

        neg.__name__ = fn.__name__
        funcs.append(neg)
    return funcs


def course_reward(metrics_csv, sign=1.0):
    df = pd.read_csv(metrics_csv)
    return sign * df["reward"]


def _grpo(run_dir, steps, **kwargs):
    """GRPO from the session's SFT warm start (``warm_run_dir``, tests/conftest.py)."""
    return train(TEST_TINY.replace(max_steps=steps), run_dir=run_dir, sample_every=0, **kwargs)


def test_grpo_raises_the_course_reward_on_cpu(tiny_run):
    """The session's shared run (tests/conftest.py): RUN_STEPS GRPO steps of TEST_BATCH
    completions with the course rewards."""
    reward = course_reward(tiny_run.metrics_csv)
    first, last = reward[:WINDOW].mean(), reward[-WINDOW:].mean()
    print(f"mean reward: first {WINDOW} steps {first:.3f}, last {WINDOW} steps {last:.3f}")
    assert len(reward) == RUN_STEPS and tiny_run.global_step == RUN_STEPS
    assert last > first + 0.05, (first, last)  # see conftest.RUN_STEPS for measured rises
    assert (tiny_run.adapter_dir / "adapter_config.json").exists()


def test_reversed_reward_does_not_raise_it(warm_run_dir):
    # The same run with every reward negated: the learning test above would catch a sign
    # error, because then the course reward falls instead of rising. (At TEST_BATCH it fell
    # from 0.36 over the first 6 steps to 0.01 over the last 6, measured 2026-11-27.)
    run = _grpo(warm_run_dir(), steps=12, reward_funcs=reversed_rewards())
    reward = course_reward(run.metrics_csv, sign=-1.0)
    first, last = reward[:WINDOW].mean(), reward[-WINDOW:].mean()
    print(f"course reward under reversed training: first {first:.3f}, last {last:.3f}")
    assert last < first, (first, last)


class Interrupt(Exception):
    pass


def _train_with_callback(monkeypatch, callback, *args, **kwargs):
    """``train(*args, **kwargs)`` with ``callback`` added to its trainer (for this call only)."""
    import medreason_lib.training as training

    original = training.build_trainer

    def with_callback(*a, **k):
        trainer, rewards = original(*a, **k)
        trainer.add_callback(callback)
        return trainer, rewards

    monkeypatch.setattr(training, "build_trainer", with_callback)
    try:
        return train(*args, **kwargs)
    finally:
        monkeypatch.setattr(training, "build_trainer", original)


def test_interrupted_run_resumes_from_its_checkpoint(warm_run_dir, monkeypatch):
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise Interrupt

    run_dir = warm_run_dir()
    profile = TEST_TINY.replace(max_steps=4, save_steps=2)
    with pytest.raises(Interrupt):
        _train_with_callback(monkeypatch, StopAfter(), profile, run_dir=run_dir, sample_every=0)
    assert (run_dir / "checkpoint-2").is_dir()
    assert not (run_dir / "run.json").exists()

    run = train(profile, run_dir=run_dir, resume=True, sample_every=0)
    assert run.global_step == 4
    steps = pd.read_csv(run.metrics_csv)["step"].tolist()
    assert steps == [1, 2, 3, 4]  # step 3 of the lost attempt was replaced, not duplicated
    state = torch.load(run_dir / "checkpoint-4" / "optimizer.pt", weights_only=False)
    assert state["state"], "optimizer state was saved"
    assert TrainingRun.load(run_dir).global_step == 4


def test_preflight_names_the_setting_at_fault():
    data = training_dataset(TINY)
    with pytest.raises(ConfigError, match="lacks column.*answer"):
        preflight(TINY, data.remove_columns(["answer"]))
    with pytest.raises(ConfigError, match="not divisible by num_generations = 3"):
        preflight(TINY.replace(num_generations=3, per_device_train_batch_size=32), data)
    with pytest.raises(ConfigError, match="max_seq_length"):
        preflight(TINY.replace(max_completion_length=4096), data)
    with pytest.raises(ConfigError, match="needs an NVIDIA GPU"):
        preflight(PROFILES["3b"], data, gpu_gb=None)
    with pytest.raises(ConfigError, match=r"needs about \d+\.\d GB .*memory plan.*Lower first"):
        preflight(PROFILES["3b"], data, gpu_gb=4.0)
    with pytest.raises(ConfigError, match="num_generations 8 -> 4"):
        preflight(PROFILES["8b"], data, gpu_gb=8.0)
    preflight(PROFILES["3b"], data, gpu_gb=15.0)  # a T4 fits the 3b profile
    # fewer rows than one step's prompts: TRL trained 0 steps and said so only in a log line
    # (the rehearsal found it: 6 rows, 32 completions of 4 = 8 prompts a step)
    with pytest.raises(ConfigError, match="has 6 rows and one step takes 8 prompts"):
        preflight(TINY, data.select(range(6)))


def test_grpo_config_sets_cpu_precision_and_profile_values(tmp_path):
    cfg = grpo_config(TINY, tmp_path)
    assert cfg.use_cpu and not cfg.bf16 and not cfg.fp16
    assert cfg.num_generations == TINY.num_generations
    assert cfg.beta == TINY.beta and cfg.loss_type == TINY.loss_type
    assert cfg.max_completion_length == TINY.max_completion_length


def test_cpu_logprob_fallback_matches_plain_log_softmax():
    torch.manual_seed(0)
    hidden, weight = torch.randn(5, 8), torch.randn(11, 8)
    bias, targets = torch.randn(11), torch.randint(0, 11, (5,))
    logp, entropy, _, mean_logits, top1 = TorchChunkedLogProb.apply(
        hidden,
        weight,
        bias,
        targets,
        0.7,
        4,
        None,
        1.0,
        ("log_probs", "entropy", "mean_logits", "is_top1"),
    )
    logits = (hidden @ weight.T + bias) / 0.7
    expected = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(logp, expected)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(entropy, -(p * p.log()).sum(-1))
    torch.testing.assert_close(mean_logits, logits.mean(-1))
    assert torch.equal(top1, logits.argmax(-1) == targets)


def test_tiny_warm_starts_are_cached_by_stamp(tmp_path, monkeypatch, capsys):
    """A finished tiny warm start is kept under its stamp's hash and copied, not retrained,
    for the same model, data and settings; other settings train a warm start of their own."""
    from medreason_lib.training import sft

    real = sft.warmstart_cache_dir
    monkeypatch.setattr(sft, "warmstart_cache_dir", lambda s: tmp_path / "cache" / real(s).name)
    profile = TINY.replace(sft_warmup_steps=2)
    rows = training_dataset(TINY).select(range(8))
    first = sft.run_warmstart(profile, rows, tmp_path / "a" / "sft-warmstart")
    assert "SFT warm start: 2 steps" in capsys.readouterr().out
    (entry,) = cached_entries(tmp_path / "cache")
    assert (entry / "warmstart.json").read_text() == (first / "warmstart.json").read_text()

    again = sft.run_warmstart(profile, rows, tmp_path / "b" / "sft-warmstart")
    assert "reusing the cached one" in capsys.readouterr().out
    weights = "model.safetensors"
    assert (again / weights).read_bytes() == (first / weights).read_bytes()

    sft.run_warmstart(profile.replace(sft_warmup_steps=3), rows, tmp_path / "c" / "sft-warmstart")
    assert "SFT warm start: 3 steps" in capsys.readouterr().out
    assert len(cached_entries(tmp_path / "cache")) == 2


def cached_entries(folder):
    """The cached warm starts in ``folder``: not the lock files beside them (``.<name>.lock``)."""
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def test_stop_button_keeps_a_usable_run(warm_run_dir, monkeypatch):
    """A KeyboardInterrupt (Jupyter's stop button) mid-training: train() returns a run whose
    adapter is a checkpoint of the last finished step, run.json says it was interrupted, and
    resume=True goes on from there (issue 21: notebook 04 on a GPU survives an interrupt)."""
    from transformers import TrainerCallback

    class StopButton(TrainerCallback):  # pressed while step 4 generates its completions
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    run_dir = warm_run_dir()
    profile = TEST_TINY.replace(max_steps=5, save_steps=2)
    run = _train_with_callback(monkeypatch, StopButton(), profile, run_dir=run_dir, sample_every=0)
    assert run.global_step == 3
    assert (run_dir / "checkpoint-3" / "optimizer.pt").is_file()  # saved at the interrupt
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert not (run.adapter_dir / "optimizer.pt").exists()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["interrupted"] is True and info["global_step"] == 3
    assert TrainingRun.load(run_dir).global_step == 3  # later cells can load it

    resumed = train(profile, run_dir=run_dir, resume=True, sample_every=0)
    assert resumed.global_step == 5
    assert pd.read_csv(resumed.metrics_csv)["step"].tolist() == [1, 2, 3, 4, 5]
    assert json.loads((run_dir / "run.json").read_text())["interrupted"] is False
