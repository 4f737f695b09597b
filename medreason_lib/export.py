"""Export and serve a trained adapter: save, merge, verify, GGUF, the Hub, Ollama and vLLM.

Every step takes the profile and the ``TrainingRun`` that ``training.train`` left (notebook 04,
or ``python -m medreason_lib train``) and writes into ``<run>/export/``:

- ``save_adapter``: the LoRA adapter, with its tokenizer and a model card (``adapter/``).
- ``merge``: the adapter folded into the base weights, one ordinary model folder
  (``merged/``) that vLLM, transformers and Ollama read without peft. Tiny: peft's
  ``merge_and_unload`` + ``save_pretrained``. GPU: Unsloth's
  ``model.save_pretrained_merged(dir, tokenizer, save_method="merged_16bit")``.
- ``verify_adapter``: the proof that the adapter trained and that the merge kept it (below).
- ``to_gguf``: a llama.cpp GGUF file (``q4_k_m``, ``q8_0``) through Unsloth's
  ``save_pretrained_gguf``; GPU profiles only (``ExportUnavailable`` elsewhere, raised before
  anything is loaded).
- ``push_to_hub``: uploads a folder; the token comes from ``HF_TOKEN`` in the environment and
  is never printed or written anywhere.
- ``write_modelfile``/``write_vllm_files``: an Ollama Modelfile and a vLLM ``serve`` command,
  both carrying the course's system prompt (``template.SYSTEM_PROMPT``), which the model was
  trained with and needs at inference (MedQwen3B-Reasoner's card says so for every engine).

Why verify: a LoRA adapter starts as exactly nothing (peft initialises every B matrix to
zero, so ``W + (alpha/r) B A = W``), and a save or merge that goes wrong usually fails
silently: the folder looks fine and the model behaves like the base. ``verify_adapter``
checks (1) that the B matrices are not all zero, (2) that the trained model's logits and
greedy output on a fixed prompt differ from the base model's, and (3) given a merged folder,
that the merged model reloaded from disk computes the LoRA model's logits (tiny: within
``MERGE_ATOL``; GPU: closer to the LoRA model than to the base, a heuristic, because the
4-bit base and the 16-bit merge differ by quantisation error).

Unsloth's keyword arguments are built by the small functions ``unsloth_merged_kwargs`` and
``unsloth_gguf_kwargs``, which the API-drift tests check against the pinned Unsloth source.
Nothing here imports Unsloth: GPU models come from ``models.load_model``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import paths, template
from .profiles import Profile, gpu_memory_gb

if TYPE_CHECKING:
    from .training import TrainingRun

# Unsloth's save_method values the course uses. "merged_4bit" is refused by the pinned
# Unsloth (2026.10.9), which asks for "merged_4bit_forced" (tests/test_api_drift.py).
MERGE_METHODS = ("merged_16bit", "merged_4bit_forced", "lora")
GGUF_QUANTIZATIONS = ("q4_k_m", "q8_0")
TOKEN_ENV = "HF_TOKEN"
REPO_ENV = "MEDREASON_HUB_REPO"
MERGE_ATOL = 1e-4  # max |logit difference| merged vs LoRA model on tiny (float32)
STAMP = "medreason_export.json"

# A fixed question for verify_adapter: written for this course, in PubMedQA's shape.
VERIFY_ROW = {
    "task": "pubmedqa",
    "question": "Does daily walking lower resting blood pressure in adults with hypertension?",
    "context": (
        "In a randomized controlled trial, 120 adults with hypertension walked 30 minutes "
        "daily or kept their usual routine for 12 weeks. Mean systolic pressure fell by "
        "6 mm Hg in the walking group and by 1 mm Hg in the control group."
    ),
    "options": [],
}


class ExportUnavailable(RuntimeError):
    """An export that cannot run here or with these inputs. Raised before any model is
    loaded; the message (one line) says what to do instead."""


class MissingToken(ExportUnavailable):
    """A push was asked for without ``HF_TOKEN`` in the environment."""


# --------------------------------------------------------------------------- Unsloth keywords


def unsloth_merged_kwargs(save_method: str = "merged_16bit") -> dict:
    """Keywords for ``model.save_pretrained_merged(dir, tokenizer, **kwargs)``."""
    if save_method == "merged_4bit":
        raise ValueError(
            "Unsloth 2026.10 refuses save_method='merged_4bit'; use 'merged_4bit_forced' "
            "(a 4-bit merge loses accuracy: prefer 'merged_16bit')"
        )
    if save_method not in MERGE_METHODS:
        raise ValueError(f"unknown save_method {save_method!r}; valid: {', '.join(MERGE_METHODS)}")
    return {"save_method": save_method}


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


# --------------------------------------------------------------------------- the run


def run_dir_for(profile: Profile, run_dir: str | Path | None = None) -> Path:
    """``run_dir``, or the profile's default GRPO run folder (``runs/<profile>/grpo``)."""
    return Path(run_dir) if run_dir else paths.runs_dir(profile.name) / "grpo"


