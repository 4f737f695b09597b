"""Reasoning traces for SFT (issue 13, item 1): the upstream schemas checked row by row, the
mapping onto the template per chat family, decontamination against the evaluation sets, SFT
that lowers its loss, and GRPO that starts from the SFT weights."""

from __future__ import annotations

import json

import pytest

from medreason_lib import training
from medreason_lib.data import load_task, training_mix
from medreason_lib.data.traces import (
    SCHEMAS,
    TraceSchemaError,
    answer_sources,
    decontaminate_traces,
    load_traces,
    sft_rows,
    short_answer,
)
from medreason_lib.scoring.template import completion_text, format_completion, parse_completion
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import PROFILES

TINY = PROFILES["tiny"]
O1 = {"Question": "Does X help?", "Complex_CoT": "Trials say so.", "Response": "The answer is yes."}


def write(tmp_path, rows, name="medical_o1_sft.json"):
    path = tmp_path / name
    path.write_text(json.dumps(rows))
    return path


# --------------------------------------------------------------------------- schemas


def test_bundled_sample_is_in_the_upstream_medical_o1_schema():
    raw = json.loads((paths.data_dir() / "reasoning_traces/medical_o1_sft.json").read_text())
    assert 40 <= len(raw) <= 80
    assert all(set(row) == {"Question", "Complex_CoT", "Response"} for row in raw)
    traces = load_traces()
    assert len(traces) == len(raw)
    counts = answer_sources(traces)
    assert counts["stated"] > 0 and counts["response"] > 0
    assert counts["stated"] + counts["response"] == len(raw)  # nothing dropped
    for t, row in zip(traces, raw, strict=True):
        assert t["question"] == row["Question"] and t["reasoning"] == row["Complex_CoT"]
        if t["answer_source"] == "response":
            assert t["answer"] == row["Response"]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Iron deficiency fits. The answer is B.", "B"),
        ("So the answer is yes.", "yes"),
        ("The answer is: (C) because ...", "C"),
        ("Answer: no", "no"),
        ("**Answer:** D", "D"),
        ("Answer: Levothyroxine.", "Levothyroxine"),
        ("No. A repeat test is needed. Answer: no", "no"),  # after a sentence
        ("The key answer: none", None),  # not after a sentence end
        ("The answer is A at first sight, but the answer is C.", "C"),  # the last one
        ("The answer is a combination of rest and fluids.", None),  # no capital letter
        ("Common advice includes diet and exercise.", None),
    ],
)
def test_short_answer(response, expected):
    assert short_answer(response) == expected


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ({"Question": "Q?", "Response": "R"}, "field 'Complex_CoT' is missing"),
        ({**O1, "Response": "   "}, "field 'Response' is empty"),
        ({**O1, "Question": 7}, "field 'Question' must be text, got int"),
        ("just a string", "expected an object, got str"),
        ({"instruction": "Q?", "input": "", "output": "R"}, "pass schema='reasonmed'"),
    ],
)
def test_a_bad_row_names_the_file_row_and_field(tmp_path, row, says):
    path = write(tmp_path, [O1, O1, row])
    with pytest.raises(TraceSchemaError) as err:
        load_traces(path)
    assert str(path) in str(err.value) and "row 2" in str(err.value) and says in str(err.value)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(TraceSchemaError, match="expected a JSON list"):
        load_traces(write(tmp_path, {"Question": "Q"}))
    bad = tmp_path / "t.jsonl"
    bad.write_text(json.dumps(O1) + "\n{not json\n")
    with pytest.raises(TraceSchemaError, match="line 2: not JSON"):
        load_traces(bad)
    lines = tmp_path / "lines.json"  # JSON Lines under a .json name: read as JSON Lines
    lines.write_text(json.dumps(O1) + "\n" + json.dumps({**O1, "Response": "Answer: no"}) + "\n")
    assert load_traces(lines)["answer"] == ["yes", "no"]
    with pytest.raises(TraceSchemaError, match="no rows"):
        load_traces(write(tmp_path, []))
    with pytest.raises(FileNotFoundError, match="ReasonMed.json"):
        load_traces(tmp_path, "reasonmed")  # a folder without the schema's file
    with pytest.raises(ValueError, match="unknown trace schema"):
        load_traces("bundled", "alpaca")


