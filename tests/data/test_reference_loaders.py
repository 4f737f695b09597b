"""The raw-file loaders on real public test sets (the shared reference data, when present).

The counts and label distributions are the ones recorded in each SOURCE.md of the reference
folder; they pin down that every raw format, and MedMCQA's 1-based ``cop``, is read right.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from medreason_lib.data import decontaminate, load_task
from medreason_lib.settings import paths

REFERENCE = paths.reference_data_dir()
if REFERENCE is None:
    pytest.skip(
        "no reference data (set MEDREASON_REFERENCE_DATA or place shared/reference-data "
        "beside the checkout)",
        allow_module_level=True,
    )


def load(task: str, split: str, sub: str):
    return load_task(task, split, source=REFERENCE / sub, verbose=False)


@pytest.fixture(scope="module")
def pubmedqa_test():
    return load("pubmedqa", "test", "pubmedqa")


def test_pubmedqa_official_test_split(pubmedqa_test):
    assert len(pubmedqa_test) == 500
    assert Counter(pubmedqa_test["answer"]) == {"yes": 276, "no": 169, "maybe": 55}
    truth = json.loads((REFERENCE / "pubmedqa" / "test_ground_truth.json").read_text())
    assert dict(zip(pubmedqa_test["id"], pubmedqa_test["answer"], strict=True)) == truth


def test_pubmedqa_train_is_the_other_500(pubmedqa_test):
    train = load("pubmedqa", "train", "pubmedqa")
    assert len(train) == 500
    assert not set(train["id"]) & set(pubmedqa_test["id"])


def test_mirage_pubmedqa_matches_the_official_split(pubmedqa_test):
    mirage = load("pubmedqa", "test", "mirage/pubmedqa")  # no ground truth file beside it
    assert dict(zip(mirage["id"], mirage["answer"], strict=True)) == dict(
        zip(pubmedqa_test["id"], pubmedqa_test["answer"], strict=True)
    )


def test_shipped_pmid_list_equals_the_official_test_set():
    shipped = json.loads((paths.data_dir() / "pubmedqa_test_pmids.json").read_text())
    truth = json.loads((REFERENCE / "pubmedqa" / "test_ground_truth.json").read_text())
    assert shipped == list(truth)


def test_medqa_test():
    ds = load("medqa", "test", "mirage/medqa")
    assert len(ds) == 1273
    assert Counter(ds["answer"]) == {"A": 353, "B": 309, "C": 346, "D": 265}
    assert Counter(ds["subject"]) == {"step1": 679, "step2&3": 594}


def test_medmcqa_dev_with_one_based_cop():
    ds = load("medmcqa", "test", "mirage/medmcqa")
    assert len(ds) == 4183
    assert Counter(ds["answer"]) == {"A": 1348, "B": 1085, "C": 925, "D": 825}
    assert Counter(ds["subject"])["Dental"] == 1318


def test_gsm8k_test_golds_are_numbers():
    ds = load("gsm8k", "test", "gsm8k")
    assert len(ds) == 1319
    for gold in ds["answer"]:
        float(gold)
        assert "," not in gold
    raw = (REFERENCE / "gsm8k" / "test.jsonl").read_text().splitlines()
    with_comma = [i for i, line in enumerate(raw) if "," in json.loads(line)["answer"][-12:]]
    assert len(with_comma) == 14
    assert "2125" in ds["answer"] and {"-3", "-10"} <= set(ds["answer"])


def test_mmlu_medical_from_the_mirage_folder():
    ds = load("mmlu_medical", "test", "mirage/mmlu")
    assert len(ds) == 1089
    assert Counter(ds["answer"]) == {"A": 235, "B": 254, "C": 248, "D": 352}
    assert Counter(ds["subject"]) == {
        "anatomy": 135,
        "clinical_knowledge": 265,
        "college_biology": 144,
        "college_medicine": 173,
        "medical_genetics": 100,
        "professional_medicine": 272,
    }


def test_reference_root_folder_is_searched():
    # the root of the layout works too: <root>/<task>/ or <root>/mirage/<task>/
    assert len(load_task("medqa", "test", source=REFERENCE, verbose=False)) == 1273
    assert len(load_task("pubmedqa", "test", source=REFERENCE, verbose=False)) == 500


@pytest.mark.parametrize(
    ("task", "sub"),
    [
        ("pubmedqa", "pubmedqa"),
        ("medqa", "mirage/medqa"),
        ("medmcqa", "mirage/medmcqa"),
        ("gsm8k", "gsm8k"),
        ("mmlu_medical", "mirage/mmlu"),
    ],
)
def test_bundled_samples_do_not_overlap_the_real_test_sets(task, sub):
    real = load(task, "test", sub)
    for split in ("train", "test") if task != "mmlu_medical" else ("test",):
        mine = load_task(task, split, source="bundled", verbose=False)
        _, report = decontaminate(mine, real, verbose=False)
        assert report.removed == [], str(report)


@pytest.mark.parametrize(
    ("task", "sub"),
    [("medqa", "mirage/medqa"), ("medmcqa", "mirage/medmcqa"), ("mmlu_medical", "mirage/mmlu")],
)
def test_shuffled_options_keep_every_answer_on_its_option(task, sub):
    """Balancing the gold letter on the real sets: the gold option's text never changes,
    options that point at positions stay put, and every letter lands near 25%."""
    from medreason_lib.data.training_mix.label_balance import balance_choices, positional_options

    real = load(task, "test", sub)
    shuffled, balance = balance_choices(real, seed=0)
    moved = 0
    for old, new in zip(real, shuffled, strict=True):
        assert new["id"] == old["id"] and new["question"] == old["question"]
        gold_text = old["options"]["ABCD".index(old["answer"])]
        assert new["options"]["ABCD".index(new["answer"])] == gold_text
        assert sorted(new["options"]) == sorted(old["options"])
        for i in positional_options(old["options"]):
            assert new["options"][i] == old["options"][i], old["options"]
        moved += new["options"] != old["options"]
    assert moved > 0.9 * len(real)
    letters = Counter(shuffled["answer"])
    assert all(abs(letters[k] / len(real) - 0.25) <= 0.02 for k in "ABCD"), letters
    assert balance.counts == dict(sorted(letters.items()))


def test_medmcqa_rows_naming_options_are_not_shuffled():
    from medreason_lib.data.training_mix.label_balance import balance_choices

    real = load("medmcqa", "test", "mirage/medmcqa")
    shuffled, _ = balance_choices(real, seed=0)
    named = [
        (old, new)
        for old, new in zip(real, shuffled, strict=True)
        if any(o.strip().lower() in ("both", "both of the above") for o in old["options"])
    ]
    assert len(named) >= 10
    assert all(
        new["options"] == old["options"] and new["answer"] == old["answer"] for old, new in named
    )
