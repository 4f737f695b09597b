"""SFT on reasoning traces, then GRPO from its result: the recipe of the published reasoners.

Reason·Med, II-Medical and the Qwen3-8B medical reasoners first fine-tune on distilled
reasoning traces (supervised: imitate a written chain of thought and answer), then run RL
with verifiable rewards. The steps, as notebook 10 takes them:

1. ``trace_sft_data(profile)``: the traces (``traces.load_traces``: the bundled sample on
   ``tiny``, the hub set on the GPU profiles), minus every trace that is, or overlaps, an
   evaluation item (``training_mix.decontaminate_training_set``: the same evaluation sets and
   PubMedQA test PMIDs the GRPO mix is checked against), as SFT rows for the profile's chat
   family (``traces.sft_rows``).
2. ``run_trace_sft(profile, rows, folder)``: TRL's ``SFTTrainer`` with the warm start's
   settings (``sft.sft_settings``), the loss logged at every step (``TraceSFT.losses``).
   On ``tiny`` the whole model is fine-tuned (0.7M parameters; LoRA on a random model learns
   little) and saved as a model folder. On a GPU profile it trains the profile's LoRA on
   Unsloth's 4-bit model (QLoRA; ``profile.with_sft_setting("q3x1")`` gives Q3X1's rank 128 /
   alpha 256), saves that adapter in ``<folder>/adapter`` and merges it into 16-bit weights
   in ``<folder>`` (Unsloth's ``save_pretrained_merged``). Either way ``<folder>`` is a model
   that starts GRPO: ``training.train(profile, base_model=<folder>)`` trains a fresh GRPO
   LoRA on top of the SFT weights (no tiny warm start then).
3. The three stages on the same items with the same settings: ``stage_items(profile)``, the
   untrained model (``evaluation.evaluate_model``), then the SFT model and SFT + GRPO from
   one loaded model (``evaluation.evaluate_before_after`` on ``train(keep_model=True)``'s
   model: the GRPO adapter off, then on).

A finished SFT is reused when its folder's ``trace_sft.json`` stamp (base model, rows,
settings) matches, so running the notebook again does not retrain it; on the transformers
backend (tiny, smol) it is also cached in ``paths.cache_dir()`` (as ``sft.run_warmstart``
caches the warm start), so the tests and the notebooks train it once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, concatenate_datasets

from medreason_lib.data.conclusion_traces import pubmedqa_conclusions
from medreason_lib.data.traces import load_traces, sft_rows
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import Profile
from medreason_lib.settings.progress import say_once
from medreason_lib.training.sft import sft_settings, store_in_cache, warmstart_cache_dir

STAGES = ("untrained", "after SFT", "after SFT + GRPO")
# SFT on tiny: measured on the bundled sample, 100 steps at 3e-3 take the loss from about 8 to
# about 1 and the model writes the template on most items; 60 steps at 5e-3 left it at 3.6
# and writing no template at all.
TINY_STEPS = 100
TINY_LEARNING_RATE = 3e-3
# Rows longer than max_seq_length are cut there: refuse when more than this share would be,
# as training.config.filter_long_prompts refuses a mix that loses over max_prompt_drop_share.
MAX_CUT_SHARE = 0.2


def default_dir(profile: Profile) -> Path:
    """``runs/<profile>/sft_traces``: the SFT model, its stamp and the GRPO run after it."""
    return paths.runs_dir(profile.name) / "sft_traces"


def trace_sft_data(
    profile: Profile, source=None, schema: str = "medical-o1", *, n: int | None = None
):
    """``(rows, traces, contamination)``: the profile's traces without any evaluation item
    (see the module docstring), and as SFT rows for its chat family. ``source`` defaults to
    ``"bundled"`` where the profile reads the bundled samples, else ``"hub"``. A profile with
    ``warmstart_conclusions`` (smol) adds that many PubMedQA training items of each label,
    its conclusion as the reasoning (``conclusion_traces``), from its ``data_source``; the
    rows are then shuffled with the profile's seed."""
    from medreason_lib.data.training_mix import decontaminate_training_set

    if source is None:
        source = "bundled" if profile.data_source == "bundled" else "hub"
    traces = load_traces(source, schema, n=n, seed=profile.seed)
    if profile.warmstart_conclusions:
        conclusions = pubmedqa_conclusions(profile.data_source, profile.warmstart_conclusions)
        say_once(f"+ {len(conclusions)} PubMedQA conclusions ({profile.warmstart_conclusions} "
                 "a label) in the real prompt format")  # fmt: skip
        traces = concatenate_datasets([traces, conclusions.cast(traces.features)])
    kept, contamination = decontaminate_training_set(traces, profile)
    if len(kept) == 0:
        raise ValueError(f"every one of the {len(traces)} traces overlaps an evaluation set")
    rows = sft_rows(kept, profile.family, dict(profile.chat_template_kwargs))
    if profile.warmstart_conclusions:
        rows = rows.shuffle(seed=profile.seed)
    return rows, kept, contamination


