"""Export on the tiny profile: the adapter trained, the merge keeps it, the serving files carry
the system prompt, and the GPU-only or credentialed steps refuse clearly before any work."""

import json
import re

import pytest
import torch

from medreason_lib import data, export, models
from medreason_lib.evaluation.generation import render_prompts
from medreason_lib.export import ask
from medreason_lib.export import gguf as export_gguf
from medreason_lib.export import hub as export_hub
from medreason_lib.models.tiny import build_tiny
from medreason_lib.scoring import template
from medreason_lib.settings.profiles import PROFILES
from tools import api_drift as ad

TINY = PROFILES["tiny"]
FAMILY_PROFILES = [PROFILES["tiny"], PROFILES["tiny-qwen3"], PROFILES["tiny-gptoss"]]
FAKE_TOKEN = "hf_FAKEtoken0123456789abcdefSECRET"
ROW = {"task": "pubmedqa", "question": "Q?", "context": "C.", "options": []}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tiny_run):
    """The session's trained tiny run (tests/conftest.py: the 150-step warm start, then GRPO),
    whose LoRA B matrices moved off zero far enough to change the greedy completion of the
    fixed prompt. A warm start too short for any reward difference leaves the adapter
    exactly zero (the tiny gpt-oss stand-in after 20 steps): verify_adapter catches that."""
    return tiny_run


@pytest.fixture(scope="module")
def merged(run):
    return export.merge(TINY, run)


def _prompt_logits(model, tokenizer):
    text = render_prompts(tokenizer, [export.verification_prompt()], {})[0]
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        return model(**enc).logits[0]


# --------------------------------------------------------------------------- the checks


def test_the_trained_adapter_verifies(run, merged):
    report = export.verify_adapter(TINY, run, merged_dir=merged)
    print(report)
    assert report.ok, report.problems
    weights = report.adapter
    assert weights.trained and weights.b_nonzero == weights.b_matrices > 0
    assert weights.a_matrices == weights.b_matrices
    assert report.trained_vs_base_max_abs > 1e-3
    if not report.completions_differ:  # a small adapter can keep one prompt's greedy tokens
        assert "greedy completions are identical" in str(report)
    assert report.merged_vs_trained_max_abs <= export.MERGE_ATOL
    assert report.merged_vs_base_rms > 100 * report.merged_vs_trained_rms
    assert "verified" in str(report)


