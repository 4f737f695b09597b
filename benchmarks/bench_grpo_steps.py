"""GRPO step speed on the tiny profile, and how much of it the reward functions take.

Runs ``--steps`` GRPO steps with the library's own ``training.train`` (the same call as
notebook 04) in ``--run-dir`` (a temporary folder by default). The SFT warm start that
``train`` needs first is built once in ``<run-dir>/sft-warmstart`` and reused by later runs in
the same folder; it is timed on its own, so the GRPO figures never include it. Checkpoints are
off (``save_strategy="no"``) so the step time is generation + scoring + update only.

Prints steps per second (from the trainer's wall time, which includes a first, slower step),
the median logged ``step_time``, peak RSS of the process, and the share of GRPO time spent
inside the four reward functions (``run.reward_seconds / run.train_seconds``), with a
PASS/FAIL line for "reward share < 5%": generation, not scoring, should dominate a step.
Training output (progress bar, per-step logs) goes to ``<run-dir>/bench.log``.

Run: ``MEDREASON_PROFILE=tiny .venv/bin/python benchmarks/bench_grpo_steps.py --steps 10``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import tempfile
import time
from pathlib import Path

import datasets
import pandas as pd
import torch

from medreason_lib import training
from medreason_lib.settings import profiles
from medreason_lib.training.config import training_dataset
from medreason_lib.training.sft import run_warmstart

REWARD_SHARE_LIMIT = 0.05


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="GRPO steps to run (default 10)")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="run folder; reuse one to reuse its SFT warm start (default: a new temp dir)",
    )
    args = parser.parse_args(argv)

    datasets.disable_progress_bars()
    torch.set_num_threads(1)  # fastest for the 0.7M-parameter model on a small CPU
    profile = profiles.get_profile(os.environ.get(profiles.ENV_VAR) or "tiny")
    if not profile.is_tiny:
        raise SystemExit("this benchmark is for the tiny profiles (CPU)")
    profile = profile.replace(max_steps=args.steps)
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="bench_grpo_"))
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "bench.log"
    dataset = training_dataset(profile)

    with (
        log_path.open("a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        began = time.perf_counter()
        warm = run_dir / "sft-warmstart"
        reused = (warm / "config.json").exists()
        run_warmstart(profile, dataset, warm)
        sft_seconds = time.perf_counter() - began

        began = time.perf_counter()
        run = training.train(
            profile, run_dir=run_dir, dataset=dataset, sample_every=0, save_strategy="no"
        )
        call_seconds = time.perf_counter() - began

    step_times = pd.read_csv(run.metrics_csv).get("step_time")
    share = run.reward_seconds / run.train_seconds
    verdict = "PASS" if share < REWARD_SHARE_LIMIT else "FAIL"
    print(f"profile {profile.name}, {run.global_step} GRPO steps in {run_dir}")
    print(
        f"SFT warm start:         {sft_seconds:7.1f} s "
        f"({'reused' if reused else f'{profile.sft_warmup_steps} steps'})"
    )
    print(
        f"GRPO trainer.train:     {run.train_seconds:7.1f} s  (train() call {call_seconds:.1f} s)"
    )
    print(f"steps per second:       {run.global_step / run.train_seconds:7.3f}")
    if step_times is not None:
        print(f"median step_time:       {step_times.median():7.2f} s")
    print(f"peak RSS:               {peak_rss_mb():7.0f} MB")
    print(f"time in reward funcs:   {run.reward_seconds:7.3f} s  ({share:.2%} of GRPO time)")
    print(f"{verdict}: reward share {share:.2%} < {REWARD_SHARE_LIMIT:.0%}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
