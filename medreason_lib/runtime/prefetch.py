"""Fetch a profile's model and datasets once, so every runtime can then work offline.

``python -m medreason_lib prefetch --profile 3b [--to FOLDER] [--dry-run] [--check]``

A room of learners who all download a 3B model at once gets throttled by the hub. Prefetch
once into a shared folder (a Google Drive, a lab disk), then run every notebook with
``HF_HOME=FOLDER HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1`` set before anything imports
``datasets`` (Colab: ``%env`` lines in the first cell). Without ``--to`` the fetch goes into
this machine's own cache (``HF_HOME``, default ``~/.cache/huggingface``).

What a profile needs (``needs``), derived from the profile and the loaders, not listed by hand:

- models: on a ``load_in_4bit`` profile, the pre-quantized repository Unsloth actually loads
  (its mapper turns ``unsloth/Qwen2.5-3B-Instruct`` into
  ``unsloth/Qwen2.5-3B-Instruct-unsloth-bnb-4bit``; ``UNSLOTH_4BIT``, checked against the
  pinned Unsloth wheel by the tests), and the profile's own ``model_id`` (the tokenizer the
  evaluation counts prompt tokens with, and the 16-bit shards notebook 08's merge reads);
  plus any ``--model`` (a published model to evaluate with ``eval --model``) and, with
  ``--reference``, ``REFERENCE_MODELS[profile]``.
- datasets: the hub configurations ``data.load_task(..., source="hub")`` reads for the
  profile's training splits (``profile.mix_weights``, ``training_mix.train_splits``) and for
  every benchmark's evaluation split (which decontamination also reads).

Datasets are fetched with ``datasets.load_dataset(repo, config)``, the very call of
``data.load_task``, so the prepared Arrow files land in the datasets cache where an offline
``load_dataset`` finds them; models with ``huggingface_hub.snapshot_download`` into the hub
cache, where ``from_pretrained`` finds them offline. ``--check`` proves it: a child process
with the hub switched off loads each model's config and tokenizer and every split the
profile needs through the course's own loaders. ``eval --model`` uses ``model_source`` and
``model_report_name`` from here.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from medreason_lib.settings import paths
from medreason_lib.settings.errors import UserError
from medreason_lib.settings.profiles import PROFILES, Profile, get_profile

# The published reference model of a profile (``eval --model``; notebook 05 offers it).
REFERENCE_MODELS = {"3b": "hooman650/MedQwen3B-Reasoner"}

# model_id -> the repository Unsloth loads with load_in_4bit=True: the key of
# unsloth/models/mapper.py whose values name model_id (Unsloth's FLOAT_TO_INT_MAPPER), for the
# course's models. tests/runtime/test_prefetch.py re-reads the pinned wheel's mapper.
UNSLOTH_4BIT = {
    "unsloth/Qwen2.5-3B-Instruct": "unsloth/Qwen2.5-3B-Instruct-unsloth-bnb-4bit",
    "unsloth/Qwen3-8B": "unsloth/Qwen3-8B-unsloth-bnb-4bit",
    "unsloth/gpt-oss-20b": "unsloth/gpt-oss-20b-unsloth-bnb-4bit",
}

# Files of a model repository no course loader reads (other runtimes' formats, originals).
MODEL_IGNORE = ["*.gguf", "*.onnx", "*.msgpack", "*.h5", "*.ot", "*.pth", "original/*"]
GB = 2**30


@dataclass(frozen=True)
class Item:
    """One repository to fetch: a model, or one configuration of a dataset."""

    kind: str  # "model" | "dataset"
    repo_id: str
    config: str | None = None
    splits: tuple[str, ...] = ()  # the hub splits the course reads (datasets)
    why: str = ""

    @property
    def label(self) -> str:
        name = f"{self.kind:<8}{self.repo_id}" + (f" [{self.config}]" if self.config else "")
        return name + (f" ({', '.join(self.splits)})" if self.splits else "")


# --------------------------------------------------------------------------- what a profile needs


def task_splits(profile: Profile) -> list[tuple[str, str, str]]:
    """``(task, split, purpose)`` for every split ``data.load_task`` reads for ``profile``:
    its training splits, then every benchmark's evaluation split."""
    from medreason_lib.data import benchmarks as eval_sets
    from medreason_lib.data import training_mix

    pairs = []
    for task, weight in profile.mix_weights.items():
        if weight > 0:
            pairs += [(task, s, "training") for s in training_mix.train_splits(profile, task)]
    for task in eval_sets.BENCHMARKS:
        pairs.append((task, training_mix.EVAL_SPLITS[task], "evaluation"))
    return pairs


