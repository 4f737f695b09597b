"""Continued pretraining (issue 13 item 4): the corpus never holds a test abstract, perplexity
is computed exactly, the LoRA trains the embeddings and the head, CPT lowers held-out
perplexity on tiny, and every keyword reaches the pinned TRL / peft / Unsloth release.

The corpus tests use the real PubMedQA release in /work/shared/reference-data (ori_pqal.json,
the labelled 1000, and test_ground_truth.json, the official 500 test PMIDs), read in place.
"""

from __future__ import annotations

import ast
import json
import math
import os
from pathlib import Path

import pytest
import torch
from datasets import Dataset, concatenate_datasets

from medreason_lib import models
from medreason_lib.course import solutions
from medreason_lib.data import DataError, load_task
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training import pretrain, pretrain_setup
from tools import api_drift as ad

REFERENCE = Path(os.environ.get("MEDREASON_REFERENCE_DATA", "/work/shared/reference-data"))
PUBMEDQA = REFERENCE / "pubmedqa"
TINY = PROFILES["tiny"]
GPU_PROFILES = [p for p in PROFILES.values() if p.uses_unsloth]


def _real(path: Path) -> Path:
    if not path.exists():  # not a skip: the reference data is part of the test setup
        pytest.fail(f"reference data missing: {path}", pytrace=False)
    return path


# --------------------------------------------------------------------------- the corpus


def test_real_pubmedqa_test_pmids_never_reach_the_corpus():
    folder = _real(PUBMEDQA)
    official = set(json.loads((folder / "test_ground_truth.json").read_text()))
    raw = json.loads((folder / "ori_pqal.json").read_text())
    assert len(official) == 500 and len(raw) == 1000
    settings = pretrain_setup.cpt_settings(TINY, n_heldout=50)
    corpus = pretrain.load_corpus(TINY, settings, source=folder)
    train, held = set(corpus.train["id"]), set(corpus.heldout["id"])
    assert not (train | held) & official, "a test PMID reached the CPT data"
    assert not train & held and len(held) == 50
    removed = corpus.contamination.n_removed
    assert len(train) + len(held) + removed == 500  # every non-test item, none lost silently
    for pmid, text in zip(corpus.train["id"][:50], corpus.train["text"][:50], strict=True):
        assert text == "\n".join(c.strip() for c in raw[pmid]["CONTEXTS"]).strip()


def test_a_test_pmid_is_refused_by_name():
    folder = _real(PUBMEDQA)
    test = load_task("pubmedqa", "test", source=folder, verbose=False)
    train = load_task("pubmedqa", "train", source=folder, verbose=False)
    pmids = pretrain.pubmedqa_test_pmids(test)
    leaked = test[7]["id"]
    rows = concatenate_datasets([train, test.select([7])])
    with pytest.raises(DataError, match=rf"test PMID\(s\) {leaked}\b"):
        pretrain.build_corpus(rows, test_pmids=pmids, n_heldout=5)
    # the official list alone catches it too (the bundled test ids are added on tiny)
    with pytest.raises(DataError, match=leaked):
        pretrain.refuse_test_pmids(rows["id"], pretrain.official_pubmedqa_test_pmids(), "x")


def test_a_copied_test_abstract_under_another_id_is_decontaminated():
    folder = _real(PUBMEDQA)
    test = load_task("pubmedqa", "test", source=folder, verbose=False)
    train = load_task("pubmedqa", "train", n=40, source=folder, seed=1, verbose=False)
    copy = test.select([3]).map(lambda r: {"id": "123456789"})
    rows = concatenate_datasets([train, copy])
    corpus = pretrain.build_corpus(
        rows,
        test_pmids=pretrain.pubmedqa_test_pmids(test),
        eval_sets={"pubmedqa test": test},
        n_heldout=5,
    )
    kept = set(corpus.train["id"]) | set(corpus.heldout["id"])
    assert "123456789" not in kept
    assert "123456789" in [c.train_id for c in corpus.contamination.collisions]


def _rows(ids, contexts):
    n = len(ids)
    return Dataset.from_dict(
        {"id": ids, "task": ["pubmedqa"] * n, "question": ["q?"] * n, "context": contexts}
    )


