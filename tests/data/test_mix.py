"""The training mix chooses each task's label distribution (``medreason_lib.data.training_mix``
and its ``label_balance``): sampling towards a target, scarce labels said out loud, options
shuffled to balance the correct letter without ever detaching an answer from its option."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest

from medreason_lib.data import load_task, records_to_dataset, training_mix
from medreason_lib.data.raw_formats import record
from medreason_lib.data.training_mix import label_balance
from medreason_lib.data.training_mix.label_balance import (
    balance_choices,
    label_shares,
    positional_options,
    sample_by_label,
    shuffle_slots,
)
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import PROFILES

TINY = PROFILES["tiny"]
TEST_LIKE = {"yes": 0.552, "no": 0.338, "maybe": 0.11}  # the PubMedQA test set's shares


def pubmedqa_rows(counts: dict[str, int], prefix: str = "p"):
    rows = []
    for label, k in counts.items():
        rows += [
            record("pubmedqa", f"{prefix}{label}{i}", f"Q {label} {i}?", label, context="c")
            for i in range(k)
        ]
    return records_to_dataset(rows)


def shares_of(ds) -> dict[str, float]:
    counts = Counter(ds["answer"])
    return {k: v / len(ds) for k, v in counts.items()}


# --------------------------------------------------------------------------- sampling


def test_a_93_percent_yes_source_lands_within_two_points_of_the_target(capsys):
    pool = pubmedqa_rows({"yes": 1860, "no": 110, "maybe": 30})  # 93% / 5.5% / 1.5%
    rows, balance = sample_by_label(pool, TEST_LIKE, 1000, seed=1, scarce="replace")
    assert len(rows) == 1000
    got = shares_of(rows)
    for label, target in TEST_LIKE.items():
        assert abs(got[label] - target) <= 0.02, (label, got)
    assert balance.shares == pytest.approx(got)  # the report tells the truth about the rows
    assert balance.pool == {"yes": 1860, "no": 110, "maybe": 30}
    # the scarce labels are said, with how the target was met
    notes = " ".join(balance.notes)
    assert "no is scarce: 110 rows for a target of 338" in notes
    assert "maybe is scarce: 30 rows for a target of 110" in notes
    assert "drawn with replacement" in notes
    assert balance.distinct == {"yes": 552, "no": 110, "maybe": 30}
    assert set(rows["id"]) <= set(pool["id"])
    # yes is plentiful: no yes row is repeated
    yes_ids = [i for i, a in zip(rows["id"], rows["answer"], strict=True) if a == "yes"]
    assert len(yes_ids) == len(set(yes_ids)) == 552


def test_cap_uses_each_row_once_and_reports_the_missed_target():
    pool = pubmedqa_rows({"yes": 930, "no": 60, "maybe": 10})
    rows, balance = sample_by_label(pool, TEST_LIKE, 500, seed=0, scarce="cap")
    assert len(rows) == 500 and len(set(rows["id"])) == 500  # no repeats
    counts = Counter(rows["answer"])
    assert counts["no"] == 60 and counts["maybe"] == 10  # every scarce row, once
    assert balance.counts == dict(counts) and balance.distinct == dict(counts)
    assert "capped at 10 (2.0% of the mix)" in " ".join(balance.notes)


def test_error_policy_and_bad_targets_name_the_setting():
    pool = pubmedqa_rows({"yes": 90, "no": 10})
    with pytest.raises(ValueError, match="scarce labels .*maybe: 11 wanted, 0 available"):
        sample_by_label(pool, TEST_LIKE, 100, scarce="error", where="profile.label_targets")
    with pytest.raises(ValueError, match="has none; lower its share in profile.label_targets"):
        sample_by_label(pool, TEST_LIKE, 100, scarce="replace", where="profile.label_targets")
    with pytest.raises(
        ValueError, match=r"label_targets\['pubmedqa'\]: .*no label\(s\) \['perhaps'\]"
    ):
        training_mix.label_target(
            TINY.replace(label_targets={"pubmedqa": {"yes": 0.5, "perhaps": 0.5}}),
            "pubmedqa",
            {},
            0,
        )
    with pytest.raises(ValueError, match="sum to 0.9000, not 1"):
        sample_by_label(pool, {"yes": 0.5, "no": 0.4}, 10)
    with pytest.raises(ValueError, match="scarce_labels must be one of"):
        sample_by_label(pool, {"yes": 0.5, "no": 0.5}, 10, scarce="repeat")
    with pytest.raises(ValueError, match="gsm8k answers with numbers"):
        training_mix.label_target(TINY.replace(label_targets={"gsm8k": {"1": 1.0}}), "gsm8k", {}, 0)


# --------------------------------------------------------------------------- the profile's mix


def skewed_raw_folder(tmp_path, artificial_yes=930, artificial_no=70):
    """The bundled data plus an ``ori_pqaa.json`` skewed like pqa_artificial (93% yes)."""
    folder = tmp_path / "raw"
    shutil.copytree(paths.data_dir(), folder)
    items = {
        f"9{i:07d}": {
            "QUESTION": f"Does synthetic factor {i} change outcome {i * 7}?",
            "CONTEXTS": [f"Synthetic abstract number {i}."],
            "final_decision": "yes" if i < artificial_yes else "no",
        }
        for i in range(artificial_yes + artificial_no)
    }
    (folder / "pubmedqa" / "ori_pqaa.json").write_text(json.dumps(items))
    return folder


def test_profile_mix_follows_the_labelled_split_not_the_artificial_one(tmp_path, capsys):
    folder = skewed_raw_folder(tmp_path)
    profile = TINY.replace(
        data_source=str(folder),
        train_splits={"pubmedqa": ("train", "train_artificial")},
        mix_weights={"pubmedqa": 0.7, "medqa": 0.3},  # MedQA: the balanced letters too
        train_size=80,
    )
    mixed, report = training_mix.build_training_mix(profile)
    labelled = load_task("pubmedqa", "train", source=folder, verbose=False)
    target = shares_of(labelled)  # the default: the labelled split's own shares
    assert "maybe" in target
    pub = mixed.filter(lambda r: r["task"] == "pubmedqa")
    assert len(pub) == 56 and len(mixed) == 80
    got = shares_of(pub)
    for label in ("yes", "no", "maybe"):
        assert abs(got[label] - target[label]) <= 0.02, (label, got, target)
    assert report.label_shares["pubmedqa"] == pytest.approx(got, abs=1e-4)
    assert report.tasks["pubmedqa"].pool_shares["yes"] > 0.9  # the source was skewed
    out = capsys.readouterr().out
    assert "pubmedqa/train_artificial: 1000 items" in out
    assert "maybe is scarce" in out and "drawn with replacement" in out  # 3 maybes in 24
    assert "default: the labelled train split's own shares (24 rows)" in out
    assert report.to_dict()["tasks"]["pubmedqa"]["target"] == pytest.approx(target, abs=1e-3)
    letters = shares_of(mixed.filter(lambda r: r["task"] == "medqa"))
    assert all(abs(letters[k] - 0.25) <= 0.02 for k in "ABCD"), letters  # 24 rows: 6 each
    assert report.tasks["medqa"].method == "shuffled options"


def test_label_targets_setting_and_inherit(tmp_path):
    folder = skewed_raw_folder(tmp_path)
    base = TINY.replace(
        data_source=str(folder),
        train_splits={"pubmedqa": ("train", "train_artificial")},
        mix_weights={"pubmedqa": 1.0},
    )
    chosen = base.replace(label_targets={"pubmedqa": {"yes": 0.5, "no": 0.5}}, train_size=200)
    mixed, report = training_mix.build_training_mix(chosen)
    assert report.label_shares["pubmedqa"] == {"yes": 0.5, "no": 0.5, "maybe": 0.0}
    inherited = base.replace(label_targets={"pubmedqa": None}, train_size=200)
    mixed, report = training_mix.build_training_mix(inherited)
    assert report.tasks["pubmedqa"].method == "inherited"
    assert report.label_shares["pubmedqa"]["yes"] > 0.85  # the skew comes through, said


def test_train_splits_must_not_name_the_evaluation_split():
    bad = TINY.replace(train_splits={"pubmedqa": ("train", "test")})
    with pytest.raises(ValueError, match=r"train_splits\['pubmedqa'\].*evaluates on"):
        training_mix.build_training_mix(bad)


def test_tiny_training_mix_reports_its_shares(capsys):
    mixed, report = training_mix.build_training_mix(TINY)
    assert len(mixed) == TINY.train_size
    assert report.label_shares == label_shares(mixed)
    assert set(report.label_shares["pubmedqa"]) == {"yes", "no", "maybe"}
    assert "training mix labels" in capsys.readouterr().out


# --------------------------------------------------------------------------- choices


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["Aspirin", "Heparin", "Warfarin", "All of the above"], {3: "set"}),
        (["Iron", "Zinc", "Copper", "none of these"], {3: "set"}),
        (["Insulin", "Glucagon", "Both", "Neither"], {2: "letters", 3: "letters"}),
        (["Insulin", "Glucagon", "Both A and B", "None of the above"], {2: "letters", 3: "set"}),
        (["Thumb", "Tongue", "Both ab", "Lip"], {2: "letters"}),
        (["X", "Y", "a & c", "Z"], {2: "letters"}),
        (["X", "Y", "Z", "A only"], {3: "letters"}),
        (
            [
                "Avoiding all dairy products",
                "All-trans retinoic acid",
                "Skin above the clavicle",
                "Acute lymphoid leukemia (ALL)",
            ],
            {},
        ),
    ],
)
def test_positional_options_are_detected(options, expected):
    assert positional_options(options) == expected


def test_shuffle_slots_keep_positional_options_in_place():
    assert shuffle_slots(["p", "q", "r", "s"]) == [0, 1, 2, 3]
    assert shuffle_slots(["p", "q", "r", "All of the above"]) == [0, 1, 2]
    assert shuffle_slots(["p", "q", "All of the above", "None of the above"]) == [0, 1]
    assert shuffle_slots(["p", "None of the above", "r", "s"]) == []  # "above" mid-list
    assert shuffle_slots(["p", "q", "Both A and B", "s"]) == []


def choice_rows(n: int, gold: str = "A"):
    rows = []
    for i in range(n):
        options = [f"opt{i}-{k}" for k in "abcd"]
        if i % 10 == 0:
            options[3] = "All of the above"
        if i % 10 == 1:
            options[2] = "Both A and B"
        rows.append(record("medqa", f"q{i}", f"Question {i}?", gold, options=options))
    return records_to_dataset(rows)


def test_balance_choices_moves_answers_with_their_options():
    rows = choice_rows(200)  # every gold is A: the letter alone would score 100%
    out, balance = balance_choices(rows, seed=3)
    before = {r["id"]: r for r in rows}
    for r in out:
        old = before[r["id"]]
        gold_text = old["options"]["ABCD".index(old["answer"])]
        assert r["options"]["ABCD".index(r["answer"])] == gold_text
        assert sorted(r["options"]) == sorted(old["options"])
        assert r["question"] == old["question"]
        assert f"{r['answer']}. {gold_text}" in r["prompt"][1]["content"]  # prompt rebuilt
        if "All of the above" in old["options"]:
            assert r["options"][3] == "All of the above"
        if "Both A and B" in old["options"]:
            assert r["options"] == old["options"]  # names positions: not shuffled
    got = shares_of(out)
    # 20 "both A and B" rows must keep A: the other 180 make up the balance
    for letter in "ABCD":
        assert abs(got[letter] - 0.25) <= 0.02, got
    assert balance.counts == dict(Counter(out["answer"]))
    assert "20 rows keep their gold letter" in " ".join(balance.notes)


def test_letters_without_shuffling_are_sampled_by_letter():
    rows = choice_rows(400)
    extra = [
        record("medqa", f"r{i}", f"Other {i}?", "BCD"[i % 3], options=["w", "x", "y", "z"])
        for i in range(300)
    ]
    pool = records_to_dataset(
        [{k: v for k, v in r.items() if k != "prompt"} for r in rows.to_list()] + extra
    )
    out, balance = sample_by_label(pool, label_balance.uniform_target("medqa"), 400, seed=0)
    assert shares_of(out) == {"A": 0.25, "B": 0.25, "C": 0.25, "D": 0.25}
    assert balance.method == "sampled by label"


def test_without_shuffling_the_mix_samples_rows_by_letter():
    profile = TINY.replace(mix_weights={"medqa": 1.0}, shuffle_options=False, train_size=20)
    mixed, report = training_mix.build_training_mix(profile)
    assert report.tasks["medqa"].method == "sampled by label"
    assert report.label_shares["medqa"] == {"A": 0.25, "B": 0.25, "C": 0.25, "D": 0.25}
    source = {r["id"]: r for r in load_task("medqa", "train", source="bundled", verbose=False)}
    assert all(r["options"] == source[r["id"]]["options"] for r in mixed)  # nothing shuffled
