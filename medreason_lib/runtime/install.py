"""What a notebook needs installed, and the Colab install that the setup cell runs.

This module runs *before* the course's dependencies exist (a fresh Colab runtime), so it
imports only the standard library and ``profiles`` (itself standard library only).

The pins live in the requirements files, never here:

- ``requirements.txt``: the course runtime every notebook imports (transformers, trl, ...).
- ``requirements-gpu.txt``: the GPU stack, in sections marked ``# [name]``: ``training``
  (torch, unsloth, unsloth_zoo, bitsandbytes), ``vllm`` (vLLM and its bitsandbytes plugin) and
  ``gguf`` (the llama.cpp converter's packages, for notebook 08's GGUF export).
- ``requirements-dev.txt``: tests and lint. Never installed into a learner's runtime.

Which sections a notebook gets follows from what it does (``NOTEBOOK_SECTIONS``: 00-02 load no
model) and from the profile (a profile without vLLM gets no vLLM), and from the GPU:

- A CUDA 13 build (PyPI's torch 2.14.0, vLLM 0.33.0) needs an NVIDIA driver >= 580
  (``CUDA13_MIN_DRIVER``). An older driver is refused with what to do, before anything installs.
- On a T4 (compute capability 7.5) the course installs no vLLM. Unsloth's own Colab recipe
  (unslothai/notebooks commit bdda2efc7ad5ae129ea63cd2065d23c391406283, "Qwen2.5_(3B)-GRPO")
  installs an older vLLM on a T4, vllm==0.11.2, whose metadata requires transformers<5 and
  torch==2.9.0: it cannot share a runtime with the course's transformers 5.17 / trl 1.15. The
  ``3b`` profile then generates with Unsloth's Hugging Face path (``profiles.get_profile``
  turns ``use_vllm`` off when vLLM is not importable, and says so).

The install itself follows that Unsloth recipe: ``uv pip install`` (faster than pip), numpy and
pillow held at the runtime's own versions (so nothing Colab already imported changes under
it), and no restart when it is the first cell run in a fresh runtime.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from medreason_lib.settings.profiles import Profile

ROOT = Path(__file__).resolve().parents[2]
CUDA13_MIN_DRIVER = 580  # CUDA 13.0's minimum Linux driver (major version)
T4_COMPUTE_CAPABILITY = (7, 5)

# The sections of requirements-gpu.txt each notebook needs on a GPU profile ("vllm" only where
# the profile uses it). 00-02 load no model: the course runtime alone.
NOTEBOOK_SECTIONS: dict[str, tuple[str, ...]] = {
    "00": (),
    "01": (),
    "02": (),
    "03": ("training", "vllm"),
    "04": ("training", "vllm"),
    "05": ("training", "vllm"),
    "06": ("training", "vllm"),
    "07": ("training", "vllm"),
    "08": ("training", "vllm", "gguf"),
    "09": ("training",),  # continued pretraining trains the embeddings: no vLLM engine
    "10": ("training", "vllm"),  # SFT on reasoning traces, then GRPO
    "11": ("training", "vllm"),  # DPO for safety from the GRPO adapter
}


def read_pins(path: str | Path) -> dict[str, dict[str, str]]:
    """``{section: {distribution: version}}`` of a requirements file's ``name==version`` lines.

    Lines before any ``# [section]`` marker are in section ``""``. Any other requirement form
    (a range, a URL) raises: every pin the course installs is exact.
    """
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        marker = re.match(r"#\s*\[([a-z0-9_-]+)\]", raw.strip())
        if marker:
            current = marker.group(1)
            continue
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        pin = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!-]+)", line)
        if pin is None:
            raise ValueError(f"{path}:{number}: {raw!r} is not an exact pin (name==version)")
        sections.setdefault(current, {})[pin.group(1)] = pin.group(2)
    return sections


@dataclass(frozen=True)
class GpuFacts:
    """What the install depends on, read from ``nvidia-smi``."""

    name: str
    driver: str
    compute_capability: tuple[int, int]

    @property
    def driver_major(self) -> int:
        return int(self.driver.split(".")[0])

    @property
    def is_t4_class(self) -> bool:
        return self.compute_capability <= T4_COMPUTE_CAPABILITY


def read_gpu() -> GpuFacts | None:
    """The first NVIDIA GPU's name, driver and compute capability; None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = "--query-gpu=name,driver_version,compute_cap"
    try:
        out = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        name, driver, cap = (part.strip() for part in out.splitlines()[0].split(","))
        major, minor = cap.split(".")
        return GpuFacts(name, driver, (int(major), int(minor)))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class UnsupportedRuntime(RuntimeError):
    """The GPU runtime cannot run the pinned stack; the message says what to do."""


