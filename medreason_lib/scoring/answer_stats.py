"""What the answers of one group of evaluated items look like, beyond accuracy.

- ``recall_per_label``: for each gold label, the share of its items the model answered with
  it. A model that says "yes" to everything has recall 100% on yes and 0% on no and maybe;
  its accuracy alone (the share of "yes" among the gold labels) hides that.
- ``confusion_text`` / ``recall_text``: the confusion matrix (gold x answered, with the
  ``unparsed`` column for completions without a readable answer) and the recalls, as text.
- ``collapse_note``: a sentence when the answer given most often
  (``stats.dominant_answer_share``) covers more than ``stats.COLLAPSE_SHARE`` (90%) of the
  items: the policy has collapsed onto one answer, and every comparison of its accuracy
  needs that said beside it.

``reports.TaskStats`` carries the numbers; these functions read any object with its
``confusion``, ``recall``, ``failed``, ``n``, ``dominant_answer`` and ``dominant_share``.
"""

from __future__ import annotations

from medreason_lib.scoring.stats import COLLAPSE_SHARE


def recall_per_label(confusion: dict[str, dict[str, int]]) -> dict[str, float | None]:
    """Gold label -> the share of its items answered with it (None: no such gold item)."""
    return {
        gold: (row[gold] / sum(row.values()) if sum(row.values()) else None)
        for gold, row in confusion.items()
    }


def confusion_text(stats, task: str = "") -> str:
    """The confusion matrix (rows: gold, columns: answered) and each gold label's recall."""
    if stats.confusion is None:
        raise ValueError(f"{task or 'this task'} answers with numbers: it has no confusion matrix")
    cols = [c for c in next(iter(stats.confusion.values())) if c != "failed" or stats.failed]
    lines = [
        f"{task} confusion (rows: gold; columns: answered; unparsed = no readable answer)",
        f"  {'gold':<8}" + "".join(f"{c:>9}" for c in cols) + f"{'recall':>9}",
    ]
    for gold, row in stats.confusion.items():
        recall = stats.recall.get(gold) if stats.recall else None
        shown = "-" if recall is None else f"{100 * recall:.1f}%"
        lines.append(f"  {gold:<8}" + "".join(f"{row[c]:>9}" for c in cols) + f"{shown:>9}")
    return "\n".join(lines)


def recall_text(stats) -> str:
    """``yes 100.0% (9/9), no 0.0% (0/5), maybe - (0/0)``: each gold label's recall."""
    parts = []
    for gold, row in (stats.confusion or {}).items():
        total, rate = sum(row.values()), (stats.recall or {}).get(gold)
        parts.append(
            f"{gold} {'-' if rate is None else f'{100 * rate:.1f}%'} ({row[gold]}/{total})"
        )
    return ", ".join(parts)


def collapse_note(stats, task: str, who: str = "the model") -> str | None:
    """A sentence when one answer covers more than ``COLLAPSE_SHARE`` of the items."""
    if stats.dominant_share <= COLLAPSE_SHARE:
        return None
    return (
        f"{who} answers {stats.dominant_answer!r} to {100 * stats.dominant_share:.1f}% of the "
        f"{stats.n} {task} items (over {100 * COLLAPSE_SHARE:.0f}%): one answer for (nearly) "
        "everything"
    )
