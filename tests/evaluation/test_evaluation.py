"""Tests of medreason_lib.evaluation (and the benchmarks, reports and stats modules it
re-exports): scoring, statistics, failures, resume, compare and the notebooks' whole steps.

The done-when checks of the evaluation issue run on the real PubMedQA test set in
``shared/reference-data`` (500 items: 276 yes / 169 no / 55 maybe) and are skipped, with the
reason, on a machine without that folder. The rest use the bundled samples and scripted
generators, so they need no model.
"""

from __future__ import annotations

import json

import pytest

from medreason_lib import data, evaluation
from medreason_lib.evaluation import (
    EvalSettings,
    IncomparableReports,
    compare,
    eval_plots,
    evaluate,
)
from medreason_lib.evaluation.generation import Completion, GenerationSettings, scripted_generator
from medreason_lib.scoring import template
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import PROFILES

TINY = PROFILES["tiny"]


def run(generate, dataset, **kwargs):
    kwargs.setdefault("profile", TINY)
    kwargs.setdefault("progress", False)
    return evaluate(generate, dataset, **kwargs)


@pytest.fixture(scope="module")
def reference_pubmedqa():
    root = paths.reference_data_dir()
    if root is None:
        pytest.skip("shared/reference-data is not on this machine (MEDREASON_REFERENCE_DATA)")
    return data.load_task("pubmedqa", "test", source=root / "pubmedqa", verbose=False)


@pytest.fixture(scope="module")
def bundled():
    """All five bundled benchmarks (88 items, each task's own answer type)."""
    return evaluation.load_benchmarks(source="bundled")


@pytest.fixture(scope="module")
def pubmedqa():
    return data.load_task("pubmedqa", "test", source="bundled", verbose=False)


# --------------------------------------------------------------------------- done-when


def test_gold_answering_generator_scores_100_percent(reference_pubmedqa):
    report = run(
        scripted_generator(lambda row: row["answer"], reference_pubmedqa), reference_pubmedqa
    )
    stats = report.by_task["pubmedqa"]
    assert (report.n, report.accuracy, stats.correct) == (500, 1.0, 500)
    assert stats.format_rate == 1.0 and stats.unparsed_rate == 0.0 and report.failed == 0
    for gold, row in stats.confusion.items():
        assert row[gold] == stats.gold_counts[gold]
        assert sum(row.values()) == row[gold]


def test_always_yes_scores_the_yes_rate(reference_pubmedqa):
    report = run(scripted_generator("yes"), reference_pubmedqa)
    stats = report.by_task["pubmedqa"]
    assert stats.correct == 276 and report.accuracy == pytest.approx(0.552)
    assert stats.answer_counts == {"yes": 500}
    assert stats.gold_counts == {"yes": 276, "no": 169, "maybe": 55}
    assert {g: row["yes"] for g, row in stats.confusion.items()} == stats.gold_counts
    assert stats.ci95 == pytest.approx((0.5082, 0.5950), abs=1e-4)


def test_hedging_scores_zero_but_counts_the_format(reference_pubmedqa):
    report = run(scripted_generator("yes or no"), reference_pubmedqa)
    stats = report.by_task["pubmedqa"]
    assert report.accuracy == 0.0 and stats.format_rate == 1.0 and stats.unparsed_rate == 1.0
    assert stats.answer_counts == {"unparsed": 500}


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score)
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(k, n, low, high):
    assert evaluation.wilson_interval(k, n) == pytest.approx((low, high), abs=5e-5)


