"""PubMedQA's conclusions as warm-start traces (``medreason_lib.data.conclusion_traces``)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from medreason_lib.data import load_task
from medreason_lib.data.conclusion_traces import SOURCE, pubmedqa_conclusions
from medreason_lib.data.raw_formats import DataError, official_pubmedqa_test_pmids
from medreason_lib.data.traces import load_traces
from medreason_lib.settings import paths, progress
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training.sft_traces import trace_sft_data

BUNDLED = paths.data_dir() / "pubmedqa" / "ori_pqal.json"


def _pmid(row_id: str) -> str:
    return row_id.removeprefix(f"{SOURCE}-").rsplit("-", 1)[0]


def test_bundled_rows_are_balanced_training_items_in_the_prompt_format():
    rows = pubmedqa_conclusions("bundled", per_label=4)
    assert Counter(rows["answer"]) == {"yes": 4, "no": 4, "maybe": 4}
    raw = json.loads(BUNDLED.read_text())
    test = official_pubmedqa_test_pmids()
    train = {r["id"]: r for r in load_task("pubmedqa", "train", source="bundled", verbose=False)}
    for row in rows:
        pmid = _pmid(row["id"])
        assert pmid not in test and pmid in train
        assert row["reasoning"] == raw[pmid]["LONG_ANSWER"].strip()
        assert row["answer"] == raw[pmid]["final_decision"]
        assert row["question"].startswith("Context: ")
        assert row["question"].endswith("Answer with yes, no or maybe.")
        assert row["source"] == SOURCE and row["answer_source"] == "stated"
    # the same columns as the reasoning traces, so the two concatenate
    assert set(rows.column_names) == set(load_traces("bundled").column_names)


def test_a_short_label_repeats_its_items_and_says_so(capsys, monkeypatch):
    monkeypatch.setattr(progress, "_SAID", set())  # said once a process: say it here
    train = load_task("pubmedqa", "train", source="bundled", verbose=False)
    fewest = min(Counter(train["answer"]).values())
    rows = pubmedqa_conclusions("bundled", per_label=fewest + 2)
    assert len(rows) == 3 * (fewest + 2)
    assert "used more than once" in capsys.readouterr().out
    assert len(set(rows["id"])) == len(rows)  # the repeats are told apart


def test_an_item_without_a_conclusion_names_its_pmid(tmp_path):
    raw = json.loads(BUNDLED.read_text())
    test = official_pubmedqa_test_pmids()
    first_no = min(k for k, v in raw.items() if v["final_decision"] == "no" and k not in test)
    raw[first_no]["LONG_ANSWER"] = "  "
    (tmp_path / "ori_pqal.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match=f"PMID {first_no}: no conclusion"):
        pubmedqa_conclusions(tmp_path, per_label=2)
    with pytest.raises(ValueError, match="per_label must be at least 1"):
        pubmedqa_conclusions("bundled", per_label=0)


def test_smol_warm_start_rows_hold_the_conclusions_and_tiny_none():
    smol = PROFILES["smol"]
    rows, traces, _ = trace_sft_data(smol)
    sources = Counter(traces["source"])
    assert sources[SOURCE] == 3 * smol.warmstart_conclusions > 0
    assert sources["medical-o1"] > 0
    tiny_rows, tiny_traces, _ = trace_sft_data(PROFILES["tiny"])
    assert SOURCE not in set(tiny_traces["source"])
    # shuffled: the conclusions are not a block at the end
    users = [r["prompt"][1]["content"] for r in rows]
    tail = users[-len(users) // 4 :]
    assert not all(u.startswith("Context: ") for u in tail)


@pytest.mark.skipif(paths.reference_data_dir() is None, reason="no shared reference data")
def test_real_pubmedqa_conclusions_come_from_the_training_split_only():
    folder = paths.reference_data_dir() / "pubmedqa"
    rows = pubmedqa_conclusions(folder, per_label=10)
    truth = json.loads((folder / "test_ground_truth.json").read_text())
    raw = json.loads((folder / "ori_pqal.json").read_text())
    assert Counter(rows["answer"]) == {"yes": 10, "no": 10, "maybe": 10}
    for row in rows:
        pmid = _pmid(row["id"])
        assert pmid not in truth
        assert row["reasoning"] == raw[pmid]["LONG_ANSWER"].strip()
