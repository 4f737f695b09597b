"""The course scaffolding: profiles, the run report, and a README that matches the data."""

import json

import pytest

from medreason_lib import course
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import PROFILES, get_profile, profile_for_gpu

README = (paths.repo_root() / "README.md").read_text()


def test_readme_tables_match_the_data():
    assert course.profiles_markdown() in README
    assert course.course_map_markdown() in README


def test_every_notebook_is_on_the_course_map_and_vice_versa():
    on_disk = {p.stem for p in course.notebooks()}
    assert on_disk == {e["notebook"] for e in course.COURSE_MAP}


def test_get_profile_reads_the_environment_and_rejects_unknown_names(monkeypatch):
    monkeypatch.setenv("MEDREASON_PROFILE", "3b")
    assert get_profile().name == "3b"
    assert get_profile("tiny").name == "tiny"
    monkeypatch.setenv("MEDREASON_PROFILE", "huge")
    with pytest.raises(ValueError, match="valid profiles: tiny, tiny-qwen3, tiny-gptoss, smol, 3b"):
        get_profile()


def test_scale_gives_the_tiny_stand_in_on_cpu(monkeypatch):
    monkeypatch.setenv("MEDREASON_PROFILE", "tiny")
    assert get_profile(scale="8b").name == "tiny-qwen3"
    assert get_profile(scale="20b").name == "tiny-gptoss"
    monkeypatch.delenv("MEDREASON_PROFILE")
    monkeypatch.setattr("medreason_lib.settings.profiles.gpu_memory_gb", lambda: None)
    assert get_profile(scale="20b").name == "tiny-gptoss"
    monkeypatch.setattr("medreason_lib.settings.profiles.gpu_memory_gb", lambda: 80.0)
    assert get_profile(scale="20b").name == "20b"
    assert get_profile().name == "8b"


def test_profile_for_gpu():
    assert profile_for_gpu(None) == "tiny"
    assert profile_for_gpu(15.0) == "3b"
    assert profile_for_gpu(80.0) == "8b"


def test_profiles_are_consistent():
    for p in PROFILES.values():
        assert (
            p.per_device_train_batch_size * p.gradient_accumulation_steps % p.num_generations == 0
        )
        assert p.max_prompt_length + p.max_completion_length <= p.max_seq_length, p.name
        assert sum(p.mix_weights.values()) == pytest.approx(1.0)
        assert p.is_tiny == p.model_id.startswith("tiny:")


def test_tiny_profile_never_reaches_a_hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    get_profile("tiny")
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_record_and_report(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDREASON_RUNS", str(tmp_path))
    monkeypatch.setenv(course.NOTEBOOK_ENV, "99_demo")
    course.record("accuracy", 0.5, PROFILES["tiny"])
    course.record("steps", 3, PROFILES["tiny"])
    results = json.loads((tmp_path / "tiny" / "results.json").read_text())
    assert results == {"99_demo": {"accuracy": 0.5, "steps": 3}}
    course._write_report(
        tmp_path / "tiny",
        PROFILES["tiny"],
        [{"notebook": "99_demo", "seconds": 1.5, "error": None}],
        results,
    )
    report = (tmp_path / "tiny" / "course_report.md").read_text()
    assert "| 99_demo | ok | 1.5 | accuracy=0.5, steps=3 |" in report


def test_every_notebook_has_an_open_in_colab_link_in_the_readme():
    readme = (paths.repo_root() / "README.md").read_text()
    from medreason_lib.settings.home import colab_url  # the course's home, in one place

    for notebook in course.notebooks():
        assert f"{colab_url(notebook.name)})" in readme, (
            f"README has no Colab link for {notebook.name}"
        )


def test_the_readme_says_where_notebook_04_resumes():
    """Notebook 04 resumes in its own kernel (``training.train(longer, resume=True)``), not in
    a separate process: the README's memory section must say so."""
    import re

    notebook = json.loads((course.NOTEBOOK_DIR / "04_grpo_qwen_3b.ipynb").read_text())
    code = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    assert "training.train(longer, resume=True" in code
    said = re.search(r"Notebook 04 resumes (.*?)\.(?: |$)", " ".join(README.split()))
    assert said and "separate process" not in said.group(1), said and said.group(0)
    assert "training.train(longer, resume=True)" in said.group(1)
