"""Serving files that carry the course's system prompt: an Ollama Modelfile and vLLM.

The model was trained with ``template.SYSTEM_PROMPT`` and needs it at inference
(MedQwen3B-Reasoner's card says so for every engine). Both formats are derived from the
tokenizer's own chat template (``chat_pieces``), so the served prompt is the one the model saw:

- ``write_modelfile``: an Ollama Modelfile (FROM a GGUF file or a merged folder) with the
  family's chat format as TEMPLATE, the SYSTEM prompt, the stop tokens and greedy decoding;
- ``write_vllm_files``: a chat template for ``vllm serve --chat-template`` that puts the
  system prompt (and the profile's chat-template keywords) in by default, ``serve.sh``, and an
  example OpenAI-style request.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medreason_lib.export.save import VERIFY_ROW, _load_tokenizer
from medreason_lib.scoring import template
from medreason_lib.settings.profiles import Profile


@dataclass(frozen=True)
class ChatPieces:
    """The fixed text of a chat format around the messages, derived from a tokenizer's own
    chat template: ``head + system + after_system + user + (user_to_assistant + reply +
    assistant_to_user + user)... + generation``."""

    head: str
    after_system: str
    user_to_assistant: str
    assistant_to_user: str
    generation: str

    def render(self, system: str, turns: list[str]) -> str:
        """The prompt for a conversation of alternating user/assistant texts (user first and
        last), the way the pieces compose; the tests compare it with the tokenizer's."""
        text = self.head + system + self.after_system + turns[0]
        for reply, user in zip(turns[1::2], turns[2::2], strict=True):
            text += self.user_to_assistant + reply + self.assistant_to_user + user
        return text + self.generation


_MARKS = ("SYSTEMMARKq7", "USERONEMARKq7", "REPLYMARKq7", "USERTWOMARKq7")


def chat_pieces(tokenizer, chat_template_kwargs: dict | None = None) -> ChatPieces:
    """Split the chat template's rendering of a marked conversation into ``ChatPieces``."""
    kwargs = dict(chat_template_kwargs or {})
    system, user1, reply, user2 = _MARKS
    conversation = [
        {"role": "system", "content": system},
        {"role": "user", "content": user1},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": user2},
    ]
    text = tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True, **kwargs
    )
    parts = re.split("|".join(_MARKS), text)
    if len(parts) != 5 or re.findall("|".join(_MARKS), text) != list(_MARKS):
        raise ValueError(
            "cannot derive a serving template: the chat template reorders or drops turns"
        )
    pieces = ChatPieces(*parts)
    single = tokenizer.apply_chat_template(
        conversation[:2], tokenize=False, add_generation_prompt=True, **kwargs
    )
    if pieces.render(system, [user1]) != single:
        raise ValueError(
            "cannot derive a serving template: one-turn and two-turn renderings differ"
        )
    return pieces


def ollama_template(pieces: ChatPieces) -> str:
    """An Ollama (Go text/template) TEMPLATE that renders a chat as the pieces do: the system
    prompt (the Modelfile's SYSTEM unless the client sends its own), then the turns."""
    for piece in dataclasses.astuple(pieces):
        if "{{" in piece or '"""' in piece:
            raise ValueError("the chat format's text cannot be embedded in an Ollama template")
    return (
        f"{pieces.head}{{{{ .System }}}}{pieces.after_system}"
        "{{ $seen := false }}{{ range .Messages }}"
        '{{ if eq .Role "user" }}'
        f"{{{{ if $seen }}}}{pieces.assistant_to_user}{{{{ end }}}}"
        "{{ $seen = true }}{{ .Content }}"
        '{{ else if eq .Role "assistant" }}'
        f"{pieces.user_to_assistant}{{{{ .Content }}}}"
        "{{ end }}{{ end }}"
        f"{pieces.generation}"
    )


def stop_tokens(tokenizer, model_dir: str | Path | None = None) -> list[str]:
    """The tokens that end a reply: the tokenizer's eos and the ``eos_token_id`` list of the
    model's ``generation_config.json`` (Qwen: ``<|im_end|>``, ``<|endoftext|>``)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config = Path(model_dir) / "generation_config.json" if model_dir else None
    if config and config.is_file():
        eos = json.loads(config.read_text()).get("eos_token_id")
        ids |= {eos} if isinstance(eos, int) else set(eos or [])
    return [tokenizer.convert_ids_to_tokens(int(i)) for i in sorted(ids)]


def modelfile_text(
    profile: Profile,
    tokenizer,
    source: str,
    *,
    stops: list[str],
    temperature: float = 0.0,
) -> str:
    """An Ollama Modelfile: FROM ``source`` (a .gguf file or a merged safetensors folder),
    the family's chat format as TEMPLATE, the course's SYSTEM prompt, stop tokens, and
    greedy decoding (temperature 0, as the course evaluates)."""
    pieces = chat_pieces(tokenizer, profile.chat_template_kwargs)
    if '"""' in template.SYSTEM_PROMPT:
        raise ValueError("the system prompt cannot be quoted in a Modelfile")
    lines = [
        f"# Ollama Modelfile for medreason (profile {profile.name}), written by "
        "medreason_lib.export.",
        f"# {template.DISCLAIMER}",
        "# SYSTEM is the exact system prompt the model was trained with; keep it. A client that",
        "# sends its own system message replaces it (Ollama uses the request's system message).",
        "# Create and run: ollama create medreason -f Modelfile && ollama run medreason",
        f"FROM {source}",
        f'TEMPLATE """{ollama_template(pieces)}"""',
        f'SYSTEM """{template.SYSTEM_PROMPT}"""',
        *(f'PARAMETER stop "{s}"' for s in stops),
        f"PARAMETER temperature {temperature:g}",
        f"PARAMETER num_ctx {profile.max_seq_length}",
        f"PARAMETER num_predict {profile.max_completion_length}",
    ]
    return "\n".join(lines) + "\n"


