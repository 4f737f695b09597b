"""The judges a ``verifier.VerifierReward`` can ask, and the prompts they read.

A judge is any callable from a list of ``JudgeRequest`` (question, reference, the
completion's answer block, and the prompt built from them) to a list of verdicts, which the
verifier parses strictly (``verifier.parse_verdict``):

- ``scripted_judge``: a Python rule, no model (the tiny profile, tests, notebooks);
- ``model_judge``: a chat model that must reply exactly True or False, through the course's
  generation (``generation.make_generate``); ``load_judge(name, profile)`` loads one with
  ``models.load_for_eval`` (the tiny model on a tiny profile, Unsloth on a GPU one);
- ``classifier_judge``: a two-label sequence classifier, as HuatuoGPT-o1's verifier
  (``HUATUO_VERIFIER``) is, reading ``HUATUO_TEMPLATE`` (the verifier module's docstring
  says where the template and the policy come from); ``load_judge`` loads one with
  transformers' ``AutoModelForSequenceClassification``, as HuatuoGPT-o1's ``RL_stage2.py``
  does, because the course's model loaders load text generators only.

Only the rule, the tiny model and a tiny random classifier have run here (CPU tests). On a
GPU, the classifier is the published path; a generative judge loaded beside a vLLM policy
would start a second vLLM engine in the process, which nothing here has tried.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "HUATUO_TEMPLATE",
    "HUATUO_VERIFIER",
    "QUESTION_TEMPLATE",
    "JudgeRequest",
    "classifier_judge",
    "load_judge",
    "model_judge",
    "scripted_judge",
]

HUATUO_VERIFIER = "FreedomIntelligence/medical_o1_verifier_3B"
# HuatuoGPT-o1's verifier input (ppo_utils/ppo_trainer_medo1.py, get_reward_o1), with the
# model's final response, the reference answer and the verifier tokenizer's eos token.
HUATUO_TEMPLATE = (
    "<Model Response>\n{answer}\n</Model Response>\n\n<Reference Answer>\n{reference}\n"
    "</Reference Answer>\n\nYour task is to evaluate the model response by comparing it to the "
    "reference answer. If the model response is correct and aligns with the reference answer, "
    'output "True" . If it is incorrect or fails to select the correct option (if options are '
    'provided), output "False" . {eos}'
)
QUESTION_TEMPLATE = "<Question>\n{question}\n</Question>\n\n" + HUATUO_TEMPLATE


@dataclass(frozen=True)
class JudgeRequest:
    """What a judge reads: the question, the reference, the completion's answer block, and
    the prompt built from them with the judge's template."""

    question: str
    reference: str
    answer: str
    prompt: str


def scripted_judge(rule: Callable[[str, str, str], object] | None = None):
    """A judge without a model, for the tiny profile and tests: ``rule(question, reference,
    answer)`` returns the verdict (default: "True" when the answer, lower-cased and without
    punctuation, equals the reference or contains it as whole words, else "False")."""

    def norm(text: str) -> str:
        return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())

    def default(question: str, reference: str, answer: str) -> str:
        ref, ans = norm(reference), norm(answer)
        return "True" if ref and (ans == ref or f" {ref} " in f" {ans} ") else "False"

    chosen = rule or default

    def judge(requests: Sequence[JudgeRequest]) -> list:
        return [chosen(r.question, r.reference, r.answer) for r in requests]

    return judge


def model_judge(model, tokenizer, *, max_new_tokens: int = 4, template: str = QUESTION_TEMPLATE):
    """A text-generating judge: each prompt as one user turn, greedy, ``max_new_tokens`` new
    tokens, through the course's generation (``generation.make_generate``); the reply must be
    exactly True or False (``parse_verdict``)."""
    from medreason_lib.evaluation.generation import make_generate
    from medreason_lib.evaluation.generation_base import GenerationSettings, to_completion

    generate = make_generate(
        model, tokenizer, settings=GenerationSettings(max_new_tokens=max_new_tokens)
    )

    def judge(requests: Sequence[JudgeRequest]) -> list[str]:
        prompts = [[{"role": "user", "content": r.prompt}] for r in requests]
        return [to_completion(c).text for c in generate(prompts)]

    judge.template = template
    return judge


def classifier_judge(model, tokenizer, *, max_length: int = 4000, batch_size: int = 16):
    """A two-label classifier judge as HuatuoGPT-o1 runs its verifier: ``HUATUO_TEMPLATE``
    with the tokenizer's eos, truncated to ``max_length`` tokens; the verdict is
    softmax(logits)[:, 1], p(True)."""
    import torch

    def judge(requests: Sequence[JudgeRequest]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(requests), batch_size):
            texts = [r.prompt for r in requests[start : start + batch_size]]
            enc = tokenizer(
                texts,
                return_tensors="pt",
                add_special_tokens=False,
                padding=True,
                truncation=True,
                max_length=max_length,
            ).to(model.device)
            with torch.inference_mode():
                logits = model(**enc).logits.float()
            out += torch.softmax(logits, dim=-1)[:, 1].tolist()
        return out

    judge.template = HUATUO_TEMPLATE
    judge.eos = tokenizer.eos_token or ""
    judge.model = model
    return judge


def load_judge(name: str, profile=None, *, kind: str = "auto", **options):
    """A judge from a local model folder or a hub id. ``kind``: "classifier" (a two-label
    sequence classifier, as ``HUATUO_VERIFIER``; loaded with transformers'
    ``AutoModelForSequenceClassification``, since the course's loaders load text generators
    only), "generative" (any chat model, loaded by ``models.load_for_eval`` with ``profile``:
    the tiny model on a tiny profile, Unsloth on a GPU one), or "auto" (classifier for the
    HuatuoGPT-o1 verifier or a folder whose config names a SequenceClassification
    architecture). Returns the judge; ``judge.close()`` frees its model."""
    if kind == "auto":
        kind = "classifier" if _is_classifier(name) else "generative"
    if kind == "generative":
        if profile is None:
            raise ValueError("load_judge: a generative judge is loaded with a profile's loader")
        from medreason_lib.models import load_for_eval

        loaded = load_for_eval(profile, base=name)
        judge = model_judge(loaded.model, loaded.tokenizer, **options)
        judge.close = loaded.close
        return judge
    if kind != "classifier":
        raise ValueError(f"load_judge: kind must be auto, classifier or generative, not {kind!r}")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = (
        torch.bfloat16
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        else (torch.float16 if torch.cuda.is_available() else torch.float32)
    )
    model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=2, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    judge = classifier_judge(model, tokenizer, **options)
    judge.close = lambda: model.to("meta")
    return judge


def _local(name: str) -> bool:
    from pathlib import Path

    return Path(name).expanduser().is_dir()


def _is_classifier(name: str) -> bool:
    if name == HUATUO_VERIFIER:
        return True
    if not _local(name):
        return False
    import json
    from pathlib import Path

    config = Path(name).expanduser() / "config.json"
    try:
        archs = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in archs)
