#!/usr/bin/env python3
"""GPU smoke run: the course's own GPU code path on a real GPU, in minutes, offline (issue 15).

For each model (default ``qwen2.5-3b`` then ``qwen3-8b``; ``gpt-oss-20b`` only when asked) it

1. **build**: creates a random-init model of the real architecture from
   ``benchmarks/configs/<model>.json`` (real vocabulary size) directly on the GPU in bf16, and
   saves it with the course's tiny tokenizer of the same chat family (``medreason_lib.models.tiny``:
   trained on the bundled data, ids < 3072 < the real vocabulary) into a folder named like
   the hub model (``.../Qwen2.5-3B-Instruct``), so the memory planner (pre-flight's
   ``memory.plan_for_profile``, which keys models by the last part of their name) recognises
   the architecture. bos/eos/pad in the saved config are the tokenizer's.
2. **train**: ``training.train`` on the GPU profile (``PROFILES["3b"|"8b"|"20b"]``) with
   ``model_id`` = that folder, ``use_vllm=False`` (vLLM cannot travel: HF generation),
   ``data_source="bundled"`` and a few steps: pre-flight, Unsloth 4-bit load +
   ``get_peft_model`` (``models.load_for_training``), TRL's GRPOTrainer with the course's
   rewards and ``grpo_config``.
3. **evaluate**: ``evaluation.evaluate_model`` on a few bundled benchmark items, the adapter
   applied (``models.load_for_eval``: Unsloth + peft, HF generation).
4. **export**: ``export.save_adapter`` and ``export.merge`` (Unsloth's
   ``save_pretrained_merged(..., save_method="merged_16bit")`` on the local base); by default
   for the first model only (``--merge``), never for gpt-oss (disk).

Every stage is timed; an exception prints its traceback, is recorded, and the run moves on
(the next stage when it can, else the next model); the exit code is 1 when any stage failed.
Per stage it records torch's peak allocated/reserved memory (peaks reset per stage) and
``torch.cuda.memory_allocated()`` when the course call has returned, then after
``gc.collect()`` + ``empty_cache()`` (issue 9 item 2: nothing should stay alive). Per model it
prints the planner's figure for the same settings (``memory.plan_for_profile``) next to the
measured training peak, seconds per GRPO step (TRL's ``step_time`` in ``metrics.csv``), and
the versions and GPU. Everything goes to ``<out>/gpu_smoke.json`` (rewritten after every stage,
so a timeout keeps what finished) and ``<out>/gpu_smoke.log``.

``--dry-run``: the same stages on a CPU in well under a minute: the build code on a shrunken
copy of the Qwen2.5-3B config (real vocabulary), then train/evaluate/export on the tiny
profile (``medreason_lib.models.tiny``'s model; no Unsloth). ``tests/gpu_path/test_gpu_smoke.py``
runs it.
``--check-imports``: only import Unsloth (first), trl, bitsandbytes (its native library) and
the course modules, and print versions.

Source facts relied on (unsloth/unsloth_zoo 2026.10.9, trl 1.15.0, bitsandbytes 0.50.2):
- ``import unsloth`` must precede trl/transformers (``models.prepare_runtime`` does it first).
- Offline: unsloth's ``has_internet()`` and its statistics ping return early with
  ``HF_HUB_OFFLINE=1``/``TRANSFORMERS_OFFLINE=1``; the statistics call also with
  ``UNSLOTH_DISABLE_STATISTICS`` set (``models/_utils.py``); unsloth_zoo turns hf_transfer off
  when ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is set (``__init__.py``).
- Unsloth loads a local folder as a model (``os.path.isdir`` branches in ``models/loader.py``)
  and its 16-bit merge reads the base's safetensors from a local folder
  (``saving_utils.merge_and_overwrite_lora``: "Detected local model directory").
- TRL's GRPOTrainer logs ``step_time`` (seconds per optimizer step) with every step's metrics.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / "configs"
if str(REPO) not in sys.path:  # the device machine has the checkout, not an installed package
    sys.path.insert(0, str(REPO))

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "UNSLOTH_DISABLE_STATISTICS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
GiB = 2**30

# name -> GPU profile, folder name (the hub name, which the memory planner resolves),
# chat family, least seconds of budget to start it, whether to merge (gpt-oss: a bf16 random
# model is 42 GB on disk; a merged copy beside it would not fit the device's 64 GB disk).
MODELS = {
    "qwen2.5-3b": dict(profile="3b", folder="Qwen2.5-3B-Instruct", family="qwen2", min_s=100),
    "qwen3-8b": dict(profile="8b", folder="Qwen3-8B", family="qwen3", min_s=150),
    "gpt-oss-20b": dict(profile="20b", folder="gpt-oss-20b", family="gpt-oss", min_s=300),
}
NO_MERGE = {"gpt-oss-20b": "bf16 random weights (42 GB) + a merged copy exceed the 64 GB disk"}
DEFAULT_MODELS = ("qwen2.5-3b", "qwen3-8b")
# The merge code path is the same for every model and costs a reload plus a full 16-bit write;
# by default only the first model merges, so the 8B run fits the time budget.
DEFAULT_MERGE = ("qwen2.5-3b", "tiny")
# --dry-run: the build code on a shrunken Qwen2.5-3B config (the real vocabulary kept)
DRY_SHRINK = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
STAGES = ("build", "train", "evaluate", "export", "sft", "dpo", "cpt")
# --as: the cards the H100 can pass for (issue 21). Unsloth and the course then read this
# compute capability (a T4's 7.5 runs the float16 path for real) and name, and the process may
# use this much of the GPU's memory (torch.cuda.set_per_process_memory_fraction).
AS_CARDS = {
    "t4": {"name": "Tesla T4", "capability": (7, 5), "memory_gb": 15.0},
    "l4": {"name": "NVIDIA L4", "capability": (8, 9), "memory_gb": 22.5},
}
VERSIONS = (
    "torch", "transformers", "trl", "peft", "accelerate", "datasets", "unsloth", "unsloth_zoo",
    "bitsandbytes", "triton", "tokenizers",
)  # fmt: skip


class Tee:
    """Write to the terminal and a log file at once."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.log.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _gb(n: float | None) -> float | None:
    return None if n is None else round(n / GiB, 3)


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in VERSIONS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def gpu_info() -> dict:
    torch = _cuda()
    if torch is None:
        return {"name": None, "memory_gb": None}
    props = torch.cuda.get_device_properties(0)
    return {"name": torch.cuda.get_device_name(0), "memory_gb": _gb(props.total_memory)}


