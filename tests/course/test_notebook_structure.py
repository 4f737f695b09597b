"""Every notebook teaches the same way (issue 12):

- a "Prerequisites" section at the top that names each earlier run the notebook needs, with its
  time on the tiny profile from ``course.COURSE_MAP``;
- an exercise with a learner cell (a ``my_... = None  # ...`` stub) and a check cell that tests
  that value through ``exercises.yours_or_solution``;
- a "Check your understanding" section near the end: 3 to 5 questions, each with its answer,
  then "Further research": 2 to 4 open questions that point to a paper, a setting to change or
  a measurement to make (issue 24; fastbook ends its chapters the same way);
- every model, dataset and method linked the first time a markdown cell names it;
- at least three exercises retrain the tiny model (``exercises.retrain``).
"""

from __future__ import annotations

import re

import nbformat
import pytest

from medreason_lib import course
from medreason_lib.course import exercises, solutions
from medreason_lib.settings.profiles import get_profile

NOTEBOOKS = course.notebooks()
STUB = re.compile(r"^(my_\w+) = None  # .+$", re.MULTILINE)
LINK = re.compile(r"\[([^\]]*)\]\(https?://[^)\s]+\)")
# name -> where it must link (a prefix of the URL)
SOURCES = {
    "MedQwen3B-Reasoner": "https://huggingface.co/hooman650/MedQwen3B-Reasoner",
    "Qwen2.5-3B-Instruct": "https://huggingface.co/Qwen/Qwen2.5-3B-Instruct",
    "Qwen3-8B": "https://huggingface.co/Qwen/Qwen3-8B",
    "gpt-oss-20b": "https://huggingface.co/openai/gpt-oss-20b",
    "PubMedQA": "https://arxiv.org/abs/1909.06146",
    "MedQA": "https://arxiv.org/abs/2009.13081",
    "MedMCQA": "https://arxiv.org/abs/2203.14371",
    "MMLU": "https://arxiv.org/abs/2009.03300",
    "GSM8K": "https://arxiv.org/abs/2110.14168",
    "GRPO": "https://arxiv.org/abs/2402.03300",
    "DAPO": "https://arxiv.org/abs/2503.14476",
    "Dr. GRPO": "https://arxiv.org/abs/2503.20783",
    "GSPO": "https://arxiv.org/abs/2507.18071",
    "LoRA": "https://arxiv.org/abs/2106.09685",
    "QLoRA": "https://arxiv.org/abs/2305.14314",
    "Unsloth": "https://github.com/unslothai/unsloth",
    "TRL": "https://huggingface.co/docs/trl",
    "vLLM": "https://arxiv.org/abs/2309.06180",
    "DPO": "https://arxiv.org/abs/2305.18290",
    "Reason·Med": "https://chandravikram.com/papers/09-reasonmed",  # a preliminary manuscript
    "ReasonMed": "https://arxiv.org/abs/2506.09513",  # the trace dataset: another work
    "II-Medical": "https://huggingface.co/Intelligent-Internet/II-Medical",
    "MedGemma": "https://huggingface.co/google/medgemma",
    "MEDITRON": "https://arxiv.org/abs/2311.16079",
    "HuatuoGPT-o1": "https://arxiv.org/abs/2412.18925",
    "PKU-SafeRLHF": "https://huggingface.co/datasets/PKU-Alignment/PKU-SafeRLHF",
    "lm-evaluation-harness": "https://github.com/EleutherAI/lm-evaluation-harness",
}


def mention(name: str) -> re.Pattern:
    """A name as a word of its own ("GRPO" is not part of "GRPOConfig" or "Dr. GRPO")."""
    before = r"(?<!Dr\. )(?<![\w.-])" if name == "GRPO" else r"(?<![\w.-])"
    return re.compile(before + re.escape(name) + r"(?![\w-])")


def _cells(path):
    return nbformat.read(str(path), as_version=4).cells


