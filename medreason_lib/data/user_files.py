"""Reading a user's data file: every record with its line number, and every problem located.

``read_records(path)`` is the file half of ``user_data.load_user_data``: it checks that the
file is UTF-8 (a UTF-8 byte-order mark is dropped), reads a CSV/TSV file with a header line or
a JSON Lines file, and returns ``(line, {column: value})`` per record, the columns it will
ignore, and the problems of single rows (a wrong number of fields, a repeated header line,
a line that is not JSON). Problems with the file as a whole (not UTF-8, a missing or
repeated column, no header) raise ``UserDataError`` at once. Column names and JSON keys are
compared in lower case without surrounding spaces.

Lines are numbered as an editor shows them, from 1, blank lines included; a CSV record with
a line break inside a quoted field is named by its first line. A ``.csv`` file whose header
holds no comma but semicolons (or tabs) is read with that separator. A field holding a NUL
byte, or a JSON line nested too deep to read, is a problem of its line.

A file larger than ``max_data_mb()`` (10 MB, or ``$MEDREASON_MAX_DATA_MB``) is refused before
it is read: reading, decontaminating and tokenizing it would take minutes with nothing shown,
and a run of ``max_steps`` steps reads far fewer rows.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
from collections import Counter
from pathlib import Path

from medreason_lib.data.raw_formats import DataError

REQUIRED = ("question", "answer", "task_type")
LETTERS = ("A", "B", "C", "D")
OPTION_COLUMNS = {**{c.lower(): c for c in LETTERS}, **{f"option_{c.lower()}": c for c in LETTERS}}
KNOWN = {*REQUIRED, "context", "options", "id", "subject", *OPTION_COLUMNS}
FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
MAX_SHOWN = 20  # problems listed in a UserDataError's message (the count says how many more)
MAX_DATA_MB_VAR = "MEDREASON_MAX_DATA_MB"
DEFAULT_MAX_DATA_MB = 10.0
MAX_DEPTH = 8  # lists and objects in a JSON line (options are one level inside the row: 2)


class UserDataError(DataError):
    """Problems in a user's data file: ``problems`` holds ``(line, field, message)`` for each
    (line and field None where the whole file is at fault); the message lists them."""

    multiline = True  # the command line prints the whole message, one problem a line

    def __init__(self, path: Path, problems: list[tuple[int | None, str | None, str]]):
        self.path, self.problems = path, sorted(problems, key=lambda p: p[0] or 0)
        lines = [_where(path, line, field) + msg for line, field, msg in self.problems]
        shown = lines[:MAX_SHOWN]
        if len(lines) > MAX_SHOWN:
            shown.append(f"... and {len(lines) - MAX_SHOWN} more problems")
        where = len({p[0] for p in self.problems if p[0] is not None})
        head = f"{path}: {len(lines)} problem(s)" + (f" on {where} line(s)" if where else "")
        self.multiline = len(lines) > 1  # one problem: one line, the whole message
        if not self.multiline:
            super().__init__(f"{shown[0]} (nothing was loaded)")
            return
        super().__init__(f"{head}; nothing was loaded:\n  " + "\n  ".join(shown))


def _where(path: Path, line: int | None, field: str | None) -> str:
    return (
        f"{path}"
        + (f", line {line}" if line else "")
        + (f", field {field!r}" if field else "")
        + ": "
    )


def _decode(path: Path, raw: bytes) -> str:
    """The text of a UTF-8 file (a UTF-8 BOM is dropped); every line that is not UTF-8 is
    a problem naming its line and the byte offset of the first bad byte."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UserDataError(path, [(None, None, "the file is UTF-16; save it as UTF-8")])
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    problems, offset = [], 0
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            bad = line[e.start : e.start + 4]
            problems.append(
                (
                    number,
                    None,
                    f"not UTF-8 (byte offset {offset + e.start}, bytes {bad!r}); "
                    "save the file as UTF-8 (in a spreadsheet: 'CSV UTF-8')",
                )
            )
        offset += len(line) + 1
    if problems:
        raise UserDataError(path, problems)
    return raw.decode("utf-8")


