"""Log-likelihood scoring with lm-evaluation-harness (``medreason_lib.evaluation.loglik``).

- the course's lm-eval task configs build the official evaluation sets from the shared
  reference data (counts and gold labels as in each SOURCE.md), with lm-eval's own prompts;
- scoring the tiny model end to end (a few items per task), through the library and the CLI;
- a hand check: our own summed log-probabilities of each option, computed with torch from
  prompts written out here, choose the same option as lm-eval (so the configs' prompt and
  choice strings are what we think they are);
- an adapter changes the scores, a model folder scores like the profile's model;
- bad sources, benchmarks, limits and adapters fail with clear errors;
- the published-results table names the course method each number is comparable with.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from medreason_lib import cli, models
from medreason_lib.data import benchmarks as eval_sets
from medreason_lib.evaluation import loglik
from medreason_lib.models.tiny import resolve_model_id
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import PROFILES

TINY = PROFILES["tiny"]
REFERENCE = paths.reference_data_dir()
needs_reference = pytest.mark.skipif(
    REFERENCE is None, reason="no shared/reference-data (MEDREASON_REFERENCE_DATA)"
)
OFFICIAL = {"pubmedqa": 500, "medqa": 1273, "medmcqa": 4183, "mmlu_medical": 1089}


# --------------------------------------------------------------------------- task configs


@pytest.fixture(scope="module")
def reference_tasks():
    return loglik.load_tasks(source=REFERENCE)


@needs_reference
def test_reference_counts_and_golds(reference_tasks):
    docs = {b: list(t.test_docs()) for b, t in reference_tasks.items()}
    assert {b: len(d) for b, d in docs.items()} == OFFICIAL
    golds = {b: Counter(reference_tasks[b].doc_to_target(d) for d in ds) for b, ds in docs.items()}
    # label counts from the reference data's SOURCE.md files (targets index the choices)
    assert golds["pubmedqa"] == {0: 276, 1: 169, 2: 55}
    assert golds["medqa"] == {0: 353, 1: 309, 2: 346, 3: 265}
    assert golds["medmcqa"] == {0: 1348, 1: 1085, 2: 925, 3: 825}  # raw cop is 1-based
    assert golds["mmlu_medical"] == {0: 235, 1: 254, 2: 248, 3: 352}
    assert len({d["id"] for ds in docs.values() for d in ds}) == sum(OFFICIAL.values())


@needs_reference
def test_prompts_are_lm_evals_own(reference_tasks):
    """Our configs render the raw items exactly as lm-eval's built-in tasks do."""
    from lm_eval.tasks.medmcqa.utils_medmcqa import doc_to_text as medmcqa_text
    from lm_eval.tasks.pubmedqa.preprocess_pubmedqa import doc_to_text as pubmedqa_text

    raw = json.loads((REFERENCE / "pubmedqa" / "ori_pqal.json").read_text())
    task = reference_tasks["pubmedqa"]
    for doc in list(task.test_docs())[:5]:
        context, choices, _ = loglik.prompt_and_choices(task, doc)
        assert context == pubmedqa_text(raw[doc["id"]])
        assert choices == ["yes", "no", "maybe"]
    lines = (REFERENCE / "mirage" / "medmcqa" / "dev.json").read_text().splitlines()[:5]
    task = reference_tasks["medmcqa"]
    for line, doc in zip(lines, list(task.test_docs())[:5], strict=True):
        row = json.loads(line)
        assert doc["id"] == row["id"]
        context, choices, gold = loglik.prompt_and_choices(task, doc)
        assert context == medmcqa_text(row)
        assert (choices, gold) == (["A", "B", "C", "D"], row["cop"] - 1)
    task = reference_tasks["mmlu_medical"]
    doc = next(d for d in task.test_docs() if d["subject"] == "clinical_knowledge")
    context, _, _ = loglik.prompt_and_choices(task, doc)
    assert context.startswith(
        "The following are multiple choice questions (with answers) about clinical knowledge."
        f"\n\n{doc['question']}\nA. {doc['options'][0]}\n"
    )
    assert context.endswith(f"D. {doc['options'][3]}\nAnswer:")


def test_subsample_is_the_generative_evaluations_items():
    """With the profile's n and seed, the documents are the items of profile_benchmarks."""
    docs = loglik.task_docs(source="bundled", n=5, seed=TINY.seed)
    items = eval_sets.load_benchmarks(list(docs), n=5, seed=TINY.seed, source="bundled")
    assert [d["id"] for b in docs for d in docs[b]] == items["id"]


# --------------------------------------------------------------------------- scoring