def check_run(profile: Profile, run_dir: str | Path | None = None) -> Path:
    """The run folder, after checking (without importing the training stack) that it holds a
    finished run of this profile. ``FileNotFoundError``/``ExportUnavailable`` say what to do."""
    folder = run_dir_for(profile, run_dir)
    info_path = folder / "run.json"
    if not info_path.is_file():
        raise FileNotFoundError(
            f"no finished training run in {folder} (missing run.json): train one first with "
            f"`python -m medreason_lib train --profile {profile.name}` (or notebook 04), "
            "or point --run-dir at a run folder"
        )
    trained_with = json.loads(info_path.read_text()).get("profile")
    if trained_with not in (None, profile.name):
        raise ExportUnavailable(
            f"the run in {folder} was trained with profile {trained_with!r}, not "
            f"{profile.name!r}: pass --profile {trained_with}"
        )
    return folder


def run_base_model(profile: Profile, run_dir: str | Path | None = None) -> str:
    """The base model a finished run's adapter belongs to, read from its ``run.json`` without
    importing the training stack (on a GPU, Unsloth must be imported before transformers)."""
    return json.loads((check_run(profile, run_dir) / "run.json").read_text())["base_model"]


def load_run(profile: Profile, run_dir: str | Path | None = None) -> TrainingRun:
    """The finished ``TrainingRun`` in ``run_dir`` (default ``runs/<profile>/grpo``)."""
    from .training import TrainingRun

    run = TrainingRun.load(check_run(profile, run_dir))
    if not (run.adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{run.adapter_dir} holds no LoRA adapter (adapter_config.json): the run did not "
            "finish saving; train it again"
        )
    return run


def export_dir(run: TrainingRun) -> Path:
    """Where the exports of a run go: ``<run>/export``."""
    return run.run_dir / "export"


def _digest(folder: Path, suffixes=(".safetensors", ".bin")) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.suffix in suffixes and f.name != "training_args.bin":
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _stamp(profile: Profile, run: TrainingRun, kind: str) -> dict:
    return {
        "kind": kind,
        "profile": profile.name,
        "base_model": run.base_model,
        "adapter_sha256": _digest(run.adapter_dir),
        "global_step": run.global_step,
        "system_prompt": template.SYSTEM_PROMPT,
    }


def _is_current(folder: Path, stamp: dict) -> bool:
    path = folder / STAMP
    return path.is_file() and json.loads(path.read_text()) == stamp


# --------------------------------------------------------------------------- model card


def model_card(profile: Profile, run: TrainingRun, kind: str) -> str:
    """A README.md for an exported folder: what it is, the disclaimer, and the system prompt
    and prompt formats every client must use (the model was trained with them)."""
    from . import data
    from .ask import DISCLAIMER

    example = data.build_prompt(VERIFY_ROW)
    what = {
        "adapter": "a LoRA adapter (load it on its base model with peft or Unsloth)",
        "merged": "the LoRA adapter merged into the base model's weights (16-bit)",
    }[kind]
    return f"""---
base_model: {run.base_model}
tags: [medreason, grpo, lora, medical, reasoning, educational]
---

# medreason ({profile.name}): {what}

> **{DISCLAIMER}**

Trained in the medreason course with GRPO ({run.global_step} steps, profile `{profile.name}`)
on top of `{run.base_model}`.

## The system prompt is required

The model was trained with this exact system message, and answers in its
`<reasoning>`/`<answer>` format only when it is given:

```text
{template.SYSTEM_PROMPT}```

(It starts and ends with a newline.) Send it as the system message of every conversation.
The Ollama Modelfile and the vLLM chat template exported beside this folder set it by
default; an OpenAI-compatible client must send it itself.

## Prompt formats

The user turn must use the training formats (`medreason_lib.data.user_prompt`). A PubMedQA
question, for example:

```text
{example[1]["content"]}
```

A four-option question ends with `Options:` A-D and "Answer with the letter of the correct
option."; an arithmetic question with "Answer with the final number only."
"""


