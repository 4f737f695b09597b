"""The evaluation loop: ``evaluate(generate, dataset)`` sends every item through a model and
scores what it says.

Each item's chat prompt goes through ``generate`` (a callable, or a model that
``generation.make_generate`` wraps) in batches, shortest prompt first; each completion is read
with the same ``answers.extract_answer`` the correctness reward uses, and the result is an
``EvalReport`` (``medreason_lib.evaluation.reports``): accuracy with a 95% Wilson score interval,
overall
and per task, format, unparsed and truncation rates, the answers given against the gold ones,
and every item's record. A batch whose generator raises is retried item by item; items that
still fail are recorded and counted as wrong, never dropped. With a ``name`` the records are
appended to ``runs/<profile>/eval/<name>.jsonl`` batch by batch, so ``resume=True`` continues
an interrupted run, and the report is saved beside them as ``<name>.json``.

The same loop is sampled evaluation: with ``settings.generation.samples = k > 1`` each item
gets k completions (``samples_per_prompt``), one record holds all k
(``sampled_report.sampled_record``), and the result is a ``SampledReport`` (avg@k, maj@k,
pass@k).

``evaluation`` builds the notebooks' whole steps on this loop (load a model, evaluate it,
save the report) and re-exports ``evaluate``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from medreason_lib import data
from medreason_lib.evaluation.generation import make_generate, to_completion
from medreason_lib.evaluation.records import drop_cut_off_line, read_records
from medreason_lib.evaluation.reports import EvalReport, EvalSettings, digest
from medreason_lib.evaluation.sampled_report import SampledReport, sampled_record
from medreason_lib.scoring import answers, template
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import Profile, get_profile


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


def _score_samples(item: dict, completions, error: str | None, tokenizer, k: int) -> dict:
    """One item's record of k samples (``sampled_report.sampled_record``); a failed item's k
    samples are all failed."""
    scored = [_score(item, c, error, tokenizer) for c in (completions or [None] * k)]
    gold = answers.normalize_answer(item["gold"], item["task"], item["options"])
    return sampled_record(scored, gold)


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


def _progress(total: int, desc: str, enabled: bool, initial: int = 0):
    """The course's bar (``progress.progress_bar``): in a notebook, text updated in place,
    so a saved notebook shows where it ended, not a widget frozen at 0%. ``initial``: items
    resumed from disk, shown as done but not counted in the rate."""
    from medreason_lib.settings.progress import progress_bar

    return progress_bar(total, desc, unit="item", initial=initial, disable=not enabled)


def samples_per_prompt(gen, k: int):
    """``gen`` as a callable that answers each prompt with a list of k completions. A model
    backend built with ``samples=k`` draws them itself (vLLM ``n=k``, transformers
    ``num_return_sequences=k``); any other callable is asked each prompt k times in one call
    (repeated rows), so a plain sampler, a scripted fake or an endpoint works unchanged."""
    own = getattr(getattr(gen, "settings", None), "samples", 1) == k

    def generate(prompts):
        rows = list(gen(prompts)) if own else list(gen([p for p in prompts for _ in range(k)]))
        groups = rows if own else [rows[i : i + k] for i in range(0, len(rows), k)]
        if len(groups) != len(prompts) or any(len(g) != k for g in groups):
            raise ValueError(
                f"samples={k}: the generator gave {len(rows)} results for {len(prompts)} "
                f"prompts, not {k} per prompt"
            )
        return groups

    generate.backend = getattr(gen, "backend", "callable")
    generate.default_batch_size = getattr(gen, "default_batch_size", 16)
    return generate


def _generate_batch(gen, batch: list[dict], number: int, k: int) -> tuple[list, str | list | None]:
    """Completions of one batch (``k > 1``: a list of k per item), or ``([None...], error)``
    when the generator raised; when only some items fail on their own, ``(completions,
    [error or None per item])``."""
    try:
        outputs = list(gen([it["messages"] for it in batch]))
    except Exception as exc:  # a failed batch is recorded, never silently dropped
        if len(batch) == 1:
            return [None], f"{type(exc).__name__}: {exc}"
        # one bad item (a prompt over the engine's length) must not cost the batch: retry
        # each item alone, so only the items that fail on their own are recorded as failed
        singles = [_generate_batch(gen, [it], number, k) for it in batch]
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
        read = to_completion if k == 1 else (lambda group: [to_completion(x) for x in group])
        return [read(o) for o in outputs], None
    except TypeError as exc:
        raise TypeError(f"{where}: {exc}") from None


def _records_path(name: str | None, out_dir, profile: Profile) -> Path | None:
    if name is None:
        return None
    paths.safe_name(name, "the evaluation name")  # "../x" or "/x" would write elsewhere
    folder = Path(out_dir) if out_dir else eval_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.jsonl"


def _running_score(done: dict, k: int) -> str:
    """The progress bar's note: accuracy so far (avg@k when sampling)."""
    if k == 1:
        return f"accuracy {sum(r['correct'] for r in done.values()) / len(done):.1%}"
    right = sum(s["correct"] for r in done.values() for s in r["samples"])
    return f"avg@{k} {right / (k * len(done)):.1%}"