def test_ci_half_width_and_mcnemar():
    assert evaluation.ci_half_width(500) == pytest.approx(0.0437, abs=1e-4)
    assert evaluation.ci_half_width(50) == pytest.approx(0.1336, abs=1e-4)
    assert evaluation.ci_half_width(200) < evaluation.ci_half_width(50)
    assert evaluation.mcnemar_p(10, 0) == pytest.approx(2 / 1024)
    assert evaluation.mcnemar_p(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert evaluation.mcnemar_p(5, 5) == 1.0 and evaluation.mcnemar_p(0, 0) == 1.0
    with pytest.raises(ValueError):
        evaluation.wilson_interval(0, 0)


# --------------------------------------------------------------------------- scoring


def test_every_task_is_scored_with_its_own_extractor(bundled):
    report = run(scripted_generator(lambda row: row["answer"], bundled), bundled)
    assert report.accuracy == 1.0 and report.n == len(bundled) == 88
    assert set(report.by_task) == set(evaluation.BENCHMARKS)
    assert report.by_task["gsm8k"].confusion is None
    assert set(report.by_task["medqa"].confusion) == set("ABCD")


def test_confusion_matrix_and_answer_distribution(pubmedqa):
    """yes -> no, no -> maybe, maybe -> unreadable: every cell lands where it should."""
    swap = {"yes": "no", "no": "maybe", "maybe": "I cannot tell"}
    stats = run(scripted_generator(lambda r: swap[r["answer"]], pubmedqa), pubmedqa).by_task[
        "pubmedqa"
    ]
    gold = stats.gold_counts
    assert stats.confusion["yes"]["no"] == gold["yes"]
    assert stats.confusion["no"]["maybe"] == gold["no"]
    assert stats.confusion["maybe"]["unparsed"] == gold["maybe"]
    assert stats.answer_counts == {
        "no": gold["yes"],
        "maybe": gold["no"],
        "unparsed": gold["maybe"],
    }
    assert stats.correct == 0 and stats.unparsed_rate == gold["maybe"] / stats.n


def test_completion_objects_carry_truncation_and_length(pubmedqa):
    def generate(prompts):
        out = [{"text": template.format_completion("two words", "yes"), "truncated": False}] * len(
            prompts
        )
        out[0] = Completion("<reasoning>\ncut off", truncated=True, n_tokens=7)
        return out

    stats = run(generate, pubmedqa, batch_size=4).by_task["pubmedqa"]
    assert stats.truncation_rate == pytest.approx(4 / 16)  # the first of each batch of 4
    assert stats.format_rate == pytest.approx(12 / 16)
    assert stats.mean_tokens == 7  # only the Completion objects said how long they were
    assert run(scripted_generator("yes"), pubmedqa).by_task["pubmedqa"].truncation_rate is None


def test_system_prompt_comes_from_the_settings(pubmedqa):
    seen = []

    def generate(prompts):
        seen.extend(prompts)
        return ["x"] * len(prompts)

    run(generate, pubmedqa, settings=EvalSettings(system_prompt=None))
    assert all(p[0]["role"] == "user" for p in seen)
    seen.clear()
    run(generate, pubmedqa, settings=EvalSettings(system_prompt="Be brief."))
    assert all(p[0] == {"role": "system", "content": "Be brief."} for p in seen)


# --------------------------------------------------------------------------- bad input


def test_empty_dataset_is_an_error(pubmedqa):
    with pytest.raises(ValueError, match="empty"):
        run(scripted_generator("yes"), pubmedqa.select([]))


def test_wrong_number_of_completions_names_the_batch(pubmedqa):
    def short(prompts):
        return ["yes"] * (len(prompts) - 1)

    with pytest.raises(ValueError, match=r"batch 0 .*returned 7 completions for 8 prompts"):
        run(short, pubmedqa, batch_size=8)


def test_unreadable_completion_type_names_the_batch(pubmedqa):
    with pytest.raises(TypeError, match="batch 0"):
        run(lambda prompts: [42] * len(prompts), pubmedqa)


def test_a_raising_batch_is_recorded_as_failed(pubmedqa, capsys):
    """A batch that raises is retried item by item: a transient failure loses nothing, an item
    that fails on its own is recorded as failed (never dropped), and both are reported."""
    gold = scripted_generator(lambda r: r["answer"], pubmedqa)
    calls = []

    def flaky(prompts):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return gold(prompts)

    report = run(flaky, pubmedqa, batch_size=5)
    assert report.failed == 0 and report.accuracy == 1.0
    assert "retried item by item: 5 of 5 answered" in capsys.readouterr().out

    def always_fails(prompts):
        raise RuntimeError("CUDA out of memory (simulated)")

    report = run(always_fails, pubmedqa, batch_size=5)
    failed = [r for r in report.records if r["error"]]
    assert report.failed == len(failed) == 16
    assert all(r["error"] == "RuntimeError: CUDA out of memory (simulated)" for r in failed)
    assert report.accuracy == 0.0
    bad = pubmedqa[0]["id"]
    picky = scripted_generator(lambda r: r["answer"], pubmedqa)

    def one_bad_item(prompts):
        if any(p == pubmedqa[0]["prompt"] for p in prompts):
            raise RuntimeError("this prompt breaks the engine")
        return picky(prompts)

    report = run(one_bad_item, pubmedqa, batch_size=5)
    assert [r["id"] for r in report.records if r["error"]] == [bad]
    assert report.accuracy == pytest.approx(15 / 16)  # failures count as wrong
    assert report.by_task["pubmedqa"].answer_counts["failed"] == 1
    assert "1 failed" in str(report) and "1 of 16 items failed" in capsys.readouterr().out


# --------------------------------------------------------------------------- saving, resume


class Counting:
    """Wraps a generate callable; records the prompts it was asked; can stop after k calls."""

    def __init__(self, inner, stop_after: int | None = None):
        self.inner, self.stop_after, self.asked = inner, stop_after, []

    def __call__(self, prompts):
        if self.stop_after is not None and len(self.asked) >= self.stop_after:
            raise KeyboardInterrupt
        self.asked.append(prompts)
        return self.inner(prompts)


def _same_result(a, b) -> bool:
    keep = ("overall", "by_task", "items_digest", "prompts_digest", "settings", "backend")
    da, db = a.to_dict(records=True), b.to_dict(records=True)
    return all(da[k] == db[k] for k in keep) and da["records"] == db["records"]


def test_resume_after_interruption_generates_only_the_missing_items(bundled, tmp_path):
    answer = scripted_generator(lambda r: r["answer"] if r["task"] != "gsm8k" else "0", bundled)
    whole = run(answer, bundled, batch_size=10, name="whole", out_dir=tmp_path)

    first = Counting(answer, stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        run(first, bundled, batch_size=10, name="cut", out_dir=tmp_path)
    saved = evaluation.read_records(tmp_path / "cut.jsonl")
    assert len(saved) == 30

    second = Counting(answer)
    resumed = run(second, bundled, batch_size=10, name="cut", out_dir=tmp_path, resume=True)
    asked = [p for batch in second.asked for p in batch]
    assert len(asked) == len(bundled) - 30
    done_prompts = {json.dumps(p) for batch in first.asked for p in batch}
    assert not done_prompts & {json.dumps(p) for p in asked}
    assert _same_result(resumed, whole)


def test_resume_retries_failed_items_and_refuses_other_settings(pubmedqa, tmp_path):
    def broken(prompts):
        raise ConnectionError("endpoint down")

    first = run(broken, pubmedqa, name="flaky", out_dir=tmp_path)
    assert first.failed == 16
    second = Counting(scripted_generator("yes"))
    again = run(second, pubmedqa, name="flaky", out_dir=tmp_path, resume=True)
    assert again.failed == 0 and sum(len(b) for b in second.asked) == 16
    other = EvalSettings(generation=GenerationSettings(max_new_tokens=7))
    yes = scripted_generator("yes")
    with pytest.raises(ValueError, match="other settings"):
        run(yes, pubmedqa, name="flaky", out_dir=tmp_path, resume=True, settings=other)


def test_report_saved_as_json_and_loaded_back(pubmedqa, tmp_path):
    report = run(scripted_generator("no"), pubmedqa, name="no", out_dir=tmp_path)
    lines = (tmp_path / "no.jsonl").read_text().splitlines()
    assert len(lines) == 16
    fields = {"id", "task", "gold", "extracted", "correct", "well_formed", "completion", "error"}
    assert fields <= set(json.loads(lines[0]))
    loaded = evaluation.EvalReport.load(tmp_path / "no.json")
    assert _same_result(loaded, report) and loaded.name == "no"
    assert json.loads((tmp_path / "no.json").read_text())["overall"]["n"] == 16


def test_default_folder_is_runs_profile_eval(pubmedqa, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDREASON_RUNS", str(tmp_path))
    run(scripted_generator("yes"), pubmedqa, name="baseline")
    assert (tmp_path / "tiny" / "eval" / "baseline.jsonl").is_file()
    assert (tmp_path / "tiny" / "eval" / "baseline.json").is_file()


# --------------------------------------------------------------------------- compare


def test_compare_gives_paired_deltas(pubmedqa):
    before = run(scripted_generator("yes"), pubmedqa, name="before")
    after = run(scripted_generator(lambda r: r["answer"], pubmedqa), pubmedqa, name="after")
    row = compare(before, after).rows["pubmedqa"]
    yes = before.by_task["pubmedqa"].correct
    assert (row["gained"], row["lost"], row["n"]) == (16 - yes, 0, 16)
    assert row["delta"] == pytest.approx(after.accuracy - before.accuracy)
    assert row["p_value"] == evaluation.mcnemar_p(16 - yes, 0)
    comparison = compare(before, after)
    assert "before -> after" in str(comparison)
    assert comparison.flips["lost"] == [] and len(comparison.flips["gained"]) == 16 - yes
    wrong_before = {r["id"] for r in before.records if not r["correct"]}
    assert set(comparison.flips["gained"]) == wrong_before


def test_compare_refuses_different_settings_items_or_prompts(pubmedqa):
    base = run(scripted_generator("yes"), pubmedqa, name="base")
    no_system = run(scripted_generator("yes"), pubmedqa, settings=EvalSettings(system_prompt=None))
    with pytest.raises(IncomparableReports, match="system_prompt"):
        compare(base, no_system)
    hotter = EvalSettings(generation=GenerationSettings(temperature=0.7, max_new_tokens=48))
    with pytest.raises(IncomparableReports, match="temperature"):
        compare(base, run(scripted_generator("yes"), pubmedqa, settings=hotter))
    with pytest.raises(IncomparableReports, match="items differ"):
        compare(base, run(scripted_generator("yes"), pubmedqa.select(range(8))))
    reworded = pubmedqa.map(
        lambda r: {"prompt": [r["prompt"][0], {**r["prompt"][1], "content": "?"}]}
    )
    with pytest.raises(IncomparableReports, match="different prompts"):
        compare(base, run(scripted_generator("yes"), reworded))


# --------------------------------------------------------------------------- benchmarks


def test_load_benchmark_subsamples_with_a_seed_and_caps_at_the_source(capsys):
    a = evaluation.load_benchmark("medqa", n=5, seed=1, source="bundled")
    b = evaluation.load_benchmark("medqa", n=5, seed=1, source="bundled")
    c = evaluation.load_benchmark("medqa", n=5, seed=2, source="bundled")
    assert a["id"] == b["id"] and a["id"] != c["id"] and len(a) == 5
    everything = evaluation.load_benchmark("pubmedqa", n=100, source="bundled")
    assert len(everything) == 16 and "the source has 16: using all" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown benchmark"):
        evaluation.load_benchmark("usmle")


def test_gold_baselines(pubmedqa, bundled):
    base = evaluation.gold_baselines(bundled)
    counts = {a: pubmedqa["answer"].count(a) for a in ("yes", "no", "maybe")}
    assert base["pubmedqa"]["majority"] == max(counts.values()) / 16
    assert base["pubmedqa"]["majority_label"] == "yes" and base["pubmedqa"]["chance"] == 1 / 3
    assert base["medqa"]["chance"] == 0.25 and base["gsm8k"]["chance"] is None
    always_yes = run(scripted_generator("yes"), pubmedqa).accuracy
    assert always_yes == base["pubmedqa"]["majority"]


def test_plots_show_the_report(bundled):
    from matplotlib.container import BarContainer

    from medreason_lib.evaluation import plots

    report = run(scripted_generator("A"), bundled)
    fig = plots.plot_accuracy(report, evaluation.gold_baselines(bundled))
    bars = next(c for c in fig.axes[0].containers if isinstance(c, BarContainer))
    tasks = sorted(report.by_task)
    assert [b.get_height() for b in bars] == [report.by_task[t].accuracy for t in tasks]
    fig = plots.plot_answer_distribution(report)
    assert len(fig.axes) == 4  # pubmedqa and the three choice tasks; gsm8k has no closed set
    assert plots.plot_ci_width().axes[0].lines


def test_answer_distributions_and_lengths_side_by_side(bundled, pubmedqa):
    from matplotlib.container import BarContainer

    always_a = run(scripted_generator("A"), bundled)
    gold = run(scripted_generator(lambda r: r["answer"], bundled), bundled)
    fig = eval_plots.plot_answer_distributions({"A": always_a, "gold answers": gold})
    assert len(fig.axes) == 4
    medqa = next(ax for ax in fig.axes if ax.get_title().startswith("medqa"))
    bars = [c for c in medqa.containers if isinstance(c, BarContainer)]
    assert len(bars) == 3  # two reports and the gold shares
    assert bars[0][0].get_height() == 1.0  # "A" every time
    assert [b.get_height() for b in bars[1]] == [b.get_height() for b in bars[2]]

    def counted(prompts):
        return [Completion("x", truncated=False, n_tokens=i % 5) for i in range(len(prompts))]

    lengths, unit = eval_plots.completion_lengths(run(counted, pubmedqa))
    assert unit == "tokens" and max(lengths) <= 4
    assert eval_plots.completion_lengths(always_a)[1] == "characters"
    fig = eval_plots.plot_completion_lengths({"counted": run(counted, pubmedqa)})
    assert fig.axes[0].lines  # the token limit


# --------------------------------------------------------------------------- error analysis


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"correct": True, "extracted": "yes"}, "right"),
        ({"extracted": "no"}, "wrong"),
        ({}, "unparsed"),
        ({"truncated": True}, "truncated"),
        ({"truncated": True, "extracted": "no"}, "truncated"),
        ({"truncated": True, "correct": True, "extracted": "yes"}, "right"),
        ({"error": "RuntimeError: boom"}, "failed"),
    ],
)
def test_outcome_names_what_happened_to_an_item(changes, expected):
    record = {"error": None, "correct": False, "truncated": False, "extracted": None}
    assert evaluation.outcome(record | changes) == expected
    assert expected in evaluation.OUTCOMES


