"""SmolLM2-135M-Instruct under GRPO on a CPU: a setting that collapses beside the course's.
Prints figures and draws ``runs/smol-study/collapse.png``.

Both runs start from the same warm start (the smol profile's LoRA SFT on the bundled
reasoning traces, cached) and train on the same label-balanced mix for ``STEPS`` steps:

- ``collapse-prone``: no KL term (beta 0), a learning rate 4x the profile's, and 2 prompts a
  step (8 completions): each step's update follows a handful of answers;
- ``course``: the smol profile as it is (its beta, learning rate and 4 prompts a step).

For each run it prints the format rate and the PubMedQA answer shares of the training
completions (``metrics.csv``: ``callbacks.AnswerShares``) over the first and last quarter of
the steps, the step the collapse alarm went off (if it did), seconds a step, and then what
matters more: the trained adapter's greedy answers on the profile's PubMedQA test items
(``benchmarks.profile_benchmarks``: 20 real items where ``shared/reference-data`` is here),
their largest answer share and accuracy. One run of each, on a 2-core CPU: a single seed,
not a distribution.

Run: ``.venv/bin/python benchmarks/smol_collapse.py [STEPS]``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from medreason_lib.data.benchmarks import profile_benchmarks
from medreason_lib.evaluation import evaluate_model
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training import train

SMOL = PROFILES["smol"]
RUNS = {
    "collapse-prone": {
        "beta": 0.0,
        "learning_rate": 4 * SMOL.learning_rate,
        "per_device_train_batch_size": 8,
    },
    "course": {},
}
LABELS = ("yes", "no", "maybe")


def summarise(name: str, metrics: pd.DataFrame, seconds: float) -> dict:
    quarter = max(1, len(metrics) // 4)
    first, last = metrics.head(quarter), metrics.tail(quarter)
    shares = {lab: f"answers/pubmedqa/{lab}" for lab in LABELS}
    present = {lab: col for lab, col in shares.items() if col in metrics}
    alarm = metrics.loc[metrics.get("answers/collapse_alarm", pd.Series(dtype=float)) == 1, "step"]
    return {
        "run": name,
        "format first": first["answers/format_rate"].mean(),
        "format last": last["answers/format_rate"].mean(),
        **{f"{lab} last": last[col].mean() for lab, col in present.items()},
        "top share max": metrics.get("answers/pubmedqa/top_share", pd.Series([float("nan")])).max(),
        "alarm step": int(alarm.iloc[0]) if len(alarm) else None,
        "reward first": first["reward"].mean(),
        "reward last": last["reward"].mean(),
        "s/step": seconds / len(metrics),
    }


def greedy_pubmedqa(profile, name: str, run) -> dict:
    """The trained adapter's greedy answers on the profile's PubMedQA test items."""
    items = profile_benchmarks(profile).filter(lambda row: row["task"] == "pubmedqa")
    report = evaluate_model(
        profile, f"collapse-{name}", base=run.base_model, adapter=run.adapter_dir,
        dataset=items, progress=False,
    )  # fmt: skip
    stats = report.by_task["pubmedqa"]
    print(f"{name}: greedy PubMedQA answers {stats.answer_counts} on {stats.n} items")
    return {
        "greedy top answer": f"{stats.dominant_answer} {stats.dominant_share:.0%}",
        "greedy accuracy": stats.accuracy,
        "greedy format": stats.format_rate,
    }


def plot(results: dict[str, pd.DataFrame], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), sharey=True)
    for ax, (name, metrics) in zip(axes, results.items(), strict=True):
        for lab in LABELS:
            col = f"answers/pubmedqa/{lab}"
            if col in metrics:
                ax.plot(metrics["step"], metrics[col], label=f"'{lab}' share", marker=".")
        ax.plot(metrics["step"], metrics["answers/format_rate"], "k--", label="format rate")
        ax.set_title(name)
        ax.set_xlabel("GRPO step")
    axes[0].set_ylabel("share of completions")
    axes[-1].legend(fontsize=8)
    fig.suptitle("SmolLM2-135M under GRPO: PubMedQA answer shares")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(f"plot: {out}")


def main(steps: int = 20) -> None:
    folder = paths.runs_dir("smol-study")
    results, rows = {}, []
    for name, changes in RUNS.items():
        profile = SMOL.replace(name="smol-study", max_steps=steps, save_steps=steps, **changes)
        began = time.perf_counter()
        run = train(profile, run_dir=folder / name, sample_every=0)
        metrics = pd.read_csv(run.metrics_csv)
        results[name] = metrics
        rows.append(summarise(name, metrics, time.perf_counter() - began))
        rows[-1] |= greedy_pubmedqa(profile, name, run)
    print(pd.DataFrame(rows).round(3).to_string(index=False))
    plot(results, folder / "collapse.png")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