def _write_card(profile: Profile, run: TrainingRun, folder: Path, kind: str) -> None:
    (folder / "README.md").write_text(model_card(profile, run, kind))


# --------------------------------------------------------------------------- loading


def _load_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def load_trained(profile: Profile, run: TrainingRun):
    """The run's base model with its adapter, for export: a ``models.EvalModel`` to use in a
    ``with`` block (it frees the model at the end).

    Tiny: ``models.load_model`` with peft. GPU: Unsloth loads the adapter folder itself (it
    reads the base from ``adapter_config.json``) without vLLM, which attaches Unsloth's saving
    methods (``save_pretrained_merged``, ``save_pretrained_gguf``) to the LoRA model. (A plain
    peft wrapper would forward those calls to the base model and save it *without* the LoRA.)
    """
    from . import models

    if profile.is_tiny:
        return models.load_model(profile, base=run.base_model, adapter=run.adapter_dir)
    return models.load_model(profile.replace(use_vllm=False), base=run.adapter_dir)


def _load_folder(profile: Profile, folder: str | Path):
    """A saved model folder (a merge), loaded as the profile loads models (GPU: no vLLM)."""
    from . import models

    loading = profile if profile.is_tiny else profile.replace(use_vllm=False)
    return models.load_model(loading, base=folder)


# --------------------------------------------------------------------------- save and merge


def save_adapter(profile: Profile, run: TrainingRun, out_dir: str | Path | None = None) -> Path:
    """Copy the trained adapter, its tokenizer and a model card to ``export/adapter``.

    The folder is what peft's ``PeftModel.from_pretrained(base, folder)`` and Unsloth's
    ``FastLanguageModel.from_pretrained(folder)`` read; the base is named in its
    ``adapter_config.json``. The trainer's pickled arguments are left out.
    """
    out = Path(out_dir) if out_dir else export_dir(run) / "adapter"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(run.adapter_dir, out, ignore=shutil.ignore_patterns("training_args.bin"))
    if not (out / "tokenizer_config.json").exists():
        _load_tokenizer(run.base_model).save_pretrained(str(out))
    _write_card(profile, run, out, "adapter")
    (out / STAMP).write_text(json.dumps(_stamp(profile, run, "adapter"), indent=2) + "\n")
    return out


def merge(
    profile: Profile, run: TrainingRun, out_dir: str | Path | None = None, *, force: bool = False
) -> Path:
    """Merge the adapter into the base weights and save one model folder (``export/merged``).

    Reuses a merge of the same adapter unless ``force``. Tiny: peft's ``merge_and_unload``
    (W + alpha/r * B A, in float32) and ``save_pretrained``. GPU: Unsloth's
    ``save_pretrained_merged(dir, tokenizer, save_method="merged_16bit")``, which merges into
    the base model's 16-bit weights (not the 4-bit ones used in training).
    """
    out = Path(out_dir) if out_dir else export_dir(run) / "merged"
    stamp = _stamp(profile, run, "merged")
    if not force and _is_current(out, stamp):
        print(f"merge: reusing {out} (same adapter)")
        return out
    if out.exists():
        shutil.rmtree(out)
    with load_trained(profile, run) as loaded:
        _save_merged(profile, loaded, out)
    _write_card(profile, run, out, "merged")
    (out / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    print(f"merge: {out}")
    return out


def _save_merged(profile: Profile, loaded, out: Path) -> None:
    if profile.is_tiny:
        merged = loaded.model.merge_and_unload()
        merged.save_pretrained(str(out))
        loaded.tokenizer.save_pretrained(str(out))
    else:
        kwargs = unsloth_merged_kwargs("merged_16bit")
        loaded.model.save_pretrained_merged(str(out), loaded.tokenizer, **kwargs)


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class AdapterWeights:
    """What an adapter file holds: its LoRA B matrices, which start at zero."""

    path: str
    b_matrices: int
    b_nonzero: int  # B matrices with at least one nonzero entry
    b_max_abs: float
    a_matrices: int

    @property
    def trained(self) -> bool:
        return self.b_matrices > 0 and self.b_nonzero > 0


def adapter_weights(adapter_dir: str | Path) -> AdapterWeights:
    """Read an adapter's ``adapter_model.safetensors`` (no model is loaded)."""
    from safetensors.torch import load_file

    path = Path(adapter_dir) / "adapter_model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no adapter_model.safetensors in {adapter_dir}")
    tensors = load_file(str(path))
    b = [t for name, t in tensors.items() if "lora_B" in name]
    return AdapterWeights(
        path=str(path),
        b_matrices=len(b),
        b_nonzero=sum(bool(t.abs().max() > 0) for t in b),
        b_max_abs=max((float(t.abs().max()) for t in b), default=0.0),
        a_matrices=sum("lora_A" in name for name in tensors),
    )


