"""doctor: invented runtimes (a T4 without bf16, an old driver, a mismatched vLLM, no token,
no GPU, no network) judged with the messages a learner reads, and the real command on this
CPU machine (through ``cli.main`` in this process, ``run_cli`` in tests/conftest.py: doctor
reads HF_TOKEN, HF_HUB_OFFLINE, HF_HOME and the profile from the environment when it runs)."""

from __future__ import annotations

import http.server
import os
import re
import threading

import pytest

from conftest import run_cli
from medreason_lib import cli
from medreason_lib.models import memory
from medreason_lib.runtime import doctor
from medreason_lib.runtime.install import GpuFacts

CORE, GPU_PINS = doctor._pins()
PINNED = {name: CORE.get(name) or GPU_PINS[name] for name in doctor.PACKAGES}
T4 = GpuFacts("Tesla T4", "580.82.07", (7, 5))
L4 = GpuFacts("NVIDIA L4", "580.82.07", (8, 9))
H100 = GpuFacts("NVIDIA H100 80GB HBM3", "580.82.07", (9, 0))


def facts(gpu=T4, memory_gb=15.0, **changes) -> doctor.Facts:
    """A healthy runtime with the pinned stack; ``changes`` break one thing."""
    versions = dict(PINNED)
    if gpu is T4:
        versions["vllm"] = None  # the course installs no vLLM on a T4
    versions |= changes.pop("versions", {})
    base = dict(gpu=gpu, gpu_memory_gb=memory_gb, cuda_driver="13.0", torch_cuda="13.0",
                versions=versions, free_disk_gb=80.0, disk_path="/content", hf_token=True,
                hub_seconds=0.3)  # fmt: skip
    return doctor.Facts(**(base | changes))


def lines(d: doctor.Diagnosis) -> dict[str, str]:
    return {ln[: doctor.FACT_WIDTH].strip(): ln[doctor.FACT_WIDTH :] for ln in d.lines}


def problem_lines(d: doctor.Diagnosis) -> list[str]:
    return [ln for ln in str(d).splitlines() if ln.startswith("PROBLEM: ")]


def test_a_healthy_t4_is_ready_for_3b_without_bf16_or_vllm():
    d = doctor.diagnose(facts())
    assert d.ok, str(d)
    shown = lines(d)
    assert shown["GPU"] == "Tesla T4, 15.0 GB, compute capability 7.5"
    assert shown["bf16"].startswith("no (compute capability 7.5 < 8.0)")
    assert "not needed here" in shown["vllm"] and "T4 recipe" in shown["vllm"]
    assert shown["profile"] == "3b (picked: GPU 15.0 GB; generates without vLLM (not installed))"
    plan = memory.plan_for_profile(d.profile, gpu=15.0, bf16=False)
    assert f"{plan.required_gb:.1f} GB on 15.0 GB: fits" in shown["memory plan"]
    assert d.profile.use_vllm is False
    assert str(d).splitlines()[-1] == "profile '3b': ready"


def test_gpt_oss_on_a_t4_is_too_big_and_impractical():
    d = doctor.diagnose(facts(requested_profile="20b"))
    problems = problem_lines(d)
    assert len(problems) == 2, str(d)
    assert "does not fit this GPU with the planner's margin" in problems[0]
    assert "lower first num_generations" in problems[0] and "a GPU such as L4" in problems[0]
    assert "impractical" in problems[1] and "float32" in problems[1]
    assert "Use a GPU with bf16" in problems[1]
    assert str(d).splitlines()[-1] == "profile '20b': NOT ready, 2 problems"


def test_a_mismatched_vllm_names_the_pin_and_the_fix():
    d = doctor.diagnose(facts(gpu=L4, memory_gb=22.5, versions={"vllm": "0.11.2"}))
    (line,) = problem_lines(d)
    pin = PINNED["vllm"]
    assert line.startswith(f"PROBLEM: vllm 0.11.2 is installed, the course pins {pin}. Fix: ")
    assert f"pip install 'vllm=={pin}'" in line and "never upgrade one" in line
    assert lines(d)["vllm"] == f"0.11.2 (GPU pin {pin}) MISMATCH"
    # on a T4 the course runs without vLLM: the fix is to remove it, not to upgrade it
    (line,) = problem_lines(doctor.diagnose(facts(versions={"vllm": "0.11.2"})))
    assert "Fix: pip uninstall -y vllm" in line and "T4 recipe" in line