# --------------------------------------------------------------------------- model identity


def test_model_identity_follows_the_weights(tmp_path):
    folder = tmp_path / "warm"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"one")
    (folder / "config.json").write_text("{}")
    first = evaluation.model_identity(TINY, base=folder)
    assert first.startswith("warm@")
    (folder / "config.json").write_text('{"changed": true}')
    assert evaluation.model_identity(TINY, base=folder) == first  # configs are not weights
    (folder / "model.safetensors").write_bytes(b"two")
    assert evaluation.model_identity(TINY, base=folder) != first
    assert evaluation.model_identity(TINY, base="org/model") == "org/model"
    with_lora = evaluation.model_identity(TINY, base="org/model", adapter=folder)
    assert with_lora.startswith("org/model + LoRA warm@")


def test_resume_refuses_another_models_records(pubmedqa, tmp_path):
    yes = scripted_generator("yes")
    run(yes, pubmedqa, name="m", out_dir=tmp_path, model_id="a")
    with pytest.raises(ValueError, match="another model"):
        run(yes, pubmedqa, name="m", out_dir=tmp_path, model_id="b", resume=True)
    counting = Counting(scripted_generator("yes"))
    again = run(counting, pubmedqa, name="m", out_dir=tmp_path, model_id="a", resume=True)
    assert counting.asked == [] and again.model == "a" and "model a" in str(again)
    assert evaluation.EvalReport.load(tmp_path / "m.json").model == "a"