def _headings(cells, level="##"):
    return [
        (i, line[len(level) :].strip())
        for i, c in enumerate(cells)
        if c.cell_type == "markdown"
        for line in c.source.splitlines()
        if line.startswith(level + " ")
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_prerequisites_at_the_top_name_the_earlier_runs(path):
    cells = _cells(path)
    found = [i for i, title in _headings(cells) if title == "Prerequisites"]
    assert found, f"{path.name}: no '## Prerequisites' heading"
    first_code = next(i for i, c in enumerate(cells) if c.cell_type == "code")
    assert found[0] < first_code, f"{path.name}: Prerequisites must come before the setup cell"
    text = " ".join(cells[found[0]].source.split())  # line breaks as spaces
    entry = next(e for e in course.COURSE_MAP if e["notebook"] == path.stem)
    times = {e["notebook"][:2]: e["tiny_seconds"] for e in course.COURSE_MAP}
    assert f"about {entry['tiny_seconds']} s" in text, f"{path.name}: its own tiny time"
    for needed in entry["needs_runs"]:
        assert f"notebook {needed}" in text, f"{path.name}: does not name notebook {needed}'s run"
        assert f"about {times[needed]} s" in text, f"{path.name}: no tiny time for {needed}"
    assert "not measured" in text, f"{path.name}: GPU times must say they are not measured"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_check_your_understanding_then_further_research_end_the_notebook(path):
    cells = _cells(path)
    found = [i for i, title in _headings(cells) if title == "Check your understanding"]
    assert found, f"{path.name}: no '## Check your understanding' heading"
    assert found[-1] == len(cells) - 2, f"{path.name}: it must come just before the last cell"
    last = cells[-1].source
    assert last.startswith("## Further research"), f"{path.name}: 'Further research' ends it"
    items = re.findall(r"^- ", last, re.MULTILINE)
    assert 2 <= len(items) <= 4, f"{path.name}: {len(items)} further-research items"
    assert LINK.search(last), f"{path.name}: further research points to a source"
    text = cells[found[-1]].source
    questions = re.findall(r"^\d+\. ", text, re.MULTILINE)
    answers = re.findall(r"<details><summary>Answer</summary>.+?</details>", text, re.DOTALL)
    assert 3 <= len(questions) <= 5, f"{path.name}: {len(questions)} questions"
    assert len(answers) == len(questions), f"{path.name}: every question needs its answer"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_exercise_has_a_learner_cell_and_a_check(path):
    cells = _cells(path)
    exercise = [i for i, title in _headings(cells) if title == "Exercise"]
    assert exercise, f"{path.name}: no '## Exercise' heading"
    later = cells[exercise[0] :]
    stubs = [m.group(1) for c in later if c.cell_type == "code" for m in STUB.finditer(c.source)]
    assert stubs, f"{path.name}: no learner cell (`my_answer = None  # your code`)"
    checks = "\n".join(c.source for c in later if c.cell_type == "code")
    for name in stubs:
        assert re.search(rf"yours_or_solution\(\s*{name}\b", checks), (
            f"{path.name}: {name} is never checked with exercises.yours_or_solution"
        )
        assert re.search(r"solutions\.(\w+)", checks)
    for used in re.findall(r"solutions\.(\w+)", checks):
        assert callable(getattr(solutions, used, None)), f"{path.name}: solutions.{used}"


def test_three_exercises_retrain_the_tiny_model():
    retraining = [
        p.stem[:2]
        for p in NOTEBOOKS
        if any("exercises.retrain(" in c.source for c in _cells(p) if c.cell_type == "code")
    ]
    assert len(retraining) >= 3, retraining


def test_yours_or_solution_tests_the_learner_value_first(capsys):
    assert exercises.yours_or_solution(7, solutions.mcnemar_p, 3, 1) == 7
    assert "your answer" in capsys.readouterr().out
    p = exercises.yours_or_solution(None, solutions.mcnemar_p, 3, 1)
    assert p == solutions.mcnemar_p(3, 1) and "solutions.mcnemar_p" in capsys.readouterr().out
    fn = exercises.yours_or_solution(None, solutions.advantages, call=False)
    assert fn is solutions.advantages
    with pytest.raises(ValueError):
        exercises.exercise_dir(get_profile("tiny"), "../escape")


def _prose(cells):
    """The markdown text with headings, code spans and math blanked (same offsets)."""
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    for pattern, flags in (
        (r"(?<=\])\(https?://[^)\s]+\)", 0),  # link targets (their text stays)
        (r"<!--.*?-->", re.DOTALL),  # comments: a reader never sees them
        (r"^#+ [^\n]*$", re.MULTILINE),
        (r"`[^`]*`", 0),
        (r"\$\$.*?\$\$", re.DOTALL),
        (r"\$[^$\n]*\$", 0),
    ):
        text = re.sub(pattern, lambda m: " " * len(m.group()), text, flags=flags)
    return text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_first_mention_of_each_source_is_linked(path):
    text = _prose(_cells(path))  # same offsets as the raw markdown
    raw = "\n".join(c.source for c in _cells(path) if c.cell_type == "markdown")
    links = [(m.start(1), m.end(1), m.group(0)) for m in LINK.finditer(raw)]
    missing = []
    for name, url in SOURCES.items():
        first = mention(name).search(text)
        if first is None:
            continue
        around = [link for a, b, link in links if a <= first.start() and first.end() <= b]
        if not any(url in link for link in around):
            missing.append(f"{name} ({text[max(0, first.start() - 30) : first.end()]!r})")
    assert not missing, f"{path.name}: first mention not linked to its source: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_no_uncited_field_notes(path):
    for c in _cells(path):
        assert "field notes" not in c.source.lower(), f"{path.name}: cite the source instead"


def test_a_check_cell_tests_the_learners_answer(tmp_path, monkeypatch):
    """Notebook 01 with a learner's wrong answer in its learner cell: the check says so."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("MEDREASON_RUNS", str(tmp_path))
    path = next(p for p in NOTEBOOKS if p.stem.startswith("01"))
    nb = nbformat.read(str(path), as_version=4)
    learner = next(
        c for c in nb.cells if c.cell_type == "code" and "my_completion = None" in c.source
    )
    learner.source = 'my_completion = [{"role": "assistant", "content": "The answer is yes."}]'
    client = NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(path.parent)}})
    with pytest.raises(CellExecutionError) as err:
        client.execute()
    assert "the maximum is 3.5" in str(err.value)
    check = next(c for c in nb.cells if "yours_or_solution(my_completion" in c.source)
    said = "".join(o.get("text", "") for o in check.outputs)
    assert "checking your answer" in said and "course's solution" not in said