@dataclass
class InstallPlan:
    """The packages to install for one notebook, and what was left out and why."""

    requirements: list[str] = field(default_factory=list)  # "name==version"
    skipped: dict[str, str] = field(default_factory=dict)  # distribution -> reason
    sections: tuple[str, ...] = ()

    def missing(self, installed=None) -> list[str]:
        """The pins not installed at their version (``installed``: name -> version)."""
        installed = installed if installed is not None else _installed_version
        out = []
        for req in self.requirements:
            name, version = req.split("==")
            have = installed(name)
            if have is None or have.split("+")[0] != version.split("+")[0]:
                out.append(req)
        return out


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def needs_gpu_stack(notebook: str) -> bool:
    """Whether ``notebook`` loads a model through the GPU stack on a GPU profile (00-02 do
    not, so ``course.start`` imports no Unsloth there and their setup cell installs none).
    An unknown name (an interactive session, a script) is assumed to."""
    return bool(NOTEBOOK_SECTIONS.get(notebook[:2], ("training",)))


# Notebooks about one model size (``course.start(..., scale=...)``): on a GPU where that
# model does not fit, they run their CPU stand-in (``profiles.CPU_STAND_IN``) instead.
NOTEBOOK_SCALE = {"06": "8b", "07": "20b"}


def profile_for_notebook(notebook: str, name: str | None = None, *, scale: str | None = None):
    """The profile ``notebook`` runs on this machine: ``profiles.get_profile(name, scale)``,
    except that a notebook about one model size, on a GPU too small for that model (the
    memory planner's ``fits``, margin and vLLM split included), gets its CPU stand-in and says
    why and what to do instead. The fit is judged on the profile as the course defines it,
    not on a copy shrunk by ``MEDREASON_MAX_*`` caps. A profile named by ``name`` or
    ``$MEDREASON_PROFILE`` is kept: training's pre-flight check then says what does not fit."""
    import os

    from medreason_lib.models.memory import plan_for_profile
    from medreason_lib.settings.profiles import (
        CPU_STAND_IN,
        ENV_VAR,
        PROFILES,
        get_profile,
        gpu_memory_gb,
    )

    scale = scale or NOTEBOOK_SCALE.get(notebook[:2])
    chosen = get_profile(name, scale=scale)
    if scale is None or chosen.is_tiny or name or os.environ.get(ENV_VAR):
        return chosen
    gpu, gb = read_gpu(), gpu_memory_gb()
    if gpu is None or gb is None:
        return chosen
    recipe = PROFILES.get(chosen.name, chosen)  # the recipe, not a workshop's capped copy
    plan = plan_for_profile(recipe, "grpo", gpu=gb, bf16=gpu.compute_capability >= (8, 0))
    if plan.fits():
        return chosen
    stand_in = get_profile(CPU_STAND_IN[scale])
    print(
        f"profile {chosen.name!r} ({chosen.model_id}) does not fit this {gpu.name} ({gb:.1f} GB): "
        f"its GRPO plan needs {plan.required_gb:.1f} GB with the planner's margin. This notebook "
        f"runs the CPU stand-in {stand_in.name!r} instead: the same code and lesson on a tiny "
        "model, in minutes. For the real model, pick a larger GPU (Colab: Runtime > Change "
        "runtime type > L4 or A100), or set MEDREASON_PROFILE to a profile that fits."
    )
    return stand_in


DRIVER_CHECK_VAR = "MEDREASON_SKIP_DRIVER_CHECK"


