"""The records file of an evaluation (``runs/<profile>/eval/<name>.jsonl``), read back whole.

``eval_loop.evaluate`` appends one JSON line per item after every batch, so an interrupted
evaluation resumes where it stopped. A kill can land in the middle of a write and leave the
last line cut off: ``read_records`` ignores it, and ``drop_cut_off_line`` removes it before
more records are appended, so it is never glued to the next one. A damaged line anywhere else
means the file was edited or broken otherwise (``RecordsDamaged``, a ``UserError``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError


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
