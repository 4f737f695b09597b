"""One model on the GPU at a time: every helper a notebook calls frees the models it loaded.

On a GPU a model left alive keeps its weights (and its vLLM engine's memory) on the card, and
the next load runs out of memory or vLLM refuses to start. The cause reproduces on a CPU:
Unsloth's LoRA models reference themselves (``model.load_lora = functools.partial(load_lora,
model)``), so a model whose last name is dropped lives on until ``gc.collect()``. Here the
tiny loader gets the same self-references, automatic garbage collection is switched off (so
only the helpers' own collection counts), and every model loaded is watched with a weakref.
"""

from __future__ import annotations

import functools
import gc
import weakref

import pytest

from conftest import TEST_BATCH
from medreason_lib import evaluation, export, models
from medreason_lib.data import load_task
from medreason_lib.export import ask
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training import sft, train

TINY = PROFILES["tiny"]
pytestmark = pytest.mark.usefixtures("one_thread")


def _unsloth_load_lora(model, path):  # the shape of Unsloth's load_lora/save_lora
    return path


class Watch:
    """Weakrefs to every model the tiny loader hands out, with Unsloth's self-references."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []

    def loader(self, real):
        def load(path, *args):
            model, tokenizer = real(path, *args)
            model.load_lora = functools.partial(_unsloth_load_lora, model)
            model.save_lora = functools.partial(_unsloth_load_lora, model)
            self.refs.append(weakref.ref(model))
            return model, tokenizer

        return load

    def alive(self) -> int:
        return sum(r() is not None for r in self.refs)


@pytest.fixture
def watch(monkeypatch):
    w = Watch()
    monkeypatch.setattr(models, "_load_tiny", w.loader(models._load_tiny))
    gc.collect()
    gc.disable()
    try:
        yield w
    finally:
        gc.enable()
        gc.collect()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lifecycle") / "grpo"


PROFILE = TINY.replace(
    max_steps=2,
    sft_warmup_steps=4,  # a warm start to load and free, not to learn from
    train_size=8,
    save_steps=100,
    per_device_train_batch_size=TEST_BATCH,  # the tests' half batch (tests/conftest.py)
)


def test_the_self_reference_keeps_a_dropped_model_alive(watch):
    """The cause: without collection, a model whose only name is dropped stays alive."""
    loaded = models.load_model(TINY)
    loaded.model = None  # what `del model` does in a notebook
    assert watch.alive() == 1
    models.free_memory()
    assert watch.alive() == 0


def test_close_frees_a_model_without_outside_collection(watch):
    with models.load_model(TINY) as loaded:
        assert loaded.model.load_lora.args[0] is loaded.model
    assert loaded.closed and watch.alive() == 0


def test_train_frees_the_trainer_and_every_model_it_loaded(watch, run_dir, monkeypatch):
    # its own warm start, not the cached one, so that train() loads (and must free) the SFT model
    monkeypatch.setattr(sft, "warmstart_cache_dir", lambda stamp: None)
    run = train(PROFILE, run_dir=run_dir, sample_every=0)
    assert run.global_step == 2 and run.model is None
    assert len(watch.refs) >= 2  # the SFT warm start's model and the GRPO model
    assert watch.alive() == 0


def test_train_keep_model_evaluates_in_place_then_frees(watch, run_dir, tmp_path):
    items = load_task("pubmedqa", "test", n=2, seed=0, source="bundled")
    with train(PROFILE, run_dir=run_dir, sample_every=0, keep_model=True) as run:
        assert run.model is not None and watch.alive() == 1
        loads = len(watch.refs)
        before, after = evaluation.evaluate_before_after(
            run.model, PROFILE, base=run.base_model, adapter=run.adapter_dir, dataset=items
        )
        assert len(watch.refs) == loads, "evaluating in place loaded another model"
    assert watch.alive() == 0
    assert before.model != after.model and len(before.records) == len(after.records) == 2


def test_evaluate_model_frees_its_model(watch, tiny_run):
    items = load_task("gsm8k", "test", n=1, seed=0, source="bundled")
    run = export.load_run(PROFILE, tiny_run.run_dir)  # the session's run (tests/conftest.py)
    evaluation.evaluate_model(
        PROFILE, "lifecycle", base=run.base_model, adapter=run.adapter_dir, dataset=items
    )
    assert len(watch.refs) == 1 and watch.alive() == 0


def test_export_merge_and_verify_free_their_models(watch, tiny_run, tmp_path):
    run = export.load_run(PROFILE, tiny_run.run_dir)
    merged = export.merge(PROFILE, run, tmp_path / "merged", force=True)
    assert watch.alive() == 0
    export.verify_adapter(PROFILE, run, merged_dir=merged)
    assert len(watch.refs) >= 3 and watch.alive() == 0


def test_ask_load_trained_frees_on_close(watch, tiny_run):
    with ask.load_trained(PROFILE, tiny_run.run_dir) as trained:
        ask.ask(trained, "Is water wet?", context="Water is wet.", profile=PROFILE)
    assert watch.alive() == 0


def test_close_returns_the_memory_even_when_something_else_holds_a_module(watch):
    """The H100 smoke run saw modules of a closed model kept alive from outside the course's
    code. Closing empties every parameter's storage, so the memory returns all the same."""
    outside = []  # stands for a library's list that still references the embedding
    with models.load_model(TINY) as loaded:
        embedding = loaded.model.get_input_embeddings()
        outside.append(embedding)
        before = embedding.weight.untyped_storage().nbytes()
        del embedding
    assert before > 0
    assert outside[0].weight.untyped_storage().nbytes() == 0
    assert all(p.numel() == 0 for p in outside[0].parameters())
