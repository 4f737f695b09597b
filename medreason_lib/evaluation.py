"""Measuring a model on the course's benchmarks: ``evaluate`` and ``evaluate_model``.

``evaluate(generate, dataset)`` sends every item's chat prompt through ``generate`` (a
callable, or a model that ``generation.make_generate`` wraps), reads each completion with the
same ``answers.extract_answer`` the correctness reward uses, and returns an ``EvalReport``
(``medreason_lib.reports``): accuracy with a 95% Wilson score interval, overall and per task,
format, unparsed and truncation rates, the answers given against the gold ones, and every
item's record. Failed batches (the generator raised) are recorded and counted as wrong, never
dropped. With a ``name`` the records are appended to ``runs/<profile>/eval/<name>.jsonl``
batch by batch, so ``resume=True`` continues an interrupted run, and the report is saved
beside them as ``<name>.json``.

``evaluate_model(profile, name, base=..., adapter=...)`` is the whole step the notebooks
take: load a model (``models``), evaluate it on ``profile_benchmarks(profile)`` and save the
report. ``baseline_report(profile)`` is notebook 03's baseline, loaded or recomputed.

The pieces live in their own modules and are re-exported here, so
``from medreason_lib.evaluation import evaluate, EvalReport, compare, load_benchmark`` works:
``benchmarks`` (the item sets, gold baselines, published numbers), ``reports`` (settings,
report, ``compare``) and ``stats`` (Wilson interval, McNemar test).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from . import answers, data, models, paths, template
from .eval_sets import (  # noqa: F401  (re-exported)
    BENCHMARKS,
    PUBLISHED,
    gold_baselines,
    load_benchmark,
    load_benchmarks,
    profile_benchmarks,
)
from .generation import make_generate, to_completion
from .profiles import Profile, get_profile
from .reports import (  # noqa: F401  (re-exported)
    OUTCOMES,
    Comparison,
    EvalReport,
    EvalSettings,
    IncomparableReports,
    TaskStats,
    compare,
    digest,
    outcome,
    read_records,
    task_stats,
)
from .stats import Z95, ci_half_width, mcnemar_p, wilson_interval  # noqa: F401  (re-exported)
from .tiny import resolve_model_id


def chat_prompt(row: dict, system_prompt: str | None) -> list[dict[str, str]]:
    """The row's conversation with its system message replaced by ``system_prompt``."""
    turns = row.get("prompt") or [{"role": "user", "content": data.user_prompt(row)}]
    turns = [dict(m) for m in turns if m["role"] != "system"]
    system = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return system + turns


def eval_dir(profile: Profile) -> Path:
    """Where named evaluations are saved: ``runs/<profile>/eval``."""
    folder = paths.runs_dir(profile.name) / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------- records


def _score(item: dict, completion, error: str | None, tokenizer) -> dict:
    """One record: what the model said and whether it is right (the rewards' extractor)."""
    text = "" if completion is None else completion.text
    extracted = None if error else answers.extract_answer(text, item["task"], item["options"])
    gold = answers.normalize_answer(item["gold"], item["task"], item["options"])
    n_tokens = None if completion is None else completion.n_tokens
    if n_tokens is None and tokenizer is not None and completion is not None:
        n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return {
        "id": item["id"],
        "task": item["task"],
        "gold": item["gold"],
        "extracted": extracted,
        "correct": extracted is not None and extracted == gold,
        "well_formed": error is None and template.parse_completion(text).well_formed,
        "completion": text,
        "error": error,
        "truncated": None if completion is None else completion.truncated,
        "n_tokens": n_tokens,
        "prompt_hash": item["prompt_hash"],
        "settings_hash": item["settings_hash"],
        "model": item["model"],
    }


def _items(dataset, settings: EvalSettings, model_id: str | None) -> list[dict]:
    items, seen = [], set()
    settings_hash = settings.digest()
    for row in dataset:
        row = dict(row)
        if row["id"] in seen:
            raise ValueError(f"duplicate item id {row['id']!r}: ids must be unique")
        seen.add(row["id"])
        messages = chat_prompt(row, settings.system_prompt)
        items.append(
            {
                "id": row["id"],
                "task": row["task"],
                "gold": str(row["answer"]),
                "options": list(row.get("options") or []) or None,
                "messages": messages,
                "prompt_hash": digest(messages),
                "settings_hash": settings_hash,
                "model": model_id,
            }
        )
    if not items:
        raise ValueError("the dataset is empty: there is nothing to evaluate")
    return items


