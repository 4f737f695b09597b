"""The one exception type for a user's mistake: ``UserError``.

Bad input (an unknown profile, a run folder that is a file, a model folder whose weights are
cut off, a data file over the size limit, ...) raises a ``UserError`` (or a subclass: the
modules' own ``AskError``, ``DataError``, ``ExportUnavailable``, ...) whose message says what
is wrong and what to do. The command line turns every one into one line on stderr and exit
status 2, never a traceback (``cli.main``); a notebook shows the message. Anything else that
escapes is a bug of the course and keeps its traceback.

A subclass that also derives from a built-in type (``class AskError(UserError, ValueError)``)
keeps the ``except ValueError`` of older code working.
"""

from __future__ import annotations

import json
from pathlib import Path


class UserError(Exception):
    """A mistake in what the user gave (an option, a setting, a file, a folder).

    The message names the thing at fault and the fix. ``multiline = True`` on a subclass lets
    the command line print the whole message (a data file's problems, one a line)."""

    multiline = False


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (its type's name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def json_object(path: Path, fix: str, error: type[UserError] = UserError, where: str = "") -> dict:
    """The JSON object in the file ``path``. ``error`` (message: ``where``, the file, what is
    wrong, then ``fix``) when it is not UTF-8, not valid JSON (cut off by a crash while it was
    written or copied?), nested too deep, or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise error(f"{where}{path} is not UTF-8 text: {fix}") from None
    except (ValueError, RecursionError) as exc:
        detail = getattr(exc, "msg", "nested too deep")
        raise error(f"{where}{path} is not valid JSON ({detail}; cut off?): {fix}") from None
    if not isinstance(value, dict):
        raise error(f"{where}{path} holds a JSON {type(value).__name__}, not an object: {fix}")
    return value
