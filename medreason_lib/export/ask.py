"""Ask a trained model one question, formatted exactly as in training, and read its answer.

``ask(model, question, context=..., options=...)`` builds the chat prompt with the same
functions that built the training and evaluation prompts (``data.build_prompt``: the
course's system prompt and the task's user-turn format), generates greedily through
``generation.make_generate`` (any backend: a transformers or Unsloth model, a vLLM engine, a
callable), and reads the completion with ``template.parse_completion`` and the rewards' own
``answers.extract_answer``. The task decides the prompt format and how the answer is read:

- ``options`` (four texts, A-D) -> a multiple-choice question (the MedQA format, letter);
- ``context`` (an abstract) -> a PubMedQA question (yes / no / maybe);
- ``task="gsm8k"`` -> an arithmetic question (a number).

A question with neither options nor context has no training format, and ``ask`` says so
rather than invent one. Every ``Answer`` carries the educational-use disclaimer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from medreason_lib import data
from medreason_lib.scoring import answers, template
from medreason_lib.scoring.template import DISCLAIMER  # noqa: F401  (re-exported: ask.DISCLAIMER)
from medreason_lib.settings.errors import UserError
from medreason_lib.settings.profiles import Profile, get_profile


class AskError(UserError, ValueError):
    """A question that cannot be put in a training format (the message says what to give)."""


@dataclass(frozen=True)
class Answer:
    """A model's reply to one question, read the way the rewards read it."""

    question: str
    task: str
    answer: str | None  # normalised: "yes"/"no"/"maybe", "A".."D", a number; None = unreadable
    answer_text: str | None  # the answer block as the model wrote it
    reasoning: str | None
    well_formed: bool  # one reasoning block, then one answer block, nothing after
    truncated: bool | None  # cut at max_new_tokens (None: the backend cannot tell)
    completion: str
    prompt: list[dict]
    disclaimer: str = DISCLAIMER

    def __str__(self) -> str:
        kind = answers.answer_type(self.task)
        shown = self.answer if self.answer is not None else "(no readable answer)"
        lines = [
            f"question ({self.task}, answer type {kind}): {self.question}",
            f"reasoning: {self.reasoning if self.reasoning is not None else '(none)'}",
            f"answer: {shown}",
        ]
        if self.answer_text is not None and self.answer_text != self.answer:
            written = self.answer_text if len(self.answer_text) <= 120 else self.answer_text[:117]
            lines.append(
                f"  (as written: {written!r}{'...' if written != self.answer_text else ''})"
            )
        if not self.well_formed:
            lines.append("  (the completion does not follow the reasoning/answer template)")
        if self.truncated:
            lines.append("  (cut off at the token limit)")
        lines.append(f"NOTE: {self.disclaimer}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def infer_task(
    context: str | None = None, options: list[str] | None = None, task: str | None = None
) -> str:
    """The task whose training format fits the inputs (see the module docstring)."""
    if task is not None:
        if task not in data.TASKS:
            raise AskError(f"unknown task {task!r}; valid: {', '.join(data.TASKS)}")
        if task == "pubmedqa" and not context:
            raise AskError("a PubMedQA question needs its context (--context ABSTRACT)")
        if answers.answer_type(task) == "choice" and not options:
            raise AskError(f"a {task} question needs its four options (--options A B C D)")
        return task
    if options and context:
        raise AskError(
            "give either options (a multiple-choice question) or a context (a yes/no/maybe "
            "question about an abstract), not both: the model was trained on those two formats"
        )
    if options:
        return "medqa"
    if context:
        return "pubmedqa"
    raise AskError(
        "the model was trained on three question formats, and this one has no format: give "
        "--context ABSTRACT (a yes/no/maybe question), --options A B C D (multiple choice), "
        "or --task gsm8k (an arithmetic question with a number as the answer)"
    )


def ask_prompt(
    question: str,
    context: str | None = None,
    options: list[str] | None = None,
    *,
    task: str | None = None,
) -> tuple[str, list[dict[str, str]]]:
    """``(task, chat prompt)``: the prompt is ``data.build_prompt`` of the row, as in training."""
    if not question or not question.strip():
        raise AskError("the question is empty")
    task = infer_task(context, options, task)
    options = list(options or [])
    if answers.answer_type(task) == "choice" and len(options) != 4:
        raise AskError(f"a multiple-choice question needs exactly 4 options, got {len(options)}")
    row = {"task": task, "question": question.strip(), "context": context or "", "options": options}
    return task, data.build_prompt(row)