@dataclass
class VerifyReport:
    """The three checks of ``verify_adapter``; ``ok`` when no problem was found."""

    adapter: AdapterWeights
    trained_vs_base_max_abs: float  # logits on VERIFY_ROW's prompt, every position
    trained_vs_base_rms: float
    base_completion: str
    trained_completion: str
    merged_dir: str | None = None
    merged_vs_trained_max_abs: float | None = None
    merged_vs_trained_rms: float | None = None
    merged_vs_base_rms: float | None = None
    tolerance: float | None = None  # None: the GPU heuristic (closer to trained than base)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def completions_differ(self) -> bool:
        return self.base_completion != self.trained_completion

    def __str__(self) -> str:
        a = self.adapter
        mark = {True: "ok  ", False: "FAIL"}
        lines = [
            f"[{mark[a.trained]}] 1. adapter trained: {a.b_nonzero}/{a.b_matrices} LoRA B "
            f"matrices nonzero (largest |B| {a.b_max_abs:.3g})",
            f"[{mark[self.trained_vs_base_max_abs > 0]}] 2. trained != base: logits differ by "
            f"up to {self.trained_vs_base_max_abs:.3g} (rms {self.trained_vs_base_rms:.3g}); "
            f"greedy completions {'differ' if self.completions_differ else 'are identical'}",
            f"       base:    {self.base_completion[:120]!r}",
            f"       trained: {self.trained_completion[:120]!r}",
        ]
        if self.merged_dir is not None:
            if self.tolerance is not None:
                detail = (
                    f"max |logit diff| {self.merged_vs_trained_max_abs:.3g} "
                    f"(tolerance {self.tolerance:g})"
                )
            else:
                detail = (
                    f"rms distance to trained {self.merged_vs_trained_rms:.3g}, to base "
                    f"{self.merged_vs_base_rms:.3g}"
                )
            merged_ok = not any(p.startswith("3.") for p in self.problems)
            lines.append(f"[{mark[merged_ok]}] 3. merged (reloaded) == LoRA model: {detail}")
        lines += [f"problem: {p}" for p in self.problems]
        lines += [f"note: {n}" for n in self.notes]
        lines.append("verified: the adapter is trained" if self.ok else "NOT VERIFIED")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return d | {"ok": self.ok, "completions_differ": self.completions_differ}


def verification_prompt() -> list[dict[str, str]]:
    """The fixed chat prompt the checks run on, built as training built its prompts."""
    from . import data

    return data.build_prompt(VERIFY_ROW)


def _logits(model, tokenizer, profile: Profile):
    import torch

    from .generation import render_prompts

    text = render_prompts(tokenizer, [verification_prompt()], profile.chat_template_kwargs)[0]
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.inference_mode():
        return model(**enc).logits[0].float().cpu()


def _greedy(model, tokenizer, profile: Profile, max_new_tokens: int) -> str:
    from .generation import GenerationSettings, make_generate

    settings = dataclasses.replace(
        GenerationSettings.from_profile(profile), max_new_tokens=max_new_tokens
    )
    return make_generate(model, tokenizer, settings=settings)([verification_prompt()])[0].text


def _distances(x, y) -> tuple[float, float]:
    diff = x - y
    return float(diff.abs().max()), float(diff.pow(2).mean().sqrt())


def verify_adapter(
    profile: Profile,
    run: TrainingRun,
    *,
    adapter_dir: str | Path | None = None,
    merged_dir: str | Path | None = None,
    max_new_tokens: int = 64,
) -> VerifyReport:
    """Check that the run's adapter (or ``adapter_dir``) trained and, given ``merged_dir``,
    that the merge kept it (see the module docstring). Never raises on a failed check: the
    report lists the problems; ``report.ok`` is the verdict."""
    adapter = Path(adapter_dir) if adapter_dir else run.adapter_dir
    if adapter != run.adapter_dir:
        run = dataclasses.replace(run, adapter_dir=adapter)
    weights = adapter_weights(adapter)
    with load_trained(profile, run) as loaded:
        trained = _logits(loaded.model, loaded.tokenizer, profile)
        trained_text = _greedy(loaded.model, loaded.tokenizer, profile, max_new_tokens)
        with loaded.model.disable_adapter():
            base = _logits(loaded.model, loaded.tokenizer, profile)
            base_text = _greedy(loaded.model, loaded.tokenizer, profile, max_new_tokens)
    tb_max, tb_rms = _distances(trained, base)
    report = VerifyReport(weights, tb_max, tb_rms, base_text, trained_text)
    if not weights.trained:
        report.problems.append(
            f"1. every LoRA B matrix in {weights.path} is exactly zero: this adapter is "
            "untrained (peft initialises B to zero), so the model equals its base"
        )
    if tb_max == 0:
        report.problems.append(
            "2. the model with the adapter computes exactly the base model's logits"
        )
    elif not report.completions_differ:
        report.notes.append(
            "the greedy completions are identical although the logits differ: a small "
            "adapter can leave one prompt's most likely tokens unchanged"
        )
    if merged_dir is not None:
        _check_merged(profile, report, Path(merged_dir), trained, base)
    return report


