"""Log-likelihood scoring with lm-evaluation-harness: the way most published tables score.

The course's own harness (``evaluation``) lets the model *generate* reasoning and an answer
and reads the answer with one extractor. Many published tables (lm-evaluation-harness,
zero-shot) do something else: for each answer option they sum the log-probabilities of the
option's tokens after the question, and count the item right when the gold option is the
likeliest. No text is generated, the template and the system prompt play no part. The two
numbers measure different things and are not comparable; this module measures the second
one, so a learner can put the course's models beside such tables.

- ``task_manager(source, n, seed)``: lm-eval's ``TaskManager`` over the course's own task
  configs (``medreason_lib/lm_eval_tasks``: one YAML per benchmark). Their documents come
  from the course's readers of the upstream raw files (``benchmarks.load_benchmark``), so it
  runs offline: on the bundled samples, or on any folder of upstream raw files.
- ``task_docs``: the documents of each task (what would be scored), without a model.
- ``score_loaded(loaded, ...)``: scores a model the course loaded (``models.load_model``)
  through lm-eval's HF backend (``HFLM`` around the loaded model; ``simple_evaluate``).
- ``evaluate_loglik(profile, name, base=..., adapter=...)``: load, score, save
  ``runs/<profile>/eval/<name>.json`` (summary) and ``<name>.jsonl`` (one record per item);
  ``evaluate_loglik_before_after``: the base and the trained model from one loaded model.

Accuracy is reported as lm-eval reports it: ``acc`` (the option with the highest summed
log-likelihood) and ``acc_norm`` (the same, each sum divided by the option's length in
characters), per task with its item count and a 95% Wilson interval.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from medreason_lib import models
from medreason_lib.evaluation import evaluation_source, model_identity
from medreason_lib.evaluation.loop import eval_dir
from medreason_lib.evaluation.records import report_dict
from medreason_lib.scoring.stats import wilson_interval
from medreason_lib.settings.profiles import Profile
from medreason_lib.settings.progress import progress_bar

TASKS_DIR = Path(__file__).resolve().parents[1] / "lm_eval_tasks"
# course benchmark -> the lm-eval task shipped in TASKS_DIR
LM_EVAL_TASKS = {
    "pubmedqa": "medreason_pubmedqa",
    "medqa": "medreason_medqa",
    "medmcqa": "medreason_medmcqa",
    "mmlu_medical": "medreason_mmlu_medical",
}
METRICS = ("acc", "acc_norm")
METHOD = "loglik"


class LoglikError(ValueError):
    """A bad setting of a log-likelihood evaluation (a source, a benchmark, a limit)."""


def _check_source(source) -> str:
    """``"bundled"``, ``"hub"`` or an existing folder/file, as a string for lm-eval."""
    if source in ("bundled", "hub"):
        return source
    path = Path(str(source)).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"log-likelihood evaluation: source {str(source)!r} does not exist (give 'bundled', "
            "'hub' or a folder of upstream raw files such as shared/reference-data)"
        )
    return str(path.resolve())


def _check_benchmarks(benchmarks) -> list[str]:
    names = list(benchmarks or LM_EVAL_TASKS)
    if unknown := [b for b in names if b not in LM_EVAL_TASKS]:
        raise LoglikError(
            f"log-likelihood evaluation: unknown benchmark(s) {unknown}; valid: "
            f"{', '.join(LM_EVAL_TASKS)} (GSM8K has no options to score)"
        )
    return names


@contextlib.contextmanager
def _quiet_lm_eval():
    """lm-eval logs a dozen INFO/WARNING lines per task; keep only its errors."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _silent_tqdm(*args, **kwargs):
    from tqdm import tqdm

    return tqdm(*args, **{**kwargs, "disable": True})


def _course_bar(*args, total=None, desc="", disable=False, **_):
    """lm-eval's "Running loglikelihood requests" bar drawn as the course's bar (one
    in-place line in a notebook, never frozen at 0%); any other bar stays silent."""
    if args or total is None:
        return _silent_tqdm(*args, total=total, desc=desc)
    return progress_bar(total, "log-likelihood of each option", unit="req", disable=disable)


