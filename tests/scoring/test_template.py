"""The template and the parser that reads all three output styles back."""

from medreason_lib.scoring.template import (
    SYSTEM_PROMPT,
    completion_text,
    format_completion,
    is_strict_template,
    parse_completion,
)

GOOD = format_completion("The trial was randomised.\nMortality fell.", "yes")


def test_system_prompt_is_the_medqwen3b_prompt():
    assert SYSTEM_PROMPT == (
        "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n"
        "<answer>\n...\n</answer>\n"
    )


def test_plain_template_multiline_reasoning():
    parsed = parse_completion(GOOD)
    assert parsed.style == "template"
    assert parsed.reasoning == "The trial was randomised.\nMortality fell."
    assert parsed.answer == "yes"
    assert parsed.well_formed
    assert is_strict_template(GOOD)


def test_missing_answer_is_none_and_not_well_formed():
    parsed = parse_completion("<reasoning>\nthinking...\n</reasoning>\n")
    assert parsed.answer is None
    assert parsed.answer_blocks == ()
    assert not parsed.well_formed


def test_truncated_answer_block_is_no_answer():
    parsed = parse_completion("<reasoning>\nr\n</reasoning>\n<answer>\nye")
    assert parsed.answer is None and not parsed.well_formed


def test_disagreeing_answer_blocks_give_no_answer_but_keep_blocks():
    text = GOOD + "\n<answer>\nno\n</answer>"
    parsed = parse_completion(text)
    assert parsed.answer is None
    assert parsed.answer_blocks == ("yes", "no")
    assert not parsed.well_formed


def test_trailing_text_is_reported_and_breaks_well_formed():
    parsed = parse_completion(GOOD + "\nHope this helps!")
    assert parsed.trailing.strip() == "Hope this helps!"
    assert parsed.answer == "yes"
    assert not parsed.well_formed
    assert not is_strict_template(GOOD + "\nHope this helps!")


def test_answer_before_reasoning_is_not_well_formed():
    text = "<answer>\nyes\n</answer>\n<reasoning>\nr\n</reasoning>"
    assert not parse_completion(text).well_formed


def test_qwen3_think_block_maps_to_reasoning():
    parsed = parse_completion("<think>\nThe abstract says X.\n</think>\n\nyes")
    assert parsed.style == "think"
    assert parsed.reasoning == "The abstract says X."
    assert parsed.answer == "yes"
    assert parsed.well_formed


def test_qwen3_think_block_followed_by_template_keeps_template():
    parsed = parse_completion("<think>\n\n</think>\n\n" + GOOD)
    assert parsed.style == "think"
    assert parsed.answer == "yes"
    assert parsed.reasoning.startswith("The trial")


def test_harmony_with_special_tokens():
    text = (
        "<|channel|>analysis<|message|>Compare the two arms.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>B<|return|>"
    )
    parsed = parse_completion(text)
    assert parsed.style == "harmony"
    assert parsed.reasoning == "Compare the two arms."
    assert parsed.answer == "B"
    assert parsed.well_formed


def test_harmony_decoded_without_special_tokens():
    parsed = parse_completion("analysisCompare the two arms.assistantfinalB")
    assert parsed.style == "harmony"
    assert parsed.reasoning == "Compare the two arms."
    assert parsed.answer == "B"


def test_harmony_final_channel_using_the_template():
    text = "<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>final<|message|>"
    parsed = parse_completion(text + GOOD + "<|return|>")
    assert parsed.answer == "yes"
    assert parsed.reasoning.startswith("The trial")


def test_harmony_without_final_channel_has_no_answer():
    parsed = parse_completion("<|channel|>analysis<|message|>still thinking")
    assert parsed.answer is None
    assert parsed.reasoning == "still thinking"


def test_completion_text_accepts_every_shape():
    assert completion_text(None) == ""
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "abc"}]) == "abc"
    assert completion_text({"role": "assistant", "content": None}) == ""
    assert completion_text([{"role": "assistant"}, 3]) == ""
    assert completion_text(42) == "42"


def test_parse_never_raises_on_garbage():
    for junk in [None, "", "<answer>", "</answer><answer>", "\x00\ud800", "<" * 10_000, 3.5]:
        parsed = parse_completion(junk)
        assert parsed.answer is None
        assert not parsed.well_formed


def test_parsed_message_with_thinking_keeps_the_reasoning():
    message = {"role": "assistant", "thinking": "Compare arms.", "content": "B"}
    parsed = parse_completion([message])
    assert parsed.style == "harmony"
    assert parsed.reasoning == "Compare arms." and parsed.answer == "B"


def test_empty_native_reasoning_is_not_well_formed():
    for text in ("<think>\n\n</think>\n\nThe answer is 55.", "analysisassistantfinalyes"):
        parsed = parse_completion(text)
        assert not parsed.well_formed
        assert parsed.answer is not None  # still readable, just not in the template
