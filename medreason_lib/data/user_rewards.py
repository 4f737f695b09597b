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

The pre-flight call proves little about the thousandth, so ``check_rewards`` hands back each
reward wrapped in a ``GuardedReward``, which holds every later call to the same contract
and names the function and the training step in what it says:

- a call that runs past a time limit (``DEFAULT_REWARD_TIMEOUT``, 60 s, or
  ``MEDREASON_REWARD_TIMEOUT`` seconds, 0 for none; ``GuardedReward(timeout=...)``) is a
  ``RewardError``, never a hang (in the main thread a SIGALRM timer interrupts it; elsewhere
  the call runs in a helper thread that is abandoned, still running, when time is up);
- the wrong number of values, a value that is no number (a string, a bool), inf, or a
  value too large for float32 (the type the trainer sums rewards in) is a ``RewardError``;
- NaN means no reward for that completion: it becomes None (TRL leaves None out of the
  sum), with a ``RewardWarning`` that counts them (``GuardedReward.nan_scores``);
- a generator, a numpy array or a tensor is read into a list (within the time limit);
- ``sys.exit`` in a call, or in the module on import, is a ``RewardError`` that says so;
- an exception from the reward goes on to ``callbacks.RecordedReward``, which scores the
  batch again one completion at a time: the ones that raise alone get no reward (None), with
  a warning, and a reward that raises on every completion of a batch ends the run.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import math
import numbers
import os
import sys
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

from medreason_lib.data import FEATURES
from medreason_lib.scoring.answers import time_limit
from medreason_lib.scoring.rewards import REWARD_FUNCS
from medreason_lib.scoring.template import format_completion

__all__ = [
    "DEFAULT_REWARD_TIMEOUT",
    "GuardedReward",
    "RewardError",
    "RewardWarning",
    "check_rewards",
    "load_reward",
    "reward_timeout",
]

# what TRL passes besides the completions and the dataset's columns
TRL_KEYWORDS = ("prompts", "completion_ids", "trainer_state", "log_extra", "log_metric")
COURSE_COLUMNS = tuple(c for c in FEATURES if c != "prompt")  # every course dataset's columns
SIGNATURE = "def my_reward(completions, **kwargs) -> list[float]"
DEFAULT_REWARD_TIMEOUT = 60.0  # seconds one call of a reward may take
TIMEOUT_ENV = "MEDREASON_REWARD_TIMEOUT"  # overrides it (0: no limit)
FLOAT32_MAX = 3.4028234663852886e38  # the trainer sums rewards in float32


class RewardError(ValueError):
    """A reward function that cannot serve in a run; the message names the setting."""


class RewardWarning(UserWarning):
    """A reward's value that the run replaced by "no reward" (NaN), or a completion it failed
    to score (``callbacks.RecordedReward``)."""


class _RewardTimeout(BaseException):
    """A reward call past its time limit (a BaseException: the reward's own ``except
    Exception`` cannot swallow it)."""


def _exit_message(e: SystemExit) -> str:
    return f"called sys.exit({e.code!r})"


def _import_file(path: Path, setting: str):
    if not path.is_file():
        raise RewardError(f"{setting}: no file {path}")
    name = f"medreason_user_reward_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickling and dataclasses look the module up by name
    try:
        spec.loader.exec_module(module)
    except SystemExit as e:
        del sys.modules[name]
        raise RewardError(
            f"{setting}: importing {path} {_exit_message(e)}; a module of rewards must not "
            "exit when imported (put its script part under if __name__ == '__main__':)"
        ) from None
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
        except SystemExit as e:
            raise RewardError(
                f"{setting}: importing module {module_name!r} {_exit_message(e)}; a module of "
                "rewards must not exit when imported (put its script part under "
                "if __name__ == '__main__':)"
            ) from None
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
    """Call ``fn`` as the trainer would, on two completions per row of ``rows``, through
    its ``GuardedReward`` (so with its time limit), NaN an error here."""
    guard = fn if isinstance(fn, GuardedReward) else GuardedReward(fn, setting=setting)
    completions, columns = [], {}
    for row in rows:
        for text in (format_completion("A sample.", str(row["answer"])), "Not sure."):
            completions.append([{"role": "assistant", "content": text}])
            for key, value in row.items():
                if key != "prompt":
                    columns.setdefault(key, []).append(value)
    prompts = [row["prompt"] for row in rows for _ in range(2)]
    where = f"on {len(completions)} sample completions of the training data"
    try:
        trl_keywords = {
            "prompts": prompts,
            "completion_ids": [[] for _ in completions],
            "trainer_state": None,
            "log_extra": lambda *a, **k: None,
            "log_metric": lambda *a, **k: None,
        }
        guard.score(completions, {**trl_keywords, **columns}, where=where, nan_ok=False)
    except RewardError:
        raise
    except Exception as e:
        raise RewardError(
            f"{setting}: {guard.__name__} raised {type(e).__name__}: {e} {where} (called as "
            "the trainer calls it)"
        ) from e


