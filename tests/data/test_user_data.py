"""Bring your own data (issue 14, item 2): ``user_data.load_user_data``, your own rewards
(``user_rewards``, ``training.train(extra_rewards=...)``) and ``train --data/--reward``.

Every bad file or row must be refused with the file, the line (as an editor numbers it) and
the field named, all problems at once; a good file must give the rows ``data.load_task``
gives, scored by the course's rewards as they score the bundled tasks.
"""

from __future__ import annotations

import inspect
import json
import re
from types import SimpleNamespace

import pytest

from conftest import CapturingTrainer
from medreason_lib import cli, data, training
from medreason_lib.data import user_data, user_rewards
from medreason_lib.data.user_data import UserDataError, load_user_data
from medreason_lib.scoring.rewards import REWARD_FUNCS, correctness_reward, score_completions
from medreason_lib.scoring.template import SYSTEM_PROMPT, format_completion
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training.callbacks import training_label_shares

EXAMPLE = paths.data_dir() / "user_data" / "example.csv"
HEADER = "question,answer,task_type,context,A,B,C,D"
OPTIONS = "Liver,Pancreas,Kidney,Spleen"


def write(tmp_path, text: str | bytes, name: str = "mine.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def problems(path, **kwargs) -> tuple[list, str]:
    with pytest.raises(UserDataError) as caught:
        load_user_data(path, verbose=False, **kwargs)
    return caught.value.problems, str(caught.value)


def as_completion(answer: str) -> list[dict]:
    return [
        {"role": "assistant", "content": format_completion("It follows from the question.", answer)}
    ]


# --------------------------------------------------------------------------- good files


def test_the_example_files_give_course_rows_that_the_rewards_score():
    rows = load_user_data(EXAMPLE, verbose=False)
    assert rows.features == data.FEATURES
    assert load_user_data(EXAMPLE.with_suffix(".jsonl"), verbose=False).to_list() == rows.to_list()
    assert len(rows) == 12 and set(rows["task"]) == {"yes_no_maybe", "choice", "number"}
    by_id = {r["id"]: r for r in rows}
    # answers as written -> as the extractor writes them
    golds = [by_id[f"ex-0{i}"]["answer"] for i in range(1, 9)]
    assert golds == ["yes", "no", "maybe", "yes", "B", "C", "D", "A"]
    assert by_id["ex-09"]["answer"] == "1000" and by_id["ex-12"]["answer"] == "1080"
    assert by_id["ex-11"]["answer"] == "1.2"
    # the prompts are the course's own
    choice = by_id["ex-05"]
    assert choice["prompt"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": data.choice_user_prompt(choice["question"], choice["options"])},
    ]
    ynm = by_id["ex-01"]
    assert ynm["prompt"][1]["content"] == data.pubmedqa_user_prompt(ynm["question"], ynm["context"])
    assert by_id["ex-09"]["prompt"][1]["content"] == data.gsm8k_user_prompt(
        by_id["ex-09"]["question"]
    )
    # the rewards, called as GRPOTrainer calls them: gold scores 2.0, a wrong answer 0.0
    columns = {k: rows[k] for k in rows.column_names if k != "prompt"}
    right = correctness_reward([as_completion(a) for a in rows["answer"]], **columns)
    assert right == [2.0] * len(rows)
    wrong = ["no", "yes", "yes", "no", "A", "A", "A", "B", "999", "1", "7", "0"]
    assert correctness_reward([as_completion(a) for a in wrong], **columns) == [0.0] * len(rows)
    totals = score_completions([as_completion(a) for a in rows["answer"]], **columns)["total"]
    assert all(t == pytest.approx(3.5) for t in totals)
    shares = training_label_shares(rows)
    assert shares["yes_no_maybe"] == {"yes": 0.5, "no": 0.25, "maybe": 0.25}


def test_adversarial_but_valid_csv(tmp_path, capsys):
    """BOM, CRLF, quoted commas and a quoted line break, blank lines, an extra column,
    headers in other case with spaces, answers as people write them."""
    text = (
        "\ufeff Question , ANSWER,Task_Type,notes,context,a,b,c,d\r\n"
        '"Which organ, of four, makes insulin?",pancreas,Multiple Choice,x,,'
        "Liver,Pancreas,Kidney,Spleen\r\n"
        "\r\n"
        '"How many tablets\r\nin two packs of 500?","1,000",number,,,,,,\r\n'
        ",,,,,,,,\r\n"
        'Is it yes?, Maybe. ,yes-no-maybe,,"A fictional, short context.",,,,\r\n'
        "What is 3/4 of 100 in dollars?,$75,NUMBER,,,,,,\r\n"
        "Which one?,b,choice,,,w,x,y,z\r\n"
    )  # fmt: skip
    rows = load_user_data(write(tmp_path, text))
    assert rows["answer"] == ["B", "1000", "maybe", "75", "B"]
    assert rows["task"] == ["choice", "number", "yes_no_maybe", "number", "choice"]
    assert rows["question"][0] == "Which organ, of four, makes insulin?"
    assert rows["question"][1] == "How many tablets\nin two packs of 500?"
    assert rows["context"][2] == "A fictional, short context."
    # ids name the line each record starts on (the quoted line break spans lines 4-5)
    assert rows["id"] == ["mine-2", "mine-4", "mine-7", "mine-8", "mine-9"]
    out = capsys.readouterr().out
    assert "mine.csv: 5 rows" in out and "ignored columns: notes" in out


def test_other_separators_option_forms_and_json_values(tmp_path):
    semicolons = (
        "question;answer;task_type;options\n"
        "Which?;Kidney;multiple_choice;Liver | Pancreas | Kidney | Spleen\n"
    )
    rows = load_user_data(write(tmp_path, semicolons), verbose=False)
    assert rows[0]["options"] == ["Liver", "Pancreas", "Kidney", "Spleen"]
    assert rows[0]["answer"] == "C"
    tsv = "question\tanswer\ttask_type\toptions\nWhich?\t(D)\tmedqa\t" + json.dumps(
        ["Liver", "Pancreas", "Kidney", "Spleen"]
    )
    rows = load_user_data(write(tmp_path, tsv, "mine.tsv"), verbose=False)
    assert rows[0]["task"] == "medqa" and rows[0]["answer"] == "D"
    assert rows[0]["prompt"][1]["content"] == data.user_prompt(rows[0])
    lines = [
        {"question": "Which?", "answer": "A", "task_type": "choice",
         "options": {"A": "w", "B": "x", "C": "y", "D": "z"}},
        {"question": "How much?", "answer": 2.50, "task_type": "gsm8k", "id": 7},
        {"question": "Is it?", "answer": "YES", "task_type": "pubmedqa", "context": "An abstract."},
        {"question": "Which one?", "answer": "x", "option_a": "w", "option_b": "x", "option_c": "y",
         "option_d": "z", "task_type": "choice"},
    ]  # fmt: skip
    text = "\n".join(json.dumps(obj) for obj in lines) + "\n\n"
    rows = load_user_data(write(tmp_path, text, "mine.jsonl"), verbose=False)
    assert rows["answer"] == ["A", "2.5", "yes", "B"]
    assert rows["id"][1] == "7" and rows["task"][2] == "pubmedqa"
    assert rows[2]["prompt"][1]["content"] == data.pubmedqa_user_prompt("Is it?", "An abstract.")
    # one task type for every row, when the file has no such column
    plain = "question,answer\nIs it?,no\nAnd this?,yes\n"
    rows = load_user_data(write(tmp_path, plain), task_type="yes_no_maybe", verbose=False)
    assert rows["answer"] == ["no", "yes"]
    assert rows[0]["prompt"][1]["content"] == "Question: Is it?\n\nAnswer with yes, no or maybe."


# --------------------------------------------------------------------------- bad rows

BAD_ROWS = {
    "missing answer": ("Which?,,multiple_choice,," + OPTIONS, "answer", "missing"),
    "answer not among the options": ("Which?,E,multiple_choice,," + OPTIONS, "answer",
                                     "'E' is not among the options A-D"),
    "answer text not an option": ("Which?,Heart,multiple_choice,," + OPTIONS, "answer",
                                  "neither a letter A-D nor the text of one of the options"),
    "answer as an option number": ("Which?,2,multiple_choice,," + OPTIONS, "answer",
                                   "write the letter A-D"),
    "unknown task type": ("Which?,B,multiple_choise,," + OPTIONS, "task_type",
                          "unknown task type 'multiple_choise' (did you mean 'multiple_choice'?)"),
    "empty question": ('"  ",yes,yes_no_maybe,,,,,', "question", "empty"),
    "not yes/no/maybe": ("Is it?,probably,yes_no_maybe,,,,,", "answer",
                         "'probably' is not yes, no or maybe"),
    "not a number": ("How many?,about ten,number,,,,,", "answer", "'about ten' is not a number"),
    "a decimal comma": ('How much?,"2,5",number,,,,,', "answer", "a decimal comma? write 2.5"),
    "three options": ("Which?,B,multiple_choice,,Liver,Pancreas,Kidney,", "options",
                      "D empty or missing"),
    "no options": ("Which?,B,multiple_choice,,,,,", "options", "needs options A-D"),
    "two options alike": ("Which?,B,multiple_choice,,Liver,liver,Kidney,Spleen", "A-D",
                          "two options have the same text"),
    "options on a number": ("How many?,3,number,,1,2,3,4", "A-D", "takes no options"),
    "context on a choice": ("Which?,B,multiple_choice,Some text," + OPTIONS, "context",
                            "only yes/no/maybe questions are shown a context"),
    "pubmedqa without context": ("Is it?,yes,pubmedqa,,,,,", "context", "needs its abstract"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_ROWS, ids=list(BAD_ROWS))
def test_a_bad_row_names_the_file_line_and_field(tmp_path, case):
    row, field, message = BAD_ROWS[case]
    good = "Is it?,yes,yes_no_maybe,,,,,"
    path = write(tmp_path, f"{HEADER}\n{good}\n\n{row}\n{good.replace('it', 'this')}\n")
    found, text = problems(path)
    assert [(line, f) for line, f, _ in found] == [(4, field)], found
    assert message in found[0][2]
    assert f"{path}, line 4, field {field!r}: " in text and "nothing was loaded" in text


def test_every_problem_is_reported_together(tmp_path):
    rows = [f"Q{i}?,maybe{i},yes_no_maybe,,,,," for i in range(30)]
    rows[3] = "Q3?,,yes_no_maybe,,,,,"
    path = write(tmp_path, "\n".join([HEADER, *rows]) + "\n")
    found, text = problems(path)
    assert len(found) == 30 and [p[0] for p in found] == list(range(2, 32))
    assert (f"line {found[3][0]}", found[3][1], "missing") == ("line 5", "answer", "missing")
    assert text.count(f"{path}, line ") == user_data_max_shown()
    assert "... and 10 more problems" in text


def user_data_max_shown() -> int:
    from medreason_lib.data.user_files import MAX_SHOWN

    return MAX_SHOWN


def test_bad_lines_and_repeats(tmp_path):
    text = (
        f"{HEADER}\n"
        "Which, really?,B,multiple_choice,," + OPTIONS + "\n"  # unquoted comma: 9 fields
        f"{HEADER}\n"  # a second file pasted below the first
        "Is it?,yes,yes_no_maybe,,,,,\n"
        "is  it?,no,yes_no_maybe,,,,,\n"  # the same question, another answer
    )
    found, _ = problems(write(tmp_path, text))
    assert [(p[0], p[1]) for p in found] == [(2, None), (3, None), (5, "answer")]
    assert "9 fields, but the header has 8" in found[0][2] and "double quotes" in found[0][2]
    assert "repeats the header line" in found[1][2]
    assert "line 4 asks the same with answer 'yes'" in found[2][2]
    ids = "id,question,answer,task_type\nq1,Is it?,yes,yes_no_maybe\nq1,Or this?,no,yes_no_maybe\n"
    found, _ = problems(write(tmp_path, ids))
    assert found == [(3, "id", "'q1' is also the id of line 2")]


# --------------------------------------------------------------------------- bad files


def test_a_file_that_is_not_utf8_names_the_line_and_byte(tmp_path):
    text = (
        "question,answer,task_type\nIs it?,yes,yes_no_maybe\nCaf\u00e9 au lait?,no,yes_no_maybe\n"
    )
    path = write(tmp_path, text.encode("cp1252"))
    found, message = problems(path)
    offset = len(text.encode("cp1252").split(b"\xe9")[0])
    assert found == [(3, None, found[0][2])]
    assert f"byte offset {offset}" in found[0][2] and "UTF-8" in found[0][2]
    assert f"{path}, line 3: not UTF-8" in message
    found, _ = problems(write(tmp_path, text.encode("utf-16")))
    assert "UTF-16" in found[0][2]


@pytest.mark.parametrize(
    ("header", "field", "message"),
    [
        ("question,task_type,context", "answer", "the header has no such column"),
        ("question,anwser,task_type", "answer", "did you mean 'anwser'?"),
        ("question,answer,task_type,Answer", "answer", "column 4 repeats the name of column 2"),
        ("quest,answer,kind", "question", "it has ['quest', 'answer', 'kind']"),
    ],
)
def test_a_missing_or_repeated_column(tmp_path, header, field, message):
    path = write(tmp_path, f"{header}\nIs it?,yes,yes_no_maybe,x\n")
    found, text = problems(path)
    assert (found[0][0], found[0][1]) == (1, field) and message in found[0][2]
    assert f"{path}, line 1, field {field!r}" in text


def test_malformed_json_lines(tmp_path):
    lines = [
        '{"question": "Is it?", "answer": "yes", "task_type": "yes_no_maybe"}',
        '{"question": "Is it?", "answer": yes}',
        "",
        '["a list"]',
        '{"question": "Q", "answer": true, "task_type": "yes_no_maybe"}',
        '{"question": "Q2", "Answer": "no", "answer": "yes", "task_type": "yes_no_maybe"}',
        '{"question": "Q3", "answer": "B", "task_type": "choice", "options": ["a", "b", "c"]}',
        '{"question": ["Q4"], "answer": "no", "task_type": "yes_no_maybe"}',
    ]
    found, _ = problems(write(tmp_path, "\n".join(lines), "mine.jsonl"))
    assert [(p[0], p[1]) for p in found] == [
        (2, None), (4, None), (5, "answer"), (6, "answer"), (7, "options"), (8, "question")
    ]  # fmt: skip
    assert "not valid JSON" in found[0][2] and "column 34" in found[0][2]
    assert "got a list" in found[1][2] and "JSON bool" in found[2][2]
    assert "more than once" in found[3][2] and "exactly 4" in found[4][2]
    found, _ = problems(write(tmp_path, '[{"question": "Q"}]', "array.json"))
    assert "JSON array" in found[0][2]


def test_empty_files_formats_and_folders(tmp_path):
    assert "no header line" in problems(write(tmp_path, "\n\n"))[0][0][2]
    assert "no rows" in problems(write(tmp_path, "question,answer,task_type\n"))[0][0][2]
    assert "unknown format '.xlsx'" in problems(write(tmp_path, "x", "mine.xlsx"))[0][0][2]
    with pytest.raises(FileNotFoundError, match="no data file"):
        load_user_data(tmp_path / "absent.csv")
    with pytest.raises(FileNotFoundError, match="it is a folder"):
        load_user_data(tmp_path)


# --------------------------------------------------------------------------- your own rewards


def brevity(completions, **kwargs):
    return [0.1 if len(str(c)) < 400 else 0.0 for c in completions]


def test_load_reward_from_a_module_or_a_file(tmp_path):
    assert user_rewards.load_reward(f"{__name__}:brevity") is brevity
    source = "def mine(completions, answer, **kwargs):\n    return [0.0] * len(completions)\n"
    path = write(tmp_path, source, "my_rewards.py")
    fn = user_rewards.load_reward(f"{path}:mine")
    assert fn.__name__ == "mine" and fn([1, 2], answer=None) == [0.0, 0.0]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "expected MODULE:FUNCTION"),
        ("surely_no_such_module:fn", "cannot import module 'surely_no_such_module'"),
        ("/no/such/file.py:fn", "no file /no/such/file.py"),
        (f"{__name__}:absent", "has no 'absent'"),
        (f"{__name__}:BAD_ROWS", "is not callable"),
        (f"{__name__}:keyword_only", "cannot take what the trainer passes"),
        (f"{__name__}:no_kwargs", "cannot take what the trainer passes"),
    ],
)
def test_bad_reward_specs_name_the_setting(spec, message):
    with pytest.raises(user_rewards.RewardError) as caught:
        user_rewards.load_reward(spec)
    assert str(caught.value).startswith(f"--reward {spec}: ") and message in str(caught.value)


