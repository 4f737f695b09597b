"""Charts of evaluation reports (matplotlib, imported when a chart is drawn).

- ``plot_accuracy``: accuracy per task with 95% Wilson intervals as error bars, for one or
  several reports, with the chance and majority-answer baselines marked.
- ``plot_answer_distribution``: which answers the model gave against the gold ones, per task
  with a closed answer set (PubMedQA yes/no/maybe, the A-D choice tasks).
- ``plot_ci_width``: how wide a 95% interval is for n items, what a sample size can tell.

Each returns the matplotlib ``Figure`` and draws nothing else; notebooks show it.
"""

from __future__ import annotations

from collections.abc import Sequence

from medreason_lib.evaluation import EvalReport, ci_half_width


def _as_dict(reports: EvalReport | dict[str, EvalReport]) -> dict[str, EvalReport]:
    if isinstance(reports, EvalReport):
        return {reports.name or "model": reports}
    return dict(reports)


def plot_accuracy(
    reports: EvalReport | dict[str, EvalReport],
    baselines: dict[str, dict] | None = None,
    title: str = "Accuracy per benchmark (95% Wilson intervals)",
):
    """Grouped bars, one group per task and one bar per report, with CI error bars.

    ``baselines`` (from ``evaluation.gold_baselines``) adds a dashed line at chance and a
    dotted line at the majority-answer score over each group.
    """
    import matplotlib.pyplot as plt

    reports = _as_dict(reports)
    tasks = sorted({t for r in reports.values() for t in r.by_task})
    width = 0.8 / len(reports)
    fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 2, 3.6))
    for i, (label, report) in enumerate(reports.items()):
        xs = [t + (i - (len(reports) - 1) / 2) * width for t in range(len(tasks))]
        stats = [report.by_task.get(t) for t in tasks]
        acc = [s.accuracy if s else 0.0 for s in stats]
        # clamped at 0: at an accuracy of 0 or 1 the Wilson bound can differ from it by a
        # rounding error of the wrong sign, which matplotlib refuses
        low = [max(0.0, s.accuracy - s.ci95[0]) if s else 0.0 for s in stats]
        high = [max(0.0, s.ci95[1] - s.accuracy) if s else 0.0 for s in stats]
        ax.bar(xs, acc, width, yerr=[low, high], capsize=3, label=label)
    for x, task in enumerate(tasks):
        base = (baselines or {}).get(task)
        if base and base["chance"] is not None:
            ax.hlines(base["chance"], x - 0.45, x + 0.45, colors="grey", linestyles="--")
        if base:
            ax.hlines(base["majority"], x - 0.45, x + 0.45, colors="black", linestyles=":")
    ax.set_xticks(range(len(tasks)), [f"{t}\n(n={_n(reports, t)})" for t in tasks])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    key = "\n-- chance   ··· always the commonest gold answer" if baselines else ""
    ax.set_title(title + key)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return fig


def _n(reports: dict[str, EvalReport], task: str) -> int:
    return max(r.by_task[task].n for r in reports.values() if task in r.by_task)


def plot_answer_distribution(report: EvalReport, tasks: Sequence[str] | None = None):
    """Per task, the share of each answer the model gave (including "unparsed" and "failed")
    beside the share of each gold answer. Tasks without a closed answer set are skipped.
    (The one-report case of ``eval_plots.plot_answer_distributions``.)"""
    from medreason_lib.evaluation.eval_plots import plot_answer_distributions

    return plot_answer_distributions({"model": report}, tasks)


