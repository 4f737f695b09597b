"""The reasoning/answer template, and a parser that reads it back from any model's output.

The course trains models to answer in the MedQwen3B-Reasoner format::

    <reasoning>
    ...
    </reasoning>
    <answer>
    ...
    </answer>

Two model families write their reasoning elsewhere, and ``parse_completion`` maps both onto
the template, so the rewards and the evaluation read all three the same way:

- Qwen3 (thinking mode on) writes ``<think>...</think>`` and then its reply;
- gpt-oss writes harmony channels: ``<|channel|>analysis<|message|>...<|end|>`` for the
  reasoning, ``<|channel|>final<|message|>...`` for the answer. Decoded with
  ``skip_special_tokens=True`` (what TRL does) the markers vanish and the text reads
  ``analysis...assistantfinal...``; the parser understands that form too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SYSTEM_PROMPT = (
    "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"
)

# What every answer, model card and Modelfile of a trained model says (``ask``, ``export``).
DISCLAIMER = (
    "Educational use only: this model was trained in a machine-learning course. Its answers "
    "are not medical advice; do not use them for any decision about anyone's health."
)

REASONING_OPEN, REASONING_CLOSE = "<reasoning>", "</reasoning>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

_THINK = re.compile(r"^\s*(?:<think>)?(.*?)</think>(.*)$", re.DOTALL)
# gpt-oss harmony channels, with their special tokens kept ...
_HARMONY_ANALYSIS = "<|channel|>analysis<|message|>"
_HARMONY_FINAL = "<|channel|>final<|message|>"
_HARMONY_ENDS = ("<|end|>", "<|return|>", "<|start|>")
# ... and with them stripped by skip_special_tokens=True
_HARMONY_STRIPPED = re.compile(r"^\s*analysis(.*?)assistantfinal(.*)$", re.DOTALL)


def _blocks(text: str, open_tag: str, close_tag: str) -> list[str]:
    """Contents of every ``open_tag ... close_tag`` block, left to right, like a lazy regex.

    Written with ``str.find`` so that it stays linear on adversarial input (50,000 opening
    tags and no closing one would send ``re.findall("<a>(.*?)</a>")`` quadratic).
    """
    found, pos = [], 0
    while (start := text.find(open_tag, pos)) >= 0:
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            break
        found.append(text[start + len(open_tag) : end])
        pos = end + len(close_tag)
    return found


def _harmony_channel(text: str, marker: str) -> str | None:
    """The message of the first harmony channel ``marker``, up to its end token (or the end)."""
    start = text.find(marker)
    if start < 0:
        return None
    body = text[start + len(marker) :]
    cut = min((i for i in (body.find(e) for e in _HARMONY_ENDS) if i >= 0), default=len(body))
    return body[:cut]


def format_completion(reasoning: str, answer: str) -> str:
    """Write a completion in the exact template layout (what the strict reward expects)."""
    return f"<reasoning>\n{reasoning.strip()}\n</reasoning>\n<answer>\n{answer.strip()}\n</answer>"


def completion_text(completion) -> str:
    """The text of one completion as TRL passes it: a string, or a list of chat messages.

    Anything else (None, a number, a malformed message) becomes a string or ``""``; this
    function never raises, because rewards call it on whatever a model produced.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        content = completion.get("content", "")
        content = content if isinstance(content, str) else ""
        # TRL hands a parsed message when the tokenizer has a response schema (gpt-oss):
        # the reasoning then travels in "thinking" / "reasoning_content".
        thinking = completion.get("thinking") or completion.get("reasoning_content")
        if isinstance(thinking, str) and thinking:
            return (
                f"{_HARMONY_ANALYSIS}{thinking}<|end|><|start|>assistant{_HARMONY_FINAL}{content}"
            )
        return content
    if isinstance(completion, list | tuple):
        return "".join(completion_text(m) for m in completion if isinstance(m, dict | str))
    return str(completion)


@dataclass(frozen=True)
class ParsedCompletion:
    """What a completion says, whichever format it used.

    ``answer`` is the answer text when the completion gives exactly one (or several
    identical) answer blocks, else None. ``answer_blocks`` keeps every block, so a caller
    can tell "no answer" from "two answers that disagree". ``trailing`` is any text after
    the last ``</answer>``. ``canonical`` is the completion rewritten into the plain
    template when it came as a think block or harmony channels (else the text itself): the
    format rewards score this text.
    """

    reasoning: str | None
    answer: str | None
    answer_blocks: tuple[str, ...]
    well_formed: bool
    style: str  # "template" | "think" | "harmony"
    trailing: str
    canonical: str