def keyword_only(*, completions, **kwargs):
    return [0.0] * len(completions)


def no_kwargs(completions, answer):
    return [0.0] * len(completions)


def test_check_rewards_calls_each_reward_on_sample_rows():
    rows = load_user_data(EXAMPLE, verbose=False)
    seen = {}

    def uses_columns(completions, answer, task, context, **kwargs):
        seen.update(answer=answer, task=task, keys=set(kwargs), n=len(completions))
        return [1.0] * len(completions)

    (guarded,) = user_rewards.check_rewards([uses_columns], rows)
    assert isinstance(guarded, user_rewards.GuardedReward) and guarded.fn is uses_columns
    assert guarded.__name__ == "uses_columns"
    assert seen["answer"] == ["yes", "yes", "no", "no"] and seen["n"] == 4
    assert {"prompts", "completion_ids", "trainer_state", "options", "question"} <= seen["keys"]

    def raises(completions, **kwargs):
        raise KeyError("gold")

    def too_few(completions, **kwargs):
        return [0.0]

    def text(completions, **kwargs):
        return ["high"] * len(completions)

    def context_less(completions, answer, missing_column, **kwargs):
        return [0.0] * len(completions)

    for fn, message in [
        (raises, "raised KeyError: 'gold' on 4 sample completions"),
        (too_few, "returned 1 values for 4 completions"),
        (text, "returned 'high'; each value must be a finite number"),
        (context_less, "missing a required argument: 'missing_column'"),
        (lambda completions, **kw: [0.0], "a reward needs a name"),
        (REWARD_FUNCS[0], "the name 'xml_count_reward' is taken"),
    ]:
        with pytest.raises(user_rewards.RewardError, match=re.escape(message)):
            user_rewards.check_rewards([brevity, fn], rows)