def plan_install(
    notebook: str, profile: Profile, gpu: GpuFacts | None, *, check_driver: bool = True
) -> InstallPlan:
    """What ``notebook`` needs under ``profile`` on this GPU (None: no GPU, tiny profiles).
    ``check_driver=False`` skips the driver gate (your own CUDA build of torch, say)."""
    key = notebook[:2]
    if key not in NOTEBOOK_SECTIONS:
        raise ValueError(f"unknown notebook {notebook!r}; known: {sorted(NOTEBOOK_SECTIONS)}")
    core = read_pins(ROOT / "requirements.txt")[""]
    plan = InstallPlan(requirements=[f"{n}=={v}" for n, v in core.items()])
    wanted = NOTEBOOK_SECTIONS[key] if profile.uses_unsloth else ()
    if wanted and gpu is None:
        raise UnsupportedRuntime(
            f"profile {profile.name!r} needs an NVIDIA GPU and this runtime has none "
            "(Colab: Runtime > Change runtime type > T4 GPU), or use the tiny profile"
        )
    if wanted and check_driver and gpu.driver_major < CUDA13_MIN_DRIVER:
        raise UnsupportedRuntime(
            f"this runtime's NVIDIA driver {gpu.driver} is older than {CUDA13_MIN_DRIVER}, which "
            "the pinned CUDA 13 builds (torch 2.14.0, vLLM 0.33.0) need. Pick a newer runtime, "
            "or install torch's CUDA 12.8 build yourself (pip install torch==2.14.0 "
            "--index-url https://download.pytorch.org/whl/cu128) and run without vLLM, then "
            f"pass check_driver=False to colab_install (or set {DRIVER_CHECK_VAR}=1)."
        )
    gpu_pins = read_pins(ROOT / "requirements-gpu.txt")
    sections = []
    for section in wanted:
        if section == "vllm" and not profile.use_vllm:
            for name in gpu_pins["vllm"]:
                plan.skipped[name] = f"profile {profile.name!r} generates without vLLM"
            continue
        if section == "vllm" and gpu.is_t4_class:
            for name in gpu_pins["vllm"]:
                plan.skipped[name] = (
                    f"{gpu.name} (compute {gpu.compute_capability[0]}.{gpu.compute_capability[1]})"
                    ": Unsloth's T4 recipe needs vllm 0.11.2, which requires transformers<5; "
                    "the profile generates with Unsloth's HF path instead"
                )
            continue
        sections.append(section)
        plan.requirements += [f"{n}=={v}" for n, v in gpu_pins[section].items()]
    plan.sections = tuple(sections)
    return plan


def _held_versions() -> list[str]:
    """numpy and pillow at the runtime's own versions (Unsloth's recipe does the same)."""
    held = []
    for name in ("numpy", "pillow"):
        version = _installed_version(name)
        if version:
            held.append(f"{name}=={version}")
    return held


def colab_install(
    notebook: str, profile_name: str | None = None, *, check_driver: bool = True
) -> InstallPlan:
    """Install what ``notebook`` needs into this runtime (the setup cell calls it on Colab).

    The profile is the one ``course.start`` will pick (``profile_for_notebook``), as the
    course defines it: a profile that uses vLLM gets vLLM installed, although
    ``get_profile`` turns vLLM off while it is not installed yet. Prints what it installs,
    what it skips and why, how long it took, and whether the runtime must restart: only when
    a package that was already imported in this session changed. Running it again installs
    nothing. ``check_driver=False`` (or ``MEDREASON_SKIP_DRIVER_CHECK=1``) skips the driver
    gate, for a runtime whose torch you installed yourself.
    """
    import os

    from medreason_lib.settings.profiles import PROFILES

    profile = profile_for_notebook(notebook, profile_name)
    if profile.name in PROFILES:
        profile = profile.replace(use_vllm=PROFILES[profile.name].use_vllm)
    check_driver = check_driver and not os.environ.get(DRIVER_CHECK_VAR)
    plan = plan_install(notebook, profile, read_gpu(), check_driver=check_driver)
    todo = plan.missing()
    for name, reason in plan.skipped.items():
        print(f"not installing {name}: {reason}")
    if not todo:
        print(f"{notebook}: everything it needs is installed (profile {profile.name!r})")
        return plan
    print(
        f"{notebook}: installing {len(todo)} pinned packages for profile {profile.name!r} "
        f"({', '.join(plan.sections) or 'course runtime only'}). The GPU stack takes a few "
        "minutes; the course runtime alone well under one."
    )
    began = time.perf_counter()
    imported_before = {name for name in ("torch", "transformers", "trl") if name in sys.modules}
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "uv"], check=True)
    subprocess.run(
        [sys.executable, "-m", "uv", "pip", "install", "-q", "--python", sys.executable]
        + todo
        + _held_versions(),
        check=True,
    )
    subprocess.run(
        [sys.executable, "-m", "uv", "pip", "install", "-q", "--python", sys.executable]
        + ["--no-deps", "-e", str(ROOT)],
        check=True,
    )
    print(f"installed in {time.perf_counter() - began:.0f} s")
    changed = sorted(n for n in imported_before if any(r.startswith(n + "==") for r in todo))
    if changed:
        print(
            f"RESTART NEEDED: {', '.join(changed)} was imported before this install. "
            "Runtime > Restart session, then run this cell again (it will install nothing)."
        )
    else:
        print("no restart needed: nothing installed was imported yet in this runtime")
    return plan


