"""A profile read from a file: your own settings on top of a built-in profile.

A profile file is TOML (``.toml``) or JSON (``.json``). It names the built-in profile it
starts from and the settings it changes; every other setting is the base profile's::

    # my_smol.toml
    base = "smol"                      # a built-in profile: tiny, smol, 3b, 8b, 20b, ...
    name = "smol-lr2e-5"               # runs go to runs/<name>/ (default: the file's stem)
    learning_rate = 2e-5
    num_generations = 8
    mix_weights = { pubmedqa = 1.0 }

Every command takes it where it takes a profile name (``--profile my_smol.toml``, or
``MEDREASON_PROFILE=my_smol.toml`` for the notebooks and ``make course``). A run records its
profile's settings in ``run.json``, so ``eval --run-dir`` evaluates it under the same settings.

This module only reads and checks: ``read_profile_file`` returns the base's name and the
changes, each checked against the base's value of the same setting (an unknown setting or a
value of the wrong type is a one-line error that names the file and the setting);
``profiles.get_profile`` applies them.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from medreason_lib.settings.errors import UserError

SUFFIXES = (".toml", ".json")
_NAME = re.compile(r"\w[\w.+=@-]{0,59}", re.ASCII)


def is_profile_file(spec: str) -> bool:
    """Whether a ``--profile`` value names a file rather than a built-in profile."""
    return str(spec).lower().endswith(SUFFIXES)


def read_profile_file(path: str | Path, bases: dict[str, dict]) -> tuple[str, str, dict]:
    """``(base, name, changes)`` from a profile file; ``bases`` maps each built-in profile's
    name to its settings (``Profile.to_dict()``), which the changes are checked against."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"profile file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"profile file {path} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"profile file {path}: expected a table of settings, got {data!r:.60}")
    base = data.pop("base", None)
    if base not in bases:
        raise UserError(
            f"profile file {path}: 'base' must name a built-in profile ({', '.join(bases)}), "
            f"got {base!r}"
        )
    name = data.pop("name", path.stem)
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in bases:
        raise UserError(
            f"profile file {path}: name {name!r} must be a plain name (letters, digits, _.+=@-) "
            f"and not a built-in profile's ({', '.join(bases)}): its runs go to runs/<name>/"
        )
    return base, name, check_settings(data, bases[base], f"profile file {path}")


def check_settings(changes: dict, base: dict, where: str) -> dict:
    """``changes`` checked against ``base`` (a profile's settings), lists made tuples where
    the base holds a tuple; a ``UserError`` naming ``where`` and the setting otherwise."""
    checked = {}
    for key, value in changes.items():
        if key not in base:
            raise UserError(
                f"{where}: unknown setting {key!r}; valid settings: {', '.join(sorted(base))}"
            )
        checked[key] = _same_kind(value, base[key], f"{where}: setting {key!r}")
    return checked


def _same_kind(value, like, where: str):
    """``value`` as the type of ``like`` (the base's value), or a ``UserError``."""
    if like is None or value is None:
        return value  # optional settings (epsilon_high, ...): the dataclass default is None
    if isinstance(like, bool) or isinstance(value, bool):
        if isinstance(like, bool) and isinstance(value, bool):
            return value
    elif isinstance(like, float) and isinstance(value, int | float):
        return float(value)
    elif isinstance(like, tuple) and isinstance(value, list | tuple):
        return tuple(value)
    elif isinstance(like, dict) and isinstance(value, dict):  # lists in it as tuples, as built in
        return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    elif isinstance(value, type(like)):
        return value
    raise UserError(f"{where} should be a {type(like).__name__} like {like!r}, got {value!r}")
