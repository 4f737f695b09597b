"""One GRPO step by hand (medreason_lib.training.grpo_by_hand, grpo_math) against TRL's GRPOTrainer.

The trainer takes one real step on one prompt of the tiny model; the hand code redoes it
from the recorded group (its own log-softmax, rewards, advantages, loss, gradient and AdamW)
and must land where TRL did: the loss within 1e-4 of TRL's logged loss, and the gradient,
its norm and the updated weights as well.
"""

import math

import pytest
import torch

from medreason_lib.scoring.rewards import REWARD_FUNCS
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training import grpo_by_hand as gbh
from medreason_lib.training import grpo_math as gm
from medreason_lib.training.config import training_dataset

TINY = PROFILES["tiny"]
TOLERANCE = 1e-4

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def row():
    return next(r for r in training_dataset(TINY) if r["task"] == "pubmedqa")


@pytest.fixture(scope="module")
def warm_base(tmp_path_factory, row):
    """A short SFT warm start on the test's prompt alone: enough for the model to write the
    template some of the time, so the group's rewards differ (the full warm start takes
    150 steps; this test needs a signal, not a good model)."""
    from datasets import Dataset

    from medreason_lib.training.sft import run_warmstart

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("warm") / "sft-warmstart"
    return run_warmstart(TINY.replace(sft_warmup_steps=24), Dataset.from_list([row]), out)


def assert_matches(step, hand, diff):
    assert hand.completions == step.completions  # our decoding = what TRL scored
    assert diff["reward_max_abs_diff"] == 0.0
    assert diff["loss_abs_diff"] <= TOLERANCE, diff
    assert diff["grad_norm_abs_diff"] <= TOLERANCE * max(1.0, hand.grad_norm), diff
    assert diff["grad_max_abs_diff"] <= TOLERANCE * diff["grad_max_abs"], diff
    assert diff["adamw_max_abs_diff"] <= 1e-7, diff  # our AdamW on TRL's gradient = TRL's step
    # the whole chain: every weight within 2% of the step size of TRL's (Adam's first step is
    # lr * g / (|g| + eps): entries with |g| near eps = 1e-8 amplify float rounding)
    assert diff["weight_max_abs_diff"] <= 0.02 * hand.lr, diff


def test_one_step_by_hand_matches_grpo_trainer(tmp_path, warm_base, row):
    step = gbh.record_trainer_step(
        TINY, row, warm_base, tmp_path, num_generations=8, max_completion_length=32
    )
    hand = gbh.hand_step(step)
    diff = gbh.compare(step, hand)
    print({k: f"{v:.3g}" for k, v in diff.items()})
    assert len(step.completion_ids) == 8 and step.settings["loss_type"] == TINY.loss_type
    assert hand.total.std() > 0, "the group has no signal: the check is empty"
    assert hand.grad_norm > 0
    assert_matches(step, hand, diff)
    # one step by hand moved the weights as TRL did, and in the direction the loss falls
    assert any(not torch.equal(step.before[n], step.after[n]) for n in step.after)

    # The comparison is sharp: a population std (ddof=0) instead of TRL's sample std, or a
    # per-completion mean ("grpo") instead of the token mean ("dapo"), misses TRL's loss.
    n = torch.tensor(hand.n_tokens, dtype=torch.float64)
    wrong_std = hand.total.double()
    wrong_adv = (wrong_std - wrong_std.mean()) / (wrong_std.std(unbiased=False) + 1e-4)
    assert abs(-(wrong_adv * n).sum() / n.sum() - diff["loss_trl"]) > TOLERANCE
    if len(set(hand.n_tokens)) > 1:
        per_completion_mean = -hand.advantages.mean().item()
        assert abs(per_completion_mean - diff["loss_trl"]) > TOLERANCE


def length_reward(completions, completion_ids, **kwargs):
    """Longer is better: a reward that differs within any group of different lengths."""
    return [len(ids) / 10 for ids in completion_ids]


@pytest.mark.parametrize(
    "loss_type, scale_rewards, mask_truncated",
    [("dr_grpo", "none", True), ("grpo", "group", False)],
)
def test_other_losses_and_masks_match(
    tmp_path, warm_base, row, loss_type, scale_rewards, mask_truncated
):
    # completions cut at 10 tokens: some finish, some are truncated (masked out of the loss
    # with mask_truncated_completions); a length reward next to the course's
    profile = TINY.replace(loss_type=loss_type, scale_rewards=scale_rewards)
    funcs = [*REWARD_FUNCS, length_reward]
    step = gbh.record_trainer_step(
        profile,
        row,
        warm_base,
        tmp_path,
        num_generations=8,
        max_completion_length=10,
        reward_funcs=funcs,
        mask_truncated_completions=mask_truncated,
    )
    hand = gbh.hand_step(step, reward_funcs=funcs)
    diff = gbh.compare(step, hand)
    print({k: f"{v:.3g}" for k, v in diff.items()}, hand.keep, hand.n_tokens)
    assert step.settings["loss_type"] == loss_type
    assert step.settings["mask_truncated_completions"] is mask_truncated
    assert len(set(hand.n_tokens)) > 1 and hand.advantages.abs().max() > 1e-2
    if mask_truncated:
        assert 0 < sum(hand.keep) < len(hand.keep), "masking needs kept and cut completions"
    assert hand.grad_norm > 0
    assert_matches(step, hand, diff)


