"""Run every notebook as a given runtime would, on this CPU: ``make rehearse``.

``python -m tools.rehearsal [--runtime NAME ...] [--only NN ...]`` executes the notebooks top
to bottom, setup cell included, in a kernel whose process sees the runtime of ``RUNTIMES``
(``simulate.py`` says what is simulated and how). Per runtime:

- a Colab runtime starts each notebook fresh, as Colab gives each notebook its own runtime:
  nothing of the GPU stack or of trl is installed, ``/content/medreason-course`` is not
  cloned yet. Runs persist between notebooks (``MEDREASON_RUNS``), as on Google Drive.
- ``h100`` is a machine where ``make setup`` installed the whole pinned stack first.
- on the GPU runtimes, training steps, items and completion tokens are capped
  (``MEDREASON_MAX_STEPS``,
  ``MEDREASON_MAX_ITEMS``, ``MEDREASON_MAX_NEW_TOKENS``), and data comes from the bundled
  samples (``MEDREASON_DATA_SOURCE=bundled``): the hub cannot be reached from here. Model ids
  resolve to the tiny model of their family in a hub cache the rehearsal writes
  (``stand_in_hub``).

A notebook fails when a cell raises, or when a stand-in recorded a broken contract of a pinned
library (``simulate.violation``) during it. The report prints each notebook's time and each
runtime's total, and is written to ``runs/rehearsal/report.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COLAB_CLONE = Path("/content/medreason-course")

# name -> the facts a runtime shows. memory_gb: nvidia-smi's memory.total in GiB; driver: a
# driver that supports CUDA 13 (as Colab's runtimes of December 2026 do).
RUNTIMES: dict[str, dict] = {
    "colab-cpu": {"colab": True, "gpu": None},
    "colab-t4": {
        "colab": True,
        "gpu": {"name": "Tesla T4", "memory_gb": 15.0, "capability": [7, 5], "sms": 40},
    },
    "colab-l4": {
        "colab": True,
        "gpu": {"name": "NVIDIA L4", "memory_gb": 22.5, "capability": [8, 9], "sms": 58},
    },
    "colab-a100": {
        "colab": True,
        "gpu": {"name": "NVIDIA A100-SXM4-40GB", "memory_gb": 40.0, "capability": [8, 0]},
    },
    "h100": {
        "colab": False,
        "gpu": {"name": "NVIDIA H100 80GB HBM3", "memory_gb": 79.6, "capability": [9, 0]},
    },
}
DRIVER, CUDA = "580.82.07", "13.0"
CAPS = {"MEDREASON_MAX_STEPS": "2", "MEDREASON_MAX_ITEMS": "6", "MEDREASON_MAX_NEW_TOKENS": "64",
        "MEDREASON_DATA_SOURCE": "bundled"}  # fmt: skip
# On the GPU runtimes, notebook 04's first training is stopped after its first step, as a
# workshop that watches a step and presses stop would: the cells after it must still work.
INTERRUPT = "04_grpo_qwen_3b:1"

NVIDIA_SMI = """#!/bin/sh
# rehearsal stand-in for nvidia-smi: the queries the course makes, answered for {name}
case "$*" in
  *name,driver_version,compute_cap*) echo "{name}, {driver}, {cap}" ;;
  *memory.total*) echo "{mib}" ;;
  -L) echo "GPU 0: {name} (UUID: GPU-rehearsal)" ;;
  *) echo "NVIDIA-SMI {driver}   Driver Version: {driver}   CUDA Version: {cuda}"
     echo "  0  {name}  {mib}MiB" ;;
esac
"""

GIT = """#!/bin/sh
# rehearsal stand-in for git: a clone of the course links this checkout; the rest is real git
if [ "$1" = clone ]; then
  for last; do :; done
  case "$*" in *medreason-course*)
    mkdir -p "$(dirname "$last")" && ln -sfn "{repo}" "$last" && echo "Cloning into '$last'..."
    exit 0 ;;
  esac
