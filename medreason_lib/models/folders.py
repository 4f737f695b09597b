"""Checking a model or adapter folder before anything loads it: one clear ``UserError``.

``transformers`` and ``peft`` load a damaged folder with a long traceback, or worse: a
``config.json`` cut off by a full disk, an architecture this ``transformers`` does not know, a
weights file missing or truncated by an interrupted copy or download. These checks read only
the small files and each weights file's header (a ``.safetensors`` file says in its first
bytes how long it must be; a ``.bin`` file is a zip archive whose directory is at its end), so
they take milliseconds even for a large model:

- ``check_model_folder(path)``: ``config.json`` is a JSON object with a ``model_type``; the
  weights are there (``model.safetensors``, its shards as the index lists them, or
  ``pytorch_model.bin``) and whole; a tokenizer is there and its JSON files parse.
- ``check_architecture(path)``: ``model_type`` is one this ``transformers`` knows, and a causal
  language model (it imports ``transformers``: on a GPU call it after Unsloth is imported).
- ``check_adapter_folder(path)``: ``adapter_config.json`` and the LoRA weights, whole.

``prefetch --check`` loads a model's config and tokenizer with the hub off; these checks add the
weights, and run on any folder a command is given (``ask --model``, ``eval --model``, a run's
base model and adapter, ``models.load_model``).
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from medreason_lib.settings.errors import UserError, json_object

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class ModelFolderError(UserError, OSError):
    """A model or adapter folder that cannot be loaded; the message names the file at fault."""


def _json_object(path: Path, what: str) -> dict:
    fix = "copy or save the model again (a file cut off by an interrupted copy or save?)"
    return json_object(path, fix, ModelFolderError, where=f"{what}: ")


def safetensors_problem(path: Path) -> str | None:
    """Why the ``.safetensors`` file ``path`` cannot be whole (its header gives the length),
    or None."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{path.name} is {size} bytes, too short for a safetensors file"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 * 2**20:
            return f"{path.name} has a damaged header (it claims {n} bytes; the file has {size})"
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError):
            return f"{path.name} has a damaged header (not JSON)"
    if not isinstance(header, dict):
        return f"{path.name} has a damaged header (not a JSON object)"
    try:
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"),
                  default=0)  # fmt: skip
    except (TypeError, KeyError, IndexError, ValueError):
        return f"{path.name} has a damaged header (no tensor offsets)"
    expected = 8 + n + end
    if size != expected:
        cut = "cut off" if size < expected else "longer than its header says"
        return f"{path.name} is {cut}: {size} bytes, its header describes {expected}"
    return None


def bin_problem(path: Path) -> str | None:
    """Why the PyTorch ``.bin``/``.pt`` file ``path`` cannot be whole, or None. A file saved by
    ``torch.save`` is a zip archive, whose directory is its last bytes: a cut-off file has none.
    (A file in the legacy pickle format is not checked.)"""
    with path.open("rb") as f:
        magic = f.read(4)
    if not magic:
        return f"{path.name} is empty"
    if magic.startswith(b"PK") and not zipfile.is_zipfile(path):
        return f"{path.name} is cut off (its zip directory is missing)"
    return None


def weights_problem(path: Path) -> str | None:
    """``safetensors_problem`` or ``bin_problem`` by the file's suffix (None: whole)."""
    if not path.is_file():
        return f"{path.name} is missing"
    return safetensors_problem(path) if path.suffix == ".safetensors" else bin_problem(path)


def _weight_files(folder: Path, stem: str) -> list[Path] | None:
    """The weights files of ``folder`` named ``<stem>.safetensors``/``.bin`` or listed by their
    index (``<stem>.safetensors.index.json``); None when there are none."""
    for suffix in (".safetensors", ".bin"):
        index = folder / f"{stem}{suffix}.index.json"
        if index.is_file():
            weight_map = _json_object(index, "the weights index").get("weight_map") or {}
            return [folder / name for name in sorted(set(weight_map.values()))]
        single = folder / f"{stem}{suffix}"
        if single.exists():
            return [single]
    return None