DRIVE_MOUNT = "/content/drive"
DRIVE_RUNS = "medreason-runs"  # the folder in MyDrive that holds runs/


def use_google_drive(folder: str = DRIVE_RUNS) -> str | None:
    """On Colab: mount Google Drive and keep the course's runs there (``MEDREASON_RUNS`` =
    ``/content/drive/MyDrive/<folder>``), so that a disconnect loses no checkpoint, adapter or
    evaluation. The setup cell calls it before anything trains. Colab asks once to allow the
    access. Elsewhere it does nothing and returns None. A ``MEDREASON_RUNS`` that is already
    set is kept (and returned)."""
    import os

    if "google.colab" not in sys.modules:
        return None
    if os.environ.get("MEDREASON_RUNS"):
        print(f"runs stay in MEDREASON_RUNS={os.environ['MEDREASON_RUNS']} (already set)")
        return os.environ["MEDREASON_RUNS"]
    if not folder or "/" in folder:
        raise ValueError(f"use_google_drive: folder must be one folder name, got {folder!r}")
    from google.colab import drive

    drive.mount(DRIVE_MOUNT)
    path = Path(DRIVE_MOUNT) / "MyDrive" / folder
    path.mkdir(parents=True, exist_ok=True)
    os.environ["MEDREASON_RUNS"] = str(path)
    print(f"runs go to Google Drive: MEDREASON_RUNS={path} (they survive a disconnect)")
    return str(path)


# --------------------------------------------------------------------------- what a profile needs

# The distributions each feature of a GPU profile needs at run time, from the pinned sources
# (tests/runtime/test_gpu_dependencies.py re-reads the evidence in the pinned wheels):
# - unsloth: every GPU profile loads through FastLanguageModel.
# - 4bit: bitsandbytes quantises the weights (load_in_4bit); 8bit-adam: its optimiser.
# - vllm: fast_inference; 4bit+vllm: unsloth_zoo/vllm_utils.py imports
#   "vllm_bnb_plugin.bitsandbytes" on vLLM >= 0.28 and raises without it.
# - gguf: unsloth_zoo/llama_cpp.py's _CONVERTER_PYTHON_DEPS (protobuf and sentencepiece come
#   with unsloth; gguf and mistral_common are pinned in the gguf section).
FEATURE_PACKAGES: dict[str, tuple[str, ...]] = {
    "unsloth": ("torch", "unsloth", "unsloth_zoo"),
    "4bit": ("bitsandbytes",),
    "8bit-adam": ("bitsandbytes",),
    "vllm": ("vllm",),
    "4bit+vllm": ("vllm-bnb-plugin", "bitsandbytes"),
    "gguf": ("gguf", "mistral_common", "protobuf", "sentencepiece"),
}


def profile_features(profile: Profile, *, export_gguf: bool = True) -> set[str]:
    """The features of ``FEATURE_PACKAGES`` a GPU profile uses (profiles that load without
    Unsloth, the tiny ones and ``smol``: none)."""
    if not profile.uses_unsloth:
        return set()
    features = {"unsloth"}
    if profile.load_in_4bit:
        features.add("4bit")
    if profile.optim.endswith("8bit"):
        features.add("8bit-adam")
    if profile.use_vllm:
        features.add("vllm")
        if profile.load_in_4bit:
            features.add("4bit+vllm")
    if export_gguf:
        features.add("gguf")
    return features


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def unpinned_needs(profile: Profile, installed: set[str]) -> dict[str, list[str]]:
    """``{feature: [distributions]}`` that ``profile`` needs and ``installed`` (the names the
    install provides: pins and their declared dependencies) lacks. Empty when all is there."""
    have = {_norm(n) for n in installed}
    gaps = {}
    for feature in sorted(profile_features(profile)):
        lacking = [d for d in FEATURE_PACKAGES[feature] if _norm(d) not in have]
        if lacking:
            gaps[feature] = lacking
    return gaps
