"""A number the notebooks' text quotes is a number their run shows (issue 24, item 1).

The checker (``medreason_lib.course.notebook_numbers``) on hand-made notebooks; every notebook
copy that ``make course`` executed is checked by tests/course/test_executed_copies.py.
"""

from __future__ import annotations

import nbformat

from medreason_lib.course.notebook_numbers import is_shown, quoted_numbers, unproduced


def _notebook(markdown: str, *outputs: str, code: str = "pass"):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(markdown))
    cell = nbformat.v4.new_code_cell(code)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=t) for t in outputs]
    nb.cells.append(cell)
    return nb


def test_a_number_the_outputs_do_not_show_is_found():
    nb = _notebook(
        "The reward rose from 0.66 to 1.08 in 127 s; accuracy fell to 31.2%.",
        "reward 1.021 -> 0.884\n",
        "accuracy 0.3125, 127.4 s\n",
    )
    assert [u.number for u in unproduced(nb)] == ["0.66", "1.08"]


def test_what_is_not_a_quoted_result():
    text = (
        "Step 14 of 30 on 4 prompts, notebook 05; Qwen2.5-3B on torch 2.13.0 (arXiv 2506.09513), "
        "a 95% Wilson interval, `epsilon_high = 0.28`, $\\beta = 0.04$, "
        "[link](https://example.org/v1.5/0.9) and https://example.org/2.5"
    )
    assert quoted_numbers(text) == []


def test_a_marked_block_is_left_out_and_only_that_block():
    marked = "<!-- numbers: published, the DAPO paper -->\nDAPO reports 0.50 on AIME.\n"
    assert quoted_numbers(marked) == []
    assert [n for n, _ in quoted_numbers(marked + "\nOurs: 0.42.")] == ["0.42"]
    assert quoted_numbers("<!-- numbers: -->\n0.50") != []  # a marker must name its source


def test_rounding_and_percentages():
    assert is_shown("56.2%", {0.5625}) and is_shown("56.2%", {56.25})
    assert is_shown("0.66", {0.6612}) and not is_shown("0.66", {0.67})
    assert is_shown("3,194.6", {3194.63}) and is_shown("127 s", {127.4})
