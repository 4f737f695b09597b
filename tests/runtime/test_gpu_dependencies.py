"""Dependency consistency: what the GPU profiles need is what the requirements pin.

The GPU stack cannot be installed here, so its needs are read from the pinned releases
(``make wheels`` puts them in ``.cache/wheels``): the wheels' METADATA (``Requires-Dist``) and
the unsloth_zoo source of the code paths the course takes (``ast``, never imported). A
profile feature (4-bit + vLLM, GGUF export, ...) that needs a distribution the install does
not provide, or a pin that another pinned package's metadata excludes, fails here instead of
in a learner's first ``from_pretrained``.
"""

from __future__ import annotations

import ast
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from medreason_lib.runtime import install
from medreason_lib.settings.profiles import PROFILES
from tools import api_drift as ad

ROOT = Path(__file__).resolve().parents[2]
GPU_PROFILES = [p for p in PROFILES.values() if not p.is_tiny]
# The GPU machines the course targets: Linux x86_64, CPython 3.12 (Colab's and the H100's).
TARGET = {
    **default_environment(),
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def _wheel_metadata(dist: str, version: str) -> str:
    if dist == "vllm":
        path = ad.vllm_sources_path(version) / f"vllm-{version}.dist-info" / "METADATA"
        if not path.exists():
            pytest.fail(f"{path} missing: {ad.MAKE_HINT}")
        return path.read_text()
    wheel = ad.wheel_path(dist, version)
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return zf.read(name).decode()


def _requirements(metadata_text: str) -> list[Requirement]:
    """The requirements that apply on the target machine (no extras)."""
    out = []
    for line in Parser().parsestr(metadata_text).get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({**TARGET, "extra": ""}):
            out.append(req)
    return out


def _all_pins() -> dict[str, str]:
    pins = {}
    for path in ("requirements.txt", "requirements-gpu.txt"):
        for section in install.read_pins(ROOT / path).values():
            pins.update({install._norm(n): v for n, v in section.items()})
    return pins


# Pinned packages whose metadata can be read here (wheels from `make wheels`).
READABLE = ("unsloth", "unsloth-zoo", "vllm", "vllm-bnb-plugin")


@pytest.fixture(scope="module")
def pinned_requirements() -> dict[str, list[Requirement]]:
    pins = _all_pins()
    return {dist: _requirements(_wheel_metadata(dist, pins[dist])) for dist in READABLE}


def _provided(sections: dict[str, dict[str, str]], requirements) -> set[str]:
    """Names an install of these pin sections provides: the pins and their declared needs."""
    names = {install._norm(n) for pins in sections.values() for n in pins}
    for dist, reqs in requirements.items():
        if dist in names:
            names |= {install._norm(r.name) for r in reqs}
    return names


def test_gpu_requirements_pin_the_vllm_bitsandbytes_plugin():
    gpu = install.read_pins(ROOT / "requirements-gpu.txt")
    assert gpu["vllm"]["vllm-bnb-plugin"] == "0.0.3"
    assert "vllm_bnb_plugin" not in {install._norm(n) for n in gpu["training"]}


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=lambda p: p.name)
def test_every_gpu_profile_feature_has_its_packages_installed(profile, pinned_requirements):
    """The install for a profile (the sections it gets on an H100) provides every
    distribution its features need: the pins plus what the pinned packages declare."""
    gpu_pins = install.read_pins(ROOT / "requirements-gpu.txt")
    h100 = install.GpuFacts("NVIDIA H100 80GB HBM3", "580.159.04", (9, 0))
    plan = install.plan_install("08_export_and_serve", profile, h100)
    sections = {s: gpu_pins[s] for s in plan.sections}
    sections[""] = install.read_pins(ROOT / "requirements.txt")[""]
    gaps = install.unpinned_needs(profile, _provided(sections, pinned_requirements))
    assert gaps == {}, f"profile {profile.name!r} needs unpinned packages: {gaps}"


def test_a_missing_plugin_pin_is_reported(pinned_requirements):
    """The check above fails when the plugin is not pinned (today's bug, reproduced)."""
    sections = install.read_pins(ROOT / "requirements-gpu.txt")
    sections["vllm"] = {k: v for k, v in sections["vllm"].items() if k != "vllm-bnb-plugin"}
    gaps = install.unpinned_needs(PROFILES["3b"], _provided(sections, pinned_requirements))
    assert gaps == {"4bit+vllm": ["vllm-bnb-plugin"]}
    # and profiles without vLLM do not need it
    assert "4bit+vllm" not in install.unpinned_needs(
        PROFILES["20b"], _provided(sections, pinned_requirements)
    )


