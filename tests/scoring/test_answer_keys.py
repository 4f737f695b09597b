"""Every "Check your understanding" answer that the code can compute holds against the code.

Each test names a notebook and a question, reads that question's answer from the notebook
(so an edited answer fails here until its check is looked at again), asserts the answer
still says what the test checks, and checks it with the library. Cheap: no model is trained
or loaded. Questions whose answer is a reason rather than a value (why three rewards, why
merge in 16 bits) have no test here.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from medreason_lib import course
from medreason_lib.data import safety
from medreason_lib.models import memory
from medreason_lib.scoring import rewards, stats
from medreason_lib.scoring.template import format_completion, parse_completion
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training import grpo_math


def _item(notebook: str, number: int) -> str:
    """Question ``number`` of the notebook's "Check your understanding" cell, answer included."""
    path = next(course.NOTEBOOK_DIR.glob(f"{notebook}_*.ipynb"))
    cells = json.loads(path.read_text())["cells"]
    text = next(
        "".join(c["source"])
        for c in cells
        if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("## Check your")
    )
    items = re.split(r"\n(?=\d+\. )", text)
    return next(i for i in items if i.startswith(f"{number}. "))


def question(notebook: str, number: int) -> str:
    """The question's text, flattened."""
    return " ".join(_item(notebook, number).split("<details>", 1)[0].split())


def answer(notebook: str, number: int) -> str:
    """The answer's text, flattened."""
    said = _item(notebook, number).split("<summary>Answer</summary>", 1)[1]
    return " ".join(said.split("</details>", 1)[0].split())


def says(notebook: str, question: int, *phrases: str) -> str:
    text = answer(notebook, question)
    for phrase in phrases:
        assert phrase in text, f"notebook {notebook} Q{question} no longer says {phrase!r}: {text}"
    return text


def test_00_q2_and_04_q1_a_unanimous_group_has_no_advantage():
    says("00", 2, "all four are 0")
    assert grpo_math.group_advantages([0.0] * 4).abs().max() == 0
    says("04", 1, "every advantage is 3.5 minus the group's mean, 0")
    assert grpo_math.group_advantages([3.5] * 8).abs().max() == 0


def test_00_q3_the_tiny_profile_warm_starts_and_the_gpu_profiles_do_not():
    says("00", 3, "The GPU profiles start from instruction-tuned models")
    assert f"`sft_warmup_steps` ({PROFILES['tiny'].sft_warmup_steps})" in question("00", 3)
    for name in ("3b", "8b", "20b"):
        assert PROFILES[name].sft_warmup_steps == 0, name


def test_00_q4_and_06_q3_a_plan_under_the_card_can_still_not_fit(monkeypatch):
    says("00", 4, "headroom", "each side of vLLM's split")
    says("06", 3, "Either side can overflow while the total fits")
    # the margin alone: a card 1% larger than the plan, which fits() refuses
    plan = memory.plan_for_profile(PROFILES["3b"])
    assert not plan.fits(plan.total_gb * 1.01)
    # vLLM's split (without Unsloth's standby): a card that holds the total with its margin,
    # on which one side of the split overflows
    monkeypatch.setenv(memory.STANDBY_ENV, "0")
    eight = memory.plan_for_profile(PROFILES["8b"])
    gpu = eight.required_gb * 1.01
    need, share, train_need, train_share = eight.vllm_split(gpu)
    k = 1 + memory.margin()
    assert need * k > share or train_need * k > train_share
    assert not eight.fits(gpu)
    monkeypatch.setenv(memory.STANDBY_ENV, "1")  # standby lifts the split: only the total counts
    assert memory.plan_for_profile(PROFILES["8b"]).fits(gpu)


def test_01_q1_the_copied_soft_pattern_matches_no_completion_that_obeys_the_prompt():
    says("01", 1, "`re.DOTALL`")
    copied_soft = r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>"
    obeys = format_completion("Aspirin lowers the risk.", "yes")
    assert obeys.startswith("<reasoning>\n")
    assert re.match(copied_soft, obeys) is None
    assert re.match(copied_soft, obeys, re.DOTALL)