def test_unsloth_zoo_and_the_bitsandbytes_plugin_are_checked(monkeypatch):
    """unsloth_zoo is half of Unsloth (pinned with it); vllm-bnb-plugin is what vLLM >= 0.28
    needs for a 4-bit base with fast_inference (unsloth_zoo raises without it)."""
    assert {"unsloth_zoo", "vllm-bnb-plugin"} <= set(doctor.PACKAGES)
    l4 = dict(gpu=L4, memory_gb=22.5)
    d = doctor.diagnose(facts(**l4))
    assert d.ok, str(d)
    assert (
        lines(d)["unsloth_zoo"] == f"{PINNED['unsloth_zoo']} (GPU pin {PINNED['unsloth_zoo']}) ok"
    )
    assert lines(d)["vllm-bnb-plugin"].endswith(" ok")
    (line,) = problem_lines(doctor.diagnose(facts(**l4, versions={"unsloth_zoo": None})))
    assert line.startswith("PROBLEM: unsloth_zoo is not installed (requirements-gpu.txt pins")
    (line,) = problem_lines(doctor.diagnose(facts(**l4, versions={"unsloth_zoo": "2026.1.1"})))
    assert f"unsloth_zoo 2026.1.1 is installed, the course pins {PINNED['unsloth_zoo']}" in line
    (line,) = problem_lines(doctor.diagnose(facts(**l4, versions={"vllm-bnb-plugin": None})))
    assert line.startswith("PROBLEM: vllm-bnb-plugin is not installed")
    # only a 4-bit base with vLLM needs it: not on a T4 (no vLLM), not with a 16-bit base
    d = doctor.diagnose(facts(versions={"vllm-bnb-plugin": None}))
    assert d.ok and "not needed here" in lines(d)["vllm-bnb-plugin"]
    from medreason_lib.settings.profiles import PROFILES

    monkeypatch.setitem(PROFILES, "3b", PROFILES["3b"].replace(load_in_4bit=False))
    d = doctor.diagnose(facts(**l4, versions={"vllm-bnb-plugin": None}))
    assert d.ok and "16-bit" in lines(d)["vllm-bnb-plugin"], str(d)


def test_a_driver_below_580_is_refused_with_the_install_advice():
    d = doctor.diagnose(facts(gpu=GpuFacts("Tesla T4", "550.54.15", (7, 5)), cuda_driver="12.4"))
    (line,) = problem_lines(d)
    assert line.startswith("PROBLEM: NVIDIA driver 550.54.15 is older than 580. Fix: ")
    assert "Pick a newer runtime" in line and "cu128" in line
    assert lines(d)["driver/CUDA"] == "driver 550.54.15 (CUDA 12.4); torch built for CUDA 13.0"
    # the packages are still judged, as they would be installed after the fix
    d = doctor.diagnose(
        facts(
            gpu=GpuFacts("NVIDIA L4", "550.54.15", (8, 9)), memory_gb=22.5, versions={"vllm": None}
        )  # fmt: skip
    )
    assert any("vllm is not installed" in ln for ln in problem_lines(d))


def test_missing_token_is_a_warning_and_a_token_is_never_shown(monkeypatch, tmp_path):
    d = doctor.diagnose(facts(hf_token=False))
    assert d.ok and lines(d)["HF_TOKEN"] == "not set"
    (warning,) = [ln for ln in str(d).splitlines() if ln.startswith("warning: ")]
    assert warning.startswith("warning: HF_TOKEN is not set. Fix: ")
    assert "set HF_TOKEN" in warning and "prefetch" in warning
    assert lines(doctor.diagnose(facts(hf_token=False, saved_login=True)))["HF_TOKEN"] == (
        "not set; a saved login exists (hf auth login)"
    )
    monkeypatch.setenv("HF_TOKEN", "hf_secretTOKEN123")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    gathered = doctor.gather("tiny", check_hub=False)
    text = str(doctor.diagnose(gathered))
    assert gathered.hf_token and f"{'HF_TOKEN':<{doctor.FACT_WIDTH}}set (not shown)" in text
    assert "secretTOKEN" not in text and "secretTOKEN" not in repr(gathered)


def test_a_gpu_profile_without_a_gpu_or_the_hub():
    d = doctor.diagnose(facts(gpu=None, memory_gb=None, requested_profile="3b",
                              hub_error="https://huggingface.co: timeout"))  # fmt: skip
    problems = problem_lines(d)
    assert "profile '3b' needs an NVIDIA GPU" in problems[0] and "T4 GPU" in problems[0]
    assert "the hub cannot be reached" in problems[1] and "HF_HUB_OFFLINE=1" in problems[1]
    assert (
        lines(d)["memory plan"] == f"no GPU; smallest that fits: {memory.smallest_gpu(d.profile)}"
    )
    # tiny needs neither
    tiny = doctor.diagnose(facts(gpu=None, memory_gb=None, hub_error="x: timeout"))
    assert tiny.ok and tiny.profile.name == "tiny"
    assert "the tiny profile does not need it" in lines(tiny)["hub"]