def test_bad_corpus_input_fails_naming_what_is_wrong():
    good = _rows(["1", "2", "3"], ["a b c", "d e f", "g h i"])
    with pytest.raises(DataError, match="PMID 2"):
        pretrain.build_corpus(_rows(["1", "2"], ["a", "  "]), test_pmids=set(), n_heldout=1)
    with pytest.raises(DataError, match="PMID 1 appears twice"):
        pretrain.build_corpus(
            _rows(["1", "1", "2"], ["a", "b", "c"]), test_pmids=set(), n_heldout=1
        )
    with pytest.raises(DataError, match=r"missing column\(s\) \['context'\]"):
        pretrain.build_corpus(good.remove_columns("context"), test_pmids=set(), n_heldout=1)
    with pytest.raises(ValueError, match="n_heldout=3"):
        pretrain.build_corpus(good, test_pmids=set(), n_heldout=3)
    split = pretrain.build_corpus(good, test_pmids=set(), n_heldout=1, seed=5)
    assert sorted([*split.train["id"], *split.heldout["id"]]) == ["1", "2", "3"]
    with pytest.raises(ValueError, match="embedding_learning_rate"):
        pretrain_setup.cpt_settings(TINY, embedding_learning_rate=1.0)
    with pytest.raises(ValueError, match="steps"):
        pretrain_setup.cpt_settings(TINY, steps=0)


# --------------------------------------------------------------------------- perplexity

TEXTS = [
    "Aspirin reduced the risk of stroke in adults with atrial fibrillation.",
    "Does vitamin D supplementation lower blood pressure? A randomized controlled trial.",
    "Mortality",
]


def _hand_nll(model, ids, start, first, end):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids[start:end]])).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    return -sum(logp[t - start - 1, ids[t]].item() for t in range(first, end)), end - first


@pytest.fixture(scope="module")
def tiny_model():
    from medreason_lib.models.tiny import build_tiny

    torch.manual_seed(0)
    return build_tiny("qwen2", seed=0)


def test_perplexity_matches_a_hand_computation(tiny_model, one_thread):
    model, tokenizer = tiny_model
    docs = [pretrain.training_ids(tokenizer, t) for t in TEXTS]
    assert all(d[-1] == tokenizer.eos_token_id for d in docs)
    assert pretrain.training_ids(tokenizer, TEXTS[0] + tokenizer.eos_token) == docs[0]
    nll = tokens = 0
    for ids in docs:
        n, t = _hand_nll(model, ids, 0, 1, len(ids))
        nll, tokens = nll + n, tokens + t
    for batch_size in (1, 2, 8):  # padding in a batch must not change a single number
        got = pretrain.perplexity(model, tokenizer, TEXTS, max_length=384, batch_size=batch_size)
        assert got.tokens == tokens == sum(len(d) - 1 for d in docs)
        assert math.isclose(got.value, math.exp(nll / tokens), rel_tol=1e-5)
        assert math.isclose(solutions.corpus_perplexity(got.per_document), got.value, rel_tol=1e-9)
    with pytest.raises(ValueError):
        pretrain.perplexity(model, tokenizer, [], max_length=384)
    with pytest.raises(ValueError, match="text 1"):
        pretrain.perplexity(model, tokenizer, ["a b", None], max_length=384)