def hub_sources(task: str, split: str) -> list[tuple[str, str | None, str]]:
    """``(repo, config, hub split)`` that ``data.load_task(task, split, source="hub")`` loads."""
    from medreason_lib import data
    from medreason_lib.data.raw_formats import MMLU_SUBJECTS

    hub_id, config, hub_splits = data.HUB_IDS[task]
    if task == "pubmedqa":  # every PubMedQA config has only "train"; the PMID list splits it
        repo, config = data.PUBMEDQA_ARTIFICIAL if split == "train_artificial" else (hub_id, config)
        return [(repo, config, "train")]
    if task == "mmlu_medical":
        return [(hub_id, subject, "test") for subject in MMLU_SUBJECTS]
    return [(hub_id, config, hub_splits[split])]


def model_items(profile: Profile) -> list[Item]:
    if profile.is_tiny:
        return []
    quantized = UNSLOTH_4BIT.get(profile.model_id) if profile.load_in_4bit else None
    if quantized is None:
        return [Item("model", profile.model_id, why="training and evaluation")]
    return [
        Item("model", quantized, why="the 4-bit weights Unsloth loads (load_in_4bit)"),
        Item(
            "model",
            profile.model_id,
            why="tokenizer (evaluation), 16-bit shards (notebook 08's merge)",
        ),
    ]


def needs(profile: Profile, models: tuple[str, ...] = (), reference: bool = False) -> list[Item]:
    """Everything ``profile`` reads from the hub (module docstring), models first."""
    items = model_items(profile)
    extra = list(models)
    if reference:
        if profile.name not in REFERENCE_MODELS:
            raise ValueError(
                f"profile {profile.name!r} has no reference model; known: {REFERENCE_MODELS}"
            )
        extra.append(REFERENCE_MODELS[profile.name])
    for model in dict.fromkeys(extra):
        if model not in {i.repo_id for i in items}:
            items.append(Item("model", model, why="a published model for eval --model"))
    if profile.data_source != "hub":
        return items
    grouped: dict[tuple, tuple[dict, dict]] = {}
    for task, split, purpose in task_splits(profile):
        for repo, config, hub_split in hub_sources(task, split):
            splits, whys = grouped.setdefault((repo, config), ({}, {}))
            splits[hub_split] = whys[f"{purpose} {task}/{split}"] = None  # ordered sets
    for (repo, config), (splits, whys) in grouped.items():
        items.append(Item("dataset", repo, config, tuple(splits), "; ".join(whys)))
    return items


# --------------------------------------------------------------------------- the cache


def _hf_home() -> Path:
    default = os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expanduser(os.getenv("HF_HOME", default)))


def cache_dirs(folder: str | Path | None = None) -> tuple[Path, Path]:
    """(hub cache, datasets cache): ``FOLDER/hub`` and ``FOLDER/datasets`` (``HF_HOME``'s
    layout), or the ones ``huggingface_hub`` and ``datasets`` use here (their env rules)."""
    if folder is not None:
        folder = Path(folder).expanduser()
        return folder / "hub", folder / "datasets"
    hub = os.getenv("HF_HUB_CACHE") or os.getenv("HUGGINGFACE_HUB_CACHE")
    datasets_cache = os.getenv("HF_DATASETS_CACHE")
    return (
        Path(hub).expanduser() if hub else _hf_home() / "hub",
        Path(datasets_cache).expanduser() if datasets_cache else _hf_home() / "datasets",
    )


def offline_env(folder: str | Path | None = None) -> dict[str, str]:
    """The environment that makes every loader read ``folder`` (or this machine's cache)
    and never the network."""
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if folder is not None:
        hub, datasets_cache = cache_dirs(folder)
        home = str(Path(folder).expanduser().resolve())
        env |= {"HF_HOME": home, "HF_HUB_CACHE": str(hub.resolve())}
        env["HF_DATASETS_CACHE"] = str(datasets_cache.resolve())
    return env


def _model_dir(hub: Path, repo_id: str) -> Path:
    return hub / ("models--" + repo_id.replace("/", "--"))


def _dataset_dirs(datasets_cache: Path, item: Item) -> list[Path]:
    """The prepared config folders ``<ns>___<name>/<config>/<version>/<hash>`` of ``item``."""
    from datasets.naming import camelcase_to_snakecase

    parts = item.repo_id.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    root = datasets_cache / "___".join(parts)
    pattern = root / glob.escape(item.config or "") if item.config else root / "*"
    return [Path(p) for p in glob.glob(str(pattern / "*" / "*")) if Path(p).is_dir()]