def plot_ci_width(ns: Sequence[int] = (25, 50, 100, 200, 500, 1000, 2000), p: float = 0.5):
    """The half-width of the 95% Wilson interval against the number of items, at accuracy p."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    widths = [100 * ci_half_width(n, p) for n in ns]
    ax.plot(ns, widths, marker="o")
    for n, w in zip(ns, widths, strict=True):
        ax.annotate(f"±{w:.1f}", (n, w), textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set_xlim(min(ns) / 1.4, max(ns) * 1.8)  # room for the last label
    ax.set_ylim(0, max(widths) * 1.25)  # the first point's label stays under the title
    ax.set_xlabel("items evaluated (n)")
    ax.set_ylabel("95% CI half-width (points)")
    ax.set_title(f"How precise is an accuracy near {p:.0%}?")
    fig.tight_layout()
    return fig


# --- Training curves (GRPO metrics.csv) -----------------------------------------------------

# (title, y-axis label, columns); "rewards/*/mean" expands to every reward function's mean.
TRAINING_PANELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("total reward", "mean reward per completion", ("reward",)),
    ("each reward function", "mean reward", ("rewards/*/mean",)),
    ("reward spread inside the batch", "reward_std", ("reward_std",)),
    ("groups with no learning signal", "share of groups", ("frac_reward_zero_std",)),
    ("completion length", "tokens (mean)", ("completions/mean_length",)),
    ("completions cut at the length cap", "share of completions", ("completions/clipped_ratio",)),
)


# Columns that are shares (0 to 1): their panels keep that whole range, so 1.0 stands out.
FRACTION_COLUMNS = ("frac_reward_zero_std", "completions/clipped_ratio")


def read_metrics(metrics_csv):
    """The metrics CSV of a run (``MetricsCSV``) as a DataFrame, one row per step, in order."""
    import pandas as pd

    frame = pd.read_csv(metrics_csv)
    if "step" not in frame.columns or frame.empty:
        raise ValueError(f"{metrics_csv} has no logged steps (is it a run's metrics.csv?)")
    return frame.sort_values("step").drop_duplicates("step", keep="last").reset_index(drop=True)


def smooth(values, window: int):
    """Trailing rolling mean over ``window`` logged steps (shorter at the start)."""
    import pandas as pd

    return pd.Series(values, dtype=float).rolling(max(1, int(window)), min_periods=1).mean()


def default_window(n_steps: int) -> int:
    """A tenth of the run, at least 1: 3 steps of a 30-step run, 50 of a 500-step run."""
    return max(1, round(n_steps / 10))


def _expand(columns: tuple[str, ...], available: list[str]) -> list[str]:
    found = []
    for col in columns:
        if "*" in col:
            head, tail = col.split("*", 1)
            found += [c for c in available if c.startswith(head) and c.endswith(tail)]
        elif col in available:
            found.append(col)
    return found


def _label(column: str) -> str:
    if column.startswith("rewards/") and column.endswith("/mean"):
        return column.removeprefix("rewards/").removesuffix("/mean").removesuffix("_reward")
    return column


def plot_training(
    metrics_csv,
    window: int | None = None,
    panels: Sequence[tuple[str, str, tuple[str, ...]]] = TRAINING_PANELS,
    title: str | None = None,
):
    """The GRPO training curves of a run, from its ``metrics.csv``.

    Each panel draws the logged values as faint points and their trailing rolling mean over
    ``window`` logged steps (``default_window`` when None) as a line. Columns that a run did
    not log are skipped; a panel with none left says so. Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    frame = read_metrics(metrics_csv)
    window = window or default_window(len(frame))
    cols = 3 if len(panels) > 4 else 2
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.9 * rows), squeeze=False)
    for ax, (panel_title, ylabel, columns) in zip(axes.flat, panels, strict=False):
        found = _expand(columns, list(frame.columns))
        for i, column in enumerate(found):
            color, style = f"C{i}", ("-", "--", ":", "-.")[i % 4]  # overlapping lines stay visible
            ax.plot(frame["step"], frame[column], ".", color=color, alpha=0.25, markersize=4)
            smoothed = smooth(frame[column], window)
            ax.plot(frame["step"], smoothed, style, color=color, label=_label(column))
        if not found:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        if len(found) > 1:
            ax.legend(fontsize="x-small")
        if found and all(c in FRACTION_COLUMNS for c in found):
            ax.set_ylim(-0.03, 1.03)
        ax.set_title(panel_title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no 2.5
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(
        title or f"GRPO training: points = logged steps, lines = rolling mean of {window}",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


# --- What the policy answers (AnswerShares columns of metrics.csv) -------------------------


def plot_answer_shares(metrics, share: float | None = None):
    """Per task, the share of each answer among the completions at every logged step.

    ``metrics`` is a run's ``metrics.csv`` (or its DataFrame) with the ``answers/...``
    columns that ``callbacks.AnswerShares`` logs. Closed answer sets (yes/no/maybe, A-D)
    are stacked areas, "none" (no readable answer) on top in grey; a number task shows the
    share of its commonest answer. The dashed line is the collapse share (90% unless
    ``share`` is given), the dotted line the format rate, and a red vertical line marks the
    step where the collapse alarm went off. Returns the ``Figure``.
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    from medreason_lib.scoring.stats import COLLAPSE_SHARE

    share = COLLAPSE_SHARE if share is None else share
    if isinstance(metrics, pd.DataFrame):
        frame = metrics.sort_values("step").reset_index(drop=True)
    else:
        frame = read_metrics(metrics)
    columns = [c for c in frame.columns if c.startswith("answers/") and c.count("/") == 2]
    tasks = sorted({c.split("/")[1] for c in columns})
    if not tasks:
        raise ValueError(
            f"{metrics if not isinstance(metrics, pd.DataFrame) else 'the metrics'} hold no "
            "answers/<task>/<answer> columns: the run did not log answer shares "
            "(trained before callbacks.AnswerShares existed, or no step was logged)"
        )
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.8 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        own = [c for c in columns if c.split("/")[1] == task]
        rows = frame.dropna(subset=own, how="all")
        labels = [c for c in own if c.split("/")[2] not in ("none", "top_share")]
        steps = rows["step"]
        if labels:
            stacked = [rows[c].fillna(0) for c in labels] + [rows[f"answers/{task}/none"].fillna(0)]
            names = [c.split("/")[2] for c in labels] + ["none"]
            colors = [f"C{i}" for i in range(len(labels))] + ["lightgrey"]
            ax.stackplot(steps, stacked, labels=names, colors=colors, alpha=0.85)
        else:
            ax.plot(steps, rows[f"answers/{task}/top_share"], label="commonest answer")
            ax.plot(steps, rows[f"answers/{task}/none"], color="grey", label="none")
        ax.axhline(
            share, color="black", linestyle="--", linewidth=1, label=f"alarm share {share:.0%}"
        )
        if "answers/format_rate" in rows:
            ax.plot(steps, rows["answers/format_rate"], "k:", label="format rate")
        alarm = frame.get("answers/collapse_alarm")
        for step in frame.loc[alarm.fillna(0) > 0, "step"] if alarm is not None else []:
            ax.axvline(step, color="red", linewidth=2, label="collapse alarm")
        ax.set_ylim(0, 1)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("share of completions", fontsize=8)
        ax.set_title(f"{task}: answers per step", fontsize=10)
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("What the policy answers during GRPO", fontsize=11)
    fig.tight_layout()
    return fig