def test_long_documents_are_scored_in_windows_each_token_once(tiny_model, one_thread):
    for n, length in [(1, 8), (2, 8), (8, 8), (9, 8), (50, 8), (51, 9), (1000, 64)]:
        spans = pretrain.windows(n, length)
        scored = [p for _, first, end in spans for p in range(first, end)]
        assert scored == list(range(1, n)), (n, length)
        assert all(end - start <= length and start <= first for start, first, end in spans)
        assert all(first - start >= length // 2 for start, first, _ in spans[1:])
    model, tokenizer = tiny_model
    ids = pretrain.training_ids(tokenizer, TEXTS[1])
    by_hand = [_hand_nll(model, ids, *w) for w in pretrain.windows(len(ids), 6)]
    nll, tokens = sum(n for n, _ in by_hand), sum(t for _, t in by_hand)
    got = pretrain.perplexity(model, tokenizer, TEXTS[1:2], max_length=6, batch_size=3)
    assert got.tokens == tokens == len(ids) - 1
    assert math.isclose(got.value, math.exp(nll / tokens), rel_tol=1e-5)


def test_a_uniform_model_has_the_vocabulary_size_as_perplexity(one_thread):
    from medreason_lib.models.tiny import build_tiny

    model, tokenizer = build_tiny("qwen2", seed=0)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()  # every logit 0: a uniform guess
    got = pretrain.perplexity(model, tokenizer, TEXTS, max_length=384)
    assert math.isclose(got.value, model.config.vocab_size, rel_tol=1e-6)


def test_perplexity_sends_the_ids_where_the_active_embedding_is(one_thread):
    """Unsloth keeps the frozen original embedding of a model whose embeddings train (peft's
    ``original_module``, the model's first parameter) off the GPU. Here it is moved to the
    ``meta`` device: the ids must follow the trained copy, not the first parameter."""
    model, tokenizer = models.load_for_cpt(TINY)
    model.eval()
    expected = pretrain.perplexity(model, tokenizer, TEXTS, max_length=384).value
    original = model.base_model.model.model.embed_tokens.original_module
    original.to("meta")
    first = next(model.parameters())
    assert first.device.type == "meta" and first is original.weight
    assert pretrain.input_device(model) == torch.device("cpu")
    got = pretrain.perplexity(model, tokenizer, TEXTS, max_length=384)
    assert math.isclose(got.value, expected, rel_tol=1e-6)


# --------------------------------------------------------------------------- what trains


def test_cpt_lora_trains_embed_tokens_and_lm_head(one_thread):
    model, tokenizer = models.load_for_cpt(TINY)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.endswith("embed_tokens.modules_to_save.default.weight") for n in trainable)
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert embed.weight is head.weight and embed.weight.requires_grad  # tied: one copy trains
    frozen = model.base_model.model.model.embed_tokens.original_module.weight.clone()
    counts = pretrain_setup.trainable_parameters(model)
    assert counts["embeddings"] == embed.weight.numel() and counts["other"] == 0
    groups = pretrain_setup.embedding_parameter_groups(model, 5e-3, 1e-3)
    assert [g["lr"] for g in groups] == [5e-3, 1e-3]
    assert any(p is embed.weight for p in groups[1]["params"])
    assert sum(p.numel() for g in groups for p in g["params"]) == counts["trainable"]
    ids = torch.tensor([pretrain.training_ids(tokenizer, TEXTS[0])])
    before = embed.weight.detach().clone()
    opt = pretrain_setup.optimizer(model, pretrain_setup.cpt_settings(TINY))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    assert not torch.equal(before, embed.weight) and torch.equal(head.weight, embed.weight)
    assert torch.equal(frozen, model.base_model.model.model.embed_tokens.original_module.weight)
    plain, _ = models._load_tiny(models.resolve_model_id(TINY.model_id))
    from peft import get_peft_model

    lora_only = get_peft_model(plain, models.lora_config(TINY))
    with pytest.raises(ValueError, match="load_for_cpt"):
        pretrain_setup.embedding_parameter_groups(lora_only, 1e-3, 1e-4)


def test_cpt_config_names_both_modules_for_every_profile():
    for profile in PROFILES.values():
        config = models.cpt_lora_config(profile, tied=False)
        assert set(config.modules_to_save) == {"embed_tokens", "lm_head"}
        assert (
            not config.ensure_weight_tying
            and models.cpt_lora_config(profile, tied=True).ensure_weight_tying
        )
        kwargs = models.unsloth_cpt_peft_kwargs(profile)
        assert {"embed_tokens", "lm_head"} <= set(kwargs["target_modules"]) and kwargs["use_rslora"]
        load = models.unsloth_cpt_load_kwargs(profile)
        assert load["fast_inference"] is False and "gpu_memory_utilization" not in load
        assert "offload_embedding" not in load


# --------------------------------------------------------------------------- one run


def test_cpt_lowers_held_out_perplexity_on_tiny(tmp_path, one_thread):
    from medreason_lib.models.tiny import build_tiny

    corpus = pretrain.load_corpus(TINY)
    result = pretrain.run_cpt(TINY, corpus, output_dir=tmp_path)
    assert result.after.value < 0.5 * result.before.value, (result.before, result.after)
    assert result.train_after.value < result.train_before.value
    assert len(result.losses) == pretrain_setup.cpt_settings(TINY).steps
    assert result.losses[-1][1] < result.losses[0][1]
    base, tokenizer = build_tiny("qwen2", seed=TINY.seed)  # "before" is the base model
    plain = pretrain.perplexity(base, tokenizer, corpus.heldout["text"], max_length=384)
    assert math.isclose(plain.value, result.before.value, rel_tol=1e-5)
    saved = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert set(saved["modules_to_save"]) >= {"embed_tokens"}
    from safetensors.torch import load_file

    tensors = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert any("embed_tokens" in name for name in tensors)
    recorded = json.loads((tmp_path / "cpt.json").read_text())
    assert recorded["perplexity_after"] == result.after.value


# --------------------------------------------------------------------------- API drift

TRAINER = "unsloth/trainer.py"
LLAMA = "unsloth/models/llama.py"
VISION = "unsloth/models/vision.py"
UTILS = "unsloth/models/_utils.py"


