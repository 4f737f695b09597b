"""How long a GRPO run takes on a GPU: a rough estimate, and the choice it feeds.

A GPU notebook must never start hours of training unasked. ``session_profile`` estimates the
profile's whole run on the detected card; above ``LONG_RUN_MINUTES`` it trains
``workshop_steps`` instead, unless the notebook sets ``full_run=True``, and it says both
times either way.

The estimate is a model of the two costs of a GRPO step, not a measurement:

- **generation** is bound by memory bandwidth: each new token of a batch reads every weight
  once, so ``max_completion_length`` decode steps take ``weights / bandwidth`` each, divided
  by an efficiency (``DECODE_EFFICIENCY``: vLLM keeps the GPU busier than Hugging Face
  generation). Completions are assumed to run to the cap, so this is an upper bound.
- **training** (a forward pass for the sampling policy's log-probabilities, then the
  policy's forward and backward, over prompt + completion tokens) is bound by arithmetic:
  about ``8 x active parameters x tokens`` operations at ``TRAIN_MFU`` of the card's 16-bit
  tensor throughput.
- **the rest** (rewards, the scheduler, syncing LoRA weights into vLLM, logging) is a fixed
  ``STEP_OVERHEAD_S`` per step.

The cards' figures are their vendors' datasheet numbers (dense, no sparsity); the
efficiencies are assumptions. Expect the real time within a factor of about two either way;
``benchmarks/gpu_smoke.py`` measures seconds per step on a real card.
"""

from __future__ import annotations

from dataclasses import dataclass

from medreason_lib.models.memory import GB, plan_for_profile
from medreason_lib.models.memory_specs import spec_of
from medreason_lib.settings.profiles import Profile

LONG_RUN_MINUTES = 15  # longer than this needs an explicit choice in the notebook

# name as in memory_specs.GPUS -> (memory bandwidth GB/s, dense 16-bit tensor TFLOPS)
GPU_SPEED = {
    "T4": (320, 65),
    "L4": (300, 121),
    "A10G": (600, 125),
    "A100-40GB": (1555, 312),
    "A100-80GB": (2039, 312),
    "H100": (3350, 989),
    "H200": (4800, 989),
}
DECODE_EFFICIENCY = {"vllm": 0.5, "hf": 0.15}  # assumed share of the bandwidth bound
TRAIN_MFU = 0.3  # assumed share of the tensor throughput the training step reaches
STEP_OVERHEAD_S = 3.0  # assumed seconds per step outside generation and the passes


def gpu_key(name: str | None) -> str | None:
    """``GPU_SPEED``'s key for an ``nvidia-smi`` name ('Tesla T4' -> 'T4'); None if unknown."""
    if not name:
        return None
    upper = name.upper().replace(" ", "")
    if "A100" in upper:
        return "A100-80GB" if "80" in upper else "A100-40GB"
    for key in ("H200", "H100", "A10G", "L4", "T4"):
        if key in upper:
            return key
    return None


@dataclass(frozen=True)
class StepEstimate:
    gpu: str
    generation_s: float
    training_s: float
    overhead_s: float = STEP_OVERHEAD_S

    @property
    def seconds(self) -> float:
        return self.generation_s + self.training_s + self.overhead_s

    def minutes(self, steps: int) -> float:
        return self.seconds * steps / 60


def estimate_step(profile: Profile, gpu: str) -> StepEstimate:
    """Seconds of one GRPO step of ``profile`` on ``gpu`` (a ``GPU_SPEED`` key)."""
    bandwidth, tflops = GPU_SPEED[gpu]
    weights_gb = plan_for_profile(profile, "grpo", gpu=gpu).breakdown["weights"]
    backend = "vllm" if profile.use_vllm else "hf"
    per_token = weights_gb * GB / (bandwidth * 1e9 * DECODE_EFFICIENCY[backend])
    generation = profile.max_completion_length * per_token
    tokens = profile.per_device_train_batch_size * (
        profile.max_prompt_length + profile.max_completion_length
    )
    operations = 8 * spec_of(profile).active_params * tokens
    training = operations / (tflops * 1e12 * TRAIN_MFU)
    return StepEstimate(gpu, generation, training)


def _duration(minutes: float) -> str:
    return f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"


def session_profile(
    profile: Profile, *, full_run: bool = False, workshop_steps: int = 30, gpu_name=None
) -> Profile:
    """The profile to train now: ``profile`` itself when its run is short (tiny profiles, or
    under ``LONG_RUN_MINUTES`` on this card) or ``full_run`` is set; else ``profile`` with
    ``max_steps=workshop_steps``. Prints the estimate and the choice.

    ``gpu_name``: the card (default: ``nvidia-smi``'s first GPU)."""
    if profile.is_tiny:
        return profile
    if gpu_name is None:
        from medreason_lib.runtime.install import read_gpu

        found = read_gpu()
        gpu_name = found.name if found else None
    gpu = gpu_key(gpu_name)
    if gpu is None:
        card = f"GPU {gpu_name!r}" if gpu_name else "this machine (no GPU)"
        print(f"no speed figures for {card}: training all {profile.max_steps} steps")
        return profile
    step = estimate_step(profile, gpu)
    whole = step.minutes(profile.max_steps)
    where = (
        f"on this {gpu} ({step.seconds:.0f} s a step, a rough estimate: "
        "medreason_lib.runtime.speed)"
    )
    if full_run or whole <= LONG_RUN_MINUTES:
        print(f"training all {profile.max_steps} steps: about {_duration(whole)} {where}")
        return profile
    steps = min(workshop_steps, profile.max_steps)
    print(
        f"the full run ({profile.max_steps} steps) would take about {_duration(whole)} {where}. "
        f"Training {steps} steps now (about {_duration(step.minutes(steps))}); set "
        f"FULL_RUN = True in this cell to train all {profile.max_steps}."
    )
    return profile.replace(max_steps=steps)
