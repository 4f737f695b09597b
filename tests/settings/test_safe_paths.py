"""A safe Colab path and honest text (issue 12, items 5 and 7): Google Drive before anything
trains, no multi-hour training started by a notebook that only evaluates or exports, the
benchmark-size note once, and what the exported card and the load arguments say."""

from __future__ import annotations

import sys
import types

import pytest

from medreason_lib import models, training
from medreason_lib.data import benchmarks as eval_sets
from medreason_lib.runtime import install
from medreason_lib.settings.profiles import get_profile


def test_google_drive_is_a_no_op_off_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("MEDREASON_RUNS", raising=False)
    assert install.use_google_drive() is None
    assert "MEDREASON_RUNS" not in __import__("os").environ


def test_google_drive_on_colab_mounts_and_sets_the_runs_folder(monkeypatch, tmp_path):
    mounted = []
    drive = types.SimpleNamespace(mount=lambda where: mounted.append(where))
    colab = types.ModuleType("google.colab")
    colab.drive = drive
    google = types.ModuleType("google")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.delenv("MEDREASON_RUNS", raising=False)
    monkeypatch.setattr(install, "DRIVE_MOUNT", str(tmp_path / "drive"))
    path = install.use_google_drive()
    assert mounted == [str(tmp_path / "drive")]
    assert path == str(tmp_path / "drive" / "MyDrive" / "medreason-runs")
    assert __import__("os").environ["MEDREASON_RUNS"] == path
    # a folder already chosen is kept, and nothing is mounted again
    assert install.use_google_drive() == path and len(mounted) == 1
    with pytest.raises(ValueError, match="one folder name"):
        monkeypatch.delenv("MEDREASON_RUNS")
        install.use_google_drive("a/b")


def test_a_gpu_profile_without_a_run_stops_with_the_command(tmp_path):
    with pytest.raises(training.RunMissing) as err:
        training.finished_run(get_profile("3b"), tmp_path / "grpo")
    message = str(err.value)
    assert "python -m medreason_lib train --profile 3b" in message
    assert str(tmp_path / "grpo") in message and "500 steps" in message


def test_a_finished_run_is_loaded_not_trained(tmp_path, capsys):
    run_dir = tmp_path / "grpo"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(
        '{"base_model": "b", "adapter_dir": "adapter", "global_step": 7}'
    )
    run = training.finished_run(get_profile("3b"), run_dir)
    assert run.global_step == 7 and run.adapter_dir == run_dir / "adapter"
    assert "7 GRPO steps" in capsys.readouterr().out


def test_the_benchmark_size_note_is_one_line_once(capsys, monkeypatch):
    monkeypatch.setattr(eval_sets, "_NOTED", set())
    items = eval_sets.load_benchmarks(n=2, seed=0, source="bundled")
    again = eval_sets.load_benchmarks(n=2, seed=0, source="bundled")
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if "official evaluation set" in line]
    assert len(notes) == 1, out
    for name, size in eval_sets.BENCHMARKS.items():
        assert f"{name} " in notes[0] and f"of {size}" in notes[0]
    assert len(items) == len(again) == 2 * len(eval_sets.BENCHMARKS)


def test_load_arguments_name_vllms_share_only_with_vllm():
    assert "gpu_memory_utilization" not in models.unsloth_load_kwargs(get_profile("20b"))
    with_vllm = models.unsloth_load_kwargs(get_profile("3b"))
    assert with_vllm["gpu_memory_utilization"] == get_profile("3b").gpu_memory_utilization


@pytest.mark.parametrize(("profile", "precision"), [("tiny", "(float32)"), ("3b", "(16-bit)")])
def test_the_merged_card_states_the_merge_precision(profile, precision, tmp_path):
    from medreason_lib import export

    run = training.TrainingRun(
        run_dir=tmp_path,
        base_model="base",
        adapter_dir=tmp_path,
        metrics_csv=tmp_path,
        global_step=3,
    )
    card = export.model_card(get_profile(profile), run, "merged")
    assert f"merged into the base model's weights {precision}" in card
