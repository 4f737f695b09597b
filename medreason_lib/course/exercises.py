"""The machinery of the notebooks' exercises: the learner's answer or the course's solution,
and short retraining runs that change one thing.

- ``yours_or_solution(value, solution, *args)``: a check cell tests ``value``, the learner's
  answer; while it is still ``None`` (the learner cell's stub) it tests ``solution(*args)``
  (from ``medreason_lib.course.solutions``) instead and says so. A notebook therefore runs from top
  to bottom before anyone fills it in, and the same check then tests the learner's answer.
- ``retrain(profile, name, steps=...)``: a short GRPO run with one change (``profile``
  changed with ``profile.replace``, other reward weights, a GRPOConfig override) in
  ``runs/<profile>/exercises/<name>``. It starts from the warm start of the profile's main
  run (``runs/<profile>/grpo/sft-warmstart``, copied when present; ``train`` checks that it
  was made from the same model, data and settings, and redoes it otherwise), so on ``tiny``
  it costs only its GRPO steps.
- ``side_run_items(profile, items)``: the items a side run is evaluated on (fewer where the
  profile cuts its side runs).
- ``side_by_side(runs, columns, steps)``: the mean of some logged metrics over the first
  ``steps`` steps of several runs (the main run included), as a table and a plot.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from medreason_lib.course import record
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import Profile, apply_caps

STUB = None  # what a learner cell holds until the learner writes an answer


def yours_or_solution(value, solution, *args, call: bool = True, **kwargs):
    """``value`` when the learner wrote one; else the course's solution, with a note:
    ``solution(*args, **kwargs)``, or with ``call=False`` the function ``solution`` itself
    (for an exercise whose answer is a function)."""
    if value is not STUB:
        print("checking your answer")
        return value
    print(
        f"your answer is still None: checking the course's solution "
        f"(medreason_lib.course.solutions.{solution.__name__}) instead. Fill in the cell above and "
        "run this cell again to check yours."
    )
    return solution(*args, **kwargs) if call else solution


def exercise_dir(profile: Profile, name: str) -> Path:
    """``runs/<profile>/exercises/<name>``: where an exercise's retraining run goes."""
    if not name or any(c in name for c in "/\\") or name in {".", ".."}:
        raise ValueError(f"exercise name {name!r} must be a plain folder name")
    return paths.runs_dir(profile.name) / "exercises" / name


def retrain(profile: Profile, name: str, *, steps: int = 10, main_run_dir=None, **overrides):
    """A ``steps``-step GRPO run of ``profile`` in ``exercise_dir(profile, name)``, starting
    from the main run's SFT warm start; ``overrides`` go to ``training.train`` (e.g.
    ``reward_weights=[...]``, ``loss_type="dr_grpo"``). Prints its wall time; returns the
    ``TrainingRun``. Its wall time goes to the course report (``course.record``). A profile
    whose steps are slow caps a side run (``Profile.side_run``: smol trains 1 step of 2
    prompts, and says so); the environment's caps (``profiles.apply_caps``:
    ``MEDREASON_MAX_STEPS``) still apply."""
    from medreason_lib import training

    if steps < 1:
        raise ValueError(f"retrain: steps must be at least 1, got {steps}")
    run_dir = exercise_dir(profile, name)
    main = Path(main_run_dir) if main_run_dir else training.default_run_dir(profile)
    warm = main / "sft-warmstart"
    if profile.sft_warmup_steps and warm.is_dir() and not (run_dir / "sft-warmstart").exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(warm, run_dir / "sft-warmstart")
    side = profile.side_run(steps)
    batch, asked = side.per_device_train_batch_size, profile.per_device_train_batch_size
    if side.max_steps < steps or batch < asked:
        print(f"exercise run {name!r}: {side.max_steps} step(s) of {batch} completions instead "
              f"of {steps} of {asked} (profile {profile.name!r}: side_run_steps, "
              "side_run_batch): its curves show the mechanics, not a comparison")  # fmt: skip
    began = time.perf_counter()
    run = training.train(apply_caps(side), run_dir=run_dir, sample_every=0, **overrides)
    seconds = time.perf_counter() - began
    print(f"exercise run {name!r}: {run.global_step} GRPO steps in {seconds:.0f} s (wall)")
    record(f"exercise_{name.replace('-', '_')}_seconds", round(seconds, 1), profile)
    return run


def side_run_items(profile: Profile, items, per_task: int = 4):
    """The items a side run is evaluated on: all of ``items``; on a profile that cuts its
    side runs (``side_run_steps``: smol trains 1 step) the first ``per_task`` of each task,
    with a note. A one-step run changes little, and 100 greedy answers cost smol 3 minutes."""
    if not profile.side_run_steps:
        return items
    seen: dict[str, int] = {}
    keep = []
    for i, task in enumerate(items["task"]):
        seen[task] = seen.get(task, 0) + 1
        if seen[task] <= per_task:
            keep.append(i)
    print(f"side run evaluated on {len(keep)} of the {len(items)} items ({per_task} a task; "
          f"profile {profile.name!r} cuts side runs): compare it on these items only")  # fmt: skip
    return items.select(keep)


STYLES = [("o", "-", 7), ("s", "--", 5.5), ("^", ":", 4.5), ("D", "-.", 3.5), ("v", "-", 3)]


def side_by_side(metrics_csvs: dict, columns: list[str], steps: int):
    """Mean of ``columns`` over the first ``steps`` logged steps of each run
    (``{label: metrics.csv}``), as a DataFrame (runs as columns), and a plot of each column
    against the step. Each run has its own marker, line style and marker size (later runs
    smaller), so a curve drawn over an identical one stays visible; where two runs logged the
    same values, the panel's legend says so ("= grpo")."""
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.ticker import MaxNLocator

    from medreason_lib.evaluation.plots import read_metrics

    frames = {label: read_metrics(path) for label, path in metrics_csvs.items()}
    frames = {label: df[df["step"] <= steps] for label, df in frames.items()}
    for label, df in frames.items():
        missing = [c for c in columns if c not in df.columns]
        if missing or df.empty:
            raise ValueError(
                f"run {label!r} logged no {missing or columns} in its first {steps} steps"
            )
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 2.8), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        drawn: dict[str, list] = {}
        for (label, df), (marker, line, size) in zip(
            frames.items(), _styles(len(frames)), strict=True
        ):
            values = df[column].round(6).tolist()
            same = next((other for other, v in drawn.items() if v == values), None)
            drawn[label] = values
            shown = f"{label} (= {same})" if same else label
            ax.plot(df["step"], df[column], marker=marker, ls=line, ms=size, label=shown,
                    mfc="none" if size > 5 else None)  # fmt: skip
        ax.set_title(column, fontsize=9)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if any(" (= " in t for t in ax.get_legend_handles_labels()[1]) or ax is axes[0][0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    plt.show()
    return pd.DataFrame({label: df[columns].mean() for label, df in frames.items()})


def _styles(n: int) -> list[tuple[str, str, float]]:
    return [STYLES[i % len(STYLES)] for i in range(n)]
