"""Rewards that misbehave during a run (issue 22): ``callbacks.RecordedReward`` never lets
one bad completion end a GRPO run, and ``user_rewards.GuardedReward`` holds your own rewards
to their contract on every call after the pre-flight check: a clear ``RewardError`` naming
the function and the step, or a visible policy (NaN is no reward, with a warning), and never
a hang (a time limit per call).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from medreason_lib.data import user_rewards
from medreason_lib.data.user_rewards import GuardedReward, RewardError, RewardWarning
from medreason_lib.scoring.rewards import CORRECT_REWARD, correctness_reward
from medreason_lib.training.callbacks import RecordedReward

ROWS = [
    {"prompt": [{"role": "user", "content": "Q1?"}], "answer": "yes", "task": "pubmedqa"},
    {"prompt": [{"role": "user", "content": "Q2?"}], "answer": "no", "task": "pubmedqa"},
]
STEP = SimpleNamespace(global_step=6)  # TRL's trainer_state while it scores step 7


def batch(n: int = 4, *, step=STEP, texts=None):
    """Completions and the keywords TRL passes with them (a dataset column, the state)."""
    texts = texts or [f"<answer>\nyes {i}\n</answer>" for i in range(n)]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    kwargs = {
        "prompts": [[{"role": "user", "content": f"Q{i}?"}] for i in range(len(texts))],
        "answer": ["yes"] * len(texts),
        "task": ["pubmedqa"] * len(texts),
        "trainer_state": step,
        "log_metric": lambda *a, **k: None,
    }
    return completions, kwargs


def text_of(completion) -> str:
    return completion[0]["content"]


def guarded(fn, timeout=5.0):
    """``fn`` as ``check_rewards`` hands it to the trainer (its pre-flight call passed)."""
    (guard,) = user_rewards.check_rewards([fn], ROWS)
    guard.timeout = timeout
    return guard


# --------------------------------------------------------------------------- RecordedReward


def test_one_bad_completion_gets_no_reward_with_a_counted_warning():
    seen_answers = []

    def picky(completions, answer, **kwargs):
        seen_answers.append(list(answer))
        if any("bad" in text_of(c) for c in completions):
            raise ValueError("cannot score this one")
        return [1.0] * len(completions)

    recorded = RecordedReward(picky)
    completions, kwargs = batch(texts=["<answer>\nyes\n</answer>", "bad", "fine", "bad too"])
    with pytest.warns(RewardWarning, match=r"picky raised ValueError: cannot score this one at "
                      r"training step 7; .* the 2 of 4 completions .* no reward \(None\); "
                      r"2 so far"):  # fmt: skip
        scores = recorded(completions, **kwargs)
    assert scores == [1.0, None, 1.0, None]
    assert recorded.failed == 2 and recorded.last_scores == scores
    assert seen_answers[1:] == [["yes"]] * 4  # each completion alone, with its own row


def test_the_correctness_reward_survives_any_completion_through_recorded_reward():
    recorded = RecordedReward(correctness_reward)
    texts = ["<answer>\n1e999999999\n</answer>", "<answer>\n" + "9" * 40 + "\n</answer>",
             "<answer>\n18\n</answer>"]  # fmt: skip
    completions, kwargs = batch(texts=texts)
    kwargs.update(answer=["18"] * 3, task=["gsm8k"] * 3)
    assert recorded(completions, **kwargs) == [0.0, 0.0, CORRECT_REWARD]
    assert recorded.failed == 0


def test_a_reward_that_raises_on_every_completion_stops_naming_it_and_the_step():
    def broken(completions, **kwargs):
        raise KeyError("context")

    recorded = RecordedReward(broken)
    with pytest.raises(RewardError, match=r"broken raised KeyError: 'context' at training step "
                       r"7 on every one of the 4 completions"):  # fmt: skip
        recorded(*batch()[:1], **batch()[1])


def test_a_single_completion_that_raises_gets_no_reward():
    def broken(completions, **kwargs):
        raise KeyError("context")

    completions, kwargs = batch(1)
    with pytest.warns(RewardWarning, match="the 1 of 1 completions"):
        assert RecordedReward(broken)(completions, **kwargs) == [None]


def test_a_reward_that_returns_a_generator_is_read_once_and_returned_as_a_list():
    def lazy(completions, **kwargs):
        return (0.5 for _ in completions)

    recorded = RecordedReward(lazy)
    completions, kwargs = batch(3)
    scores = recorded(completions, **kwargs)
    assert list(scores) == [0.5] * 3 and list(scores) == [0.5] * 3  # not an emptied generator
    assert recorded.last_scores == [0.5] * 3


def test_a_broken_contract_is_not_retried_one_by_one():
    calls = []

    def too_few(completions, **kwargs):
        calls.append(len(completions))
        return [0.0] * min(len(completions), 4)  # passes the pre-flight check's 4

    recorded = RecordedReward(guarded(too_few))
    completions, kwargs = batch(6)
    with pytest.raises(RewardError, match=r"extra_rewards\[0\]: too_few returned 4 values for 6 "
                       r"completions; .* \(at training step 7\)"):  # fmt: skip
        recorded(completions, **kwargs)
    assert calls == [4, 6]  # the pre-flight call, then one


# --------------------------------------------------------------------------- GuardedReward


def test_wrong_length_after_the_pre_flight_check_names_the_function_and_step():
    state = {"calls": 0}

    def drifting(completions, **kwargs):
        state["calls"] += 1
        return [0.0] * (len(completions) - (state["calls"] > 1))

    guard = guarded(drifting)
    with pytest.raises(RewardError, match=r"drifting returned 3 values for 4 completions; it must "
                       r"return one per completion \(at training step 7\)"):  # fmt: skip
        guard(*batch()[:1], **batch()[1])


def test_nan_becomes_no_reward_with_a_counted_warning():
    state = {"calls": 0}

    def sometimes_nan(completions, **kwargs):
        state["calls"] += 1
        return [float("nan") if state["calls"] > 1 and i % 2 else 0.25
                for i in range(len(completions))]  # fmt: skip

    guard = guarded(sometimes_nan)
    completions, kwargs = batch(4)
    with pytest.warns(RewardWarning, match=r"sometimes_nan returned NaN for 2 of 4 completions at "
                      r"training step 7: no reward for them \(None\); 2 NaN so far"):  # fmt: skip
        assert guard(completions, **kwargs) == [0.25, None, 0.25, None]
    with pytest.warns(RewardWarning, match="4 NaN so far"):
        guard(completions, **kwargs)
    assert guard.nan_scores == 4


def test_nan_in_the_pre_flight_check_is_an_error():
    def always_nan(completions, **kwargs):
        return [math.nan] * len(completions)

    with pytest.raises(RewardError, match=r"always_nan returned nan; each value must be a finite"):
        user_rewards.check_rewards([always_nan], ROWS)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.inf, "returned inf; each value must be finite and within float32"),
        (-1e39, "returned -1e+39; each value must be finite and within float32"),
        (10**400, "each value must be finite and within float32"),
        ("0.5", "returned '0.5'; each value must be a finite number"),
        (True, "returned True; each value must be a finite number"),
    ],
)
def test_values_the_trainer_cannot_sum_are_errors_naming_the_step(value, message):
    state = {"calls": 0}

    def later_bad(completions, **kwargs):
        state["calls"] += 1
        return [value if state["calls"] > 1 else 0.0] + [0.0] * (len(completions) - 1)

    guard = guarded(later_bad)
    with pytest.raises(RewardError) as caught:
        guard(*batch()[:1], **batch()[1])
    said = str(caught.value)
    assert said.startswith("extra_rewards[0]: later_bad returned") and message in said
    assert said.endswith("(at training step 7)")


def test_generators_arrays_and_tensors_are_read_into_lists():
    import torch

    for make in (lambda n: (0.5 for _ in range(n)), lambda n: np.full(n, 0.5),
                 lambda n: torch.full((n,), 0.5), lambda n: [np.float32(0.5)] * n):  # fmt: skip

        def reward(completions, make=make, **kwargs):
            return make(len(completions))

        scores = guarded(reward)(*batch()[:1], **batch()[1])
        assert scores == [0.5] * 4 and all(type(s) is float for s in scores)


def test_not_a_list_is_an_error():
    state = {"calls": 0}

    def scalar(completions, **kwargs):
        state["calls"] += 1
        return [0.0] * len(completions) if state["calls"] == 1 else 0.0

    with pytest.raises(RewardError, match=r"scalar returned float; expected a list of floats"):
        guarded(scalar)(*batch()[:1], **batch()[1])


def spin(seconds: float, swallow: bool = False) -> None:
    """Busy Python code for ``seconds`` (bounded, so a missing limit fails, not hangs)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sum(range(1000))
        except Exception:  # a reward's own catch-all must not swallow the time limit
            if not swallow:
                raise