fi
exec {git} "$@"
"""


def _write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _pins() -> dict[str, str]:
    sys.path.insert(0, str(ROOT))
    from medreason_lib.runtime.install import read_pins

    pins = {}
    for name in ("requirements.txt", "requirements-gpu.txt"):
        for section in read_pins(ROOT / name).values():
            pins |= section
    return pins


def warm_tiny(family: str) -> Path:
    """The tiny model of ``family`` after the course's SFT warm start (the one its CPU
    stand-in profile trains, cached by ``medreason_lib.training.sft``): a model that writes the
    template, so GRPO on a GPU runtime gets rewards that differ and trains its adapter, as a
    real instruct model would. A random tiny model scores 0 everywhere and learns nothing."""
    from medreason_lib.settings.profiles import CPU_STAND_IN, PROFILES
    from medreason_lib.training import config as training_config
    from medreason_lib.training import sft

    stand_in = next(PROFILES[n] for n in CPU_STAND_IN.values() if PROFILES[n].family == family)
    out = Path(tempfile.mkdtemp(prefix=f"warm-{family}-"))
    return sft.run_warmstart(stand_in, training_config.training_dataset(stand_in), out)


def stand_in_hub(hub: Path) -> Path:
    """A Hugging Face hub cache in which every GPU profile's model id (Unsloth's 4-bit copy of
    it, and the published model notebook 05 compares) is the warm-started tiny model of its
    family (``warm_tiny``): what ``from_pretrained(<hub id>)`` of transformers (a tokenizer
    the course counts with) and of the Unsloth stand-in then load, offline, as they would
    the real model from the hub."""
    sys.path.insert(0, str(ROOT))
    from medreason_lib.runtime.prefetch import REFERENCE_MODELS, UNSLOTH_4BIT
    from medreason_lib.settings.profiles import PROFILES

    warm: dict[str, Path] = {}
    for profile in PROFILES.values():
        if profile.is_tiny:
            continue
        repos = {profile.model_id, UNSLOTH_4BIT.get(profile.model_id, profile.model_id)}
        if profile.name in REFERENCE_MODELS:  # the published model notebook 05 evaluates
            repos.add(REFERENCE_MODELS[profile.name])
        for repo in sorted(repos):
            entry = hub / ("models--" + repo.replace("/", "--"))
            snapshot = entry / "snapshots" / "rehearsal"
            if snapshot.is_dir():
                continue
            if profile.family not in warm:
                warm[profile.family] = warm_tiny(profile.family)
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(warm[profile.family], snapshot)
            (snapshot / "tiny_build.json").write_text(json.dumps({"family": profile.family}))
            (entry / "refs").mkdir(exist_ok=True)
            (entry / "refs" / "main").write_text("rehearsal")
    for folder in warm.values():
        shutil.rmtree(folder, ignore_errors=True)
    return hub


def runtime_env(name: str, work: Path, hub: Path | None = None) -> dict[str, str]:
    """The environment a kernel of runtime ``name`` starts with (``work``: a scratch folder;
    ``hub``: a stand-in hub cache, built in ``work`` when not given)."""
    facts = dict(RUNTIMES[name], name=name, repo=str(ROOT))
    facts["state"] = str(work / "state.json")
    facts["drive"] = str(work / "drive")
    bin_dir = work / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    gpu = facts["gpu"]
    if gpu:
        cap = ".".join(map(str, gpu["capability"]))
        mib = int(gpu["memory_gb"] * 1024)
        text = NVIDIA_SMI.format(name=gpu["name"], driver=DRIVER, cap=cap, mib=mib, cuda=CUDA)
        _write_script(bin_dir / "nvidia-smi", text)
    if facts["colab"]:
        _write_script(bin_dir / "git", GIT.format(repo=ROOT, git=shutil.which("git") or "git"))
    env = dict(os.environ)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), *path])
    # this checkout first (not the one an editable install may point at), so a rehearsal of a
    # clone runs the clone; the simulation still hides it on Colab until the setup cell clones
    env["PYTHONPATH"] = os.pathsep.join([str(HERE / "site"), str(ROOT)])
    env["MEDREASON_REHEARSAL"] = json.dumps(facts)
    env["MEDREASON_RUNS"] = str(work / "runs")
    env["HF_HUB_OFFLINE"] = env["HF_DATASETS_OFFLINE"] = "1"
    env["HF_HUB_CACHE"] = str(hub or stand_in_hub(work / "hub"))
    env.pop("MEDREASON_PROFILE", None)  # the runtime decides, as on a learner's machine
    if gpu:  # colab-cpu runs the tiny course as it is: minutes on a CPU already
        env |= CAPS
        env["MEDREASON_REHEARSAL_INTERRUPT"] = INTERRUPT
    return env


def fresh_state(name: str, work: Path) -> None:
    """A new runtime's packages: nothing installed on Colab; the whole stack on ``h100``."""
    installed = {} if RUNTIMES[name]["colab"] else _pins()
    state = {"installed": installed, "pip_calls": [], "violations": [], "events": []}
    (work / "state.json").write_text(json.dumps(state, indent=1))
    if RUNTIMES[name]["colab"] and COLAB_CLONE.is_symlink():
        COLAB_CLONE.unlink()


