"""Charts that put several evaluation reports side by side (before/after training).

- ``plot_answer_distributions``: per task with a closed answer set, the share of each answer
  every report gave ("unparsed" and "failed" included) beside the gold answers' shares.
  A model that learned to say one answer to everything shows up here, not in the accuracy.
- ``plot_completion_lengths``: how long the completions were, per report, with the token
  limit marked; a pile-up at the limit means truncated answers.
- ``plot_confusion_matrices``: one task's confusion matrix per report (gold x answered, with
  the ``unparsed`` column), each row coloured by its share and labelled with its recall:
  whether a model ever says "maybe", and to which questions, is read off here.
- ``plot_pass_at``: a sampled report's pass@j for j = 1..k, per task and overall, beside
  what a random guesser among the options gets (1 - (1 - 1/options)^j): pass@k rises with k
  whatever the model knows, so it is not an accuracy.

Each returns the matplotlib ``Figure`` (``plots`` has the single-report charts).
"""

from __future__ import annotations

from collections.abc import Sequence

from medreason_lib.evaluation.reports import EvalReport

EXTRA = ("unparsed", "failed")


def plot_answer_distributions(reports: dict[str, EvalReport], tasks: Sequence[str] | None = None):
    """One panel per task: grouped bars, one per report and one for the gold answers."""
    import matplotlib.pyplot as plt

    first = next(iter(reports.values()))
    closed = [t for t, s in first.by_task.items() if s.confusion is not None]
    tasks = [t for t in (tasks or closed) if t in closed]
    if not tasks:
        raise ValueError("no task with a closed answer set (yes/no/maybe or A-D) in the reports")
    groups = len(reports) + 1
    width = 0.8 / groups
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.3), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        stats = {label: r.by_task[task] for label, r in reports.items()}
        any_stats = next(iter(stats.values()))
        labels = [*any_stats.confusion, *EXTRA]
        series = {k: [s.answer_counts.get(a, 0) / s.n for a in labels] for k, s in stats.items()}
        series["gold"] = [any_stats.gold_counts.get(a, 0) / any_stats.n for a in labels]
        for i, (name, shares) in enumerate(series.items()):
            offset = (i - (groups - 1) / 2) * width
            hatch = "//" if name == "gold" else None
            ax.bar([x + offset for x in range(len(labels))], shares, width, label=name, hatch=hatch)
        ax.set_xticks(range(len(labels)), labels, rotation=45)
        ax.set_ylim(0, 1)
        ax.set_title(f"{task} (n={any_stats.n})")
    axes[0][0].set_ylabel("share of items")
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_confusion_matrices(reports: dict[str, EvalReport], task: str = "pubmedqa"):
    """Side by side, one heatmap per report: rows are the gold labels (with their count and
    recall), columns what the model answered, ``unparsed`` included (``failed`` too when
    any item failed). Cells hold counts; the colour is the share of the row."""
    import matplotlib.pyplot as plt

    stats = {}
    for label, report in reports.items():
        s = report.by_task.get(task)
        if s is None or s.confusion is None:
            raise ValueError(f"report {label!r} has no confusion matrix for {task!r}")
        stats[label] = s
    failed = any(s.failed for s in stats.values())
    fig, axes = plt.subplots(1, len(stats), figsize=(3.9 * len(stats), 3.3), squeeze=False)
    for ax, (label, s) in zip(axes[0], stats.items(), strict=True):
        golds = list(s.confusion)
        cols = [c for c in s.confusion[golds[0]] if c != "failed" or failed]
        counts = [[s.confusion[g][c] for c in cols] for g in golds]
        shares = [[v / max(sum(row), 1) for v in row] for row in counts]
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for i, row in enumerate(counts):
            for j, value in enumerate(row):
                dark = shares[i][j] > 0.6
                ax.text(j, i, value, ha="center", va="center", color="white" if dark else "black")
        recall = s.recall or {}
        ylabels = [
            f"{g} (n={sum(counts[i])}, recall "
            + ("-" if recall.get(g) is None else f"{100 * recall[g]:.0f}%")
            + ")"
            for i, g in enumerate(golds)
        ]
        ax.set_xticks(range(len(cols)), cols, rotation=30)
        ax.set_yticks(range(len(golds)), ylabels)
        ax.set_xlabel("answered")
        ax.set_title(f"{label}: {task} ({s.accuracy:.0%} right)")
    axes[0][0].set_ylabel("gold")
    fig.tight_layout()
    return fig


