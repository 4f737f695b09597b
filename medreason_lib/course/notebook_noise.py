"""What an executed notebook must not show: output that is noise to a learner.

``find_noise(notebook)`` reads the outputs of an executed notebook (an ``nbformat`` node or a
path) and returns one ``Noise`` per finding, of these kinds:

- ``loss-dict``: a metrics dict printed by the Trainer (``{'loss': ...}``,
  ``{'train_runtime': ...}``);
- ``loss-table``: transformers' notebook "Training Loss" table;
- ``frozen-bar``: a progress bar whose saved state is short of its end: a tqdm widget keeps
  only the text it first drew (``0%``), and a text bar that never finished;
- ``token-alignment``: transformers' "new PAD/BOS/EOS tokens" warning;
- ``repeated-note``: the note on the official evaluation sets' sizes printed more than once;
- ``repeated-block``: the same block of ``BLOCK_LINES`` or more lines printed again (a library
  report, such as the training mix's, shown once per run is enough: ``progress.say_once``).
  Text a model wrote or a prompt holds is data, not a report: a collapsed model writes the
  same completion many times, and a notebook shows a prompt as messages and then rendered, on
  purpose. A paragraph (lines between blank lines) with the template's or a chat template's
  tags, the prompt's headings (``Question:``, ``Options:``, ...) or ``|``-quoted lines is
  left out.

Text bars are read as a front end shows them: of each line, what follows its last ``\\r``.
``make course`` counts the findings of every notebook it runs; tests/course/test_executed_copies.py
asserts there are none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

WIDGET = "application/vnd.jupyter.widget-view+json"
EVAL_SET_NOTE = "official evaluation set"

LOSS_DICT = re.compile(r"\{'(loss|train_runtime|train_loss|eval_loss)': ")
LOSS_TABLE = re.compile(r"Training Loss")
TOKEN_ALIGNMENT = re.compile(r"PAD/BOS/EOS")
BAR = re.compile(r"(\d{1,3})%\|[^|\n]*\|\s*(\d+)/(\d+)")
BLOCK_LINES = 5  # a repeated block: this many consecutive lines, printed again verbatim
# a line of printed JSON (a key and a value, a bracket): data, like model text, not a log line
# (run.json prints its label targets and the shares the mix reached, often the same block)
JSON_LINE = re.compile(
    r'^\s*(?:"[^"]*"\s*:\s*)?(?:[\[\]{}]|\{\}|\[\]|"(?:[^"\\]|\\.)*"|-?\d[\d.eE+-]*'
    r"|true|false|null)?[\[{]?,?\s*$"
)
MODEL_TEXT = re.compile(
    r"</?(?:reasoning|answer|think)>|<\|[a-z_]+\|>|^\s*\||^(?:Question|Context|Options):"
    r"|^Answer with"
)


@dataclass(frozen=True)
class Noise:
    """One finding: the cell (0-based index), its kind, and the offending text."""

    cell: int
    kind: str
    excerpt: str

    def __str__(self) -> str:
        return f"cell {self.cell}: {self.kind}: {self.excerpt}"


def as_shown(text: str) -> str:
    """The text as a notebook front end draws it: each line keeps what follows its last CR."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _texts(output) -> list[tuple[str, str]]:
    """``(kind, text)`` pairs of one output: ``stream``, ``widget``, ``plain`` or ``html``."""
    if output.get("output_type") == "stream":
        text = output.get("text", "")
        return [("stream", text if isinstance(text, str) else "".join(text))]
    data = output.get("data", {})
    found = []
    for mime, kind in (("text/plain", "plain"), ("text/html", "html")):
        if mime in data:
            value = data[mime]
            text = value if isinstance(value, str) else "".join(value)
            found.append(("widget" if WIDGET in data and kind == "plain" else kind, text))
    if output.get("output_type") == "error":
        found.append(("plain", "\n".join(output.get("traceback", []))))
    return found


def _unfinished_bars(text: str) -> list[str]:
    """Bar lines whose count is short of their total (or whose percentage is under 100)."""
    lines = []
    for line in as_shown(text).splitlines():
        for match in BAR.finditer(line):
            percent, done, total = (int(g) for g in match.groups())
            if done < total or percent < 100:
                lines.append(line.strip())
                break
    return lines


def find_noise(notebook) -> list[Noise]:
    """Every noise finding in an executed notebook (an nbformat node or a path)."""
    if isinstance(notebook, str | Path):
        import nbformat

        notebook = nbformat.read(str(notebook), as_version=4)
    found: list[Noise] = []
    notes = 0
    seen: dict = {}
    for index, cell in enumerate(notebook.cells):
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            for kind, text in _texts(output):
                shown = as_shown(text)
                for name, pattern in (
                    ("loss-dict", LOSS_DICT),
                    ("loss-table", LOSS_TABLE),
                    ("token-alignment", TOKEN_ALIGNMENT),
                ):
                    match = pattern.search(shown)
                    if match:
                        start = max(0, match.start() - 20)
                        found.append(Noise(index, name, shown[start : match.end() + 60].strip()))
                if kind in ("stream", "plain", "widget"):
                    found += [Noise(index, "frozen-bar", line) for line in _unfinished_bars(text)]
                if kind != "html":
                    for line in shown.splitlines():
                        if EVAL_SET_NOTE in line:
                            notes += 1
                            if notes > 1:
                                found.append(Noise(index, "repeated-note", line.strip()))
                if kind == "stream":
                    found += _repeated_blocks(index, shown, seen)
    return found


def _repeated_blocks(index: int, shown: str, seen: dict) -> list[Noise]:
    """Blocks of ``BLOCK_LINES`` printed lines that an earlier output of another cell (or of
    this one) printed already; ``seen`` maps each block to where it first appeared."""
    lines = [line.rstrip() for line in shown.splitlines()]
    data, paragraph = [False] * len(lines), []  # lines of paragraphs that hold model text
    for i, line in enumerate([*lines, ""]):
        if line.strip():
            paragraph.append(i)
            continue
        if any(MODEL_TEXT.search(lines[j]) for j in paragraph):
            for j in paragraph:
                data[j] = True
        paragraph = []
    json_lines = [bool(line.strip() and JSON_LINE.match(line)) for line in lines]
    data = [d or j for d, j in zip(data, json_lines, strict=True)]
    found, covered = [], -1
    for start in range(len(lines) - BLOCK_LINES + 1):
        block = tuple(lines[start : start + BLOCK_LINES])
        if not any(line.strip() for line in block) or any(data[start : start + BLOCK_LINES]):
            continue
        if block in seen and start > covered:
            found.append(Noise(index, "repeated-block", f"{block[0].strip()} ... (first in cell "
                                                        f"{seen[block]})"))  # fmt: skip
            covered = start + BLOCK_LINES - 1
        seen.setdefault(block, index)
    return found


def report(notebooks) -> dict[str, list[Noise]]:
    """``{notebook name: findings}`` for several executed notebooks (paths)."""
    return {Path(p).stem: find_noise(p) for p in notebooks}
