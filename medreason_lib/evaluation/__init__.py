"""Measuring a model on the course's benchmarks: the steps the notebooks take.

``evaluate_model(profile, name, base=..., adapter=...)`` is the whole step: load a model
(``models``), evaluate it on ``profile_benchmarks(profile)`` and save the report under
``runs/<profile>/eval/<name>``; running it again with the same model and settings costs
nothing. ``evaluate_loaded`` does the same on a model already loaded, and
``evaluate_before_after`` measures the base and the trained model from one loaded model
(the adapter off, then on), and ``evaluate_sampled_model`` evaluates one model greedily and
with k sampled completions per item on the same items (avg@k, maj@k, pass@k beside greedy;
``sampled_report``). ``baseline_report(profile)`` is notebook 03's baseline, loaded or
recomputed. ``model_identity`` names the model in every record (a folder by the hash of its
weights), so a retrained adapter never resumes another model's records.

The pieces live in their own modules and are re-exported here, so
``from medreason_lib.evaluation import evaluate, EvalReport, compare, load_benchmark`` works:
``loop`` (``evaluate``: the batches, the records, resuming), ``data.benchmarks`` (the item
sets, gold baselines, published numbers), ``reports`` (settings, report, ``compare``) and
``stats`` (Wilson interval, McNemar test).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from medreason_lib import models
from medreason_lib.data.benchmarks import (  # noqa: F401  (re-exported)
    BENCHMARKS,
    PUBLISHED,
    evaluation_source,
    gold_baselines,
    load_benchmark,
    load_benchmarks,
    profile_benchmarks,
)
from medreason_lib.evaluation.loop import (  # noqa: F401  (re-exported)
    _items,
    _score,
    chat_prompt,
    eval_dir,
    evaluate,
)
from medreason_lib.evaluation.records import read_records
from medreason_lib.evaluation.reports import (  # noqa: F401  (re-exported)
    OUTCOMES,
    Comparison,
    EvalReport,
    EvalSettings,
    IncomparableReports,
    TaskStats,
    compare,
    digest,
    outcome,
    task_stats,
)
from medreason_lib.evaluation.sampled_report import SampledReport
from medreason_lib.models.tiny import resolve_model_id
from medreason_lib.scoring.stats import Z95, ci_half_width, mcnemar_p, wilson_interval  # noqa: F401  (re-exported)
from medreason_lib.settings.errors import UserError
from medreason_lib.settings.profiles import Profile

# --------------------------------------------------------------------------- whole steps


def _weights_digest(folder: Path) -> str:
    """A hash of a model or adapter folder's weight files (not its configs or logs)."""
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".pt") and f.name != "training_args.bin":
            h.update(f.name.encode())
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 24):
                    h.update(chunk)
    return h.hexdigest()[:12]


def _identity(name: str | Path) -> str:
    path = Path(name)
    return f"{path.name}@{_weights_digest(path)}" if path.is_dir() else str(name)


def model_identity(
    profile: Profile, base: str | Path | None = None, adapter: str | Path | None = None
) -> str:
    """Which model ``models.load_model(profile, base=base, adapter=adapter)`` loads, as a
    string: a hub id as is, a local folder as ``name@<hash of its weights>`` (so a retrained
    warm start or adapter is a different model, wherever the folder lives), plus the adapter.
    """
    who = _identity(resolve_model_id(str(base or profile.model_id), seed=profile.seed))
    return f"{who} + LoRA {_identity(adapter)}" if adapter is not None else who


def _saved_runs(path: Path) -> set[tuple]:
    """The (model, settings hash) pairs of the records already in ``path``."""
    return {(r.get("model"), r["settings_hash"]) for r in read_records(path).values()}


