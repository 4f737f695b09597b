"""Shared test settings, and the expensive artefacts built once per test session.

Training is what makes the suite slow on a CPU, so a test session builds these once and
every test that does not need settings of its own reuses them:

- ``tiny_warm_start``: the tiny profile's SFT warm start (150 steps, the GRPO base model),
  made from exactly the rows ``training.train`` trains on, so a run folder that holds a copy
  (``warm_run_dir()``) skips the warm start: ``sft.run_warmstart`` finds its stamp and
  reuses it.
- ``tiny_run``: a finished tiny GRPO run on that warm start (``RUN_STEPS`` steps with the
  course rewards). ``test_training`` checks on it that GRPO raises the course reward; the
  tests that export, evaluate or ask a trained run use it as their run.
- ``ddp_run``: one ``accelerate launch`` of ``train`` on two CPU processes with
  ``--report-to trackio``, checked by ``test_distributed`` (DDP) and ``test_trackers``.

Tests that train use ``TEST_BATCH`` completions a step, half the tiny profile's.

Tests whose runs differ (reversed rewards, an interrupted run, a reward that pays only "yes")
train runs of their own, from the shared warm start wherever theirs would be the same.
``sft.run_warmstart`` also caches tiny warm starts in ``paths.cache_dir()``, so the notebooks
of the same ``make test`` (04, 06, 07) reuse the ones built here instead of training them
again. ``tools/slowest_tests.sh`` (``make test-durations``) prints what each test costs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

# every test draws off-screen (a figure a test makes is checked, never shown)
os.environ.setdefault("MPLBACKEND", "Agg")

# GRPO steps of the shared run: enough for the course reward to rise measurably over a
# 6-step window (test_training), and for the adapter to change the greedy completion of
# export's fixed prompt (test_export; after 2 steps only the logits differ). Not more: at the
# tiny profile's constant learning rate and TEST_BATCH the reward peaks and then wanders.
# Last-6 minus first-6 mean course reward with seeds 0-9 at 12 steps: 0.77 (seed 0, the
# session's: 0.91 -> 1.68), 0.59, 0.60, 0.40, 0.76, 0.14, 0.27, 0.29, 0.43, 0.72 (test_training
# asks for 0.15), and the greedy completion changed with all ten; at 24 steps seeds 0-5 gave
# 1.05, -0.20, -0.49, 0.03, 1.27, 0.00 and seed 5's greedy completion stayed the base's
# (measured 2026-11-27). The tiny tokenizer is trained on data/, so the model changes with it:
# after four bundled traces had their options reordered (2026-12-06), seed 0's warm start
# scored higher and the run rose less, 1.51 -> 1.60 (test_training now asks for 0.05), and
# export's fixed prompt kept its greedy completion (only the logits differ).
RUN_STEPS = 12
# Prompts x completions per GRPO step in the tests that train: half the tiny profile's 32
# (4 prompts of 4 completions), which halves a step's cost on a CPU (about 0.85 s instead
# of 1.6 s). Their checks hold with margin at this batch: the shared run's course reward went
# from 0.91 (first 6 steps) to 1.68 (last 6), the reversed-reward control's from 0.36 to
# 0.01 (measured 2026-11-27). The tiny profile itself keeps 32 (medreason_lib/settings/profiles.py):
# the notebooks' 30-step run needs it for readable greedy answers.
TEST_BATCH = 16


def _share_the_cores() -> None:
    """Under ``pytest -n N`` (``make test``) the N test processes share the machine's cores:
    each gets its share of torch threads, and so do the processes and notebook kernels it
    starts (``OMP_NUM_THREADS``). Two processes of two threads each on a 2-core machine
    would otherwise fight over the cores, and the tiny model is fastest on one thread."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_share_the_cores()


