"""The records file of an evaluation (``runs/<profile>/eval/<name>.jsonl``), read back whole,
and what every report built from one shares (``RecordsReport``: stats from the records, the
report saved as ``<name>.json`` beside them and loaded back from both).

``loop.evaluate`` appends one JSON line per item after every batch, so an interrupted
evaluation resumes where it stopped. A kill can land in the middle of a write and leave the
last line cut off: ``read_records`` ignores it, and ``drop_cut_off_line`` removes it before
more records are appended, so it is never glued to the next one. A damaged line anywhere else
means the file was edited or broken otherwise (``RecordsDamaged``, a ``UserError``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from medreason_lib.settings.errors import UserError


class RecordsDamaged(UserError, ValueError):
    """A records file with a damaged line before its last (not a kill mid-write)."""


def drop_cut_off_line(path: Path) -> None:
    """Make the records file ``path`` end with a whole line before more are appended: a last
    line without its newline (a kill mid-write) is dropped when it is not a whole record (else
    it gets its newline), so the next record never gets glued to it."""
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        try:
            json.loads(data[start:])
        except ValueError:
            f.truncate(start)
            print(f"{path}: dropped a cut-off last line ({len(data) - start} bytes)")
            return
        f.write(b"\n")


def read_records(path: Path) -> dict[str, dict]:
    """The records of a JSONL file by id (a later line for an id replaces an earlier one).

    A last line cut short by an interruption is ignored; a damaged line elsewhere raises.
    """
    lines = path.read_text().splitlines() if path.exists() else []
    done = {}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                print(f"{path}: ignoring a cut-off last line")
                continue
            raise RecordsDamaged(
                f"{path}, line {i + 1}: not valid JSON (the file was edited or damaged): "
                "evaluate again without resuming (resume=False) or under another --name"
            ) from None
        if not isinstance(record, dict) or "id" not in record:
            raise RecordsDamaged(f"{path}, line {i + 1}: not an evaluation record")
        done[record["id"]] = record
    return done


def digest(obj) -> str:
    """A short, stable hash of a JSON-serialisable object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def report_dict(report, records: bool = False) -> dict:
    """A report (a dataclass with a ``records`` field) as a dict; the records, one per item,
    only when asked."""
    d = asdict(report)
    if not records:
        d.pop("records")
    return d


@dataclass
class RecordsReport:
    """What every evaluation report shares (``reports.EvalReport``,
    ``sampled_report.SampledReport``): its stats per task and overall come from its records
    (the subclass's ``_group_stats``), and it is saved as JSON beside the records' JSONL and
    read back from both (its settings through ``_settings_class.from_dict``)."""

    _kept = ("name", "backend", "seconds", "model")  # what ``load`` reads back from the JSON

    name: str | None
    settings: Any  # reports.EvalSettings
    backend: str
    overall: Any  # the subclass's stats of all items (TaskStats, SampledStats)
    by_task: dict  # task -> the same stats of its items
    items_digest: str  # the evaluated ids (sorted)
    prompts_digest: str  # every item's exact chat prompt
    records: list[dict] = field(repr=False)
    seconds: float | None = None
    records_path: str | None = None
    model: str | None = None  # which model was evaluated, when the caller said

    @classmethod
    def from_records(cls, records: list[dict], settings, **meta) -> Self:
        tasks = sorted({r["task"] for r in records})
        by_task = {t: cls._group_stats([r for r in records if r["task"] == t], t) for t in tasks}
        return cls(
            settings=settings,
            overall=cls._group_stats(records),
            by_task=by_task,
            items_digest=digest(sorted(r["id"] for r in records)),
            prompts_digest=digest(sorted((r["id"], r["prompt_hash"]) for r in records)),
            records=records,
            **meta,
        )

    @property
    def n(self) -> int:
        return self.overall.n

    @property
    def failed(self) -> int:
        return self.overall.failed

    def to_dict(self, records: bool = False) -> dict:
        return report_dict(self, records)

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON: the stats, settings and the item ids in order; the
        records themselves live in the JSONL file of the same name."""
        path = Path(path)
        meta = self.to_dict() | {"ids": [r["id"] for r in self.records]}
        tmp = path.with_name(f".{path.name}.tmp")  # a crash leaves the old report or the new
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a saved report back, its stats recomputed from its records file."""
        meta = json.loads(Path(path).read_text())
        jsonl = Path(path).with_suffix(".jsonl")
        done = read_records(jsonl)
        missing = [i for i in meta["ids"] if i not in done]
        if missing:
            raise ValueError(f"{jsonl} lacks {len(missing)} of the report's items")
        return cls.from_records(
            [done[i] for i in meta["ids"]],
            cls._settings_class.from_dict(meta["settings"]),
            records_path=str(jsonl),
            **{key: meta.get(key) for key in cls._kept},
        )
