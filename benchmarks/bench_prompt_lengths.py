"""Prompt lengths of the real data under each GPU family's chat template. Prints tables.

The GPU profiles' ``max_prompt_length``, ``max_completion_length`` and ``max_seq_length``
(``medreason_lib/settings/profiles.py``) are set from this script's figures. For each family
(``qwen2`` = profile ``3b``, ``qwen3`` = ``8b``, ``gpt-oss`` = ``20b``) it renders every row of
the real data exactly as the trainer does (``training.config.prompt_lengths``: the course's
system prompt + the task's user turn, through the chat template with the profile's
``chat_template_kwargs`` and the generation prompt) and prints, per task, the count, mean,
p50/p90/p95/p99 and maximum prompt tokens, the fixed part of every prompt (chat template +
system prompt, measured with an empty user turn), and the share of rows that each
``max_prompt_length`` in ``--limits`` keeps (the profile's own value is always shown).

Data: the raw upstream files in ``--data`` (default: ``paths.reference_data_dir()``, i.e.
``$MEDREASON_REFERENCE_DATA`` or ``../shared/reference-data``), read by ``data.load_task``.
PubMedQA is the expert-labelled 1000 (``ori_pqal.json``: train and test 500 each); the GPU
profiles train on ``pqa_artificial``, whose abstracts are built the same way but are not in
the reference data. Without the folder the bundled samples are used, and the output says so.

Tokenizers (``--tokenizer FAMILY=PATH``, or ``$MEDREASON_TOKENIZERS``: a folder holding
``qwen2/``, ``qwen3/`` or ``qwen/`` and ``gpt-oss/`` or ``o200k_base.tiktoken``). PATH is

- a folder with ``tokenizer.json`` (a hub snapshot of the model, or ``save_pretrained``);
- a ``tokenizer.json`` file;
- for gpt-oss, the ``o200k_base.tiktoken`` rank file: converted here to o200k_harmony (the
  ranks plus harmony's special tokens, ids 199998-201087) with transformers' tiktoken
  converter, as gpt-oss's own ``tokenizer.json`` was made.

Qwen2.5 and Qwen3 share one byte-level BPE vocabulary (151,643 tokens); they differ only in
added tokens (``<think>``, ...) that these prompts never contain, so one Qwen tokenizer serves
both families. Each family is rendered with its model's original chat template, the copy TRL
ships in ``trl/chat_templates`` (``qwen2_5.jinja``, ``qwen3.jinja``, ``gptoss.jinja``), unless
``--own-template`` asks for the tokenizer folder's own. The course's ``chat_templates/*.jinja``
are simplified stand-ins for the tiny models and are not used here.

A family without a tokenizer is measured with a PROXY, labelled as such on every row: the
rendered prompt's characters / 4 (OpenAI's rule of thumb for English text). On the reference
data its mean PubMedQA train prompt was 8% above the real count for Qwen2.5 (411 against 379)
and 14% above for gpt-oss (479 against 419, the harmony markers being one token each). Budgets
must not be set from proxy figures.

Run: ``.venv/bin/python benchmarks/bench_prompt_lengths.py --tokenizer qwen=/path/to/qwen
--tokenizer gpt-oss=/path/to/o200k_base.tiktoken``
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

from medreason_lib import data
from medreason_lib.scoring import template
from medreason_lib.settings import paths, profiles
from medreason_lib.training.config import prompt_lengths

FAMILY_PROFILE = {"qwen2": "3b", "qwen3": "8b", "gpt-oss": "20b"}
OFFICIAL_TEMPLATE = {"qwen2": "qwen2_5.jinja", "qwen3": "qwen3.jinja", "gpt-oss": "gptoss.jinja"}
# Where $MEDREASON_TOKENIZERS may hold each family's tokenizer, first match wins.
TOKENIZER_NAMES = {
    "qwen2": ("qwen2", "qwen"),
    "qwen3": ("qwen3", "qwen"),
    "gpt-oss": ("gpt-oss", "o200k_base.tiktoken"),
}
# (task, split); the first two are the GRPO training mix, the rest are the evaluation sets.
TASK_SPLITS = (
    ("pubmedqa", "train"),
    ("gsm8k", "train"),
    ("pubmedqa", "test"),
    ("gsm8k", "test"),
    ("medqa", "test"),
    ("medmcqa", "test"),
    ("mmlu_medical", "test"),
)
TRAINING = {("pubmedqa", "train"), ("gsm8k", "train")}
DEFAULT_LIMITS = (256, 384, 512, 640, 768, 1024)
PROXY_CHARS_PER_TOKEN = 4.0

# o200k_base's pre-tokenizer (tiktoken_ext/openai_public.py) and o200k_harmony's specials.
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
HARMONY_SPECIALS = {
    199998: "<|startoftext|>",
    199999: "<|endoftext|>",
    200002: "<|return|>",
    200003: "<|constrain|>",
    200005: "<|channel|>",
    200006: "<|start|>",
    200007: "<|end|>",
    200008: "<|message|>",
    200012: "<|call|>",
}
O200K_RANKS = 199998  # ordinary tokens of o200k_base; harmony's specials follow, to 201087


def official_template(family: str) -> str:
    """The model's original chat template, as TRL ships it for identity checks."""
    return (resources.files("trl") / "chat_templates" / OFFICIAL_TEMPLATE[family]).read_text()


