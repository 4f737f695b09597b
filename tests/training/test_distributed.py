"""GRPO under DDP on a CPU: two processes (torchrun through ``accelerate launch``, gloo).

The command a learner with two GPUs runs is the one this test runs, on the CPU:

    accelerate launch --multi_gpu --num_processes 2 -m medreason_lib train --profile tiny ...

(On a machine without CUDA, accelerate's ``--multi_gpu`` starts the processes with torchrun
and they join a gloo process group on the CPU. ``--cpu --num_processes 2`` is not the same:
accelerate 1.15 launches more than one CPU process only through MPI, and without
``--mpirun_hostfile`` it starts a single process.)

What must hold: both processes train (the run records ``processes: 2``), the steps are the
ones asked for, and there is one run folder, written once: one ``run.json``, one metrics row
per step, one adapter, one copy of the warm start. The run is the session's ``ddp_run``
(tests/conftest.py), which also reports to trackio for ``test_trackers``: one launch (28 s in
the fresh-clone `make test` of 2026-11-27, 11:32 UTC) checks both.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import DDP_SFT_STEPS, DDP_STEPS

ROOT = Path(__file__).resolve().parents[2]


def test_grpo_runs_under_ddp_on_two_cpu_processes(ddp_run):
    """The session's DDP run (``ddp_run``, tests/conftest.py; test_trackers reads its trackio
    log). From a cache with no warm start: both processes train the SFT warm start together
    (DDP), process 0 alone writes it and stores it in the cache while the other waits for
    its stamp, then GRPO runs on both."""
    assert ddp_run.returncode == 0, ddp_run.stdout[-3000:] + ddp_run.stderr[-3000:]
    run_dir = ddp_run.run_dir

    info = json.loads((run_dir / "run.json").read_text())
    assert info["processes"] == 2, info
    assert info["global_step"] == DDP_STEPS
    with open(run_dir / "metrics.csv", newline="") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert steps == list(range(1, DDP_STEPS + 1)), steps  # each step logged once, by process 0
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    # printed by process 0; it can only finish with process 1 training beside it (DDP)
    assert ddp_run.stdout.count(f"SFT warm start: {DDP_SFT_STEPS} steps") == 1
    stamp = (run_dir / "sft-warmstart" / "warmstart.json").read_text()
    (cached,) = [p for p in (ddp_run.cache / "warmstart").iterdir() if not p.name.startswith(".")]
    assert (cached / "warmstart.json").read_text() == stamp
    # process 0 reports, the other is silent: the summary is printed once
    assert ddp_run.stdout.count("trained: ") == 1, ddp_run.stdout
    # one run folder: nothing written beside it, no second warm start
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["grpo"]
    assert not ddp_run.runs.exists() or not any(ddp_run.runs.rglob("run.json"))


def test_the_shipped_multi_gpu_configs_parse():
    """The accelerate and DeepSpeed files the README documents exist and say what it says."""
    import yaml

    folder = ROOT / "configs" / "multi_gpu"
    ddp = yaml.safe_load((folder / "accelerate_ddp.yaml").read_text())
    assert ddp["distributed_type"] == "MULTI_GPU" and ddp["num_processes"] >= 2
    zero3 = yaml.safe_load((folder / "accelerate_zero3.yaml").read_text())
    assert zero3["distributed_type"] == "DEEPSPEED"
    ds_file = ROOT / zero3["deepspeed_config"]["deepspeed_config_file"]
    ds = json.loads(ds_file.read_text())
    assert ds["zero_optimization"]["stage"] == 3
    readme = (ROOT / "README.md").read_text()
    for name in ("accelerate_ddp.yaml", "accelerate_zero3.yaml", "trl vllm-serve"):
        assert name in readme, f"README's multi-GPU section does not mention {name}"
