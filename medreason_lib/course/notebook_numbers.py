"""Numbers a notebook's text quotes must be numbers its run produced.

A sentence such as "the reward rose from 1.08 to 1.67" goes stale the day the code changes;
the executed notebook then says one thing in its prose and another in its outputs. So
``unproduced(notebook)`` reads an executed notebook (an ``nbformat`` node or a path) and
returns every number quoted in its markdown that none of its code cells shows, in an output
or in the code itself (a setting the code sets is the code's number).

What counts as a quoted number: a decimal (``0.66``, ``3,194.6``), a percentage (``56.2%``,
``25%``) or a duration (``127 s``, ``10 min``). Bare integers (notebook numbers, step counts,
"4 prompts") are not read. Left out as well: LaTeX (``$...$``), inline code, link targets,
URLs, version-like tokens (``Qwen2.5``, ``2.13.0``), arXiv identifiers and confidence levels
("95% Wilson interval").

A block of markdown (the lines between two blank lines: a paragraph, a table, a list) that
quotes numbers from elsewhere says where they come from with a marker that the check reads
and a rendered notebook hides::

    <!-- numbers: published, the DAPO paper's table 1 -->

Use it only for what the run cannot produce: a published result (with its link in the
text), a dated measurement of the course (``COURSE_MAP``), an estimate, an illustration. A
number of this run belongs in a cell that prints it.

A quoted number is found when a value shown by the code rounds to it at the precision it is
quoted with (``56.2%`` is found in ``0.5625``; ``0.66`` in ``0.6612``). That is lenient: a
stale number can hide behind another value that happens to round to it. It catches what
matters most, a number no output shows at all. tests/course/test_executed_copies.py runs it on
every notebook that ``make course`` executed.
"""

from __future__ import annotations

import re
from pathlib import Path

from medreason_lib.course.notebook_noise import Noise

SOURCE_MARKER = re.compile(r"<!--\s*numbers:\s*(?P<source>[^>]*?\S)\s*-->")
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
QUANTITY = re.compile(
    rf"(?<![\w.\-/^±{{])(?P<num>{_NUM})"
    r"(?P<unit>\s?%|\s(?:s|min|minutes|seconds|h|hours)\b)?"
    r"(?![\w]|\.\d|-\d|,\d)"
)
_HIDDEN = [
    re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S),  # LaTeX
    re.compile(r"`[^`\n]*`"),  # inline code
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"https?://\S+"),  # bare URLs
    re.compile(r"arXiv[: ]\s*\d{4}\.\d{4,5}", re.I),  # arXiv identifiers
    re.compile(r"<!--.*?-->", re.S),  # comments (the markers themselves)
    # a confidence level, a convention rather than a result: "95% Wilson interval"
    re.compile(r"\b(?:90|95|99)%(?=[\s*]*(?:Wilson|confidence|CI\b|interval|error bar))"),
]
_VALUE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


class Unproduced(Noise):
    """A number quoted in markdown cell ``cell`` (0-based) that no code cell shows: a finding
    of ``notebook_noise``'s shape whose kind is the number."""

    @property
    def number(self) -> str:
        return self.kind

    def __str__(self) -> str:
        return f"cell {self.cell}: {self.number!r} in ...{self.excerpt}..."


def _blocks(markdown: str) -> list[str]:
    return re.split(r"\n\s*\n", markdown)


def quoted_numbers(markdown: str) -> list[tuple[str, str]]:
    """``(number as written, excerpt)`` for each number the markdown quotes, outside the
    blocks that carry a source marker."""
    found = []
    for block in _blocks(markdown):
        if SOURCE_MARKER.search(block):
            continue
        text = block
        for pattern in _HIDDEN:
            text = pattern.sub(lambda m: " " * len(m.group(0)), text)
        for m in QUANTITY.finditer(text):
            number, unit = m.group("num"), (m.group("unit") or "").strip()
            if "." not in number and not unit:
                continue  # a bare integer: a count, a step, a notebook's number
            excerpt = " ".join(text[max(0, m.start() - 40) : m.end() + 25].split())
            found.append((number + ("%" if unit == "%" else f" {unit}" if unit else ""), excerpt))
    return found


def _text(value) -> str:
    return value if isinstance(value, str) else "".join(value)


def shown_values(notebook) -> set[float]:
    """Every number the code cells show: in their source and in their outputs."""
    parts = []
    for cell in notebook.cells:
        if cell.get("cell_type") != "code":
            continue
        parts.append(_text(cell.get("source", "")))
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(_text(output.get("text", "")))
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in output.get("data", {}):
                    parts.append(_text(output["data"][mime]))
    values = set()
    for token in _VALUE.findall("\n".join(parts)):
        try:
            values.add(abs(float(token.replace(",", ""))))
        except ValueError:
            continue
    return values


def is_shown(number: str, values: set[float]) -> bool:
    """True when a shown value rounds to ``number`` at its quoted precision (a percentage
    also as a fraction: 56.2% is 0.562)."""
    digits = number.split()[0].rstrip("%").replace(",", "")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    quoted = float(digits)
    wanted = {(round(quoted, decimals), decimals)}
    if number.endswith("%"):
        wanted.add((round(quoted / 100, decimals + 2), decimals + 2))
    return any(round(v, d) == q for v in values for q, d in wanted)


def unproduced(notebook) -> list[Unproduced]:
    """The numbers the markdown of an executed notebook quotes and its code never shows."""
    if isinstance(notebook, str | Path):
        import nbformat

        notebook = nbformat.read(str(notebook), as_version=4)
    values = shown_values(notebook)
    found = []
    for index, cell in enumerate(notebook.cells):
        if cell.get("cell_type") != "markdown":
            continue
        for number, excerpt in quoted_numbers(_text(cell.get("source", ""))):
            if not is_shown(number, values):
                found.append(Unproduced(index, number, excerpt))
    return found