def _generator(model_or_loaded, tokenizer, settings, lora_path):
    from medreason_lib.evaluation.generation import make_generate

    inner = getattr(model_or_loaded, "model", None)
    if inner is not None and hasattr(model_or_loaded, "tokenizer"):  # models.EvalModel
        return make_generate(
            inner,
            tokenizer or model_or_loaded.tokenizer,
            settings=settings,
            lora_path=lora_path or getattr(model_or_loaded, "lora_path", None),
        )
    return make_generate(model_or_loaded, tokenizer, settings=settings, lora_path=lora_path)


def ask(
    model_or_loaded,
    question: str,
    context: str | None = None,
    options: list[str] | None = None,
    *,
    task: str | None = None,
    tokenizer=None,
    profile: Profile | None = None,
    max_new_tokens: int | None = None,
    lora_path: str | Path | None = None,
) -> Answer:
    """Ask one question and return the parsed ``Answer`` (with the disclaimer).

    ``model_or_loaded``: a ``(model, tokenizer)`` pair, a model with ``tokenizer=``, what
    ``models.load_for_eval`` or ``load_trained`` returns, a vLLM engine, or a generate
    callable. Decoding is greedy with the profile's chat-template keywords and completion
    length (``max_new_tokens`` overrides it), as in the course's evaluation.
    """
    from medreason_lib.evaluation.generation import GenerationSettings, to_completion

    profile = profile or get_profile()
    task, prompt = ask_prompt(question, context, options, task=task)
    settings = GenerationSettings.from_profile(profile)
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise AskError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        settings = dataclasses.replace(settings, max_new_tokens=max_new_tokens)
    check_fits(model_or_loaded, tokenizer, prompt, settings, profile)
    generate = _generator(model_or_loaded, tokenizer, settings, lora_path)
    completion = to_completion(list(generate([prompt]))[0])
    parsed = template.parse_completion(completion.text)
    return Answer(
        question=question.strip(),
        task=task,
        answer=answers.extract_answer(completion.text, task, options or None),
        answer_text=parsed.answer,
        reasoning=parsed.reasoning,
        well_formed=parsed.well_formed,
        truncated=completion.truncated,
        completion=completion.text,
        prompt=prompt,
    )


def _parts(model_or_loaded, tokenizer) -> tuple:
    """``(model, tokenizer)`` of what ``ask`` was given (``(None, None)``: a callable)."""
    if isinstance(model_or_loaded, tuple) and len(model_or_loaded) == 2:
        return model_or_loaded
    return (
        getattr(model_or_loaded, "model", model_or_loaded),
        tokenizer or getattr(model_or_loaded, "tokenizer", None),
    )


def check_fits(model_or_loaded, tokenizer, prompt: list[dict], settings, profile: Profile) -> None:
    """An ``AskError`` when the prompt's tokens plus ``max_new_tokens`` exceed the model's
    positions (``max_position_embeddings``; on a vLLM profile also the engine's length, the
    profile's ``max_seq_length``): past them a model writes garbage instead of failing."""
    from medreason_lib.evaluation.generation_base import render_prompts

    model, tokenizer = _parts(model_or_loaded, tokenizer)
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or tokenizer is None:
        return  # a callable or an engine: it knows its own limit
    if profile.use_vllm:
        limit = min(limit, profile.max_seq_length)
    (text,) = render_prompts(tokenizer, [prompt], settings.chat_template_kwargs)
    prompt_tokens = len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    needed = prompt_tokens + settings.max_new_tokens
    if needed > limit:
        raise AskError(
            f"the question and context take {prompt_tokens} tokens and the answer up to "
            f"{settings.max_new_tokens} (--max-new-tokens): {needed} in all, over the model's "
            f"limit of {limit} positions; shorten the context (or lower --max-new-tokens)"
        )


def load_trained(profile: Profile, run_dir: str | Path | None = None):
    """The trained model of a run (its base with its adapter), ready for ``ask``: what
    ``models.load_for_eval`` returns (on a vLLM profile the adapter is applied by the engine)."""
    from medreason_lib import models
    from medreason_lib.training.runs import load_run

    run = load_run(profile, run_dir)
    return models.load_for_eval(profile, base=run.base_model, adapter=run.adapter_dir)
