"""``make test``'s two processes: a notebook runs after, and in the same process as, every
notebook whose runs it reads (``COURSE_MAP``'s ``needs_runs``), and a module's tests stay
together (conftest.py at the repository root)."""

from __future__ import annotations

import importlib.util

from medreason_lib import course
from medreason_lib.settings import paths

spec = importlib.util.spec_from_file_location("root_conftest", paths.repo_root() / "conftest.py")
root_conftest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(root_conftest)


def nodeid(notebook: str) -> str:
    return f"notebooks/{notebook}.ipynb::{notebook}.ipynb"


def test_every_notebook_runs_after_the_notebooks_it_reads_in_one_process():
    by_number = {entry["notebook"][:2]: entry["notebook"] for entry in course.COURSE_MAP}
    for entry in course.COURSE_MAP:
        scope = root_conftest.scope_of(nodeid(entry["notebook"]))
        assert scope.startswith("notebooks-"), entry["notebook"]
        for needed in entry["needs_runs"]:
            assert root_conftest.scope_of(nodeid(by_number[needed])) == scope, (entry, needed)
            assert by_number[needed] < entry["notebook"]  # the chain runs in name order
        if entry["notebook"][:2] in root_conftest.INDEPENDENT:
            assert not entry["needs_runs"], entry


def test_unit_tests_are_scheduled_a_module_at_a_time():
    assert root_conftest.scope_of("tests/test_x.py::test_a[1]") == "tests/test_x.py"
    assert root_conftest.scope_of("tests/test_x.py::Cls::test_b") == "tests/test_x.py"
    assert root_conftest.scope_of("tests/test_x.py::test_c") == "tests/test_x.py"