def is_cached(item: Item, folder: str | Path | None = None) -> bool:
    """Whether ``item`` is in the cache: a model snapshot with its config and weights, or a
    prepared dataset config holding every split the course reads."""
    hub, datasets_cache = cache_dirs(folder)
    if item.kind == "model":
        for snapshot in _model_dir(hub, item.repo_id).glob("snapshots/*"):
            weights = [*snapshot.glob("*.safetensors"), *snapshot.glob("*.bin")]
            if (snapshot / "config.json").is_file() and weights:
                return True
        return False
    for prepared in _dataset_dirs(datasets_cache, item):
        try:
            info = json.loads((prepared / "dataset_info.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if set(item.splits) <= set(info.get("splits") or {}):
            return True
    return False


def _size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed: a blob counts once)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = Path(root, name)
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def cached_size(item: Item, folder: str | Path | None = None) -> int:
    hub, datasets_cache = cache_dirs(folder)
    if item.kind == "model":
        return _size(_model_dir(hub, item.repo_id))
    return sum(_size(p) for p in _dataset_dirs(datasets_cache, item))


def human(n_bytes: float) -> str:
    return f"{n_bytes / GB:.2f} GB" if n_bytes >= 0.1 * GB else f"{n_bytes / 2**20:.1f} MB"


# --------------------------------------------------------------------------- fetching


def fetch_item(item: Item, folder: str | Path | None = None) -> None:
    """Download ``item`` into the cache (nothing when it is there already)."""
    hub, datasets_cache = cache_dirs(folder)
    if item.kind == "model":
        from huggingface_hub import snapshot_download

        snapshot_download(item.repo_id, cache_dir=str(hub), ignore_patterns=MODEL_IGNORE)
    else:
        import datasets

        datasets.load_dataset(item.repo_id, item.config, cache_dir=str(datasets_cache))


def _fix(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if re.search(r"gated|401|403|unauthori[sz]ed", text, re.I):
        return "a gated or private repository: accept its terms on the hub and set HF_TOKEN"
    if re.search(r"offline|connect|timed? ?out|resolve|network", text, re.I):
        return "the hub cannot be reached: unset HF_HUB_OFFLINE, check the network or proxy"
    return "see the error above; run again (finished items are not fetched twice)"


def prefetch(
    profile: Profile,
    folder: str | Path | None = None,
    *,
    dry_run: bool = False,
    models: tuple[str, ...] = (),
    reference: bool = False,
) -> int:
    """List (``dry_run``) or fetch what ``profile`` needs, printing each item and its size.
    Returns the exit status: 1 when an item could not be fetched."""
    items = needs(profile, models, reference)
    hub, datasets_cache = cache_dirs(folder)
    if not items:
        print(
            f"profile {profile.name!r} needs nothing from the hub: its model is built locally "
            "(medreason_lib.models.tiny) and its data is bundled (data/)"
        )
        return 0
    verb = "would fetch" if dry_run else "fetching"
    print(f"profile {profile.name!r}: {verb} {len(items)} repositories")
    print(f"  into: models {hub}\n        datasets {datasets_cache}")
    if profile.data_source != "hub":
        print(f"  datasets: none (profile.data_source is {profile.data_source!r})")
    failed, total = [], 0
    for item in items:
        have = is_cached(item, folder)
        if dry_run:
            size = f"cached, {human(cached_size(item, folder))}" if have else "not cached"
            print(f"  {item.label}: {item.why} [{size}]")
            continue
        if not have:
            print(f"  {item.label}: downloading ({item.why})", flush=True)
            try:
                fetch_item(item, folder)
            except Exception as exc:  # one failed item must not stop the others
                failed.append((item, exc))
                print(f"  FAILED {item.label}: {type(exc).__name__}: {exc}".splitlines()[0])
                continue
        size = cached_size(item, folder)
        total += size
        print(f"  {item.label}: {human(size)}" + (" (was cached)" if have else ""))
    if dry_run:
        print("dry run: nothing fetched; sizes are measured when fetched (--dry-run off)")
    else:
        print(f"total on disk: {human(total)} for {len(items) - len(failed)} repositories")
    env = " ".join(f"{k}={v}" for k, v in offline_env(folder).items())
    print(f"then run every notebook offline with: export {env}")
    for item, exc in failed:
        print(f"could not fetch {' '.join(item.label.split())}: {_fix(exc)}", file=sys.stderr)
    return 1 if failed else 0


# --------------------------------------------------------------------------- the command line


class PrefetchError(UserError, ValueError):
    """Bad input to ``prefetch`` or ``eval --model`` (the command line exits with status 2)."""


def command(profile: Profile, args) -> int:
    """``python -m medreason_lib prefetch``: the exit status of what ``args`` asks for."""
    if args.reference and profile.name not in REFERENCE_MODELS:
        known = ", ".join(f"{k}: {v}" for k, v in REFERENCE_MODELS.items())
        raise PrefetchError(f"profile {profile.name!r} has no reference model (known: {known})")
    models = tuple(args.model or ())
    if paths.hub_offline() and not (args.dry_run or args.check or profile.is_tiny):
        raise PrefetchError(
            "HF_HUB_OFFLINE is set, so nothing can be downloaded: run prefetch without it "
            "(--dry-run lists what it would fetch; --check tests the offline read)"
        )
    if args.check:
        return check(profile, args.to, models, args.reference)
    return prefetch(profile, args.to, dry_run=args.dry_run, models=models, reference=args.reference)


def model_report_name(model: str) -> str:
    """The report name ``eval --model`` saves under: ``model-`` and the hub id or folder name,
    made safe for a file name (``hooman650/MedQwen3B-Reasoner`` ->
    ``model-hooman650--MedQwen3B-Reasoner``)."""
    path = Path(model).expanduser()
    name = path.resolve().name if path.is_dir() else model.strip("/")
    return "model-" + re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--"))


def model_source(model: str) -> str:
    """What ``eval --model`` loads: a folder holding a model (``config.json``), or a hub id
    (``owner/name``), which with ``HF_HUB_OFFLINE`` must be in the local cache. Raises
    ``PrefetchError`` saying what to do instead."""
    path = Path(model).expanduser()
    if path.exists():
        if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
            raise PrefetchError(f"--model {model} is a LoRA adapter: use --adapter {model}")
        if not (path / "config.json").is_file():
            raise PrefetchError(f"--model {model} holds no model (config.json)")
        return str(path)
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", model):
        raise PrefetchError(f"--model {model} is neither a folder nor a hub id (owner/name)")
    if paths.hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model, "config.json"), str):
            raise PrefetchError(
                f"--model {model}: HF_HUB_OFFLINE is set and the model is not in the local "
                f"cache: python -m medreason_lib prefetch --model {model} (online), or pass a "
                "local folder"
            )
    return model