@pytest.fixture
def quick_items(monkeypatch, tmp_path):
    """Runs go to tmp_path; the course items are three MedQA questions."""
    monkeypatch.setenv("MEDREASON_RUNS", str(tmp_path))
    rows = data.load_task("medqa", "test", n=3, source="bundled", verbose=False)
    monkeypatch.setattr(evaluation, "profile_benchmarks", lambda profile: rows)
    return rows


def test_evaluate_model_keeps_only_its_own_records(quick_items, tmp_path, capsys):
    quick = TINY.replace(max_completion_length=3)
    first = evaluation.evaluate_model(quick, "m", progress=False)
    assert first.backend == "hf" and first.n == 3 and first.model.startswith("qwen2-")
    assert (tmp_path / "tiny" / "eval" / "m.json").is_file()
    again = evaluation.evaluate_model(quick, "m", progress=False)
    assert "resuming: 3 of 3" in capsys.readouterr().out
    assert again.records == first.records

    from medreason_lib.models import tiny

    model, tokenizer = tiny.build_tiny("qwen2", seed=1, cache=False)
    model.save_pretrained(tmp_path / "other")
    tokenizer.save_pretrained(tmp_path / "other")
    other = evaluation.evaluate_model(quick, "m", base=tmp_path / "other", progress=False)
    assert "starting afresh" in capsys.readouterr().out
    assert other.model.startswith("other@") and other.model != first.model
    shorter = EvalSettings.from_profile(quick.replace(max_completion_length=2))
    evaluation.evaluate_model(quick, "m", base=tmp_path / "other", settings=shorter, progress=False)
    assert "starting afresh" in capsys.readouterr().out


