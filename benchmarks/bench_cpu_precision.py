"""Training a real small model on a CPU: gradient checkpointing and bf16 autocast. Prints figures.

SmolLM2-135M-Instruct (the ``smol`` profile, built offline) with the profile's LoRA, trained
with TRL's ``SFTTrainer`` on the bundled reasoning traces (the warm start's data: batches of
8 rows, about 180 tokens padded) for ``STEPS`` steps in three settings, one after the other
in one process:

1. TRL's default: gradient checkpointing on, float32;
2. no gradient checkpointing, float32;
3. no gradient checkpointing, bf16 autocast (``bf16=True``: the weights stay float32, the
   matrix products run in bf16). Where the CPU has no native bf16 (AVX512-BF16 or AMX) it is
   emulated and slower: ``training.config.cpu_has_bf16`` says which, and the course's
   ``machine_flags`` uses bf16 only where it is native.

Each figure is seconds per step after one warm-up step; the ratios are to setting 1, in the
same run. On a shared machine the absolute figures move with the load, the ratios less.

Run: ``.venv/bin/python benchmarks/bench_cpu_precision.py [STEPS]``
"""

from __future__ import annotations

import sys
import time

from medreason_lib.models import load_for_training, release
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training.config import cpu_has_bf16
from medreason_lib.training.sft import sft_settings
from medreason_lib.training.sft_traces import trace_sft_data
from medreason_lib.training.trl_compat import install_cpu_logprob_fallback

SETTINGS = {
    "checkpointing, float32 (TRL's default)": {"gradient_checkpointing": True, "bf16": False},
    "no checkpointing, float32": {"gradient_checkpointing": False, "bf16": False},
    "no checkpointing, bf16 autocast": {"gradient_checkpointing": False, "bf16": True},
}


def seconds_per_step(profile, rows, steps: int, **flags) -> float:
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class Clock(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    model, tokenizer, lora = load_for_training(profile)
    settings = sft_settings(profile, "/tmp/bench_cpu_precision", steps + 1, **flags)
    clock = Clock()
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**settings),
        train_dataset=rows,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[clock],
    )
    trainer.train()
    release(trainer)
    return (clock.times[-1] - clock.times[0]) / steps  # after the first (warm-up) step


def main(steps: int = 3) -> None:
    install_cpu_logprob_fallback()
    profile = PROFILES["smol"]
    rows, _, _ = trace_sft_data(profile)
    rows = rows.remove_columns(["id"])
    print(f"CPU has native bf16: {cpu_has_bf16()}; {steps} timed steps of 8 rows each")
    figures = {name: seconds_per_step(profile, rows, steps, **f) for name, f in SETTINGS.items()}
    first = next(iter(figures.values()))
    for name, seconds in figures.items():
        print(f"  {name:40s} {seconds:6.1f} s/step   {first / seconds:4.1f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