def test_reasonmed_schema(tmp_path):
    preamble = "Please answer the following multiple-choice question:\n"
    rows = [
        {
            "instruction": preamble + "Which vitamin prevents scurvy?\nA. A\nB. C\nC. D\nD. K",
            "input": "",
            "output": "Collagen synthesis needs vitamin C.\nThe answer is B.",
        },
        {
            "instruction": "What lowers heart rate?",
            "input": "Think of receptors.",
            "output": "A beta-blocker.",
        },
    ]
    write(tmp_path, rows, SCHEMAS["reasonmed"].file_name)
    first, second = load_traces(tmp_path, "reasonmed")  # a folder: its ReasonMed.json
    assert (
        first["question"].startswith("Which vitamin") and "Please answer" not in first["question"]
    )
    assert first["reasoning"] == rows[0]["output"] and first["answer"] == "B"
    assert first["answer_source"] == "stated"
    assert second["question"] == "What lowers heart rate?\nThink of receptors."
    assert second["answer"] == "A beta-blocker." and second["answer_source"] == "response"
    with pytest.raises(TraceSchemaError, match="row 0: field 'output' is empty"):
        load_traces(write(tmp_path, [{**rows[0], "output": ""}], "r.json"), "reasonmed")


# --------------------------------------------------------------------------- mapping


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "gpt-oss"])
def test_sft_rows_put_each_trace_in_the_template(family):
    traces = load_traces()
    kwargs = {"enable_thinking": False} if family == "qwen3" else None
    rows = sft_rows(traces, family, kwargs)
    assert len(rows) == len(traces) and rows["id"] == traces["id"]
    for row, t in zip(rows, traces, strict=True):
        system, user = row["prompt"]
        assert system["role"] == "system" and "<reasoning>" in system["content"]
        assert user == {"role": "user", "content": t["question"]}
        (message,) = row["completion"]
        if family == "gpt-oss":
            assert message["thinking"] == t["reasoning"] and message["content"] == t["answer"]
        else:
            assert message["content"] == format_completion(t["reasoning"], t["answer"])
        parsed = parse_completion(completion_text(message))  # what the rewards read
        assert parsed.well_formed and parsed.answer.strip() == t["answer"].strip()
    assert ("chat_template_kwargs" in rows.column_names) == (kwargs is not None)
    with pytest.raises(ValueError, match="unknown chat family"):
        sft_rows(traces, "llama")


# --------------------------------------------------------------------------- decontamination


def test_decontamination_removes_the_planted_and_an_edited_evaluation_item(tmp_path, capsys):
    evals = training_mix.evaluation_sets(TINY)
    raw = json.loads((paths.data_dir() / "reasoning_traces/medical_o1_sft.json").read_text())
    item = load_task("pubmedqa", "test", source="bundled", verbose=False)[2]
    words = item["question"].split()  # an evaluation question with one word dropped
    edited = " ".join(words[:-2] + words[-1:])
    rows = [*raw, {"Question": edited, "Complex_CoT": "Because.", "Response": "Maybe."}]
    traces = load_traces(write(tmp_path, rows))
    kept, found = decontaminate_traces(traces, evals)
    removed = {c.train_id: c for c in found.collisions}
    planted = next(i for i, r in enumerate(raw) if r["Question"].startswith("A 72-year-old"))
    assert set(removed) == {f"medical-o1-{planted:06d}", f"medical-o1-{len(raw):06d}"}
    assert removed[f"medical-o1-{planted:06d}"].eval_id == "medqa-test-00000"
    assert removed[f"medical-o1-{planted:06d}"].reason == "ngram"
    assert len(kept) == len(rows) - 2 and found.removed == {"reasoning_traces": 2}
    assert "removed 2 of" in capsys.readouterr().out


def test_decontamination_against_the_real_medqa_test_set():
    reference = paths.reference_data_dir()
    if reference is None or not (reference / "mirage/medqa").is_dir():
        pytest.skip("no shared reference data on this machine")
    medqa = load_task("medqa", "test", source=reference / "mirage/medqa", verbose=False)
    assert len(medqa) == 1273
    real = medqa[100]
    options = "\n".join(f"{k}. {v}" for k, v in zip("ABCD", real["options"], strict=True))
    traces = load_traces()
    leak = {**traces[0], "id": "planted", "question": f"{real['question']}\n\n{options}"}
    from datasets import Dataset

    mixed = Dataset.from_list([*traces.to_list(), leak])
    kept, found = decontaminate_traces(mixed, {"medqa test": medqa}, verbose=False)
    assert [c.train_id for c in found.collisions] == ["planted"]
    assert found.collisions[0].eval_id == real["id"] and len(kept) == len(traces)


