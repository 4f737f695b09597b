"""Tests of medreason_lib.data on the bundled samples and on hand-made files and hub rows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
from datasets import Dataset, concatenate_datasets

from medreason_lib import data
from medreason_lib.data import (
    DEFAULT_MIX,
    FEATURES,
    DataError,
    decontaminate,
    load_task,
    mix,
    raw_formats,
    records_to_dataset,
)
from medreason_lib.data.raw_formats import (
    gsm8k_record,
    medmcqa_from_hub,
    medmcqa_from_raw,
    medqa_record,
    mmlu_from_hub,
    pubmedqa_from_hub,
    record,
    split_pubmedqa,
)
from medreason_lib.scoring import template
from medreason_lib.settings import paths

BUNDLED = [
    ("pubmedqa", "train", 24),
    ("pubmedqa", "test", 16),
    ("medqa", "train", 24),
    ("medqa", "test", 16),
    ("medmcqa", "train", 24),
    ("medmcqa", "test", 16),
    ("gsm8k", "train", 24),
    ("gsm8k", "test", 16),
    ("mmlu_medical", "test", 24),
]
COLUMNS = ["id", "task", "question", "context", "options", "answer", "subject", "prompt"]


def bundled(task: str, split: str, **kwargs) -> Dataset:
    return load_task(task, split, source="bundled", verbose=False, **kwargs)


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return "," not in text


# --------------------------------------------------------------------------- bundled


@pytest.mark.parametrize(("task", "split", "count"), BUNDLED)
def test_bundled_rows_have_the_common_shape(task, split, count):
    ds = bundled(task, split)
    assert len(ds) == count
    assert ds.column_names == COLUMNS
    assert ds.features == FEATURES
    assert len(set(ds["id"])) == count
    for row in ds:
        assert row["task"] == task
        assert all(isinstance(row[c], str) for c in COLUMNS if c not in ("options", "prompt"))
        assert row["question"].strip()
        if task == "pubmedqa":
            assert row["answer"] in ("yes", "no", "maybe")
            assert row["options"] == [] and row["context"]
        elif task == "gsm8k":
            assert is_number(row["answer"]) and row["options"] == [] and row["context"] == ""
        else:
            assert row["answer"] in ("A", "B", "C", "D")
            assert len(row["options"]) == 4 and all(o.strip() for o in row["options"])
        system, user = row["prompt"]
        assert system == {"role": "system", "content": template.SYSTEM_PROMPT}
        assert user["role"] == "user" and user["content"] == data.user_prompt(row)


def test_prompt_formats_are_exact():
    pub = bundled("pubmedqa", "test")[0]
    assert pub["prompt"][1]["content"] == (
        f"Context: {pub['context']}\n\nQuestion: {pub['question']}\n\nAnswer with yes, no or maybe."
    )
    mcq = bundled("medqa", "test")[0]
    a, b, c, d = mcq["options"]
    assert mcq["prompt"][1]["content"] == (
        f"Question: {mcq['question']}\n\nOptions:\nA. {a}\nB. {b}\nC. {c}\nD. {d}\n\n"
        "Answer with the letter of the correct option."
    )
    gsm = bundled("gsm8k", "test")[0]
    assert gsm["prompt"][1]["content"] == f"{gsm['question']}\n\nAnswer with the final number only."


def test_bundled_pubmedqa_split_follows_test_ground_truth():
    folder = paths.data_dir() / "pubmedqa"
    truth = json.loads((folder / "test_ground_truth.json").read_text())
    raw = json.loads((folder / "ori_pqal.json").read_text())
    test, train = bundled("pubmedqa", "test"), bundled("pubmedqa", "train")
    assert dict(zip(test["id"], test["answer"], strict=True)) == truth
    assert set(train["id"]) == set(raw) - set(truth)
    first = raw[train[0]["id"]]
    assert train[0]["context"] == "\n".join(first["CONTEXTS"])
    assert train["id"] == [k for k in raw if k not in truth]  # file order kept


def test_bundled_samples_are_balanced_and_short():
    for task, split, _ in BUNDLED:
        counts = Counter(bundled(task, split)["answer"])
        if task in ("medqa", "medmcqa", "mmlu_medical"):
            assert max(counts.values()) - min(counts.values()) <= 1, (task, split, counts)
    pub = concatenate_datasets([bundled("pubmedqa", "train"), bundled("pubmedqa", "test")])
    assert Counter(pub["answer"]) == {"yes": 22, "no": 13, "maybe": 5}
    assert all(len(p[1]["content"]) < 1200 for p in pub["prompt"])
    gsm = [*bundled("gsm8k", "train")["answer"], *bundled("gsm8k", "test")["answer"]]
    assert {"1200", "10800", "1500", "-3", "8.75", "2.5"} <= set(gsm)


def test_verbose_prints_one_line_naming_the_source(capsys):
    load_task("medqa", "test", source="bundled")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("medqa/test: 16 items from ")
    assert "phrases_no_exclude_test.jsonl" in lines[0] and "bundled samples" in lines[0]


def test_default_source_comes_from_the_profile(monkeypatch, capsys):
    monkeypatch.setenv("MEDREASON_PROFILE", "tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ds = load_task("gsm8k", "test")
    assert len(ds) == 16 and "bundled samples" in capsys.readouterr().out


def test_bad_names_and_splits_are_clear_errors():
    with pytest.raises(ValueError, match="mmlu_medical has no split 'train'.*test-only"):
        load_task("mmlu_medical", "train", source="bundled")
    with pytest.raises(ValueError, match="unknown task 'pubmed'"):
        load_task("pubmed", "test", source="bundled")
    with pytest.raises(ValueError, match="valid splits: train, test"):
        load_task("medmcqa", "validation", source="bundled")


# --------------------------------------------------------------------------- n


def test_n_is_a_seeded_subsample():
    full = bundled("medmcqa", "train")
    a = bundled("medmcqa", "train", n=10, seed=1)
    b = bundled("medmcqa", "train", n=10, seed=1)
    c = bundled("medmcqa", "train", n=10, seed=2)
    assert a["id"] == b["id"] and a["id"] != c["id"]
    assert len(a) == 10 and set(a["id"]) <= set(full["id"])
    assert a["id"] == full.shuffle(seed=1).select(range(10))["id"]


def test_n_larger_than_available_names_the_count():
    with pytest.raises(ValueError, match="n=17 .* only 16"):
        bundled("gsm8k", "test", n=17)


# --------------------------------------------------------------------------- raw files


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def pqal_item(decision="yes", **changes) -> dict:
    item = {
        "QUESTION": "Does X help?",
        "CONTEXTS": ["We studied X.", "X helped."],
        "LABELS": ["METHODS", "RESULTS"],
        "MESHES": ["Humans"],
        "YEAR": "2020",
        "final_decision": decision,
        "LONG_ANSWER": "X helps.",
    }
    item.update(changes)
    return item


MEDQA_OK = {
    "question": "Which?",
    "options": {"A": "a", "B": "b", "C": "c", "D": "d"},
    "answer_idx": "C",
    "answer": "c",
    "meta_info": "step1",
}
MEDMCQA_OK = {
    "id": "u1",
    "question": "Which?",
    "opa": "a",
    "opb": "b",
    "opc": "c",
    "opd": "d",
    "cop": 1,
    "subject_name": "Anatomy",
}
GSM_OK = {"question": "How many?", "answer": "2 * 3 = <<2*3=6>>6\n#### 6"}


def test_raw_files_in_a_folder_are_found_by_upstream_names(tmp_path):
    write_jsonl(tmp_path / "medqa" / "test.jsonl", [MEDQA_OK])
    write_jsonl(tmp_path / "medmcqa" / "dev.json", [MEDMCQA_OK])
    write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [{**GSM_OK, "answer": "x\n#### 1,250"}])
    assert load_task("medqa", "test", source=tmp_path, verbose=False)["answer"] == ["C"]
    row = load_task("medmcqa", "test", source=tmp_path / "medmcqa", verbose=False)[0]
    assert (row["answer"], row["id"], row["subject"]) == ("A", "u1", "Anatomy")
    gsm = load_task("gsm8k", "train", source=str(tmp_path / "gsm8k" / "test.jsonl"), verbose=False)
    assert gsm["answer"] == ["1250"]  # a single file is read as the requested split


def test_pubmedqa_without_ground_truth_uses_the_official_pmid_list(tmp_path):
    official = json.loads((paths.data_dir() / "pubmedqa_test_pmids.json").read_text())
    assert len(official) == 500 and len(set(official)) == 500
    items = {official[0]: pqal_item("no"), official[1]: pqal_item("maybe"), "99999999": pqal_item()}
    file = tmp_path / "test_set.json"
    file.write_text(json.dumps(items))
    test = load_task("pubmedqa", "test", source=file, verbose=False)
    assert test["id"] == official[:2] and test["answer"] == ["no", "maybe"]
    assert load_task("pubmedqa", "train", source=file, verbose=False)["id"] == ["99999999"]


def test_pubmedqa_artificial_raw_file(tmp_path):
    (tmp_path / "ori_pqaa.json").write_text(json.dumps({"21": pqal_item("no")}))
    ds = load_task("pubmedqa", "train_artificial", source=tmp_path, verbose=False)
    assert (ds["id"], ds["answer"]) == (["21"], ["no"])


def test_pubmedqa_ground_truth_must_agree_with_the_file(tmp_path):
    (tmp_path / "ori_pqal.json").write_text(json.dumps({"11": pqal_item("yes")}))
    (tmp_path / "test_ground_truth.json").write_text(json.dumps({"11": "no"}))
    with pytest.raises(DataError, match=r"test_ground_truth.json: PMID 11: field 'label'"):
        load_task("pubmedqa", "test", source=tmp_path, verbose=False)


def malformed_cases():
    """(task, split, relative file, content, expected fragments of the message)."""
    bad_pqal = {"12345678": pqal_item(), "87654321": pqal_item("perhaps")}
    no_question = {"12345678": {k: v for k, v in pqal_item().items() if k != "QUESTION"}}
    return [
        ("pubmedqa", "train", "ori_pqal.json", bad_pqal, ["PMID 87654321", "'final_decision'"]),
        ("pubmedqa", "train", "ori_pqal.json", no_question, ["PMID 12345678", "'QUESTION'"]),
        (
            "medqa",
            "test",
            "test.jsonl",
            [MEDQA_OK, {**MEDQA_OK, "answer_idx": "E"}],
            ["line 2", "'answer_idx'"],
        ),
        (
            "medqa",
            "test",
            "test.jsonl",
            [{k: v for k, v in MEDQA_OK.items() if k != "options"}],
            ["line 1", "'options'"],
        ),
        (
            "medmcqa",
            "test",
            "dev.json",
            [MEDMCQA_OK, MEDMCQA_OK, {**MEDMCQA_OK, "cop": 5}],
            ["line 3", "'cop'"],
        ),
        ("medmcqa", "test", "dev.json", [{**MEDMCQA_OK, "cop": 0}], ["line 1", "'cop'", "1..4"]),
        (
            "medmcqa",
            "test",
            "dev.json",
            [{k: v for k, v in MEDMCQA_OK.items() if k != "opc"}],
            ["line 1", "'opc'"],
        ),
        (
            "gsm8k",
            "test",
            "test.jsonl",
            [GSM_OK, {**GSM_OK, "answer": "it is 6"}],
            ["line 2", "'answer'", "####"],
        ),
        (
            "gsm8k",
            "test",
            "test.jsonl",
            [GSM_OK, '{"question": "broken'],
            ["line 2", "invalid JSON"],
        ),
        (
            "mmlu_medical",
            "test",
            "anatomy_test.csv",
            "q,a,b,c,d,A\nq,a,b,c,d,B\nq,a,b,c,D\n",
            ["row 3", "'columns'"],
        ),
        (
            "mmlu_medical",
            "test",
            "anatomy_test.csv",
            'q,a,b,c,d,A\n"q, quoted",a,b,c,d,E\n',
            ["row 2", "'answer'"],
        ),
    ]


@pytest.mark.parametrize(("task", "split", "name", "content", "fragments"), malformed_cases())
def test_malformed_rows_name_file_row_and_field(tmp_path, task, split, name, content, fragments):
    file = tmp_path / name
    if isinstance(content, str):
        file.write_text(content)
    elif isinstance(content, dict):
        file.write_text(json.dumps(content))
    else:
        write_jsonl(file, content)
    with pytest.raises(DataError) as info:
        load_task(task, split, source=file, verbose=False)
    message = str(info.value)
    assert str(file) in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_path_raises_instead_of_falling_back(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_task("pubmedqa", "test", source=missing)
    with pytest.raises(FileNotFoundError, match=r"phrases_no_exclude_test.jsonl"):
        load_task("medqa", "test", source=tmp_path)  # a folder without the files
    (tmp_path / "mmlu").mkdir()
    (tmp_path / "mmlu" / "anatomy_test.csv").write_text("q,a,b,c,d,A\n")
    with pytest.raises(FileNotFoundError, match="lacks clinical_knowledge_test.csv"):
        load_task("mmlu_medical", "test", source=tmp_path)
    assert "bundled" not in capsys.readouterr().out


# --------------------------------------------------------------------------- hub


def test_hub_conversion_medmcqa_counts_cop_from_zero():
    row = {**MEDMCQA_OK, "cop": 0}
    assert medmcqa_from_hub(row)["answer"] == "A"
    assert medmcqa_from_hub({**row, "cop": 3})["answer"] == "D"
    assert medmcqa_from_raw({**row, "cop": 1})["answer"] == "A"  # the raw files count from 1
    with pytest.raises(DataError, match="'cop'.*0..3"):
        medmcqa_from_hub({**row, "cop": 4}, "hub openlifescienceai/medmcqa row 9")


def test_hub_conversion_mmlu_int_answer_to_letter():
    row = {"question": "Q?", "subject": "anatomy", "choices": ["w", "x", "y", "z"], "answer": 2}
    rec = mmlu_from_hub(row, "anatomy", "mmlu-anatomy-000")
    assert (rec["answer"], rec["options"], rec["subject"]) == ("C", ["w", "x", "y", "z"], "anatomy")
    with pytest.raises(DataError, match="'answer'"):
        mmlu_from_hub({**row, "answer": 4}, "anatomy", "x")


def pubmedqa_hub_row(pubid: int, decision: str) -> dict:
    return {
        "pubid": pubid,
        "question": f"Question {pubid}?",
        "context": {
            "contexts": ["First part.", "Second part."],
            "labels": ["A", "B"],
            "meshes": ["Humans"],
        },
        "long_answer": "Because.",
        "final_decision": decision,
    }


def test_hub_conversion_pubmedqa_and_split_by_pmid():
    official = raw_formats.official_pubmedqa_test_pmids()
    test_pmid = int(sorted(official)[0])
    rows = [
        pubmedqa_from_hub(pubmedqa_hub_row(test_pmid, "maybe")),
        pubmedqa_from_hub(pubmedqa_hub_row(99000001, "no")),
    ]
    assert rows[0]["id"] == str(test_pmid) and rows[0]["context"] == "First part.\nSecond part."
    assert [r["id"] for r in split_pubmedqa(rows, official, "test")] == [str(test_pmid)]
    assert [r["id"] for r in split_pubmedqa(rows, official, "train")] == ["99000001"]
    with pytest.raises(DataError, match="'final_decision'"):
        pubmedqa_from_hub(pubmedqa_hub_row(1, "Yes please"))


def test_hub_conversion_medqa_and_gsm8k():
    rec = medqa_record({**MEDQA_OK, "answer_idx": "B"}, "medqa-test-00000", "hub")
    assert (rec["answer"], rec["options"], rec["subject"]) == ("B", list("abcd"), "step1")
    with pytest.raises(DataError, match="'options'.*exactly A, B, C, D"):
        medqa_record({**MEDQA_OK, "options": {**MEDQA_OK["options"], "E": "e"}}, "m", "hub")
    for final, gold in [("1,000", "1000"), ("-3", "-3"), ("2.50", "2.5"), ("72", "72")]:
        assert gsm8k_record({**GSM_OK, "answer": f"x\n#### {final}"}, "g", "hub")["answer"] == gold


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace datasets.load_dataset with hand-made rows in each hub schema."""
    official = sorted(raw_formats.official_pubmedqa_test_pmids())
    calls = []
    mcq = [{**MEDMCQA_OK, "id": f"u{i}", "cop": i % 4} for i in range(30)]
    tables = {
        ("qiaojin/PubMedQA", "pqa_labeled", "train"): [
            pubmedqa_hub_row(int(official[0]), "yes"),
            pubmedqa_hub_row(99000001, "no"),
            pubmedqa_hub_row(int(official[1]), "no"),
        ],
        ("openlifescienceai/medmcqa", None, "validation"): mcq,
        ("qiaojin/PubMedQA", "pqa_artificial", "train"): [
            pubmedqa_hub_row(99000002, "yes"),
            pubmedqa_hub_row(99000003, "no"),
        ],
        ("GBaker/MedQA-USMLE-4-options", None, "train"): [
            MEDQA_OK,
            {**MEDQA_OK, "answer_idx": "A"},
        ],
        ("openai/gsm8k", "main", "test"): [GSM_OK, {**GSM_OK, "answer": "y\n#### 3,400"}],
    }
    for subject in raw_formats.MMLU_SUBJECTS:
        row = {"question": f"{subject}?", "subject": subject, "choices": list("wxyz"), "answer": 1}
        tables[("cais/mmlu", subject, "test")] = [row, {**row, "answer": 3}]

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        if (path, name, split) not in tables:
            raise ConnectionError("offline")
        return Dataset.from_list(tables[(path, name, split)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_source_end_to_end(fake_hub, capsys):
    official = sorted(raw_formats.official_pubmedqa_test_pmids())
    test = load_task("pubmedqa", "test", source="hub")
    assert test["id"] == official[:2] and test["answer"] == ["yes", "no"]
    assert "hub qiaojin/PubMedQA" in capsys.readouterr().out
    assert load_task("pubmedqa", "train", source="hub", verbose=False)["id"] == ["99000001"]
    mcq = load_task("medmcqa", "test", source="hub", verbose=False)
    assert ("openlifescienceai/medmcqa", None, "validation") in fake_hub
    assert Counter(mcq["answer"]) == {"A": 8, "B": 8, "C": 7, "D": 7}
    assert mcq.features == FEATURES
    assert load_task("gsm8k", "test", source="hub", verbose=False)["answer"] == ["6", "3400"]
    medqa = load_task("medqa", "train", source="hub", verbose=False)
    assert medqa["id"] == ["medqa-train-00000", "medqa-train-00001"] and medqa["answer"] == [
        "C",
        "A",
    ]
    artificial = load_task("pubmedqa", "train_artificial", source="hub", verbose=False)
    assert artificial["id"] == ["99000002", "99000003"]
    mmlu = load_task("mmlu_medical", "test", source="hub", verbose=False)
    assert len(mmlu) == 12 and Counter(mmlu["answer"]) == {"B": 6, "D": 6}
    assert mmlu["id"][:2] == ["mmlu-anatomy-000", "mmlu-anatomy-001"]


def test_hub_subsample_matches_convert_then_shuffle(fake_hub):
    # the hub path subsamples before converting; it must pick the same rows as bundled/raw
    full = load_task("medmcqa", "test", source="hub", verbose=False)
    sample = load_task("medmcqa", "test", source="hub", n=7, seed=3, verbose=False)
    assert sample["id"] == full.shuffle(seed=3).select(range(7))["id"]
    with pytest.raises(ValueError, match="only 30"):
        load_task("medmcqa", "test", source="hub", n=31, verbose=False)


def test_hub_failure_names_the_hub_id_and_offline_mode(fake_hub):
    with pytest.raises(RuntimeError, match=r"openlifescienceai/medmcqa.*HF_HUB_OFFLINE") as info:
        load_task("medmcqa", "train", source="hub")
    assert isinstance(info.value.__cause__, ConnectionError)


# --------------------------------------------------------------------------- mix


@pytest.fixture
def mix_inputs():
    return {"pubmedqa": bundled("pubmedqa", "train"), "gsm8k": bundled("gsm8k", "train")}


def test_mix_proportions_are_exact_and_seeded(mix_inputs):
    assert DEFAULT_MIX == {"pubmedqa": 0.7, "gsm8k": 0.3}
    mixed = mix(mix_inputs, DEFAULT_MIX, n=20, seed=0, verbose=False)
    assert len(mixed) == 20 and Counter(mixed["task"]) == {"pubmedqa": 14, "gsm8k": 6}
    assert mixed.features == FEATURES
    again = mix(mix_inputs, {"pubmedqa": 7, "gsm8k": 3}, n=20, seed=0, verbose=False)
    other = mix(mix_inputs, DEFAULT_MIX, n=20, seed=1, verbose=False)
    assert mixed["id"] == again["id"] and mixed["id"] != other["id"]
    assert len(set(mixed["id"])) == 20  # no repeats without replace
    assert mixed["task"] != sorted(mixed["task"])  # shuffled together, not stacked


def test_mix_rounding_always_gives_n(mix_inputs):
    thirds = {**mix_inputs, "medqa": bundled("medqa", "train")}
    mixed = mix(thirds, {"pubmedqa": 1, "gsm8k": 1, "medqa": 1}, n=10, verbose=False)
    assert len(mixed) == 10 and sorted(Counter(mixed["task"]).values()) == [3, 3, 4]
    mixed = mix(mix_inputs, {"pubmedqa": 0.5, "gsm8k": 0.5}, n=7, verbose=False)
    assert len(mixed) == 7


def test_mix_too_few_rows_is_an_error_unless_replace(mix_inputs, capsys):
    with pytest.raises(ValueError, match="pubmedqa has 24 rows but its share of n=40 is 28"):
        mix(mix_inputs, DEFAULT_MIX, n=40)
    mixed = mix(mix_inputs, DEFAULT_MIX, n=40, replace=True, verbose=False)
    assert Counter(mixed["task"]) == {"pubmedqa": 28, "gsm8k": 12}
    assert (
        "pubmedqa has 24 rows for a share of 28: sampled with replacement"
        in capsys.readouterr().out
    )
    with pytest.raises(ValueError, match="not given"):
        mix(mix_inputs, {"medqa": 1.0}, n=4)


# --------------------------------------------------------------------------- decontaminate


def test_decontaminate_removes_copies_and_near_duplicates():
    eval_set = bundled("medqa", "test")
    short_eval = records_to_dataset(
        [
            record(
                "medqa",
                "eval-short",
                "Which enzyme do statins inhibit in cholesterol synthesis?",
                "A",
                options=["w", "x", "y", "z"],
            )
        ]
    )
    eval_all = concatenate_datasets([eval_set, short_eval])
    copied = eval_set[3]
    injected = records_to_dataset(
        [
            # an exact copy of a long vignette under a new id: shares every 13-gram
            record(
                "medqa",
                "leak-copy",
                copied["question"],
                copied["answer"],
                options=copied["options"],
            ),
            # a reworded short question: no shared 13-gram, but a near-duplicate string
            record(
                "medqa",
                "leak-fuzzy",
                "Which enzyme do statins inhibit during cholesterol synthesis?",
                "A",
                options=["w", "x", "y", "z"],
            ),
        ]
    )
    train = concatenate_datasets([bundled("medqa", "train"), injected])
    kept, report = decontaminate(train, eval_all, verbose=False)
    assert report.removed_ids == ["leak-copy", "leak-fuzzy"]
    assert kept["id"] == bundled("medqa", "train")["id"]  # unrelated rows kept, in order
    copy_hit, fuzzy_hit = report.removed
    assert (copy_hit.eval_id, copy_hit.reason) == (copied["id"], "ngram")
    assert (fuzzy_hit.eval_id, fuzzy_hit.reason) == ("eval-short", "fuzzy")
    assert 90 <= fuzzy_hit.score < 100
    assert report.counts == {"ngram": 1, "fuzzy": 1}
    assert (report.n_train, report.n_kept, report.n_eval) == (26, 24, 17)
    text = str(report)
    assert "removed 2 of 26" in text and "leak-copy ~ " + copied["id"] in text
    assert "leak-fuzzy ~ eval-short: fuzzy" in text


def test_decontaminate_uses_context_for_pubmedqa(capsys):
    test = bundled("pubmedqa", "test")
    row = test[0]
    leaked = record(
        "pubmedqa", "leak", "A different question entirely?", row["answer"], context=row["context"]
    )
    train = concatenate_datasets([bundled("pubmedqa", "train"), records_to_dataset([leaked])])
    kept, report = decontaminate(train, test)
    assert report.removed_ids == ["leak"] and report.removed[0].eval_id == row["id"]
    assert len(kept) == 24
    assert "removed 1 of 25" in capsys.readouterr().out


def test_decontaminate_keeps_everything_when_disjoint():
    kept, report = decontaminate(bundled("gsm8k", "train"), bundled("gsm8k", "test"), verbose=False)
    assert len(kept) == 24 and report.removed == [] and "removed 0 of 24" in str(report)