# --------------------------------------------------------------------------- stages


def check_imports(dry_run: bool) -> dict:
    """Import Unsloth first (GPU), then trl, bitsandbytes and the course's GPU-path modules."""
    from medreason_lib import models
    from medreason_lib.settings.profiles import PROFILES

    info: dict = {}
    if dry_run:
        info["unsloth"] = "not imported (CPU dry run)"
    else:
        models.prepare_runtime(PROFILES["3b"])  # `import unsloth`, before trl/transformers
        import bitsandbytes
        from bitsandbytes.cextension import lib

        info["bitsandbytes_native"] = type(lib).__name__  # CudaBNBNativeLibrary on a GPU
        info["bitsandbytes_file"] = getattr(getattr(lib, "_lib", None), "_name", None)
        info["bitsandbytes_path"] = str(Path(bitsandbytes.__file__).parent)
    import trl  # noqa: F401

    from medreason_lib import evaluation, export, training  # noqa: F401

    info["versions"] = versions()
    info["gpu"] = gpu_info()
    print(json.dumps(info, indent=2))
    return info


def build_model(config_file: Path, folder: Path, family: str, *, device: str, shrink=None):
    """Save a random-init model of ``config_file``'s architecture with the tiny tokenizer."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
    )

    from medreason_lib.models import tiny

    tokenizer = AutoTokenizer.from_pretrained(tiny.tiny_model_path(family))
    pad_id = tokenizer.convert_tokens_to_ids(tiny.PAD_TOKEN)
    eos_id = tokenizer.eos_token_id
    raw = json.loads(config_file.read_text()) | (shrink or {})
    raw |= {"bos_token_id": pad_id, "eos_token_id": eos_id, "pad_token_id": pad_id}
    if len(tokenizer) > raw["vocab_size"]:
        raise ValueError(
            f"{config_file}: vocab_size {raw['vocab_size']} < tokenizer {len(tokenizer)}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(raw, indent=2))
    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    began = time.perf_counter()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    init_s = time.perf_counter() - began
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id, eos_token_id=[eos_id, pad_id], pad_token_id=pad_id
    )
    params = sum(p.numel() for p in model.parameters())
    began = time.perf_counter()
    model.save_pretrained(folder)
    tokenizer.model_max_length = raw.get("max_position_embeddings", tokenizer.model_max_length)
    tokenizer.save_pretrained(folder)
    save_s = time.perf_counter() - began
    del model
    saved = json.loads((folder / "config.json").read_text())
    for key, want in (("pad_token_id", pad_id), ("vocab_size", raw["vocab_size"])):
        if saved.get(key) != want:
            raise ValueError(f"{folder}/config.json: {key} is {saved.get(key)}, expected {want}")
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    return {
        "folder": str(folder),
        "parameters_b": round(params / 1e9, 3),
        "vocab_size": raw["vocab_size"],
        "tokenizer_len": len(tokenizer),
        "pad_id": pad_id,
        "eos_id": eos_id,
        "init_seconds": round(init_s, 1),
        "save_seconds": round(save_s, 1),
        "safetensors_gb": _gb(size),
    }


def smoke_profile(name: str, folder: Path | None, args):
    """The course profile to run: the GPU profile on ``folder``, or the tiny one (dry run)."""
    from medreason_lib.settings.profiles import PROFILES

    small = dict(
        max_steps=args.steps,
        save_steps=10_000,
        logging_steps=1,
        data_source="bundled",
        train_splits={},
        train_size=args.train_size,
        eval_size=1,  # one item per benchmark, then the first --eval-items
    )
    if args.dry_run:
        return PROFILES["tiny"].replace(
            **small,
            sft_warmup_steps=0,
            num_generations=4,
            per_device_train_batch_size=4,
            max_completion_length=16,
        )
    return PROFILES[MODELS[name]["profile"]].replace(
        **small,
        model_id=str(folder),
        use_vllm=False,
        max_completion_length=args.completion_length,
    )


def train_stage(profile, run_dir: Path) -> dict:
    from medreason_lib import evaluation, training

    # keep_model: the trained model is evaluated in place ("before" with the adapter off,
    # "after" with it on), then closed: issue 9's one-model-at-a-time path
    run = training.train(
        profile, run_dir=run_dir, sample_every=0, disable_tqdm=True, keep_model=True
    )
    data = evaluation.profile_benchmarks(profile)
    data = data.select(range(min(2, len(data))))
    began = time.perf_counter()
    before, after = evaluation.evaluate_before_after(
        run.model, profile, base=run.base_model, adapter=run.adapter_dir, dataset=data
    )
    in_place_seconds = round(time.perf_counter() - began, 2)
    run.close()
    steps = []
    if run.metrics_csv.exists():
        import csv

        with run.metrics_csv.open() as f:
            steps = [float(r["step_time"]) for r in csv.DictReader(f) if r.get("step_time")]
    return {
        "run": run,
        "global_step": run.global_step,
        "train_seconds": round(run.train_seconds, 2),
        "reward_seconds": round(run.reward_seconds, 2),
        "step_times": [round(s, 2) for s in steps],
        "seconds_per_step": round(run.train_seconds / max(run.global_step, 1), 2),
        "in_place_eval": {"items": before.n + after.n, "seconds": in_place_seconds},
        "seconds_per_step_after_first": round(sum(steps[1:]) / len(steps[1:]), 2)
        if len(steps) > 1
        else None,
    }


def evaluate_stage(profile, run, n_items: int) -> dict:
    from medreason_lib import evaluation

    data = evaluation.profile_benchmarks(profile)
    data = data.select(range(min(n_items, len(data))))
    report = evaluation.evaluate_model(
        profile, "gpu-smoke", adapter=run.adapter_dir, dataset=data, resume=False, progress=False
    )
    return {"items": report.n, "failed": report.failed, "seconds": report.seconds}


def sft_stage(profile, work: Path, steps: int) -> dict:
    """Notebook 10's SFT on reasoning traces: the bundled traces, ``steps`` steps, merged."""
    from medreason_lib.training import sft_traces

    rows, _, _ = sft_traces.trace_sft_data(profile, source="bundled")
    result = sft_traces.run_trace_sft(profile, rows, work / "sft", steps=steps, force=True)
    return {"steps": result.steps, "first_loss": result.first_loss, "last_loss": result.last_loss,
            "model_dir": str(result.model_dir)}  # fmt: skip


