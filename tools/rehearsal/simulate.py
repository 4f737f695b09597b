"""The simulated runtime, installed in every Python process a rehearsal starts.

``site/sitecustomize.py`` loads this file (as the module ``_medreason_rehearsal``) when the
environment variable ``MEDREASON_REHEARSAL`` holds a runtime's facts (JSON, written by
``tools.rehearsal.runner``), and calls ``install()``. Nothing here runs in a normal process.

What a process then sees:

- **The GPU, as the course reads it.** ``nvidia-smi`` is a script on ``PATH`` (``bin/``).
  ``torch.cuda``'s ``is_available``, ``device_count``, ``get_device_name``,
  ``get_device_capability``, ``get_device_properties``, ``mem_get_info``,
  ``is_bf16_supported`` (which counts emulation and says True on a T4, as torch 2.x does),
  ``empty_cache`` and the memory counters answer for the simulated card, **but only when the
  caller is the course, a notebook or a stand-in** (``COURSE_MODULES``). torch itself,
  transformers, accelerate and TRL get the real answers, so the tensors stay on the CPU and
  training really runs.
- **Google Colab**: ``google.colab`` (with ``drive.mount``) is importable on Colab runtimes.
- **A fresh runtime's packages.** ``HIDDEN`` distributions (the course runtime that Colab does
  not ship, e.g. trl) cannot be imported, and their metadata is not found, until a pip or uv
  call of the setup cell "installs" them. The GPU stack (unsloth, unsloth_zoo, vllm,
  vllm-bnb-plugin, bitsandbytes) is not installed on this machine at all: installing it puts
  its stand-in (``standins/<distribution>``) on ``sys.path``. ``medreason_lib`` itself is
  importable only once the setup cell has cloned the course and put it on ``sys.path``.
- **Every pip/uv call** of ``subprocess.run`` is recorded in the state file, not run.
- **GPU memory**: ``LEDGER`` books what each model load, vLLM engine and trainer holds on the
  card (``reserve``), frees a booking when its owner is garbage or has been emptied by the
  course (``models._hollow``), and raises ``torch.OutOfMemoryError`` when a booking does not
  fit, as CUDA would.

The state shared by the processes of one runtime (installed distributions, pip calls, the
contract violations the stand-ins found) is a JSON file named in the facts.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib.abc
import importlib.machinery
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import types
import warnings
import weakref
from pathlib import Path

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "standins"
GIB = 1024**3

# distribution -> import name, for the course runtime a fresh Colab lacks (requirements.txt)
HIDDEN = {
    "trl": "trl",
    "math-verify": "math_verify",
    "lm-eval": "lm_eval",
    "rapidfuzz": "rapidfuzz",
}
# distribution -> import name, for the GPU stack whose stand-ins live in standins/
STAND_INS = {
    "unsloth": "unsloth",
    "unsloth-zoo": "unsloth_zoo",
    "vllm": "vllm",
    "vllm-bnb-plugin": "vllm_bnb_plugin",
    "bitsandbytes": "bitsandbytes",
}
# the callers that see the simulated GPU (module names, by prefix)
COURSE_MODULES = ("medreason_lib", "__main__", "_medreason_rehearsal", *STAND_INS.values())
COURSE_MODULES += ("benchmarks", "gpu_smoke")

FACTS: dict = {}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------- shared state


def state_path() -> Path:
    return Path(FACTS["state"])


def read_state() -> dict:
    path = state_path()
    if path.exists():
        return json.loads(path.read_text())
    return {"installed": {}, "pip_calls": [], "violations": [], "events": []}


def update_state(change) -> dict:
    """Apply ``change(state)`` to the state file (one writer at a time: a lock file)."""
    from filelock import FileLock  # in the course's requirements, and on this machine

    with FileLock(str(state_path()) + ".lock"):
        state = read_state()
        change(state)
        tmp = state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, state_path())
    return state


def installed() -> dict[str, str]:
    """``{distribution: version}`` installed by a setup cell so far."""
    return read_state()["installed"]


def violation(contract: str, message: str) -> None:
    """A stand-in found the course breaking a pinned library's contract: recorded for the
    runner's report (the stand-in raises or warns as the real library does)."""
    notebook = os.environ.get("MEDREASON_NOTEBOOK", "?")
    update_state(lambda s: s["violations"].append([notebook, contract, message]))


def event(kind: str, detail: str) -> None:
    update_state(
        lambda s: s["events"].append([os.environ.get("MEDREASON_NOTEBOOK", "?"), kind, detail])
    )


# --------------------------------------------------------------------------- packages


def is_installed(dist: str) -> bool:
    return norm(dist) in {norm(d) for d in installed()}


def course_cloned() -> bool:
    """medreason_lib is on ``sys.path`` from somewhere other than the real checkout (which the
    venv's editable install points at): the setup cell cloned it and added its folder."""
    repo = FACTS["repo"]
    for entry in sys.path:
        if entry and entry != repo and Path(entry, "medreason_lib", "__init__.py").is_file():
            return True
    return False


