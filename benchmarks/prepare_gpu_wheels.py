#!/usr/bin/env python3
"""Fill ``.whl/`` with the wheels a GPU smoke run needs on a machine with no internet (issue 15).

The borrowed GPU machine has torch 2.11 (CUDA 13.0), transformers, peft, accelerate, numpy,
pandas, pyarrow, safetensors, tokenizers, sentencepiece, sympy, triton and the usual small
packages, but no trl, datasets, bitsandbytes, unsloth or unsloth_zoo, and no package index.
This script downloads, for CPython 3.12 on manylinux x86_64, the course's pins of those
(``requirements.txt``, ``requirements-gpu.txt``) plus the packages they import at run time
that the machine lacks (``CLOSURE``), trims the two large wheels, and writes them to
``.whl/`` (git-ignored), removing any other wheel there so each package has one version.

Import closure (read from the pinned sources with ``ast``: module-level imports that are not
inside ``try``; see benchmarks/README.md):
- datasets 4.8.5 imports ``dill`` and ``multiprocess`` at module level;
- math-verify 0.9.0 imports ``latex2sympy2_extended``, which needs ``antlr4``;
- unsloth_zoo's ``loss_utils`` uses ``cut_cross_entropy`` on CUDA when it imports (in a
  ``try``: carried so that the loss runs as on Colab);
- peft is carried at the course's pin (the machine's version is unknown).
Not carried, because nothing on the course's path imports them unguarded: torchao (every
import in unsloth/unsloth_zoo is behind ``find_spec`` or ``try``), xformers (``try``),
pydantic (``try``, a warnings filter), msgspec (only ``vllm_lora_request``, vLLM's path),
tyro, diffusers and hf_transfer (declared by unsloth but imported by neither package), vllm.

Trimming (the wheel keeps its name and version; its RECORD lists only the files kept):
- unsloth: the ``studio/`` web app and the ``unsloth_cli/`` command line (~25 MB), which
  ``import unsloth`` never imports;
- bitsandbytes: every native library except ``libbitsandbytes_cuda130.so`` and the CPU one.
  ``bitsandbytes/cextension.py`` (0.50.2) loads ``libbitsandbytes_cuda{major}{minor}.so`` for
  ``torch.version.cuda``, else the highest packaged version of the same major below it, so the
  13.0 library serves torch cu130 (and any 13.x).

Usage: ``python benchmarks/prepare_gpu_wheels.py`` (or ``make gpu-wheels``); ``--check`` only
verifies an existing ``.whl/`` (tags, one version each, total size).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / ".whl"
CACHE = REPO / ".cache" / "gpu-wheels"
OLD_CACHE = REPO / ".cache" / "wheels"  # `make wheels` keeps the unsloth wheels here

# Pinned in requirements.txt / requirements-gpu.txt: the versions are read from there.
PINNED = ("trl", "datasets", "peft", "math-verify", "rapidfuzz")
PINNED_GPU = ("unsloth", "unsloth_zoo", "bitsandbytes")
# Run-time imports the machine lacks; the versions pip resolves for requirements.txt
# (dill < 0.4.2 and multiprocess < 0.70.20 are datasets 4.8.5's bounds; math-verify 0.9.0
# pins latex2sympy2_extended 1.11.0, which needs antlr4-python3-runtime 4.13.2).
CLOSURE = {
    "dill": "0.4.1",
    "multiprocess": "0.70.19",
    "latex2sympy2_extended": "1.11.0",
    "antlr4-python3-runtime": "4.13.2",
    "cut_cross_entropy": "25.1.1",
}
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
KEEP_BNB_LIBS = ("libbitsandbytes_cuda130.so", "libbitsandbytes_cpu.so")
BUDGET_MIB = 60  # the device tool carries 64 MiB: wheels + working tree


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def pins() -> dict[str, str]:
    """``{name: version}`` of every wheel to carry."""
    found: dict[str, str] = {}
    for path, names in (
        (REPO / "requirements.txt", PINNED),
        (REPO / "requirements-gpu.txt", PINNED_GPU),
    ):
        text = path.read_text()
        for name in names:
            m = re.search(rf"^{re.escape(name)}==([^\s;#]+)", text, re.MULTILINE | re.IGNORECASE)
            if m is None:
                raise SystemExit(f"{path.name}: no `{name}==VERSION` line (the wheel to carry)")
            found[name] = m.group(1)
    return found | CLOSURE


def _cached(name: str, version: str) -> Path | None:
    for folder in (CACHE, OLD_CACHE):
        for path in folder.glob("*.whl") if folder.is_dir() else ():
            dist, ver = path.name.split("-")[:2]
            if _norm(dist) == _norm(name) and ver == version:
                return path
    return None


def download(name: str, version: str) -> Path:
    """The wheel of ``name==version`` for cp312 manylinux x86_64 (or pure Python)."""
    hit = _cached(name, version)
    if hit is not None:
        return hit
    CACHE.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
    cmd += ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, "-d", str(CACHE), f"{name}=={version}"], check=True)
    hit = _cached(name, version)
    if hit is None:
        raise SystemExit(f"pip downloaded no wheel for {name}=={version} into {CACHE}")
    return hit


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def trim(src: Path, dest: Path, drop) -> int:
    """Copy wheel ``src`` to ``dest`` without the members ``drop(name)`` selects, rewriting
    ``*.dist-info/RECORD`` to list only what is kept. Returns the number of files dropped."""
    dropped = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        kept = [i for i in zin.infolist() if not drop(i.filename)]
        dropped = len(zin.infolist()) - len(kept)
        record = next(i.filename for i in kept if i.filename.endswith(".dist-info/RECORD"))
        lines = []
        for info in kept:
            if info.filename == record:
                continue
            data = zin.read(info)
            zout.writestr(info, data)
            if not info.filename.endswith("/"):
                lines.append(_record_line(info.filename, data))
        lines.append(f"{record},,")
        zout.writestr(record, "\n".join(lines) + "\n")
    return dropped


def _drop_unsloth(name: str) -> bool:
    return name.startswith(("studio/", "unsloth_cli/"))


def _drop_bnb(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith("libbitsandbytes_") and base not in KEEP_BNB_LIBS


TRIMS = {"unsloth": _drop_unsloth, "bitsandbytes": _drop_bnb}


def wheel_ok(filename: str) -> bool:
    """True for a wheel CPython 3.12 on manylinux x86_64 can install: pure Python
    (``py3-none-any``) or a cp312/abi3 manylinux x86_64 build."""
    parts = filename[: -len(".whl")].split("-")
    py, abi, plat = parts[-3], parts[-2], parts[-1]
    pys = py.split(".")
    pure = plat == "any" and abi == "none" and any(p in ("py3", "py312", "cp312") for p in pys)
    binary = (
        any(p in ("cp312", "py3", "py312") for p in pys)
        and abi in ("cp312", "abi3", "none")
        and all(p.startswith("manylinux") and p.endswith("x86_64") for p in plat.split("."))
    )
    return pure or binary


def check(folder: Path = OUT) -> int:
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        print(f"{folder}: no wheels (run benchmarks/prepare_gpu_wheels.py)")
        return 1
    names = [_norm(w.name.split("-")[0]) for w in wheels]
    dupes = sorted({n for n in names if names.count(n) > 1})
    bad = [w.name for w in wheels if not wheel_ok(w.name)]
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"  {w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
    print(f"  {total / 2**20:7.2f} MiB  total ({len(wheels)} wheels; budget {BUDGET_MIB} MiB)")
    if dupes:
        print(f"more than one version of: {', '.join(dupes)}")
    if bad:
        print(f"not for cp312 manylinux x86_64: {', '.join(bad)}")
    if total > BUDGET_MIB * 2**20:
        print(f"over the {BUDGET_MIB} MiB budget")
    return 1 if (dupes or bad or total > BUDGET_MIB * 2**20) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only verify .whl/")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    OUT.mkdir(exist_ok=True)
    wanted = pins()
    keep: set[str] = set()
    for name, version in wanted.items():
        src = download(name, version)
        dest = OUT / src.name
        if _norm(name) in TRIMS:
            dropped = trim(src, dest, TRIMS[_norm(name)])
            print(f"{src.name}: trimmed {dropped} files")
        else:
            shutil.copyfile(src, dest)
        keep.add(dest.name)
    for stale in OUT.glob("*.whl"):
        if stale.name not in keep:
            print(f"removing {stale.name} (not in the carried set)")
            stale.unlink()
    return check()


if __name__ == "__main__":
    sys.exit(main())