def trace_lengths(rows: Dataset, tokenizer) -> list[int]:
    """Tokens of each SFT row as TRL's ``SFTTrainer`` renders it before cutting it: prompt
    plus completion through the chat template, with the row's ``chat_template_kwargs``."""
    lengths = []
    for row in rows:
        kwargs = row.get("chat_template_kwargs") or {}
        conversation = row["prompt"] + row["completion"]
        rendered = tokenizer.apply_chat_template(
            conversation, tokenize=True, return_dict=True, **kwargs
        )
        lengths.append(len(rendered["input_ids"]))
    return lengths


def check_trace_lengths(
    lengths: list[int], profile: Profile, max_cut_share: float = MAX_CUT_SHARE
) -> int:
    """How many rows ``profile.max_seq_length`` cuts (TRL keeps each row's start: the end of a
    long trace, its answer included, is not learned). Prints a line when any is cut; raises
    ``ConfigError`` when more than ``max_cut_share`` of the rows are."""
    from medreason_lib.training.config import ConfigError

    limit = profile.max_seq_length
    cut = [n for n in lengths if n > limit]
    if not cut:
        return 0
    share, longest = len(cut) / len(lengths), max(cut)
    print(
        f"SFT on traces: {len(cut)} of {len(lengths)} rows are longer than max_seq_length "
        f"{limit} tokens (longest {longest}): their ends, answers included, are cut off"
    )
    if share > max_cut_share:
        raise ConfigError(
            f"{share:.0%} of the trace rows ({len(cut)} of {len(lengths)}, longest {longest} "
            f"tokens) are longer than max_seq_length={limit} (profile {profile.name!r}) and would "
            f"lose their ends, answers included; the limit is max_cut_share={max_cut_share:.0%}. "
            "Raise max_seq_length (profile.replace(max_seq_length=...)), train on shorter "
            "traces, or pass a larger max_cut_share to run_trace_sft"
        )
    return len(cut)