@pytest.fixture
def one_thread():
    """Run torch on one thread: on a 2-core machine the tiny model is several times faster
    that way than with two threads competing with pytest and the kernel."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(*args: str, env: dict[str, str | None] | None = None):
    """``medreason_lib.cli.main(args)`` in this process, with ``env`` applied (``None``
    unsets a variable), as ``python -m medreason_lib ARGS`` would run it without the ~10 s a
    new process spends importing torch/transformers/trl/peft. Returns ``returncode`` (an
    argparse ``SystemExit`` code included), ``stdout`` and ``stderr``. Afterwards the
    environment (``--profile`` writes ``MEDREASON_PROFILE``, ``course.start`` the notebook
    name), torch's thread count (one thread while it runs, as ``course.start`` sets on tiny)
    and the datasets/transformers progress bars are as before."""
    import contextlib
    import io
    from types import SimpleNamespace

    import datasets
    from transformers.utils import logging as hf_logging

    from medreason_lib import cli

    saved_env, threads = dict(os.environ), torch.get_num_threads()
    bars = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    out, err = io.StringIO(), io.StringIO()
    try:
        for name, value in (env or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        torch.set_num_threads(1)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as exit_:  # argparse: --help, bad arguments
                code = 0 if exit_.code is None else exit_.code
                if not isinstance(code, int):  # a message: Python prints it and exits with 1
                    print(code, file=err)
                    code = 1
    finally:
        for name in set(os.environ) - set(saved_env):
            del os.environ[name]
        os.environ.update({k: v for k, v in saved_env.items() if os.environ.get(k) != v})
        torch.set_num_threads(threads)
        (datasets.enable_progress_bars if bars[0] else datasets.disable_progress_bars)()
        (hf_logging.enable_progress_bar if bars[1] else hf_logging.disable_progress_bar)()
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


class CapturingTrainer:
    """Stands in for GRPOTrainer in ``training.train``: keeps the dataset it is given (for
    tests that check what would be trained on), trains nothing, saves an empty adapter."""

    def __init__(self, dataset=None):
        from types import SimpleNamespace

        self.dataset = dataset
        self.state = SimpleNamespace(global_step=0)
        self.accelerator = SimpleNamespace(free_memory=lambda: None, num_processes=1)
        self.model = self.processing_class = None

    def train(self, resume_from_checkpoint=None):
        pass

    def save_model(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)

    def is_world_process_zero(self):
        return True


def copy_warm_start(warm_start: Path, run_dir: Path) -> Path:
    """Put a copy of ``warm_start`` where ``train`` looks for it (``<run_dir>/sft-warmstart``)."""
    target = Path(run_dir) / "sft-warmstart"
    shutil.copytree(warm_start, target)
    return target


def seed_tiny_model(cache: Path) -> Path:
    """Copy the tiny profile's model and tokenizer (``tiny.tiny_model_path``, built once per
    machine in the user's cache) into the cache folder ``cache``: a test that starts from an
    empty cache so that its warm start really trains need not rebuild them (about 6 s on a
    CPU; ``test_tiny`` checks the build). Call it before pointing ``MEDREASON_CACHE`` there."""
    from medreason_lib.models.tiny import resolve_model_id
    from medreason_lib.settings.profiles import PROFILES

    profile = PROFILES["tiny"]
    built = Path(resolve_model_id(profile.model_id, seed=profile.seed))
    target = Path(cache) / "tiny" / built.name
    shutil.copytree(built, target)
    return target


@pytest.fixture(scope="session")
def tiny_warm_start(tmp_path_factory) -> Path:
    """The tiny profile's SFT warm start, built once per session on ``train``'s own rows."""
    from medreason_lib.data.training_mix import prepare_training_data
    from medreason_lib.settings.profiles import PROFILES
    from medreason_lib.training.sft import run_warmstart

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        profile = PROFILES["tiny"]
        rows, _ = prepare_training_data(profile)
        out = tmp_path_factory.mktemp("shared-warm") / "sft-warmstart"
        return run_warmstart(profile, rows, out)
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def warm_run_dir(tiny_warm_start, tmp_path):
    """``warm_run_dir(name="grpo")``: a new run folder under ``tmp_path`` that already holds
    the session's warm start, so ``train`` on a tiny profile goes straight to GRPO."""

    def make(name: str = "grpo") -> Path:
        run_dir = tmp_path / name
        copy_warm_start(tiny_warm_start, run_dir)
        return run_dir

    return make


