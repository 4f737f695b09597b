"""A tiny random-init Qwen2 model and a locally trained tokenizer, for CPU runs and tests.

The ``tiny`` profiles stand in for the real models on a machine without a GPU. Nothing is
downloaded: ``build_tiny`` trains a byte-level BPE tokenizer on the course's own text (the
bundled files in ``data/``, the answer template, a short word list) and creates a
``Qwen2ForCausalLM`` with random weights. The model knows nothing; it is here so that every
code path (chat templates, generation, LoRA, GRPO steps) runs in seconds.

Three chat formats, one per ``Profile.family``, each a simplified template of the real
model's shape (the Jinja files are in ``chat_templates/``):

- ``qwen2``: Qwen2.5-Instruct, ``<|im_start|>role\\n...<|im_end|>``; eos ``<|im_end|>``.
- ``qwen3``: the same plus the think block; ``<think>``/``</think>`` are added tokens that are
  *not* special (they survive ``skip_special_tokens=True``, as in Qwen3), and
  ``enable_thinking=False`` ends the generation prompt with ``<think>\\n\\n</think>\\n\\n``.
- ``gpt-oss``: harmony, ``<|start|>role<|message|>...<|end|>`` with ``analysis`` and
  ``final`` channels and a ``reasoning_effort`` keyword; eos ``<|return|>``. ``<|end|>`` closes
  the analysis message and is not an eos (the final channel follows it); like every harmony
  marker it is a special token, so ``skip_special_tokens=True`` strips it.

All families pad with ``<|endoftext|>``, on the left. None inserts a default system message
(Qwen2.5's real template does): ``DEFAULT_SYSTEM_FOR_QWEN`` is ``None`` to say so.

Built models are cached in ``paths.cache_dir() / "tiny" / "<family>-<fingerprint>"``, a folder
that ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` read. The
fingerprint hashes everything the build depends on, so editing the corpus, a template, the
config or ``VERSION`` builds a new folder instead of reusing a stale one.

Speed: about 0.7M parameters; on a 2-core CPU one thread is fastest (``torch.set_num_threads(1)``
generated about 2,300 sampled tokens/s for 8 x 48 tokens; two threads competing with another
busy process were 15-50x slower).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from medreason_lib.scoring import template
from medreason_lib.settings import paths

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

VERSION = 1  # bump when the build changes in a way the fingerprint cannot see

FAMILIES = ("qwen2", "qwen3", "gpt-oss")

# Qwen2ForCausalLM sizes: small enough that a GRPO step on a 2-core CPU takes about a second.
# ``vocab_size`` is not here: it is the size of the trained tokenizer.
TINY_CONFIG: dict = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
}

# Target size of the BPE vocabulary; a small corpus (an empty data/) gives fewer tokens.
VOCAB_SIZE = 3072
# Bundled data beyond this many characters is left out of the tokenizer corpus.
MAX_DATA_CHARS = 1_000_000
# The data files only: the datasheets (README.md) are prose about the data, and editing one
# must not change the tiny model (and with it every cached warm start).
DATA_SUFFIXES = (".json", ".jsonl", ".csv")

# Special tokens (ids 0..n-1 in this order), non-special added tokens, and eos, per family.
FAMILY_TOKENS: dict[str, dict] = {
    "qwen2": {
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "added": [],
        "eos": "<|im_end|>",
    },
    "qwen3": {
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "added": ["<think>", "</think>"],
        "eos": "<|im_end|>",
    },
    "gpt-oss": {
        "special": [
            "<|endoftext|>",
            "<|start|>",
            "<|end|>",
            "<|message|>",
            "<|channel|>",
            "<|return|>",
        ],
        "added": [],
        "eos": "<|return|>",
    },
}
PAD_TOKEN = "<|endoftext|>"

DEFAULT_SYSTEM_FOR_QWEN: str | None = None  # the tiny templates add no default system message

# Qwen2's pre-tokenizer split: letters in runs, digits one by one, punctuation in runs.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_TEMPLATE_DIR = paths.PACKAGE_DIR / "chat_templates"

_WORDS = """
the a an of and or to in on at for with by from as is are was were be been has have had not
this that these those which who what when where why how does do did can may might should
will would than then there their its it we you he she they patient patients study studies
result results method methods conclusion background objective trial randomized controlled
cohort group groups risk ratio odds confidence interval significant significantly analysis
treatment therapy dose doses drug drugs effect effects outcome outcomes clinical disease
diagnosis symptom symptoms pain fever cough infection cancer tumor heart blood pressure
hypertension diabetes insulin glucose kidney renal liver hepatic lung pulmonary brain
cardiac artery vein cell cells protein gene genes mutation receptor enzyme acid vitamin
antibiotic vaccine surgery surgical hospital mortality survival age years year months
women men children adult adults elderly increase increased decrease decreased level levels
mg kg ml mmol per day daily week weeks hour hours mean median rate rates percent total
question answer reasoning option options correct because therefore so first second next
most likely following best choice true false yes no maybe answer
"""


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny model family {family!r}; valid: {', '.join(FAMILIES)}")


@functools.cache
def chat_template(family: str) -> str:
    """The Jinja chat template text of a family (``chat_templates/<family>.jinja``)."""
    _check_family(family)
    return (_TEMPLATE_DIR / f"{family}.jinja").read_text(encoding="utf-8")


def _data_lines() -> list[str]:
    """Non-empty lines of the bundled data files, in path order, up to ``MAX_DATA_CHARS``."""
    root = paths.data_dir()
    if not root.is_dir():
        return []
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    lines: list[str] = []
    used = 0
    for path in files:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            if used + len(line) > MAX_DATA_CHARS:
                return lines
            lines.append(line)
            used += len(line)
    return lines


def _template_lines() -> list[str]:
    """The course's fixed strings and the chat templates' words, once each."""
    tags = [template.REASONING_OPEN, template.REASONING_CLOSE]
    tags += [template.ANSWER_OPEN, template.ANSWER_CLOSE]
    lines = [template.SYSTEM_PROMPT, template.format_completion("Because of this.", "yes")]
    lines += tags + [f"{tag}\n" for tag in tags]
    lines += ["yes", "no", "maybe", " yes", " no", " maybe", "Yes", "No", "Maybe"]
    lines += (
        [f"{c}" for c in "ABCD"] + [f"({c}) " for c in "ABCD"] + [f"Answer: {c}" for c in "ABCD"]
    )
    lines += [str(n) for n in range(100)] + ["3.5", "-2", "1,000", "#### 42"]
    lines += ["system", "user", "assistant", "developer", "analysis", "final", "Reasoning: "]
    lines += ["low", "medium", "high", "# Instructions", "You are a helpful assistant."]
    lines += ["# Valid channels: analysis, final. Channel must be included for every message."]
    return lines


def tokenizer_corpus() -> list[str]:
    """The text the tokenizer is trained on, as a list of lines.

    Bundled data lines (``*.json``, ``*.jsonl``, ``*.csv``, ``*.md`` under
    ``paths.data_dir()``, read as raw text; an empty or missing folder gives none), then the
    course's template strings repeated 50 times (so tags, yes/no/maybe, A-D and digits become
    one or a few tokens), then a short English/medical word list (so the vocabulary is not
    made only of template pieces).
    """
    words = _WORDS.split()
    return _data_lines() + _template_lines() * 50 + [" ".join(words)] * 5 + words


def _train_tokenizer(family: str, corpus: list[str]) -> Tokenizer:
    """A ``tokenizers.Tokenizer``: NFC, Qwen2's split, byte-level BPE trained on ``corpus``."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    tokens = FAMILY_TOKENS[family]
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=tokens["special"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in tokens["added"]])
    return tok