def dpo_stage(profile, run, steps: int) -> dict:
    """Notebook 11's DPO for safety from the GRPO adapter: the bundled pairs, ``steps`` steps."""
    from medreason_lib.data import safety
    from medreason_lib.training import dpo

    pairs = safety.load_pairs()
    dpo_run = dpo.train_dpo(profile, run, pairs, steps=steps)
    return {"steps": steps, "adapter": str(dpo_run.adapter_dir)}


def cpt_stage(profile, work: Path, steps: int) -> dict:
    """Notebook 09's continued pretraining: LoRA plus trained embeddings, held-out perplexity
    before and after (the first parameter of such a model is not on the GPU: issue 21)."""
    from medreason_lib.training import pretrain
    from medreason_lib.training.pretrain_setup import cpt_settings

    settings = cpt_settings(profile, steps=steps, n_heldout=4, max_length=256)
    corpus = pretrain.load_corpus(profile, settings)
    result = pretrain.run_cpt(profile, corpus, settings, output_dir=work / "cpt")
    return {"steps": steps, "perplexity": {k: getattr(result, k, None) for k in
            ("heldout_before", "heldout_after")}}  # fmt: skip


def impersonate(card: dict, bin_dir: Path) -> dict:
    """Make this GPU look like ``card`` to Unsloth and to the course (``--as``), before
    either is imported: torch.cuda's capability, name and properties, a memory cap, and an
    ``nvidia-smi`` on ``PATH`` that answers the course's queries for that card."""
    import types

    import torch

    from tools.rehearsal.runner import CUDA, DRIVER, NVIDIA_SMI, _write_script

    real = torch.cuda.get_device_properties(0)
    fraction = min(1.0, card["memory_gb"] * GiB / real.total_memory)
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    fields = {k: getattr(real, k) for k in dir(real) if not k.startswith("_")}
    props = types.SimpleNamespace(**fields)
    props.name, (props.major, props.minor) = card["name"], card["capability"]
    props.total_memory = int(card["memory_gb"] * GiB)
    torch.cuda.get_device_capability = lambda device=None: tuple(card["capability"])
    torch.cuda.get_device_properties = lambda device=None: props
    torch.cuda.get_device_name = lambda device=None: card["name"]
    real_mem_get_info = torch.cuda.mem_get_info

    def mem_get_info(device=None):
        free, _ = real_mem_get_info(device)
        cap = props.total_memory
        return min(free, cap - torch.cuda.memory_reserved()), cap

    torch.cuda.mem_get_info = mem_get_info
    bin_dir.mkdir(parents=True, exist_ok=True)
    cap = ".".join(map(str, card["capability"]))
    mib = int(card["memory_gb"] * 1024)
    smi = NVIDIA_SMI.format(name=card["name"], driver=DRIVER, cap=cap, mib=mib, cuda=CUDA)
    _write_script(bin_dir / "nvidia-smi", smi)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return {"card": card["name"], "capability": list(card["capability"]),
            "memory_fraction": round(fraction, 4), "real": real.name}  # fmt: skip


