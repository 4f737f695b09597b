"""A finished training run on disk: where it is, whether it is one, and what it trained.

``training.train`` leaves a run folder (``runs/<profile>/grpo`` unless told otherwise) with
``run.json`` (the profile, the base model, the step count) and the LoRA adapter. Evaluating,
exporting and asking start from such a folder. The checks here read ``run.json`` only, so the
command line can refuse a missing run or a run of another profile in a moment, before
anything heavy is imported (on a GPU, Unsloth must be imported before transformers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from . import paths
from .profiles import Profile

if TYPE_CHECKING:
    from .training import TrainingRun


class ExportUnavailable(RuntimeError):
    """An export (or a step on a finished run) that cannot run here or with these inputs.
    Raised before any model is loaded; the message (one line) says what to do instead."""


def run_dir_for(profile: Profile, run_dir: str | Path | None = None) -> Path:
    """``run_dir``, or the profile's default GRPO run folder (``runs/<profile>/grpo``)."""
    return Path(run_dir) if run_dir else paths.runs_dir(profile.name) / "grpo"


def check_run(profile: Profile, run_dir: str | Path | None = None) -> Path:
    """The run folder, after checking (without importing the training stack) that it holds a
    finished run of this profile. ``FileNotFoundError``/``ExportUnavailable`` say what to do."""
    folder = run_dir_for(profile, run_dir)
    info_path = folder / "run.json"
    if not info_path.is_file():
        raise FileNotFoundError(
            f"no finished training run in {folder} (missing run.json): train one first with "
            f"`python -m medreason_lib train --profile {profile.name}` (or notebook 04), "
            "or point --run-dir at a run folder"
        )
    trained_with = json.loads(info_path.read_text()).get("profile")
    if trained_with not in (None, profile.name):
        raise ExportUnavailable(
            f"the run in {folder} was trained with profile {trained_with!r}, not "
            f"{profile.name!r}: pass --profile {trained_with}"
        )
    return folder


def run_base_model(profile: Profile, run_dir: str | Path | None = None) -> str:
    """The base model a finished run's adapter belongs to, read from its ``run.json`` without
    importing the training stack (on a GPU, Unsloth must be imported before transformers)."""
    return json.loads((check_run(profile, run_dir) / "run.json").read_text())["base_model"]


def load_run(profile: Profile, run_dir: str | Path | None = None) -> TrainingRun:
    """The finished ``TrainingRun`` in ``run_dir`` (default ``runs/<profile>/grpo``)."""
    from .training import TrainingRun

    run = TrainingRun.load(check_run(profile, run_dir))
    if not (run.adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{run.adapter_dir} holds no LoRA adapter (adapter_config.json): the run did not "
            "finish saving; train it again"
        )
    return run
