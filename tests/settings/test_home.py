"""The course's home URL is written in one place (``medreason_lib.settings.home``), and every copy
that
cannot read it agrees: the README's Colab links, each notebook's setup cell, and the "not yet
published" notes where a learner would click. ``tools.set_home`` rewrites them all (issue 24)."""

from __future__ import annotations

import json
import shutil

from medreason_lib import course
from medreason_lib.settings import home, paths
from tools import set_home

ROOT = paths.repo_root()


def _setup_cell(path) -> str:
    cells = json.loads(path.read_text())["cells"]
    found = [
        c for c in cells if c["cell_type"] == "code" and home.CLONE_DIR in "".join(c["source"])
    ]
    assert len(found) == 1, f"{path.name}: one setup cell clones the course"
    return "".join(found[0]["source"])


def test_every_setup_cell_clones_the_home_and_says_whether_it_is_published():
    for path in course.notebooks():
        cell = _setup_cell(path)
        assert f"    {home.clone_line()}\n" in cell, path.name
        assert (home.CELL_NOTE in cell) == (not home.PUBLISHED), path.name


def test_the_readme_links_every_notebook_to_colab_at_the_home_and_notes_it_if_unpublished():
    readme = (ROOT / "README.md").read_text()
    for path in course.notebooks():
        assert f"]({home.colab_url(path.name)})" in readme, path.name
    assert (home.README_NOTE in readme) == (not home.PUBLISHED)
    if not home.PUBLISHED:
        note = readme.index(home.README_NOTE)
        assert readme.index("## Open in Colab") < note < readme.index("| 00 setup and tour |")
        assert "make lab" in readme[note : note + 600]


def test_set_home_rewrites_every_copy_and_back(tmp_path):
    for part in ("README.md", "docs", "notebooks", "medreason_lib/settings/home.py"):
        source, target = ROOT / part, tmp_path / part
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    new = "https://github.com/someone/medreason"
    set_home.rewrite(tmp_path, new, published=True)
    assert set_home.current(tmp_path) == (new, True)
    for path in before:
        if path.name == "home.py":
            continue  # the setting itself names the notes
        text = path.read_text()
        assert home.COURSE_HOME not in text and home.github_path() not in text, path
        assert home.README_NOTE not in text and home.CELL_NOTE not in text, path
    readme = (tmp_path / "README.md").read_text()
    assert home.colab_url("04_grpo_qwen_3b.ipynb", new) in readme
    assert home.clone_line(new) in _setup_cell(tmp_path / "notebooks" / course.notebooks()[4].name)
    set_home.rewrite(tmp_path, home.COURSE_HOME, published=home.PUBLISHED)
    assert {p: p.read_bytes() for p in before} == before, "the round trip changed a file"


def test_a_home_that_is_not_a_github_repository_is_refused():
    import pytest

    for bad in ("https://gitlab.com/a/b", "https://github.com/only-owner", "github.com/a/b"):
        with pytest.raises(ValueError):
            home.github_path(bad)
