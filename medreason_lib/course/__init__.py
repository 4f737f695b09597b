"""The course itself: its map, the one call each notebook starts with, and ``make course``.

- ``COURSE_MAP``: the notebooks as data (what each teaches, which published model's recipe it
  relates to). Notebook 00 and the README show it.
- ``start(notebook)``: the first call of every notebook. It picks the profile (never the
  notebook), seeds everything, and prints what was chosen and why.
- ``record(name, value)``: a key number of a notebook, kept in ``runs/<profile>/results.json``
  so the run report can show it.
- ``python -m medreason_lib.course``: executes every notebook in order under the machine's
  profile, writes the executed copies and a run report to ``runs/<profile>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from medreason_lib.models import prepare_runtime
from medreason_lib.runtime.install import needs_gpu_stack, profile_for_notebook
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import (
    CPU_STAND_IN,
    ENV_VAR,
    Profile,
    get_profile,
    gpu_memory_gb,
)

NOTEBOOK_DIR = paths.repo_root() / "notebooks"
NOTEBOOK_ENV = "MEDREASON_NOTEBOOK"

# ``tiny_seconds``: each notebook's time in one `make course` run on a 2-core CPU
# (runs/tiny/course_report.json, 2026-11-27 11:07 UTC, 346 s for all twelve, exercises
# included), with cached tiny models and warm starts; a first run builds them.
# ``needs_runs``: the notebooks whose runs (a training run, a saved baseline) this one reads;
# its "Prerequisites" cell names them with their times (tests/course/test_notebook_structure.py).
COURSE_MAP: list[dict] = [
    {
        "notebook": "00_setup_and_tour",
        "tiny_seconds": "11",
        "needs_runs": [],
        "teaches": "environment check, profiles, the course map",
        "relates_to": "all three reference models (which notebook reproduces which recipe)",
    },
    {
        "notebook": "01_template_and_format_rewards",
        "tiny_seconds": "7",
        "needs_runs": [],
        "teaches": "the reasoning/answer template, parsing, three format rewards, reward hacking",
        "relates_to": "MedQwen3B-Reasoner's template and format rewards",
    },
    {
        "notebook": "02_medical_data_and_answer_rewards",
        "tiny_seconds": "12",
        "needs_runs": [],
        "teaches": "PubMedQA, MedQA, MedMCQA, MMLU, GSM8K as prompts; the 70/30 mix; "
        "correctness per answer type; decontamination",
        "relates_to": "MedQwen3B-Reasoner's 70% PubMedQA / 30% GSM8K mix",
    },
    {
        "notebook": "03_baseline_evaluation",
        "tiny_seconds": "14",
        "needs_runs": [],
        "teaches": "the evaluation harness; the untrained model's accuracy, format rate and "
        "answer distribution, with confidence intervals",
        "relates_to": "the 'before' column of every published model card",
    },
    {
        "notebook": "04_grpo_qwen_3b",
        "tiny_seconds": "127",
        "needs_runs": [],
        "teaches": "GRPO by hand, then GRPOTrainer with the course rewards; reading the "
        "training curves; checkpoints and resume",
        "relates_to": "MedQwen3B-Reasoner (GRPO on Qwen2.5-3B-Instruct)",
    },
    {
        "notebook": "05_evaluate_and_compare",
        "tiny_seconds": "30",
        "needs_runs": ["04", "03"],
        "teaches": "before/after on the same items and settings; error analysis; "
        "which published numbers are comparable",
        "relates_to": "published PubMedQA/MedQA/MedMCQA results of 3-20B medical models",
    },
    {
        "notebook": "06_scale_qwen3_8b",
        "tiny_seconds": "38",
        "needs_runs": [],
        "teaches": "the same pipeline on Qwen3-8B: thinking mode, LoRA targets, the memory "
        "plan per GPU, vLLM settings",
        "relates_to": "Qwen3-8B medical reasoners (SFT, then GRPO): the GRPO half (notebook 10 "
        "adds the SFT on reasoning traces)",
    },
    {
        "notebook": "07_scale_gpt_oss_20b",
        "tiny_seconds": "34",
        "needs_runs": [],
        "teaches": "a mixture-of-experts model in 4-bit on one GPU; harmony channels and how "
        "rewards and evaluation read them",
        "relates_to": "the gpt-oss-20b medical model fine-tuned with Unsloth",
    },
    {
        "notebook": "08_export_and_serve",
        "tiny_seconds": "14",
        "needs_runs": ["04"],
        "teaches": "save, merge, verify the adapter really trained; GGUF, Ollama, vLLM; "
        "asking the model",
        "relates_to": "MedQwen3B-Reasoner's card: every engine needs the system prompt",
    },
    {
        "notebook": "09_continued_pretraining",
        "tiny_seconds": "17",
        "needs_runs": [],
        "teaches": "continued pretraining on PubMedQA abstracts (training side only): LoRA plus "
        "fully trained embeddings and head at a smaller learning rate; held-out perplexity",
        "relates_to": "Reason·Med's first stage as its preliminary manuscript plans it (continued "
        "pretraining on PubMed text, then SFT, then GRPO; targets, not results)",
    },
    {
        "notebook": "10_sft_then_grpo",
        "tiny_seconds": "22",
        "needs_runs": [],
        "teaches": "reasoning traces (medical-o1, ReasonMed schemas) in the template, "
        "decontaminated; SFT with TRL's SFTTrainer, then GRPO from its result; untrained, SFT "
        "and SFT + GRPO on the same items; Q3X1's QLoRA rank 128 in the memory planner",
        "relates_to": "II-Medical (SFT on traces, then RL), the order Reason·Med's preliminary "
        "manuscript plans; Q3X1 (QLoRA r128, "
        "alpha 256 on Qwen3-8B)",
    },
    {
        "notebook": "11_dpo_for_safety",
        "tiny_seconds": "20",
        "needs_runs": ["04"],
        "teaches": "DPO on preference pairs from the GRPO adapter (TRL's DPOTrainer, beta, the "
        "reward margin); a documented caution rule; safety rate and PubMedQA accuracy before "
        "and after",
        "relates_to": "[Reasoning-Medical-20B](https://huggingface.co/EpistemeAI/"
        "Reasoning-Medical-20B) (gpt-oss-20b: SFT, then DPO for safety)",
    },
]

REFERENCE_MODELS = {
    "MedQwen3B-Reasoner": "GRPO on Qwen2.5-3B-Instruct, 70% PubMedQA / 30% GSM8K, the "
    "<reasoning>/<answer> template (profile 3b)",
    "Qwen3-8B medical reasoners": "SFT on reasoning traces, then GRPO, on Qwen3-8B; profile 8b "
    "runs the GRPO half (notebook 06); notebook 10 runs SFT on reasoning traces, then GRPO",
    "gpt-oss-20b medical model": "Unsloth 4-bit LoRA fine-tuning of gpt-oss-20b (profile 20b)",
}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def _why(profile: Profile, name: str | None) -> str:
    if name:
        return "named by the notebook"
    if os.environ.get(ENV_VAR):
        return f"${ENV_VAR}={os.environ[ENV_VAR]}"
    gb = gpu_memory_gb()
    return "no NVIDIA GPU found" if gb is None else f"GPU with {gb:.0f} GB found"


def start(notebook: str, *, scale: str | None = None, profile: str | None = None) -> Profile:
    """Begin a notebook: choose the profile, seed, and say what was chosen and why.

    ``scale`` is for the notebooks about one model size ("8b", "20b"): on a CPU, or on a GPU
    too small for that model, they get its tiny stand-in (``install.profile_for_notebook``
    says why). On a GPU profile Unsloth is imported first, before anything imports trl or
    transformers (it patches them), in the notebooks that load a model through it (00-02 do
    not: ``install.needs_gpu_stack``). On the tiny profile torch uses one thread: on a 2-core
    machine that is several times faster than two threads competing with the kernel.
    """
    os.environ.setdefault(NOTEBOOK_ENV, notebook)
    chosen = profile_for_notebook(notebook, profile, scale=scale)
    if needs_gpu_stack(notebook):
        prepare_runtime(chosen)  # on a GPU, Unsloth must be imported before trl
    from medreason_lib.settings.progress import quiet_libraries

    quiet_libraries()  # no per-call bars of datasets/transformers; bars true in saved copies
    _seed_everything(chosen.seed)
    if chosen.is_tiny:
        import torch

        torch.set_num_threads(1)
    print(
        f"[{notebook}] profile {chosen.name!r} ({_why(chosen, profile)}): {chosen.description}\n"
        f"  model {chosen.model_id}, runs in {paths.runs_dir(chosen.name)}"
    )
    return chosen


def record(name: str, value, profile: Profile | None = None) -> None:
    """Keep one key number of the running notebook for the run report."""
    from filelock import FileLock

    profile = profile or get_profile()
    notebook = os.environ.get(NOTEBOOK_ENV, "interactive")
    path = paths.runs_dir(profile.name) / "results.json"
    # notebooks of one profile may run side by side (make test's two processes): one writer
    # at a time, and a reader never sees a half-written file
    with FileLock(str(path.with_name(".results.json.lock"))):
        results = json.loads(path.read_text()) if path.exists() else {}
        results.setdefault(notebook, {})[name] = value
        tmp = path.with_name(f".results.json.{os.getpid()}")
        tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
        os.replace(tmp, path)


def notebooks(selected: list[str] | None = None) -> list[Path]:
    """The course notebooks in order (``NN_name.ipynb``), optionally only those whose number
    or name is in ``selected``."""
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if selected:
        found = [p for p in found if p.stem[:2] in selected or p.stem in selected]
        if not found:
            raise SystemExit(f"no notebook matches {selected} in {NOTEBOOK_DIR}")
    return found


def executed_copies() -> list[Path]:
    """The notebook copies ``make course`` executed, under every profile's run folder (none on
    a fresh clone): what the checks of executed notebooks read."""
    return sorted(paths.runs_dir().glob("*/notebooks/[0-9][0-9]_*.ipynb"))


def run_course(selected: list[str] | None = None, timeout: int = 3600) -> int:
    """Execute the notebooks in order; write executed copies and a report. Returns failures."""
    import nbformat
    from nbclient import NotebookClient
    from tqdm.auto import tqdm

    from medreason_lib.course.notebook_noise import find_noise

    profile = get_profile()
    out = paths.runs_dir(profile.name)
    (out / "notebooks").mkdir(exist_ok=True)
    # Notebooks about one model size record under their CPU stand-in's profile (06, 07).
    result_paths = [out / "results.json"]
    if not profile.uses_unsloth:  # a CPU profile: 06 and 07 run their tiny stand-ins
        result_paths += [paths.runs_dir(n) / "results.json" for n in CPU_STAND_IN.values()]
    for path in result_paths:
        path.unlink(missing_ok=True)
    rows = []
    for nb_path in (bar := tqdm(notebooks(selected), desc=f"course ({profile.name})")):
        bar.set_postfix_str(nb_path.stem)
        nb = nbformat.read(nb_path, as_version=4)
        os.environ[NOTEBOOK_ENV] = nb_path.stem
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(nb_path.parent)}},
        )
        began, error = time.perf_counter(), None
        try:
            client.execute()
        except Exception as exc:  # the notebook's own error, reported below and in the report
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}"
        seconds = time.perf_counter() - began
        nbformat.write(nb, out / "notebooks" / nb_path.name)
        noise = find_noise(nb)  # what a learner should not see (notebook_noise)
        rows.append(
            {
                "notebook": nb_path.stem,
                "seconds": round(seconds, 1),
                "error": error,
                "noise": [str(n)[:160] for n in noise],
            }
        )
        if error:
            tqdm.write(f"FAILED {nb_path.stem}: {error}")
        for finding in noise:
            tqdm.write(f"NOISE {nb_path.stem}: {str(finding)[:160]}")
    results = {}
    for path in result_paths:
        if path.exists():
            results.update(json.loads(path.read_text()))
    _write_report(out, profile, rows, results)
    return sum(1 for r in rows if r["error"])


def _write_report(out: Path, profile: Profile, rows: list[dict], results: dict) -> None:
    lines = [
        f"# Course run: profile `{profile.name}`",
        "",
        f"Model `{profile.model_id}`; {time.strftime('%Y-%m-%d %H:%M:%S')}; "
        f"total {sum(r['seconds'] for r in rows):.0f} s.",
        "",
        "| notebook | status | seconds | key numbers |",
        "|---|---|---|---|",
    ]
    for r in rows:
        numbers = ", ".join(f"{k}={v}" for k, v in sorted(results.get(r["notebook"], {}).items()))
        status = "ok" if not r["error"] else f"FAILED: {r['error']}"
        if r.get("noise"):
            status += f"; {len(r['noise'])} noise findings (notebook_noise)"
        lines.append(f"| {r['notebook']} | {status} | {r['seconds']} | {numbers} |")
    (out / "course_report.md").write_text("\n".join(lines) + "\n")
    report = {"profile": profile.name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    report |= {"notebooks": rows, "results": results}  # course_report: the guide's numbers
    (out / "course_report.json").write_text(json.dumps(report, indent=2))
    print("\n".join(lines))
    print(f"\nexecuted notebooks and this report are in {out}")


PROFILE_NOTEBOOKS = {
    "tiny": "all, on a CPU",
    "tiny-qwen3": "06 on a CPU",
    "tiny-gptoss": "07 on a CPU",
    "smol": "the laptop track: a real model on a CPU (`train`, `eval`; `MEDREASON_PROFILE=smol`)",
    "3b": "03, 04, 05, 08",
    "8b": "06",
    "20b": "07",
}


def profiles_markdown() -> str:
    """The README's profile table, made from ``PROFILES`` and the memory planner (a test
    keeps the README in sync)."""
    from medreason_lib.models.memory import plan_for_profile, smallest_gpu
    from medreason_lib.settings.profiles import PROFILES

    lines = [
        "| profile | model | 4-bit | seq len | completion | LoRA r | G | steps | "
        "GRPO memory (planned) | smallest GPU that fits | minutes / 100 steps | notebooks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in PROFILES.values():
        memory, smallest, speed = "CPU", "none", "see `make bench`"
        if p.uses_unsloth:
            speed = "not measured yet"
            memory = f"{plan_for_profile(p).total_gb:.1f} GB"
            smallest = smallest_gpu(p)  # fits with the planner's margin, and is practical
        used = PROFILE_NOTEBOOKS.get(p.name, "")
        lines.append(
            f"| `{p.name}` | `{p.model_id}` | {'yes' if p.load_in_4bit else 'no'} | "
            f"{p.max_seq_length} | {p.max_completion_length} | {p.lora_rank} | "
            f"{p.num_generations} | {p.max_steps} | {memory} | {smallest} | {speed} | {used} |"
        )
    return "\n".join(lines)


def course_map_markdown() -> str:
    """The README's course map, made from ``COURSE_MAP``."""
    lines = [
        "| notebook | what it teaches | tiny, CPU | GPU profiles | relates to |",
        "|---|---|---|---|---|",
    ]
    for e in COURSE_MAP:
        lines.append(
            f"| `{e['notebook']}` | {e['teaches']} | {e['tiny_seconds']} s | not measured yet | "
            f"{e['relates_to']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the course notebooks in order.")
    parser.add_argument("--profile", help="profile name (default: $MEDREASON_PROFILE or auto)")
    parser.add_argument("--only", nargs="*", help="notebook numbers or names to run")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    if args.profile:
        os.environ[ENV_VAR] = args.profile
    failures = run_course(args.only, timeout=args.timeout)
    return 1 if failures else 0
