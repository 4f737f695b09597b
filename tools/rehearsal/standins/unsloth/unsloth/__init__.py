"""Rehearsal stand-in for unsloth 2026.10.9 (``tools/rehearsal``), not the real package.

It loads the course's tiny model of the asked model's family on the CPU, so training and
evaluation really run, and enforces the contracts of the pinned Unsloth that the course
depends on, each named after its entry in ``tools.rehearsal.contracts`` (which cites the
pinned source line):

- ``no-gpu``: importing it without a GPU raises ``NotImplementedError``.
- ``import-order``: importing it after trl, transformers or peft warns as Unsloth does (and
  the rehearsal counts it as a broken contract).
- ``bf16-by-capability`` / ``load-dtype``: models load float16 below compute capability 8.0,
  bfloat16 from it (gpt-oss without bf16 trains in float32, as Unsloth forces it).
- ``precision-mismatch``: a trainer asked for bf16 on a float16 model, or fp16 on a bfloat16
  one, raises Unsloth's ``TypeError``.
- ``fast-inference-needs-vllm``, ``4bit-vllm-needs-plugin``, ``gpt-oss-no-fast-inference``,
  ``vllm-engine-size``, ``load-lora``, ``lora-rank``: the vLLM engine of ``fast_inference``.
- ``embedding-offload``: re-applying LoRA that trains the embeddings leaves the frozen
  original embedding off the device the inputs go to (here: the ``meta`` device).
- GPU memory: each load books the memory planner's figure on the simulated card; a second
  model loaded while the first is still held, or a booking that does not fit, raises CUDA
  out-of-memory.

The real CPU run underneath: a config asked for bf16/fp16 and an 8-bit optimiser is recorded
(``_rehearsal_request``), then runs in float32 with torch's AdamW on the CPU.
"""

from __future__ import annotations

import sys
import warnings

import _medreason_rehearsal as sim

__version__ = "2026.10.9"

_critical = [m for m in ("trl", "transformers", "peft") if m in sys.modules]
if _critical:  # contract import-order (the text is Unsloth's)
    _message = (
        f"WARNING: Unsloth should be imported before [{', '.join(_critical)}] to ensure all "
        "optimizations are applied. Your code may run slower or encounter memory issues "
        "without these optimizations.\n\nPlease restructure your imports with 'import "
        "unsloth' at the top of your file."
    )
    warnings.warn(_message, stacklevel=2)
    sim.violation("import-order", f"unsloth imported after {', '.join(_critical)}")

import torch  # noqa: E402

if not torch.cuda.is_available():  # contract no-gpu
    raise NotImplementedError("Unsloth cannot find any torch accelerator? You need a GPU.")

import unsloth_zoo  # noqa: E402, F401  (a hard dependency of unsloth)

SUPPORTS_BFLOAT16 = torch.cuda.get_device_capability()[0] >= 8  # contract bf16-by-capability


def is_bfloat16_supported() -> bool:
    return SUPPORTS_BFLOAT16


from . import _trl_patch  # noqa: E402
from ._loader import FastLanguageModel, FastModel  # noqa: E402

_trl_patch.patch_trl()
UnslothTrainer = _trl_patch.UnslothTrainer
UnslothTrainingArguments = _trl_patch.UnslothTrainingArguments

__all__ = [
    "FastLanguageModel",
    "FastModel",
    "UnslothTrainer",
    "UnslothTrainingArguments",
    "is_bfloat16_supported",
]
