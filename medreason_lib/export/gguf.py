"""GGUF export: a llama.cpp file of the merged model, through Unsloth (GPU profiles only).

``to_gguf`` calls Unsloth's ``save_pretrained_gguf(dir, tokenizer, quantization_method=...)``
(``q4_k_m`` or ``q8_0``; gpt-oss is always written as MXFP4) and replaces the Modelfile Unsloth
writes beside the file with one that carries the course's system prompt. On a tiny profile or
a machine without an NVIDIA GPU, ``check_gguf`` raises ``ExportUnavailable`` before anything is
loaded, saying what to do instead. ``unsloth_gguf_kwargs`` builds Unsloth's keywords; the
API-drift tests check them against the pinned Unsloth source.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medreason_lib.export.save import export_dir, load_trained
from medreason_lib.export.serve import write_modelfile
from medreason_lib.settings.profiles import Profile, gpu_memory_gb
from medreason_lib.training.runs import ExportUnavailable

if TYPE_CHECKING:
    from medreason_lib.training import TrainingRun

GGUF_QUANTIZATIONS = ("q4_k_m", "q8_0")


def gguf_quantization(profile: Profile, requested: str) -> str:
    """The quantization a GGUF export really writes. gpt-oss exports as MXFP4 whatever is
    asked (unsloth/save.py: "GPT-OSS does not support GGUF quantization ... Overriding to
    MXFP4"), so the file is named and reported as mxfp4, and the learner is told."""
    _check_quantization(requested)
    if profile.family == "gpt-oss":
        print(
            f"gguf: gpt-oss is exported as MXFP4 (its native 4-bit format), not {requested}: "
            "Unsloth supports no other GGUF quantization for it"
        )
        return "mxfp4"
    return requested


def unsloth_gguf_kwargs(quantization: str, profile: Profile | None = None) -> dict:
    """Keywords for ``model.save_pretrained_gguf(dir, tokenizer, **kwargs)``. For gpt-oss,
    ``quantization_method=None``: Unsloth writes MXFP4 then, without a misleading warning."""
    _check_quantization(quantization)
    if profile is not None and profile.family == "gpt-oss":
        return {"quantization_method": None}
    return {"quantization_method": quantization}


def _check_quantization(quantization: str) -> None:
    if quantization not in GGUF_QUANTIZATIONS:
        raise ExportUnavailable(
            f"unknown GGUF quantization {quantization!r}; the course exports "
            f"{' or '.join(GGUF_QUANTIZATIONS)} (q4_k_m: small, q8_0: closer to 16-bit)"
        )


def gguf_unavailable_reason(profile: Profile) -> str | None:
    """Why GGUF cannot be made here (one line), or None on a GPU profile with a GPU."""
    if not profile.uses_unsloth or gpu_memory_gb() is None:
        where = f"profile {profile.name!r}" + (
            "" if gpu_memory_gb() is not None else " on a machine without an NVIDIA GPU"
        )
        return (
            f"GGUF export needs the GPU path, and this is {where}: Unsloth's "
            "save_pretrained_gguf merges the adapter and converts it with llama.cpp, which it "
            "builds, on a GPU profile (3b/8b/20b). Here, merge instead (export --merge) and "
            "serve the merged folder with vLLM or transformers; on a GPU, run export --gguf "
            "q4_k_m there (or convert a merged folder with llama.cpp's convert_hf_to_gguf.py)"
        )
    return None


def check_gguf(profile: Profile, quantization: str = "q4_k_m") -> None:
    """Raise ``ExportUnavailable`` when ``to_gguf`` cannot run (checked before loading)."""
    _check_quantization(quantization)
    reason = gguf_unavailable_reason(profile)
    if reason:
        raise ExportUnavailable(reason)


def to_gguf(
    profile: Profile,
    run: TrainingRun,
    quantization: str = "q4_k_m",
    out_dir: str | Path | None = None,
) -> Path:
    """A GGUF file of the merged model (``export/gguf``), through Unsloth's
    ``save_pretrained_gguf(dir, tokenizer, quantization_method=...)``. GPU profiles only:
    elsewhere ``ExportUnavailable`` says so before anything is loaded. Returns the file."""
    check_gguf(profile, quantization)
    written = gguf_quantization(profile, quantization)
    out = Path(out_dir) if out_dir else export_dir(run) / "gguf"
    with load_trained(profile, run) as loaded:
        result = loaded.model.save_pretrained_gguf(
            str(out), loaded.tokenizer, **unsloth_gguf_kwargs(quantization, profile)
        )
    listed = result.get("gguf_files") if isinstance(result, dict) else None
    files = [Path(f) for f in listed or []] or sorted(out.rglob("*.gguf"))
    wanted = [f for f in files if written.lower() in f.name.lower()]
    if not wanted:
        raise RuntimeError(
            f"save_pretrained_gguf wrote no {written.upper()} .gguf file under {out} "
            f"(found: {', '.join(f.name for f in files) or 'none'})"
        )
    # Unsloth writes its own Modelfile beside the file, with the base model's default system
    # prompt ("You are Qwen, ..."): replace it with the course's.
    merged = export_dir(run) / "merged"
    write_modelfile(
        profile,
        wanted[0],
        wanted[0].parent / "Modelfile",
        tokenizer_dir=merged if merged.is_dir() else run.adapter_dir,
    )
    print(f"gguf ({written}): {wanted[0]}")
    return wanted[0]
