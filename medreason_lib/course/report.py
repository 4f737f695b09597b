"""The instructors' guide's expected numbers, written from a ``make course`` report.

``make course`` keeps each notebook's key numbers (``course.record``) in
``runs/<profile>/course_report.json``, with the date of the run. docs/instructors.md quotes
them between two markers; ``python -m medreason_lib.course.report`` rewrites that block from
the report (``--report``, ``--doc`` for other files), so the guide says what a run produced,
and when, never numbers typed by hand. A notebook that recorded nothing gets "not in this
report" rather than an old value.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from medreason_lib.settings import paths

BEGIN = "<!-- expected numbers: begin (python -m medreason_lib.course.report) -->"
END = "<!-- expected numbers: end -->"

# notebook -> one line, from the keys that notebook records (str.format over its results)
LINES = {
    "00_setup_and_tour": "tiny model: {tiny_parameters:,} parameters, built in "
    "{tiny_build_seconds} s",
    "01_template_and_format_rewards": "of the gallery's completions, the copied regexes accept "
    "{copied_regexes_accept}, the course's soft format reward {course_soft_format_accepts}; the "
    "four rewards take {rewards_ms_per_1000_completions} ms per 1,000 completions",
    "02_medical_data_and_answer_rewards": "{mix_rows}-row tiny mix, PubMedQA share "
    "{mix_pubmedqa_share}, labels {mix_label_shares_pubmedqa}; "
    "{mix_rows_removed_by_decontamination} rows removed by decontamination",
    "03_baseline_evaluation": "untrained tiny model: accuracy {baseline_accuracy:.1%}, format "
    "{baseline_format_rate:.0%}; PubMedQA 95% half-width {pubmedqa_ci_half_width}",
    "04_grpo_qwen_3b": "mean reward {reward_first_window} over the first window of steps, "
    "{reward_last_window} over the last; the GRPO step by hand matches TRL's loss to "
    "{grpo_by_hand_loss_abs_diff:.1e}; loss variants' mean reward over 6 steps "
    "{loss_variant_reward_means} (one seed: no ranking); GRPO {train_seconds} s",
    "05_evaluate_and_compare": "after GRPO {after_accuracy:.2%} "
    "({accuracy_delta_points:+.2f} points), McNemar p {mcnemar_p_all}, caveat on "
    "{mcnemar_caveat_tasks}; PubMedQA's top answer {after_pubmedqa_top_answer}; recall of "
    "'maybe' {after_maybe_recall}",
    "06_scale_qwen3_8b": "planner {planned_gb_8b_grpo} GB for `8b`; `tiny-qwen3`: mean reward "
    "{reward_first_window} -> {reward_last_window}; accuracy after {after_accuracy:.2%} "
    "({accuracy_delta_points:+.2f} points); {seconds_per_step} s per step",
    "07_scale_gpt_oss_20b": "planner {planned_gb_20b_grpo} GB for `20b`; `tiny-gptoss`: mean "
    "reward {reward_first_window} -> {reward_last_window}; accuracy after {after_accuracy:.2%} "
    "({accuracy_delta_points:+.2f} points); {seconds_per_step} s per step",
    "08_export_and_serve": "adapter {adapter_mb} MB, merged {merged_mb} MB; merged vs trained "
    "max logit difference {merged_vs_trained_max_logit_diff:.2e}, trained vs base "
    "{trained_vs_base_max_logit_diff}; verified {verified}",
    "09_continued_pretraining": "held-out perplexity {perplexity_before:,} -> "
    "{perplexity_after:,}, training abstracts -> {train_perplexity_after:,}; CPT loss "
    "{cpt_loss_first} -> {cpt_loss_last}; {cpt_trainable_parameters:,} trainable numbers",
    "10_sft_then_grpo": "{traces_removed_by_decontamination} trace removed by decontamination; "
    "SFT loss {sft_loss_first} -> {sft_loss_last}; accuracy untrained {untrained_accuracy:.1%}, "
    "SFT {sft_accuracy:.1%}, SFT + GRPO {sft_grpo_accuracy:.1%}",
    "11_dpo_for_safety": "DPO margin {dpo_margin_first} -> {dpo_margin_last}; safety rate "
    "{safety_rate_before:.0%} -> {safety_rate_after:.0%}; PubMedQA "
    "{pubmedqa_accuracy_before_dpo:.1%} -> {pubmedqa_accuracy_after_dpo:.1%} (McNemar p "
    "{pubmedqa_dpo_mcnemar_p}); {heldout_answers_changed} held-out answers changed, "
    "{heldout_referrals_gained} gained a referral",
}


def line(notebook: str, results: dict) -> str:
    """The guide's line for one notebook, or why there is none."""
    derived = {f"{k}_points": 100 * v for k, v in results.items() if k.endswith("_delta")}
    try:
        return LINES[notebook].format(**results, **derived)
    except KeyError as missing:
        return f"not in this report (no {missing} recorded)"


def block(report: dict) -> str:
    """The markdown block (between ``BEGIN`` and ``END``) for a course report."""
    when = report.get("date", "an undated run")
    rows = [
        BEGIN,
        f"From the `make course` report of {when} (profile `{report['profile']}`, "
        "`runs/<profile>/course_report.json`); `python -m medreason_lib.course.report` rewrites "
        "this table from a newer one.",
        "",
        "| notebook | tiny: what the run recorded |",
        "|---|---|",
    ]
    for notebook in LINES:
        rows.append(f"| {notebook[:2]} | {line(notebook, report['results'].get(notebook, {}))} |")
    return "\n".join([*rows, END])


def rewrite(doc: Path, report: dict) -> bool:
    """Replace the block in ``doc``; True when the file changed."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} has no block between {BEGIN!r} and {END!r}")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = head + block(report) + tail
    if new != text:
        doc.write_text(new)
    return new != text


def load(path: Path) -> dict:
    """A course report; one written before reports carried their date gets its file's."""
    report = json.loads(path.read_text())
    if "date" not in report:
        report["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(path.stat().st_mtime))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the guide's expected numbers.")
    parser.add_argument(
        "--report", type=Path, default=paths.runs_dir("tiny") / "course_report.json"
    )
    parser.add_argument("--doc", type=Path, default=paths.repo_root() / "docs" / "instructors.md")
    args = parser.parse_args(argv)
    report = load(args.report)
    changed = rewrite(args.doc, report)
    print(f"{args.doc}: {'rewritten' if changed else 'already up to date'} from {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