def _o200k_harmony(tiktoken_file: Path):
    """A transformers tokenizer for gpt-oss from the o200k_base rank file (no tiktoken needed)."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _LocalRanks(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(path):  # tiktoken's format: "<base64 token> <rank>" per line
            ranks = {}
            with open(path, "rb") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        parts = line.split()
                        if len(parts) != 2:
                            raise ValueError(f"{path}: line {n} is not '<base64> <rank>'")
                        ranks[base64.b64decode(parts[0])] = int(parts[1])
            return ranks

    specials = [HARMONY_SPECIALS.get(i, f"<|reserved_{i}|>") for i in range(O200K_RANKS, 201088)]
    converted = _LocalRanks(
        str(tiktoken_file), pattern=O200K_PATTERN, extra_special_tokens=specials
    ).converted()
    tok = PreTrainedTokenizerFast(tokenizer_object=converted)
    if len(tok) != 201088 or tok.convert_tokens_to_ids("<|start|>") != 200006:
        raise ValueError(f"{tiktoken_file} is not o200k_base: {len(tok)} tokens after conversion")
    return tok


def load_tokenizer(family: str, path: Path, own_template: bool):
    """(tokenizer with the family's chat template, description)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not path.exists():
        raise FileNotFoundError(f"--tokenizer {family}={path}: no such file or folder")
    if path.suffix == ".tiktoken":
        if family != "gpt-oss":
            raise ValueError(f"--tokenizer {family}={path}: a .tiktoken file is for gpt-oss only")
        tok = _o200k_harmony(path)
    elif path.is_dir():
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    else:
        tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    if not (own_template and tok.chat_template):
        tok.chat_template = official_template(family)
    template = "own" if own_template and tok.chat_template else OFFICIAL_TEMPLATE[family]
    return tok, f"{path} ({len(tok)} tokens; template {template})"


class ProxyTokenizer:
    """Renders the official template and counts characters / 4: an estimate, not a tokenizer."""

    def __init__(self, family: str):
        from transformers.utils.chat_template_utils import render_jinja_template

        self._render = render_jinja_template
        self.chat_template = official_template(family)

    def apply_chat_template(self, messages, add_generation_prompt, tokenize, **kwargs):
        rendered, _ = self._render(
            conversations=[messages],
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            **kwargs,
        )
        return rendered[0]

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [0] * math.ceil(len(text) / PROXY_CHARS_PER_TOKEN)}


def tokenizer_paths(args) -> dict[str, Path]:
    """Family -> tokenizer path, from --tokenizer (wins) and $MEDREASON_TOKENIZERS."""
    found: dict[str, Path] = {}
    folder = os.environ.get("MEDREASON_TOKENIZERS")
    if folder:
        for family, names in TOKENIZER_NAMES.items():
            hit = next((Path(folder) / n for n in names if (Path(folder) / n).exists()), None)
            if hit is not None:
                found[family] = hit
    for spec in args.tokenizer:
        key, sep, value = spec.partition("=")
        families = ("qwen2", "qwen3") if key == "qwen" else (key,)
        if not sep or any(f not in FAMILY_PROFILE for f in families):
            raise SystemExit(
                f"--tokenizer {spec!r}: expected FAMILY=PATH with FAMILY one of "
                f"qwen, {', '.join(FAMILY_PROFILE)}"
            )
        for f in families:
            found[f] = Path(value).expanduser()
    return found


def load_rows(source) -> dict[tuple[str, str], object]:
    return {
        (task, split): data.load_task(task, split, source=source, verbose=False)
        for task, split in TASK_SPLITS
    }


def summary(lengths: list[int], limits: list[int]) -> dict:
    a = np.asarray(lengths)
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    kept = {lim: float((a <= lim).mean()) for lim in limits}
    return {
        "n": len(a), "mean": a.mean(), "p50": p50, "p90": p90, "p95": p95, "p99": p99,
        "max": int(a.max()), "kept": kept,
    }  # fmt: skip