def test_offline_without_a_prefetch_says_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    gathered = doctor.gather("3b")
    assert gathered.offline and gathered.hub_seconds is None  # no request
    assert gathered.cached and not any(gathered.cached.values())
    d = doctor.diagnose(gathered)
    (line,) = [ln for ln in problem_lines(d) if "not cached" in ln]
    assert f"{len(gathered.cached)} repositories profile '3b' reads" in line
    assert "unsloth/Qwen2.5-3B-Instruct-unsloth-bnb-4bit" in line
    assert "python -m medreason_lib prefetch --profile 3b" in line
    ready = facts(offline=True, hub_seconds=None, cached={"a": True, "b": True})
    assert lines(doctor.diagnose(ready))["prefetched"] == "all 2 repositories of '3b'"


def test_a_small_disk_and_a_gpu_that_is_too_small():
    need, export = doctor.disk_needed_gb(doctor.PROFILES["3b"])
    assert 0 < need < export
    d = doctor.diagnose(facts(free_disk_gb=need / 2))
    assert any("GB free, about" in ln and "HF_HOME" in ln for ln in problem_lines(d))
    d = doctor.diagnose(facts(free_disk_gb=(need + export) / 2))
    assert d.ok and any("notebook 08's merged export" in f.what for f in d.findings)
    d = doctor.diagnose(facts(gpu=H100, memory_gb=79.6, requested_profile="8b"))
    assert d.ok and "fits" in lines(d)["memory plan"]
    d = doctor.diagnose(facts(requested_profile="8b"))  # 8b on a T4
    assert "profile '8b' does not fit" in problem_lines(d)[0]


class _Head(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_HEAD(self):
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_hub_reachability_is_one_head_request():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Head)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        assert doctor.hub_error(url) is None
        _Head.status = 404  # any HTTP answer means the hub is reachable
        assert doctor.hub_error(url) is None
    finally:
        server.shutdown()
        server.server_close()
    error = doctor.hub_error(url, timeout=2)
    assert error is not None and error.startswith(url) and "refused" in error.lower()


# --------------------------------------------------------------------------- the real command


def _run(*args, **env):
    """``python -m medreason_lib doctor ARGS`` with no token or profile in the environment
    but ``env``, the hub offline: exit status, stdout, stderr."""
    base = {"HF_TOKEN": None, "MEDREASON_PROFILE": None, "HF_HUB_OFFLINE": "1"}
    return run_cli("doctor", *args, env=base | env)


def test_the_real_doctor_on_this_cpu_machine():
    done = _run(MEDREASON_PROFILE="tiny", HF_TOKEN="hf_doNotPrintMe")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    width = doctor.FACT_WIDTH
    labels = [ln[:width].strip() for ln in out[:-1] if not ln.startswith(("PROBLEM", "warning"))]
    expected = ["GPU", "driver/CUDA", "bf16", *doctor.PACKAGES, "disk", "HF_TOKEN", "hub",
                "profile", "memory plan"]  # fmt: skip
    assert labels == expected, done.stdout
    assert out[-1] == "profile 'tiny': ready" and "doNotPrintMe" not in done.stdout
    assert re.search(r"^disk +\d+\.\d GB free at ", done.stdout, re.M)
    assert f"{'hub':<{width}}offline (HF_HUB_OFFLINE=1)" in done.stdout
    for name in ("transformers", "trl", "peft"):
        assert re.search(rf"^{name} +{re.escape(CORE[name])} \(course pin ", done.stdout, re.M)
    # a GPU profile on this machine: exit status 1, one line per problem with its fix
    done = _run("--profile", "3b", HF_HOME=str(os.devnull) + "-nothing-here")
    assert done.returncode == 1, done.stdout
    problems = [ln for ln in done.stdout.splitlines() if ln.startswith("PROBLEM: ")]
    assert problems and all(". Fix: " in ln for ln in problems)
    assert any("needs an NVIDIA GPU" in ln for ln in problems)
    assert done.stdout.splitlines()[-1].startswith("profile '3b': NOT ready")


def test_doctor_and_prefetch_have_help(capsys):
    for command in ("doctor", "prefetch"):
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: python -m medreason_lib {command}") and "--profile" in out
