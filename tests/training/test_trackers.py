"""Experiment tracking: ``Profile.report_to`` (none by default; trackio or wandb).

``metrics.csv`` is always written; a tracker is an addition. The checks: the setting reaches
TRL's config (GRPO and the SFT warm start), a bad or missing tracker stops ``preflight`` with
the setting named, the warm-start cache does not depend on where a run reports, and a real
tiny run with ``--report-to trackio`` (the session's DDP run, shared with test_distributed)
logs its steps into trackio's local database.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3

import pandas as pd
import pytest

from conftest import DDP_STEPS
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training.config import ConfigError, check_trackers, grpo_settings
from medreason_lib.training.sft import _warmstart_stamp, sft_settings

TINY = PROFILES["tiny"]


def test_no_tracker_by_default():
    assert all(p.report_to == () for p in PROFILES.values())
    assert grpo_settings(TINY, "out")["report_to"] == []


@pytest.mark.parametrize("trackers", [("trackio",), ("wandb",), ("trackio", "wandb")])
def test_report_to_reaches_grpo_and_sft_configs(trackers, tmp_path):
    profile = TINY.replace(report_to=trackers)
    assert grpo_settings(profile, tmp_path)["report_to"] == list(trackers)
    assert sft_settings(profile, tmp_path, 4)["report_to"] == list(trackers)
    assert grpo_settings(profile, tmp_path)["project"] == "medreason-tiny"


def test_unknown_or_missing_trackers_are_named(monkeypatch):
    with pytest.raises(ConfigError, match="unknown tracker 'tensorboard'"):
        check_trackers(("tensorboard",))
    with pytest.raises(ConfigError, match="list of tracker names"):
        check_trackers("trackio")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(ConfigError, match="pip install wandb"):
        check_trackers(("wandb",))


def test_wandb_needs_a_login_or_offline_mode(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "wandb" else real(name, *a),
    )
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(ConfigError, match="WANDB_MODE=offline"):
        check_trackers(("wandb",))
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_trackers(("wandb",))


def test_the_warm_start_cache_ignores_the_tracker():
    from datasets import Dataset

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "q"}], "completion": []}])
    plain = _warmstart_stamp(TINY, data, 4)
    tracked = _warmstart_stamp(TINY.replace(report_to=("trackio",)), data, 4)
    assert plain == tracked


def test_the_ddp_run_logs_each_step_to_trackio_once(ddp_run):
    """The session's DDP run (``ddp_run``, tests/conftest.py: ``accelerate launch ... train
    --report-to trackio`` on two processes, in processes of their own because trackio reads
    ``TRACKIO_DIR`` once, when first imported): its database gets one row per GRPO step,
    logged by process 0 alone, with the same numbers as the course's own metrics.csv; the
    SFT warm start reports its loss as a trackio run of its own."""
    assert ddp_run.returncode == 0, ddp_run.stdout[-2000:] + ddp_run.stderr[-2000:]
    (db,) = ddp_run.trackio.glob("medreason-tiny.db")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT run_id, metrics FROM metrics ORDER BY id").fetchall()
    logged = [(run_id, json.loads(metrics)) for run_id, metrics in rows]
    grpo = [(run_id, m) for run_id, m in logged if "train/reward" in m]
    assert len(grpo) == DDP_STEPS, logged  # one row per step: process 1 logs nothing
    assert len({run_id for run_id, _ in grpo}) == 1, grpo  # one trackio run
    # every number both record agrees, step by step (the rewards of a 1-step warm start
    # may all be 0, so the token counts, lengths and step times are compared as well)
    csv_rows = pd.read_csv(ddp_run.run_dir / "metrics.csv").to_dict("records")
    assert len(csv_rows) == DDP_STEPS
    for (_, tracked), row in zip(grpo, csv_rows, strict=True):
        assert tracked["train/global_step"] == row["step"]
        common = {k for k in row if f"train/{k}" in tracked}
        assert {"reward", "loss", "num_tokens", "completions/mean_length"} <= common, common
        assert {k: tracked[f"train/{k}"] for k in common} == pytest.approx(
            {k: row[k] for k in common}, nan_ok=True
        )
    # the warm start (SFT, on both processes) logged its loss once per logging step
    sft = [(run_id, m) for run_id, m in logged if "train/loss" in m and "train/reward" not in m]
    assert sft and {run_id for run_id, _ in sft}.isdisjoint({grpo[0][0]}), logged
    sft_steps = [m["train/global_step"] for _, m in sft]
    assert len(sft_steps) == len(set(sft_steps)), sft_steps
