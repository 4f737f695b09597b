"""A profile's side runs (``Profile.side_run``) and its evaluation source
(``benchmarks.evaluation_source``): the settings that keep the laptop track's notebooks short
and its evaluation on real test items."""

from __future__ import annotations

from collections import Counter

import pytest

from medreason_lib.course import exercises
from medreason_lib.data import benchmarks as eval_sets
from medreason_lib.data.training_mix import evaluation_sets
from medreason_lib.settings import paths
from medreason_lib.settings.profiles import PROFILES

TINY, SMOL = PROFILES["tiny"], PROFILES["smol"]


def test_tiny_side_runs_keep_the_notebooks_counts():
    side = TINY.side_run(6)
    assert side.max_steps == 6
    assert side.per_device_train_batch_size == TINY.per_device_train_batch_size
    assert TINY.side_steps(4) == 4


def test_smol_side_runs_are_one_step_of_whole_groups():
    side = SMOL.side_run(6)
    assert side.max_steps == 1 == SMOL.side_steps(4)
    assert side.per_device_train_batch_size == 8
    assert side.per_device_train_batch_size % side.num_generations == 0


@pytest.mark.parametrize(("batch", "generations", "expected"), [(8, 4, 8), (6, 4, 4), (2, 4, 4)])
def test_a_side_batch_is_rounded_down_to_whole_groups(batch, generations, expected):
    profile = TINY.replace(side_run_batch=batch, num_generations=generations)
    assert profile.side_run(3).per_device_train_batch_size == expected


def test_a_side_batch_never_grows_the_batch():
    profile = TINY.replace(per_device_train_batch_size=8, side_run_batch=16)
    assert profile.side_run(3).per_device_train_batch_size == 8


def test_a_side_run_needs_a_step():
    with pytest.raises(ValueError, match="at least 1 step"):
        TINY.side_run(0)


def test_retrain_says_when_the_profile_cuts_its_run(monkeypatch, tmp_path, capsys):
    from medreason_lib import training

    seen = {}

    class Run:
        global_step = 1

    def fake_train(profile, **kwargs):
        seen["profile"] = profile
        return Run()

    monkeypatch.setattr(training, "train", fake_train)
    monkeypatch.setenv("MEDREASON_RUNS", str(tmp_path))
    exercises.retrain(SMOL, "dr-grpo", steps=6)
    assert seen["profile"].max_steps == 1
    assert seen["profile"].per_device_train_batch_size == 8
    out = capsys.readouterr().out
    assert "1 step(s) of 8 completions instead of 6 of 16" in out
    exercises.retrain(TINY, "dr-grpo", steps=6)
    assert seen["profile"].max_steps == 6
    assert "instead of" not in capsys.readouterr().out


def test_the_evaluation_source_defaults_to_the_data_source():
    assert eval_sets.evaluation_source(TINY) == "bundled"
    assert eval_sets.evaluation_source(TINY.replace(eval_source="hub")) == "hub"


def test_reference_evaluation_falls_back_to_the_data_source(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MEDREASON_REFERENCE_DATA", str(tmp_path / "absent"))
    profile = SMOL.replace(name="smol-fallback-test")
    assert eval_sets.evaluation_source(profile) == "bundled"
    assert "no shared/reference-data here" in capsys.readouterr().out


REFERENCE = paths.reference_data_dir()


@pytest.mark.skipif(REFERENCE is None, reason="needs ../shared/reference-data")
def test_smol_evaluates_on_100_real_items_and_its_training_rows_avoid_them():
    assert eval_sets.evaluation_source(SMOL) == str(REFERENCE)
    items = eval_sets.profile_benchmarks(SMOL)
    assert Counter(items["task"]) == dict.fromkeys(eval_sets.BENCHMARKS, SMOL.eval_size)
    assert len(items) >= 100
    sets = evaluation_sets(SMOL)
    reference_sets = [name for name in sets if str(REFERENCE) in name]
    assert len(reference_sets) == 5, list(sets)
    assert len(sets["pubmedqa test (" + str(REFERENCE) + ")"]) == 500


def test_a_real_model_on_a_cpu_gets_cpu_settings_not_the_gpu_recipe():
    from medreason_lib.evaluation import loglik
    from medreason_lib.training import dpo
    from medreason_lib.training.pretrain_setup import cpt_settings

    assert dpo.dpo_defaults(SMOL) == dpo.CPU_DPO and dpo.default_steps(SMOL, 48) == 12
    assert dpo.dpo_defaults(TINY) == dpo.TINY_DPO
    assert dpo.dpo_defaults(PROFILES["3b"]) == dpo.GPU_DPO
    cpt = cpt_settings(SMOL)
    assert (cpt.steps, cpt.n_heldout, cpt.optim, cpt.artificial_docs) == (20, 6, "adamw_torch", 0)
    assert cpt_settings(PROFILES["3b"]).optim == "adamw_8bit"
    assert loglik.default_batch_size(SMOL) == 8 == loglik.default_batch_size(TINY)
    assert loglik.default_batch_size(PROFILES["3b"]) == "auto"


def test_export_loads_a_transformers_model_in_float32_to_merge(monkeypatch, tmp_path):
    """Merged into bf16 weights a LoRA delta is rounded: smol's merge was 1.38 off in the
    logits. The transformers backend loads, merges and verifies in float32."""
    from medreason_lib import models
    from medreason_lib.export import save as export_save

    seen = {}
    monkeypatch.setattr(models, "load_model", lambda profile, **kw: seen.update(kw))

    class Run:
        base_model, adapter_dir = "base", tmp_path

    export_save.load_trained(SMOL, Run())
    assert seen["dtype"] == export_save.MERGE_DTYPE == "float32"
    seen.clear()
    export_save._load_folder(SMOL, tmp_path)
    assert seen["dtype"] == "float32"


def test_a_cut_side_run_is_evaluated_on_a_few_items_of_every_task(capsys):
    from datasets import Dataset

    items = Dataset.from_list(
        [{"id": f"{t}-{i}", "task": t} for t in ("pubmedqa", "medqa", "gsm8k") for i in range(6)]
    )
    assert exercises.side_run_items(PROFILES["tiny"], items) is items  # tiny: all of them
    cut = exercises.side_run_items(PROFILES["smol"], items, per_task=4)
    assert Counter(cut["task"]) == {"pubmedqa": 4, "medqa": 4, "gsm8k": 4}
    assert cut["id"][:4] == [f"pubmedqa-{i}" for i in range(4)]  # the first ones, in order
    assert "12 of the 18 items" in capsys.readouterr().out


def test_a_build_is_moved_into_place_whole_or_not_at_all(tmp_path):
    final = tmp_path / "cache" / "entry"
    with pytest.raises(RuntimeError), paths.building(final, "done.json") as tmp:
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("the build failed")
    assert not final.exists() and list(final.parent.iterdir()) == []  # nothing left behind
    with paths.building(final, "done.json") as tmp:
        (tmp / "done.json").write_text("{}")
    assert (final / "done.json").is_file() and list(final.parent.iterdir()) == [final]
    with paths.building(final, "done.json") as tmp:  # another process finished first
        (tmp / "done.json").write_text('{"late": true}')
    assert (final / "done.json").read_text() == "{}" and list(final.parent.iterdir()) == [final]