def _own_logliks(model, tokenizer, context: str, continuations: list[str]) -> list[float]:
    """Summed log-probabilities of each continuation after ``context``, computed here."""
    scores = []
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    for cont in continuations:
        whole = tokenizer(context + cont, add_special_tokens=False)["input_ids"]
        assert whole[: len(context_ids)] == context_ids
        with torch.no_grad():
            logits = model(torch.tensor([whole[:-1]])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        positions = range(len(context_ids) - 1, len(whole) - 1)
        scores.append(sum(logprobs[p, whole[p + 1]].item() for p in positions))
    return scores


def _hand_prompt(doc: dict) -> tuple[str, list[str]]:
    """The prompt and continuations we expect lm-eval to score, written out independently."""
    options = "".join(f"{k}. {v}\n" for k, v in zip("ABCD", doc["options"], strict=False))
    letters = [" A", " B", " C", " D"]
    if doc["task"] == "pubmedqa":
        return f"Abstract: {doc['context']}\nQuestion: {doc['question']}\nAnswer:", [
            " yes",
            " no",
            " maybe",
        ]
    if doc["task"] == "medqa":
        return f"Question: {doc['question']}\n{options}Answer:", letters
    if doc["task"] == "medmcqa":
        return f"Question: {doc['question']}\nChoices:\n{options}Answer:", letters
    subject = doc["subject"].replace("_", " ")
    head = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    return f"{head}{doc['question']}\n{options}Answer:", letters


@pytest.fixture(scope="module")
def tiny_report():
    """The tiny model on the first 3 bundled items of every task (the source's file order)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return loglik.evaluate_loglik(TINY, "loglik-test", limit=3, save=False)
    finally:
        torch.set_num_threads(before)


def test_tiny_end_to_end(tiny_report):
    report = tiny_report
    assert list(report.tasks) == list(loglik.LM_EVAL_TASKS)
    assert report.method == "loglik" and report.settings["num_fewshot"] == 0
    assert report.settings["harness"].startswith("lm_eval 0.4.")
    for benchmark, stats in report.tasks.items():
        rows = [r for r in report.records if r["task"] == benchmark]
        assert stats["n"] == len(rows) == 3
        assert stats["acc"] == pytest.approx(sum(r["acc"] for r in rows) / 3)
        assert stats["acc_ci"][0] - 1e-9 <= stats["acc"] <= stats["acc_ci"][1] + 1e-9
        for r in rows:  # acc is "the likeliest choice is the gold one"
            assert r["acc"] == float(r["chosen"] == r["gold"])
            assert r["acc_norm"] == float(r["chosen_norm"] == r["gold"])
            n_choices = 3 if benchmark == "pubmedqa" else 4
            assert len(r["loglik"]) == len(r["choices"]) == n_choices
    assert "pubmedqa" in str(report) and "acc_norm" in str(report)
    import lm_eval.models.huggingface as hf
    from tqdm import tqdm

    assert hf.tqdm is tqdm  # the course's bar replaced lm-eval's only while it scored


def test_hand_check_matches_lm_eval(tiny_report, one_thread):
    docs = loglik.task_docs(source="bundled")
    by_id = {d["id"]: d for ds in docs.values() for d in ds}
    with models.load_model(TINY) as loaded:
        for record in tiny_report.records[::2]:  # a few items of every task
            context, continuations = _hand_prompt(by_id[record["id"]])
            ours = _own_logliks(loaded.model, loaded.tokenizer, context, continuations)
            assert record["loglik"] == pytest.approx(ours, abs=1e-3), record["id"]
            assert max(range(len(ours)), key=ours.__getitem__) == record["chosen"]


def test_adapter_changes_scores_and_folder_matches_profile_model(
    tmp_path, monkeypatch, tiny_report, one_thread
):
    from peft import LoraConfig, get_peft_model

    folder = resolve_model_id(TINY.model_id, seed=TINY.seed)
    kwargs = {"benchmarks": ["medqa"], "limit": 3, "save": False}
    same = loglik.evaluate_loglik(TINY, "folder", base=folder, **kwargs)
    expected = [x for r in tiny_report.records if r["task"] == "medqa" for x in r["loglik"]]
    assert [x for r in same.records for x in r["loglik"]] == pytest.approx(expected, abs=1e-5)
    with models.load_model(TINY) as loaded:  # an adapter with random (non-zero) weights
        config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        get_peft_model(loaded.model, config).save_pretrained(tmp_path / "adapter")
    adapted = loglik.evaluate_loglik(TINY, "adapted", adapter=tmp_path / "adapter", **kwargs)
    assert "+ LoRA adapter@" in adapted.model
    assert [x for r in adapted.records for x in r["loglik"]] != pytest.approx(expected, abs=1e-3)
    # one loaded model, the adapter off then on: the same scores as the two separate loads
    monkeypatch.setenv("MEDREASON_RUNS", str(tmp_path / "runs"))
    before, after = loglik.evaluate_loglik_before_after(
        TINY, base=folder, adapter=tmp_path / "adapter", benchmarks=["medqa"], limit=3
    )
    assert [x for r in before.records for x in r["loglik"]] == pytest.approx(expected, abs=1e-5)
    flat_adapted = [x for r in adapted.records for x in r["loglik"]]
    assert [x for r in after.records for x in r["loglik"]] == pytest.approx(flat_adapted, abs=1e-5)
    assert after.model == adapted.model and "LoRA" not in before.model
    saved = loglik.LoglikReport.load(tmp_path / "runs" / "tiny" / "eval" / "loglik-after.json")
    assert saved.records == after.records


def test_cli_writes_report_beside_generative_ones(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.setenv("MEDREASON_RUNS", str(tmp_path))
    argv = ["eval", "--profile", "tiny", "--method", "loglik", "--baseline", "--n", "2"]
    assert cli.main(argv) == 0
    path = tmp_path / "tiny" / "eval" / "loglik-baseline-n2.json"
    assert f"report: {path}" in capsys.readouterr().out
    saved = loglik.LoglikReport.load(path)
    assert {b: t["n"] for b, t in saved.tasks.items()} == dict.fromkeys(loglik.LM_EVAL_TASKS, 2)
    assert len(saved.records) == 8 and saved.settings["n"] == 2
    assert saved.settings["source"] == "bundled"


# --------------------------------------------------------------------------- bad input


def test_bad_paths_and_settings_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        loglik.task_docs(source=tmp_path / "does-not-exist")
    with pytest.raises(FileNotFoundError, match="phrases_no_exclude_test.jsonl"):
        loglik.task_docs(["medqa"], source=tmp_path)  # a folder without the raw files
    with pytest.raises(loglik.LoglikError, match="gsm8k"):
        loglik.task_docs(["gsm8k"])
    with pytest.raises(loglik.LoglikError, match="n must be"):
        loglik.task_docs(n=0)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        loglik.evaluate_loglik(TINY, "x", adapter=tmp_path, save=False)
    with pytest.raises(FileNotFoundError, match="does-not-exist"):  # before any model loads
        loglik.evaluate_loglik(TINY, "x", source=tmp_path / "does-not-exist", save=False)
    bad = tmp_path / "medqa" / "phrases_no_exclude_test.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"question": "q?", "options": {"A": "a", "B": "b"}, "answer_idx": "A"}\n')
    with pytest.raises(ValueError, match=r"line 1.*options"):
        loglik.task_docs(["medqa"], source=tmp_path)
    generative = tmp_path / "baseline.json"
    generative.write_text(json.dumps({"model": "m", "settings": {}}))
    with pytest.raises(loglik.LoglikError, match="not a log-likelihood report"):
        loglik.LoglikReport.load(generative)


def test_cli_rejects_loglik_options_without_loglik(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDREASON_RUNS", str(tmp_path))
    assert cli.main(["eval", "--profile", "tiny", "--baseline", "--full"]) == 2
    assert "--full is for --method loglik" in capsys.readouterr().err
    argv = ["eval", "--profile", "tiny", "--baseline", "--source", str(tmp_path)]
    assert cli.main(argv) == 2
    argv = ["eval", "--profile", "tiny", "--baseline", "--method", "loglik", "--source", "/nope"]
    assert cli.main(argv) == 2
    assert "/nope" in capsys.readouterr().err


# --------------------------------------------------------------------------- published table


def test_published_table_names_the_comparable_method():
    methods = set(eval_sets.SCORING_METHODS)
    parser_methods = None
    for action in cli.build_parser()._subparsers._group_actions[0].choices["eval"]._actions:
        if action.dest == "method":
            parser_methods = set(action.choices)
    assert parser_methods == methods == {"generate", "loglik"}
    for row in eval_sets.PUBLISHED:
        assert row["method"] in (*methods, None), row["model"]
        if "log-likelihood" in row["scoring"]:
            assert row["method"] == "loglik", row["model"]
        elif row["scoring"].startswith("generative"):
            assert row["method"] == "generate", row["model"]
        if row["method"] == "loglik":
            assert (
                "--method loglik" in row["comparable"] and "--method generate" in row["comparable"]
            )
    loglik_rows = eval_sets.published_comparable("loglik")
    assert loglik_rows and all(r["method"] == "loglik" for r in loglik_rows)
    assert {r["model"] for r in loglik_rows}.isdisjoint(
        r["model"] for r in eval_sets.published_comparable("generate")
    )
    with pytest.raises(ValueError, match="unknown scoring method"):
        eval_sets.published_comparable("vibes")


def test_one_task_config_per_benchmark():
    """Every benchmark has its lm-eval task config (tests/project/test_packaging.py checks
    that the wheel ships them, with their ``utils.py``)."""
    yamls = sorted(p.stem for p in Path(loglik.TASKS_DIR).glob("*.yaml"))
    assert yamls == sorted(loglik.LM_EVAL_TASKS.values())
