"""DPO for safety: TRL's DPOTrainer on preference pairs, starting from the GRPO adapter.

``train_dpo(profile, run, pairs)`` is the stage, the same call on tiny and on a GPU:

1. the model: ``models.load_adapter_for_training`` loads the GRPO run's base model with its
   adapter, trainable (peft on tiny, Unsloth on a GPU: TRL's trainers are patched by Unsloth
   when it is imported first, ``course.start`` does that);
2. the pairs as a conversational preference dataset (``dpo_dataset``: the course's system
   prompt and the user's question; chosen and rejected as assistant turns, split into the
   harmony channels for gpt-oss);
3. ``DPOTrainer`` with ``dpo_config``, no ``ref_model``: with a peft model TRL copies the
   adapter into a frozen "ref" adapter and computes the reference log-probabilities with it,
   so the reference is the GRPO policy itself and only one model is held;
4. the metrics (``rewards/margins``, ``rewards/accuracies``, ``loss``...) logged every step
   to ``<dpo run>/metrics.csv``; the trained adapter (the "ref" copy removed) saved to
   ``<dpo run>/adapter`` and ``run.json`` saying what it started from; the trainer and model
   freed (``models.close_trainer``).

The loss (``loss_type="sigmoid"``, DPO's own): for a pair, with ``beta`` the strength of the
pull towards the reference,
``margin = beta * [(log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected))]``
and ``loss = -log sigmoid(margin)``. TRL logs the batch mean of that margin as
``rewards/margins``: 0 at the first step (the policy is the reference), growing while the
policy learns to prefer the chosen answers.

``evaluate_stage`` measures a model for the notebook's before/after: the share of held-out
prompts whose greedy response the rule ``safety.judge`` finds appropriately cautious, and the
PubMedQA accuracy through the course's evaluation harness, from one loaded model.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from medreason_lib import models
from medreason_lib.data.benchmarks import profile_benchmarks
from medreason_lib.data.safety import Verdict, judge, safety_rate
from medreason_lib.evaluation import EvalReport, EvalSettings, eval_engine_len, evaluate_loaded
from medreason_lib.evaluation.generation import make_generate, to_completion
from medreason_lib.scoring import template
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import Profile, capped
from medreason_lib.training.callbacks import MetricsCSV, use_course_progress
from medreason_lib.training.config import machine_flags

# DPO's settings per kind of profile. Tiny: 8 steps at learning rate 1e-3 move the margin on
# the training pairs from 0 to about 9 and leave the PubMedQA answers as they were (measured on
# a 2-core CPU, 2026-11-27); 5e-3 drove the margin past 15 and broke the model's template.
# GPU: the usual LoRA DPO values (learning rate 5e-6, beta 0.1, batch 2 x 4 accumulation, as
# Unsloth's DPO notebook), three passes over the pairs. Not measured on a GPU by this course.
TINY_DPO = {"learning_rate": 1e-3, "beta": 0.1, "batch": 8, "accumulation": 1, "steps": 8}
GPU_DPO = {"learning_rate": 5e-6, "beta": 0.1, "batch": 2, "accumulation": 4, "epochs": 3}
# A real model on a CPU (smol): 12 steps of 8 pairs (two passes over the 48) at 5e-5, ten
# times the GPU rate for a 135M model's few steps; a first choice, measured by notebook 11.
CPU_DPO = {"learning_rate": 5e-5, "beta": 0.1, "batch": 8, "accumulation": 1, "steps": 12}
# new tokens for the safety evaluation: room for a referral after the reasoning block
SAFETY_NEW_TOKENS = 160
MARGIN = "rewards/margins"


def dpo_defaults(profile: Profile) -> dict:
    """``TINY_DPO`` on tiny, ``CPU_DPO`` on another model on transformers (smol), else
    ``GPU_DPO``."""
    if profile.is_tiny:
        return dict(TINY_DPO)
    return dict(GPU_DPO if profile.uses_unsloth else CPU_DPO)


def default_steps(profile: Profile, n_pairs: int) -> int:
    """Tiny and smol: their settings' ``steps``; GPU: ``epochs`` passes over ``n_pairs`` at
    the effective batch; either way at most ``$MEDREASON_MAX_STEPS`` when that is set."""
    d = dpo_defaults(profile)
    if "steps" in d:
        return capped(d["steps"])
    return capped(max(1, math.ceil(d["epochs"] * n_pairs / (d["batch"] * d["accumulation"]))))


def dpo_settings(profile: Profile, output_dir: Path, steps: int, **overrides) -> dict:
    """The keyword arguments of TRL's ``DPOConfig`` (``overrides`` win). Every one is checked
    against the pinned TRL by the drift tests."""
    d = dpo_defaults(profile)
    settings = {
        "output_dir": str(output_dir),
        "max_steps": steps,
        "per_device_train_batch_size": d["batch"],
        "gradient_accumulation_steps": d["accumulation"],
        "learning_rate": d["learning_rate"],
        "lr_scheduler_type": "constant",
        "beta": d["beta"],
        "loss_type": ["sigmoid"],
        "max_length": profile.max_seq_length,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "seed": profile.seed,
        "disable_tqdm": True,
        **machine_flags(profile),
    }
    settings.update(overrides)
    return settings


def dpo_config(profile: Profile, output_dir: Path, steps: int, **overrides):
    from trl import DPOConfig

    return DPOConfig(**dpo_settings(profile, output_dir, steps, **overrides))


def _assistant(text: str, family: str) -> dict:
    """A template response as the assistant turn of the chat ``family`` (gpt-oss: the
    reasoning in the analysis channel, the answer in the final one, as the SFT warm start)."""
    if family == "gpt-oss":
        parsed = template.parse_completion(text)
        return {
            "role": "assistant",
            "thinking": parsed.reasoning or "",
            "content": parsed.answer or "",
        }
    return {"role": "assistant", "content": text}


def chat(prompt: str, system_prompt: str | None = template.SYSTEM_PROMPT) -> list[dict]:
    """The conversation a safety prompt is asked in (the course's system prompt first)."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return system + [{"role": "user", "content": prompt}]


def dpo_dataset(pairs: list[dict], profile: Profile):
    """The pairs in TRL's conversational preference layout: ``prompt`` (system + user),
    ``chosen`` and ``rejected`` (one assistant turn each), and the profile's chat-template
    keywords in a ``chat_template_kwargs`` column when it has any."""
    from datasets import Dataset

    rows = []
    for pair in pairs:
        row = {
            "prompt": chat(pair["prompt"]),
            "chosen": [_assistant(pair["chosen"], profile.family)],
            "rejected": [_assistant(pair["rejected"], profile.family)],
        }
        if profile.chat_template_kwargs:
            row["chat_template_kwargs"] = dict(profile.chat_template_kwargs)
        rows.append(row)
    return Dataset.from_list(rows)


@dataclass
class DPORun:
    """A finished DPO stage: its folder, the adapter it saved and the margins it logged."""

    run_dir: Path
    base_model: str
    adapter_dir: Path
    started_from: str
    global_step: int
    margins: list[float] = field(default_factory=list)
    train_seconds: float = 0.0

    @property
    def metrics_csv(self) -> Path:
        return self.run_dir / "metrics.csv"

    @property
    def margin_first(self) -> float:
        return self.margins[0]

    @property
    def margin_last(self) -> float:
        return self.margins[-1]


def default_dpo_dir(profile: Profile) -> Path:
    return paths.runs_dir(profile.name) / "dpo"


def read_margins(metrics_csv: str | Path) -> list[float]:
    """The ``rewards/margins`` column of a DPO ``metrics.csv``, step by step."""
    with Path(metrics_csv).open() as f:
        return [float(r[MARGIN]) for r in csv.DictReader(f) if r.get(MARGIN) not in (None, "")]


def train_dpo(
    profile: Profile,
    run,
    pairs: list[dict],
    *,
    run_dir: str | Path | None = None,
    steps: int | None = None,
    **config_overrides,
) -> DPORun:
    """DPO on ``pairs`` from ``run``'s adapter (a ``training.TrainingRun``: its
    ``base_model`` and ``adapter_dir``), into ``run_dir`` (default ``runs/<profile>/dpo``).
    See the module docstring for the steps. Nothing of the model is held when it returns."""
    import time

    from trl import DPOTrainer

    from medreason_lib.training.trl_compat import install_cpu_logprob_fallback

    install_cpu_logprob_fallback()  # TRL's fused log-prob kernel has no CPU build
    run_dir = Path(run_dir) if run_dir else default_dpo_dir(profile)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.csv").unlink(missing_ok=True)
    steps = steps or default_steps(profile, len(pairs))
    model, tokenizer = models.load_adapter_for_training(
        profile, base=run.base_model, adapter=run.adapter_dir
    )
    trainer = DPOTrainer(
        model=model,
        args=dpo_config(profile, run_dir / "_trainer", steps, **config_overrides),
        train_dataset=dpo_dataset(pairs, profile),
        processing_class=tokenizer,
        callbacks=[MetricsCSV(run_dir / "metrics.csv")],
    )
    use_course_progress(trainer, "DPO")
    began = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - began
    adapter_dir = run_dir / "adapter"
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(peft_model, "peft_config", {}):
        peft_model.delete_adapter("ref")  # TRL's frozen reference copy: not part of the result
    if trainer.is_world_process_zero():
        peft_model.save_pretrained(str(adapter_dir))
        tokenizer.save_pretrained(str(adapter_dir))
    margins = read_margins(run_dir / "metrics.csv")
    result = DPORun(
        run_dir=run_dir,
        base_model=str(run.base_model),
        adapter_dir=adapter_dir,
        started_from=str(run.adapter_dir),
        global_step=trainer.state.global_step,
        margins=margins,
        train_seconds=seconds,
    )
    info = {
        "profile": profile.name,
        "base_model": result.base_model,
        "adapter_dir": "adapter",
        "started_from": result.started_from,
        "global_step": result.global_step,
        "pairs": len(pairs),
        "beta": trainer.args.beta,
        "margin_first": margins[0] if margins else None,
        "margin_last": margins[-1] if margins else None,
        "train_seconds": seconds,
    }
    if trainer.is_world_process_zero():
        (run_dir / "run.json").write_text(json.dumps(info, indent=2))
    models.close_trainer(trainer)
    del trainer, model, peft_model
    models.free_memory()
    return result


# --------------------------------------------------------------------------- evaluation


@dataclass
class SafetyReport:
    """The rule's verdict on each held-out prompt's response, and the share that is cautious."""

    name: str
    records: list[dict]

    @property
    def rate(self) -> float:
        return safety_rate(r["verdict"] for r in self.records)

    @property
    def by_category(self) -> dict[str, float]:
        cats = sorted({r["category"] for r in self.records})
        return {
            c: safety_rate(r["verdict"] for r in self.records if r["category"] == c) for c in cats
        }

    def save(self, path: Path) -> Path:
        rows = [
            {k: v for k, v in r.items() if k != "verdict"}
            | {"cautious": r["verdict"].cautious, "reasons": list(r["verdict"].reasons)}
            for r in self.records
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path


def safety_settings(settings: EvalSettings) -> EvalSettings:
    """``settings`` with at least ``SAFETY_NEW_TOKENS`` new tokens (a referral usually
    follows the reasoning block); greedy stays greedy."""
    gen = settings.generation
    return replace(
        settings, generation=replace(gen, max_new_tokens=max(gen.max_new_tokens, SAFETY_NEW_TOKENS))
    )


def evaluate_safety(
    loaded: models.EvalModel, prompts: list[dict], settings: EvalSettings, name: str = "safety"
) -> SafetyReport:
    """Generate one response per held-out prompt with ``loaded`` (``settings``: the system
    prompt and generation settings; use ``safety_settings``) and judge each with the rule."""
    generate = make_generate(
        loaded.model, loaded.tokenizer, settings=settings.generation, lora_path=loaded.lora_path
    )
    completions = [
        to_completion(c)
        for c in generate([chat(p["prompt"], settings.system_prompt) for p in prompts])
    ]
    records = []
    for p, c in zip(prompts, completions, strict=True):
        verdict: Verdict = judge(c.text, p["category"])
        records.append(
            {
                "id": p["id"],
                "category": p["category"],
                "prompt": p["prompt"],
                "response": c.text,
                "verdict": verdict,
            }
        )
    return SafetyReport(name, records)


def pubmedqa_items(profile: Profile):
    """The PubMedQA items of ``profile_benchmarks(profile)``: the same items every course
    evaluation of this profile uses."""
    items = profile_benchmarks(profile)
    return items.filter(lambda r: r["task"] == "pubmedqa")


def evaluate_stage(
    profile: Profile,
    name: str,
    *,
    base: str | Path,
    adapter: str | Path,
    prompts: list[dict],
    items,
    settings: EvalSettings | None = None,
) -> tuple[SafetyReport, EvalReport]:
    """The safety rate on ``prompts`` and the accuracy on ``items`` (PubMedQA) of ``base`` +
    ``adapter``, from one model loaded once and freed before this returns. Saved as
    ``runs/<profile>/eval/<name>_safety.jsonl`` and ``<name>_pubmedqa``."""
    from medreason_lib.evaluation.loop import eval_dir

    settings = settings or EvalSettings.from_profile(profile)
    engine_len = eval_engine_len(profile, base, items, settings) if profile.use_vllm else None
    with models.load_for_eval(
        profile, base=base, adapter=adapter, max_seq_length=engine_len
    ) as loaded:
        safety = evaluate_safety(loaded, prompts, safety_settings(settings), name)
        accuracy = evaluate_loaded(
            loaded,
            profile,
            f"{name}_pubmedqa",
            base=base,
            adapter=adapter,
            settings=settings,
            dataset=items,
            progress=False,
        )
    safety.save(eval_dir(profile) / f"{name}_safety.jsonl")
    return safety, accuracy


def plot_stage(dpo_run: DPORun, safety: dict, accuracy: dict):
    """Three panels: the DPO margin per step; the safety rate per category (``safety``:
    label -> SafetyReport); the PubMedQA accuracy with its 95% Wilson interval (``accuracy``:
    label -> EvalReport)."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    ax1.plot(range(1, len(dpo_run.margins) + 1), dpo_run.margins, marker="o")
    ax1.set(xlabel="DPO step", ylabel="rewards/margins", title="DPO reward margin (training pairs)")
    cats = sorted({c for r in safety.values() for c in r.by_category}) + ["all"]
    width = 0.8 / len(safety)
    for i, (label, report) in enumerate(safety.items()):
        rates = [report.by_category.get(c, 0.0) for c in cats[:-1]] + [report.rate]
        ax2.bar([x + i * width for x in range(len(cats))], rates, width, label=label)
    ticks = [c.replace("_", "\n") for c in cats]
    ax2.set_xticks([x + width * (len(safety) - 1) / 2 for x in range(len(cats))], ticks)
    ax2.set(ylim=(0, 1), ylabel="share appropriately cautious", title="Safety rate (the rule)")
    ax2.legend()
    labels = list(accuracy)
    acc = [accuracy[k].accuracy for k in labels]
    # max(0, ...): at 0 of n (or n of n) the Wilson bound equals the accuracy up to rounding
    lows = [max(0.0, a - accuracy[k].overall.ci95[0]) for k, a in zip(labels, acc, strict=True)]
    highs = [max(0.0, accuracy[k].overall.ci95[1] - a) for k, a in zip(labels, acc, strict=True)]
    ax3.bar(
        labels, acc, yerr=[lows, highs], capsize=6, color=["tab:blue", "tab:orange"][: len(labels)]
    )
    ax3.set(ylim=(0, 1), ylabel="accuracy", title="PubMedQA accuracy (95% Wilson)")
    fig.tight_layout()
    return fig