def evaluate_model(
    profile: Profile,
    name: str,
    *,
    base: str | Path | None = None,
    adapter: str | Path | None = None,
    settings: EvalSettings | None = None,
    dataset=None,
    resume: bool = True,
    progress: bool = True,
) -> EvalReport:
    """Load ``base`` (default: the profile's model) with ``adapter`` and evaluate it on
    ``dataset`` (default ``profile_benchmarks(profile)``), saved as ``runs/<profile>/eval/
    <name>``. ``settings`` default to ``EvalSettings.from_profile(profile)``. The model is
    freed before this returns.

    With ``resume`` (the default) the finished records of the same model and settings are
    kept, so running it again costs nothing and an interrupted run continues; records of
    another model (a retrained adapter) or other settings are replaced.
    """
    settings = settings or EvalSettings.from_profile(profile)
    dataset = dataset if dataset is not None else profile_benchmarks(profile)
    which = {"base": base, "adapter": adapter}  # the model, loaded and named in the records
    with load_for_items(profile, dataset, settings, **which) as loaded:
        return evaluate_loaded(
            loaded,
            profile,
            name,
            settings=settings,
            dataset=dataset,
            resume=resume,
            progress=progress,
            **which,
        )


def load_for_items(profile: Profile, dataset, settings: EvalSettings, *, base=None, adapter=None):
    """``models.load_for_eval`` with a vLLM engine (on profiles that use one) long enough for
    these items under these settings (``eval_engine_len``), not just the profile's training
    ``max_seq_length``: an evaluation prompt plus ``max_new_tokens`` may be longer."""
    engine_len = eval_engine_len(profile, base, dataset, settings) if profile.use_vllm else None
    return models.load_for_eval(profile, base=base, adapter=adapter, max_seq_length=engine_len)


def eval_engine_len(profile: Profile, base, dataset, settings: EvalSettings) -> int:
    """The vLLM ``max_model_len`` an evaluation needs (longest prompt + ``max_new_tokens``,
    counted with the model's tokenizer), and never less than the profile's sequence length."""
    from transformers import AutoTokenizer

    from medreason_lib.evaluation.generation_vllm import engine_model_len

    tokenizer = AutoTokenizer.from_pretrained(str(base or profile.model_id))
    prompts = [it["messages"] for it in _items(dataset, settings, None)]
    needed = engine_model_len(tokenizer, prompts, settings.generation)
    if needed > profile.max_seq_length:
        print(f"evaluation engine: max_model_len {needed} (longest prompt + max_new_tokens)")
    return max(needed, profile.max_seq_length)


def evaluate_loaded(
    loaded: models.EvalModel,
    profile: Profile,
    name: str,
    *,
    base: str | Path | None = None,
    adapter: str | Path | None = None,
    use_adapter: bool = True,
    settings: EvalSettings | None = None,
    dataset=None,
    resume: bool = True,
    progress: bool = True,
) -> EvalReport:
    """``evaluate_model`` on a model that is already loaded (``loaded`` stays open).

    ``base``/``adapter`` say which model this is (for the records); ``use_adapter=False``
    evaluates the base alone, in place: with ``lora_request=None`` on a vLLM engine (as
    Unsloth's notebooks do for "before"), or inside peft's ``disable_adapter()``.
    """
    import contextlib

    adapter = adapter if use_adapter else None
    model_id = model_identity(profile, base, adapter)
    settings = settings or EvalSettings.from_profile(profile)
    path = eval_dir(profile) / f"{name}.jsonl"
    if resume and path.exists() and _saved_runs(path) != {(model_id, settings.digest())}:
        print(f"{path} holds another model's or other settings' records: starting afresh")
        resume = False
    lora_path = loaded.lora_path
    if not use_adapter and lora_path is not None:  # vLLM: the base model, lora_request=None
        from medreason_lib.evaluation.generation_vllm import NO_ADAPTER

        lora_path = NO_ADAPTER
    adapter_off = contextlib.nullcontext()
    if not use_adapter and loaded.lora_path is None and hasattr(loaded.model, "disable_adapter"):
        adapter_off = loaded.model.disable_adapter()
    with adapter_off:
        return evaluate(
            (loaded.model, loaded.tokenizer),
            dataset if dataset is not None else profile_benchmarks(profile),
            settings=settings,
            profile=profile,
            name=name,
            resume=resume,
            lora_path=lora_path,
            model_id=model_id,
            progress=progress,
        )