def export_stage(profile, run) -> dict:
    from medreason_lib import export

    adapter = export.save_adapter(profile, run)
    merged = export.merge(profile, run)
    size = sum(f.stat().st_size for f in merged.glob("*.safetensors"))
    out = {"adapter": str(adapter), "merged": str(merged), "merged_safetensors_gb": _gb(size)}
    shutil.rmtree(merged, ignore_errors=True)  # free the disk for the next model
    return out


def _describe(obj) -> str:
    name = type(obj).__name__
    if isinstance(obj, dict):
        keys = list(obj)[:6]
        return f"dict(keys={keys})"
    if inspect.isframe(obj):
        return f"frame {obj.f_code.co_filename}:{obj.f_code.co_name}"
    if isinstance(obj, (list, tuple)):
        return f"{name}(len={len(obj)})"
    return f"{type(obj).__module__}.{name}"


def _owner_chain(obj, depth: int = 6) -> list[str]:
    """Who keeps ``obj`` alive: one referrer per level (skipping frames and this helper's own
    containers), described by type, so a leak names the module that holds the model."""
    chain, seen = [], {id(obj)}
    for _ in range(depth):
        referrers = [
            r
            for r in gc.get_referrers(obj)
            if id(r) not in seen and not inspect.isframe(r) and r is not chain
        ]
        if not referrers:
            chain.append("(no Python referrer: held from C++ or a frame)")
            break
        obj = max(referrers, key=lambda r: isinstance(r, dict))
        seen.add(id(obj))
        chain.append(_describe(obj))
        if isinstance(obj, types.ModuleType):
            break
    return chain


