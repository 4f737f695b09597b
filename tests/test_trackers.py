"""Experiment tracking: ``Profile.report_to`` (none by default; trackio or wandb).

``metrics.csv`` is always written; a tracker is an addition. The checks: the setting reaches
TRL's config (GRPO and the SFT warm start), a bad or missing tracker stops ``preflight`` with
the setting named, the warm-start cache does not depend on where a run reports, and a real
tiny run with ``report_to=("trackio",)`` logs its steps into trackio's local database.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from medreason_lib.profiles import PROFILES
from medreason_lib.sft import _warmstart_stamp, sft_settings
from medreason_lib.training_config import ConfigError, check_trackers, grpo_settings

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


def test_a_tiny_run_logs_its_steps_to_trackio(warm_run_dir, tmp_path):
    """``train --report-to trackio`` in its own process (trackio reads ``TRACKIO_DIR`` once,
    when first imported): its database gets one row per GRPO step, with the same rewards as
    the course's own metrics.csv."""
    run_dir = warm_run_dir()
    db_dir = tmp_path / "trackio"
    env = os.environ | {
        "TRACKIO_DIR": str(db_dir),
        "MEDREASON_PROFILE": "tiny",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "medreason_lib", "train", "--profile", "tiny", "--steps", "2"]
    cmd += ["--run-dir", str(run_dir), "--sample-every", "0", "--report-to", "trackio"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (db,) = db_dir.glob("medreason-tiny.db")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT step, metrics FROM metrics").fetchall()
    logged = [json.loads(metrics) for _, metrics in rows]
    rewards = [m["train/reward"] for m in logged if "train/reward" in m]
    assert len(rewards) == 2, logged  # one row per GRPO step
    csv_rewards = pd.read_csv(run_dir / "metrics.csv")["reward"].tolist()
    assert rewards == pytest.approx(csv_rewards)  # the same numbers as the course's record