def _check_merged(profile: Profile, report: VerifyReport, merged_dir: Path, trained, base):
    with _load_folder(profile, merged_dir) as loaded:
        merged = _logits(loaded.model, loaded.tokenizer, profile)
    report.merged_dir = str(merged_dir)
    report.merged_vs_trained_max_abs, report.merged_vs_trained_rms = _distances(merged, trained)
    report.merged_vs_base_rms = _distances(merged, base)[1]
    if profile.is_tiny:
        report.tolerance = MERGE_ATOL
        if report.merged_vs_trained_max_abs > MERGE_ATOL:
            report.problems.append(
                f"3. the merged model reloaded from {merged_dir} differs from the LoRA model by "
                f"up to {report.merged_vs_trained_max_abs:.3g} in the logits (tolerance "
                f"{MERGE_ATOL:g})"
                + (": it behaves like the base model" if _like_base(report) else "")
            )
    else:
        report.notes.append(
            "3. is a heuristic on GPU profiles: the LoRA model runs on 4-bit weights and the "
            "merge is 16-bit, so their logits differ by quantisation error"
        )
        if _like_base(report):
            report.problems.append(
                f"3. the merged model in {merged_dir} is closer to the base model than to the "
                "LoRA model: the merge probably saved the base weights without the adapter"
            )


def _like_base(report: VerifyReport) -> bool:
    return report.merged_vs_base_rms <= report.merged_vs_trained_rms


def untrained_adapter(profile: Profile, base: str | Path, out_dir: str | Path) -> Path:
    """Save a freshly initialised (untrained) LoRA adapter on ``base``, with the profile's
    LoRA settings: what a save that lost the training looks like. (On a GPU profile this
    loads the model once more, through Unsloth, without vLLM.)"""
    from . import models

    loading = profile if profile.is_tiny else profile.replace(use_vllm=False)
    model, tokenizer, config = models.load_for_training(loading, base=base)
    if config is not None:  # tiny: peft attaches the LoRA; Unsloth already did on a GPU
        from peft import get_peft_model

        model = get_peft_model(model, config)
    with models.EvalModel(model, tokenizer) as loaded:  # frees the model at the end
        del model, tokenizer
        loaded.model.save_pretrained(str(out_dir))
        loaded.tokenizer.save_pretrained(str(out_dir))
    return Path(out_dir)


# --------------------------------------------------------------------------- GGUF


def gguf_unavailable_reason(profile: Profile) -> str | None:
    """Why GGUF cannot be made here (one line), or None on a GPU profile with a GPU."""
    if profile.is_tiny or gpu_memory_gb() is None:
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


# --------------------------------------------------------------------------- the Hub