@contextlib.contextmanager
def _course_bars(show: bool):
    """While lm-eval runs: its per-task "building contexts" and "tokenizing" bars off, and
    its one bar over the scored requests drawn by ``progress.progress_bar`` (or off). The
    module attributes are restored afterwards."""
    import lm_eval.api.model
    import lm_eval.api.task
    import lm_eval.models.huggingface as hf

    saved = [(m, m.tqdm) for m in (lm_eval.api.task, lm_eval.api.model, hf)]
    lm_eval.api.task.tqdm = lm_eval.api.model.tqdm = _silent_tqdm
    hf.tqdm = _course_bar if show else _silent_tqdm
    try:
        yield
    finally:
        for module, original in saved:
            module.tqdm = original


def task_manager(source="bundled", n: int | None = None, seed: int = 0):
    """lm-eval's ``TaskManager`` over the course's task configs only (no built-in task is
    indexed). ``source``/``n``/``seed`` reach every task as metadata: the documents are
    ``benchmarks.load_benchmark(name, n, seed, source)``, the same items the course's
    generative evaluation draws with the same ``n`` and ``seed``."""
    from lm_eval.tasks import TaskManager

    if not (TASKS_DIR / "utils.py").is_file():
        raise FileNotFoundError(f"the course's lm-eval task configs are missing: {TASKS_DIR}")
    if n is not None and n < 1:
        raise LoglikError(f"log-likelihood evaluation: n must be >= 1 or None, got {n}")
    meta = {"source": _check_source(source), "n": n, "seed": seed}
    with _quiet_lm_eval():
        return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=meta)


def load_tasks(benchmarks=None, source="bundled", n: int | None = None, seed: int = 0) -> dict:
    """``{benchmark: lm-eval Task}`` with their documents read (nothing is scored)."""
    names = _check_benchmarks(benchmarks)
    manager = task_manager(source, n, seed)
    with _quiet_lm_eval():
        loaded = manager.load([LM_EVAL_TASKS[b] for b in names])["tasks"]
    return {b: loaded[LM_EVAL_TASKS[b]] for b in names}


def task_docs(benchmarks=None, source="bundled", n: int | None = None, seed: int = 0) -> dict:
    """``{benchmark: list of documents}``: what ``score_loaded`` would score."""
    return {b: list(t.test_docs()) for b, t in load_tasks(benchmarks, source, n, seed).items()}


def prompt_and_choices(task, doc: dict) -> tuple[str, list[str], int]:
    """The zero-shot context lm-eval scores, its choices and the gold index, for one doc."""
    context = task.fewshot_context(doc, 0)
    return context, list(task.doc_to_choice(doc)), int(task.doc_to_target(doc))


# --------------------------------------------------------------------------- report


