"""PubMedQA's own conclusions as reasoning traces: warm-start rows in the real prompt format.

Every expert-labelled PubMedQA item has, beside its yes/no/maybe label, the abstract's
conclusion (``LONG_ANSWER`` in ``ori_pqal.json``, ``long_answer`` on the hub): the sentence
the authors wrote to answer the question. ``pubmedqa_conclusions`` turns training items into
trace records (``traces.load_traces``'s columns) that ``traces.sft_rows`` writes in the
template:

- the user turn is the item exactly as GRPO and the evaluation prompt it
  (``data.user_prompt``: the abstract, the question, "Answer with yes, no or maybe.");
- the reasoning is the conclusion, the answer the label.

Why a warm start wants them: the bundled reasoning traces ask short questions with no
abstract, so a real model learns the template from them but keeps its own answer habit on a
real PubMedQA prompt. SmolLM2-135M-Instruct's habit is "yes": after the traces alone it said
"yes" to 17 of 20 real test items (the reference set holds 12 yes, 5 no, 3 maybe).
``per_label`` items of each label put the three answers side by side in equal numbers.

Only the training split is read (``load_task(..., "train")``: never an official test PMID),
and the rows are chosen, not sampled: the first ``per_label`` of each label in PMID order.
A label with fewer items than ``per_label`` repeats its items, and says so. A chosen item
without a conclusion is a ``DataError`` naming the file and the PMID.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset

from medreason_lib.data import load_task, user_prompt
from medreason_lib.data.raw_formats import PUBMEDQA_LABELS, DataError, find_raw_files
from medreason_lib.data.traces import TASK
from medreason_lib.settings import paths
from medreason_lib.settings.progress import say_once

SOURCE = "pubmedqa-conclusions"  # the ``source`` column of these rows
HUB = ("qiaojin/PubMedQA", "pqa_labeled")


def _conclusions(source: str | Path) -> tuple[dict[str, str], str]:
    """PMID -> conclusion text, and where it was read."""
    if source == "hub":
        import datasets

        rows = datasets.load_dataset(*HUB, split="train")
        return {str(r["pubid"]): r.get("long_answer") for r in rows}, f"hub {HUB[0]} ({HUB[1]})"
    folder = paths.data_dir() if source == "bundled" else Path(source).expanduser()
    file = find_raw_files("pubmedqa", "train", folder)[0]
    items = json.loads(file.read_text(encoding="utf-8"))
    return {str(k): v.get("LONG_ANSWER") for k, v in items.items()}, str(file)


def pubmedqa_conclusions(source: str | Path = "bundled", per_label: int = 5) -> Dataset:
    """``per_label`` PubMedQA training items of each label as trace records (see the module
    docstring). ``source``: ``"bundled"``, ``"hub"`` or a folder/file of raw PubMedQA."""
    if per_label < 1:
        raise ValueError(f"per_label must be at least 1, got {per_label}")
    items = load_task("pubmedqa", "train", source=source, verbose=False)
    conclusions, where = _conclusions(source)
    records = []
    for label in sorted(PUBMEDQA_LABELS):  # maybe, no, yes
        rows = sorted((r for r in items if r["answer"] == label), key=lambda r: r["id"])
        if not rows:
            raise DataError(f"{where}: no PubMedQA training item is labelled {label!r}")
        if len(rows) < per_label:
            say_once(f"PubMedQA conclusions: {len(rows)} training items say {label!r}; each is "
                     f"used more than once to make {per_label}")  # fmt: skip
        for i in range(per_label):
            row = rows[i % len(rows)]
            text = conclusions.get(row["id"])
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}: PMID {row['id']}: no conclusion (LONG_ANSWER)")
            records.append({
                "id": f"{SOURCE}-{row['id']}-{i}", "task": TASK, "source": SOURCE,
                "question": user_prompt(row), "context": "", "reasoning": text.strip(),
                "answer": label, "answer_source": "stated",
            })  # fmt: skip
    return Dataset.from_list(records)