def add_stand_ins_to_path() -> None:
    """Put each installed stand-in's folder (its package and its ``.dist-info``) on
    ``sys.path``, as an install into site-packages would make both visible."""
    for dist in STAND_INS:
        folder = str(STANDINS / dist)
        if is_installed(dist) and folder not in sys.path:
            sys.path.append(folder)
    importlib.invalidate_caches()


class RuntimeFinder(importlib.abc.MetaPathFinder):
    """The only finder on ``sys.meta_path``: hides what a fresh runtime lacks, serves the
    stand-ins once installed, and asks the original finders for everything else."""

    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in HIDDEN.values():
            dist = next(d for d, m in HIDDEN.items() if m == top)
            if not is_installed(dist):
                return None
        if top in STAND_INS.values():
            dist = next(d for d, m in STAND_INS.items() if m == top)
            if not is_installed(dist):
                return None
        if top == "medreason_lib" and FACTS.get("colab") and not course_cloned():
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                return spec
        return None

    def find_distributions(self, context=None):
        """Metadata (``importlib.metadata``: versions, entry points) of what is installed,
        without the hidden distributions a fresh runtime lacks."""
        context = context or importlib.metadata.DistributionFinder.Context()
        hidden = {norm(d) for d in HIDDEN if not is_installed(d)}
        for finder in self.finders:
            if not hasattr(finder, "find_distributions"):
                continue
            for dist in finder.find_distributions(context):
                if norm(dist.metadata["Name"] or "") not in hidden:
                    yield dist

    def invalidate_caches(self):
        for finder in self.finders:
            if hasattr(finder, "invalidate_caches"):
                finder.invalidate_caches()


_real_version = importlib.metadata.version


def _sim_version(name):
    """The installed version as the simulated runtime has it: what a setup cell installed
    (torch's pinned build included), nothing for what a fresh runtime lacks, else the real."""
    dist = norm(name)
    versions = {norm(d): v for d, v in installed().items()}
    if dist in versions:
        return versions[dist]
    if dist in {norm(d) for d in HIDDEN} | {norm(d) for d in STAND_INS}:
        raise importlib.metadata.PackageNotFoundError(name)
    return _real_version(name)


_real_run = subprocess.run


