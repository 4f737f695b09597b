"""Rehearsal stand-in for vLLM 0.33.0 (``tools/rehearsal``): the names the course and TRL
import, over an engine that generates with the tiny model on the CPU. It keeps vLLM's
contracts the course depends on (``tools.rehearsal.contracts``): ``max_model_len`` (a prompt
at or over it raises; prompt plus output stops at it), LoRA only through a ``LoRARequest``
up to ``max_lora_rank``, ``n > 1`` samples only when sampling (not at temperature 0), and the
GPU memory an engine takes."""

from .entrypoints.llm import LLM
from .outputs import CompletionOutput, RequestOutput
from .sampling_params import SamplingParams

__version__ = "0.33.0"
__all__ = ["LLM", "CompletionOutput", "RequestOutput", "SamplingParams"]
