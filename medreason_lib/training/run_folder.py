"""Keeping a training run folder whole: checkpoints, the lock, the earlier run, atomic saves.

``training.train`` writes into one folder (``runs/<profile>/grpo``); these rules keep what it
holds from being lost or mixed:

- **Checkpoints are checked before a resume** (``valid_checkpoint``): a complete checkpoint
  has a readable ``trainer_state.json``, adapter weights that are whole, and a whole
  ``optimizer.pt``. A crash (kill -9, a full disk, a Colab disconnect) during a save leaves
  the highest-numbered checkpoint partial; ``resume_checkpoint`` moves it aside into
  ``incomplete-checkpoints/`` with a message and resumes from the complete one before it.
- **A plain (not resumed) run never deletes an earlier one**: ``set_aside_earlier_run`` moves
  its checkpoints, adapter, ``metrics.csv`` and ``run.json`` into ``<run>/previous-<time>/``,
  itself a run folder that ``eval --run-dir`` reads (with a copy of the SFT warm start its
  adapter was trained on, when that lives in the run folder). Delete it when done with it.
- **One training process per folder** (``RunLock``): ``train.lock`` names the holder (pid,
  host, start time); a second ``train`` into the folder is refused with that name. A lock left
  by a process that is gone (same host, dead pid; or not touched for 10 minutes, as after a
  Colab disconnect) is taken over with a message.
- **The final save is atomic**: the adapter is written to ``adapter.partial`` and renamed into
  place, ``run.json`` is written to a temporary file and renamed, and ``run.json`` is removed
  before the adapter is replaced, so a crash leaves either the old run or no ``run.json``
  (then ``train --resume`` finishes it from the last checkpoint), never a mix.
- **``run.json`` stays inside its folder**: ``read_run_info`` refuses an ``adapter_dir`` that
  points outside the run folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

from medreason_lib.models.folders import bin_problem, weights_folder_problem
from medreason_lib.settings.errors import UserError, json_object

LOCK_NAME = "train.lock"
EARLIER_RUN = ("adapter", "metrics.csv", "run.json")  # with every checkpoint-N


class RunFolderError(UserError):
    """A run folder that cannot be used as it is (busy, a damaged ``run.json``)."""


# --------------------------------------------------------------------------- small files


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` so that a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def read_run_info(run_dir: Path) -> dict:
    """``run.json`` of ``run_dir`` as a dict; ``FileNotFoundError`` when there is none,
    ``RunFolderError`` when it is not a JSON object (cut off) or its ``adapter_dir`` leaves the
    run folder."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no finished training run in {run_dir} (missing run.json): train one first with "
            "`python -m medreason_lib train` (or notebook 04), or point --run-dir at a run folder"
        )
    fix = "finish the run with `train --resume` (resume=True), or train it again"
    info = json_object(path, fix, RunFolderError)
    adapter = info.get("adapter_dir", "adapter")
    if not isinstance(adapter, str) or not inside(run_dir, adapter):
        raise RunFolderError(
            f"{path}: adapter_dir {adapter!r} points outside the run folder; a run keeps its "
            'adapter inside it (adapter_dir: "adapter")'
        )
    return info


def inside(run_dir: Path, relative: str) -> bool:
    """Whether ``run_dir / relative`` (symlinks resolved) lies within ``run_dir``."""
    root = Path(run_dir).resolve()
    return (root / relative).resolve().is_relative_to(root)


# --------------------------------------------------------------------------- checkpoints


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from, or None (module docstring)."""
    path = Path(path)
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        int(state["global_step"])
    except FileNotFoundError:
        return "trainer_state.json is missing"
    except (ValueError, KeyError, TypeError, RecursionError):
        return "trainer_state.json is damaged (cut off?)"
    problem = weights_folder_problem(path, ("adapter_model", "model"))
    if problem:
        return problem
    optimizer = path / "optimizer.pt"
    if not optimizer.is_file():
        return "optimizer.pt is missing"
    for file in (optimizer, *path.glob("scheduler.pt"), *path.glob("rng_state*.pth")):
        problem = bin_problem(file)
        if problem:
            return problem
    return None


def valid_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a complete checkpoint (``checkpoint_problem`` finds nothing)."""
    return Path(path).is_dir() and checkpoint_problem(path) is None


def checkpoint_step(path: Path) -> int:
    """The step a complete checkpoint was saved at (its ``trainer_state.json``)."""
    return int(json.loads((Path(path) / "trainer_state.json").read_text())["global_step"])


