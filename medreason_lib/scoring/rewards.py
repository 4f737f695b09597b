"""Reward functions for TRL's GRPOTrainer.

Each has TRL's signature ``fn(completions, **kwargs) -> list[float]``: ``completions`` is a
list of strings (standard datasets) or of chat-message lists (conversational datasets, the
course's case), and every dataset column except ``prompt`` arrives as a keyword list of the
same length (``answer``, ``task``, ``options``, ...). TRL sums the rewards (weighted by
``GRPOConfig.reward_weights`` if set) into one scalar per completion.

The scale follows the original GRPO demo that MedQwen3B-Reasoner built on: each format
reward is worth at most 0.5 and correctness 2.0, so a correct answer always outweighs
perfect formatting, yet a model that cannot answer yet still gets a gradient towards the
template. Three things the widely copied versions get wrong are right here:

1. Regexes match across lines (``re.DOTALL``); the copied ones score every multi-line
   reasoning 0, so their logged format rewards sit at 0.0 for the whole run.
2. Repeating the tags never earns more format credit than one well-formed block.
3. Text after ``</answer>`` costs credit (the model should stop when it has answered).
4. A hollow reasoning block (empty, whitespace, punctuation, a single word: ``"..."``,
   ``"Reasoning"``) earns no strict or soft format credit: the template is there to hold
   reasoning. Beyond that, length earns nothing: two words of reasoning and two hundred get
   the same format reward (there is no length reward; a long one would be gamed with filler).

A reward never raises on what a model wrote: None, empty text, 1 MB of text, unbalanced
tags or odd unicode all give a float, 0.0 where nothing is earned.
"""

from __future__ import annotations

import re

from medreason_lib.scoring.answers import (
    TASK_TYPES,
    answer_type,
    extract_answer,
    is_correct,
    normalize_answer,
)
from medreason_lib.scoring.template import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    REASONING_CLOSE,
    REASONING_OPEN,
    has_reasoning,
    is_strict_template,
    parse_completion,
)

__all__ = [
    "REWARD_FUNCS",
    "TASK_TYPES",
    "answer_type",
    "correctness_reward",
    "extract_answer",
    "follows_format",
    "has_reasoning",
    "is_correct",
    "normalize_answer",
    "score_completions",
    "soft_format_reward",
    "strict_format_reward",
    "xml_count_reward",
]

FORMAT_REWARD = 0.5
CORRECT_REWARD = 2.0
TRAILING_PENALTY_PER_CHAR = 0.001

# The answer block must hold something: an empty one earns no format credit here.
_SOFT = re.compile(r"\s*<reasoning>.*?</reasoning>\s*<answer>\s*\S.*?</answer>", re.DOTALL)


def strict_format_reward(completions, **kwargs) -> list[float]:
    """0.5 when the completion is exactly the template, newline for newline, once, and its
    reasoning block holds reasoning (``has_reasoning``).

    ``<reasoning>\\n...\\n</reasoning>\\n<answer>\\n...\\n</answer>`` and nothing around it
    but whitespace; the blocks themselves may span many lines.
    """
    scores = []
    for c in completions:
        parsed = parse_completion(c)
        ok = is_strict_template(parsed.canonical) and has_reasoning(parsed.reasoning)
        scores.append(FORMAT_REWARD if ok else 0.0)
    return scores


def follows_format(completion) -> bool:
    """The soft format: one reasoning block that holds reasoning (``has_reasoning``), then
    one non-empty answer block; whitespace anywhere between and inside the tags."""
    parsed = parse_completion(completion)
    text = parsed.canonical
    once = all(text.count(t) == 1 for t in (REASONING_OPEN, REASONING_CLOSE))
    once = once and all(text.count(t) == 1 for t in (ANSWER_OPEN, ANSWER_CLOSE))
    return once and _SOFT.match(text) is not None and has_reasoning(parsed.reasoning)


def soft_format_reward(completions, **kwargs) -> list[float]:
    """0.5 when the completion ``follows_format``: one reasoning block (holding reasoning)
    followed by one answer block.

    Whitespace between and inside the tags is free, text after ``</answer>`` is tolerated
    here (``xml_count_reward`` charges for it), and a second block of either kind voids it.
    """
    return [FORMAT_REWARD if follows_format(c) else 0.0 for c in completions]


def xml_count(text: str) -> float:
    """Partial credit, 0.125 per template tag that appears exactly once, laid out as taught.

    Text after ``</answer>`` costs 0.001 per character, at most the 0.25 that the two
    answer tags earn, so the result stays within [0, 0.5].
    """
    score = 0.0
    if text.count("<reasoning>\n") == 1:
        score += 0.125
    if text.count("\n</reasoning>\n") == 1:
        score += 0.125
    if text.count("\n<answer>\n") == 1:
        score += 0.125
    if text.count("\n</answer>") == 1:
        score += 0.125
    if text.count(ANSWER_CLOSE) >= 1:
        trailing = text.rsplit(ANSWER_CLOSE, 1)[1].strip()
        score -= min(0.25, TRAILING_PENALTY_PER_CHAR * len(trailing))
    return max(score, 0.0)


def xml_count_reward(completions, **kwargs) -> list[float]:
    """Tag-by-tag partial credit (see ``xml_count``): a gradient before the format is whole."""
    return [xml_count(parse_completion(c).canonical) for c in completions]


def _per_row(value, n: int, name: str, who: str = "correctness_reward") -> list:
    """A column as one entry per completion (one value, or None, for all of them)."""
    if value is None or isinstance(value, str):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{who}: {name} has {len(value)} entries for {n} completions")
    return value


def correctness_reward(completions, answer, task, options=None, **kwargs) -> list[float]:
    """2.0 when the extracted answer equals the gold ``answer`` column, else 0.0.

    ``task`` (a column, or one name for all rows) picks the extractor: yes/no/maybe, choice
    letter or number. ``options`` (the choice texts, when the dataset has them) lets an
    answer that spells out an option's text count as that option's letter. A hedged or
    missing answer scores 0.0.
    """
    n = len(completions)
    answers = _per_row(answer, n, "answer")
    tasks = _per_row(task, n, "task")
    option_lists = _per_row(options, n, "options") if options is not None else [None] * n
    return [
        CORRECT_REWARD if gold is not None and is_correct(c, str(gold), t, opts or None) else 0.0
        for c, gold, t, opts in zip(completions, answers, tasks, option_lists, strict=True)
    ]


REWARD_FUNCS = [xml_count_reward, soft_format_reward, strict_format_reward, correctness_reward]


def score_completions(completions, **columns) -> dict[str, list[float]]:
    """Every course reward on the same completions, by name, plus their ``total``.

    Handy in notebooks and in the evaluation to see what GRPO would have seen.
    """
    scores = {fn.__name__: fn(completions, **columns) for fn in REWARD_FUNCS}
    scores["total"] = [sum(vals) for vals in zip(*scores.values(), strict=True)]
    return scores