def _build_tokenizer(family: str, corpus: list[str]) -> PreTrainedTokenizerFast:
    """Wrap the trained tokenizer as a ``PreTrainedTokenizerFast`` with the chat template."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(family, corpus),
        eos_token=FAMILY_TOKENS[family]["eos"],
        pad_token=PAD_TOKEN,
        padding_side="left",
        model_max_length=TINY_CONFIG["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = chat_template(family)
    return tokenizer


def _build_model(tokenizer: PreTrainedTokenizerFast, seed: int) -> Qwen2ForCausalLM:
    """A random-init ``Qwen2ForCausalLM`` (float32, eval mode) sized by ``TINY_CONFIG``.

    Weights come from ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng``, so the
    caller's random state is left as it was.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = Qwen2Config(
        **TINY_CONFIG,
        vocab_size=len(tokenizer),
        bos_token_id=pad_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(torch.float32)
    # Like the real models: stop on the family's eos or on <|endoftext|>.
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id, eos_token_id=[tokenizer.eos_token_id, pad_id], pad_token_id=pad_id
    )
    return model.eval()


def _build(
    family: str, seed: int, corpus: list[str]
) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    tokenizer = _build_tokenizer(family, corpus)
    return _build_model(tokenizer, seed), tokenizer


def fingerprint(family: str = "qwen2", seed: int = 0, corpus: list[str] | None = None) -> str:
    """Twelve hex digits that change whenever the built model would change.

    Hashes ``VERSION``, the family and seed, ``TINY_CONFIG``, ``VOCAB_SIZE``, the family's
    tokens, its template text and the tokenizer corpus (read now unless given).
    """
    _check_family(family)
    corpus = tokenizer_corpus() if corpus is None else corpus
    digest = hashlib.sha256()
    head = [VERSION, family, seed, TINY_CONFIG, VOCAB_SIZE, FAMILY_TOKENS[family]]
    digest.update(json.dumps(head, sort_keys=True).encode())
    digest.update(chat_template(family).encode())
    for line in corpus:
        digest.update(line.encode("utf-8", errors="replace") + b"\0")
    return digest.hexdigest()[:12]


