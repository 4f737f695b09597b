"""docs/instructors.md's expected numbers are written from a ``make course`` report, with its
date, by ``medreason_lib.course.report`` (issue 24): never typed by hand."""

from __future__ import annotations

import re

import pytest

from medreason_lib.course import report as course_report
from medreason_lib.settings import paths

GUIDE = paths.repo_root() / "docs" / "instructors.md"
REPORT = paths.runs_dir("tiny") / "course_report.json"


def _guide_block() -> str:
    text = GUIDE.read_text()
    assert course_report.BEGIN in text and course_report.END in text
    inside = text.split(course_report.BEGIN, 1)[1].split(course_report.END)[0]
    return course_report.BEGIN + inside + course_report.END


def test_a_line_says_what_the_report_lacks_rather_than_keeping_an_old_value(tmp_path):
    report = {"profile": "tiny", "date": "2026-12-06 14:00 UTC", "results": {}}
    report["results"]["00_setup_and_tour"] = {"tiny_parameters": 689280, "tiny_build_seconds": 3.9}
    block = course_report.block(report)
    assert "| 00 | tiny model: 689,280 parameters, built in 3.9 s |" in block
    assert "| 04 | not in this report (no 'reward_first_window' recorded) |" in block
    assert "report of 2026-12-06 14:00 UTC" in block
    doc = tmp_path / "guide.md"
    doc.write_text(f"before\n{course_report.BEGIN}\nold\n{course_report.END}\nafter\n")
    assert course_report.rewrite(doc, report) and not course_report.rewrite(doc, report)
    assert doc.read_text() == f"before\n{block}\nafter\n"


def test_the_guide_quotes_a_whole_dated_report():
    block = _guide_block()
    assert re.search(r"report of \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", block), block[:300]
    assert "not in this report" not in block, "write it from a full `make course` run"
    for notebook in course_report.LINES:
        assert f"| {notebook[:2]} | " in block


def test_the_guide_matches_the_report_it_names_when_that_report_is_here():
    if not REPORT.exists():
        pytest.skip("no make course report on this machine (a fresh clone)")
    report = course_report.load(REPORT)
    if f"report of {report.get('date')} " not in _guide_block():
        pytest.skip("this machine's report is another run than the one the guide quotes")
    assert _guide_block() == course_report.block(report), "edited by hand? rewrite it"