def _requirements(argv: list[str]) -> list[str]:
    """The ``name==version`` (or bare name) arguments of a pip/uv install command line."""
    args, out, skip = argv, [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--python", "-r", "--index-url", "--extra-index-url", "-c", "-e"):
            skip = arg != "-e"
            if arg == "-e":
                out.append("-e")
            continue
        if arg.startswith("-"):
            continue
        out.append(arg)
    return [a for a in out if a not in ("install", "pip", "-e")]


def _sim_run(args, *rest, **kwargs):
    argv = [str(a) for a in args] if isinstance(args, list | tuple) else None
    if argv and len(argv) >= 3 and argv[1] == "-m" and argv[2] in ("pip", "uv"):
        tool = argv[2] + (" pip" if argv[2] == "uv" else "")
        wanted = _requirements(argv[3:])

        def record(state):
            state["pip_calls"].append([os.environ.get("MEDREASON_NOTEBOOK", "?"), tool, argv[3:]])
            for req in wanted:
                name, _, version = req.partition("==")
                if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
                    state["installed"][name] = version or "latest"

        update_state(record)
        add_stand_ins_to_path()
        return subprocess.CompletedProcess(args, 0, "", "")
    return _real_run(args, *rest, **kwargs)


# --------------------------------------------------------------------------- google.colab


def _install_google_colab() -> None:
    google = sys.modules.get("google") or types.ModuleType("google")
    google.__path__ = getattr(google, "__path__", [])
    colab = types.ModuleType("google.colab")
    drive = types.ModuleType("google.colab.drive")

    def mount(mountpoint, force_remount=False, **kwargs):
        folder = Path(FACTS["drive"])
        (folder / "MyDrive").mkdir(parents=True, exist_ok=True)
        event("drive.mount", str(mountpoint))
        with contextlib.suppress(FileExistsError):
            Path(mountpoint).parent.mkdir(parents=True, exist_ok=True)
            if not Path(mountpoint).exists():
                os.symlink(folder, mountpoint)
        print(f"Mounted at {mountpoint}")

    drive.mount = mount
    for module in (colab, drive):
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    if google.__spec__ is None:
        google.__spec__ = importlib.machinery.ModuleSpec("google", None, is_package=True)
    colab.drive = drive
    google.colab = colab
    sys.modules.setdefault("google", google)
    sys.modules["google.colab"] = colab
    sys.modules["google.colab.drive"] = drive


# --------------------------------------------------------------------------- the GPU


class Ledger:
    """What the simulated card holds: bookings of bytes, each tied to a live owner."""

    def __init__(self, total_bytes: int):
        self.total = total_bytes
        self.bookings: list[tuple[weakref.ref, int, str]] = []
        self.peak = 0

    def _alive(self, ref) -> bool:
        owner = ref()
        if owner is None:
            return False
        params = getattr(owner, "parameters", None)
        if callable(params):  # a model the course emptied (models._hollow) holds nothing
            first = next(iter(params()), None)
            if first is not None and first.numel() == 0:
                return False
        return not getattr(owner, "_rehearsal_released", False)

    def collect(self) -> None:
        self.bookings = [b for b in self.bookings if self._alive(b[0])]

    @property
    def used(self) -> int:
        self.collect()
        return sum(b[1] for b in self.bookings)

    def free(self) -> int:
        return self.total - self.used

    def reserve(self, owner, nbytes: int, what: str) -> None:
        """Book ``nbytes`` for ``owner``; CUDA's out-of-memory error when they do not fit."""
        import torch

        gc.collect()
        self.collect()
        if nbytes > self.free():
            held = "; ".join(f"{w} {n / GIB:.1f} GiB" for _, n, w in self.bookings) or "nothing"
            raise torch.OutOfMemoryError(
                f"CUDA out of memory (rehearsal of {FACTS['name']}, {self.total / GIB:.1f} GiB): "
                f"tried to allocate {nbytes / GIB:.2f} GiB for {what}; "
                f"{self.free() / GIB:.2f} GiB free; held: {held}"
            )
        self.bookings.append((weakref.ref(owner), int(nbytes), what))
        self.peak = max(self.peak, self.used)
        event("reserve", f"{what}: {nbytes / GIB:.2f} GiB, {self.used / GIB:.2f} GiB in use")

    def holders(self) -> list[str]:
        self.collect()
        return [w for _, _, w in self.bookings]


LEDGER: Ledger | None = None


def _from_course() -> bool:
    frame = sys._getframe(2)
    name = frame.f_globals.get("__name__", "") or ""
    return name.startswith(COURSE_MODULES)


def _patch_torch(torch) -> None:
    cuda = torch.cuda
    gpu = FACTS["gpu"]
    real = {n: getattr(cuda, n) for n in (
        "is_available", "device_count", "get_device_name", "get_device_capability",
        "get_device_properties", "mem_get_info", "is_bf16_supported", "empty_cache",
        "memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved",
        "reset_peak_memory_stats", "synchronize", "set_per_process_memory_fraction",
        "current_device",
    )}  # fmt: skip
    props = types.SimpleNamespace(
        name=gpu["name"],
        total_memory=int(gpu["memory_gb"] * GIB),
        major=gpu["capability"][0],
        minor=gpu["capability"][1],
        multi_processor_count=gpu.get("sms", 40),
    )
    fake = {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "current_device": lambda: 0,
        "get_device_name": lambda device=None: gpu["name"],
        "get_device_capability": lambda device=None: tuple(gpu["capability"]),
        "get_device_properties": lambda device=None: props,
        "mem_get_info": lambda device=None: (LEDGER.free(), LEDGER.total),
        # torch 2.x: including_emulation=True by default, so a T4 (7.5) says True
        "is_bf16_supported": lambda including_emulation=True: (
            True if including_emulation else tuple(gpu["capability"]) >= (8, 0)
        ),
        "empty_cache": lambda: LEDGER.collect(),
        "memory_allocated": lambda device=None: LEDGER.used,
        "max_memory_allocated": lambda device=None: LEDGER.peak,
        "memory_reserved": lambda device=None: LEDGER.used,
        "max_memory_reserved": lambda device=None: LEDGER.peak,
        "reset_peak_memory_stats": lambda device=None: setattr(LEDGER, "peak", LEDGER.used),
        "synchronize": lambda device=None: None,
        "set_per_process_memory_fraction": lambda fraction, device=None: None,
    }

    def dispatch(name):
        @functools.wraps(real[name])
        def call(*args, **kwargs):
            if _from_course():
                return fake[name](*args, **kwargs)
            return real[name](*args, **kwargs)

        return call

    for name in real:
        setattr(cuda, name, dispatch(name))


class _PostImport(importlib.abc.MetaPathFinder):
    """Patches torch right after it is imported (not before: a fresh Colab kernel has not
    imported torch when the setup cell runs, and the install must see that)."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec("torch")
        finally:
            sys.meta_path.insert(0, self)
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):
            original(module)
            _patch_torch(module)
            sys.meta_path[:] = [f for f in sys.meta_path if f is not self]

        loader.exec_module = exec_module
        return spec


# --------------------------------------------------------------------------- install


def install() -> None:
    global LEDGER
    FACTS.update(json.loads(os.environ["MEDREASON_REHEARSAL"]))
    sys.modules.setdefault("_medreason_rehearsal", sys.modules[__name__])
    finders = [f for f in sys.meta_path]
    sys.meta_path[:] = [RuntimeFinder(finders)]
    importlib.metadata.version = _sim_version
    add_stand_ins_to_path()
    subprocess.run = _sim_run
    if FACTS.get("colab"):
        _install_google_colab()
    if FACTS.get("gpu"):
        LEDGER = Ledger(int(FACTS["gpu"]["memory_gb"] * GIB))
        if "torch" in sys.modules:
            _patch_torch(sys.modules["torch"])
        else:
            sys.meta_path.insert(0, _PostImport())
    warnings.filterwarnings("default", message=".*Unsloth should be imported before.*")