def evaluate_before_after(
    loaded: models.EvalModel,
    profile: Profile,
    *,
    base: str | Path,
    adapter: str | Path,
    names: tuple[str, str] = ("grpo_before", "grpo_after"),
    settings: EvalSettings | None = None,
    dataset=None,
    progress: bool = True,
) -> tuple[EvalReport, EvalReport]:
    """The base model and the trained one on the same items and settings, from ONE loaded
    model (``train(keep_model=True)``'s ``run.model``, or ``load_for_eval(adapter=...)``):
    "before" with the adapter off, "after" with it on. No second model is loaded."""
    common = {"base": base, "adapter": adapter, "settings": settings, "dataset": dataset}
    before = evaluate_loaded(
        loaded, profile, names[0], use_adapter=False, **common, progress=progress
    )
    after = evaluate_loaded(loaded, profile, names[1], **common, progress=progress)
    return before, after


class SamplingSettingsError(UserError, ValueError):
    """Sampled evaluation asked with settings that cannot sample (one line, exit 2)."""


def sampled_settings(
    profile: Profile, samples: int, temperature: float | None = None, top_p: float | None = None
) -> EvalSettings:
    """The profile's evaluation settings with ``samples`` completions per item at
    ``temperature`` and ``top_p`` (default: the profile's rollout ones); the system prompt,
    token budget and seed stay the greedy evaluation's. ``SamplingSettingsError`` names a bad
    value (a profile whose rollout temperature is 0 needs ``temperature``)."""
    settings = EvalSettings.from_profile(profile, sample=True)
    changes = {"samples": samples, "temperature": temperature, "top_p": top_p}
    changes = {key: value for key, value in changes.items() if value is not None}
    try:
        generation = dataclasses.replace(settings.generation, **changes)
    except ValueError as exc:
        raise SamplingSettingsError(
            f"sampled evaluation of profile {profile.name!r}: {exc} (eval --temperature)"
        ) from None
    return dataclasses.replace(settings, generation=generation)


def sampled_name(name: str, settings: EvalSettings) -> str:
    """The sampled evaluation's report name: ``<name>-k<samples>-t<temperature>``."""
    g = settings.generation
    return f"{name}-k{g.samples}-t{g.temperature:g}"


def evaluate_sampled_model(
    profile: Profile,
    name: str,
    *,
    samples: int,
    temperature: float | None = None,
    top_p: float | None = None,
    base: str | Path | None = None,
    adapter: str | Path | None = None,
    dataset=None,
    progress: bool = True,
) -> SampledReport:
    """Greedy and sampled evaluation of one model on the same items, from ONE load: the
    greedy report ``name`` (its records reused when they are there), then ``samples``
    completions per item (``sampled_settings``) saved as ``sampled_name(name, ...)``, with the
    greedy accuracy beside avg@k, maj@k and pass@k in its report (``SampledReport``)."""
    greedy_settings = EvalSettings.from_profile(profile)
    settings = sampled_settings(profile, samples, temperature, top_p)
    dataset = dataset if dataset is not None else profile_benchmarks(profile)
    common = {"base": base, "adapter": adapter, "dataset": dataset, "progress": progress}
    with load_for_items(profile, dataset, settings, base=base, adapter=adapter) as loaded:
        greedy = evaluate_loaded(loaded, profile, name, settings=greedy_settings, **common)
        report = evaluate_loaded(
            loaded, profile, sampled_name(name, settings), settings=settings, **common
        )
    report.with_greedy(greedy).save(eval_dir(profile) / f"{report.name}.json")
    return report


def baseline_report(profile: Profile) -> EvalReport:
    """Notebook 03's baseline: ``runs/<profile>/eval/baseline.json`` when it is there, else
    computed as notebook 03 does (the profile's model on ``profile_benchmarks``, the
    profile's settings) and saved under that name."""
    path = eval_dir(profile) / "baseline.json"
    if path.exists():
        print(f"notebook 03's baseline: loaded {path}")
        return EvalReport.load(path)
    print("no saved baseline (notebook 03 has not run here): evaluating the untrained model")
    return evaluate_model(profile, "baseline", resume=False)