def _header_index(names: list[str], path: Path, line: int, default_type) -> dict[str, int]:
    """Column name -> position; a duplicated or missing required column is a file problem."""
    index, problems = {}, []
    for i, name in enumerate(names):
        if name in index and name:
            problems.append(
                (line, name, f"column {i + 1} repeats the name of column {index[name] + 1}")
            )
        index.setdefault(name, i)
    need = [c for c in REQUIRED if c not in index and not (c == "task_type" and default_type)]
    for column in need:
        close = difflib.get_close_matches(column, [n for n in names if n], n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        has = [n for n in names if n]
        problems.append((line, column, f"the header has no such column{hint}; it has {has}"))
    if problems:
        raise UserDataError(path, problems)
    return index


def _csv_records(path: Path, text: str, default_type) -> tuple[list, list[str], list]:
    """(line, {column: text}) per CSV record, the ignored columns, and the row problems."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    first = text.lstrip("\r\n").split("\n", 1)[0]
    if delimiter == "," and "question" in first.lower() and "," not in first:
        delimiter = ";" if ";" in first else "\t" if "\t" in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records, problems, header, index, start = [], [], None, {}, 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not any(f.strip() for f in fields):
                continue  # a blank line, or a spreadsheet's empty row: no row at all
            names = [f.strip().lower() for f in fields]
            if header is None:
                header, index = names, _header_index(names, path, line, default_type)
                width = max(i for n, i in index.items() if n) + 1  # trailing unnamed: optional
                continue
            if names == header:
                problems.append(
                    (line, None, "repeats the header line (two files pasted together?)")
                )
                continue
            extra = [f for f in fields[len(header) :] if f.strip()]
            if len(fields) < width or extra:
                problems.append(
                    (
                        line,
                        None,
                        f"{len(fields)} fields, but the header has {len(header)} (a field "
                        "holding a comma or a line break must be in double quotes)",
                    )
                )
                continue
            records.append((line, {n: fields[i] for n, i in index.items() if n}))
    except csv.Error as e:
        problems.append((reader.line_num, None, f"not readable as CSV: {e}"))
    if header is None:
        raise UserDataError(path, [(None, None, "the file has no header line and no rows")])
    return (
        records,
        [n or f"column {i + 1} (no name)" for i, n in enumerate(header) if n not in KNOWN],
        problems,
    )


class _RepeatedKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _jsonl_records(path: Path, text: str, default_type) -> tuple[list, list[str], list]:
    """(line, {key: value}) per JSON line, the ignored keys, and the row problems."""
    records, problems, ignored = [], [], {}
    if text.lstrip().startswith("["):
        problem = "a JSON array; write one JSON object per line (JSON Lines) instead"
        raise UserDataError(path, [(None, None, problem)])

    def no_repeats(pairs):
        keys = Counter(k.strip().lower() for k, _ in pairs)
        repeated = [k for k, n in keys.items() if n > 1]
        if repeated:
            raise _RepeatedKey(repeated[0])
        return {k.strip().lower(): v for k, v in pairs}

    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw, object_pairs_hook=no_repeats)
        except json.JSONDecodeError as e:
            problems.append((line, None, f"not valid JSON: {e.msg} (column {e.colno})"))
            continue
        except RecursionError:
            problems.append((line, None, f"nested too deep to read (over {MAX_DEPTH} levels)"))
            continue
        except _RepeatedKey as e:
            problems.append((line, e.key, "the key appears more than once in this object"))
            continue
        if not isinstance(obj, dict):
            kind = type(obj).__name__
            problems.append(
                (line, None, f'expected a JSON object ({{"question": ...}}), got a {kind}')
            )
            continue
        if _depth(obj) > MAX_DEPTH:  # a field is text, or a list or object of texts (options)
            problems.append((line, None, f"nested more than {MAX_DEPTH} levels deep"))
            continue
        ignored.update(dict.fromkeys(k for k in obj if k not in KNOWN))
        records.append((line, obj))
    return records, list(ignored), problems


def read_records(
    path: Path, file_format: str | None = None, default_type: str | None = None
) -> tuple[list[tuple[int, dict]], list[str], list]:
    """``(records, ignored columns, row problems)`` of a data file (see the module docstring).

    ``file_format``: ``"csv"`` or ``"jsonl"``; default from the extension (``FORMATS``).
    ``default_type``: a task type for every row, so a ``task_type`` column is not required.
    """
    kind = file_format or FORMATS.get(path.suffix.lower())
    if kind not in ("csv", "jsonl"):
        problem = f"unknown format {path.suffix!r}; use .csv, .tsv, .jsonl (or file_format=)"
        raise UserDataError(path, [(None, None, problem)])
    limit, size = max_data_mb(), path.stat().st_size / 2**20
    if size > limit:
        problem = (
            f"the file is {size:.1f} MB, over the limit of {limit:g} MB (${MAX_DATA_MB_VAR}): "
            "loading, decontaminating and tokenizing it would take minutes; use fewer rows, or "
            f"set {MAX_DATA_MB_VAR}={int(size) + 1} to load it anyway"
        )
        raise UserDataError(path, [(None, None, problem)])
    text = _decode(path, path.read_bytes())
    read = _csv_records if kind == "csv" else _jsonl_records
    records, ignored, problems = read(path, text, default_type)
    nul = [(line, key) for line, row in records for key, value in row.items() if _has_nul(value)]
    problems += [(line, key, "holds a NUL byte (\\x00); remove it") for line, key in nul]
    bad_lines = {line for line, _ in nul}
    return [r for r in records if r[0] not in bad_lines], ignored, problems


def max_data_mb() -> float:
    """The largest data file ``read_records`` reads, in MB: ``$MEDREASON_MAX_DATA_MB`` or 10."""
    raw = os.environ.get(MAX_DATA_MB_VAR, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_MAX_DATA_MB
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise UserDataError(
            Path(f"${MAX_DATA_MB_VAR}"),
            [(None, None, f"must be a number of MB above 0, got {raw!r}")],
        )
    return value


def _has_nul(value) -> bool:
    """Whether a field (text, or JSON lists and objects of text) holds a NUL character."""
    stack = [value]
    while stack:  # not recursive: a JSON value may be nested hundreds of levels deep
        item = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
    return False


def _depth(value) -> int:
    """How deeply a JSON value nests lists and objects (0: a number or a text)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack += [(v, level + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, level + 1) for v in item]
    return deepest
