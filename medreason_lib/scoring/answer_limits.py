"""The limits that keep reading an answer total and bounded (``answers`` uses them).

A policy writes anything, and the answer extractor is both its reward and its score, so
reading must finish, never raise, and count what it could not read:

- the caps: ``MAX_ANSWER_CHARS`` (an answer block), ``MAX_NUMBER_DIGITS`` (a number's order
  of magnitude), ``MAX_LATEX_CHARS`` / ``MAX_LATEX_NESTING`` / ``MAX_LATEX_NODES`` (what
  math-verify is handed, and what it may hand back: ``unbounded`` refuses a power in an
  exponent or a factorial, whose value may take minutes to compute);
- ``time_limit``: a SIGALRM timer around a reading (``SCORING_SECONDS``), main thread only
  (``timed``);
- the count: ``pathological(reason)`` counts an unreadable answer by reason (with one
  ``PathologicalAnswerWarning`` a reason); ``pathological_counts()`` reports them.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
import time
import warnings
from collections import Counter

SCORING_SECONDS = 3.0  # per answer block (and per gold answer); math-verify takes ms
MAX_ANSWER_CHARS = 10_000  # an answer block, once the completion's tags are taken off
MAX_NUMBER_DIGITS = 100  # a number's order of magnitude, up or down
MAX_LATEX_CHARS = 2_000  # what is handed to math-verify ...
MAX_LATEX_NESTING = 30  # ... its deepest {[( nesting ...
MAX_LATEX_NODES = 200  # ... and the size of the expression it gives back


@functools.cache
def math_verify_parse():
    """math-verify's ``parse``, imported once and outside any time limit (an import cut
    short would leave its modules half made)."""
    import math_verify.parser

    # we run it under our own time limit, so its note that its own is off does not apply
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    return math_verify.parser.parse


def nesting(text: str) -> int:
    """The deepest nesting of brackets and braces in ``text``."""
    depth = deepest = 0
    for ch in text:
        if ch in "{[(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "}])":
            depth = max(0, depth - 1)
    return deepest


_GROWING = {"factorial", "factorial2", "subfactorial", "binomial", "gamma", "RisingFactorial"}


def unbounded(expr) -> bool:
    """True for an expression whose value may take unbounded time to compute: too many
    nodes, or a power or factorial inside an exponent or a factorial (``9^{9^{9^9}}``,
    ``(10^{100})!``). A square root or a reciprocal (exponent within [-1, 1]) is no power."""
    import sympy

    if not isinstance(expr, sympy.Basic):
        return False

    def grows(node) -> bool:
        if node.is_Pow:
            return not (node.exp.is_Number and abs(node.exp) <= 1)
        return type(node).__name__ in _GROWING

    nodes = list(_take(sympy.preorder_traversal(expr), MAX_LATEX_NODES + 1))
    if len(nodes) > MAX_LATEX_NODES:
        return True
    for node in nodes:
        inner = [node.exp] if node.is_Pow else node.args if grows(node) else []
        if any(grows(sub) for arg in inner for sub in sympy.preorder_traversal(arg)):
            return True
    return False


def _take(iterable, n: int):
    for i, item in enumerate(iterable):
        if i >= n:
            return
        yield item


class ScoringTimeout(BaseException):
    """A reading past ``SCORING_SECONDS``. A BaseException, so that the ``except Exception``
    of the libraries it interrupts (math-verify, sympy) cannot swallow it."""


class Unparseable(Exception):
    """Raised while reading an answer that is pathological (``reason``, a key of _REASONS):
    the whole answer is unparseable, not read again from the numbers its text holds."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class PathologicalAnswerWarning(UserWarning):
    """An answer was read as unparseable because it was pathological (shown once a reason)."""


_PATHOLOGICAL: Counter = Counter()
_REASONS = {
    "too_long": f"an answer block over {MAX_ANSWER_CHARS:,} characters",
    "number_out_of_range": f"a number beyond 10**{MAX_NUMBER_DIGITS} (or 10**-{MAX_NUMBER_DIGITS})",
    "latex_refused": "LaTeX too long, too deeply nested or with no bounded cost (a power tower)",
    "timeout": "an answer that took longer than answers.SCORING_SECONDS to read",
    "error": "an answer whose reading raised",
    "latex_off_main_thread": "LaTeX read off the main thread (no time limit there)",
}


def pathological(reason: str) -> None:
    """Count a pathological answer under ``reason`` (warning once a reason); None: no answer."""
    _PATHOLOGICAL[reason] += 1
    warnings.warn(
        f"answers: {_REASONS[reason]} counts as unparseable (no answer); "
        "answers.pathological_counts() counts them by reason",
        PathologicalAnswerWarning,
        stacklevel=2,
    )
    return None


def pathological_counts() -> dict[str, int]:
    """How many answers were read as unparseable because they were pathological, by reason
    (see the module docstring), since the process started or ``reset_pathological_counts``."""
    return dict(_PATHOLOGICAL)


def reset_pathological_counts() -> None:
    _PATHOLOGICAL.clear()


def timed() -> bool:
    """True where ``time_limit`` can limit: the main thread, on a system with setitimer."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_limit(seconds: float | None, error=ScoringTimeout):
    """Raise ``error()`` in the block when it runs past ``seconds`` (None or <= 0: no limit).

    A SIGALRM timer (``signal.setitimer``): it interrupts Python code, in this library or in
    the ones it calls, between two bytecodes, but not a single C call that never returns
    (the length caps of the readers bound those). It nests: an outer limit that falls due
    first still fires, as its own error, and gets its timer back on exit. Only the main
    thread receives signals: elsewhere the block runs without a limit (check ``timed()``).
    Yields whether a limit is in force.
    """
    if not seconds or seconds <= 0 or not timed():
        yield False
        return
    outer_handler = signal.getsignal(signal.SIGALRM)
    outer_left = signal.getitimer(signal.ITIMER_REAL)[0]
    began = time.monotonic()
    outer_first = 0 < outer_left < seconds and callable(outer_handler)
    state = {"active": True, "outer_fired": False}

    def fire(signum, frame):
        if not state["active"]:
            return
        if outer_first and not state["outer_fired"]:
            state["outer_fired"] = True
            outer_handler(signum, frame)  # the outer limit falls due first: its error ...
            left = seconds - (time.monotonic() - began)  # ... or, if it raised none, ours
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3))
            return
        raise error()

    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, outer_left if outer_first else seconds)
    try:
        yield True
    finally:
        state["active"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_left and not state["outer_fired"]:
            left = outer_left - (time.monotonic() - began)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3))  # due already: at once