def test_the_keywords_checked_are_the_ones_trl_passes():
    """``check_signature`` binds ``TRL_KEYWORDS``; they are what the pinned GRPOTrainer adds
    to the dataset's columns, so a reward that passes the check takes every call."""
    from trl import GRPOTrainer

    source = inspect.getsource(GRPOTrainer._calculate_rewards)
    call = re.search(r"output_reward_func = reward_func\((.*?)\*\*reward_kwargs", source, re.S)
    passed = set(re.findall(r"(\w+)=", call.group(1))) - {"completions"}  # by position
    passed |= set(re.findall(r'(?<![\w.])reward_kwargs\["(\w+)"\] =', source))
    assert passed - {"environments"} == set(user_rewards.TRL_KEYWORDS)


# --------------------------------------------------------------------------- training and the CLI


def test_extra_rewards_reach_the_trainer_and_run_json(tmp_path, monkeypatch):
    handed = {}

    def build_trainer(profile, run_dir, *, dataset=None, reward_funcs=None, **kwargs):
        handed.update(dataset=dataset, reward_funcs=reward_funcs)
        return CapturingTrainer(), []

    monkeypatch.setattr(training, "build_trainer", build_trainer)
    rows = load_user_data(EXAMPLE, verbose=False)
    profile = PROFILES["tiny"].replace(sft_warmup_steps=0)
    run = training.train(profile, run_dir=tmp_path, dataset=rows, extra_rewards=[brevity])
    *course, extra = handed["reward_funcs"]
    assert course == REWARD_FUNCS and extra.fn is brevity  # guarded (user_rewards.GuardedReward)
    assert handed["dataset"]["id"] == rows["id"]  # nothing of the example is an eval item
    info = json.loads((run.run_dir / "run.json").read_text())
    assert info["extra_rewards"] == ["brevity"] and info["training_rows"] == 12

    def broken(completions, **kwargs):
        return None

    handed.clear()
    with pytest.raises(user_rewards.RewardError, match=r"extra_rewards\[0\]: broken returned"):
        training.train(profile, run_dir=tmp_path, dataset=rows, extra_rewards=[broken])
    assert handed == {}  # refused before the trainer (and its model) was built