def test_merged_model_reloaded_from_disk_computes_the_lora_models_logits(run, merged):
    """Independently of verify_adapter: plain transformers on the merged folder vs peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert not (merged / "adapter_config.json").exists()
    assert "peft" not in (merged / "config.json").read_text()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    reloaded = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(run.base_model, dtype=torch.float32)
    lora = PeftModel.from_pretrained(base, str(run.adapter_dir)).eval()
    merged_logits = _prompt_logits(reloaded, tokenizer)
    lora_logits = _prompt_logits(lora, tokenizer)
    torch.testing.assert_close(merged_logits, lora_logits, atol=export.MERGE_ATOL, rtol=0)
    with lora.disable_adapter():
        base_logits = _prompt_logits(lora, tokenizer)
    assert (merged_logits - base_logits).abs().max() > 1e-3


def test_an_untrained_adapter_is_detected(run, tmp_path):
    zero = export.untrained_adapter(TINY, run.base_model, tmp_path / "fresh")
    weights = export.adapter_weights(zero)
    assert weights.b_matrices > 0 and weights.b_nonzero == 0 and not weights.trained
    report = export.verify_adapter(TINY, run, adapter_dir=zero)
    assert not report.ok
    assert report.trained_vs_base_max_abs == 0
    assert not report.completions_differ
    assert any("untrained" in p for p in report.problems)
    assert "NOT VERIFIED" in str(report)


def test_a_merge_that_saved_the_base_is_caught(run, tmp_path):
    """The known failure: a "merged" folder that holds the base weights without the LoRA."""
    with models.load_model(TINY, base=run.base_model) as loaded:
        loaded.model.save_pretrained(tmp_path / "bad")
        loaded.tokenizer.save_pretrained(tmp_path / "bad")
    report = export.verify_adapter(TINY, run, merged_dir=tmp_path / "bad")
    assert not report.ok
    (problem,) = [p for p in report.problems if p.startswith("3.")]
    assert "behaves like the base model" in problem


def test_merge_is_reused_for_the_same_adapter(run, merged, capsys):
    assert export.merge(TINY, run) == merged
    assert "reusing" in capsys.readouterr().out


def test_saved_adapter_folder(run):
    from peft import PeftModel

    folder = export.save_adapter(TINY, run)
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
    assert "training_args.bin" not in names  # a pickle; nothing a user needs
    card = (folder / "README.md").read_text()
    assert template.SYSTEM_PROMPT in card and ask.DISCLAIMER in card
    with models.load_model(TINY, base=run.base_model) as loaded:
        PeftModel.from_pretrained(loaded.model, str(folder))  # loads as an adapter
    assert export.adapter_weights(folder).trained


# --------------------------------------------------------------------------- GPU only / errors


def test_gguf_on_a_cpu_is_a_clear_error_before_any_loading(run, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the GGUF check")

    monkeypatch.setattr(export_gguf, "load_trained", no_loading)
    with pytest.raises(export.ExportUnavailable, match="GGUF export needs the GPU path"):
        export.to_gguf(TINY, run, "q4_k_m")
    assert not (export.export_dir(run) / "gguf").exists()
    monkeypatch.setattr(export_gguf, "gpu_memory_gb", lambda: None)
    with pytest.raises(export.ExportUnavailable, match="without an NVIDIA GPU"):
        export.check_gguf(PROFILES["3b"], "q8_0")
    with pytest.raises(export.ExportUnavailable, match="q4_k_m or q8_0"):
        export.check_gguf(PROFILES["3b"], "q3_k_zz")
    assert "\n" not in export.gguf_unavailable_reason(TINY)  # one line for the CLI


def test_unsloth_keywords():
    assert export.unsloth_merged_kwargs() == {"save_method": "merged_16bit"}
    assert export.unsloth_gguf_kwargs("q8_0") == {"quantization_method": "q8_0"}
    with pytest.raises(ValueError, match="merged_4bit_forced"):
        export.unsloth_merged_kwargs("merged_4bit")


def test_push_without_a_token_fails_before_any_upload(run, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(export_hub, "_upload", lambda *a: pytest.fail("uploaded without a token"))
    with pytest.raises(export.MissingToken, match="HF_TOKEN"):
        export.push_to_hub(run.adapter_dir, "someone/medreason-test")
    with pytest.raises(export.ExportUnavailable, match="user/name"):
        export.check_push("not a repo id")
    monkeypatch.delenv(export.REPO_ENV, raising=False)
    with pytest.raises(export.ExportUnavailable, match="no Hub repository named"):
        export.check_push(None)


def test_push_offline_is_refused(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(export.ExportUnavailable, match="HF_HUB_OFFLINE") as err:
        export.check_push("someone/medreason-test")
    assert FAKE_TOKEN not in str(err.value)


def test_the_token_is_used_but_never_printed_or_written(run, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    uploads = []

    def fake_upload(folder, repo_id, token, private, path_in_repo):
        uploads.append((folder, repo_id, token, private))
        return f"https://huggingface.co/{repo_id}"

    monkeypatch.setattr(export_hub, "_upload", fake_upload)
    result = export.export_run(
        TINY, run.run_dir, merge_weights=True, modelfile=True, push="someone/medreason-test"
    )
    assert result.verify.ok and result.pushed == ["https://huggingface.co/someone/medreason-test"]
    ((folder, repo, token, private),) = uploads
    assert (folder, repo, private) == (result.merged, "someone/medreason-test", True)
    assert token == FAKE_TOKEN  # the token reaches the Hub client, and only it
    out = capsys.readouterr()
    assert FAKE_TOKEN not in out.out + out.err
    written = [p for p in run.run_dir.rglob("*") if p.is_file()]
    assert len(written) > 10
    assert not [p for p in written if FAKE_TOKEN.encode() in p.read_bytes()]


# --------------------------------------------------------------------------- serving files


@pytest.mark.parametrize("profile", FAMILY_PROFILES, ids=lambda p: p.name)
def test_chat_pieces_reproduce_the_chat_template(profile):
    _, tokenizer = build_tiny(profile.model_id.removeprefix("tiny:"))
    kwargs = profile.chat_template_kwargs
    pieces = export.chat_pieces(tokenizer, kwargs)
    one = data.build_prompt(ROW)
    assert pieces.render(template.SYSTEM_PROMPT, [one[1]["content"]]) == (
        tokenizer.apply_chat_template(one, tokenize=False, add_generation_prompt=True, **kwargs)
    )
    two = [*one, {"role": "assistant", "content": "R1"}, {"role": "user", "content": "U2"}]
    assert pieces.render(template.SYSTEM_PROMPT, [one[1]["content"], "R1", "U2"]) == (
        tokenizer.apply_chat_template(two, tokenize=False, add_generation_prompt=True, **kwargs)
    )


def _modelfile_value(text: str, command: str) -> str:
    """A triple-quoted Modelfile value as Ollama's parser reads it (verbatim between quotes)."""
    start = text.index(f'\n{command} """') + len(f'\n{command} """')
    return text[start : text.index('"""', start)]


