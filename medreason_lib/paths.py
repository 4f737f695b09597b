"""Where the course keeps things: the repository, its bundled data, run outputs and caches.

Every location can be moved with an environment variable, so a Colab learner can point
runs at Google Drive (``MEDREASON_RUNS=/content/drive/MyDrive/medreason-runs``) and a CI
machine can keep its cache out of the home directory.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path:
    """The course checkout (the folder holding ``pyproject.toml`` and ``data/``).

    Found from the package's location (an editable install or a plain checkout); when the
    package was installed elsewhere, the current directory is used.
    """
    candidate = PACKAGE_DIR.parent
    if (candidate / "pyproject.toml").exists() and (candidate / "data").is_dir():
        return candidate
    return Path.cwd()


def data_dir() -> Path:
    """The bundled samples (``data/`` in the checkout; ``MEDREASON_DATA`` overrides)."""
    return Path(os.environ.get("MEDREASON_DATA") or repo_root() / "data")


def runs_dir(profile_name: str | None = None) -> Path:
    """``runs/`` (or ``MEDREASON_RUNS``), or ``runs/<profile>/`` when a profile is named.

    The folder is created on first use.
    """
    base = Path(os.environ.get("MEDREASON_RUNS") or repo_root() / "runs")
    path = base / profile_name if profile_name else base
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Where built artefacts (the tiny model and its tokenizer) are cached.

    ``MEDREASON_CACHE``, else ``$XDG_CACHE_HOME/medreason``, else ``~/.cache/medreason``.
    """
    explicit = os.environ.get("MEDREASON_CACHE")
    if explicit:
        path = Path(explicit)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(xdg) / "medreason"
    path.mkdir(parents=True, exist_ok=True)
    return path


def reference_data_dir() -> Path | None:
    """The shared folder of real public test sets, when this machine has it.

    ``MEDREASON_REFERENCE_DATA``, else ``../shared/reference-data`` beside the checkout.
    Tests of the raw-file loaders use it; the course itself never needs it.
    """
    explicit = os.environ.get("MEDREASON_REFERENCE_DATA")
    path = Path(explicit) if explicit else repo_root().parent / "shared" / "reference-data"
    return path if path.is_dir() else None