def _run(gen, items, done: dict, path: Path | None, batch_size: int, tokenizer, bar, k) -> None:
    """Generate and score the items not in ``done``, shortest prompt first (less padding),
    adding each batch's records to ``done`` and appending them to ``path``."""
    pending = sorted((it for it in items if it["id"] not in done), key=_prompt_chars)
    for number, start in enumerate(range(0, len(pending), batch_size)):
        batch = pending[start : start + batch_size]
        completions, error = _generate_batch(gen, batch, number, k)
        errors = error if isinstance(error, list) else [error] * len(batch)
        records = [
            _score(it, c, e, tokenizer) if k == 1 else _score_samples(it, c, e, tokenizer, k)
            for it, c, e in zip(batch, completions, errors, strict=True)
        ]
        done.update((r["id"], r) for r in records)
        if path:
            with path.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        bar.update(len(batch))
        bar.set_postfix_str(_running_score(done, k))


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
) -> EvalReport | SampledReport:
    """Evaluate ``generate`` on ``dataset`` (rows with ``id, task, answer, options, prompt``).

    ``generate``: a callable ``list of chat prompts -> list of completions`` (strings, or
    ``Completion``/dicts/objects carrying ``text`` and ``truncated``), or a model: a
    ``(model, tokenizer)`` pair, a model with ``tokenizer=``, an Unsloth vLLM model (with
    ``lora_path``) or a vLLM engine, wrapped by ``generation.make_generate``. ``tokenizer``
    also lets token lengths be counted for plain callables.
    ``settings``: default ``EvalSettings.from_profile(profile)`` (the profile defaults to
    ``get_profile()``). ``batch_size``: prompts per generate call (default: the backend's).
    ``name``: save records to ``<out_dir>/<name>.jsonl`` (default out_dir
    ``runs/<profile>/eval``) after every batch and the report to ``<name>.json`` (``name`` is a
    plain file name: ``paths.safe_name``); ``resume=True`` keeps the finished records of that
    file, drops a last line cut off by a kill, and generates only the rest (without it, an
    existing file is replaced). Items run shortest prompt first, to pad less.
    ``model_id``: which model this is (``model_identity``); kept in every record and the
    report, and ``resume`` refuses records of another model.
    With ``settings.generation.samples = k > 1`` every item gets k sampled completions
    (``samples_per_prompt``; a transformers batch holds ``batch_size // k`` prompts) and the
    result is a ``SampledReport`` (avg@k, maj@k, pass@k; ``sampled_report``).
    """
    profile = profile or get_profile()
    settings = settings or EvalSettings.from_profile(profile)
    items = _items(dataset, settings, model_id)
    gen = make_generate(generate, tokenizer, settings=settings.generation, lora_path=lora_path)
    k = settings.generation.samples
    gen = gen if k == 1 else samples_per_prompt(gen, k)
    path = _records_path(name, out_dir, profile)
    if path and resume and path.exists():  # a kill mid-write: its half line goes, not glued
        drop_cut_off_line(path)
    done = _resumed(path, items) if (path and resume) else {}
    if done:
        print(f"resuming: {len(done)} of {len(items)} items already evaluated in {path}")
    if path and not resume and path.exists():
        print(f"note: replacing the earlier records in {path} (resume=True would continue them)")
        path.unlink()
    began = time.perf_counter()
    with _progress(len(items), f"eval {name or ''}".strip(), progress, len(done)) as bar:
        rows_per_prompt = k if getattr(gen, "backend", None) == "hf" else 1  # its memory
        batch_size = batch_size or max(1, getattr(gen, "default_batch_size", 16) // rows_per_prompt)
        try:
            _run(gen, items, done, path, batch_size, tokenizer, bar, k)
        except KeyboardInterrupt:
            kept = (
                f"records in {path}; resume=True continues" if path else "nothing saved (no name)"
            )
            print(f"\ninterrupted after {len(done)}/{len(items)} items; {kept}")
            raise
    report = (EvalReport if k == 1 else SampledReport).from_records(
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