@pytest.mark.parametrize("profile", FAMILY_PROFILES, ids=lambda p: p.name)
def test_modelfile_sets_the_exact_system_prompt_template_and_stops(profile):
    _, tokenizer = build_tiny(profile.model_id.removeprefix("tiny:"))
    stops = export.stop_tokens(tokenizer)
    text = export.modelfile_text(profile, tokenizer, "./model.gguf", stops=stops)
    assert _modelfile_value(text, "SYSTEM") == template.SYSTEM_PROMPT
    assert "\nFROM ./model.gguf\n" in text
    assert tokenizer.eos_token in stops
    for stop in stops:
        assert f'\nPARAMETER stop "{stop}"\n' in text
    assert "\nPARAMETER temperature 0\n" in text
    go = _modelfile_value(text, "TEMPLATE")
    pieces = export.chat_pieces(tokenizer, profile.chat_template_kwargs)
    assert go.startswith(pieces.head + "{{ .System }}" + pieces.after_system)
    assert go.endswith("{{ end }}{{ end }}" + pieces.generation)
    assert go.count("{{") == go.count("}}")


def test_modelfile_for_the_merged_folder(run, merged):
    path = export.write_modelfile(TINY, merged, export.export_dir(run) / "Modelfile")
    text = path.read_text()
    assert "\nFROM ./merged\n" in text  # relative: the export folder can move as a whole
    assert '\nPARAMETER stop "<|im_end|>"\n' in text
    assert '\nPARAMETER stop "<|endoftext|>"\n' in text  # generation_config's second eos
    assert f'SYSTEM """{template.SYSTEM_PROMPT}"""' in text
    assert ask.DISCLAIMER in text


@pytest.mark.parametrize("profile", FAMILY_PROFILES, ids=lambda p: p.name)
def test_vllm_chat_template_adds_the_system_prompt_by_default(profile):
    _, tokenizer = build_tiny(profile.model_id.removeprefix("tiny:"))
    jinja = export.vllm_chat_template(tokenizer, profile)
    trained = data.build_prompt(ROW)
    expected = tokenizer.apply_chat_template(
        trained, tokenize=False, add_generation_prompt=True, **profile.chat_template_kwargs
    )
    without_system = tokenizer.apply_chat_template(
        trained[1:], chat_template=jinja, tokenize=False, add_generation_prompt=True
    )
    assert without_system == expected
    own = [{"role": "system", "content": "Be brief."}, trained[1]]
    rendered = tokenizer.apply_chat_template(
        own, chat_template=jinja, tokenize=False, add_generation_prompt=True
    )
    assert "Be brief." in rendered and "Respond in the following format" not in rendered


def test_vllm_serve_command_and_request(run, merged):
    files = export.write_vllm_files(TINY, merged)
    args = files.command.split()
    assert args[:3] == ["vllm", "serve", str(merged.resolve())]
    assert args[args.index("--chat-template") + 1] == str(files.chat_template.resolve())
    assert args[args.index("--max-model-len") + 1] == str(TINY.max_seq_length)
    assert template.SYSTEM_PROMPT in files.chat_template.read_text().replace("\\n", "\n")
    assert files.request["messages"] == data.build_prompt(export.VERIFY_ROW)
    assert files.request["messages"][0] == {"role": "system", "content": template.SYSTEM_PROMPT}
    body = json.loads(re.search(r"-d '(.*)'$", files.curl).group(1))
    assert body == files.request
    assert files.command in files.script.read_text()