def _prompt_chars(item: dict) -> int:
    return sum(len(m["content"]) for m in item["messages"])


def _resumed(path: Path, items: list[dict]) -> dict[str, dict]:
    """Finished records of ``path`` for these items; failed ones are tried again."""
    by_id = {it["id"]: it for it in items}
    done = {}
    for rid, rec in read_records(path).items():
        item = by_id.get(rid)
        if item is None or rec["error"] is not None:
            continue
        if (rec["prompt_hash"], rec["settings_hash"]) != (
            item["prompt_hash"],
            item["settings_hash"],
        ):
            raise ValueError(
                f"{path}: item {rid!r} was evaluated with another prompt or other settings; "
                "evaluate under another name, or with resume=False to start over"
            )
        if rec.get("model") != item["model"]:
            raise ValueError(
                f"{path}: item {rid!r} was evaluated with another model "
                f"({rec.get('model')} vs {item['model']}); resume=False starts over"
            )
        done[rid] = rec
    return done


# --------------------------------------------------------------------------- evaluate


def _progress(total: int, desc: str, enabled: bool):
    """The course's bar (``progress.progress_bar``): in a notebook, text updated in place,
    so a saved notebook shows where it ended, not a widget frozen at 0%."""
    from .progress import progress_bar

    return progress_bar(total, desc, unit="item", disable=not enabled)


def _generate_batch(gen, batch: list[dict], number: int) -> tuple[list, str | list | None]:
    """Completions of one batch, or ``([None...], error)`` when the generator raised; when
    only some items fail on their own, ``(completions, [error or None per item])``."""
    try:
        outputs = list(gen([it["messages"] for it in batch]))
    except Exception as exc:  # a failed batch is recorded, never silently dropped
        if len(batch) == 1:
            return [None], f"{type(exc).__name__}: {exc}"
        # one bad item (a prompt over the engine's length) must not cost the batch: retry
        # each item alone, so only the items that fail on their own are recorded as failed
        singles = [_generate_batch(gen, [it], number) for it in batch]
        failed = sum(err is not None for _, err in singles)
        print(
            f"batch {number} raised {type(exc).__name__}: {exc}; retried item by item: "
            f"{len(batch) - failed} of {len(batch)} answered, {failed} recorded as failed"
        )
        if failed == len(batch):
            return [None] * len(batch), f"{type(exc).__name__}: {exc}"
        return [c[0] for c, _ in singles], [err for _, err in singles]
    where = f"batch {number} (items {batch[0]['id']} .. {batch[-1]['id']})"
    if len(outputs) != len(batch):
        raise ValueError(
            f"{where}: generate returned {len(outputs)} completions for {len(batch)} prompts"
        )
    try:
        return [to_completion(o) for o in outputs], None
    except TypeError as exc:
        raise TypeError(f"{where}: {exc}") from None


def _records_path(name: str | None, out_dir, profile: Profile) -> Path | None:
    if name is None:
        return None
    folder = Path(out_dir) if out_dir else eval_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.jsonl"


def _run(gen, items, done: dict, path: Path | None, batch_size: int, tokenizer, bar) -> None:
    """Generate and score the items not in ``done``, shortest prompt first (less padding),
    adding each batch's records to ``done`` and appending them to ``path``."""
    pending = sorted((it for it in items if it["id"] not in done), key=_prompt_chars)
    for number, start in enumerate(range(0, len(pending), batch_size)):
        batch = pending[start : start + batch_size]
        completions, error = _generate_batch(gen, batch, number)
        errors = error if isinstance(error, list) else [error] * len(batch)
        records = [
            _score(it, c, e, tokenizer) for it, c, e in zip(batch, completions, errors, strict=True)
        ]
        done.update((r["id"], r) for r in records)
        if path:
            with path.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        bar.update(len(batch))
        bar.set_postfix_str(f"accuracy {sum(r['correct'] for r in done.values()) / len(done):.1%}")


