"""Where the course keeps things: the repository, its bundled data, run outputs and caches.

Every location can be moved with an environment variable, so a Colab learner can point
runs at Google Drive (``MEDREASON_RUNS=/content/drive/MyDrive/medreason-runs``) and a CI
machine can keep its cache out of the home directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medreason_lib.settings.errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # medreason_lib/


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
    explicit = os.environ.get("MEDREASON_RUNS")
    base = Path(explicit).expanduser() if explicit else repo_root() / "runs"
    path = base / profile_name if profile_name else base
    return usable_dir(path, "$MEDREASON_RUNS" if explicit else "the runs folder")


def cache_dir() -> Path:
    """Where built artefacts (the tiny model and its tokenizer) are cached.

    ``MEDREASON_CACHE``, else ``$XDG_CACHE_HOME/medreason``, else ``~/.cache/medreason``.
    """
    explicit = os.environ.get("MEDREASON_CACHE")
    if explicit:
        path, what = Path(explicit).expanduser(), "$MEDREASON_CACHE"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path, what = Path(xdg) / "medreason", "the cache folder"
    return usable_dir(path, what)


_WRITABLE: set[Path] = set()  # folders found writable in this process (checked once)


def usable_dir(path: str | Path, what: str) -> Path:
    """``path`` as a folder this process can write in, created when missing. A ``UserError``
    naming ``what`` (``--run-dir``, ``$MEDREASON_RUNS``) when it, or a folder above it, is a
    file, or when it cannot be created or written in (tried with a scratch file, since
    permission bits say nothing to root or on a read-only disk)."""
    path = Path(path).expanduser()
    if path.is_dir() and path in _WRITABLE:
        return path
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            where = "" if part == path else f" ({part} is a file)"
            raise UserError(f"{what} {path} is not a folder{where}: choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        message = f"{what} {path} is not writable ({reason}): choose another folder"
        raise UserError(message) from None
    _WRITABLE.add(path)
    return path


def safe_name(name: str, what: str = "--name") -> str:
    """``name`` when it is a plain file name (letters, digits, ``_.+=@-``, not starting with a dot,
    no separator, at most 120 characters), so ``<folder>/<name>.json`` stays in the folder;
    a ``UserError`` naming ``what`` otherwise."""
    if not isinstance(name, str) or not re.fullmatch(r"\w[\w.+=@-]{0,119}", name, re.ASCII):
        raise UserError(
            f"{what} {name!r} is not a plain name (it names a file in the report folder): use "
            "letters, digits and _.+=@-, no folder separators, not starting with '.', at most "
            "120 characters"
        )
    return name


def reference_data_dir() -> Path | None:
    """The shared folder of real public test sets, when this machine has it.

    ``MEDREASON_REFERENCE_DATA``, else ``../shared/reference-data`` beside the checkout.
    Tests of the raw-file loaders use it; the course itself never needs it.
    """
    explicit = os.environ.get("MEDREASON_REFERENCE_DATA")
    path = Path(explicit) if explicit else repo_root().parent / "shared" / "reference-data"
    return path if path.is_dir() else None


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks that no hub be contacted ("1", "true", "yes", "on")."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@contextlib.contextmanager
def building(final: Path, marker: str) -> Iterator[Path]:
    """A temporary folder beside ``final`` to build a cache entry in (the tiny model, smol,
    a warm start); when the block ends without an error it is moved to ``final`` with
    ``os.replace``, so a reader never sees half a model. ``marker`` is the file a finished
    entry holds (written last): when another process moved its copy first, theirs is kept and
    this one discarded. The temporary folder is removed in every case."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield tmp
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / marker).is_file():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
