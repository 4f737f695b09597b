"""A finished training run on disk: where it is, whether it is one, and what it trained.

``training.train`` leaves a run folder (``runs/<profile>/grpo`` unless told otherwise) with
``run.json`` (the profile, the base model, the step count) and the LoRA adapter. Evaluating,
exporting and asking start from such a folder. The checks here read ``run.json`` only, so the
command line can refuse a missing run or a run of another profile in a moment, before
anything heavy is imported (on a GPU, Unsloth must be imported before transformers).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medreason_lib.models.folders import check_adapter_folder, check_model_folder
from medreason_lib.settings import paths
from medreason_lib.settings.errors import UserError
from medreason_lib.settings.profiles import Profile
from medreason_lib.training.run_folder import read_run_info

if TYPE_CHECKING:
    from medreason_lib.training import TrainingRun


class ExportUnavailable(UserError, RuntimeError):
    """An export (or a step on a finished run) that cannot run here or with these inputs.
    Raised before any model is loaded; the message (one line) says what to do instead."""


def run_dir_for(profile: Profile, run_dir: str | Path | None = None) -> Path:
    """``run_dir``, or the profile's default GRPO run folder (``runs/<profile>/grpo``)."""
    return Path(run_dir) if run_dir else paths.runs_dir(profile.name) / "grpo"


def check_run(profile: Profile, run_dir: str | Path | None = None) -> Path:
    """The run folder, after checking (without importing the training stack) that it holds a
    finished run of this profile. ``FileNotFoundError``/``ExportUnavailable`` say what to do."""
    folder = run_dir_for(profile, run_dir)
    if not (folder / "run.json").is_file():
        raise FileNotFoundError(
            f"no finished training run in {folder} (missing run.json): train one first with "
            f"`python -m medreason_lib train --profile {profile.name}` (or notebook 04), "
            "or point --run-dir at a run folder"
        )
    trained_with = read_run_info(folder).get("profile")  # a damaged run.json: one line
    if trained_with not in (None, profile.name):
        raise ExportUnavailable(
            f"the run in {folder} was trained with profile {trained_with!r}, not "
            f"{profile.name!r}: pass --profile {trained_with}"
        )
    return folder


def run_base_model(profile: Profile, run_dir: str | Path | None = None) -> str:
    """The base model a finished run's adapter belongs to, read from its ``run.json`` without
    importing the training stack (on a GPU, Unsloth must be imported before transformers)."""
    return read_run_info(check_run(profile, run_dir))["base_model"]


def load_run(profile: Profile, run_dir: str | Path | None = None) -> TrainingRun:
    """The finished ``TrainingRun`` in ``run_dir`` (default ``runs/<profile>/grpo``), its
    adapter and a local base model checked whole (``models.folders``) before anything loads."""
    from medreason_lib.training import TrainingRun

    run = TrainingRun.load(check_run(profile, run_dir))
    check_adapter_folder(run.adapter_dir, "the run's adapter")  # whole, before any load
    if Path(run.base_model).is_absolute() or Path(run.base_model).is_dir():
        check_model_folder(run.base_model, "the run's base model (run.json)")
    return run
