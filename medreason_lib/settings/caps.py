"""Environment settings that shrink any profile, for rehearsals, workshops and quick checks.

- ``MEDREASON_MAX_STEPS``: the most training steps (every trainer's ``max_steps``, the SFT
  warm start's too; ``capped`` applies it to counts that are not profile fields, such as
  continued pretraining's steps or DPO's);
- ``MEDREASON_MAX_ITEMS``: the most items per training mix and per benchmark;
- ``MEDREASON_MAX_NEW_TOKENS``: the most tokens a completion may have (training and
  evaluation);
- ``MEDREASON_DATA_SOURCE``: where the data comes from ("bundled", "hub" or a folder of raw
  files).

``make rehearse`` sets them all. A value that is not a whole number of at least 1 is a
``ValueError`` naming the variable. Standard library only, like ``profiles``.
"""

from __future__ import annotations

import os

CAPS = {
    "MEDREASON_MAX_STEPS": ("max_steps", "sft_warmup_steps"),
    "MEDREASON_MAX_ITEMS": ("train_size", "eval_size"),
    "MEDREASON_MAX_NEW_TOKENS": ("max_completion_length",),
}
DATA_SOURCE_VAR = "MEDREASON_DATA_SOURCE"


def _cap_value(var: str) -> int | None:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"${var} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


def capped(value: int, var: str = "MEDREASON_MAX_STEPS") -> int:
    """``value``, or the cap that ``$var`` sets when it is lower: for step and item counts
    that are not profile fields (continued pretraining's steps, DPO's, a held-out set)."""
    cap = _cap_value(var)
    return value if cap is None else min(value, cap)


def apply_caps(profile):
    """``profile`` with the environment's caps applied (``CAPS``, ``DATA_SOURCE_VAR``); the
    same profile when none is set. Prints what changed, once per profile and setting."""
    changes: dict = {}
    for var, fields in CAPS.items():
        cap = _cap_value(var)
        if cap is not None:
            for name in fields:
                value = getattr(profile, name)
                if value > cap:
                    changes[name] = cap
    source = os.environ.get(DATA_SOURCE_VAR, "").strip()
    if source and source != profile.data_source:
        changes["data_source"] = source
        if source != "hub":  # pools that only the hub has (PubMedQA's pqa_artificial)
            changes["train_splits"] = {}
    if not changes:
        return profile
    shown = ", ".join(f"{k}={v}" for k, v in changes.items() if k != "train_splits")
    if (profile.name, shown) not in _CAPS_SHOWN:
        _CAPS_SHOWN.add((profile.name, shown))
        print(f"profile {profile.name!r} capped by the environment: {shown}")
    return profile.replace(**changes)


_CAPS_SHOWN: set = set()
