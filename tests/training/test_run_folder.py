"""A run folder is never lost or mixed (issue 22, part 4): checkpoints checked before a resume,
a resume already at ``max_steps`` finishing the run, an earlier run moved aside (not deleted)
by a fresh one, one training process per folder, whole eval records after a kill.

A kill -9 during a save is simulated by leaving on disk what it leaves (a file cut short, a
file or folder missing), then running the retry a learner would run: ``train --resume``, or
the same evaluation again. Only one test trains (2 GRPO steps, resumed from a copy of the
session's shared run, ``tiny_run``); the others stand a ``CapturingTrainer`` in for GRPO, or
train nothing at all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RUN_STEPS, TEST_BATCH, CapturingTrainer, run_cli
from medreason_lib import training
from medreason_lib.models.folders import check_adapter_folder
from medreason_lib.settings import errors
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training import run_folder, runs

PROFILE = PROFILES["tiny"].replace(max_steps=RUN_STEPS, per_device_train_batch_size=TEST_BATCH)


def copy_run(tiny_run, tmp_path: Path) -> Path:
    """A copy of the shared finished run (checkpoint-10, checkpoint-12, adapter, run.json,
    its SFT warm start) to damage and repair."""
    run_dir = tmp_path / "grpo"
    shutil.copytree(tiny_run.run_dir, run_dir)
    info = json.loads((run_dir / "run.json").read_text())  # its base: the copy's warm start
    info["base_model"] = str(run_dir / "sft-warmstart")
    (run_dir / "run.json").write_text(json.dumps(info))
    assert [p.name for p in run_folder.checkpoints(run_dir)] == ["checkpoint-12", "checkpoint-10"]
    return run_dir


def cut(path: Path, keep: float = 0.5) -> None:
    """What a kill -9 in the middle of writing ``path`` leaves: its first part."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def no_training(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a trainer was built: the run trained again")

    monkeypatch.setattr(training, "build_trainer", refuse)


# --------------------------------------------------------------------------- checkpoints


