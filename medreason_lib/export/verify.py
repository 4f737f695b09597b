"""Verify a trained adapter: it trained, it changes the model, and the merge kept it.

Why: a LoRA adapter starts as exactly nothing (peft initialises every B matrix to zero, so
``W + (alpha/r) B A = W``), and a save or merge that goes wrong usually fails silently: the
folder looks fine and the model behaves like the base. ``verify_adapter`` checks (1) that the
B matrices are not all zero, (2) that the trained model's logits and greedy output on a fixed
prompt differ from the base model's, and (3) given a merged folder, that the merged model
reloaded from disk computes the LoRA model's logits (tiny: within ``MERGE_ATOL``; GPU: closer
to the LoRA model than to the base, a heuristic, because the 4-bit base and the 16-bit merge
differ by quantisation error). ``untrained_adapter`` saves what a save that lost the training
looks like, so a learner can watch the check catch it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medreason_lib.export.save import VERIFY_ROW, _load_folder, load_trained
from medreason_lib.settings.profiles import Profile

if TYPE_CHECKING:
    from medreason_lib.training import TrainingRun

MERGE_ATOL = 1e-4  # max |logit difference| merged vs LoRA model on tiny (float32)


@dataclass(frozen=True)
class AdapterWeights:
    """What an adapter file holds: its LoRA B matrices, which start at zero."""

    path: str
    b_matrices: int
    b_nonzero: int  # B matrices with at least one nonzero entry
    b_max_abs: float
    a_matrices: int

    @property
    def trained(self) -> bool:
        return self.b_matrices > 0 and self.b_nonzero > 0


def adapter_weights(adapter_dir: str | Path) -> AdapterWeights:
    """Read an adapter's ``adapter_model.safetensors`` (no model is loaded)."""
    from safetensors.torch import load_file

    path = Path(adapter_dir) / "adapter_model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no adapter_model.safetensors in {adapter_dir}")
    tensors = load_file(str(path))
    b = [t for name, t in tensors.items() if "lora_B" in name]
    return AdapterWeights(
        path=str(path),
        b_matrices=len(b),
        b_nonzero=sum(bool(t.abs().max() > 0) for t in b),
        b_max_abs=max((float(t.abs().max()) for t in b), default=0.0),
        a_matrices=sum("lora_A" in name for name in tensors),
    )


@dataclass
class VerifyReport:
    """The three checks of ``verify_adapter``; ``ok`` when no problem was found."""

    adapter: AdapterWeights
    trained_vs_base_max_abs: float  # logits on VERIFY_ROW's prompt, every position
    trained_vs_base_rms: float
    base_completion: str
    trained_completion: str
    merged_dir: str | None = None
    merged_vs_trained_max_abs: float | None = None
    merged_vs_trained_rms: float | None = None
    merged_vs_base_rms: float | None = None
    tolerance: float | None = None  # None: the GPU heuristic (closer to trained than base)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def completions_differ(self) -> bool:
        return self.base_completion != self.trained_completion

    def __str__(self) -> str:
        a = self.adapter
        mark = {True: "ok  ", False: "FAIL"}
        lines = [
            f"[{mark[a.trained]}] 1. adapter trained: {a.b_nonzero}/{a.b_matrices} LoRA B "
            f"matrices nonzero (largest |B| {a.b_max_abs:.3g})",
            f"[{mark[self.trained_vs_base_max_abs > 0]}] 2. trained != base: logits differ by "
            f"up to {self.trained_vs_base_max_abs:.3g} (rms {self.trained_vs_base_rms:.3g}); "
            f"greedy completions {'differ' if self.completions_differ else 'are identical'}",
            f"       base:    {self.base_completion[:120]!r}",
            f"       trained: {self.trained_completion[:120]!r}",
        ]
        if self.merged_dir is not None:
            if self.tolerance is not None:
                detail = (
                    f"max |logit diff| {self.merged_vs_trained_max_abs:.3g} "
                    f"(tolerance {self.tolerance:g})"
                )
            else:
                detail = (
                    f"rms distance to trained {self.merged_vs_trained_rms:.3g}, to base "
                    f"{self.merged_vs_base_rms:.3g}"
                )
            merged_ok = not any(p.startswith("3.") for p in self.problems)
            lines.append(f"[{mark[merged_ok]}] 3. merged (reloaded) == LoRA model: {detail}")
        lines += [f"problem: {p}" for p in self.problems]
        lines += [f"note: {n}" for n in self.notes]
        lines.append("verified: the adapter is trained" if self.ok else "NOT VERIFIED")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return d | {"ok": self.ok, "completions_differ": self.completions_differ}


def verification_prompt() -> list[dict[str, str]]:
    """The fixed chat prompt the checks run on, built as training built its prompts."""
    from medreason_lib import data

    return data.build_prompt(VERIFY_ROW)