_BUILD_INFO = "tiny_build.json"  # written last; a folder without it is not a finished build


def tiny_model_path(family: str = "qwen2", seed: int = 0) -> Path:
    """The cached model folder for ``family`` and ``seed``, built first if missing.

    A build is written to a temporary folder beside the cache entry and moved into place
    (``paths.building``), so a reader never sees half a model. When two processes build at
    once, the first move wins and the other's copy is discarded.
    """
    _check_family(family)
    corpus = tokenizer_corpus()
    final = paths.cache_dir() / "tiny" / f"{family}-{fingerprint(family, seed, corpus)}"
    if (final / _BUILD_INFO).is_file():
        return final
    with paths.building(final, _BUILD_INFO) as tmp:
        model, tokenizer = _build(family, seed, corpus)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {"family": family, "seed": seed, "version": VERSION, "vocab_size": len(tokenizer)}
        info["parameters"] = sum(p.numel() for p in model.parameters())
        (tmp / _BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return final


def resolve_model_id(model_id: str, seed: int = 0) -> str:
    """``"tiny:<family>"`` -> the cached folder (built if needed); any other id unchanged."""
    if model_id.startswith("tiny:"):
        return str(tiny_model_path(model_id.removeprefix("tiny:"), seed))
    return model_id


def build_tiny(
    family: str = "qwen2", *, seed: int = 0, cache: bool = True
) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """Return ``(model, tokenizer)``: a random-init ``Qwen2ForCausalLM`` and its tokenizer.

    With ``cache=True`` (the default) both are loaded with ``from_pretrained`` from
    ``tiny_model_path(family, seed)``, building it on first use. With ``cache=False`` they
    are built in memory and nothing is written. Either way the result depends only on
    ``family``, ``seed`` and the fingerprinted inputs. The model is float32, in eval mode.
    (The tokenizer's class differs: a loaded one is ``Qwen2Tokenizer``, which ``AutoTokenizer``
    picks from the config, an in-memory one is ``PreTrainedTokenizerFast``; both wrap the same
    ``tokenizer.json`` and encode identically.)
    """
    _check_family(family)
    if not cache:
        return _build(family, seed, tokenizer_corpus())
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_path(family, seed)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(path)