def smallest_limit(stats: dict, keep: float, step: int = 64) -> int:
    """The smallest multiple of ``step`` keeping ``keep`` of every training-mix task."""
    need = max(np.ceil(s["lengths_q"][keep] / step) * step for s in stats.values())
    return int(need)


def measure_family(family: str, tokenizer, label: str, rows: dict, limits: list[int]) -> dict:
    profile = profiles.PROFILES[FAMILY_PROFILE[family]]
    limits = sorted({*limits, profile.max_prompt_length})
    fixed_text = tokenizer.apply_chat_template(
        [{"role": "system", "content": template.SYSTEM_PROMPT}, {"role": "user", "content": ""}],
        add_generation_prompt=True,
        tokenize=False,
        **profile.chat_template_kwargs,
    )
    fixed = len(tokenizer(fixed_text, add_special_tokens=False)["input_ids"])
    print(f"\n== {family} (profile {profile.name}, {profile.chat_template_kwargs or 'no kwargs'})")
    print(f"   tokenizer: {label}")
    print(
        f"   fixed part of every prompt (template + system prompt, empty user turn): {fixed} "
        f"tokens; profile now: max_prompt_length {profile.max_prompt_length}, completion "
        f"{profile.max_completion_length}, max_seq_length {profile.max_seq_length}"
    )
    head = f"   {'task/split':22} {'n':>5} {'mean':>6} {'p50':>5} {'p90':>5} {'p95':>5}"
    head += f" {'p99':>5} {'max':>5}  " + " ".join(f"<={lim:<5}" for lim in limits)
    print(head)
    proxy = " PROXY" if isinstance(tokenizer, ProxyTokenizer) else ""
    out = {}
    for (task, split), ds in rows.items():
        began = time.perf_counter()
        lengths = prompt_lengths(ds, tokenizer, profile)
        s = summary(lengths, limits)
        s["lengths_q"] = {q: float(np.quantile(lengths, q)) for q in (0.90, 0.95, 0.99)}
        s["seconds"] = time.perf_counter() - began
        out[(task, split)] = s
        mark = "*" if (task, split) in TRAINING else " "
        kept = " ".join(f"{100 * s['kept'][lim]:5.1f}%" for lim in limits)
        print(
            f" {mark} {task + '/' + split:22} {s['n']:5d} {s['mean']:6.0f} {s['p50']:5.0f} "
            f"{s['p90']:5.0f} {s['p95']:5.0f} {s['p99']:5.0f} {s['max']:5d}  {kept}{proxy}"
        )
    train = {k: v for k, v in out.items() if k in TRAINING}
    print(
        "   (* = GRPO training mix) smallest multiple of 64 keeping, in every training task, "
        f"95%: {smallest_limit(train, 0.95)}, 99%: {smallest_limit(train, 0.99)}; "
        f"longest evaluation prompt: {max(v['max'] for k, v in out.items() if k not in TRAINING)}"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tokenizer",
        action="append",
        default=[],
        metavar="FAMILY=PATH",
        help="qwen (both Qwen families), qwen2, qwen3 or gpt-oss = a tokenizer folder, a "
        "tokenizer.json, or (gpt-oss) o200k_base.tiktoken; repeatable",
    )
    parser.add_argument("--data", type=Path, help="folder of raw upstream files")
    parser.add_argument("--limits", type=int, nargs="+", default=list(DEFAULT_LIMITS))
    parser.add_argument("--families", nargs="+", default=list(FAMILY_PROFILE))
    parser.add_argument(
        "--own-template",
        action="store_true",
        help="use the tokenizer folder's own chat template instead of the model's original",
    )
    args = parser.parse_args(argv)
    unknown = [f for f in args.families if f not in FAMILY_PROFILE]
    if unknown:
        parser.error(f"unknown families {unknown}; valid: {list(FAMILY_PROFILE)}")

    source = args.data or paths.reference_data_dir()
    if source is None:
        print("NOTE: no reference data (set MEDREASON_REFERENCE_DATA or --data): measuring the "
              "bundled samples, which are NOT the real data's lengths")  # fmt: skip
        source = "bundled"
    rows = load_rows(source)
    print(f"data: {source}; " + ", ".join(f"{t}/{s} {len(d)}" for (t, s), d in rows.items()))

    found = tokenizer_paths(args)
    for family in args.families:
        if family in found:
            tokenizer, label = load_tokenizer(family, found[family], args.own_template)
        else:
            tokenizer = ProxyTokenizer(family)
            label = (
                f"PROXY: characters / {PROXY_CHARS_PER_TOKEN:g} of the text rendered with "
                f"{OFFICIAL_TEMPLATE[family]} (no tokenizer given; do not set budgets from this)"
            )
        measure_family(family, tokenizer, label, rows, args.limits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
