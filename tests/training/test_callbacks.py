"""The answer-share callback and its collapse alarm, on synthetic batches and in a real
GRPO run; the collapse check of evaluation reports (stats)."""

import warnings
from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import TEST_BATCH
from medreason_lib.scoring.answers import extract_answer
from medreason_lib.scoring.stats import collapsed_tasks, dominant_answer_share
from medreason_lib.scoring.template import format_completion
from medreason_lib.training.callbacks import (
    AnswerShares,
    CollapseWarning,
    MetricsCSV,
    RecordedReward,
    training_label_shares,
)

TEST_LIKE = {"pubmedqa": {"yes": 0.55, "no": 0.34, "maybe": 0.11}}  # PubMedQA test shares
REASONING = "The trial randomised 400 patients."


def pubmedqa_batch(yes: int = 0, no: int = 0, maybe: int = 0, prose: int = 0) -> list[str]:
    return (
        [format_completion(REASONING, "yes")] * yes
        + [format_completion(REASONING, "no")] * no
        + [format_completion(REASONING, "maybe")] * maybe
        + ["The answer is yes."] * prose  # no answer block: nothing to read
    )


def zero(completions, **kwargs):
    return [0.0] * len(completions)


class Run:
    """A reward the trainer would call, the callback listening to it, and the log steps."""

    def __init__(self, label_shares=TEST_LIKE, **settings):
        self.reward = RecordedReward(zero)
        self.monitor = AnswerShares(label_shares, self.reward, **settings)
        self.state = SimpleNamespace(global_step=0, log_history=[], is_world_process_zero=True)

    def step(self, completions, task="pubmedqa", options=None) -> dict:
        self.state.global_step += 1
        self.reward(completions, task=task, options=options, answer=["yes"] * len(completions))
        logs = {"reward": 0.0}
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.monitor.on_log(None, self.state, None, logs=logs)
        return logs


def test_logs_the_share_of_each_answer_and_the_format_rate():
    run = Run()
    logs = run.step(pubmedqa_batch(yes=5, no=2, maybe=1, prose=2))
    assert logs["answers/pubmedqa/yes"] == 0.5
    assert logs["answers/pubmedqa/no"] == 0.2
    assert logs["answers/pubmedqa/maybe"] == 0.1
    assert logs["answers/pubmedqa/none"] == 0.2
    assert logs["answers/pubmedqa/top_share"] == 0.5
    assert logs["answers/format_rate"] == 0.8
    assert logs["answers/collapse_alarm"] == 0.0
    assert run.state.log_history[-1]["answers/pubmedqa/yes"] == 0.5  # checkpoints keep it
    # the next step counts only its own completions
    assert run.step(pubmedqa_batch(no=4))["answers/pubmedqa/no"] == 1.0


def test_per_task_shares_in_a_mixed_batch_with_options_and_numbers():
    shares = TEST_LIKE | {"medqa": dict.fromkeys("ABCD", 0.25), "gsm8k": {"18": 0.5, "7": 0.5}}
    run = Run(shares)
    completions = [
        format_completion(REASONING, "Yes, fewer infections; no harm."),
        format_completion(REASONING, "Metformin"),  # an option's text
        format_completion(REASONING, "(C) Hypertension"),
        format_completion(REASONING, "18 dollars (3 x 6)"),
        format_completion(REASONING, "42 or 43"),
    ]
    tasks = ["pubmedqa", "medqa", "medqa", "gsm8k", "gsm8k"]
    options = [[], ["Insulin", "Metformin", "Hypertension", "Warfarin"]] * 2 + [[]]
    logs = run.step(completions, task=tasks, options=options)
    assert logs["answers/pubmedqa/yes"] == 1.0
    assert logs["answers/medqa/B"] == logs["answers/medqa/C"] == 0.5
    assert logs["answers/medqa/A"] == logs["answers/medqa/D"] == 0.0
    assert logs["answers/gsm8k/top_share"] == logs["answers/gsm8k/none"] == 0.5
    assert not any(k.startswith("answers/gsm8k/18") for k in logs)  # numbers: no column each


def test_alarm_warns_once_after_the_set_number_of_consecutive_steps(capsys):
    run = Run()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            run.step(pubmedqa_batch(yes=19, no=1))  # 95% "yes"
        run.step(pubmedqa_batch(yes=17, no=3))  # 85%: the streak starts again
        logs = [run.step(pubmedqa_batch(yes=20)) for _ in range(5)]
    alarms = [w for w in caught if issubclass(w.category, CollapseWarning)]
    assert len(alarms) == 1
    assert [entry["answers/collapse_alarm"] for entry in logs] == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert run.monitor.alarm == {
        "step": 6,
        "task": "pubmedqa",
        "answer": "yes",
        "share": 1.0,
        "steps": 3,
        "data_label": "yes",
        "data_share": 0.55,
    }
    assert "COLLAPSE ALARM at step 6" in capsys.readouterr().out
    assert "100% of the pubmedqa completions answer 'yes'" in str(alarms[0].message)