# --------------------------------------------------------------------------- SFT, then GRPO


def test_sft_lowers_the_loss_and_grpo_starts_from_its_weights(tmp_path, one_thread):
    import torch
    from safetensors.torch import load_file

    from medreason_lib import models
    from medreason_lib.models.tiny import resolve_model_id
    from medreason_lib.training import sft_traces

    rows, kept, contamination = sft_traces.trace_sft_data(TINY)
    assert contamination.n_removed == 1 and len(rows) == len(kept)
    sft = sft_traces.run_trace_sft(TINY, rows, tmp_path / "sft", steps=12, force=True)  # trains
    losses = [loss for _, loss in sft.losses]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3]) - 0.3
    again = sft_traces.run_trace_sft(TINY, rows, tmp_path / "sft", steps=12)  # the stamp
    assert again.losses == sft.losses
    copied = sft_traces.run_trace_sft(TINY, rows, tmp_path / "copy", steps=12)  # tiny's cache
    assert copied.losses == sft.losses and (tmp_path / "copy/model.safetensors").is_file()

    # one short GRPO step (one prompt, 8-token completions): what is checked is where it starts
    quick = TINY.replace(max_steps=1, per_device_train_batch_size=4, max_completion_length=8)
    prompts = load_task("pubmedqa", "train", n=8, source="bundled", verbose=False)
    run = training.train(
        quick, run_dir=tmp_path / "grpo", base_model=sft.model_dir, dataset=prompts, sample_every=0
    )
    assert run.base_model == str(sft.model_dir)
    assert json.loads((tmp_path / "grpo/run.json").read_text())["base_model"] == str(sft.model_dir)
    assert not (tmp_path / "grpo/sft-warmstart").exists()  # no tiny warm start on top
    adapter_config = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(sft.model_dir)
    sft_weights = load_file(str(sft.model_dir / "model.safetensors"))
    untrained = load_file(
        str(resolve_model_id(TINY.model_id, seed=TINY.seed)) + "/model.safetensors"
    )
    assert any(not torch.equal(sft_weights[k], untrained[k]) for k in sft_weights)
    with models.load_model(TINY, base=run.base_model, adapter=run.adapter_dir) as loaded:
        base = loaded.model.get_base_model().state_dict()
        for name, tensor in sft_weights.items():  # the GRPO run's model under its LoRA
            key = next(k for k in base if k.replace("base_layer.", "").endswith(name))
            assert torch.equal(base[key], tensor), name


def test_rows_cut_by_the_sequence_budget_are_reported_and_too_many_refused(
    tmp_path, monkeypatch, capsys
):
    """TRL cuts a row at ``max_length`` (the profile's ``max_seq_length``) and keeps its start:
    the end of a long trace, its answer included, is not learned. The bundled rows are 103 to
    180 tokens with the tiny tokenizer (as TRL's SFTTrainer renders them): at 160, 5 of 44 are
    cut (reported); at 140, 16 of 44 (36%, refused before the trainer is built)."""
    import trl

    from medreason_lib import models
    from medreason_lib.training import sft_traces
    from medreason_lib.training.config import ConfigError

    rows, _, _ = sft_traces.trace_sft_data(TINY)
    _, tokenizer, _ = models.load_for_training(TINY)
    lengths = sft_traces.trace_lengths(rows, tokenizer)
    assert (len(lengths), min(lengths), max(lengths)) == (44, 103, 180)
    capsys.readouterr()
    assert sft_traces.check_trace_lengths(lengths, TINY) == 0  # 384: nothing cut, nothing said
    assert capsys.readouterr().out == ""
    assert sft_traces.check_trace_lengths(lengths, TINY.replace(max_seq_length=160)) == 5
    out = capsys.readouterr().out
    assert "5 of 44" in out and "longest 180" in out and "max_seq_length 160" in out
    monkeypatch.setattr(trl, "SFTTrainer", lambda **kw: pytest.fail("built a trainer"))
    with pytest.raises(ConfigError, match=r"36% .*16 of 44.*longest 180.*max_seq_length=140"):
        sft_traces.run_trace_sft(TINY.replace(max_seq_length=140), rows, tmp_path / "s", force=True)
    with pytest.raises(ConfigError, match="max_cut_share"):  # the share is a setting
        sft_traces.check_trace_lengths(lengths, TINY.replace(max_seq_length=160), max_cut_share=0.1)