def test_baseline_report_is_loaded_or_made_as_notebook_03_does(quick_items, tmp_path, capsys):
    quick = TINY.replace(max_completion_length=3)
    made = evaluation.baseline_report(quick)
    assert "evaluating the untrained model" in capsys.readouterr().out
    assert made.name == "baseline" and made.settings == EvalSettings.from_profile(quick)
    loaded = evaluation.baseline_report(quick)
    assert "loaded" in capsys.readouterr().out
    assert _same_result(loaded, made)


# --------------------------------------------------------------------------- benchmarks


def test_profile_benchmarks_are_the_notebooks_items():
    items = evaluation.profile_benchmarks(TINY)
    same = evaluation.load_benchmarks(n=TINY.eval_size, seed=TINY.seed, source="bundled")
    assert items["id"] == same["id"] and len(items) == 5 * TINY.eval_size


def test_published_numbers_say_how_they_were_scored():
    for row in evaluation.PUBLISHED:
        assert {"model", "source", "scoring", "comparable"} <= set(row)
        scores = [v for k, v in row.items() if k in evaluation.BENCHMARKS]
        assert scores and all(0 < v < 100 for v in scores)
        assert not row["comparable"].startswith("yes")  # none used this course's harness
    loglik = [r for r in evaluation.PUBLISHED if "log-likelihood" in r["scoring"]]
    assert {r["model"] for r in loglik} == {"Qwen3-8B (base)", "Q3X1 (QLoRA-tuned Qwen3-8B)"}
    assert all(r["comparable"].startswith("no") for r in loglik)