def write_modelfile(
    profile: Profile,
    source: str | Path,
    out_path: str | Path | None = None,
    *,
    tokenizer_dir: str | Path | None = None,
) -> Path:
    """Write an Ollama Modelfile for ``source`` (a GGUF file, or a merged folder, which Ollama
    converts itself). FROM is written relative to the Modelfile, so the export folder can be
    moved as a whole. The tokenizer (for the chat format and the stop tokens) is read from
    ``tokenizer_dir``, default the merged folder or the GGUF file's folder."""
    source = Path(source)
    out = Path(out_path) if out_path else source.parent / "Modelfile"
    tok_dir = (
        Path(tokenizer_dir) if tokenizer_dir else (source if source.is_dir() else source.parent)
    )
    tokenizer = _load_tokenizer(tok_dir)
    relative = os.path.relpath(source, out.parent)
    text = modelfile_text(
        profile, tokenizer, "./" + Path(relative).as_posix(), stops=stop_tokens(tokenizer, tok_dir)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def vllm_chat_template(tokenizer, profile: Profile) -> str:
    """The tokenizer's chat template with two defaults put in front: the course's system
    prompt when the request has no system message, and the profile's chat-template keywords
    (Qwen3 ``enable_thinking=false``, gpt-oss ``reasoning_effort``) when the request does not
    set them. ``vllm serve --chat-template <file>`` uses it; nothing else changes."""
    lines = [
        "{#- medreason: the course's system prompt and chat settings by default; a request's own",
        "    system message or chat_template_kwargs win. The original template follows. -#}",
        "{%- if not messages or messages[0]['role'] != 'system' %}",
        "{%- set messages = [{'role': 'system', 'content': "
        + json.dumps(template.SYSTEM_PROMPT)
        + "}] + messages %}",
        "{%- endif %}",
    ]
    for key, value in profile.chat_template_kwargs.items():
        lines.append(
            f"{{%- if {key} is not defined %}}{{%- set {key} = {json.dumps(value)} %}}"
            "{%- endif %}"
        )
    return "\n".join(lines) + "\n" + tokenizer.chat_template


def served_name(profile: Profile) -> str:
    return f"medreason-{profile.name}"


def vllm_serve_args(
    profile: Profile, merged_dir: str | Path, chat_template: str | Path, *, port: int = 8000
) -> list[str]:
    """``vllm serve`` on the merged folder with the system-prompt chat template."""
    return [
        "vllm",
        "serve",
        str(merged_dir),
        "--served-model-name",
        served_name(profile),
        "--chat-template",
        str(chat_template),
        "--max-model-len",
        str(profile.max_seq_length),
        "--port",
        str(port),
    ]


def example_request(profile: Profile, row: dict | None = None) -> dict:
    """An OpenAI-style chat request body in the training format: the system message and the
    user turn exactly as ``data.build_prompt`` makes them, greedy decoding."""
    from medreason_lib import data

    body: dict[str, Any] = {
        "model": served_name(profile),
        "messages": data.build_prompt(row or VERIFY_ROW),
        "temperature": 0,
        "max_tokens": profile.max_completion_length,
    }
    if profile.chat_template_kwargs:
        body["chat_template_kwargs"] = dict(profile.chat_template_kwargs)
    return body


def curl_command(body: dict, port: int = 8000) -> str:
    return (
        f"curl http://localhost:{port}/v1/chat/completions -H 'Content-Type: application/json' "
        f"-d {shlex.quote(json.dumps(body))}"
    )


@dataclass(frozen=True)
class VLLMFiles:
    chat_template: Path
    command: str
    request: dict
    curl: str
    script: Path


def write_vllm_files(
    profile: Profile, merged_dir: str | Path, out_dir: str | Path | None = None
) -> VLLMFiles:
    """Write ``vllm/chat_template.jinja`` (the system prompt by default) and ``vllm/serve.sh``
    beside the merged folder; return the command and an example request."""
    merged_dir = Path(merged_dir)
    out = Path(out_dir) if out_dir else merged_dir.parent / "vllm"
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _load_tokenizer(merged_dir)
    jinja = out / "chat_template.jinja"
    jinja.write_text(vllm_chat_template(tokenizer, profile))
    command = shlex.join(vllm_serve_args(profile, merged_dir.resolve(), jinja.resolve()))
    body = example_request(profile)
    curl = curl_command(body)
    script = out / "serve.sh"
    script.write_text(
        "#!/bin/sh\n# Serve the merged model with an OpenAI-compatible API (GPU, vllm installed).\n"
        "# The chat template adds the course's system prompt when a request has none.\n"
        f"exec {command}\n\n# Then, from another shell:\n# {curl}\n"
    )
    script.chmod(0o755)
    return VLLMFiles(jinja, command, body, curl, script)