def weights_folder_problem(folder: Path, stems: tuple[str, ...]) -> str | None:
    """Why the weights of ``folder`` (the first of ``stems`` found, e.g. ``model`` or
    ``adapter_model``, single or sharded) cannot be loaded: none there, or one not whole."""
    try:
        files = next((f for f in (_weight_files(folder, s) for s in stems) if f), None)
    except ModelFolderError as exc:  # a damaged shard index
        return str(exc)
    if not files:
        return f"holds no weights file ({stems[0]}.safetensors, its shards, or a .bin file)"
    return next((p for p in map(weights_problem, files) if p), None)


def _check_weights(folder: Path, stems: tuple[str, ...], what: str, fix: str) -> None:
    problem = weights_folder_problem(folder, stems)
    if problem:
        raise ModelFolderError(f"{what} {folder}: {problem}: {fix}")


def check_model_folder(path: str | Path, what: str = "the model folder") -> Path:
    """``path`` after the file checks of a model folder (module docstring); ``ModelFolderError``
    (a ``UserError``) naming ``what`` and the file at fault otherwise. Imports nothing heavy."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelFolderError(f"{what} {folder} is not a folder")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelFolderError(f"{what} {folder} holds no model (config.json is missing)")
    config = _json_object(config_path, what)
    if not isinstance(config.get("model_type"), str):
        raise ModelFolderError(f"{what}: {config_path} names no model_type")
    fix = "copy or save the model again"
    _check_weights(folder, ("model", "pytorch_model"), what, fix)
    present = [name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if not present:
        raise ModelFolderError(
            f"{what} {folder} holds no tokenizer ({' or '.join(TOKENIZER_FILES[:2])}): save the "
            "tokenizer beside the model (tokenizer.save_pretrained)"
        )
    for name in present:
        if name.endswith(".json"):
            _json_object(folder / name, what)
    return folder


def check_architecture(path: str | Path, what: str = "the model folder") -> None:
    """``config.json``'s ``model_type`` is one this ``transformers`` knows as a causal language
    model (``ModelFolderError`` otherwise). Imports ``transformers``' auto mappings."""
    from transformers import __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    folder = Path(path).expanduser()
    model_type = _json_object(folder / "config.json", what).get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise ModelFolderError(
            f"{what} {folder}: config.json names the model_type {model_type!r}, an architecture "
            f"transformers {__version__} does not know: check config.json, or use a model the "
            "course supports (Qwen2.5, Qwen3, gpt-oss)"
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelFolderError(
            f"{what} {folder}: model_type {model_type!r} is not a causal language model (one "
            "that writes text), which the course trains and asks"
        )


def check_adapter_folder(path: str | Path, what: str = "the adapter folder") -> Path:
    """``path`` after checking it holds a LoRA adapter: ``adapter_config.json`` (a JSON object)
    and whole ``adapter_model`` weights; ``ModelFolderError`` naming ``what`` otherwise."""
    folder = Path(path).expanduser()
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise ModelFolderError(f"{what} {folder} holds no LoRA adapter (adapter_config.json)")
    _json_object(config_path, what)
    fix = "it was cut off while saving: train with --resume (or resume=True) to save it again"
    _check_weights(folder, ("adapter_model",), what, fix)
    return folder


def check_before_loading(name: str | Path, adapter: str | Path | None = None) -> None:
    """What ``models`` checks before it loads: a local model folder ``name`` (a hub id is not
    checked) and its architecture, and the ``adapter`` folder when one is given. ``name`` may
    itself be an adapter folder: Unsloth loads one as a model, the base its config names with
    the adapter on it (export's merge and DPO do that on a GPU); it is checked as an adapter,
    and its base too when that is a local folder."""
    if Path(name).is_dir() and (Path(name) / "adapter_config.json").is_file():
        check_adapter_folder(name)
        base = _json_object(Path(name) / "adapter_config.json", "the adapter's config")
        base = base.get("base_model_name_or_path")
        if isinstance(base, str) and Path(base).is_dir():
            check_before_loading(base)
    elif Path(name).is_dir():
        check_model_folder(name)
        check_architecture(name)
    if adapter is not None:
        check_adapter_folder(adapter)
