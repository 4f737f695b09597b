"""Every notebook copy that ``make course`` executed (``runs/<profile>/notebooks/``) is clean:
no noise (``notebook_noise``) and no number in its text that its outputs do not show
(``notebook_numbers``). On a fresh clone there are no copies and this file has no cases; run
``make course`` (or ``python -m medreason_lib.course --only 04``), then this test.
"""

from __future__ import annotations

import pytest

from medreason_lib.course import executed_copies
from medreason_lib.course.notebook_noise import find_noise
from medreason_lib.course.notebook_numbers import unproduced

CHECKS = {
    "noise": (find_noise, "shows noise"),
    "numbers": (
        unproduced,
        "quotes numbers its outputs do not show. Print the sentence from the run's values, "
        "name what to look for instead, or mark a published/dated figure with "
        "<!-- numbers: its source -->",
    ),
}


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize(
    "path", executed_copies(), ids=lambda p: f"{p.parent.parent.name}/{p.stem}"
)
def test_make_course_copies_are_clean(path, check):
    find, what = CHECKS[check]
    found = find(path)
    assert not found, (
        f"{path} (written by `make course`; run it again after a fix) {what}:\n"
        + "\n".join(str(f)[:200] for f in found)
    )