def test_gpu_sft_trains_q3x1_qlora_without_vllm_and_merges_for_grpo(tmp_path, monkeypatch):
    """The GPU path with Unsloth and TRL replaced by recorders (no GPU here): the model is
    loaded without a vLLM engine with Q3X1's LoRA, the adapter is saved, then merged into
    16-bit weights in the folder GRPO starts from."""
    import trl

    from medreason_lib import models
    from medreason_lib.training import sft_traces

    seen = {}

    class Model:
        def save_pretrained_merged(self, folder, tokenizer, save_method):
            seen["merged"] = (folder, tokenizer, save_method)

    class Trainer:
        def __init__(self, model, args, train_dataset, processing_class):
            self.model, self.args = model, args
            seen["columns"] = train_dataset.column_names
            self.state = type("State", (), {"log_history": [{"step": 1, "loss": 2.0}]})()

        def remove_callback(self, cls):
            pass

        def add_callback(self, callback):
            pass

        def train(self):
            self.state.log_history.append({"step": 2, "loss": 1.5})

        def save_model(self, folder):
            seen["adapter"] = folder

    class Tokenizer:  # every row fits: 10 tokens
        def apply_chat_template(self, conversation, **kwargs):
            seen["template_kwargs"] = kwargs
            return {"input_ids": [0] * 10}

    tokenizer = Tokenizer()

    def load(profile, base=None):
        seen["profile"] = profile
        return Model(), tokenizer, None

    monkeypatch.setattr(models, "load_for_training", load)
    monkeypatch.setattr(models, "close_trainer", lambda trainer: None)
    monkeypatch.setattr(trl, "SFTTrainer", Trainer)
    monkeypatch.setattr(trl, "SFTConfig", lambda **kw: kw)
    q3x1 = PROFILES["8b"].with_sft_setting("q3x1")
    rows = sft_rows(load_traces(), q3x1.family, dict(q3x1.chat_template_kwargs))
    result = sft_traces.run_trace_sft(q3x1, rows, tmp_path / "sft", steps=2)
    loaded = seen["profile"]
    assert not loaded.use_vllm and (loaded.lora_rank, loaded.lora_alpha) == (128, 256)
    assert "id" not in seen["columns"] and "chat_template_kwargs" in seen["columns"]
    assert seen["adapter"] == str(tmp_path / "sft/adapter")
    assert seen["merged"] == (str(tmp_path / "sft"), tokenizer, "merged_16bit")
    assert seen["template_kwargs"]["enable_thinking"] is False  # the row's, as TRL renders it
    assert result.model_dir == tmp_path / "sft" and result.adapter_dir == tmp_path / "sft/adapter"
    assert result.losses == [(1, 2.0), (2, 1.5)]
    with pytest.raises(ValueError, match="steps must be at least 1"):
        sft_traces.run_trace_sft(q3x1, rows, tmp_path / "sft", steps=0)


def test_a_renamed_profile_reuses_the_same_trace_sft(tmp_path):
    """The SFT's stamp is what it learns from: a profile file based on a built-in one under
    another name (another tracker project, another run folder) must not train it again."""
    from medreason_lib.training.sft import sft_settings
    from medreason_lib.training.sft_traces import _stamp, trace_sft_data

    base = PROFILES["tiny"]
    renamed = base.replace(name="my-copy", report_to=("trackio",))
    rows = trace_sft_data(base)[0].remove_columns(["id"])

    def stamp(profile):
        return _stamp(profile, rows, sft_settings(profile, tmp_path / profile.name, 10))

    assert stamp(renamed) == stamp(base)
    assert stamp(base.replace(learning_rate=1.0)) == stamp(base)  # GRPO's, not the SFT's
    assert stamp(base) != _stamp(base, rows, sft_settings(base, tmp_path, 11))