# --------------------------------------------------------------------------- labels, collapse


def test_always_yes_has_full_yes_recall_and_none_elsewhere(reference_pubmedqa):
    report = run(scripted_generator("yes"), reference_pubmedqa)
    stats = report.by_task["pubmedqa"]
    assert stats.recall == {"yes": 1.0, "no": 0.0, "maybe": 0.0}
    assert (stats.dominant_answer, stats.dominant_share) == ("yes", 1.0)
    text = report.summary()
    assert "pubmedqa recall per gold label: yes 100.0% (276/276), no 0.0% (0/169)" in text
    assert "maybe 0.0% (0/55)" in text
    assert "WARNING: the model answers 'yes' to 100.0% of the 500 pubmedqa items" in text
    matrix = text.split("pubmedqa confusion")[1].splitlines()
    assert matrix[1].split() == ["gold", "yes", "no", "maybe", "unparsed", "recall"]
    assert matrix[2].split() == ["yes", "276", "0", "0", "0", "100.0%"]
    assert matrix[4].split() == ["maybe", "55", "0", "0", "0", "0.0%"]


def test_recall_counts_unparsed_answers_as_misses(pubmedqa):
    said = {"yes": "yes", "no": "no or maybe", "maybe": "maybe"}  # the "no" items hedge
    stats = run(scripted_generator(lambda r: said[r["answer"]], pubmedqa), pubmedqa).by_task[
        "pubmedqa"
    ]
    gold = stats.gold_counts
    assert stats.recall == {"yes": 1.0, "no": 0.0, "maybe": 1.0}
    assert stats.confusion["no"]["unparsed"] == gold["no"]
    assert stats.dominant_answer == "yes" and stats.dominant_share == gold["yes"] / stats.n
    assert stats.dominant_share < 0.9  # a mixed policy is no collapse
    assert (
        "WARNING"
        not in run(scripted_generator(lambda r: r["answer"], pubmedqa), pubmedqa).summary()
    )