def test_cli_train_data_and_reward(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDREASON_PROFILE", "tiny")  # restored after: --profile sets it
    calls = []

    def fake_train(profile, **kwargs):
        calls.append(kwargs)
        return SimpleNamespace(global_step=1, train_seconds=1.0, run_dir=tmp_path,
                               adapter_dir=tmp_path / "adapter", base_model="base")  # fmt: skip

    monkeypatch.setattr(cli, "_start", lambda args: None)
    monkeypatch.setattr(training, "train", fake_train)
    spec = f"{__name__}:brevity"
    assert cli.main(["train", "--profile", "tiny", "--data", str(EXAMPLE), "--reward", spec]) == 0
    ((kwargs,),) = [calls]
    assert kwargs["dataset"].to_list() == load_user_data(EXAMPLE, verbose=False).to_list()
    assert kwargs["extra_rewards"] == [brevity]

    bad = write(tmp_path, f"{HEADER}\nIs it?,yes,yes_no_maybe,,,,,\nWhich?,E,choice,," + OPTIONS)
    calls.clear()
    capsys.readouterr()
    assert cli.main(["train", "--profile", "tiny", "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}, line 3, field 'answer': 'E' is not among the options A-D" in err
    assert calls == []  # stopped before training (and any model) started
    assert cli.main(["train", "--profile", "tiny", "--reward", "nothing_here"]) == 2
    assert "--reward nothing_here: expected MODULE:FUNCTION" in capsys.readouterr().err
    assert cli.main(["train", "--profile", "tiny", "--data", str(tmp_path / "no.csv")]) == 2
    assert calls == []


def test_the_example_has_no_ignored_or_repeated_rows(capsys):
    load_user_data(EXAMPLE)
    out = capsys.readouterr().out.strip()
    assert out == "example.csv: 12 rows (yes_no_maybe 4, choice 4, number 4)"
    assert user_data.TASK_TYPES["multiple_choice"] == ("choice", "choice")


def test_the_evaluation_reads_user_rows_unchanged():
    """The course's evaluation loop scores the rows per task type: a generator that writes the
    gold answers scores 100%, one that always says "A" only a quarter of the choices."""
    from medreason_lib.evaluation.generation import scripted_generator
    from medreason_lib.evaluation.loop import evaluate

    rows = load_user_data(EXAMPLE, verbose=False)
    gold = scripted_generator(lambda row: row["answer"], rows)
    report = evaluate(gold, rows, profile=PROFILES["tiny"], progress=False)
    assert (report.n, report.accuracy) == (12, 1.0)
    assert {t: s.n for t, s in report.by_task.items()} == {
        "yes_no_maybe": 4, "choice": 4, "number": 4
    }  # fmt: skip
    always_a = evaluate(
        scripted_generator(lambda row: "A", rows), rows, profile=PROFILES["tiny"], progress=False
    )
    assert always_a.by_task["choice"].accuracy == 0.25 and always_a.by_task["number"].correct == 0
