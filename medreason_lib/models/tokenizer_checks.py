"""Check a chat model's tokenizer at load: repaired in one printed line, or refused in one.

The course talks to a model through its chat template: a system turn (the course's prompt and
answer template), a user turn (the question), and generation until the assistant's turn
ends. Three things must hold, and a model from the hub or a converted file can miss each:

- **The system turn renders.** A template that drops it (or raises on it) would train and
  evaluate without the course's instructions: refused.
- **eos ends the assistant's turn.** Generation stops at eos. A converted GGUF tokenizer can
  say eos is the token that *opens* a turn (SmolLM2's says ``<|im_start|>``): the model then
  never stops where the template says a turn ends. Repaired to the token that closes an
  assistant turn in the rendered template (``<|im_end|>`` there), when it is one token.
- **A pad token.** Batched generation and training pad; with none, the first batch raises.
  Repaired to eos (padding is masked, so it never collides with a real token's role).

``check_tokenizer(tokenizer, where)`` does it and returns the repairs it made (each also
printed once). It reads the tokenizer only: no model is loaded, nothing is downloaded.
"""

from __future__ import annotations

from medreason_lib.settings.errors import UserError
from medreason_lib.settings.progress import say_once

_PROBE_SYSTEM = "SYSTEM-PROBE respond in the template"
_PROBE_USER = "USER-PROBE question"
_PROBE_REPLY = "REPLY-PROBE"


def _render(tokenizer, messages, **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def end_of_turn(tokenizer, where: str) -> str | None:
    """The special token that closes an assistant turn in the rendered template (None when
    the reply is followed by plain text or nothing)."""
    conversation = [
        {"role": "user", "content": _PROBE_USER},
        {"role": "assistant", "content": _PROBE_REPLY},
    ]
    try:
        text = _render(tokenizer, conversation)
    except Exception as exc:  # noqa: BLE001  (a template's own error, named in one line)
        raise UserError(f"{where}: its chat template cannot render a conversation: {exc}") from None
    after = text.split(_PROBE_REPLY, 1)[-1] if _PROBE_REPLY in text else ""
    special = set(getattr(tokenizer, "all_special_tokens", [])) | set(
        getattr(tokenizer, "added_tokens_encoder", {})
    )
    candidates = sorted((t for t in special if t and after.lstrip().startswith(t)), key=len)
    return candidates[-1] if candidates else None


def _reply_header(tokenizer, messages, prompt: str) -> str:
    """What ``add_generation_prompt`` adds: the text that opens the assistant's turn."""
    try:
        bare = _render(tokenizer, messages, add_generation_prompt=False)
    except Exception:  # noqa: BLE001
        bare = ""
    return prompt[len(bare) :] if bare and prompt.startswith(bare) else ""


def check_tokenizer(tokenizer, where: str) -> list[str]:
    """Check (and repair) ``tokenizer`` for the course's chat use; see the module docstring.
    Returns the repairs made, as sentences; a ``UserError`` naming ``where`` when it cannot
    be used."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"{where}: the tokenizer has no chat template; the course needs a chat (instruct) "
            "model, whose template renders the system prompt"
        )
    system = [
        {"role": "system", "content": _PROBE_SYSTEM},
        {"role": "user", "content": _PROBE_USER},
    ]
    try:
        prompt = _render(tokenizer, system, add_generation_prompt=True)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{where}: its chat template refuses a system turn: {exc}") from None
    if _PROBE_SYSTEM not in prompt:
        raise UserError(
            f"{where}: its chat template drops the system turn, where the course puts its "
            "instructions and answer template"
        )
    repairs = []
    header = _reply_header(tokenizer, system, prompt)
    eos = tokenizer.eos_token
    if eos is None or eos in header:
        closer = end_of_turn(tokenizer, where)
        if closer is None or closer in header:
            raise UserError(
                f"{where}: eos is {eos!r}, which does not end an assistant turn, and the chat "
                "template shows no special token that does"
            )
        why = "none" if eos is None else f"{eos!r}, which opens a turn"
        tokenizer.eos_token = closer
        repairs.append(f"eos was {why}: set to {closer!r}, which closes an assistant turn")
    if tokenizer.pad_token is None or tokenizer.pad_token in header:
        tokenizer.pad_token = tokenizer.eos_token
        repairs.append(f"no usable pad token: set to eos {tokenizer.eos_token!r}")
    for repair in repairs:
        say_once(f"tokenizer of {where}: {repair}")
    return repairs