def shared_dir(tmp_path_factory) -> Path:
    """A folder every process of this test session sees: under ``pytest -n 2`` (pytest-xdist,
    as ``make test`` runs) the workers' temporary folders share this parent."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def tiny_run(tiny_warm_start, tmp_path_factory):
    """A finished tiny GRPO run (``RUN_STEPS`` steps of ``TEST_BATCH`` completions on the
    shared warm start), shared by the tests that only need *a* trained run: the first test
    process that needs it trains it, under a file lock, and the others load it. Treat it as
    read-only: write exports into it only where the test is about the run's own export
    folder (one module, so one process)."""
    from filelock import FileLock

    from medreason_lib.settings.profiles import PROFILES
    from medreason_lib.training import TrainingRun, train

    root = shared_dir(tmp_path_factory)
    run_dir = root / "shared-run" / "grpo"
    with FileLock(str(root / "shared-run.lock")):
        if (run_dir / "run.json").is_file():
            return TrainingRun.load(run_dir)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            copy_warm_start(tiny_warm_start, run_dir)
            profile = PROFILES["tiny"].replace(
                max_steps=RUN_STEPS, per_device_train_batch_size=TEST_BATCH
            )
            return train(profile, run_dir=run_dir, sample_every=0)
        finally:
            torch.set_num_threads(before)


# GRPO steps of the shared DDP run (``ddp_run``): each is logged once, in metrics.csv and trackio.
DDP_STEPS = 2
# Its SFT warm-start steps: one optimizer step that both processes take together (DDP) is
# enough for what the tests check (process 0 alone prints, writes, caches the warm start and
# logs its loss to trackio); each step more cost about 0.3 s.
DDP_SFT_STEPS = 1


@pytest.fixture(scope="session")
def ddp_run(tmp_path_factory):
    """The command a learner with two GPUs runs, on two CPU processes, run once per session:

        accelerate launch --multi_gpu --num_processes 2 -m medreason_lib train --profile tiny
            --steps DDP_STEPS --sft-steps DDP_SFT_STEPS --report-to trackio

    from a cache with no warm start (both processes train it together; the tiny model is
    copied in, ``seed_tiny_model``), with its own ``TRACKIO_DIR``. ``test_distributed``
    checks the DDP run on it, ``test_trackers`` what trackio logged; the two modules may run
    on different xdist workers, so the first one to ask launches it under a file lock and
    records the result in ``launch.json``. Returns the folders (``run_dir`` alone in its
    parent, ``runs``, ``cache``, ``trackio``) and the launcher's ``returncode``, ``stdout``
    and ``stderr``; the tests assert on them."""
    import json
    import subprocess
    import sys
    from types import SimpleNamespace

    from filelock import FileLock

    root = shared_dir(tmp_path_factory)
    base = root / "ddp-run"
    found = SimpleNamespace(
        run_dir=base / "ddp" / "grpo",
        runs=base / "runs",
        cache=base / "cache",
        trackio=base / "trackio",
    )
    record = base / "launch.json"
    with FileLock(str(root / "ddp-run.lock")):
        if not record.is_file():
            base.mkdir(parents=True, exist_ok=True)
            seed_tiny_model(found.cache)  # the model, not the warm start: that trains here
            launcher = Path(sys.executable).with_name("accelerate")
            if not launcher.exists():
                pytest.fail(f"accelerate's launcher is missing beside {sys.executable}")
            repo = Path(__file__).resolve().parent.parent
            cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2"]
            cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
            cmd += ["-m", "medreason_lib", "train", "--profile", "tiny"]
            cmd += ["--steps", str(DDP_STEPS), "--sft-steps", str(DDP_SFT_STEPS)]
            cmd += ["--sample-every", "0"]
            cmd += ["--run-dir", str(found.run_dir), "--report-to", "trackio"]
            env = os.environ | {
                "MEDREASON_PROFILE": "tiny",
                "HF_HUB_OFFLINE": "1",
                "OMP_NUM_THREADS": "1",
                "MEDREASON_RUNS": str(found.runs),
                "MEDREASON_CACHE": str(found.cache),  # no warm start: it really trains
                "TRACKIO_DIR": str(found.trackio),  # read once, when trackio is imported
                "PYTHONPATH": str(repo),
            }
            env.pop("CUDA_VISIBLE_DEVICES", None)
            done = subprocess.run(
                cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600
            )
            result = {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
            record.write_text(json.dumps(result))
        vars(found).update(json.loads(record.read_text()))
    return found


@pytest.fixture(autouse=True)
def runs_outside_the_repository(monkeypatch, tmp_path_factory):
    """Unit tests write runs (and ``course.record`` results) under their process's temporary
    folder, never into the repository's ``runs/``, which the notebooks of the same
    ``make test`` use at the same time. A test that sets ``MEDREASON_RUNS`` itself wins."""
    if "MEDREASON_RUNS" not in os.environ:
        monkeypatch.setenv("MEDREASON_RUNS", str(tmp_path_factory.getbasetemp() / "unit-runs"))


@pytest.fixture(autouse=True)
def the_profile_variable_is_restored():
    """``--profile`` writes ``MEDREASON_PROFILE`` into the process's environment (a command's
    process ends with it); a test that calls ``cli.main`` in this process must not hand its
    profile, or a broken profile file, to the next test of the same worker."""
    before = os.environ.get("MEDREASON_PROFILE")
    yield
    if before is None:
        os.environ.pop("MEDREASON_PROFILE", None)
    else:
        os.environ["MEDREASON_PROFILE"] = before


@pytest.fixture(autouse=True)
def each_test_is_a_new_run():
    """``progress.say_once`` prints a library report once per run (a notebook's kernel); in
    the test process each test is a run of its own, so what one test printed does not hide
    what the next one checks."""
    from medreason_lib.settings import progress

    progress._SAID.clear()
