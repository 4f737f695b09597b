"""The runtime rehearsal (``make rehearse``, tools/rehearsal): its stand-ins cannot drift from
the pinned libraries, and its simulated runtimes show the course what a GPU would.

The whole rehearsal (every notebook under every runtime) is ``make rehearse``, which CI runs
after ``make test``; these tests keep to what takes seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tools.api_drift as ad
from tools.rehearsal import contracts, runner, simulate

ROOT = Path(__file__).resolve().parents[2]
PINS = ad.gpu_pins()
WHEEL_OF = {"unsloth": "unsloth", "unsloth_zoo": "unsloth_zoo"}


def _source(dist: str) -> ad.Source:
    try:
        if dist == "vllm":
            return ad.Source(ad.vllm_sources_path(PINS["vllm"]))
        return ad.Source(ad.wheel_path(dist, PINS[ad._normalise(dist)]))
    except FileNotFoundError as missing:  # not a skip: `make test` fetches the sources
        pytest.fail(str(missing), pytrace=False)


@pytest.mark.parametrize("name", sorted(contracts.CONTRACTS))
def test_each_contract_cites_a_line_of_the_pinned_source(name):
    """The line a stand-in's rule comes from is still in the pinned release: when an upgrade
    removes it, this fails and the stand-in's rule must be checked against the new source."""
    contract = contracts.CONTRACTS[name]
    text = _source(contract.dist).read(contract.path)
    lines = [line.strip() for line in text.splitlines()]
    assert contract.cited.strip() in lines, (
        f"contract {name!r}: {contract.path} of the pinned {contract.dist} no longer has the "
        f"line {contract.cited!r}; re-read the source and update the stand-in and the citation"
    )


def test_every_rule_a_stand_in_enforces_is_a_cited_contract():
    """Each ``violation("<name>", ...)`` and ``contract ...`` comment in the stand-ins names a
    contract of ``CONTRACTS`` (a rule with no citation could enforce anything)."""
    import re

    named = set()
    for path in (ROOT / "tools" / "rehearsal" / "standins").rglob("*.py"):
        text = path.read_text()
        named |= set(re.findall(r'violation\(\s*"([a-z0-9-]+)"', text))
        named |= set(re.findall(r"contract ([a-z0-9-]+(?:-[a-z0-9]+)*)", text))
    unknown = named - set(contracts.CONTRACTS) - {"gpu-unused"}
    assert named and not unknown, f"stand-in rules without a cited contract: {sorted(unknown)}"


def test_stand_ins_carry_the_pinned_versions():
    found = {}
    for meta in (ROOT / "tools" / "rehearsal" / "standins").glob("*/*.dist-info/METADATA"):
        fields = dict(line.split(": ", 1) for line in meta.read_text().splitlines() if ": " in line)
        found[ad._normalise(fields["Name"])] = fields["Version"]
    assert set(found) == {ad._normalise(d) for d in simulate.STAND_INS}
    for dist, version in found.items():
        assert PINS[dist] == version, (
            f"stand-in {dist} {version}, requirements-gpu.txt {PINS[dist]}"
        )


def _in_runtime(runtime: str, code: str, tmp_path, installed: dict | None = None):
    """Run ``code`` in a fresh Python process of ``runtime`` (the rehearsal's environment),
    with ``installed`` distributions already installed; returns (process, state)."""
    env = runner.runtime_env(runtime, tmp_path)
    state = {"installed": installed or {}, "pip_calls": [], "violations": [], "events": []}
    (tmp_path / "state.json").write_text(json.dumps(state))
    env["MEDREASON_NOTEBOOK"] = "test"
    env["MEDREASON_CACHE"] = os.environ.get("MEDREASON_CACHE", "")
    done = subprocess.run(
        [sys.executable, "-c", code], env={k: v for k, v in env.items() if v},
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    return done, json.loads((tmp_path / "state.json").read_text())


# what a Colab setup cell does before importing the course: clone it, put it on sys.path
CLONED = f"import os, sys; os.symlink({str(ROOT)!r}, 'course'); sys.path.insert(0, 'course')\n"


def test_a_t4_runtime_shows_the_course_a_t4_and_torch_its_cpu(tmp_path):
    code = CLONED + (
        "import torch\n"
        "from medreason_lib.runtime import install\n"
        "from medreason_lib.training import config as training_config\n"
        "print(install.read_gpu())\n"
        "print(torch.cuda.get_device_capability(), torch.cuda.is_bf16_supported())\n"
        "print(training_config.precision_flags())\n"
        "print(torch.zeros(1).device, torch.backends.cuda.is_built())\n"
    )
    runtime = {d: "pinned" for d in simulate.HIDDEN}  # after the setup cell's install
    done, _ = _in_runtime("colab-t4", code, tmp_path, runtime)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout.splitlines()
    assert "Tesla T4" in out[0] and "(7, 5)" in out[0]
    assert out[1] == "(7, 5) True"  # torch 2.x counts emulation: True on a T4
    assert "'fp16': True" in out[2] and "'bf16': False" in out[2]
    assert out[3] == "cpu False"  # the tensors stay on this machine's CPU


def test_a_fresh_colab_runtime_lacks_what_the_setup_cell_installs(tmp_path):
    missing = "print(find_spec('trl') is None, find_spec('unsloth') is None)\n"
    code = (
        "import subprocess, sys\n"
        "from importlib.util import find_spec\n"
        + missing
        + "subprocess.run([sys.executable, '-m', 'pip', 'install', 'trl==1.15.0', "
        "'unsloth==2026.10.9'], check=True)\n"
        + missing
        + "import importlib.metadata as m; print(m.version('unsloth'))\n"
    )
    done, state = _in_runtime("colab-t4", code, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["True True", "False False", PINS["unsloth"]]
    assert state["pip_calls"][0][2][-2:] == ["trl==1.15.0", "unsloth==2026.10.9"]


def test_unsloth_stand_in_enforces_import_order_and_the_4bit_vllm_plugin(tmp_path):
    installed = {d: PINS[ad._normalise(d)] for d in ("unsloth", "unsloth_zoo", "vllm")}
    installed |= {d: "pinned" for d in simulate.HIDDEN}
    code = CLONED + (
        "import trl\n"
        "import unsloth\n"
        "from unsloth import FastLanguageModel\n"
        "try:\n"
        "    FastLanguageModel.from_pretrained('unsloth/Qwen2.5-3B-Instruct', "
        "load_in_4bit=True, fast_inference=True)\n"
        "except RuntimeError as err:\n"
        "    print('refused:', err)\n"
    )
    done, state = _in_runtime("colab-l4", code, tmp_path, installed)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Unsloth should be imported before [trl]" in done.stderr
    assert "refused: Unsloth: vLLM >= 0.28 moved bitsandbytes out of tree" in done.stdout
    broken = {v[1] for v in state["violations"]}
    assert broken == {"import-order", "4bit-vllm-needs-plugin"}