def checkpoints(run_dir: Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``run_dir``, highest step first."""
    named = Path(run_dir).glob("checkpoint-*")
    found = [p for p in named if re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted((p for p in found if p.is_dir()), key=lambda p: -int(p.name.split("-")[1]))


def resume_checkpoint(run_dir: Path, *, move: bool = True) -> Path | None:
    """The highest-numbered complete checkpoint of ``run_dir`` (None: there is none). Each
    incomplete one above it is named with its problem and, with ``move``, moved aside into
    ``incomplete-checkpoints/`` (replacing an older copy there), so the trainer's next save of
    that step starts from an empty folder."""
    for path in checkpoints(run_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        note = f"{path.name} is incomplete ({problem}; a crash during its save?): skipped"
        if move:
            target = Path(run_dir) / "incomplete-checkpoints" / path.name
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(exist_ok=True)
            path.rename(target)
            note += f", moved to {target}"
        print(note)
    return None


def adapter_from_checkpoint(checkpoint: Path, adapter_dir: Path) -> None:
    """The adapter files of ``checkpoint`` (no optimizer or trainer state) as ``adapter_dir``,
    replaced atomically (``replace_folder``)."""
    partial = adapter_dir.with_name(adapter_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    trainer_files = ("optimizer.pt", "scheduler.pt", "rng_state*", "trainer_state.json",
                     "training_args.bin", "scaler.pt")  # fmt: skip
    shutil.copytree(checkpoint, partial, ignore=shutil.ignore_patterns(*trainer_files))
    replace_folder(partial, adapter_dir)


def before_final_save(run_dir: Path) -> None:
    """Remove ``run.json`` (until the new one is written no run is shown, never a mix of the
    old record and a new adapter) and any ``adapter.partial`` an earlier crash left."""
    (Path(run_dir) / "run.json").unlink(missing_ok=True)
    shutil.rmtree(Path(run_dir) / "adapter.partial", ignore_errors=True)


def replace_folder(new: Path, target: Path) -> None:
    """Put the finished folder ``new`` at ``target``: the old one is renamed away first and
    removed after, so a crash leaves the old folder, the new one, or ``new`` beside none."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- an earlier run


def set_aside_earlier_run(run_dir: Path) -> Path | None:
    """Move an earlier run's checkpoints, adapter, ``metrics.csv`` and ``run.json`` out of
    ``run_dir`` into ``run_dir/previous-<time>`` before a fresh run starts (nothing is
    deleted). Returns that folder, or None when there was nothing to move."""
    run_dir = Path(run_dir)
    old = checkpoints(run_dir) + [run_dir / n for n in EARLIER_RUN if (run_dir / n).exists()]
    if not old:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir / f"previous-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = run_dir / f"previous-{stamp}-{n}"
    target.mkdir()
    for path in old:
        path.rename(target / path.name)
    _keep_base_model(run_dir, target)
    print(
        f"starting a fresh run in {run_dir}: the earlier run ({', '.join(p.name for p in old)}) "
        f"is kept in {target} (eval --run-dir {target} reads it; delete it when done). "
        "To continue the earlier run instead: --resume (resume=True)"
    )
    return target


def _keep_base_model(run_dir: Path, moved: Path) -> None:
    """When the moved run's base model is this folder's SFT warm start (which the new run may
    retrain), copy it along and point the moved ``run.json`` at the copy."""
    info_path = moved / "run.json"
    warm = run_dir / "sft-warmstart"
    try:
        info = json.loads(info_path.read_text())
        same = Path(info["base_model"]).resolve() == warm.resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return
    if same and warm.is_dir():
        shutil.copytree(warm, moved / warm.name)
        write_json_atomic(info_path, info | {"base_model": str(moved / warm.name)})


# --------------------------------------------------------------------------- the lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir/train.lock`` for this process (module
    docstring); ``RunFolderError`` when another live process holds it.

    While held, a thread touches the file every ``HEARTBEAT_S`` seconds. A lock is stale, and
    taken over with a message, when its holder ran on this host and is gone, or when it has not
    been touched for ``STALE_S`` seconds: a Colab VM that disconnected (another host, whose
    process cannot be asked) leaves its lock on Google Drive, and a resume on the new VM must
    not wait for a person to delete it."""

    HEARTBEAT_S = 30.0
    STALE_S = 600.0

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False
        self._stop = threading.Event()

    def holder(self) -> dict | None:
        try:
            info = json.loads(self.path.read_text())
            return info if isinstance(info, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged: a holder we cannot name

    def _create(self) -> bool:
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}  # fmt: skip
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True

    def _stale(self, holder: dict) -> str | None:
        """Why the lock of ``holder`` no longer holds (None: it does)."""
        pid, here = holder.get("pid"), holder.get("host") == socket.gethostname()
        if here and isinstance(pid, int) and (pid == os.getpid() or not _alive(pid)):
            return "which is no longer running"
        try:
            idle = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "which released it"
        if idle > self.STALE_S:
            return f"which has not touched it for {idle / 60:.0f} minutes"
        return None

    def acquire(self) -> RunLock:
        for _ in range(3):  # a stale lock removed by another process too: try again
            if self._create():
                self.held = True
                self._stop.clear()
                threading.Thread(target=self._beat, daemon=True, name="train.lock").start()
                return self
            holder = self.holder()
            if holder is None:
                continue
            who = f"process {holder.get('pid')} on {holder.get('host')}, started " + str(
                holder.get("started"))  # fmt: skip
            stale = self._stale(holder)
            if stale:
                print(f"{self.path}: taking over the lock of {who}, {stale}")
                self.path.unlink(missing_ok=True)
                continue
            if not holder:
                who = "a process whose lock file cannot be read"
            raise RunFolderError(
                f"{self.path.parent} is in use by another training run ({who}): wait for it to "
                f"finish, or train into another folder (--run-dir); if no run is going on "
                f"there, delete {self.path}"
            )
        raise RunFolderError(f"{self.path}: could not take the lock (contended); try again")

    def _beat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        if self.held:
            self._stop.set()
            holder = self.holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