def reward_timeout() -> float | None:
    """Seconds one call of a reward may take: ``MEDREASON_REWARD_TIMEOUT`` when set (0: no
    limit, None), else ``DEFAULT_REWARD_TIMEOUT``."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_REWARD_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds < 0:
        raise RewardError(f"{TIMEOUT_ENV}={raw!r}: expected seconds (a number, 0 for no limit)")
    return seconds or None


def describe_call(kwargs: dict, calls: int) -> str:
    """Where a reward call is: the training step it scores (from TRL's ``trainer_state``),
    else the call's number."""
    step = getattr(kwargs.get("trainer_state"), "global_step", None)
    return f"at training step {step + 1}" if isinstance(step, int) else f"at call {calls}"


_UNSET = object()


class GuardedReward:
    """A reward function held to its contract on every call (see the module docstring).

    ``timeout``: seconds one call may take (default ``reward_timeout()``: 60, or
    ``MEDREASON_REWARD_TIMEOUT``); None or 0: no limit. ``setting`` names it in errors.
    Returns a list of floats and Nones, one per completion.
    """

    def __init__(self, fn, *, timeout=_UNSET, setting: str = "extra_rewards"):
        functools.update_wrapper(self, fn, updated=())
        self.fn = fn
        self.timeout = reward_timeout() if timeout is _UNSET else (timeout or None)
        self.setting = setting
        self.calls = 0
        self.nan_scores = 0  # values that were NaN, scored None ("no reward")

    def __repr__(self) -> str:
        return f"GuardedReward({self.fn!r}, timeout={self.timeout})"

    def __call__(self, completions, **kwargs):
        return self.score(completions, kwargs)

    def score(self, completions, kwargs: dict, where: str | None = None, nan_ok: bool = True):
        """One call, checked; ``where`` describes it in errors (None: the training step);
        ``nan_ok=False`` makes NaN an error instead of no reward (the pre-flight check)."""
        self.calls += 1
        where = where or describe_call(kwargs, self.calls)

        def call():
            return self._checked(self.fn(completions, **kwargs), len(completions), where, nan_ok)

        try:
            with time_limit(self.timeout, _RewardTimeout) as limited:
                if limited or not self.timeout:
                    return call()
            return _in_thread(call, self.timeout)  # off the main thread: no signals there
        except _RewardTimeout:
            raise RewardError(
                f"{self.setting}: {self.__name__} did not return within {self.timeout:g} s "
                f"{where}; the limit per call is {TIMEOUT_ENV} (seconds, 0 for no limit)"
            ) from None
        except SystemExit as e:
            raise RewardError(
                f"{self.setting}: {self.__name__} {_exit_message(e)} {where}"
            ) from None

    def _checked(self, result, n: int, where: str, nan_ok: bool) -> list[float | None]:
        """``result`` as a list of ``n`` floats or Nones, or a ``RewardError``."""
        say = f"{self.setting}: {self.__name__} returned"
        if hasattr(result, "tolist") and not isinstance(result, (str, bytes)):
            result = result.tolist()  # a numpy array or a tensor
        if isinstance(result, (str, bytes, dict)) or not isinstance(result, Iterable):
            raise RewardError(
                f"{say} {type(result).__name__}; expected a list of floats, one per "
                f"completion ({where})"
            )
        scores = list(result)  # a generator too, here within the time limit
        if len(scores) != n:
            raise RewardError(
                f"{say} {len(scores)} values for {n} completions; it must return one per "
                f"completion ({where})"
            )
        checked = [_number_or_none(s) for s in scores]
        for s, value in zip(scores, checked, strict=True):
            if value is _BAD or (value is not None and math.isnan(value) and not nan_ok):
                raise RewardError(
                    f"{say} {s!r}; each value must be a finite number (or None: no reward "
                    f"for that completion) ({where})"
                )
            if value is not None and abs(value) > FLOAT32_MAX:
                raise RewardError(
                    f"{say} {s!r}; each value must be finite and within float32 "
                    f"(+-{FLOAT32_MAX:.4g}), the type the trainer sums rewards in ({where})"
                )
        nans = sum(1 for v in checked if v is not None and math.isnan(v))
        if nans:
            self.nan_scores += nans
            warnings.warn(
                f"{self.setting}: {self.__name__} returned NaN for {nans} of {n} completions "
                f"{where}: no reward for them (None); {self.nan_scores} NaN so far",
                RewardWarning,
                stacklevel=4,
            )
        return [None if v is not None and math.isnan(v) else v for v in checked]


_BAD = object()  # a value that is no number


def _number_or_none(value):
    """A reward value as a float (inf for an int beyond float), None, or ``_BAD``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return _BAD
    try:
        return float(value)
    except OverflowError:  # an int beyond any float
        return math.inf


def _in_thread(call, seconds: float):
    """``call()`` in a helper thread, waited for ``seconds``: where no signal can interrupt
    (off the main thread). On time out the thread is abandoned, still running (a daemon)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as e:  # handed over to the caller, whatever it is
            outcome["error"] = e

    worker = threading.Thread(target=run, name="medreason-reward", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _RewardTimeout()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def check_rewards(fns, rows=None, *, setting: str = "extra_rewards") -> list:
    """``fns`` as a list of ``GuardedReward`` (one already guarded stays as it is), each
    checked (see the module docstring) against the training rows ``rows`` (a Dataset or a
    list of dicts; None checks the signature only). Two rewards of one name, or a name of a
    course reward, are an error: their logged metrics would mix."""
    fns = list(fns or [])
    timeout = reward_timeout()  # a bad MEDREASON_REWARD_TIMEOUT fails here, before any model
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
        if not isinstance(fn, GuardedReward):
            fns[i] = fn = GuardedReward(fn, timeout=timeout, setting=where)
        if sample:
            _sample_call(fn, sample, where)
    return fns
