"""Decontamination against every evaluation set, inside ``train()``: a test item put into the
training source is gone from the rows the trainer receives, and ``run.json`` counts it."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import CapturingTrainer
from medreason_lib import training
from medreason_lib.data import load_task, records_to_dataset, training_mix
from medreason_lib.data.decontamination import decontaminate_against
from medreason_lib.data.raw_formats import official_pubmedqa_test_pmids, record
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import PROFILES

TINY = PROFILES["tiny"]


def test_every_evaluation_set_is_checked_and_counted_per_task(capsys):
    evals = {
        "pubmedqa test": load_task("pubmedqa", "test", source="bundled", verbose=False),
        "gsm8k test": load_task("gsm8k", "test", source="bundled", verbose=False),
        "medqa test": load_task("medqa", "test", source="bundled", verbose=False),
    }
    clean = load_task("gsm8k", "train", source="bundled", verbose=False)
    medqa_item = evals["medqa test"][3]
    words = evals["gsm8k test"][5]["question"].split()
    leaks = [
        # a MedQA test vignette copied into a *PubMedQA* training row: caught across tasks
        record("pubmedqa", "leak-cross", medqa_item["question"], "yes", context="abstract"),
        # a GSM8K test problem with every eighth word dropped: only the fuzzy check sees it
        record("gsm8k", "leak-fuzzy", " ".join(w for i, w in enumerate(words) if i % 8 != 7), "1"),
        # a PubMedQA test PMID under new text: only the id check can see it
        record("pubmedqa", sorted(official_pubmedqa_test_pmids())[0], "New text?", "no"),
    ]
    train = records_to_dataset([*clean.to_list(), *leaks])
    kept, found = decontaminate_against(
        train, evals, test_ids={"pubmedqa": official_pubmedqa_test_pmids()}
    )
    assert len(kept) == len(clean) and set(kept["id"]) == set(clean["id"])
    assert found.removed == {"gsm8k": 1, "pubmedqa": 2}
    assert found.by_reason == {"id": 1, "ngram": 1, "fuzzy": 1}
    assert found.by_set["medqa test"] == 1 and found.by_set["gsm8k test"] == 1
    assert found.checked == {"pubmedqa test": 16, "gsm8k test": 16, "medqa test": 16}
    out = capsys.readouterr().out
    assert "removed 3 of 27 training rows (per task: gsm8k 1, pubmedqa 2" in out


def leaky_source(tmp_path):
    """The bundled data, with GSM8K's test set the real one (when the reference data is
    here) and two test items slipped into the training files, slightly reformatted."""
    folder = tmp_path / "raw"
    shutil.copytree(paths.data_dir(), folder)
    reference = paths.reference_data_dir()
    if reference is not None:  # the real GSM8K test set, in a scratch folder of this test
        shutil.copy(reference / "gsm8k" / "test.jsonl", folder / "gsm8k" / "test.jsonl")
    test = [json.loads(line) for line in (folder / "gsm8k" / "test.jsonl").read_text().splitlines()]
    problem = test[min(100, len(test) - 1)]
    reformatted = "  " + problem["question"].lower().replace(". ", ".  ").rstrip("?") + " ?\n"
    with (folder / "gsm8k" / "train.jsonl").open("a") as f:
        f.write(json.dumps({"question": reformatted, "answer": problem["answer"]}) + "\n")

    pqal = json.loads((folder / "pubmedqa" / "ori_pqal.json").read_text())
    truth = json.loads((folder / "pubmedqa" / "test_ground_truth.json").read_text())
    pmid = next(p for p in sorted(official_pubmedqa_test_pmids()) if p not in truth)
    item = {"QUESTION": "Is this abstract one of the test set's?", "CONTEXTS": ["Text."]}
    if reference is not None:  # the real test item under its real PMID
        real = json.loads((reference / "pubmedqa" / "ori_pqal.json").read_text())[pmid]
        item = {"QUESTION": real["QUESTION"].upper(), "CONTEXTS": real["CONTEXTS"]}
    pqal[pmid] = {**item, "final_decision": "maybe"}
    (folder / "pubmedqa" / "ori_pqal.json").write_text(json.dumps(pqal))
    return folder, pmid, reformatted


def test_train_never_trains_on_an_evaluation_item(tmp_path, monkeypatch, capsys):
    folder, pmid, reformatted = leaky_source(tmp_path)
    profile = TINY.replace(
        data_source=str(folder),
        sft_warmup_steps=0,
        mix_weights={"pubmedqa": 0.5, "gsm8k": 0.5},
        train_size=50,  # the whole of both pools: 25 PubMedQA and 25 GSM8K rows
    )
    mix, _ = training_mix.build_training_mix(profile)
    leaked = [r["id"] for r in mix if r["id"] == pmid or r["question"] == reformatted.strip()]
    assert len(leaked) == 2  # without decontamination, both test items would be trained on

    handed = {}

    def build_trainer(profile, run_dir, *, dataset=None, **kwargs):
        handed["dataset"] = dataset
        return CapturingTrainer(dataset), []

    monkeypatch.setattr(training, "build_trainer", build_trainer)
    run = training.train(profile, run_dir=tmp_path / "run", sample_every=0)

    trained_on = handed["dataset"]
    assert pmid not in trained_on["id"]
    assert not any(reformatted.strip().lower() == q.strip().lower() for q in trained_on["question"])
    assert len(trained_on) == 48
    info = json.loads((run.run_dir / "run.json").read_text())
    assert info["decontamination_removed"] == {"pubmedqa": 1, "gsm8k": 1}
    assert info["decontamination"]["by_reason"]["id"] == 1
    assert info["training_rows"] == 48
    assert set(info["label_shares"]["pubmedqa"]) == {"yes", "no", "maybe"}
    assert info["label_targets"]["pubmedqa"]["maybe"] == pytest.approx(4 / 25, abs=1e-3)
    out = capsys.readouterr().out
    assert "decontamination: removed 2 of 50 training rows (per task: pubmedqa 1, gsm8k 1" in out
    assert "training data: 48 rows; label shares pubmedqa" in out


def test_rows_given_to_train_are_decontaminated_too():
    test_item = load_task("gsm8k", "test", source="bundled", verbose=False)[0]
    rows = load_task("gsm8k", "train", source="bundled", verbose=False)
    leaky = records_to_dataset([*rows.to_list(), {**test_item, "id": "copy"}])
    kept, record_ = training_mix.prepare_training_data(TINY, leaky)
    assert "copy" not in kept["id"] and record_["decontamination_removed"] == {"gsm8k": 1}
    assert record_["label_targets"] is None  # given rows: nothing was chosen