@pytest.mark.parametrize("swallow", [False, True])
def test_a_call_that_never_returns_is_an_error_within_the_time_limit(swallow):
    state = {"calls": 0}

    def stuck(completions, **kwargs):
        state["calls"] += 1
        if state["calls"] > 1:
            spin(20, swallow)
        return [0.0] * len(completions)

    guard = guarded(stuck, timeout=0.3)
    began = time.monotonic()
    with pytest.raises(RewardError, match=r"stuck did not return within 0.3 s at training step 7; "
                       r"the limit per call is MEDREASON_REWARD_TIMEOUT"):  # fmt: skip
        guard(*batch()[:1], **batch()[1])
    assert time.monotonic() - began < 3


def test_the_pre_flight_call_has_the_time_limit_too(monkeypatch):
    monkeypatch.setenv("MEDREASON_REWARD_TIMEOUT", "0.3")

    def stuck(completions, **kwargs):
        spin(20)
        return [0.0] * len(completions)

    began = time.monotonic()
    with pytest.raises(RewardError, match=r"stuck did not return within 0.3 s on 4 sample"):
        user_rewards.check_rewards([stuck], ROWS)
    assert time.monotonic() - began < 3


def test_the_time_limit_setting(monkeypatch):
    assert user_rewards.DEFAULT_REWARD_TIMEOUT == 60
    monkeypatch.delenv("MEDREASON_REWARD_TIMEOUT", raising=False)
    assert user_rewards.check_rewards([lambda_free], ROWS)[0].timeout == 60
    monkeypatch.setenv("MEDREASON_REWARD_TIMEOUT", "2.5")
    assert user_rewards.check_rewards([lambda_free], ROWS)[0].timeout == 2.5
    monkeypatch.setenv("MEDREASON_REWARD_TIMEOUT", "0")
    assert user_rewards.check_rewards([lambda_free], ROWS)[0].timeout is None
    assert GuardedReward(lambda_free, timeout=7).timeout == 7
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv("MEDREASON_REWARD_TIMEOUT", bad)
        with pytest.raises(RewardError, match=f"MEDREASON_REWARD_TIMEOUT='{bad}': expected sec"):
            user_rewards.check_rewards([lambda_free], ROWS)


