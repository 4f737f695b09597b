"""Chat tokenizers checked at load (issue 23): a system turn that renders, an eos that ends the
assistant's turn, a pad token. Repaired in one line, or refused in one. On the tiny models'
tokenizers: nothing is downloaded."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from medreason_lib import models
from medreason_lib.models.tiny import resolve_model_id
from medreason_lib.models.tokenizer_checks import check_tokenizer, end_of_turn
from medreason_lib.settings.errors import UserError


@pytest.fixture(params=["qwen2", "qwen3", "gpt-oss"])
def tokenizer(request):
    return AutoTokenizer.from_pretrained(resolve_model_id(f"tiny:{request.param}"))


def test_the_course_tokenizers_pass_unchanged(tokenizer):
    eos, pad = tokenizer.eos_token, tokenizer.pad_token
    assert check_tokenizer(tokenizer, "tiny") == []
    assert (tokenizer.eos_token, tokenizer.pad_token) == (eos, pad)


def test_an_eos_that_opens_a_turn_and_no_pad_are_repaired(capsys):
    """SmolLM2's GGUF tokenizer as transformers converts it: eos <|im_start|>, no pad."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_id("tiny:qwen2"))
    tokenizer.eos_token, tokenizer.pad_token = "<|im_start|>", None
    repairs = check_tokenizer(tokenizer, "a-gguf-build")
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert len(repairs) == 2 and "opens a turn" in repairs[0]
    assert "tokenizer of a-gguf-build: eos was '<|im_start|>'" in capsys.readouterr().out


def test_the_turn_closer_is_read_from_the_template(tokenizer):
    closer = end_of_turn(tokenizer, "tiny")
    assert closer in {"<|im_end|>", "<|end|>", "<|return|>"}


DROPS_SYSTEM = (
    "{% for m in messages %}{% if m.role != 'system' %}<|im_start|>{{ m.role }}\n"
    "{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
REFUSES_SYSTEM = (
    "{% if messages[0].role == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (None, "a-model: the tokenizer has no chat template"),
        (DROPS_SYSTEM, "a-model: its chat template drops the system turn"),
        (REFUSES_SYSTEM, "a-model: its chat template refuses a system turn"),
    ],
    ids=["no template", "drops the system turn", "raises on it"],
)
def test_a_template_without_a_system_turn_is_refused_in_one_line(template, message):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_id("tiny:qwen2"))
    tokenizer.chat_template = template
    with pytest.raises(UserError, match=message) as caught:
        check_tokenizer(tokenizer, "a-model")
    assert "\n" not in str(caught.value)


def test_loading_a_folder_with_a_broken_tokenizer_repairs_generation_too(tmp_path):
    source = resolve_model_id("tiny:qwen2")
    model, tokenizer = models._load_tiny(source)
    tokenizer.eos_token, tokenizer.pad_token = "<|im_start|>", None
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tokenizer = models._load_tiny(str(tmp_path))
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == end
    assert model.generation_config.eos_token_id == model.generation_config.pad_token_id == end