def default_steps(profile: Profile, n_rows: int) -> int:
    """``TINY_STEPS`` on tiny; a real model's own warm start length where its profile has one
    (smol: the same SFT as ``training.train``'s warm start, so notebooks 04 and 10 share it);
    else one pass over the rows at batch 8."""
    if profile.is_tiny:
        return TINY_STEPS
    return profile.sft_warmup_steps or max(1, -(-n_rows // 8))


@dataclass
class TraceSFT:
    """A finished SFT on traces: ``model_dir`` starts GRPO; ``adapter_dir`` is the SFT LoRA
    (GPU profiles; None on tiny, where the whole model trained); ``losses`` the training
    loss per logged step."""

    model_dir: Path
    adapter_dir: Path | None
    steps: int
    seconds: float
    losses: list[tuple[int, float]] = field(default_factory=list)

    @property
    def first_loss(self) -> float:
        return self.losses[0][1]

    @property
    def last_loss(self) -> float:
        return self.losses[-1][1]

    def plot(self, title: str = "SFT on reasoning traces: training loss"):
        """The loss against the step."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3))
        ax.plot(*zip(*self.losses, strict=True), marker=".")
        ax.set_xlabel("SFT step")
        ax.set_ylabel("loss (completion tokens)")
        ax.set_title(title)
        fig.tight_layout()
        return fig


_NOT_LEARNED = ("output_dir", "report_to", "project")


def _stamp(profile: Profile, rows: Dataset, settings: dict) -> dict:
    from medreason_lib.models.tiny import resolve_model_id

    digest = hashlib.sha256(json.dumps(rows.to_list(), sort_keys=True).encode()).hexdigest()
    return {
        "base": profile.model_id,
        "base_path": resolve_model_id(profile.model_id, seed=profile.seed),
        "lora": [profile.lora_rank, profile.lora_alpha] if not profile.is_tiny else None,
        "rows_sha256": digest,
        # where the run writes and reports is not what it learns: a profile file named
        # otherwise (its tracker project differs) reuses the same SFT
        "settings": {k: str(v) for k, v in settings.items() if k not in _NOT_LEARNED},
    }


def run_trace_sft(
    profile: Profile,
    rows: Dataset,
    output_dir: str | Path | None = None,
    *,
    steps: int | None = None,
    force: bool = False,
    max_cut_share: float = MAX_CUT_SHARE,
) -> TraceSFT:
    """Supervised fine-tuning on ``rows`` (``trace_sft_data``), saved in ``output_dir``
    (default ``default_dir(profile) / "sft"``); see the module docstring. Reuses a finished
    one with the same stamp unless ``force``. The trainer and model are freed on return.
    A row longer than ``profile.max_seq_length`` tokens is cut there by TRL (``max_length``):
    the end of a long trace, its answer included, is then not learned. Before training it
    says how many rows are cut, and refuses when more than ``max_cut_share`` of them are
    (``check_trace_lengths``)."""
    from trl import SFTConfig, SFTTrainer

    from medreason_lib.models import close_trainer, free_memory, load_for_training, release
    from medreason_lib.training.callbacks import use_course_progress
    from medreason_lib.training.config import ConfigError
    from medreason_lib.training.trl_compat import install_cpu_logprob_fallback

    out = Path(output_dir) if output_dir else default_dir(profile) / "sft"
    if steps is not None and steps < 1:
        raise ValueError(f"run_trace_sft: steps must be at least 1, got {steps}")
    steps = steps or default_steps(profile, len(rows))
    lr = {"learning_rate": TINY_LEARNING_RATE} if profile.is_tiny else {}
    settings = sft_settings(profile, out / "_trainer", steps, logging_steps=1, **lr)
    stamp = _stamp(profile, rows.remove_columns(["id"]), settings)
    stamp_path = out / "trace_sft.json"
    if not force and stamp_path.is_file():
        saved = json.loads(stamp_path.read_text())
        if saved.get("stamp") == stamp:
            print(f"SFT on traces: reusing {out} (same model, rows and settings)")
            return _result(out, saved)
    # cached where it is small (tiny; smol and other transformers-backend models), never the
    # GPU profiles' merged 16-bit models
    cached = None if profile.uses_unsloth else warmstart_cache_dir({"trace_sft": stamp})
    if not force and cached is not None and (cached / "trace_sft.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(cached, out)
        print("SFT on traces: reusing the cached one (same model, rows and settings)")
        return _result(out, json.loads(stamp_path.read_text()))
    install_cpu_logprob_fallback()
    # tiny: the peft config is not used (full fine-tuning); a real model on transformers
    # (smol): the profile's LoRA through peft; GPU: Unsloth's 4-bit model with the profile's
    # LoRA, without a vLLM engine (SFT generates nothing)
    model, tokenizer, lora = load_for_training(profile.replace(use_vllm=False))
    lora = None if profile.is_tiny else lora
    try:
        check_trace_lengths(trace_lengths(rows, tokenizer), profile, max_cut_share)
    except ConfigError:
        release(model)
        raise
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**settings),
        train_dataset=rows.remove_columns(["id"]),
        processing_class=tokenizer,
        **({"peft_config": lora} if lora is not None else {}),
    )
    use_course_progress(trainer, "SFT on reasoning traces")
    began = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - began
    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    adapter = None
    if profile.is_tiny:
        trainer.save_model(str(out))
        tokenizer.save_pretrained(str(out))
    elif profile.uses_unsloth:  # the SFT LoRA, then merged into 16-bit weights: GRPO's base
        adapter = out / "adapter"
        trainer.save_model(str(adapter))
        trainer.model.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit")
    else:  # the same with peft: the LoRA, then merged into the weights
        adapter = out / "adapter"
        trainer.save_model(str(adapter))
        trainer.model.merge_and_unload().save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    info = {"stamp": stamp, "steps": steps, "seconds": seconds, "losses": losses}
    info["adapter_dir"] = "adapter" if adapter else None
    out.mkdir(parents=True, exist_ok=True)
    stamp_path.write_text(json.dumps(info, indent=2))  # last: it marks a finished SFT
    if cached is not None:
        store_in_cache(out, cached, marker="trace_sft.json")
    close_trainer(trainer)
    del trainer, model
    free_memory()
    first, last = losses[0][1], losses[-1][1]
    print(f"SFT on traces: {steps} steps in {seconds:.0f} s, loss {first:.3f} -> {last:.3f}")
    return _result(out, info)


def _result(folder: Path, info: dict) -> TraceSFT:
    adapter = folder / info["adapter_dir"] if info.get("adapter_dir") else None
    losses = [(int(s), float(v)) for s, v in info["losses"]]
    return TraceSFT(folder, adapter, info["steps"], info["seconds"], losses)


def stage_items(profile: Profile, n: int | None = None) -> Dataset:
    """The items all three stages are evaluated on: ``n`` per benchmark (default: 6 on a
    CPU profile, tiny or smol, to keep the notebook short; ``profile.eval_size`` on a GPU
    profile), seeded with the profile's seed, from its evaluation source
    (``benchmarks.evaluation_source``)."""
    from medreason_lib.evaluation import evaluation_source, load_benchmarks

    n = n or (profile.eval_size if profile.uses_unsloth else 6)
    return load_benchmarks(n=n, seed=profile.seed, source=evaluation_source(profile))