def evaluate(
    generate,
    dataset,
    *,
    tokenizer=None,
    settings: EvalSettings | None = None,
    profile: Profile | None = None,
    batch_size: int | None = None,
    name: str | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    lora_path: str | Path | None = None,
    model_id: str | None = None,
    progress: bool = True,
) -> EvalReport:
    """Evaluate ``generate`` on ``dataset`` (rows with ``id, task, answer, options, prompt``).

    ``generate``: a callable ``list of chat prompts -> list of completions`` (strings, or
    ``Completion``/dicts/objects carrying ``text`` and ``truncated``), or a model: a
    ``(model, tokenizer)`` pair, a model with ``tokenizer=``, an Unsloth vLLM model (with
    ``lora_path``) or a vLLM engine, wrapped by ``generation.make_generate``. ``tokenizer``
    also lets token lengths be counted for plain callables.
    ``settings``: default ``EvalSettings.from_profile(profile)`` (the profile defaults to
    ``get_profile()``). ``batch_size``: prompts per generate call (default: the backend's).
    ``name``: save records to ``<out_dir>/<name>.jsonl`` (default out_dir
    ``runs/<profile>/eval``) after every batch and the report to ``<name>.json``;
    ``resume=True`` keeps the finished records of that file and generates only the rest
    (without it, an existing file is replaced). Items run shortest prompt first, to pad less.
    ``model_id``: which model this is (``model_identity``); kept in every record and the
    report, and ``resume`` refuses records of another model.
    """
    profile = profile or get_profile()
    settings = settings or EvalSettings.from_profile(profile)
    items = _items(dataset, settings, model_id)
    gen = make_generate(generate, tokenizer, settings=settings.generation, lora_path=lora_path)
    path = _records_path(name, out_dir, profile)
    done = _resumed(path, items) if (path and resume) else {}
    if done:
        print(f"resuming: {len(done)} of {len(items)} items already evaluated in {path}")
    if path and not resume and path.exists():
        print(f"note: replacing the earlier records in {path} (resume=True would continue them)")
        path.unlink()
    began = time.perf_counter()
    with _progress(len(items), f"eval {name or ''}".strip(), progress) as bar:
        bar.update(len(done))
        batch_size = batch_size or getattr(gen, "default_batch_size", 16)
        try:
            _run(gen, items, done, path, batch_size, tokenizer, bar)
        except KeyboardInterrupt:
            kept = (
                f"records in {path}; resume=True continues" if path else "nothing saved (no name)"
            )
            print(f"\ninterrupted after {len(done)}/{len(items)} items; {kept}")
            raise
    report = EvalReport.from_records(
        [done[it["id"]] for it in items],
        settings,
        name=name,
        backend=getattr(gen, "backend", "callable"),
        seconds=round(time.perf_counter() - began, 2),
        records_path=str(path) if path else None,
        model=model_id,
    )
    if report.failed:
        over = sum(str(done[it["id"]]["error"]).startswith("PromptTooLong") for it in items)
        print(
            f"WARNING: {report.failed} of {report.n} items failed (see records' 'error'); "
            "they count as wrong"
            + (f". {over} of them: prompt too long for the engine's max_model_len" if over else "")
        )
    if path:
        report.save(path.with_suffix(".json"))
    return report


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
    engine_len = eval_engine_len(profile, base, dataset, settings) if profile.use_vllm else None
    with models.load_for_eval(
        profile, base=base, adapter=adapter, max_seq_length=engine_len
    ) as loaded:
        return evaluate_loaded(
            loaded,
            profile,
            name,
            base=base,
            adapter=adapter,
            settings=settings,
            dataset=dataset,
            resume=resume,
            progress=progress,
        )


def eval_engine_len(profile: Profile, base, dataset, settings: EvalSettings) -> int:
    """The vLLM ``max_model_len`` an evaluation needs (longest prompt + ``max_new_tokens``,
    counted with the model's tokenizer), and never less than the profile's sequence length."""
    from transformers import AutoTokenizer

    from .generation_vllm import engine_model_len

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
        from .generation_vllm import NO_ADAPTER

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