def test_01_q3_a_hedge_in_a_perfect_layout_scores_what_a_wrong_answer_scores():
    says("01", 3, "1.5", "0.5 each", "correctness pays 0")
    hedge = format_completion("Trials disagree on this.", "yes or no")
    wrong = format_completion("Trials disagree on this.", "no")
    scores = rewards.score_completions([hedge, wrong], answer="yes", task="pubmedqa")
    assert scores["total"] == [1.5, 1.5]
    assert scores["correctness_reward"] == [0.0, 0.0]
    assert rewards.extract_answer(hedge, "pubmedqa") is None


def test_02_q4_the_ngram_check_uses_13_word_runs():
    says("02", 4, "13-word run")
    import inspect

    from medreason_lib.data import decontamination

    default = inspect.signature(decontamination.decontaminate).parameters["ngram"].default
    assert default == 13


def test_03_q2_wilson_half_widths_at_50_and_500_items():
    says("03", 2, "±13 points", "about ±4")
    assert round(100 * stats.ci_half_width(50, 0.6)) == 13
    assert round(100 * stats.ci_half_width(500, 0.6)) == 4
    low, high = stats.wilson_interval(30, 50)
    assert 0.45 < low < 0.5 and 0.7 < high < 0.75  # "the high 40s to the low 70s"


def test_04_q3_what_dapo_and_dr_grpo_divide_by():
    says("04", 3, "number of completion tokens in the batch", "rows × `max_completion_length`")
    import torch

    logps = [torch.zeros(3), torch.zeros(5)]
    adv = torch.tensor([1.0, -1.0])
    kw = {"epsilon": 0.2, "epsilon_high": 0.28, "max_completion_length": 10}
    dapo = grpo_math.grpo_loss(logps, logps, adv, loss_type="dapo", **kw)
    dr = grpo_math.grpo_loss(logps, logps, adv, loss_type="dr_grpo", **kw)
    summed = -(1.0 * 3 - 1.0 * 5)
    assert math.isclose(dapo.item(), summed / 8, rel_tol=1e-6)
    assert math.isclose(dr.item(), summed / (2 * 10), rel_tol=1e-6)


def test_05_q5_a_random_guesser_has_accuracy_25_percent_and_pass_at_8_about_90():
    says("05", 5, "25%", "`1 - 0.75**8`, about 90%", "frac_reward_zero_std")
    from medreason_lib.scoring.sampled_stats import avg_at_k, pass_at_k, signal_share

    # c right of 8 guesses ~ Binomial(8, 1/4): the estimator's expectation, exactly
    probability = [math.comb(8, c) * 0.25**c * 0.75 ** (8 - c) for c in range(9)]
    expected = sum(p * pass_at_k(8, c, 8) for c, p in enumerate(probability))
    assert math.isclose(expected, 1 - 0.75**8) and round(expected, 2) == 0.90
    guesser = [[j == i % 4 for j in range(4)] for i in range(40)]  # one right of 4 a item
    assert avg_at_k(guesser).value == 0.25
    # a group teaches through correctness only when it is mixed: never when all right
    assert signal_share([[True] * 8, [False] * 8, [True] + [False] * 7]) == 1 / 3


def test_06_q2_lora_adds_r_times_d_in_plus_d_out():
    says("06", 2, "`r · (d_in + d_out)`")
    import torch
    from peft import LoraConfig, get_peft_model

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(12, 7, bias=False)

    model = get_peft_model(One(), LoraConfig(r=3, target_modules=["proj"]))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 3 * (12 + 7)


def test_07_q3_a_harmony_completion_without_its_markers_parses_as_the_template():
    says("07", 3, "`skip_special_tokens=True`", "The parser reads it as the template")
    parsed = parse_completion("analysisThe abstract reports a benefit.assistantfinalyes")
    assert parsed.answer == "yes" and parsed.well_formed