# --------------------------------------------------------------------------- the offline check


def verify_offline(profile: Profile, models: tuple[str, ...] = (), reference: bool = False) -> int:
    """Load, with the hub switched off, each model's config and tokenizer and every split the
    profile reads through ``data.load_task(..., source="hub")``. Run it in a process started
    with ``offline_env`` (``check`` does); one line per failure, with the fix. Exit status."""
    import datasets

    from medreason_lib import data

    if not datasets.config.HF_HUB_OFFLINE:
        raise RuntimeError("verify_offline needs HF_HUB_OFFLINE=1 set before Python starts")
    problems = []
    for item in needs(profile, models, reference):
        if item.kind != "model":
            continue
        try:
            from transformers import AutoConfig, AutoTokenizer

            AutoConfig.from_pretrained(item.repo_id)
            AutoTokenizer.from_pretrained(item.repo_id)
            print(f"model {item.repo_id}: config and tokenizer load offline")
        except Exception as exc:
            problems.append(f"model {item.repo_id}: {type(exc).__name__}: {exc}")
    if profile.data_source == "hub":
        for task, split, purpose in task_splits(profile):
            try:
                data.load_task(task, split, source="hub")
            except Exception as exc:
                problems.append(f"{purpose} data {task}/{split}: {type(exc).__name__}: {exc}")
    for problem in problems:
        line = " ".join(problem.split())[:400]
        print(f"NOT OFFLINE: {line}. Fix: prefetch --profile {profile.name} (online), same folder")
    print(f"offline check: {'ok' if not problems else f'{len(problems)} failed'}")
    return 1 if problems else 0


def check(
    profile: Profile,
    folder: str | Path | None = None,
    models: tuple[str, ...] = (),
    reference: bool = False,
) -> int:
    """``verify_offline`` in a child process whose environment is ``offline_env(folder)``."""
    command = [sys.executable, "-m", "medreason_lib.runtime.prefetch", "--profile", profile.name]
    command += [a for m in models for a in ("--model", m)] + (["--reference"] * reference)
    env = os.environ | offline_env(folder)
    print(f"checking offline ({' '.join(f'{k}={v}' for k, v in offline_env(folder).items())})")
    return subprocess.run(command, env=env).returncode


def _main(argv: list[str] | None = None) -> int:  # the child process of ``check``
    parser = argparse.ArgumentParser(description="verify_offline (run by prefetch --check)")
    parser.add_argument("--profile", choices=list(PROFILES), required=True)
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--reference", action="store_true")
    args = parser.parse_args(argv)
    return verify_offline(get_profile(args.profile), tuple(args.model), args.reference)


if __name__ == "__main__":
    sys.exit(_main())