def hub_token() -> str:
    """The Hub token from ``HF_TOKEN``; ``MissingToken`` (which never shows a token) if unset."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise MissingToken(
            f"pushing to the Hugging Face Hub needs a write token in the environment variable "
            f"{TOKEN_ENV} (create one at https://huggingface.co/settings/tokens; on Colab keep "
            "it in Secrets): it is read from the environment only, never printed or saved"
        )
    return token


def hub_repo(repo_id: str | None = None) -> str:
    """``repo_id``, else ``MEDREASON_HUB_REPO``; checked to look like ``user/name``."""
    repo = repo_id or os.environ.get(REPO_ENV, "").strip()
    if not repo:
        raise ExportUnavailable(
            f"no Hub repository named: pass one (export --push your-name/medreason-model) or "
            f"set {REPO_ENV}=your-name/medreason-model"
        )
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ExportUnavailable(f"{repo!r} is not a Hub repository id of the form user/name")
    return repo


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def check_push(repo_id: str | None = None) -> tuple[str, str]:
    """``(repo_id, token)`` when a push can run; ``ExportUnavailable`` (before any heavy work)
    when the repository, the token or the network is missing."""
    repo = hub_repo(repo_id)
    token = hub_token()
    if _hub_offline():
        raise ExportUnavailable(
            "HF_HUB_OFFLINE=1 is set (the tiny profiles set it, to stay offline): pushing needs "
            "the network; run with HF_HUB_OFFLINE=0 to push"
        )
    return repo, token


def _upload(folder: Path, repo_id: str, token: str, private: bool, path_in_repo: str | None):
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        path_in_repo=path_in_repo,
        commit_message="Upload medreason export",
        ignore_patterns=["training_args.bin", "*.pt"],
    )
    return f"https://huggingface.co/{repo_id}"


def push_to_hub(
    folder: str | Path,
    repo_id: str | None = None,
    *,
    private: bool = True,
    path_in_repo: str | None = None,
) -> str:
    """Upload an exported folder (``adapter``, ``merged`` or ``gguf``) to a Hub repository
    (created private if missing). The token comes from ``HF_TOKEN`` and is passed to the Hub
    client only. Returns the repository's URL."""
    repo, token = check_push(repo_id)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"nothing to push: {folder} is not a folder")
    url = _upload(folder, repo, token, private, path_in_repo)
    print(f"pushed {folder} to {url}" + (f" ({path_in_repo}/)" if path_in_repo else ""))
    return url


# --------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class ChatPieces:
    """The fixed text of a chat format around the messages, derived from a tokenizer's own
    chat template: ``head + system + after_system + user + (user_to_assistant + reply +
    assistant_to_user + user)... + generation``."""

    head: str
    after_system: str
    user_to_assistant: str
    assistant_to_user: str
    generation: str

    def render(self, system: str, turns: list[str]) -> str:
        """The prompt for a conversation of alternating user/assistant texts (user first and
        last), the way the pieces compose; the tests compare it with the tokenizer's."""
        text = self.head + system + self.after_system + turns[0]
        for reply, user in zip(turns[1::2], turns[2::2], strict=True):
            text += self.user_to_assistant + reply + self.assistant_to_user + user
        return text + self.generation


_MARKS = ("SYSTEMMARKq7", "USERONEMARKq7", "REPLYMARKq7", "USERTWOMARKq7")


def chat_pieces(tokenizer, chat_template_kwargs: dict | None = None) -> ChatPieces:
    """Split the chat template's rendering of a marked conversation into ``ChatPieces``."""
    kwargs = dict(chat_template_kwargs or {})
    system, user1, reply, user2 = _MARKS
    conversation = [
        {"role": "system", "content": system},
        {"role": "user", "content": user1},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": user2},
    ]
    text = tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True, **kwargs
    )
    parts = re.split("|".join(_MARKS), text)
    if len(parts) != 5 or re.findall("|".join(_MARKS), text) != list(_MARKS):
        raise ValueError(
            "cannot derive a serving template: the chat template reorders or drops turns"
        )
    pieces = ChatPieces(*parts)
    single = tokenizer.apply_chat_template(
        conversation[:2], tokenize=False, add_generation_prompt=True, **kwargs
    )
    if pieces.render(system, [user1]) != single:
        raise ValueError(
            "cannot derive a serving template: one-turn and two-turn renderings differ"
        )
    return pieces


def ollama_template(pieces: ChatPieces) -> str:
    """An Ollama (Go text/template) TEMPLATE that renders a chat as the pieces do: the system
    prompt (the Modelfile's SYSTEM unless the client sends its own), then the turns."""
    for piece in dataclasses.astuple(pieces):
        if "{{" in piece or '"""' in piece:
            raise ValueError("the chat format's text cannot be embedded in an Ollama template")
    return (
        f"{pieces.head}{{{{ .System }}}}{pieces.after_system}"
        "{{ $seen := false }}{{ range .Messages }}"
        '{{ if eq .Role "user" }}'
        f"{{{{ if $seen }}}}{pieces.assistant_to_user}{{{{ end }}}}"
        "{{ $seen = true }}{{ .Content }}"
        '{{ else if eq .Role "assistant" }}'
        f"{pieces.user_to_assistant}{{{{ .Content }}}}"
        "{{ end }}{{ end }}"
        f"{pieces.generation}"
    )


