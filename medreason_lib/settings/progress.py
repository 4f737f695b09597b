"""Progress bars that stay true in a saved notebook, and quiet third-party output.

A tqdm *widget* (``tqdm.auto`` in Jupyter with ipywidgets) keeps, in the saved notebook, only
the text it had when it was first drawn: an executed copy shows every bar frozen at 0%. The
course's own bars therefore draw as text into one notebook output that is updated in place
(an IPython display handle): live in Jupyter and Colab, and in its final state once saved. In
a terminal they are ordinary tqdm bars on stderr; where stderr is not a terminal (a log file, a
subprocess whose output a notebook shows) they write one line, their final state.

- ``progress_bar(total, desc, ...)``: the course's bar (training steps, evaluation items):
  ``NotebookTextBar``, tqdm's own, or ``FinalLineBar``.
- ``quiet_libraries()``: what ``course.start`` calls first. It turns off the per-call bars of
  ``datasets`` (shuffling, flattening) and ``transformers`` (loading weights), without
  importing either (Unsloth must be imported before transformers), and drops one
  log message that says nothing about the course's models: transformers' "The tokenizer has
  new PAD/BOS/EOS tokens ..." when the only change is a BOS token set to None (Qwen's and the
  tiny models' tokenizers have no BOS token; the model config names one that is never used).
  Any other alignment of PAD/BOS/EOS is still reported.
"""

from __future__ import annotations

import io
import logging
import re
import sys

from tqdm import tqdm as _text_tqdm

ALIGN_MESSAGE = "The tokenizer has new PAD/BOS/EOS tokens"


def in_notebook() -> bool:
    """True inside a Jupyter or Colab kernel (a shell that talks to a front end)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class NotebookTextBar(_text_tqdm):
    """A tqdm bar drawn as text into one notebook output, updated in place.

    The saved notebook keeps its last state (e.g. ``100%|##########| 30/30``), never a
    frozen 0%. Nothing is written to stderr.
    """

    def __init__(self, *args, **kwargs):
        self._handle = None
        kwargs.setdefault("file", io.StringIO())
        kwargs.setdefault("ncols", 100)
        kwargs.setdefault("ascii", False)
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        from IPython.display import display

        text = self.__str__() if msg is None else msg
        if not text:  # tqdm clears a bar it does not leave with an empty message
            return True
        data = {"text/plain": text}
        if self._handle is None:
            self._handle = display(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)
        return True


class FinalLineBar(_text_tqdm):
    """For output that is not a terminal (a log file, a notebook echoing a subprocess): nothing
    redrawn in place, which would be left behind as a frozen bar, and one line with the final
    state when the bar closes."""

    def display(self, msg=None, pos=None):
        if self.disable and msg is None:  # close() draws the last state once
            self.fp.write(self.__str__())
        return True


def progress_bar(
    total: int | None,
    desc: str,
    *,
    unit: str = "it",
    initial: int = 0,
    disable: bool = False,
):
    """The course's progress bar: in-place text in a notebook, tqdm's bar in a terminal, and
    one final line anywhere else (stderr redirected or captured)."""
    if in_notebook():
        cls = NotebookTextBar
    elif getattr(sys.stderr, "isatty", lambda: False)():
        cls = _text_tqdm
    else:
        cls = FinalLineBar
    return cls(total=total, desc=desc, unit=unit, initial=initial, disable=disable)


class _DropHarmlessAlignment(logging.Filter):
    """Drops transformers' PAD/BOS/EOS alignment warning when it only unsets BOS."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if ALIGN_MESSAGE not in message:
            return True
        updated = re.search(r"Updated tokens: (\{.*\})", message)
        return not (updated and updated.group(1) == "{'bos_token_id': None}")


_FILTER = _DropHarmlessAlignment()


def quiet_libraries() -> None:
    """Turn off third-party progress bars and the harmless BOS-alignment warning (idempotent).

    Imports neither transformers nor datasets: ``course.start`` calls it before
    ``models.prepare_runtime`` imports Unsloth, which must come before transformers (and trl,
    peft). A library imported already is quietened directly; one imported later reads the
    setting at its import: transformers takes its bar switch from huggingface_hub's (which
    ``transformers.utils.logging.disable_progress_bar`` turns off too), datasets from
    ``HF_DATASETS_DISABLE_PROGRESS_BARS`` (set here unless the environment sets it)."""
    import os

    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    else:
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    logger = logging.getLogger("transformers.trainer_utils")  # transformers uses this logger
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


_SAID: set[str] = set()


def say_once(text: str, *, again: str | None = None) -> None:
    """Print ``text`` the first time this process says it; after that print ``again`` (a
    short line, e.g. "the same mix as above") or nothing. A notebook that trains five times
    shows its data report once, not five times (``notebook_noise``'s ``repeated-block``)."""
    if text in _SAID:
        if again:
            print(again)
        return
    _SAID.add(text)
    print(text)