def run_notebook(path: Path, env: dict[str, str], timeout: int) -> str | None:
    """Execute ``path`` in a kernel started with ``env``; the error, or None."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env, MEDREASON_NOTEBOOK=path.stem)
    try:
        client = NotebookClient(
            nb, timeout=timeout, kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )  # fmt: skip
        client.execute()
        return None
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        if not lines:  # not a cell's error (those carry their traceback): where it came from
            import traceback

            lines = traceback.format_exc().strip().splitlines()
        return f"{type(exc).__name__}: {' | '.join(lines[-3:])[:600]}"
    finally:
        os.environ.clear()
        os.environ.update(saved)
        out = Path(env["MEDREASON_RUNS"]).parent / "notebooks"
        out.mkdir(exist_ok=True)
        nbformat.write(nb, out / path.name)


def rehearse(
    runtime: str, notebooks: list[Path], timeout: int, keep: Path | None, hub: Path
) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"rehearsal-{runtime}-", dir=keep))
    env = runtime_env(runtime, work, hub)
    rows, began = [], time.perf_counter()
    for path in notebooks:
        if RUNTIMES[runtime]["colab"] or path == notebooks[0]:
            fresh_state(runtime, work)  # each Colab notebook runs in a runtime of its own
        t0 = time.perf_counter()
        error = run_notebook(path, env, timeout)
        state = json.loads((work / "state.json").read_text())
        broken = [v for v in state["violations"] if v[0] == path.stem]
        if broken and not error:
            error = "contract broken: " + "; ".join(f"{c}: {m}" for _, c, m in broken)[:600]
        seconds = time.perf_counter() - t0
        installs = [c for c in state["pip_calls"] if c[0] == path.stem]
        rows.append({"notebook": path.stem, "seconds": round(seconds, 1), "error": error,
                     "pip_calls": installs, "violations": broken})  # fmt: skip
        status = "ok" if not error else f"FAILED {error}"
        print(f"  {runtime:<10} {path.stem:<36} {seconds:6.1f} s  {status}", flush=True)
    total = time.perf_counter() - began
    kept = f" (work folder kept: {work})" if keep is not None else ""
    print(f"  {runtime}: {total:.0f} s for {len(notebooks)} notebooks{kept}")
    if keep is None:
        shutil.rmtree(work, ignore_errors=True)
    if COLAB_CLONE.is_symlink():
        COLAB_CLONE.unlink()
    return {"runtime": runtime, "seconds": round(total, 1), "notebooks": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", nargs="*", choices=list(RUNTIMES), default=list(RUNTIMES))
    parser.add_argument("--only", nargs="*", help="notebook numbers (default: all)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--keep", type=Path, help="keep each runtime's work folder under this")
    args = parser.parse_args(argv)
    found = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    chosen = [p for p in found if not args.only or p.stem[:2] in args.only]
    if not chosen:
        parser.error(f"no notebook matches {args.only}")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    print(f"rehearsal: {len(chosen)} notebooks x {len(args.runtime)} runtimes; caps {CAPS}")
    began = time.perf_counter()
    hub = stand_in_hub(Path(tempfile.mkdtemp(prefix="rehearsal-hub-")))
    print(f"stand-in hub cache (warm-started tiny models): {time.perf_counter() - began:.0f} s")
    try:
        reports = [rehearse(r, chosen, args.timeout, args.keep, hub) for r in args.runtime]
    finally:
        shutil.rmtree(hub, ignore_errors=True)
    out = ROOT / "runs" / "rehearsal"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(reports, indent=1))
    failed = [(r["runtime"], n["notebook"]) for r in reports for n in r["notebooks"] if n["error"]]
    print("\nruntime      seconds  failed")
    for r in reports:
        bad = sum(1 for n in r["notebooks"] if n["error"])
        print(f"{r['runtime']:<12} {r['seconds']:7.0f}  {bad}/{len(r['notebooks'])}")
    return 1 if failed else 0