def test_vllm_serve_engine_flags_are_engineargs_fields():
    """The engine flags of the command are fields of the pinned vLLM's EngineArgs (read from
    its source, as in tests/gpu_path/test_api_drift.py); --chat-template and --port are the OpenAI
    server's own flags."""
    try:
        source = ad.Source(ad.vllm_sources_path(ad.gpu_pins()["vllm"]))
    except FileNotFoundError as missing:
        pytest.fail(str(missing), pytrace=False)
    fields = source.class_fields("vllm/engine/arg_utils.py", "EngineArgs")
    args = export.vllm_serve_args(PROFILES["3b"], "merged", "t.jinja")
    flags = {a[2:].replace("-", "_") for a in args if a.startswith("--")}
    ad.assert_keywords_exist(fields, flags - {"chat_template", "port"}, "vllm EngineArgs")


# --------------------------------------------------------------------------- ask


def test_ask_builds_the_training_prompt_and_reads_the_answer():
    seen = []

    def generate(prompts):
        seen.extend(prompts)
        return [template.format_completion("The trial says so.", "Yes.")]

    answer = ask.ask(generate, "Does it work?", context="A trial.", profile=TINY)
    assert seen == [data.build_prompt({**ROW, "question": "Does it work?", "context": "A trial."})]
    assert answer.task == "pubmedqa" and answer.answer == "yes" and answer.answer_text == "Yes."
    assert answer.reasoning == "The trial says so." and answer.well_formed
    assert answer.disclaimer == ask.DISCLAIMER and ask.DISCLAIMER in str(answer)

    options = ["aspirin", "ibuprofen", "insulin", "warfarin"]
    letter = ask.ask(
        lambda p: [template.format_completion("...", "(C) insulin")], "Which?", options=options
    )
    assert (letter.task, letter.answer) == ("medqa", "C")
    number = ask.ask(lambda p: ["<reasoning>x</reasoning><answer>$1,000</answer>"], "How many?",
                     task="gsm8k")  # fmt: skip
    assert number.answer == "1000"
    hedge = ask.ask(lambda p: [template.format_completion("x", "yes or no")], "Q?", context="C")
    assert hedge.answer is None and "no readable answer" in str(hedge)


def test_ask_refuses_questions_without_a_training_format():
    with pytest.raises(ask.AskError, match="--context"):
        ask.ask_prompt("What is the dose of paracetamol?")
    with pytest.raises(ask.AskError, match="exactly 4 options"):
        ask.ask_prompt("Which?", options=["a", "b"])
    with pytest.raises(ask.AskError, match="not both"):
        ask.ask_prompt("Which?", context="C", options=list("abcd"))
    with pytest.raises(ask.AskError, match="unknown task"):
        ask.ask_prompt("Q", task="usmle")


def test_ask_the_trained_model(run):
    with ask.load_trained(TINY, run.run_dir) as loaded:
        answer = ask.ask(loaded, "Does walking help?", context="A trial.", profile=TINY)
    assert answer.prompt == data.build_prompt(
        {**ROW, "question": "Does walking help?", "context": "A trial."}
    )
    assert answer.completion and answer.disclaimer == ask.DISCLAIMER


def test_unsloth_attaches_its_saving_methods_when_it_loads_an_adapter_folder():
    """``export.load_trained`` on a GPU profile hands Unsloth the adapter folder: the pinned
    ``FastLanguageModel.from_pretrained`` wraps the base with ``PeftModel.from_pretrained`` and
    ``patch_peft_model``, which attaches ``save_pretrained_merged``/``save_pretrained_gguf`` to
    the LoRA model itself (read from the pinned source, as in tests/gpu_path/test_api_drift.py)."""
    try:
        source = ad.Source(ad.wheel_path("unsloth", ad.gpu_pins()["unsloth"]))
    except FileNotFoundError as missing:
        pytest.fail(str(missing), pytrace=False)
    load = source.function("unsloth/models/loader.py", "FastLanguageModel.from_pretrained")
    assert load.calls("PeftModel.from_pretrained")
    assert load.calls("dispatch_model.patch_peft_model")
    patch = source.function("unsloth/models/llama.py", "FastLlamaModel.patch_peft_model")
    assert patch.calls("patch_saving_functions")