def test_valid_checkpoint_names_what_a_crashed_save_left_out(tiny_run, tmp_path):
    good = tiny_run.run_dir / "checkpoint-12"
    assert run_folder.valid_checkpoint(good) and run_folder.checkpoint_step(good) == 12
    damages = {
        "empty": (lambda c: [p.unlink() for p in c.iterdir()], "trainer_state.json is missing"),
        "state cut": (lambda c: cut(c / "trainer_state.json"), "trainer_state.json is damaged"),
        "no adapter": (lambda c: (c / "adapter_model.safetensors").unlink(), "no weights"),
        "adapter cut": (lambda c: cut(c / "adapter_model.safetensors"), "is cut off"),
        "no optimizer": (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt is missing"),
        "optimizer cut": (lambda c: cut(c / "optimizer.pt", 0.9), "optimizer.pt is cut off"),
        "scheduler cut": (lambda c: cut(c / "scheduler.pt"), "scheduler.pt is cut off"),
    }
    for name, (damage, reason) in damages.items():
        broken = tmp_path / name
        shutil.copytree(good, broken)
        damage(broken)
        assert not run_folder.valid_checkpoint(broken), name
        assert reason in run_folder.checkpoint_problem(broken), (name, reason)


def test_resume_falls_back_past_a_checkpoint_cut_off_during_its_save(
    tiny_run, tmp_path, one_thread
):
    """Kill -9 while checkpoint-12 was being written (before the final save): its optimizer
    state is cut short, no adapter or run.json yet. ``train --resume`` names it, moves it aside
    and resumes from checkpoint-10: 2 steps, then a whole run of 12 steps. Once failed every
    time (transformers took the highest-numbered checkpoint)."""
    run_dir = copy_run(tiny_run, tmp_path)
    cut(run_dir / "checkpoint-12" / "optimizer.pt", 0.6)
    shutil.rmtree(run_dir / "adapter")
    (run_dir / "run.json").unlink()
    done = run_cli("train", "--profile", "tiny", "--run-dir", str(run_dir), "--resume",
                   "--steps", str(RUN_STEPS), "--sample-every", "0",
                   env={"MEDREASON_MAX_STEPS": None})  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "checkpoint-12 is incomplete (optimizer.pt is cut off" in done.stdout
    assert f"resuming from {run_dir / 'checkpoint-10'}" in done.stdout
    info = json.loads((run_dir / "run.json").read_text())
    assert info["global_step"] == RUN_STEPS and not info["interrupted"]
    assert run_folder.valid_checkpoint(run_dir / "checkpoint-12")  # saved again, whole
    assert (run_dir / "incomplete-checkpoints" / "checkpoint-12" / "optimizer.pt").is_file()
    check_adapter_folder(run_dir / "adapter")
    assert runs.load_run(PROFILE, run_dir).global_step == RUN_STEPS


# --------------------------------------------------------------------------- the final save


def test_a_crash_during_the_final_save_is_finished_by_resume_without_training(
    tiny_run, tmp_path, monkeypatch, capsys
):
    """Kill -9 while the adapter was being written: the adapter cut short, no run.json. The
    run is refused in one line (not a loader's traceback); ``train --resume`` takes the adapter
    from checkpoint-12, which is at max_steps, and writes run.json, without training a step.
    Once: resuming at max_steps built a trainer and its model again."""
    run_dir = copy_run(tiny_run, tmp_path)
    metrics = (run_dir / "metrics.csv").read_text()
    cut(run_dir / "adapter" / "adapter_model.safetensors")
    (run_dir / "run.json").unlink()
    (run_dir / "adapter.partial").mkdir()  # what the atomic save leaves when killed
    done = run_cli("ask", "--profile", "tiny", "Q?", "--context", "C.", "--run-dir", str(run_dir))
    assert done.returncode == 2 and "no finished training run" in done.stderr
    no_training(monkeypatch)
    run = training.train(PROFILE, run_dir=run_dir, resume=True, sample_every=0)
    out = capsys.readouterr().out
    assert "checkpoint-12 is at step 12, max_steps is 12: finishing the run" in out
    assert run.global_step == RUN_STEPS and run.model is None
    assert (run_dir / "metrics.csv").read_text() == metrics  # not a step more
    check_adapter_folder(run_dir / "adapter")
    assert not (run_dir / "adapter.old").exists()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["global_step"] == RUN_STEPS and info["base_model"] == str(run_dir / "sft-warmstart")
    assert runs.load_run(PROFILE, run_dir).adapter_dir == run_dir / "adapter"


def test_the_adapter_and_run_json_are_replaced_whole(tmp_path):
    """``replace_folder`` and ``write_json_atomic`` leave the old or the new, never a mix."""
    old, new = tmp_path / "adapter", tmp_path / "adapter.partial"
    old.mkdir()
    (old / "w").write_text("old")
    new.mkdir()
    (new / "w").write_text("new")
    run_folder.replace_folder(new, old)
    assert (old / "w").read_text() == "new" and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    run_folder.write_json_atomic(tmp_path / "run.json", {"global_step": 3})
    assert json.loads((tmp_path / "run.json").read_text()) == {"global_step": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "run.json"]


# --------------------------------------------------------------------------- an earlier run


def test_a_fresh_run_moves_the_finished_one_aside(tiny_run, tmp_path, monkeypatch, capsys):
    """A plain ``train`` into a folder holding a finished run deletes nothing: the run goes
    to ``previous-<time>/`` with the warm start its adapter belongs to, still a run that loads,
    even when the new run fails before producing anything. Once: deleted at the start."""
    run_dir = copy_run(tiny_run, tmp_path)
    before = json.loads((run_dir / "run.json").read_text())

    class Failing(CapturingTrainer):
        def train(self, resume_from_checkpoint=None):
            raise RuntimeError("out of memory")

    monkeypatch.setattr(training, "build_trainer", lambda *a, **k: (Failing(), []))
    with pytest.raises(RuntimeError, match="out of memory"):
        training.train(PROFILE, run_dir=run_dir, sample_every=0)
    (previous,) = run_dir.glob("previous-*")
    moved_names = "checkpoint-12, checkpoint-10, adapter, metrics.csv, run.json"
    assert f"the earlier run ({moved_names}) is kept in {previous}" in capsys.readouterr().out
    moved = json.loads((previous / "run.json").read_text())
    assert moved == before | {"base_model": str(previous / "sft-warmstart")}
    assert run_folder.valid_checkpoint(previous / "checkpoint-12")
    old = runs.load_run(PROFILE, previous)  # its adapter and base model checked whole
    assert old.global_step == RUN_STEPS and (previous / "sft-warmstart" / "config.json").is_file()
    assert not (run_dir / "run.json").exists() and not (run_dir / "train.lock").exists()

    monkeypatch.setattr(training, "build_trainer", lambda *a, **k: (CapturingTrainer(), []))
    training.train(PROFILE, run_dir=run_dir, sample_every=0)  # nothing new to move aside
    assert len(list(run_dir.glob("previous-*"))) == 1 and (run_dir / "run.json").is_file()
    told = " ".join(run_cli("train", "--help").stdout.split())  # the policy, in the help
    assert "without --resume the earlier run is moved into <run folder>/previous-<time>/" in told


# --------------------------------------------------------------------------- the lock


def test_a_second_training_process_is_refused_and_a_dead_ones_lock_taken_over(
    warm_run_dir, monkeypatch, capsys
):
    """Another process holds the folder: ``train`` is refused naming it (pid, host, start),
    before the warm start or a model; the command line says so in one line. After that process
    is killed (-9, no clean-up), its lock is taken over with a message."""
    run_dir = warm_run_dir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; "
         "from medreason_lib.training.run_folder import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)",
         str(run_dir)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = json.loads((run_dir / "train.lock").read_text())
        assert lock["pid"] == holder.pid and lock["host"] == os.uname().nodename
        no_training(monkeypatch)
        with pytest.raises(run_folder.RunFolderError, match=f"process {holder.pid} on "):
            training.train(PROFILE, run_dir=run_dir, sample_every=0)
        done = run_cli("train", "--profile", "tiny", "--run-dir", str(run_dir))
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
        assert f"in use by another training run (process {holder.pid}" in done.stderr
        assert lock["started"] in done.stderr
    finally:
        holder.kill()
        holder.wait()
    assert (run_dir / "train.lock").exists()  # a kill -9 leaves it
    monkeypatch.setattr(training, "build_trainer", lambda *a, **k: (CapturingTrainer(), []))
    capsys.readouterr()
    training.train(PROFILE, run_dir=run_dir, sample_every=0)
    assert f"taking over the lock of process {holder.pid}" in capsys.readouterr().out
    assert not (run_dir / "train.lock").exists()  # released when the run ended


def test_the_lock_is_released_on_failure_and_not_taken_twice(tmp_path, capsys, monkeypatch):
    with run_folder.RunLock(tmp_path):
        assert json.loads((tmp_path / "train.lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / "train.lock").exists()
    with pytest.raises(ZeroDivisionError), run_folder.RunLock(tmp_path):
        1 / 0  # noqa: B018
    assert not (tmp_path / "train.lock").exists()
    (tmp_path / "train.lock").write_text(
        json.dumps({"pid": 1, "host": "elsewhere", "started": "yesterday"})
    )
    with pytest.raises(errors.UserError, match="process 1 on elsewhere, started yesterday"):
        run_folder.RunLock(tmp_path).acquire()  # another host: its pid cannot be checked
    # ... but a lock its holder stopped touching (a Colab VM gone) is taken over
    an_hour_ago = time.time() - 3600
    os.utime(tmp_path / "train.lock", (an_hour_ago, an_hour_ago))
    with run_folder.RunLock(tmp_path) as lock:
        assert lock.holder()["pid"] == os.getpid()
    assert "process 1 on elsewhere, started yesterday, which has not touched it for 60 minutes" in (
        capsys.readouterr().out
    )
    monkeypatch.setattr(run_folder.RunLock, "HEARTBEAT_S", 0.01)  # the holder touches it
    with run_folder.RunLock(tmp_path):
        os.utime(tmp_path / "train.lock", (an_hour_ago, an_hour_ago))
        time.sleep(0.2)
        assert time.time() - (tmp_path / "train.lock").stat().st_mtime < 60


# --------------------------------------------------------------------------- run.json


def test_run_json_paths_stay_inside_the_run_folder(tmp_path):
    run_dir = tmp_path / "grpo"
    run_dir.mkdir()
    info = {"profile": "tiny", "base_model": "b", "global_step": 1}
    for adapter in ("../other", "/etc", "adapter/../../x"):
        (run_dir / "run.json").write_text(json.dumps(info | {"adapter_dir": adapter}))
        with pytest.raises(errors.UserError, match="points outside the run folder"):
            training.TrainingRun.load(run_dir)
    (run_dir / "run.json").write_text(json.dumps(info | {"adapter_dir": "adapter"}))
    assert training.TrainingRun.load(run_dir).adapter_dir == run_dir / "adapter"


# --------------------------------------------------------------------------- eval records


def test_an_eval_killed_mid_write_resumes_without_gluing_records(tmp_path, capsys):
    """Kill -9 in the middle of appending a batch: the records file ends in half a line. The
    same evaluation again (it resumes) drops that half line and re-evaluates its item; every
    line is one whole record. Once: the next record was glued to the half line, and the file
    could not be read back."""
    from medreason_lib import data
    from medreason_lib.evaluation.generation import scripted_generator
    from medreason_lib.evaluation.loop import evaluate
    from medreason_lib.evaluation.records import read_records

    rows = data.load_task("pubmedqa", "test", source="bundled", verbose=False)
    answer = scripted_generator(lambda row: row["answer"], rows)

    def run(name="cut", **kwargs):
        return evaluate(answer, rows, profile=PROFILE, name=name, out_dir=tmp_path,
                        progress=False, batch_size=4, **kwargs)  # fmt: skip

    whole = run()
    path = tmp_path / "cut.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-3]) + lines[-3][: len(lines[-3]) // 2])
    capsys.readouterr()
    resumed = run(resume=True)
    assert "dropped a cut-off last line" in capsys.readouterr().out
    text = path.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == len(rows)
    assert all(json.loads(line)["id"] for line in text.splitlines())
    assert len(read_records(path)) == len(rows)
    assert resumed.overall.accuracy == whole.overall.accuracy == 1.0
    with pytest.raises(errors.UserError, match="not a plain name"):
        run(name="../escaped")
    assert not (tmp_path.parent / "escaped.jsonl").exists()


def test_a_whole_last_line_without_its_newline_is_kept(tmp_path):
    from medreason_lib.evaluation.records import drop_cut_off_line

    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}')
    drop_cut_off_line(path)
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    began = time.perf_counter()
    drop_cut_off_line(path)  # nothing to do
    assert path.read_text().count("\n") == 2 and time.perf_counter() - began < 1
