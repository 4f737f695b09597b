"""Continued pretraining (CPT): plain next-token training on biomedical text, and perplexity.

Before a model learns to answer (SFT, then GRPO) it can first read more of the domain's text:
continued pretraining is the same objective as pretraining (predict every next token of raw
text), resumed on a domain corpus. Here the corpus is PubMedQA abstracts (the ``context`` of
each item) from the **training side only**:

- ``load_corpus(profile)``: the PubMedQA training rows (bundled samples on ``tiny``; the 500
  labelled non-test items plus a sample of PQA-A on the GPU profiles), decontaminated against
  the PubMedQA test set (``decontaminate.decontaminate_against``: same PMID, 13-gram, fuzzy
  question), then split by PMID into a CPT training set and held-out abstracts.
- ``build_corpus``: that split for any rows. A row whose PMID is a test PMID is refused
  (``DataError`` naming it), not dropped: the training split never holds one, so one arriving
  means the input is wrong.
- ``perplexity``: exp(total NLL / total predicted tokens) over texts, every token after a
  document's first scored exactly once (long documents in windows), on the token sequence the
  trainer sees (the text plus the end-of-sequence token, as TRL's ``SFTTrainer`` appends it).
- ``run_cpt``: perplexity before, TRL's ``SFTTrainer`` on a ``text`` column (tiny; Unsloth's
  ``UnslothTrainer`` on a GPU), perplexity after, the adapter saved. The model comes from
  ``models.load_for_cpt``: LoRA plus fully trained ``embed_tokens`` and ``lm_head``, the
  embeddings at a smaller learning rate (Unsloth's ``embedding_learning_rate``; on tiny an
  optimizer with the same two parameter groups).

The settings, the trainer's configuration, the two learning rates, the parameter count and
the plots are in ``pretrain_setup``.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset

from medreason_lib.data import load_task
from medreason_lib.data.decontamination import Contamination, decontaminate_against
from medreason_lib.data.raw_formats import DataError, official_pubmedqa_test_pmids
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import Profile
from medreason_lib.settings.progress import progress_bar
from medreason_lib.training.pretrain_setup import (
    CPTSettings,
    cpt_config_kwargs,
    cpt_settings,
    optimizer,
    trainable_parameters,
)

# --------------------------------------------------------------------------- the corpus


@dataclass
class Corpus:
    """CPT training documents and held-out documents (columns ``id``, ``text``), disjoint by
    PMID, and what decontamination removed before the split."""

    train: Dataset
    heldout: Dataset
    contamination: Contamination | None = None

    def __str__(self) -> str:
        words = sum(len(t.split()) for t in self.train["text"])
        return (
            f"CPT corpus: {len(self.train)} training abstracts ({words:,} words), "
            f"{len(self.heldout)} held-out abstracts; no PMID on both sides, none a test PMID"
        )


def refuse_test_pmids(ids, test_pmids: set[str], where: str) -> None:
    """``DataError`` naming every id of ``ids`` that is a test PMID."""
    leaked = sorted({str(i) for i in ids} & {str(p) for p in test_pmids})
    if leaked:
        shown = ", ".join(leaked[:10]) + (
            f" and {len(leaked) - 10} more" if len(leaked) > 10 else ""
        )
        raise DataError(
            f"{where}: PubMedQA test PMID(s) {shown} in continued-pretraining data; the test "
            "abstracts must never be trained on (use the training split)"
        )


def _documents(rows: Dataset, where: str) -> dict[str, str]:
    """PMID -> abstract, refusing empty abstracts and one PMID with two different texts."""
    docs: dict[str, str] = {}
    for i, (pmid, text) in enumerate(zip(rows["id"], rows["context"], strict=True)):
        pmid, text = str(pmid), (text or "").strip()
        if not text:
            raise DataError(f"{where}: row {i} (PMID {pmid}): empty context, nothing to train on")
        if pmid in docs and docs[pmid] != text:
            raise DataError(f"{where}: PMID {pmid} appears twice with different abstracts")
        docs[pmid] = text
    if len(docs) < len(rows):
        print(
            f"{where}: {len(rows) - len(docs)} repeated PMID(s) with the same abstract, kept once"
        )
    return docs


def build_corpus(
    rows: Dataset,
    *,
    test_pmids: set[str],
    eval_sets: dict[str, Dataset] | None = None,
    n_heldout: int,
    seed: int = 0,
    where: str = "CPT data",
) -> Corpus:
    """Split PubMedQA-shaped ``rows`` (``id``, ``task``, ``question``, ``context``) into CPT
    training and held-out abstracts, disjoint by PMID (a seeded shuffle of the PMIDs).

    Refuses a test PMID (``refuse_test_pmids``), then drops rows that overlap ``eval_sets``
    (13-gram or fuzzy question, printed), refuses empty abstracts, and needs at least one
    abstract on each side.
    """
    needed = ["id", "context"] + (["task", "question"] if eval_sets else [])
    missing = [c for c in needed if c not in rows.column_names]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; has {rows.column_names}")
    refuse_test_pmids(rows["id"], test_pmids, where)
    contamination = None
    if eval_sets:
        rows, contamination = decontaminate_against(
            rows, eval_sets, test_ids={"pubmedqa": set(test_pmids)}
        )
    docs = _documents(rows, where)
    if not 1 <= n_heldout < len(docs):
        raise ValueError(
            f"n_heldout={n_heldout}: {where} has {len(docs)} abstracts; hold out at least 1 and "
            "leave at least 1 to train on"
        )
    pmids = sorted(docs)
    random.Random(seed).shuffle(pmids)
    held, train = pmids[:n_heldout], pmids[n_heldout:]
    assert not set(held) & set(train)
    return Corpus(_rows(docs, train), _rows(docs, held), contamination)


def _rows(docs: dict[str, str], ids: list[str]) -> Dataset:
    return Dataset.from_dict({"id": ids, "text": [docs[i] for i in ids]})


def pubmedqa_test_pmids(test_set: Dataset) -> set[str]:
    """The official PubMedQA test PMIDs and the ids of the test set in use (the bundled samples
    have test items of their own)."""
    return official_pubmedqa_test_pmids() | {str(i) for i in test_set["id"]}


def load_corpus(
    profile: Profile, settings: CPTSettings | None = None, *, source=None, seed: int | None = None
) -> Corpus:
    """The profile's CPT corpus: PubMedQA training-side abstracts (plus ``artificial_docs``
    PQA-A abstracts on the GPU profiles, where the profile's PubMedQA pools include
    ``train_artificial``: the hub has them, the bundled samples do not), decontaminated
    against the PubMedQA test set, with ``n_heldout`` held out. ``source`` as in
    ``data.load_task`` (None: the profile's)."""
    from datasets import concatenate_datasets

    settings = settings or cpt_settings(profile)
    seed = profile.seed if seed is None else seed
    test = load_task("pubmedqa", "test", source=source, seed=seed)
    parts = [load_task("pubmedqa", "train", source=source, seed=seed)]
    pools = profile.train_splits.get("pubmedqa", ())
    pools = (pools,) if isinstance(pools, str) else tuple(pools)
    if settings.artificial_docs and "train_artificial" in pools:
        n = settings.artificial_docs
        parts.append(load_task("pubmedqa", "train_artificial", n=n, source=source, seed=seed))
    elif settings.artificial_docs:
        print(
            f"no PQA-A abstracts: profile {profile.name!r} has no 'train_artificial' pool "
            f"(data_source {profile.data_source!r}); the corpus is the labelled training side"
        )
    rows = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return build_corpus(
        rows,
        test_pmids=pubmedqa_test_pmids(test),
        eval_sets={"pubmedqa test": test},
        n_heldout=settings.n_heldout,
        seed=seed,
        where="PubMedQA training side",
    )


# --------------------------------------------------------------------------- perplexity


@dataclass
class Perplexity:
    """Total negative log-likelihood (nats) and predicted tokens over some documents;
    ``value`` = exp(nll / tokens), token-weighted (a long abstract counts more)."""

    nll: float
    tokens: int
    documents: int
    per_document: list[tuple[float, int]] = field(default_factory=list)  # (nll, tokens)

    @property
    def value(self) -> float:
        return math.exp(self.nll / self.tokens)

    def __str__(self) -> str:
        return f"perplexity {self.value:,.2f} ({self.tokens:,} tokens, {self.documents} documents)"


def training_ids(tokenizer, text: str) -> list[int]:
    """The token ids the trainer sees for one document: the text with the end-of-sequence
    token appended (as TRL's ``SFTTrainer`` does for a ``text`` column), then tokenized."""
    eos = tokenizer.eos_token
    if eos and not text.endswith(eos):
        text += eos
    return list(tokenizer(text)["input_ids"])


def windows(n_tokens: int, max_length: int) -> list[tuple[int, int, int]]:
    """``(start, first_scored, end)`` windows over a document of ``n_tokens`` tokens: the model
    reads ``ids[start:end]`` and positions ``first_scored..end-1`` are scored. Every position
    from 1 on is scored exactly once; past the first window each reads at least
    ``max_length // 2`` tokens of context."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    if n_tokens <= max_length:
        return [(0, 1, n_tokens)] if n_tokens > 1 else []
    out, scored, stride = [(0, 1, max_length)], max_length, max_length // 2
    while scored < n_tokens:
        end = min(scored + stride, n_tokens)
        out.append((end - max_length, scored, end))
        scored = end
    return out


def input_device(model):
    """Where ``model``'s input ids must go: the device of its input embedding's active weight
    (peft's trained copy where the embedding trains). Not the first parameter's: with trained
    embeddings Unsloth keeps the frozen original (peft's ``original_module``, which comes
    first) off the GPU, in CPU memory or offloaded to disk."""
    weight = getattr(model.get_input_embeddings(), "weight", None)
    if weight is not None:
        return weight.device
    params = list(model.parameters())  # no weight to read: a trained parameter's device
    return next((p.device for p in params if p.requires_grad), params[0].device)


def perplexity(
    model, tokenizer, texts, *, max_length: int, batch_size: int = 4, desc: str = "perplexity"
) -> Perplexity:
    """Exact token-weighted perplexity of ``model`` on ``texts`` (see ``Perplexity``), with a
    progress bar. Leaves the model in the train/eval mode it was in."""
    import torch
    import torch.nn.functional as F

    texts = list(texts)
    if not texts:
        raise ValueError("perplexity needs at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"perplexity: text {i} is {text!r}, not a non-empty string")
    docs = [training_ids(tokenizer, t) for t in texts]
    jobs = [(d, w) for d, ids in enumerate(docs) for w in windows(len(ids), max_length)]
    if not jobs:
        raise ValueError("perplexity: no text has a token to predict")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = input_device(model)
    nll, count = [0.0] * len(docs), [0] * len(docs)
    was_training = model.training
    model.eval()
    bar = progress_bar(len(jobs), desc, unit="window")
    try:
        for b in range(0, len(jobs), batch_size):
            batch = jobs[b : b + batch_size]
            width = max(end - start for _, (start, _, end) in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, (d, (start, _, end)) in enumerate(batch):
                ids[row, : end - start] = torch.tensor(docs[d][start:end])
                mask[row, : end - start] = 1
            with torch.no_grad():
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for row, (d, (start, first, end)) in enumerate(batch):
                lo, hi = first - start, end - start  # scored positions within the window
                pred = logits[row, lo - 1 : hi - 1].float()
                target = ids[row, lo:hi].to(pred.device)
                nll[d] += F.cross_entropy(pred, target, reduction="sum").item()
                count[d] += hi - lo
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    return Perplexity(sum(nll), sum(count), len(docs), list(zip(nll, count, strict=True)))


# --------------------------------------------------------------------------- the run


@dataclass
class CPTResult:
    """What ``run_cpt`` measured."""

    losses: list[tuple[int, float]]  # (step, training loss) as logged
    before: Perplexity  # held-out abstracts, before training
    after: Perplexity
    train_before: Perplexity  # a sample of the training abstracts (memorising vs learning)
    train_after: Perplexity
    parameters: dict[str, int]
    seconds: float
    adapter_dir: Path | None = None

    def to_dict(self) -> dict:
        return {
            "perplexity_before": self.before.value,
            "perplexity_after": self.after.value,
            "train_perplexity_before": self.train_before.value,
            "train_perplexity_after": self.train_after.value,
            "cpt_loss_first": self.losses[0][1],
            "cpt_loss_last": self.losses[-1][1],
            "parameters": self.parameters,
            "seconds": round(self.seconds, 1),
        }


def default_cpt_dir(profile: Profile) -> Path:
    """``runs/<profile>/cpt``: where ``run_cpt`` saves its adapter and numbers."""
    return paths.runs_dir(profile.name) / "cpt"


def _measure(model, tokenizer, corpus: Corpus, settings: CPTSettings, when: str):
    """Perplexity on the held-out abstracts and on as many training abstracts."""
    sample = corpus.train.select(range(min(len(corpus.train), len(corpus.heldout))))
    return tuple(
        perplexity(model, tokenizer, texts, max_length=settings.max_length, desc=f"{what} ({when})")
        for texts, what in (
            (corpus.heldout["text"], "held-out perplexity"),
            (sample["text"], "training-sample perplexity"),
        )
    )


def run_cpt(
    profile: Profile,
    corpus: Corpus,
    settings: CPTSettings | None = None,
    *,
    model=None,
    tokenizer=None,
    output_dir: Path | None = None,
    save: bool = True,
) -> CPTResult:
    """Continued pretraining of the profile's model on ``corpus.train``, with perplexity on
    ``corpus.heldout`` (and on as many training abstracts) before and after.

    ``model``/``tokenizer``: one prepared by ``models.load_for_cpt`` (else it is loaded here).
    The run owns it: it is freed at the end (``models.close_trainer``), so keep no other use
    for it. Saves the adapter (LoRA plus the trained embedding copies) and ``cpt.json`` in
    ``output_dir`` (default ``runs/<profile>/cpt``) unless ``save=False``.
    """
    from medreason_lib.models import close_trainer, cpt_trainer_classes, load_for_cpt
    from medreason_lib.training.callbacks import use_course_progress
    from medreason_lib.training.trl_compat import install_cpu_logprob_fallback

    install_cpu_logprob_fallback()  # SFTTrainer's fused LM-head loss has no CPU kernel
    settings = settings or cpt_settings(profile)
    output_dir = Path(output_dir or default_cpt_dir(profile))
    began = time.perf_counter()
    if model is None or tokenizer is None:
        model, tokenizer = load_for_cpt(profile)
    counts = trainable_parameters(model)
    before, train_before = _measure(model, tokenizer, corpus, settings, "before")
    trainer_cls, config_cls = cpt_trainer_classes(profile)
    config = config_cls(**cpt_config_kwargs(profile, settings, output_dir / "_trainer"))
    # transformers (tiny, smol): plain TRL has no embedding_learning_rate, so pass Unsloth's
    # two-group optimizer
    extra = {} if profile.uses_unsloth else {"optimizers": (optimizer(model, settings), None)}
    trainer = trainer_cls(
        model=model,
        args=config,
        train_dataset=corpus.train.select_columns(["text"]),
        processing_class=tokenizer,
        **extra,
    )
    use_course_progress(trainer, "continued pretraining")
    trainer.train()
    losses = [(h["step"], float(h["loss"])) for h in trainer.state.log_history if "loss" in h]
    after, train_after = _measure(model, tokenizer, corpus, settings, "after")
    adapter = None
    if save:
        adapter = output_dir / "adapter"
        trainer.save_model(str(adapter))
        tokenizer.save_pretrained(str(adapter))
    del model
    close_trainer(trainer)
    seconds = time.perf_counter() - began
    result = CPTResult(losses, before, after, train_before, train_after, counts, seconds, adapter)
    if save:
        (output_dir / "cpt.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result