def lambda_free(completions, **kwargs):
    return [0.0] * len(completions)


def test_the_time_limit_holds_off_the_main_thread():
    def stuck(completions, **kwargs):
        spin(10)
        return [0.0] * len(completions)

    guard = GuardedReward(stuck, timeout=0.3)
    outcome = {}

    def run():
        began = time.monotonic()
        try:
            guard(*batch()[:1], **batch()[1])
        except RewardError as e:
            outcome.update(error=str(e), seconds=time.monotonic() - began)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(15)
    assert "did not return within 0.3 s" in outcome["error"] and outcome["seconds"] < 3


def test_the_time_limit_survives_the_extractors_own_inside_the_reward():
    """The answer extractor arms its own (shorter) limit while it reads; on its way out it
    gives the reward's limit back, which still fires."""
    from medreason_lib.scoring.answers import extract_answer

    state = {"calls": 0}

    def reads_then_stalls(completions, **kwargs):
        state["calls"] += 1
        answers = [extract_answer(c, "gsm8k") for c in completions]
        extract_answer("<answer>\n\\boxed{\\frac{1}{2}}\n</answer>", "gsm8k")
        if state["calls"] > 1:
            spin(20)
        return [0.0 if a is None else 1.0 for a in answers]

    guard = guarded(reads_then_stalls, timeout=0.5)
    began = time.monotonic()
    with pytest.raises(RewardError, match="did not return within 0.5 s"):
        guard(*batch()[:1], **batch()[1])
    assert time.monotonic() - began < 3


def test_sys_exit_in_a_call_is_an_error_that_says_so():
    state = {"calls": 0}

    def quits(completions, **kwargs):
        state["calls"] += 1
        if state["calls"] > 1:
            sys.exit(3)
        return [0.0] * len(completions)

    with pytest.raises(RewardError, match=r"quits called sys.exit\(3\) at training step 7"):
        RecordedReward(guarded(quits))(*batch()[:1], **batch()[1])


@pytest.mark.parametrize("as_module", [False, True])
def test_a_module_that_exits_on_import_is_reported_as_such(tmp_path, monkeypatch, as_module):
    source = "import sys\nsys.exit('usage: rewards.py DATA')\n\ndef mine(completions, **kw):\n"
    source += "    return [0.0] * len(completions)\n"
    path = tmp_path / "exiting_rewards.py"
    path.write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = "exiting_rewards:mine" if as_module else f"{path}:mine"
    with pytest.raises(RewardError) as caught:
        user_rewards.load_reward(spec)
    said = str(caught.value)
    assert said.startswith(f"--reward {spec}: importing ")
    assert "called sys.exit('usage: rewards.py DATA')" in said and "__main__" in said