def stop_tokens(tokenizer, model_dir: str | Path | None = None) -> list[str]:
    """The tokens that end a reply: the tokenizer's eos and the ``eos_token_id`` list of the
    model's ``generation_config.json`` (Qwen: ``<|im_end|>``, ``<|endoftext|>``)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config = Path(model_dir) / "generation_config.json" if model_dir else None
    if config and config.is_file():
        eos = json.loads(config.read_text()).get("eos_token_id")
        ids |= {eos} if isinstance(eos, int) else set(eos or [])
    return [tokenizer.convert_ids_to_tokens(int(i)) for i in sorted(ids)]


def modelfile_text(
    profile: Profile,
    tokenizer,
    source: str,
    *,
    stops: list[str],
    temperature: float = 0.0,
) -> str:
    """An Ollama Modelfile: FROM ``source`` (a .gguf file or a merged safetensors folder),
    the family's chat format as TEMPLATE, the course's SYSTEM prompt, stop tokens, and
    greedy decoding (temperature 0, as the course evaluates)."""
    from .ask import DISCLAIMER

    pieces = chat_pieces(tokenizer, profile.chat_template_kwargs)
    if '"""' in template.SYSTEM_PROMPT:
        raise ValueError("the system prompt cannot be quoted in a Modelfile")
    lines = [
        f"# Ollama Modelfile for medreason (profile {profile.name}), written by "
        "medreason_lib.export.",
        f"# {DISCLAIMER}",
        "# SYSTEM is the exact system prompt the model was trained with; keep it. A client that",
        "# sends its own system message replaces it (Ollama uses the request's system message).",
        "# Create and run: ollama create medreason -f Modelfile && ollama run medreason",
        f"FROM {source}",
        f'TEMPLATE """{ollama_template(pieces)}"""',
        f'SYSTEM """{template.SYSTEM_PROMPT}"""',
        *(f'PARAMETER stop "{s}"' for s in stops),
        f"PARAMETER temperature {temperature:g}",
        f"PARAMETER num_ctx {profile.max_seq_length}",
        f"PARAMETER num_predict {profile.max_completion_length}",
    ]
    return "\n".join(lines) + "\n"