def test_pins_satisfy_every_pinned_package_requirements(pinned_requirements):
    """No pin is excluded by another pinned package's metadata (e.g. vLLM's torch==2.14.0,
    the plugin's bitsandbytes>=0.48.1, Unsloth's trl<=1.15.0)."""
    pins = _all_pins()
    conflicts = [
        f"{dist} requires {req} but {req.name}=={pins[install._norm(req.name)]} is pinned"
        for dist, reqs in pinned_requirements.items()
        for req in reqs
        if install._norm(req.name) in pins
        and not req.specifier.contains(pins[install._norm(req.name)], prereleases=True)
    ]
    assert conflicts == []
    checked = {install._norm(r.name) for reqs in pinned_requirements.values() for r in reqs}
    assert {"torch", "bitsandbytes", "transformers", "trl"} <= checked & set(pins)


def _zoo_source(member: str) -> ast.Module:
    pins = _all_pins()
    return ast.parse(ad.Source(ad.wheel_path("unsloth-zoo", pins["unsloth-zoo"])).read(member))


def _strings(tree: ast.AST) -> set[str]:
    return {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def test_vllm_4bit_plugin_is_what_unsloth_zoo_imports():
    """unsloth_zoo imports the bitsandbytes layer from the plugin's module on vLLM >= 0.28:
    the feature table names that module's distribution."""
    tree = _zoo_source("unsloth_zoo/vllm_utils.py")
    modules = {s for s in _strings(tree) if s.endswith(".bitsandbytes")}
    assert "vllm_bnb_plugin.bitsandbytes" in modules
    dists = {install._norm(m.split(".")[0]) for m in modules if not m.startswith("vllm.")}
    assert dists <= {install._norm(d) for d in install.FEATURE_PACKAGES["4bit+vllm"]}


def test_gguf_converter_packages_are_pinned_or_declared(pinned_requirements):
    """notebook 08's GGUF export runs llama.cpp's converter, whose Python packages unsloth_zoo
    lists in _CONVERTER_PYTHON_DEPS (and pip-installs mid-export when missing)."""
    tree = _zoo_source("unsloth_zoo/llama_cpp.py")
    deps = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", "") == "_CONVERTER_PYTHON_DEPS" for t in node.targets)
    )
    assert {install._norm(d) for d in deps} <= {
        install._norm(d) for d in install.FEATURE_PACKAGES["gguf"]
    }
    gpu = install.read_pins(ROOT / "requirements-gpu.txt")
    provided = _provided({"training": gpu["training"], "gguf": gpu["gguf"]}, pinned_requirements)
    assert {install._norm(d) for d in deps} <= provided


def test_torch_pin_is_a_cuda13_build_so_the_driver_floor_is_580(pinned_requirements):
    """vLLM pins the torch version; PyPI's build of it is for CUDA 13 (nvidia-*-cu13 in vLLM's
    own requirements), so the install refuses drivers older than 580."""
    vllm_reqs = {install._norm(r.name): r for r in pinned_requirements["vllm"]}
    assert str(vllm_reqs["torch"].specifier) == f"=={_all_pins()['torch']}"
    assert any(name.endswith("cu13") or "cu13" in str(r) for name, r in vllm_reqs.items())
    assert install.CUDA13_MIN_DRIVER == 580


# Which extra of pyproject.toml installs each section of requirements-gpu.txt.
EXTRA_OF_SECTION = {"training": "gpu", "vllm": "gpu", "gguf": "gguf"}


def test_pyproject_extras_pin_what_requirements_gpu_pins():
    """``pip install .[gpu]`` gets what ``make setup`` and the setup cell install for training
    and vLLM (torch, unsloth, unsloth_zoo, bitsandbytes, vllm, vllm-bnb-plugin), at the same
    versions; ``.[gguf]`` notebook 08's converter packages. A new section needs an extra."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    sections = install.read_pins(ROOT / "requirements-gpu.txt")
    assert set(sections) == set(EXTRA_OF_SECTION), "map the new section to an extra"
    for extra in set(EXTRA_OF_SECTION.values()):
        listed = {}
        for line in extras[extra]:
            req = Requirement(line)
            listed[install._norm(req.name)] = str(req.specifier)
        expected = {
            install._norm(name): f"=={version}"
            for section, to in EXTRA_OF_SECTION.items()
            if to == extra
            for name, version in sections[section].items()
        }
        assert listed == expected, f"pyproject.toml's {extra!r} extra"