def yes_to_all_but(k: int, dataset):
    """'yes' to every item except the first ``k`` (by id), which get 'no'."""
    firsts = set(sorted(dataset["id"])[:k])
    return scripted_generator(lambda r: "no" if r["id"] in firsts else "yes", dataset)


def test_mcnemar_of_a_collapsed_after_policy_carries_the_caveat(reference_pubmedqa):
    before = run(scripted_generator("no"), reference_pubmedqa, name="before")
    after = run(scripted_generator("yes"), reference_pubmedqa, name="after")
    comparison = compare(before, after)
    row = comparison.rows["pubmedqa"]
    assert row["p_value"] < 1e-3  # significant, and meaningless: "yes" to everything
    text = str(comparison)
    lines = {line.split()[0]: line for line in text.splitlines()[2:4]}
    assert lines["pubmedqa"].endswith(" !") and lines["all"].endswith(" !")
    assert "! CAVEAT (pubmedqa): after answers 'yes' to 100.0% of the 500 pubmedqa items" in text
    assert (
        "! CAVEAT (all): one answer to over 90% of a task's items (after 'yes' 100% of pubmedqa"
        in text
    )
    assert comparison.p_value_text("pubmedqa").startswith("McNemar p = 0.0000 (CAVEAT: after")
    assert "CAVEAT" in comparison.p_value_text("all")
    recall = comparison.recall["pubmedqa"]
    assert recall == {"yes": (0.0, 1.0), "no": (1.0, 0.0), "maybe": (0.0, 0.0)}
    assert "pubmedqa recall per gold label, before -> after: yes 0.0% -> 100.0%" in text


def test_collapse_caveat_starts_above_ninety_percent(pubmedqa):
    n = len(pubmedqa)  # 16: one "no" leaves 93.75% "yes", three leave 81.25%
    before = run(scripted_generator(lambda r: r["answer"], pubmedqa), pubmedqa, name="before")
    flagged = compare(before, run(yes_to_all_but(1, pubmedqa), pubmedqa, name="after"))
    assert set(flagged.caveats) == {"pubmedqa", "all"}
    assert f"{100 * (n - 1) / n:.1f}%" in flagged.caveats["pubmedqa"]
    fine = compare(before, run(yes_to_all_but(3, pubmedqa), pubmedqa, name="after"))
    assert fine.caveats == {} and "CAVEAT" not in str(fine) and " !" not in str(fine)
    assert fine.p_value_text() == f"McNemar p = {fine.rows['all']['p_value']:.4f}"
    # a collapsed *before* is named as such
    reverse = compare(run(scripted_generator("maybe"), pubmedqa, name="b"), before)
    assert reverse.caveats["pubmedqa"].startswith("before answers 'maybe'")


def test_confusion_matrices_side_by_side(pubmedqa, bundled):
    before = run(scripted_generator("yes"), pubmedqa)
    after = run(scripted_generator(lambda r: r["answer"], pubmedqa), pubmedqa)
    fig = eval_plots.plot_confusion_matrices({"before": before, "after": after})
    assert len(fig.axes) == 2
    cells = [[int(t.get_text()) for t in ax.texts] for ax in fig.axes]
    assert [sum(c) for c in cells] == [len(pubmedqa)] * 2
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [
        "yes", "no", "maybe", "unparsed"
    ]  # fmt: skip
    ylabels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert all("recall 100%" in label for label in ylabels)
    assert "recall 0%" in [t.get_text() for t in fig.axes[0].get_yticklabels()][1]
    with pytest.raises(ValueError, match="gsm8k"):
        eval_plots.plot_confusion_matrices({"x": run(scripted_generator("1"), bundled)}, "gsm8k")


@pytest.mark.parametrize("n", [1, 6, 7, 40, 500])
def test_wilson_interval_holds_its_estimate_at_the_edges(n):
    """At 0 of n the lower bound is exactly 0 and at n of n the upper exactly 1 (computed, the
    bound missed by 2.8e-17 at 0 of 6, and matplotlib refused the negative error bar)."""
    wilson_interval = evaluation.wilson_interval
    assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
    for k in range(n + 1):
        low, high = wilson_interval(k, n)
        assert 0.0 <= low <= k / n <= high <= 1.0