@dataclass
class LoglikReport:
    """What a log-likelihood evaluation measured: per benchmark ``n``, ``acc``, ``acc_norm``
    (fractions) and the 95% Wilson interval of each; the model, the settings and every
    item's record (``id``, ``task``, ``gold``, ``choices``, ``loglik`` per choice,
    ``chosen``, ``chosen_norm``, ``acc``, ``acc_norm``)."""

    model: str
    settings: dict
    tasks: dict[str, dict]
    records: list[dict] = field(default_factory=list, repr=False)
    name: str | None = None
    method: str = METHOD

    def accuracy(self, benchmark: str, metric: str = "acc") -> float:
        return self.tasks[benchmark][metric]

    def summary(self) -> str:
        lines = [
            f"log-likelihood accuracy (lm-eval, zero-shot, no generation) of {self.model}",
            f"{'benchmark':<14}{'n':>6}  {'acc':>7}  {'95% CI':>15}  {'acc_norm':>8}",
        ]
        for b, t in self.tasks.items():
            lo, hi = t["acc_ci"]
            ci = f"[{lo:.1%}, {hi:.1%}]"
            lines.append(f"{b:<14}{t['n']:>6}  {t['acc']:>7.1%}  {ci:>15}  {t['acc_norm']:>8.1%}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self, records: bool = False) -> dict:
        return report_dict(self, records)

    def save(self, path: str | Path) -> Path:
        """``<path>.json`` (the summary) and ``<path>.jsonl`` (the records)."""
        path = Path(path).with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        with path.with_suffix(".jsonl").open("w", encoding="utf-8") as fh:
            for r in self.records:
                fh.write(json.dumps(r) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LoglikReport:
        path = Path(path).with_suffix(".json")
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("method") != METHOD:
            raise LoglikError(f"{path} is not a log-likelihood report (method {d.get('method')!r})")
        records_file = path.with_suffix(".jsonl")
        if records_file.is_file():
            lines = records_file.read_text(encoding="utf-8").splitlines()
            d["records"] = [json.loads(line) for line in lines if line.strip()]
        return cls(**d)


def _record(benchmark: str, sample: dict) -> dict:
    """One item's record from an lm-eval sample: the choices (as scored, after the
    delimiter), their summed log-likelihoods, and what ``acc`` and ``acc_norm`` chose (the
    latter divides by the choice's length in characters, as lm-eval does)."""
    choices = [cont for _context, cont in sample["arguments"]]
    logliks = [float(resp[0]) for resp in sample["filtered_resps"]]
    if len(choices) != len(logliks) or not logliks:
        raise LoglikError(
            f"{benchmark} item {sample['doc']['id']}: {len(logliks)} scores for "
            f"{len(choices)} choices"
        )
    shown = [c.strip() for c in choices]
    best = max(range(len(logliks)), key=logliks.__getitem__)
    best_norm = max(range(len(logliks)), key=lambda i: logliks[i] / max(len(shown[i]), 1))
    return {
        "id": sample["doc"]["id"],
        "task": benchmark,
        "gold": int(sample["target"]),
        "choices": shown,
        "loglik": logliks,
        "chosen": best,
        "chosen_norm": best_norm,
        "acc": float(sample["acc"]),
        "acc_norm": float(sample["acc_norm"]),
    }


def _task_stats(records: list[dict]) -> dict:
    n = len(records)
    out = {"n": n}
    for metric in METRICS:
        k = sum(r[metric] for r in records)
        out[metric] = k / n if n else 0.0
        out[f"{metric}_ci"] = list(wilson_interval(k, n)) if n else [0.0, 0.0]
    return out


# --------------------------------------------------------------------------- scoring


def default_batch_size(profile: Profile) -> int | str:
    """8 on a CPU profile (tiny, smol); lm-eval's automatic batch size on a GPU profile
    (on a CPU its search starts at large batches of long PubMedQA contexts: minutes)."""
    return "auto" if profile.uses_unsloth else 8


def score_loaded(
    loaded: models.EvalModel,
    profile: Profile,
    *,
    model_id: str,
    benchmarks=None,
    source=None,
    n: int | None = None,
    seed: int | None = None,
    limit: int | None = None,
    batch_size: int | str | None = None,
    apply_chat_template: bool = False,
    name: str | None = None,
    progress: bool = True,
) -> LoglikReport:
    """Score a loaded model (``loaded`` stays open) by log-likelihood with lm-eval's HF backend.

    ``source`` (default the profile's ``data_source``), ``n`` and ``seed`` (default the
    profile's) pick the documents as ``benchmarks.load_benchmark`` does; ``limit`` keeps the
    first ``limit`` of each task (lm-eval's own ``limit``, for quick checks). Zero-shot, no
    chat template unless ``apply_chat_template`` (published lm-eval tables use none). One
    progress bar over the scored requests unless ``progress=False``.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    names = _check_benchmarks(benchmarks)
    if limit is not None and limit < 1:
        raise LoglikError(f"log-likelihood evaluation: limit must be >= 1, got {limit}")
    source = evaluation_source(profile) if source is None else source
    seed = profile.seed if seed is None else seed
    manager = task_manager(source, n, seed)
    batch_size = batch_size or default_batch_size(profile)
    with _quiet_lm_eval(), _course_bars(progress):
        lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[LM_EVAL_TASKS[b] for b in names],
            num_fewshot=0,
            limit=limit,
            task_manager=manager,
            log_samples=True,
            apply_chat_template=apply_chat_template,
            bootstrap_iters=0,
            # scoring is deterministic: leave the caller's random, numpy and torch seeds alone
            random_seed=None,
            numpy_random_seed=None,
            torch_random_seed=None,
        )
    records, tasks = [], {}
    for b in names:
        samples = results["samples"][LM_EVAL_TASKS[b]]
        rows = [_record(b, sample) for sample in samples]
        tasks[b] = _task_stats(rows)
        records += rows
    settings = {
        "harness": f"lm_eval {lm_eval.__version__}",
        "tasks": {b: LM_EVAL_TASKS[b] for b in names},
        "num_fewshot": 0,
        "apply_chat_template": apply_chat_template,
        "source": str(source),
        "n": n,
        "seed": seed,
        "limit": limit,
    }
    return LoglikReport(model=model_id, settings=settings, tasks=tasks, records=records, name=name)


def report_path(profile: Profile, name: str) -> Path:
    """``runs/<profile>/eval/<name>.json``, beside the generative reports."""
    return eval_dir(profile) / f"{name}.json"


def evaluate_loglik(
    profile: Profile,
    name: str,
    *,
    base: str | Path | None = None,
    adapter: str | Path | None = None,
    save: bool = True,
    **kwargs,
) -> LoglikReport:
    """Load ``base`` (default: the profile's model; a hub id or a merged folder) with
    ``adapter`` (a LoRA folder, or None) through ``models.load_model`` (on GPU profiles
    Unsloth's model as the profile loads it, 4-bit where the profile is, without its vLLM
    engine), score it with
    ``score_loaded(**kwargs)``, free it, and save the report as ``runs/<profile>/eval/
    <name>.json`` (with ``<name>.jsonl``) unless ``save=False``."""
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} holds no LoRA adapter (adapter_config.json)")
    _check_benchmarks(kwargs.get("benchmarks"))  # bad settings fail before a model loads
    if kwargs.get("source") is not None:
        _check_source(kwargs["source"])
    model_id = model_identity(profile, base, adapter)
    # lm-eval's HF backend runs forward passes on the transformers model: no vLLM engine
    plain = profile.replace(use_vllm=False) if profile.use_vllm else profile
    with models.load_model(plain, base=base, adapter=adapter) as loaded:
        report = score_loaded(loaded, profile, model_id=model_id, name=name, **kwargs)
    if save:
        report.save(report_path(profile, name))
    return report


def evaluate_loglik_before_after(
    profile: Profile,
    *,
    base: str | Path,
    adapter: str | Path,
    names: tuple[str, str] = ("loglik-before", "loglik-after"),
    **kwargs,
) -> tuple[LoglikReport, LoglikReport]:
    """The base model and the trained one, scored by log-likelihood on the same documents
    from ONE loaded model: "before" inside peft's ``disable_adapter()``, "after" with the
    adapter on (as ``evaluation.evaluate_before_after`` does for generation). Both reports
    are saved under ``names``; ``kwargs`` go to ``score_loaded``."""
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} holds no LoRA adapter (adapter_config.json)")
    _check_benchmarks(kwargs.get("benchmarks"))
    if kwargs.get("source") is not None:
        _check_source(kwargs["source"])
    plain = profile.replace(use_vllm=False) if profile.use_vllm else profile
    reports = []
    with models.load_model(plain, base=base, adapter=adapter) as loaded:
        for name, adapter_on in zip(names, (False, True), strict=True):
            model_id = model_identity(profile, base, adapter if adapter_on else None)
            off = contextlib.nullcontext() if adapter_on else loaded.model.disable_adapter()
            with off:
                report = score_loaded(loaded, profile, model_id=model_id, name=name, **kwargs)
            report.save(report_path(profile, name))
            reports.append(report)
    return reports[0], reports[1]