def test_no_alarm_when_the_data_is_that_skewed_or_nothing_is_readable():
    skewed = Run({"pubmedqa": {"yes": 0.93, "no": 0.07}})  # pqa_artificial-like
    unread = Run()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        for _ in range(5):
            skewed.step(pubmedqa_batch(yes=20))
            unread.step(pubmedqa_batch(prose=20))  # 100% no answer: not one answer
    assert skewed.monitor.alarm is None and unread.monitor.alarm is None


def test_settings_change_the_alarm_and_bad_ones_are_refused():
    run = Run(steps=1, share=0.5)
    with pytest.warns(CollapseWarning, match="60% of the pubmedqa"):
        run.step(pubmedqa_batch(yes=6, no=4))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        AnswerShares(TEST_LIKE, steps=0)
    with pytest.raises(ValueError, match=r"share=1.5"):
        AnswerShares(TEST_LIKE, share=1.5)
    with pytest.raises(ValueError, match="must sum to 1"):
        AnswerShares({"pubmedqa": {"yes": 0.5}})
    with pytest.raises(ValueError, match="unknown task 'usmle'"):
        AnswerShares({"usmle": {"A": 1.0}})


def test_training_label_shares_from_the_answer_column():
    from datasets import Dataset

    rows = Dataset.from_dict(
        {
            "task": ["pubmedqa"] * 4 + ["gsm8k"] * 2,
            "answer": ["yes", "no", "yes", "maybe", "1,000", "1000"],
        }
    )
    assert training_label_shares(rows) == {
        "pubmedqa": {"yes": 0.5, "no": 0.25, "maybe": 0.25},
        "gsm8k": {"1000": 1.0},
    }
    with pytest.raises(ValueError, match="lacks column"):
        training_label_shares(rows.remove_columns("task"))
    bad = Dataset.from_dict({"task": ["pubmedqa", "pubmedqa"], "answer": ["yes", "perhaps"]})
    with pytest.raises(ValueError, match="row 1 .pubmedqa. has no readable answer 'perhaps'"):
        training_label_shares(bad)


def test_metrics_csv_after_the_monitor_writes_the_shares(tmp_path):
    run = Run()
    csv = MetricsCSV(tmp_path / "metrics.csv")
    for batch in (pubmedqa_batch(yes=3, no=1), pubmedqa_batch(yes=4)):
        run.state.global_step += 1
        run.reward(batch, task="pubmedqa")
        logs = {"reward": 1.0}
        run.monitor.on_log(None, run.state, None, logs=logs)
        csv.on_log(None, run.state, None, logs=logs)
    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert frame["answers/pubmedqa/yes"].tolist() == [0.75, 1.0]
    # under DDP the other processes write nothing: process 0's file is the run's record
    other = MetricsCSV(tmp_path / "other.csv")
    state = SimpleNamespace(global_step=1, log_history=[], is_world_process_zero=False)
    other.on_train_begin(None, state, None)
    other.on_log(None, state, None, logs={"reward": 1.0})
    assert not (tmp_path / "other.csv").exists()


def test_plot_answer_shares_one_panel_per_task(tmp_path):
    from medreason_lib.evaluation.plots import plot_answer_shares

    run = Run(TEST_LIKE | {"gsm8k": {"18": 1.0}}, steps=1)
    csv = MetricsCSV(tmp_path / "metrics.csv")
    for yes in (2, 8, 10):
        run.state.global_step += 1
        batch = pubmedqa_batch(yes=yes, no=10 - yes) + [format_completion(REASONING, "18")]
        run.reward(batch, task=["pubmedqa"] * 10 + ["gsm8k"])
        logs = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CollapseWarning)
            run.monitor.on_log(None, run.state, None, logs=logs)
        csv.on_log(None, run.state, None, logs=logs)
    fig = plot_answer_shares(tmp_path / "metrics.csv")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["gsm8k: answers per step", "pubmedqa: answers per step"]
    pubmedqa = fig.axes[1]
    assert {t.get_text() for t in pubmedqa.get_legend().get_texts()} >= {"yes", "no", "none"}
    assert plot_answer_shares(pd.read_csv(tmp_path / "metrics.csv")).axes  # a DataFrame too
    with pytest.raises(ValueError, match="no answers/<task>/<answer> columns"):
        plot_answer_shares(pd.DataFrame({"step": [1], "reward": [0.5]}))


def test_dominant_answer_share_of_an_evaluation():
    records = [{"task": "pubmedqa", "extracted": "yes", "error": None} for _ in range(19)] + [
        {"task": "pubmedqa", "extracted": None, "error": None},
        {"task": "medqa", "extracted": "A", "error": None},
        {"task": "medqa", "extracted": "B", "error": None},
        {"task": "medqa", "extracted": None, "error": "timeout"},
    ]
    assert dominant_answer_share(records, "pubmedqa") == ("yes", 0.95)
    assert dominant_answer_share(SimpleNamespace(records=records), "medqa") == ("A", 1 / 3)
    assert collapsed_tasks(records) == {"pubmedqa": ("yes", 0.95)}
    assert collapsed_tasks(records, share=0.96) == {}
    assert dominant_answer_share(records[19:20]) == (None, 0.0)