def write_modelfile(
    profile: Profile,
    source: str | Path,
    out_path: str | Path | None = None,
    *,
    tokenizer_dir: str | Path | None = None,
) -> Path:
    """Write an Ollama Modelfile for ``source`` (a GGUF file, or a merged folder, which Ollama
    converts itself). FROM is written relative to the Modelfile, so the export folder can be
    moved as a whole. The tokenizer (for the chat format and the stop tokens) is read from
    ``tokenizer_dir``, default the merged folder or the GGUF file's folder."""
    source = Path(source)
    out = Path(out_path) if out_path else source.parent / "Modelfile"
    tok_dir = (
        Path(tokenizer_dir) if tokenizer_dir else (source if source.is_dir() else source.parent)
    )
    tokenizer = _load_tokenizer(tok_dir)
    relative = os.path.relpath(source, out.parent)
    text = modelfile_text(
        profile, tokenizer, "./" + Path(relative).as_posix(), stops=stop_tokens(tokenizer, tok_dir)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def vllm_chat_template(tokenizer, profile: Profile) -> str:
    """The tokenizer's chat template with two defaults put in front: the course's system
    prompt when the request has no system message, and the profile's chat-template keywords
    (Qwen3 ``enable_thinking=false``, gpt-oss ``reasoning_effort``) when the request does not
    set them. ``vllm serve --chat-template <file>`` uses it; nothing else changes."""
    lines = [
        "{#- medreason: the course's system prompt and chat settings by default; a request's own",
        "    system message or chat_template_kwargs win. The original template follows. -#}",
        "{%- if not messages or messages[0]['role'] != 'system' %}",
        "{%- set messages = [{'role': 'system', 'content': "
        + json.dumps(template.SYSTEM_PROMPT)
        + "}] + messages %}",
        "{%- endif %}",
    ]
    for key, value in profile.chat_template_kwargs.items():
        lines.append(
            f"{{%- if {key} is not defined %}}{{%- set {key} = {json.dumps(value)} %}}"
            "{%- endif %}"
        )
    return "\n".join(lines) + "\n" + tokenizer.chat_template


def served_name(profile: Profile) -> str:
    return f"medreason-{profile.name}"


def vllm_serve_args(
    profile: Profile, merged_dir: str | Path, chat_template: str | Path, *, port: int = 8000
) -> list[str]:
    """``vllm serve`` on the merged folder with the system-prompt chat template."""
    return [
        "vllm",
        "serve",
        str(merged_dir),
        "--served-model-name",
        served_name(profile),
        "--chat-template",
        str(chat_template),
        "--max-model-len",
        str(profile.max_seq_length),
        "--port",
        str(port),
    ]


def example_request(profile: Profile, row: dict | None = None) -> dict:
    """An OpenAI-style chat request body in the training format: the system message and the
    user turn exactly as ``data.build_prompt`` makes them, greedy decoding."""
    from . import data

    body: dict[str, Any] = {
        "model": served_name(profile),
        "messages": data.build_prompt(row or VERIFY_ROW),
        "temperature": 0,
        "max_tokens": profile.max_completion_length,
    }
    if profile.chat_template_kwargs:
        body["chat_template_kwargs"] = dict(profile.chat_template_kwargs)
    return body


def curl_command(body: dict, port: int = 8000) -> str:
    return (
        f"curl http://localhost:{port}/v1/chat/completions -H 'Content-Type: application/json' "
        f"-d {shlex.quote(json.dumps(body))}"
    )


@dataclass(frozen=True)
class VLLMFiles:
    chat_template: Path
    command: str
    request: dict
    curl: str
    script: Path


def write_vllm_files(
    profile: Profile, merged_dir: str | Path, out_dir: str | Path | None = None
) -> VLLMFiles:
    """Write ``vllm/chat_template.jinja`` (the system prompt by default) and ``vllm/serve.sh``
    beside the merged folder; return the command and an example request."""
    merged_dir = Path(merged_dir)
    out = Path(out_dir) if out_dir else merged_dir.parent / "vllm"
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _load_tokenizer(merged_dir)
    jinja = out / "chat_template.jinja"
    jinja.write_text(vllm_chat_template(tokenizer, profile))
    command = shlex.join(vllm_serve_args(profile, merged_dir.resolve(), jinja.resolve()))
    body = example_request(profile)
    curl = curl_command(body)
    script = out / "serve.sh"
    script.write_text(
        "#!/bin/sh\n# Serve the merged model with an OpenAI-compatible API (GPU, vllm installed).\n"
        "# The chat template adds the course's system prompt when a request has none.\n"
        f"exec {command}\n\n# Then, from another shell:\n# {curl}\n"
    )
    script.chmod(0o755)
    return VLLMFiles(jinja, command, body, curl, script)


# --------------------------------------------------------------------------- all at once


@dataclass
class ExportResult:
    """What ``export_run`` made (None / empty: not asked for)."""

    adapter: Path
    merged: Path | None = None
    verify: VerifyReport | None = None
    gguf: list[Path] = field(default_factory=list)
    modelfile: Path | None = None
    vllm: VLLMFiles | None = None
    pushed: list[str] = field(default_factory=list)


def export_run(
    profile: Profile,
    run_dir: str | Path | None = None,
    *,
    merge_weights: bool = False,
    gguf: tuple[str, ...] | list[str] = (),
    push: str | None = None,
    modelfile: bool = False,
    verify: bool = True,
) -> ExportResult:
    """The command line's ``export``: every check first (the run, GGUF, the push), then save
    the adapter, merge (also when a Modelfile is asked for) with the vLLM files, verify, GGUF,
    the Modelfile and the push. An adapter that does not verify stops there: nothing is
    converted or pushed (``result.verify.ok`` is False). The merged folder is pushed when
    there is one, else the adapter; GGUF files go to ``gguf/`` in the same repository."""
    check_run(profile, run_dir)
    for quantization in gguf:
        check_gguf(profile, quantization)
    if push is not None:
        check_push(push)
    run = load_run(profile, run_dir)
    result = ExportResult(adapter=save_adapter(profile, run))
    print(f"adapter: {result.adapter}")
    if merge_weights or modelfile:
        result.merged = merge(profile, run)
        result.vllm = write_vllm_files(profile, result.merged)
    if verify:
        result.verify = verify_adapter(profile, run, merged_dir=result.merged)
        print(result.verify)
        if not result.verify.ok:
            print("export stopped: an adapter that did not verify is not converted or pushed")
            return result
    result.gguf = [to_gguf(profile, run, q) for q in gguf]
    if modelfile:
        source = result.gguf[0] if result.gguf else result.merged
        result.modelfile = write_modelfile(
            profile, source, export_dir(run) / "Modelfile", tokenizer_dir=result.merged
        )
    if push is not None:
        folder = result.merged or result.adapter
        result.pushed.append(push_to_hub(folder, push))
        if result.gguf:
            result.pushed.append(push_to_hub(result.gguf[0].parent, push, path_in_repo="gguf"))
    return result