def completion_lengths(report: EvalReport) -> tuple[list[float], str]:
    """The completions' lengths in tokens, or in characters when the backend did not count
    tokens; returns ``(lengths, unit)``. Failed items have no completion and are left out."""
    answered = [r for r in report.records if r["error"] is None]
    if answered and all(r["n_tokens"] is not None for r in answered):
        return [float(r["n_tokens"]) for r in answered], "tokens"
    return [float(len(r["completion"])) for r in answered], "characters"


def plot_completion_lengths(reports: dict[str, EvalReport], bins: int = 20):
    """Overlaid histograms of completion length, one per report, with the token limit
    (``max_new_tokens`` of the first report's settings) as a dashed line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    measured = {label: completion_lengths(report) for label, report in reports.items()}
    units = {unit for _, unit in measured.values()}
    limit = next(iter(reports.values())).settings.generation.max_new_tokens
    top = max([limit, *(max(lengths, default=0) for lengths, _ in measured.values())])
    edges = [top * i / bins for i in range(bins + 1)]  # the same bins for every report
    for label, (lengths, _) in measured.items():
        ax.hist(lengths, bins=edges, alpha=0.5, label=f"{label} (mean {_mean(lengths):.0f})")
    if units == {"tokens"}:
        ax.axvline(limit, color="black", linestyle="--", label=f"limit ({limit} tokens)")
    ax.set_xlabel(" / ".join(sorted(units)))
    ax.set_ylabel("completions")
    ax.set_title("Completion lengths")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def plot_scoring_methods(generated: dict, by_loglik: dict, baselines: dict, tasks: Sequence[str]):
    """One panel per model (the keys of ``by_loglik``, each also a key of ``generated``): per
    task, the generative accuracy (an ``EvalReport``) beside the log-likelihood accuracy (a
    ``loglik.LoglikReport``), each with its 95% Wilson interval, and chance as a black dash."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(by_loglik), figsize=(5.5 * len(by_loglik), 3.5), sharey=True, squeeze=False
    )
    width = 0.38
    for ax, label in zip(axes[0], by_loglik, strict=True):
        for j, method in enumerate(("generate", "loglik")):
            shown = []
            for task in tasks:
                if method == "loglik":
                    stats = by_loglik[label].tasks[task]
                    acc, (low, high) = stats["acc"], stats["acc_ci"]
                else:
                    stats = generated[label].by_task[task]
                    acc, (low, high) = stats.accuracy, stats.ci95
                shown.append((100 * acc, 100 * max(0.0, acc - low), 100 * max(0.0, high - acc)))
            xs = [x + (j - 0.5) * width for x in range(len(tasks))]
            values, below, above = zip(*shown, strict=True)
            ax.bar(xs, values, width, yerr=[below, above], capsize=3, label=method)
        for x, task in enumerate(tasks):
            chance = baselines[task]["chance"]
            if chance is not None:
                ax.hlines(
                    100 * chance,
                    x - 0.45,
                    x + 0.45,
                    colors="black",
                    label="chance" if x == 0 else "_nolegend_",
                )
        ax.set_xticks(range(len(tasks)), tasks)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy, % (95% Wilson)")
        ax.set_title(f"{label}: generated answer vs log-likelihood", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_pass_at(report, options: Sequence[int] = (3, 4)):
    """pass@j for j = 1..k of a ``SampledReport`` (per task, and all items in black), with
    a random guesser among ``options`` answers as grey dashed and dotted lines."""
    import matplotlib.pyplot as plt

    ks = list(range(1, report.k + 1))
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for task in report.by_task:
        ax.plot(ks, [report.pass_at(j, task).value for j in ks], marker="o", ms=4, label=task)
    ax.plot(ks, [report.pass_at(j).value for j in ks], color="black", lw=2, marker="s", label="all")
    names = {3: "yes/no/maybe", 4: "A-D"}
    for n, style in zip(options, ("--", ":", "-.", "--"), strict=False):
        guess = [1 - (1 - 1 / n) ** j for j in ks]
        kind = f" ({names[n]})" if n in names else ""
        ax.plot(ks, guess, ls=style, color="grey", lw=1.2, label=f"guessing 1 of {n}{kind}")
    ax.set_xticks(ks)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("j samples per item")
    ax.set_ylabel("pass@j")
    ax.set_title(f"pass@j from {report.k} samples per item (Chen et al.'s estimator)", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig
