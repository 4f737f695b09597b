"""Save and merge a trained adapter: the folders an export starts from.

Both steps take the profile and the ``TrainingRun`` that ``training.train`` left and write
into ``<run>/export/`` (``export_dir``):

- ``save_adapter``: the LoRA adapter, with its tokenizer and a model card (``adapter/``).
- ``merge``: the adapter folded into the base weights, one ordinary model folder
  (``merged/``) that vLLM, transformers and Ollama read without peft. Tiny: peft's
  ``merge_and_unload`` + ``save_pretrained``. GPU: Unsloth's
  ``model.save_pretrained_merged(dir, tokenizer, save_method="merged_16bit")``.

Each folder carries a stamp (``medreason_export.json``: the adapter's hash, the step, the
system prompt), so a merge of the same adapter is reused. The model card states the
educational-use disclaimer and the system prompt every client must send. Unsloth's keyword
arguments come from ``unsloth_merged_kwargs``, which the API-drift tests check against the
pinned Unsloth source; nothing here imports Unsloth (GPU models come from ``models``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from medreason_lib.scoring import template
from medreason_lib.settings.profiles import Profile

if TYPE_CHECKING:
    from medreason_lib.training import TrainingRun

# Unsloth's save_method values the course uses. "merged_4bit" is refused by the pinned
# Unsloth (2026.10.9), which asks for "merged_4bit_forced" (tests/gpu_path/test_api_drift.py).
MERGE_METHODS = ("merged_16bit", "merged_4bit_forced", "lora")
STAMP = "medreason_export.json"
# the transformers backend (tiny, smol) loads, merges and verifies in float32, whatever it
# trains in: merged into bf16 weights, a LoRA delta is rounded (smol: logits off by up to 1.4)
MERGE_DTYPE = "float32"


# A fixed question, written for this course in PubMedQA's shape: the model card's example,
# the prompt verify_adapter checks, and the serving files' example request.
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
    from medreason_lib import data

    example = data.build_prompt(VERIFY_ROW)
    what = {
        "adapter": "a LoRA adapter (load it on its base model with peft or Unsloth)",
        # tiny: peft's merge in float32; GPU profiles: Unsloth's merged_16bit
        "merged": "the LoRA adapter merged into the base model's weights "
        + ("(float32)" if not profile.uses_unsloth else "(16-bit)"),
    }[kind]
    return f"""---
base_model: {run.base_model}
tags: [medreason, grpo, lora, medical, reasoning, educational]
---

# medreason ({profile.name}): {what}

> **{template.DISCLAIMER}**

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

    Transformers backend (tiny, smol): ``models.load_model`` with peft, in ``MERGE_DTYPE``.
    GPU: Unsloth loads the adapter folder itself (it reads the base from
    ``adapter_config.json``) without vLLM, which attaches Unsloth's saving methods
    (``save_pretrained_merged``, ``save_pretrained_gguf``) to the LoRA model. (A plain peft
    wrapper would forward those calls to the base model and save it *without* the LoRA.)
    """
    from medreason_lib import models

    if not profile.uses_unsloth:  # float32: a LoRA delta merged into bf16 weights is rounded
        return models.load_model(
            profile, base=run.base_model, adapter=run.adapter_dir, dtype=MERGE_DTYPE
        )
    return models.load_model(profile.replace(use_vllm=False), base=run.adapter_dir)


def _load_folder(profile: Profile, folder: str | Path):
    """A saved model folder (a merge), loaded as the profile loads models (GPU: no vLLM)."""
    from medreason_lib import models

    if not profile.uses_unsloth:
        return models.load_model(profile, base=folder, dtype=MERGE_DTYPE)
    return models.load_model(profile.replace(use_vllm=False), base=folder)


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
    if not profile.uses_unsloth:
        merged = loaded.model.merge_and_unload()
        merged.save_pretrained(str(out))
        loaded.tokenizer.save_pretrained(str(out))
    else:
        kwargs = unsloth_merged_kwargs("merged_16bit")
        loaded.model.save_pretrained_merged(str(out), loaded.tokenizer, **kwargs)