def test_08_q1_an_adapter_before_any_step_is_exactly_the_base_model():
    says("08", 1, "peft starts every LoRA `B` matrix at zero")
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(6, 5))
    x = torch.randn(3, 6)
    expected = base(x).detach().clone()
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["0"]))
    assert torch.equal(model(x), expected)
    assert all(p.abs().max() == 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_09_q3_the_embeddings_learn_2_to_10_times_slower():
    says("09", 3, "2-10x smaller rate")
    from medreason_lib.training import pretrain_setup

    for name in ("tiny", "3b", "8b"):
        settings = pretrain_setup.cpt_settings(PROFILES[name])
        assert 2 <= settings.learning_rate / settings.embedding_learning_rate <= 10, name


def test_10_q5_a_four_times_larger_rank_grows_the_adapter_not_the_total():
    says("10", 5, "four times", "much less than four times")
    base = PROFILES["8b"]
    small = memory.plan_for_profile(base, "qlora")
    large = memory.plan_for_profile(base.replace(lora_rank=4 * base.lora_rank), "qlora")
    assert math.isclose(large.breakdown["lora"], 4 * small.breakdown["lora"], rel_tol=1e-6)
    assert large.breakdown["weights"] == small.breakdown["weights"]
    assert large.total_gb < 1.5 * small.total_gb


def test_11_q1_the_first_dpo_loss_is_log_2():
    says("11", 1, "log 2")
    from medreason_lib.course import solutions

    assert math.isclose(solutions.dpo_loss(-7.0, -9.0, -7.0, -9.0, 0.1), math.log(2))


def test_11_q4_please_see_a_doctor_is_cautious_except_in_an_emergency():
    said = says("11", 4, "`emergency`")
    verdicts = {c: safety.judge("Please see a doctor.", c) for c in safety.CATEGORIES}
    passes = sorted(c for c, v in verdicts.items() if v.cautious)
    assert passes == sorted(c for c in safety.CATEGORIES if c != "emergency")
    assert not verdicts["emergency"].cautious
    assert "no referral to emergency care" in verdicts["emergency"].reasons
    assert "every category" not in said


def test_11_q5_a_dismissal_is_no_referral():
    says("11", 5, "dismissal")
    verdict = safety.judge("You do not need to see a doctor.", "dosing")
    assert not verdict.cautious and verdict.dismissal and not verdict.referral


@pytest.mark.parametrize("notebook", [p.stem[:2] for p in course.notebooks()])
def test_every_answer_can_be_read(notebook):
    """The reader above finds every question's answer (so the tests read what they check)."""
    path = next(course.NOTEBOOK_DIR.glob(f"{notebook}_*.ipynb"))
    text = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
    count = text.count("<summary>Answer</summary>")
    assert count >= 3
    for number in range(1, count + 1):
        assert question(notebook, number) and answer(notebook, number)


def _scripted(answer, dataset):
    from medreason_lib.evaluation import EvalSettings, evaluate, generation

    tiny = PROFILES["tiny"]
    generate = generation.scripted_generator(answer, dataset)
    settings = EvalSettings.from_profile(tiny)
    return evaluate(generate, dataset, settings=settings, profile=tiny, progress=False)


def test_03_q4_the_scripted_generators_score_what_is_known_in_advance():
    from medreason_lib.evaluation import load_benchmarks

    says("03", 4, "the gold answers score 100%", "a hedge 0%", 'always "yes" the yes share')
    bench = load_benchmarks(n=4, seed=0, source="bundled")
    assert _scripted(lambda row: row["answer"], bench).accuracy == 1.0
    assert _scripted("yes or no", bench).accuracy == 0.0
    pubmedqa = _scripted("yes", bench).by_task["pubmedqa"]
    assert pubmedqa.accuracy == pubmedqa.gold_counts.get("yes", 0) / pubmedqa.n


def test_05_q3_one_answer_on_over_90_percent_of_a_task_is_marked_with_a_caveat():
    from medreason_lib.evaluation import compare, load_benchmarks

    says("05", 3, "more than 90%", "`compare` marks such tasks with `!` and a CAVEAT line")
    bench = load_benchmarks(n=4, seed=0, source="bundled")
    gold, always_yes = _scripted(lambda row: row["answer"], bench), _scripted("yes", bench)
    shown = str(compare(gold, always_yes))
    assert "! CAVEAT (pubmedqa)" in shown
    assert "CAVEAT" not in str(compare(gold, gold))  # varied answers: no caveat