def _native_to_template(reasoning: str, reply: str) -> str:
    """Rewrite (native reasoning, native reply) as template text.

    If the reply already uses the template, the reply is kept as it is (its own reasoning
    block wins); otherwise the native reasoning becomes the reasoning block and the reply
    the answer block.
    """
    if ANSWER_OPEN in reply or REASONING_OPEN in reply:
        return reply.strip()
    if not reply.strip():
        return f"<reasoning>\n{reasoning.strip()}\n</reasoning>"
    if not reasoning.strip():  # an empty think block / analysis channel is no reasoning
        return f"<answer>\n{reply.strip()}\n</answer>"
    return format_completion(reasoning, reply)


def _to_canonical(text: str) -> tuple[str, str]:
    if "<|channel|>" in text:
        final = _harmony_channel(text, _HARMONY_FINAL)
        analysis = _harmony_channel(text, _HARMONY_ANALYSIS)
        if final is not None or analysis is not None:
            return _native_to_template(analysis or "", final or ""), "harmony"
    m = _HARMONY_STRIPPED.match(text)
    if m:
        return _native_to_template(m.group(1), m.group(2)), "harmony"
    if "</think>" in text:
        m = _THINK.match(text)
        if m:
            return _native_to_template(m.group(1), m.group(2)), "think"
    return text, "template"


def is_strict_template(text: str) -> bool:
    """True when ``text`` is exactly one reasoning block then one answer block, laid out
    line by line as in ``SYSTEM_PROMPT``, with nothing but whitespace around them.

    Tags are counted first, so a 1 MB string of repeated tags is rejected in linear time
    instead of sending a regex into backtracking.
    """
    if any(text.count(tag) != 1 for tag in (REASONING_OPEN, REASONING_CLOSE)):
        return False
    if any(text.count(tag) != 1 for tag in (ANSWER_OPEN, ANSWER_CLOSE)):
        return False
    return (
        re.fullmatch(
            r"\s*<reasoning>\n(.+?)\n</reasoning>\n<answer>\n(.+?)\n</answer>\s*",
            text,
            re.DOTALL,
        )
        is not None
    )


# A word: a run of letters or digits, or one CJK character (those scripts use no spaces).
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+")
MIN_REASONING_WORDS = 2


def has_reasoning(reasoning: str | None) -> bool:
    """True when a reasoning block's text holds at least two different words.

    Empty, whitespace-only, punctuation-only and one-word blocks ("...", "Reasoning",
    "yes yes yes") are hollow. Nothing more is asked: a two-word block and a long one count
    the same, so no completion earns anything for being longer.
    """
    if not reasoning:
        return False
    words = set()
    for m in _WORD.finditer(reasoning):
        words.add(m.group().lower())
        if len(words) >= MIN_REASONING_WORDS:
            return True
    return False


def parse_completion(completion) -> ParsedCompletion:
    """Parse one completion (string or chat messages) into reasoning, answer and form.

    ``well_formed`` means: one reasoning block that holds reasoning (``has_reasoning``: not
    empty, punctuation or one word) before one answer block, a non-empty answer, and nothing
    after ``</answer>`` but whitespace. Newlines inside the blocks are free (the
    strict layout is ``is_strict_template``'s business).
    """
    text = completion_text(completion)
    canonical, style = _to_canonical(text)
    blocks = tuple(b.strip() for b in _blocks(canonical, ANSWER_OPEN, ANSWER_CLOSE))
    distinct = set(blocks)
    answer = blocks[0] if len(distinct) == 1 and blocks[0] else None
    reasoning_blocks = _blocks(canonical, REASONING_OPEN, REASONING_CLOSE)
    reasoning = reasoning_blocks[0].strip() if reasoning_blocks else None
    last_close = canonical.rfind(ANSWER_CLOSE)
    trailing = canonical[last_close + len(ANSWER_CLOSE) :] if last_close >= 0 else ""
    well_formed = (
        len(blocks) == 1
        and len(reasoning_blocks) == 1
        and has_reasoning(reasoning)
        and answer is not None
        and canonical.find(REASONING_CLOSE) < canonical.find(ANSWER_OPEN)
        and not trailing.strip()
    )
    return ParsedCompletion(reasoning, answer, blocks, well_formed, style, trailing, canonical)