def test_log_softmax_is_torchs():
    logits = torch.randn(5, 11, dtype=torch.float64) * 30  # large logits: the max shift matters
    assert torch.allclose(gm.log_softmax(logits), torch.log_softmax(logits, -1))


def test_group_advantages():
    a = gm.group_advantages([3.5, 1.5, 1.5, 1.5], "group")
    assert torch.allclose(a, torch.tensor([1.5, -0.5, -0.5, -0.5], dtype=a.dtype), atol=1e-3)
    assert torch.equal(
        gm.group_advantages([1.5, 1.0, 1.0, 1.0], "none"),
        a.new_tensor([0.375, -0.125, -0.125, -0.125]),
    )
    assert torch.equal(gm.group_advantages([2.0] * 4, "group"), torch.zeros(4, dtype=a.dtype))
    # float32, as TRL: six rewards of 1.2 have a float32 mean of 1.19999993, so a unanimous
    # group gets tiny positive advantages (TRL's own arithmetic gives it the same)
    tied = gm.group_advantages([1.2] * 6, "group")
    assert (tied > 0).all() and tied.max() < 2e-3
    with pytest.raises(ValueError, match="scale_rewards"):
        gm.group_advantages([1.0, 0.0], "rank")


def test_grpo_loss_normalisations_and_clipping():
    lps = [torch.log(torch.tensor([0.5, 0.5])), torch.log(torch.tensor([0.5, 0.5, 0.5, 0.5]))]
    adv = torch.tensor([1.0, -1.0])
    common = {"epsilon": 0.2, "epsilon_high": 0.28, "max_completion_length": 8}
    # rho = 1: dapo = -(1 * 2 - 1 * 4) / 6; grpo = mean(-1, 1) = 0; dr_grpo = 2 / (2 * 8)
    assert gm.grpo_loss(lps, lps, adv, loss_type="dapo", **common).item() == pytest.approx(2 / 6)
    assert gm.grpo_loss(lps, lps, adv, loss_type="grpo", **common).item() == pytest.approx(0.0)
    assert gm.grpo_loss(lps, lps, adv, loss_type="dr_grpo", **common).item() == pytest.approx(
        2 / 16
    )
    # masking the second completion leaves the first one's tokens alone
    masked = gm.grpo_loss(lps, lps, adv, loss_type="dapo", keep=[True, False], **common)
    assert masked.item() == pytest.approx(-1.0)
    # rho = 2 on a positive advantage is clipped at 1 + epsilon_high; rho = 0.5 on a negative
    # one at 1 - epsilon
    old = [lp - math.log(2) for lp in lps[:1]] + [lp + math.log(2) for lp in lps[1:]]
    clipped = gm.grpo_loss(lps, old, adv, loss_type="dapo", **common)
    assert clipped.item() == pytest.approx(-(1.28 * 2 - 0.8 * 4) / 6)
    with pytest.raises(ValueError, match="loss_type"):
        gm.grpo_loss(lps, lps, adv, loss_type="cispo", **common)


def test_adamw_first_step_is_torchs():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    g = torch.randn(4, 3)
    settings = {"lr": 0.01, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.1}
    w0 = w.detach().clone()
    mine = gm.adamw_first_step({"w": w0}, {"w": g}, **settings)["w"]
    opt = torch.optim.AdamW([w], lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    w.grad = g.clone()
    opt.step()
    assert torch.allclose(mine, w.detach(), atol=1e-7)
    # about lr times the sign of the gradient
    assert torch.allclose(w0 * (1 - 0.01 * 0.1) - mine, 0.01 * g.sign(), atol=1e-6)


def test_first_learning_rate_follows_the_schedule():
    tiny = {
        "learning_rate": 5e-3,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "max_steps": 30,
    }
    assert gm.learning_rate_at_first_step(tiny) == 5e-3
    three_b = {**tiny, "lr_scheduler_type": "cosine", "warmup_steps": 0.1, "max_steps": 500}
    assert gm.learning_rate_at_first_step(three_b) == 0.0  # warmup starts at 0


def test_bad_inputs_are_named(tmp_path, row):
    with pytest.raises(ValueError, match="tiny profile"):
        gbh.record_trainer_step(PROFILES["3b"], row, "x", tmp_path)
    with pytest.raises(ValueError, match="lacks"):
        gbh.record_trainer_step(TINY, {"prompt": row["prompt"]}, "x", tmp_path)
    step = gbh.TrainerStep(
        TINY, row, "x", [], [], [], {}, {}, {}, {}, {}, {"beta": 0.04, "num_iterations": 1}
    )
    with pytest.raises(ValueError, match="beta=0.04"):
        gbh.hand_step(step)