@pytest.fixture(scope="module")
def unsloth():
    try:
        return ad.Source(ad.wheel_path("unsloth", ad.gpu_pins()["unsloth"]))
    except FileNotFoundError as missing:
        pytest.fail(str(missing), pytrace=False)


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_cpt_config_kwargs_reach_sftconfig(profile, tmp_path):
    from trl import SFTConfig

    settings = pretrain_setup.cpt_settings(profile)
    kwargs = pretrain_setup.cpt_config_kwargs(profile, settings, tmp_path)
    rest = {k: v for k, v in kwargs.items() if k != "embedding_learning_rate"}
    ad.assert_keywords_exist(SFTConfig, rest, "trl.SFTConfig")
    SFTConfig(**rest)
    assert ("embedding_learning_rate" in kwargs) is profile.uses_unsloth


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=[p.name for p in GPU_PROFILES])
def test_unsloth_training_arguments_take_the_cpt_keywords(unsloth, profile, tmp_path):
    """UnslothTrainingArguments names embedding_learning_rate and hands every other keyword to
    its base class, which trainer.py imports as trl's SFTConfig."""
    args = unsloth.function(TRAINER, "UnslothTrainingArguments.__init__")
    assert "embedding_learning_rate" in args.named_parameters()
    assert "super().__init__" in args.forwarded_to()
    base = unsloth.class_def(TRAINER, "UnslothTrainingArguments").bases
    assert [ast.unparse(b) for b in base] == ["TrainingArguments"]
    assert "from trl import SFTConfig as TrainingArguments" in unsloth.read(TRAINER)
    kwargs = pretrain_setup.cpt_config_kwargs(
        profile, pretrain_setup.cpt_settings(profile), tmp_path
    )
    args.signature().bind(object(), **kwargs)
    assert kwargs["embedding_learning_rate"] < kwargs["learning_rate"]
    # UnslothTrainer gives the modules_to_save copies their own rate, by the rule we mirror
    assert unsloth.class_defines(TRAINER, "UnslothTrainer", "create_optimizer")
    grouping = ast.unparse(unsloth.function(TRAINER, "_create_unsloth_optimizer").node)
    assert repr(pretrain_setup.EMBEDDING_SUFFIX) in grouping
    assert {"UnslothTrainer", "UnslothTrainingArguments"} <= set(
        unsloth.constant(TRAINER, "__all__")
    )
    assert "from .trainer import *" in unsloth.read("unsloth/_gpu_init.py")
    # run_cpt's trainer keywords: UnslothTrainer has no __init__ of its own (SFTTrainer's)
    from trl import SFTTrainer

    assert not unsloth.class_defines(TRAINER, "UnslothTrainer", "__init__")
    used = {"model", "args", "train_dataset", "processing_class", "optimizers"}
    ad.assert_keywords_exist(SFTTrainer, used, "trl.SFTTrainer")


@pytest.mark.parametrize("profile", GPU_PROFILES, ids=[p.name for p in GPU_PROFILES])
def test_unsloth_cpt_peft_and_load_kwargs(unsloth, profile):
    real = unsloth.function(LLAMA, "FastLlamaModel.get_peft_model")
    kwargs = models.unsloth_cpt_peft_kwargs(profile)
    ad.assert_keywords_exist(real, kwargs)
    real.signature().bind(object(), **kwargs)
    ad.assert_keywords_exist(unsloth.function(VISION, "FastBaseModel.get_peft_model"), kwargs)
    # embed_tokens/lm_head in target_modules become modules_to_save (trained in full) ...
    assert real.calls("_redirect_embedding_targets")
    (leaves,) = [
        n.value
        for n in unsloth.tree(UTILS).body
        if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "EMBEDDING_MODULES"
    ]
    assert {"embed_tokens", "lm_head"} == ad._string_literals(leaves.args[0])
    # ... which Unsloth refuses beside a vLLM engine: CPT loads without fast_inference
    assert "fast inference does not work with training embeddings" in ast.unparse(real.node)
    load = unsloth.function("unsloth/models/loader.py", "FastLanguageModel.from_pretrained")
    ad.assert_keywords_exist(load, models.unsloth_cpt_load_kwargs(profile))


def test_cpt_lora_config_keywords_are_loraconfig_fields():
    import dataclasses

    from peft import LoraConfig

    course = ad.Source(ad.ROOT)
    config = course.function("medreason_lib/models/kwargs.py", "cpt_lora_config")
    (call,) = config.calls("LoraConfig")
    fields = {f.name for f in dataclasses.fields(LoraConfig) if f.init}
    ad.assert_keywords_exist(fields, {k.arg for k in call.keywords}, "peft.LoraConfig")