# --------------------------------------------------------------------------- a real run


def pays_only_yes(completions, task, **kwargs):
    """The collapse recipe: a reward that pays "yes" whatever the question."""
    return [
        2.0 if extract_answer(c, t) == "yes" else 0.0
        for c, t in zip(completions, task, strict=True)
    ]


@pytest.mark.usefixtures("one_thread")
def test_grpo_with_a_reward_that_pays_only_yes_sounds_the_alarm(tmp_path, tiny_warm_start):
    from medreason_lib.data import load_task
    from medreason_lib.settings.profiles import PROFILES
    from medreason_lib.training import train

    # The bundled labelled PubMedQA rows: 54% yes, so "always yes" is not what the data says.
    data = load_task("pubmedqa", "train", source="bundled", verbose=False)
    assert max(training_label_shares(data)["pubmedqa"].values()) < 0.7
    # GRPO starts from the session's warm start (``base_model``: the warm start of these
    # PubMedQA-only rows would be another one to train), which writes the template about half
    # the time, so the reward must teach the layout as well as the answer. Sampling at 0.5, a
    # learning rate of 2e-3 and the tests' half batch (TEST_BATCH: 4 prompts of 4 completions
    # a step): the alarm went off at steps 17, 13, 15, 12, 18, 14, 15, 12, 19, 14, 17 and 16
    # with seeds 0-11 (measured on CPU, 2026-11-27), inside 24 steps. At 2.5e-3 seed 3 fell
    # back to prose by step 6 (nothing readable, no alarm); at temperature 0.7 two of seeds
    # 0-5, and at 1.0 with 3e-3 all six, gave no alarm in 24 steps.
    profile = PROFILES["tiny"].replace(
        max_steps=24,
        save_steps=100,
        temperature=0.5,
        learning_rate=2e-3,
        per_device_train_batch_size=TEST_BATCH,
    )
    with pytest.warns(CollapseWarning, match="completions answer 'yes'") as caught:
        run = train(
            profile,
            run_dir=tmp_path / "grpo",
            dataset=data,
            reward_funcs=[pays_only_yes],
            sample_every=0,
            base_model=tiny_warm_start,
        )
    assert sum(issubclass(w.category, CollapseWarning) for w in caught) == 1
    metrics = pd.read_csv(run.metrics_csv)
    fired = metrics.loc[metrics["answers/collapse_alarm"] == 1.0, "step"].tolist()
    assert len(fired) == 1
    # the three logged steps up to the alarm each gave "yes" to more than 90%
    before = metrics[metrics["step"] <= fired[0]].tail(3)
    assert (before["answers/pubmedqa/yes"] > 0.9).all()
    assert metrics["reward"].tail(3).mean() > metrics["reward"].head(3).mean()  # reward "improves"


def test_under_ddp_the_shares_pool_every_process_and_process_0_alone_warns(monkeypatch):
    """Two processes, each scoring half of the batch: both log the shares of the whole batch
    and reach the alarm at the same step; only process 0 prints and warns."""
    from medreason_lib.training import callbacks

    halves = {0: pubmedqa_batch(yes=19, no=1), 1: pubmedqa_batch(yes=19, maybe=1)}
    runs = {rank: Run(steps=2) for rank in halves}
    for rank, run in runs.items():
        run.state.is_world_process_zero = rank == 0
    logged = {rank: [] for rank in runs}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            for rank, run in runs.items():
                run.state.global_step += 1
                run.reward(halves[rank], task="pubmedqa")
            # what all_gather_object hands every process: each one's counts, in rank order
            m = {rank: run.monitor for rank, run in runs.items()}
            pooled = [(m[r]._answers, m[r]._formatted, m[r]._seen) for r in sorted(m)]
            monkeypatch.setattr(callbacks, "gather_from_processes", lambda obj, p=pooled: p)
            for rank, run in runs.items():
                logs = {"reward": 0.0}
                run.monitor.on_log(None, run.state, None, logs=logs)
                logged[rank].append(logs)
    for rank in runs:
        first = logged[rank][0]
        assert first["answers/pubmedqa/yes"] == pytest.approx(38 / 40)
        assert first["answers/pubmedqa/no"] == pytest.approx(1 / 40)
        assert first["answers/pubmedqa/maybe"] == pytest.approx(1 / 40)
        assert [row["answers/collapse_alarm"] for row in logged[rank]] == [0.0, 1.0]
    assert sum(issubclass(w.category, CollapseWarning) for w in caught) == 1


def test_gather_from_processes_without_ddp_is_this_process_alone():
    from medreason_lib.training.callbacks import gather_from_processes

    assert gather_from_processes({"a": 1}) == [{"a": 1}]
