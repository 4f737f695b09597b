"""Tests of the GPU smoke run's CPU-checkable parts (issue 15).

- ``benchmarks/gpu_smoke.py --dry-run`` runs every stage (build, train, evaluate, export) on a
  CPU; each stage must succeed and the JSON must carry the fields the lead reads after a GPU
  run. It runs the script's ``main`` in this process (a new process would spend ~10 s
  importing torch/transformers/trl again); that the file also starts as the device command
  starts it, ``python benchmarks/gpu_smoke.py ...``, is checked with ``--help``.
- The shipped architecture configs agree with the memory planner's ``SPECS``.
- ``benchmarks/prepare_gpu_wheels.py``: the wheel-tag check and the trimming keep a wheel
  installable (RECORD matches the files kept).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from medreason_lib.models.memory import SPECS

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """``gpu_smoke.main(["--dry-run", ...])`` in this process, on one torch thread. It sets
    environment variables (offline, ``MEDREASON_RUNS``) and swaps ``sys.stdout``/``stderr``
    for a tee to its log; all of them, and torch's thread count, are put back afterwards."""
    import torch

    out = tmp_path_factory.mktemp("smoke")
    smoke = _module("gpu_smoke")
    saved_env, threads = dict(os.environ), torch.get_num_threads()
    streams = sys.stdout, sys.stderr
    os.environ.update(MEDREASON_PROFILE="tiny", HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    try:
        args = ["--dry-run", "--out", str(out), "--work-dir", str(out)]
        code = smoke.main(args)
    finally:
        sys.stdout, sys.stderr = streams
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(saved_env)
    result = json.loads((out / "gpu_smoke.json").read_text())
    return code, result, out


def test_the_script_starts_as_the_device_command_starts_it():
    """The device runs ``python benchmarks/gpu_smoke.py ...`` from the checkout: the file
    runs as a script (its own ``sys.path`` set-up, ``__main__``) and parses its options."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_smoke.py"), "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--dry-run" in proc.stdout and "--check-imports" in proc.stdout


def test_dry_run_runs_every_stage(dry_run):
    code, result, out = dry_run
    assert code == 0, (out / "gpu_smoke.log").read_text()[-4000:]
    assert result["mode"] == "dry-run"
    assert result["failed"] == []
    assert result["imports"]["ok"]
    stages = result["models"]["tiny"]["stages"]
    assert list(stages) == ["build", "train", "evaluate", "export", "sft", "dpo", "cpt"]
    for name, entry in stages.items():
        assert entry["ok"], f"{name}: {entry.get('traceback')}"
        assert entry["seconds"] >= 0
    assert "GPU smoke summary" in (out / "gpu_smoke.log").read_text()


def test_dry_run_records_what_the_gpu_run_reports(dry_run):
    _, result, _ = dry_run
    model = result["models"]["tiny"]
    build = model["stages"]["build"]["result"]
    # the built model keeps the real vocabulary, and its config carries the tokenizer's ids
    assert build["vocab_size"] == 151936
    assert build["tokenizer_len"] < build["vocab_size"]
    assert build["pad_id"] != build["eos_id"]
    train = model["stages"]["train"]["result"]
    assert train["global_step"] == model["profile"]["max_steps"] == 3
    assert len(train["step_times"]) == 3 and all(t > 0 for t in train["step_times"])
    assert train["seconds_per_step"] > 0
    assert model["stages"]["evaluate"]["result"]["items"] == 4
    assert model["stages"]["export"]["result"]["merged_safetensors_gb"] > 0
    planner = model["planner"]
    assert planner["total_gb"] > planner["torch_view_gb"] > 0
    assert set(planner["breakdown_gb"]) >= {"weights", "lora", "kv_cache", "logits"}
    for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "unsloth"):
        assert name in result["versions"]
    assert result["gpu"] == {"name": None, "memory_gb": None}


@pytest.mark.parametrize(
    "config, hub_id",
    [
        ("qwen2.5-3b", "Qwen/Qwen2.5-3B-Instruct"),
        ("qwen3-8b", "Qwen/Qwen3-8B"),
        ("gpt-oss-20b", "openai/gpt-oss-20b"),
    ],
)
def test_configs_match_the_planner(config, hub_id):
    cfg = json.loads((BENCH / "configs" / f"{config}.json").read_text())
    spec = SPECS[hub_id]
    assert cfg["num_hidden_layers"] == spec.layers
    assert cfg["hidden_size"] == spec.hidden
    assert cfg["intermediate_size"] == spec.intermediate
    assert cfg["num_attention_heads"] == spec.heads
    assert cfg["num_key_value_heads"] == spec.kv_heads
    assert cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"]) == spec.head_dim
    assert cfg["vocab_size"] == spec.vocab
    assert cfg["tie_word_embeddings"] == spec.tied_embeddings
    assert cfg.get("num_local_experts", 0) == spec.experts
    assert "quantization_config" not in cfg  # random bf16 weights: nothing to dequantise


def test_smoke_model_folders_resolve_in_the_planner():
    """The built folders are named so that pre-flight's plan_for_profile finds the model:
    a profile pointing at the folder plans exactly as the profile on the hub id does."""
    from medreason_lib.models import memory
    from medreason_lib.settings.profiles import PROFILES

    smoke = _module("gpu_smoke")
    for spec in smoke.MODELS.values():
        hub = PROFILES[spec["profile"]]
        local = hub.replace(model_id=f"/tmp/gpu-smoke-x/{spec['folder']}")
        assert memory.plan_for_profile(local).total_gb == memory.plan_for_profile(hub).total_gb


@pytest.mark.parametrize(
    "filename, ok",
    [
        ("trl-1.15.0-py3-none-any.whl", True),
        ("multiprocess-0.70.19-py312-none-any.whl", True),
        ("bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl", True),
        ("rapidfuzz-3.14.6-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", True),
        ("rapidfuzz-3.14.6-cp311-cp311-manylinux_2_17_x86_64.whl", False),
        ("bitsandbytes-0.50.2-py3-none-manylinux_2_24_aarch64.whl", False),
        ("bitsandbytes-0.50.2-py3-none-win_amd64.whl", False),
        ("multiprocess-0.70.19-py313-none-any.whl", False),
    ],
)
def test_wheel_tags(filename, ok):
    assert _module("prepare_gpu_wheels").wheel_ok(filename) is ok


def test_trim_rewrites_record(tmp_path):
    prep = _module("prepare_gpu_wheels")
    src = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    files = {
        "bitsandbytes/__init__.py": b"x = 1\n",
        "bitsandbytes/libbitsandbytes_cuda130.so": b"\0" * 10,
        "bitsandbytes/libbitsandbytes_cuda128.so": b"\0" * 20,
        "bitsandbytes/libbitsandbytes_cpu.so": b"\0" * 5,
    }
    record = "bitsandbytes-0.50.2.dist-info/RECORD"
    with zipfile.ZipFile(src, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(record, "\n".join(f"{n},," for n in files) + f"\n{record},,\n")
    dest = tmp_path / "out.whl"
    assert prep.trim(src, dest, prep._drop_bnb) == 1
    with zipfile.ZipFile(dest) as z:
        names = set(z.namelist())
        lines = z.read(record).decode().splitlines()
        assert "bitsandbytes/libbitsandbytes_cuda128.so" not in names
        assert {"bitsandbytes/libbitsandbytes_cuda130.so", "bitsandbytes/__init__.py"} <= names
        listed = {line.split(",")[0] for line in lines}
        assert listed == names  # every file kept is listed, nothing dropped is
        for line in lines:
            name, digest, size = line.split(",")
            if name == record:
                continue
            data = z.read(name)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == f"sha256={want.decode()}" and int(size) == len(data)
