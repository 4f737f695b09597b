"""Your own reward functions next to the course's, checked before a run loads any model.

A reward is called the way TRL's ``GRPOTrainer`` calls the course's (``rewards``): the
completions first (the course wraps each reward, ``callbacks.RecordedReward``, and passes them
by position), then keywords: ``prompts``, ``completion_ids``, every dataset column but
``prompt`` (``answer``, ``task``, ``options``, ``question``, ...), ``trainer_state``,
``log_extra`` and ``log_metric``. It returns one float (or None) per completion. So write::

    def brevity_reward(completions, **kwargs) -> list[float]:
        return [0.1 if len(str(c)) < 400 else 0.0 for c in completions]

and pass it as ``training.train(profile, extra_rewards=[brevity_reward])``, or on the
command line as ``--reward my_module:brevity_reward`` or ``--reward path/to/file.py:name``.
TRL sums every reward into one scalar per completion, so an extra reward's scale matters:
the course's format rewards pay at most 0.5 each, a right answer 2.0.

``load_reward(spec)`` imports a reward from such a spec and checks its signature;
``check_rewards(fns, rows)`` checks each function's signature and calls it once on two
made-up completions of the first rows of the training data (one in the template with the
gold answer, one plain sentence), so a reward that raises, returns the wrong number of
values or a non-number fails in a second, naming the setting, not after the model loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import numbers
import sys
from pathlib import Path

from .data import FEATURES
from .rewards import REWARD_FUNCS
from .template import format_completion

__all__ = ["RewardError", "check_rewards", "load_reward"]

# what TRL passes besides the completions and the dataset's columns
TRL_KEYWORDS = ("prompts", "completion_ids", "trainer_state", "log_extra", "log_metric")
COURSE_COLUMNS = tuple(c for c in FEATURES if c != "prompt")  # every course dataset's columns
SIGNATURE = "def my_reward(completions, **kwargs) -> list[float]"


class RewardError(ValueError):
    """A reward function that cannot serve in a run; the message names the setting."""


def _import_file(path: Path, setting: str):
    if not path.is_file():
        raise RewardError(f"{setting}: no file {path}")
    name = f"medreason_user_reward_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickling and dataclasses look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise RewardError(f"{setting}: importing {path} failed: {type(e).__name__}: {e}") from e
    return module


def load_reward(spec: str, setting: str | None = None):
    """The function named by ``"package.module:function"`` or ``"path/to/file.py:function"``,
    with its signature checked against the course's columns (``check_signature``).
    ``setting`` names it in errors (default ``--reward <spec>``)."""
    setting = setting or f"--reward {spec}"
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise RewardError(
            f"{setting}: expected MODULE:FUNCTION (e.g. my_rewards:brevity_reward) or "
            "path/to/file.py:FUNCTION"
        )
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        module = _import_file(Path(module_name).expanduser(), setting)
    else:
        try:
            module = importlib.import_module(module_name)
        except Exception as e:
            raise RewardError(
                f"{setting}: cannot import module {module_name!r}: {type(e).__name__}: {e} "
                "(run from the folder that holds it, or give the path to the .py file)"
            ) from e
    if not hasattr(module, attr):
        found = sorted(
            n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")
        )
        raise RewardError(f"{setting}: {module_name} has no {attr!r}; its functions: {found}")
    fn = getattr(module, attr)
    check_signature(fn, setting, COURSE_COLUMNS)
    return fn


def check_signature(fn, setting: str, columns: tuple[str, ...] = ()) -> None:
    """Raise ``RewardError`` unless ``fn`` can be called as the trainer will call it:
    completions by position and ``TRL_KEYWORDS`` plus ``columns`` by keyword."""
    if not callable(fn):
        raise RewardError(f"{setting}: {fn!r} is not callable; expected {SIGNATURE}")
    name = getattr(fn, "__name__", None)
    if not name or name == "<lambda>":
        raise RewardError(
            f"{setting}: a reward needs a name (its metrics are logged as rewards/<name>); "
            f"write it with def: {SIGNATURE}"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise RewardError(f"{setting}: cannot read the signature of {name}: {e}") from e
    keywords = dict.fromkeys([*TRL_KEYWORDS, *columns])
    try:
        signature.bind([], **keywords)
    except TypeError as e:
        raise RewardError(
            f"{setting}: {name}{signature} cannot take what the trainer passes ({e}): the "
            f"completions first, then keywords {', '.join(keywords)}. Write {SIGNATURE}"
        ) from None


def _sample_call(fn, rows, setting: str) -> None:
    """Call ``fn`` as the trainer would, on two completions per row of ``rows``."""
    name = fn.__name__
    completions, columns = [], {}
    for row in rows:
        for text in (format_completion("A sample.", str(row["answer"])), "Not sure."):
            completions.append([{"role": "assistant", "content": text}])
            for key, value in row.items():
                if key != "prompt":
                    columns.setdefault(key, []).append(value)
    prompts = [row["prompt"] for row in rows for _ in range(2)]
    try:
        scores = fn(
            completions,
            prompts=prompts,
            completion_ids=[[] for _ in completions],
            trainer_state=None,
            log_extra=lambda *a, **k: None,
            log_metric=lambda *a, **k: None,
            **columns,
        )
    except Exception as e:
        raise RewardError(
            f"{setting}: {name} raised {type(e).__name__}: {e} on {len(completions)} sample "
            "completions of the training data (called as the trainer calls it)"
        ) from e
    try:
        scores = list(scores)
    except TypeError:
        raise RewardError(
            f"{setting}: {name} returned {type(scores).__name__}; expected a list of floats"
        ) from None
    if len(scores) != len(completions):
        raise RewardError(
            f"{setting}: {name} returned {len(scores)} values for {len(completions)} "
            "completions; it must return one per completion"
        )
    bad = [
        s
        for s in scores
        if s is not None
        and (isinstance(s, bool) or not isinstance(s, numbers.Real) or not math.isfinite(float(s)))
    ]
    if bad:
        raise RewardError(
            f"{setting}: {name} returned {bad[0]!r}; each value must be a finite number (or "
            "None: no reward for that completion)"
        )


def check_rewards(fns, rows=None, *, setting: str = "extra_rewards") -> list:
    """``fns`` as a list, each checked (see the module docstring) against the training rows
    ``rows`` (a Dataset or a list of dicts; None checks the signature only). Two rewards of
    one name, or a name of a course reward, are an error: their logged metrics would mix."""
    fns = list(fns or [])
    taken = {fn.__name__ for fn in REWARD_FUNCS}
    columns, sample = (), []
    if rows is not None and len(rows):
        sample = [rows[i] for i in range(min(2, len(rows)))]
        columns = tuple(k for k in sample[0] if k != "prompt")
    for i, fn in enumerate(fns):
        where = f"{setting}[{i}]"
        check_signature(fn, where, columns)
        if fn.__name__ in taken:
            raise RewardError(
                f"{where}: the name {fn.__name__!r} is taken (by a course reward or an earlier "
                "extra one); rename the function"
            )
        taken.add(fn.__name__)
        if sample:
            _sample_call(fn, sample, where)
    return fns
