"""Batched evaluation against one prompt at a time, on the tiny model. Prints figures.

The one-at-a-time loop is the usage on the MedQwen3B-Reasoner model card: for each question,
``apply_chat_template`` -> ``tokenizer([text])`` -> ``model.generate`` -> decode. The batched
path is ``evaluation.evaluate`` with its HF backend (left padding, prompts sorted by length,
one ``generate`` call per batch). Both decode greedily up to the profile's
``max_completion_length`` on the same 32 bundled items (a seeded mix of the five benchmarks),
with torch on one thread (fastest for this 0.7M-parameter model on a 2-core CPU). Both are
warmed up first; each figure is the best of ``REPEATS`` runs.

What limits the speed-up (measured on a 2-core CPU while other jobs ran): for this model the
one-at-a-time loop is dominated by ``generate``'s fixed cost per token (about 1 ms), which a
batch pays once for all its rows. A batch's own cost grows with rows x padded length: the
KV cache is concatenated every step, grouped-query keys/values are expanded to every head,
and attention runs over the padding. Hence the harness sorts prompts by length (the mixed
benchmarks range from 70 to 240 tokens) and batches 16 rows by default: two
length-homogeneous batches of 16 beat one batch of 32 (about 4.8x against 4.3x). Two torch
threads are several times slower than one when anything else runs on the machine.

Run: ``MEDREASON_PROFILE=tiny .venv/bin/python benchmarks/bench_eval_batching.py``
"""

from __future__ import annotations

import os
import time

import torch

from medreason_lib import evaluation, models
from medreason_lib.evaluation import generation
from medreason_lib.settings import profiles

N_ITEMS = 32
REPEATS = 3


def items(profile: profiles.Profile):
    """32 bundled benchmark items, a seeded mix of all five tasks."""
    mixed = evaluation.load_benchmarks(n=None, source="bundled")
    return mixed.shuffle(seed=profile.seed).select(range(N_ITEMS))


def one_at_a_time(model, tokenizer, rows, max_new_tokens: int) -> tuple[float, list[str]]:
    """The model card's loop; returns (seconds, completions)."""
    texts = []
    began = time.perf_counter()
    for row in rows:
        text = tokenizer.apply_chat_template(
            row["prompt"], tokenize=False, add_generation_prompt=True
        )
        inputs = tokenizer([text], return_tensors="pt").to(model.device)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[0][inputs["input_ids"].shape[1] :]
        texts.append(tokenizer.decode(new, skip_special_tokens=True))
    return time.perf_counter() - began, texts


def batched(model, tokenizer, rows, profile, batch_size: int | None = None):
    """``evaluation.evaluate`` on the same rows; returns (seconds, report)."""
    began = time.perf_counter()
    report = evaluation.evaluate(
        (model, tokenizer), rows, profile=profile, batch_size=batch_size, progress=False
    )
    return time.perf_counter() - began, report


def best(run) -> tuple[float, object]:
    """The fastest of ``REPEATS`` calls of ``run() -> (seconds, result)``."""
    return min((run() for _ in range(REPEATS)), key=lambda pair: pair[0])


def main() -> None:
    torch.set_num_threads(1)
    profile = profiles.get_profile(os.environ.get(profiles.ENV_VAR) or "tiny")
    if not profile.is_tiny:
        raise SystemExit("this benchmark is for the tiny profiles (CPU)")
    loaded = models.load_model(profile)
    model, tokenizer = loaded.model, loaded.tokenizer
    rows = items(profile)
    max_new = profile.max_completion_length
    one_at_a_time(model, tokenizer, rows.select(range(2)), max_new)  # warm-up
    batched(model, tokenizer, rows, profile)

    seq_s, seq_texts = best(lambda: one_at_a_time(model, tokenizer, rows, max_new))
    bat_s, report = best(lambda: batched(model, tokenizer, rows, profile))
    same = sum(
        r["completion"].strip() == t.strip() for r, t in zip(report.records, seq_texts, strict=True)
    )
    print(f"\n{N_ITEMS} items, profile {profile.name}, greedy, max_new_tokens {max_new}, 1 thread")
    print(f"one at a time (model card loop): {N_ITEMS / seq_s:6.1f} items/s  ({seq_s:.2f} s)")
    size = generation.HFGenerator.default_batch_size
    print(f"batched (evaluate, batch {size}):     {N_ITEMS / bat_s:6.1f} items/s  ({bat_s:.2f} s)")
    print(f"speed-up: {seq_s / bat_s:.1f}x; identical completions: {same}/{N_ITEMS}")

    print("\nbatch size sweep (evaluate):")
    for size in (1, 4, 8, 16, 32):
        seconds, _ = best(lambda size=size: batched(model, tokenizer, rows, profile, size))
        print(f"  batch {size:>2}: {N_ITEMS / seconds:6.1f} items/s  ({seq_s / seconds:.1f}x)")


if __name__ == "__main__":
    main()