def still_held(torch, top: int = 4) -> dict:
    """The CUDA tensors that outlive a stage: how many GB Python objects still reach, and for
    the largest, the chain of referrers that holds them."""
    seen, tensors = set(), []
    for obj in gc.get_objects():
        try:
            if torch.is_tensor(obj) and obj.is_cuda:
                ptr = obj.untyped_storage().data_ptr()
                if ptr not in seen:
                    seen.add(ptr)
                    tensors.append(obj)
        except Exception:
            continue
    size = sum(t.untyped_storage().nbytes() for t in tensors)
    tensors.sort(key=lambda t: t.untyped_storage().nbytes(), reverse=True)
    largest = [
        {
            "shape": list(t.shape),
            "dtype": str(t.dtype),
            "gb": _gb(t.untyped_storage().nbytes()),
            "held_by": _owner_chain(t),
        }
        for t in tensors[:top]
    ]
    return {"python_reachable_gb": _gb(size), "tensors": len(tensors), "largest": largest}


# --------------------------------------------------------------------------- the run


class Smoke:
    def __init__(self, args):
        self.args = args
        self.began = time.monotonic()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.result: dict = {
            "mode": "dry-run" if args.dry_run else "gpu",
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "budget_s": args.budget_s,
            "models": {},
            "skipped": {},
            "failed": [],
            "note": "random weights: memory and speed only, no accuracy meaning",
        }

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.began)

    def save(self) -> None:
        self.result["elapsed_s"] = round(time.monotonic() - self.began, 1)
        path = self.out / "gpu_smoke.json"
        path.write_text(json.dumps(self.result, indent=2, default=str) + "\n")

    def stage(self, record: dict, name: str, fn):
        """Run ``fn``; record seconds, memory and any traceback. Returns its result or None."""
        torch = _cuda()
        print(f"\n=== {record['name']}: {name} ({self.left():.0f} s of budget left)", flush=True)
        entry: dict = {"ok": False}
        record["stages"][name] = entry
        if torch is not None:
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        value = None
        try:
            value = fn()
            entry["ok"] = True
        except Exception as exc:
            traceback.print_exc()
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()
            self.result["failed"].append(f"{record['name']}:{name}")
        entry["seconds"] = round(time.perf_counter() - began, 1)
        if isinstance(value, dict):
            entry["result"] = {k: v for k, v in value.items() if k != "run"}
        if torch is not None:
            entry["peak_allocated_gb"] = _gb(torch.cuda.max_memory_allocated())
            entry["peak_reserved_gb"] = _gb(torch.cuda.max_memory_reserved())
            entry["allocated_after_return_gb"] = _gb(torch.cuda.memory_allocated())
        gc.collect()
        if torch is not None:
            torch.cuda.empty_cache()
            entry["allocated_after_gc_gb"] = _gb(torch.cuda.memory_allocated())
            entry["reserved_after_gc_gb"] = _gb(torch.cuda.memory_reserved())
            if entry["allocated_after_gc_gb"] and entry["allocated_after_gc_gb"] > 0.05:
                entry["still_held"] = still_held(torch)
                print("still held:", json.dumps(entry["still_held"], indent=1)[:3000])
        status = "ok" if entry["ok"] else f"FAILED ({entry['error'][:200]})"
        mem = {k: v for k, v in entry.items() if k.endswith("_gb")}
        print(f"=== {record['name']}: {name} {status} in {entry['seconds']} s {mem}", flush=True)
        self.save()
        return value

    def planner(self, profile, record: dict) -> None:
        """The planner's GRPO figure for the same settings, beside the measured peak."""
        from medreason_lib.models import memory

        gpu = self.result["gpu"]["memory_gb"]
        plan = memory.plan_for_profile(profile, "grpo", gpu=gpu)
        torch_view = plan.total_gb - memory.CUDA_CONTEXT_GB
        entry = {
            "total_gb": round(plan.total_gb, 2),
            "torch_view_gb": round(torch_view, 2),
            "breakdown_gb": {k: round(v, 3) for k, v in plan.breakdown.items()},
            "counts": "weights (4-bit linear, 16-bit rest) + LoRA with Adam + one recomputed "
            "layer + KV cache of (prompt+completion) x batch + one sequence's logits + CUDA "
            f"context {memory.CUDA_CONTEXT_GB} GB + slack; torch_view = total less the CUDA "
            "context, which torch's allocator never sees: compare it with peak_reserved_gb",
        }
        train = record["stages"].get("train", {})
        measured = train.get("peak_reserved_gb")
        if measured:
            entry["measured_train_peak_reserved_gb"] = measured
            entry["measured_train_peak_allocated_gb"] = train.get("peak_allocated_gb")
            entry["error_pct_vs_reserved"] = round(100 * (torch_view / measured - 1), 1)
        record["planner"] = entry
        print(plan.table())
        if measured:
            print(
                f"planner (torch view) {torch_view:.2f} GB vs measured training peak reserved "
                f"{measured:.2f} GB / allocated {train.get('peak_allocated_gb'):.2f} GB: "
                f"{entry['error_pct_vs_reserved']:+.1f}%"
            )

    def run_model(self, name: str, work: Path) -> None:
        args = self.args
        spec = MODELS.get(name, MODELS["qwen2.5-3b"])
        record: dict = {"name": name, "stages": {}}
        self.result["models"][name] = record
        folder = work / ("dry-build" if args.dry_run else spec["folder"]) / spec["folder"]
        device = "cpu" if args.dry_run else "cuda"
        config = CONFIGS / ("qwen2.5-3b.json" if args.dry_run else f"{name}.json")
        shrink = DRY_SHRINK if args.dry_run else None
        built = self.stage(
            record,
            "build",
            lambda: build_model(config, folder, spec["family"], device=device, shrink=shrink),
        )
        if built is None and not args.dry_run:
            return  # nothing to train on
        profile = smoke_profile(name, folder, args)
        record["profile"] = {
            k: v for k, v in profile.to_dict().items() if k not in ("description", "lora_targets")
        }
        trained = self.stage(record, "train", lambda: train_stage(profile, work / "run"))
        try:
            self.planner(profile, record)
        except Exception as exc:
            traceback.print_exc()
            record["planner"] = {"error": f"{type(exc).__name__}: {exc}"}
        if trained is None:
            return
        run = trained["run"]
        if self.left() < 30:
            self.result["skipped"][f"{name}:evaluate"] = f"{self.left():.0f} s of budget left"
        else:
            self.stage(record, "evaluate", lambda: evaluate_stage(profile, run, args.eval_items))
        if name in NO_MERGE or name not in args.merge:
            reason = NO_MERGE.get(name, f"not in --merge {' '.join(args.merge) or '(none)'}")
            self.result["skipped"][f"{name}:export"] = reason
        elif self.left() < 45:
            self.result["skipped"][f"{name}:export"] = f"{self.left():.0f} s of budget left"
        else:
            self.stage(record, "export", lambda: export_stage(profile, run))
        for stage in args.stages:
            if self.left() < 30:
                self.result["skipped"][f"{name}:{stage}"] = f"{self.left():.0f} s of budget left"
                continue
            calls = {
                "sft": lambda: sft_stage(profile, work, args.steps),
                "dpo": lambda: dpo_stage(profile, run, args.steps),
                "cpt": lambda: cpt_stage(profile, work, args.steps),
            }
            self.stage(record, stage, calls[stage])
        self.save()

    def main(self) -> int:
        args = self.args
        if args.as_card and not args.dry_run and _cuda() is not None:
            self.result["as"] = impersonate(AS_CARDS[args.as_card], self.out / "bin")
        self.result["gpu"] = gpu_info()
        if not args.dry_run and self.result["gpu"]["name"] is None:
            print("no CUDA GPU: use --dry-run on a CPU")
            return 2
        self.result["imports"] = {"ok": False}
        try:
            self.result["imports"] = check_imports(args.dry_run) | {"ok": True}
        except Exception as exc:
            traceback.print_exc()
            self.result["imports"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.result["imports"]["traceback"] = traceback.format_exc()
            self.result["failed"].append("imports")
        self.result["versions"] = versions()
        self.save()
        if args.check_imports or not self.result["imports"]["ok"]:
            return 0 if self.result["imports"]["ok"] else 1
        names = ["tiny"] if args.dry_run else args.models
        for name in names:
            need = 0 if args.dry_run else MODELS[name]["min_s"]
            if self.left() < need:
                why = f"{self.left():.0f} s of budget left, {name} needs about {need} s"
                print(f"\n=== skipping {name}: {why}")
                self.result["skipped"][name] = why
                continue
            work = Path(tempfile.mkdtemp(prefix=f"gpu-smoke-{name}-", dir=args.work_dir))
            os.environ["MEDREASON_RUNS"] = str(work / "runs")
            try:
                self.run_model(name, work)
            finally:
                if not args.keep:
                    shutil.rmtree(work, ignore_errors=True)
        self.save()
        self.summary()
        return 1 if self.result["failed"] else 0

    def summary(self) -> None:
        print("\n==================== GPU smoke summary")
        print(f"GPU: {self.result['gpu']['name']}  versions: {self.result['versions']}")
        for name, record in self.result["models"].items():
            print(f"-- {name}")
            for stage, e in record["stages"].items():
                mem = " ".join(f"{k.removesuffix('_gb')}={e[k]}" for k in e if k.endswith("_gb"))
                state = "ok" if e["ok"] else "FAILED"
                print(f"   {stage:<9}{state:<7}{e['seconds']:>7} s  {mem}")
            train = record["stages"].get("train", {}).get("result", {})
            if train:
                steps = train.get("step_times")
                print(f"   s/step {train.get('seconds_per_step')} (TRL step_time {steps})")
            plan = record.get("planner", {})
            if "torch_view_gb" in plan:
                print(
                    f"   planner {plan['total_gb']} GB (torch view {plan['torch_view_gb']}) vs "
                    f"train peak reserved {plan.get('measured_train_peak_reserved_gb')}"
                )
        for what, why in self.result["skipped"].items():
            print(f"skipped {what}: {why}")
        failed = self.result["failed"]
        print(f"failed stages: {', '.join(failed) if failed else 'none'}")
        print(f"elapsed {self.result['elapsed_s']} s; JSON: {self.out / 'gpu_smoke.json'}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(MODELS))
    p.add_argument("--dry-run", action="store_true", help="CPU: tiny profile, no Unsloth")
    p.add_argument("--check-imports", action="store_true", help="only import and print versions")
    p.add_argument("--out", default=str(REPO / "runs" / "gpu_smoke"), help="JSON + log folder")
    p.add_argument("--budget-s", type=float, default=480, help="skip models past this budget")
    p.add_argument("--steps", type=int, default=3, help="GRPO steps per model")
    p.add_argument("--completion-length", type=int, default=64, help="max_completion_length")
    p.add_argument("--train-size", type=int, default=32, help="training rows drawn")
    p.add_argument("--eval-items", type=int, default=4, help="benchmark items evaluated")
    p.add_argument(
        "--merge",
        nargs="*",
        default=list(DEFAULT_MERGE),
        help="models whose adapter is saved and merged (none: --merge with no names)",
    )
    p.add_argument(
        "--stages", nargs="*", default=["sft", "dpo", "cpt"], choices=["sft", "dpo", "cpt"],
        help="after train/evaluate/export: SFT on traces, DPO for safety, continued pretraining",
    )  # fmt: skip
    p.add_argument(
        "--as", dest="as_card", choices=list(AS_CARDS), default=None,
        help="make the GPU look like this card: its compute capability (t4: 7.5, the float16 "
        "path) and name to Unsloth and the course, and its memory as a cap",
    )  # fmt: skip
    p.add_argument("--work-dir", default=None, help="where models are built (default: /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the built models and runs")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    smoke = Smoke(args)
    log = (smoke.out / "gpu_smoke.log").open("w")
    sys.stdout, sys.stderr = Tee(sys.__stdout__, log), Tee(sys.__stderr__, log)
    try:
        return smoke.main()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        log.close()


if __name__ == "__main__":
    sys.exit(main())