def _logits(model, tokenizer, profile: Profile):
    import torch

    from medreason_lib.evaluation.generation import render_prompts

    text = render_prompts(tokenizer, [verification_prompt()], profile.chat_template_kwargs)[0]
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.inference_mode():
        return model(**enc).logits[0].float().cpu()


def _greedy(model, tokenizer, profile: Profile, max_new_tokens: int) -> str:
    from medreason_lib.evaluation.generation import GenerationSettings, make_generate

    settings = dataclasses.replace(
        GenerationSettings.from_profile(profile), max_new_tokens=max_new_tokens
    )
    return make_generate(model, tokenizer, settings=settings)([verification_prompt()])[0].text


def _distances(x, y) -> tuple[float, float]:
    diff = x - y
    return float(diff.abs().max()), float(diff.pow(2).mean().sqrt())


def verify_adapter(
    profile: Profile,
    run: TrainingRun,
    *,
    adapter_dir: str | Path | None = None,
    merged_dir: str | Path | None = None,
    max_new_tokens: int = 64,
) -> VerifyReport:
    """Check that the run's adapter (or ``adapter_dir``) trained and, given ``merged_dir``,
    that the merge kept it (see the module docstring). Never raises on a failed check: the
    report lists the problems; ``report.ok`` is the verdict."""
    adapter = Path(adapter_dir) if adapter_dir else run.adapter_dir
    if adapter != run.adapter_dir:
        run = dataclasses.replace(run, adapter_dir=adapter)
    weights = adapter_weights(adapter)
    with load_trained(profile, run) as loaded:
        trained = _logits(loaded.model, loaded.tokenizer, profile)
        trained_text = _greedy(loaded.model, loaded.tokenizer, profile, max_new_tokens)
        with loaded.model.disable_adapter():
            base = _logits(loaded.model, loaded.tokenizer, profile)
            base_text = _greedy(loaded.model, loaded.tokenizer, profile, max_new_tokens)
    tb_max, tb_rms = _distances(trained, base)
    report = VerifyReport(weights, tb_max, tb_rms, base_text, trained_text)
    if not weights.trained:
        report.problems.append(
            f"1. every LoRA B matrix in {weights.path} is exactly zero: this adapter is "
            "untrained (peft initialises B to zero), so the model equals its base"
        )
    if tb_max == 0:
        report.problems.append(
            "2. the model with the adapter computes exactly the base model's logits"
        )
    elif not report.completions_differ:
        report.notes.append(
            "the greedy completions are identical although the logits differ: a small "
            "adapter can leave one prompt's most likely tokens unchanged"
        )
    if merged_dir is not None:
        _check_merged(profile, report, Path(merged_dir), trained, base)
    return report


def _check_merged(profile: Profile, report: VerifyReport, merged_dir: Path, trained, base):
    with _load_folder(profile, merged_dir) as loaded:
        merged = _logits(loaded.model, loaded.tokenizer, profile)
    report.merged_dir = str(merged_dir)
    report.merged_vs_trained_max_abs, report.merged_vs_trained_rms = _distances(merged, trained)
    report.merged_vs_base_rms = _distances(merged, base)[1]
    if not profile.uses_unsloth:
        report.tolerance = MERGE_ATOL
        if report.merged_vs_trained_max_abs > MERGE_ATOL:
            report.problems.append(
                f"3. the merged model reloaded from {merged_dir} differs from the LoRA model by "
                f"up to {report.merged_vs_trained_max_abs:.3g} in the logits (tolerance "
                f"{MERGE_ATOL:g})"
                + (": it behaves like the base model" if _like_base(report) else "")
            )
    else:
        report.notes.append(
            "3. is a heuristic on GPU profiles: the LoRA model runs on 4-bit weights and the "
            "merge is 16-bit, so their logits differ by quantisation error"
        )
        if _like_base(report):
            report.problems.append(
                f"3. the merged model in {merged_dir} is closer to the base model than to the "
                "LoRA model: the merge probably saved the base weights without the adapter"
            )


def _like_base(report: VerifyReport) -> bool:
    return report.merged_vs_base_rms <= report.merged_vs_trained_rms


def untrained_adapter(profile: Profile, base: str | Path, out_dir: str | Path) -> Path:
    """Save a freshly initialised (untrained) LoRA adapter on ``base``, with the profile's
    LoRA settings: what a save that lost the training looks like. (On a GPU profile this
    loads the model once more, through Unsloth, without vLLM.)"""
    from medreason_lib import models

    loading = profile if not profile.uses_unsloth else profile.replace(use_vllm=False)
    model, tokenizer, config = models.load_for_training(loading, base=base)
    if config is not None:  # tiny: peft attaches the LoRA; Unsloth already did on a GPU
        from peft import get_peft_model

        model = get_peft_model(model, config)
    with models.EvalModel(model, tokenizer) as loaded:  # frees the model at the end
        del model, tokenizer
        loaded.model.save_pretrained(str(out_dir))
        loaded.tokenizer.save_pretrained(str(out_dir))
    return Path(out_dir)
