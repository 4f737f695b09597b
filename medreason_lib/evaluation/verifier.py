"""A model-based verifier reward: a judge compares a completion's answer with a reference.

Exact rewards (``rewards.correctness_reward``) need an answer that can be checked by rule: a
letter, yes/no/maybe, a number. An open answer ("Disulfide bond cleavage", a PubMedQA long
answer) needs a judge. HuatuoGPT-o1 (Chen et al. 2024, arXiv:2412.18925) trained with one,
and this module follows what its code publishes (github.com/FreedomIntelligence/HuatuoGPT-o1,
``RL_stage2.py`` and ``ppo_utils/ppo_trainer_medo1.py``, function ``get_reward_o1``):

- The judge, ``FreedomIntelligence/medical_o1_verifier_3B`` (``HUATUO_VERIFIER``), is a
  sequence classifier with two labels (``AutoModelForSequenceClassification``,
  ``num_labels=2``), not a text generator. Its input is ``HUATUO_TEMPLATE``: the model's final
  response and the reference answer in ``<Model Response>``/``<Reference Answer>`` tags, an
  instruction to output "True" or "False", and the tokenizer's eos token; the question is
  not shown. The verdict is the softmax probability of label 1 ("True"), inputs truncated to
  4,000 tokens.
- The reward: 0 when the response lacks the format (its "## Thinking" and "## Final
  Response" sections, each exactly once; the judge is not asked), else 1.0 when p(True)
  > 0.4 and 0.1 otherwise. This module keeps that policy (``SCORES``, ``THRESHOLD``), with
  the course's template as the format: ``rewards.follows_format`` (one reasoning block, one
  answer block), and only the answer block goes to the judge.

Any judge works (module ``judges``; its names are re-exported here), and every verdict is
parsed strictly: a classifier's probability (``classifier_judge``, ``load_judge(...,
kind="classifier")``); a text generator whose whole reply must be ``True`` or ``False``, an
optional period or quotes aside (``model_judge``; it reads ``QUESTION_TEMPLATE``, the
published template with the question added, since a general model needs the question); or
a Python function (``scripted_judge``). A verdict that is none of these is unparseable: it
scores 0 and is counted (``VerifierReward.stats``). The tiny model as judge (a random-init
model) gives mostly unparseable verdicts, which the counts show.

Verdicts are cached by (question, reference, answer): GRPO's completions of one prompt often
give the same answer, and each distinct one is judged once per batch, in one judge call.

The guard against gaming the judge (``screen_answer``): the judge sees the answer block
only, never the reasoning, and an answer block is scored 0 without asking the judge, and
counted by reason, when it

- is longer than ``max_answer_chars`` (400 by default: a reference is a phrase);
- addresses the judge (prompt injection or flattery): names a grader, judge, evaluator or
  the reference answer, writes the template's tags, tells the reader to output or mark
  anything true/correct, to ignore instructions, or grades itself ("this answer is
  correct"), or flatters ("you are an expert");
- hedges: offers alternatives ("or", "either", "and/or", "/") that the reference does not,
  or lists two or more items more than the reference does.

Cost (measured with ``time_judge`` on the tiny profile, one CPU thread of a shared 2-core
machine, 8 completions with 8 distinct answers, cache cleared before each call, best of 5,
2026-12-06): the scripted judge 0.2 ms per call (the reward's own reading of the 8
completions); the tiny model as judge (0.7M parameters, 4 new tokens) 0.04 s per call, all 40
of its verdicts unparseable. An estimate for GPU profiles, not measured (no GPU, and the
verifier's weights, were available when this was written):
a classifier judge is one forward pass over the batch, so per GRPO step

    t_judge ≈ (1 - h) · B · 2 · P · L / (F · u)

with B completions a step (``per_device_train_batch_size``, 8 on ``3b`` and ``8b``), h the
share found in the cache, P the judge's parameters (3.2e9 for the 3B verifier), L the
judge's input tokens (about 150: template 70, answer up to 100, reference 20), F the GPU's
dense bf16/fp16 peak (T4 65e12, L4 121e12, H100 989e12 FLOP/s) and u the share of it that
a short batch reaches (0.2-0.4). For ``3b`` on a T4: 8 · 2 · 3.2e9 · 150 / (65e12 · 0.3)
≈ 0.4 s a step; on an H100 about 0.03 s, next to the 7.3 s a ``3b`` GRPO step of batch 8
took there in the course's GPU smoke run (README; 64-token completions). A generative judge
adds one decode step per new token, each reading all the weights: about n_new · 2P bytes /
memory bandwidth (6.4 GB / 320 GB/s ≈ 20 ms a token on a T4). The judge's weights (6.4 GB in
16-bit) come on top of the policy's memory plan: 6.7 GB for ``3b``, tight on a 15 GB T4.
``judge_step_estimate(profile, gpu)`` computes these figures for any profile and card (the
cards' figures from ``speed.GPU_SPEED``), beside ``speed.estimate_step``'s GRPO step.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable

from medreason_lib.evaluation.judges import (
    HUATUO_TEMPLATE,
    HUATUO_VERIFIER,
    QUESTION_TEMPLATE,
    JudgeRequest,
    classifier_judge,
    load_judge,
    model_judge,
    scripted_judge,
)
from medreason_lib.scoring.rewards import (
    follows_format,
    soft_format_reward,
    strict_format_reward,
    xml_count_reward,
)
from medreason_lib.scoring.template import parse_completion

__all__ = [
    "HUATUO_TEMPLATE",
    "HUATUO_VERIFIER",
    "QUESTION_TEMPLATE",
    "SCORES",
    "JudgeRequest",
    "VerifierReward",
    "classifier_judge",
    "judge_step_estimate",
    "load_judge",
    "model_judge",
    "open_ended_rewards",
    "parse_verdict",
    "screen_answer",
    "scripted_judge",
    "time_judge",
    "verifier_reward",
]

SCORES = {"correct": 1.0, "wrong": 0.1, "bad": 0.0}  # HuatuoGPT-o1's reward policy
THRESHOLD = 0.4  # p(True) above it is "correct" (get_reward_o1)
MAX_ANSWER_CHARS = 400
# The cost model's assumptions (module docstring): HuatuoGPT-o1's 3B verifier, ~150 input
# tokens (template 70, answer up to 100, reference 20), 30% of the card's 16-bit peak.
JUDGE_PARAMS = 3.2e9
JUDGE_INPUT_TOKENS = 150
JUDGE_MFU = 0.3
VERDICT = re.compile(r"[\"'“”]?(True|False)[\"'“”]?\s*\.?")

_TO_JUDGE = re.compile(
    r"(?i)\b(?:grader|graders|judge|judges|evaluator|verifier|assessor|examiner)\b|"
    r"\breference answer\b|</?\s*(?:model response|reference answer|question)\s*>|"
    r"\b(?:ignore|disregard|forget)\b.{0,40}\b(?:instructions?|above|previous|rules?|prompt)\b|"
    r"\b(?:output|respond|reply|say|print|return|mark|grade|score|rate|label)\b\W{0,3}"
    r"(?:with\s+|it\s+as\s+|this\s+as\s+|me\s+as\s+|as\s+)?[\"'“]?"
    r"(?:true|correct|right|1\.0|full\s+(?:marks|credit))\b|"
    r"\bthis (?:answer|response) is (?:correct|right|true|accurate|excellent|perfect)\b|"
    r"\b(?:you are|you're)\s+(?:an?\s+|very\s+|so\s+)?(?:brilliant|wise|expert|excellent|"
    r"great|smart|kind|fair|generous|the best)\b"
)
_ALTERNATIVE = re.compile(r"(?i)\b(?:or|either|and/or)\b|/")
_ITEMS = re.compile(r"[,;]")


def screen_answer(answer: str, reference: str, max_chars: int = MAX_ANSWER_CHARS) -> str | None:
    """Why ``answer`` must not reach the judge ("too_long", "addresses_the_judge", "hedge"),
    or None when it may (see the module docstring)."""
    if len(answer) > max_chars:
        return "too_long"
    if _TO_JUDGE.search(answer):
        return "addresses_the_judge"
    if _ALTERNATIVE.search(answer) and not _ALTERNATIVE.search(reference):
        return "hedge"
    if len(_ITEMS.findall(answer)) >= len(_ITEMS.findall(reference)) + 2:
        return "hedge"
    return None


def parse_verdict(verdict, threshold: float = THRESHOLD) -> bool | None:
    """True/False from a judge's verdict, None when it cannot be read: a probability in
    [0, 1] (above ``threshold`` is True), a bool, or a text that is exactly ``True`` or
    ``False`` (quotes, a period and surrounding whitespace allowed; case matters)."""
    if isinstance(verdict, bool):
        return verdict
    if isinstance(verdict, int | float):
        value = float(verdict)
        return value > threshold if math.isfinite(value) and 0.0 <= value <= 1.0 else None
    if isinstance(verdict, str):
        m = VERDICT.fullmatch(verdict.strip())
        return None if m is None else m.group(1) == "True"
    return None


def _one_line(text) -> str:
    return " ".join(str(text or "").split())


class VerifierReward:
    """A GRPO reward (``fn(completions, question=..., reference=..., **columns)``) that asks
    ``judge`` and pays ``SCORES`` (see the module docstring). ``stats`` counts what it did."""

    def __init__(
        self,
        judge: Callable,
        *,
        template: str | None = None,
        max_answer_chars: int = MAX_ANSWER_CHARS,
        threshold: float = THRESHOLD,
        cache_size: int = 100_000,
        eos: str | None = None,
        name: str = "verifier_reward",
    ):
        self.judge = judge
        self.template = template or getattr(judge, "template", QUESTION_TEMPLATE)
        self.eos = eos if eos is not None else getattr(judge, "eos", "")
        self.max_answer_chars, self.threshold, self.cache_size = (
            max_answer_chars,
            threshold,
            cache_size,
        )
        self.__name__ = name
        self.cache: dict[tuple[str, str, str], bool | None] = {}
        self.stats: Counter = Counter()
        self.judge_seconds = 0.0

    def prompt(self, question: str, reference: str, answer: str) -> str:
        return self.template.format(
            question=question, reference=reference, answer=answer, eos=self.eos
        )

    def _ask(self, keys: list[tuple[str, str, str]]) -> int:
        """Judge ``keys`` (none cached) in one call, caching each parsed verdict; returns how
        many verdicts were unparseable."""
        requests = [JudgeRequest(q, r, a, self.prompt(q, r, a)) for q, r, a in keys]
        began = time.perf_counter()
        verdicts = list(self.judge(requests))
        self.judge_seconds += time.perf_counter() - began
        if len(verdicts) != len(requests):
            raise ValueError(f"the judge returned {len(verdicts)} verdicts for {len(requests)}")
        self.stats["judged"] += len(requests)
        unparseable = 0
        for key, verdict in zip(keys, verdicts, strict=True):
            parsed = parse_verdict(verdict, self.threshold)
            unparseable += parsed is None
            if len(self.cache) >= self.cache_size:
                self.cache.pop(next(iter(self.cache)))  # the oldest verdict
            self.cache[key] = parsed
        self.stats["unparseable"] += unparseable
        return unparseable

    def __call__(self, completions, question=None, reference=None, **kwargs) -> list[float]:
        n = len(completions)
        if reference is None or question is None:
            raise ValueError(
                "verifier_reward needs the question and reference columns: convert multiple "
                "choice rows with open_ended.convert, or add a reference column of your own"
            )
        questions = [question] * n if isinstance(question, str) else list(question)
        references = [reference] * n if isinstance(reference, str) else list(reference)
        self.stats["calls"] += 1
        self.stats["completions"] += n
        keys: list[tuple[str, str, str] | None] = []
        reasons: list[str | None] = []
        for completion, q, ref in zip(completions, questions, references, strict=True):
            answer = _one_line(parse_completion(completion).answer)
            reason = None if follows_format(completion) and answer else "no_answer"
            reason = reason or screen_answer(answer, _one_line(ref), self.max_answer_chars)
            reasons.append(reason)
            keys.append(None if reason else (_one_line(q), _one_line(ref), answer))
            if reason:
                self.stats[reason] += 1
        todo = list(dict.fromkeys(k for k in keys if k is not None and k not in self.cache))
        hits = sum(k is not None for k in keys) - len(todo)
        self.stats["cache_hits"] += hits
        unparseable = self._ask(todo) if todo else 0
        paid = {True: SCORES["correct"], False: SCORES["wrong"], None: SCORES["bad"]}
        scores = [paid[None if key is None else self.cache[key]] for key in keys]
        log = kwargs.get("log_metric")  # TRL averages these over a logging step
        if callable(log):
            log("verifier/judged", float(len(todo)))
            log("verifier/cache_hits", float(hits))
            log("verifier/unparseable", float(unparseable))
            log("verifier/flagged", float(sum(r not in (None, "no_answer") for r in reasons)))
        return scores

    def clear_cache(self) -> None:
        self.cache.clear()


def verifier_reward(judge: Callable, **settings) -> VerifierReward:
    """A GRPO reward that asks ``judge`` (``scripted_judge``, ``model_judge``,
    ``classifier_judge`` or ``load_judge``; any callable of a list of ``JudgeRequest`` to a
    list of verdicts): 1.0 judged correct, 0.1 judged wrong, 0 for no answer, a flagged one
    (``screen_answer``) or an unparseable verdict. ``settings``: ``template``,
    ``max_answer_chars``, ``threshold``, ``cache_size``, ``name``."""
    return VerifierReward(judge, **settings)


def open_ended_rewards(judge: Callable, **settings) -> list:
    """The course's three format rewards and the verifier, for open questions (rows from
    ``open_ended.convert``): ``correctness_reward`` is left out, its letters have no options
    to refer to. To keep the course's scale (a right answer worth 4 format rewards), pass
    ``reward_weights=[1, 1, 1, 2.0 / SCORES["correct"]]`` to ``training.train``."""
    return [
        xml_count_reward,
        soft_format_reward,
        strict_format_reward,
        verifier_reward(judge, **settings),
    ]


def time_judge(judge: Callable, batch: int = 8, calls: int = 3) -> dict:
    """Seconds per reward call of ``batch`` completions with distinct answers, the cache
    cleared before each call (so every answer reaches the judge), over ``calls`` calls."""
    from medreason_lib.scoring.template import format_completion

    reward = VerifierReward(judge)
    answers = [f"answer number {i}" for i in range(batch)]
    completions = [format_completion("Worked it out step by step.", a) for a in answers]
    columns = {"question": ["What is it?"] * batch, "reference": ["answer number 0"] * batch}
    seconds = []
    for _ in range(calls):
        reward.clear_cache()
        began = time.perf_counter()
        reward(completions, **columns)
        seconds.append(time.perf_counter() - began)
    return {
        "batch": batch,
        "calls": calls,
        "seconds_per_call": min(seconds),
        "seconds_per_completion": min(seconds) / batch,
        "unparseable": reward.stats["unparseable"],
        "judged": reward.stats["judged"],
    }


def judge_step_estimate(
    profile,
    gpu: str,
    *,
    params: float = JUDGE_PARAMS,
    input_tokens: int = JUDGE_INPUT_TOKENS,
    cache_hits: float = 0.0,
    new_tokens: int = 0,
    mfu: float = JUDGE_MFU,
) -> dict:
    """An ESTIMATE, not a measurement, of what a judge adds to one GRPO step of ``profile``
    on ``gpu`` (a ``speed.GPU_SPEED`` key): one forward pass over the step's completions not
    found in the cache, ``(1 - cache_hits) * B * 2 * params * input_tokens / (peak * mfu)``,
    plus ``new_tokens`` decode steps for a generative judge (each reads the 16-bit weights:
    ``2 * params`` bytes / bandwidth). Returns the judge's seconds, ``speed.estimate_step``'s
    seconds for the step without a judge, the judge's share of the step with it, and the
    judge's 16-bit weights in GB beside the policy's memory plan and the card's memory."""
    from medreason_lib.models.memory import plan_for_profile
    from medreason_lib.models.memory_specs import GPUS
    from medreason_lib.runtime.speed import GPU_SPEED, estimate_step

    bandwidth, tflops = GPU_SPEED[gpu]
    judged = (1 - cache_hits) * profile.per_device_train_batch_size
    judged *= profile.gradient_accumulation_steps
    forward = judged * 2 * params * input_tokens / (tflops * 1e12 * mfu)
    decode = new_tokens * 2 * params / (bandwidth * 1e9)
    step = estimate_step(profile, gpu).seconds
    judge = forward + decode
    return {
        "profile": profile.name,
        "gpu": gpu,
        "completions": judged,
        "judge_s": judge,
        "step_s": step,
        "judge_share": judge / (step + judge),
        "judge_gb": 2 * params / 1e9,
        "policy_gb": plan_for_profile(profile, "grpo", gpu=gpu).total_gb,
        "gpu_gb": GPUS[gpu].memory_gb,
    }
