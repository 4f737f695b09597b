"""GRPO training from a profile: TRL's GRPOTrainer with the course's rewards.

``train(profile)`` is the whole run, the same call from notebook 04 and the command line:

1. the training mix (``profile.mix_weights``: 70% PubMedQA / 30% GSM8K by default, each
   task's labels drawn towards ``profile.label_targets``), decontaminated against every
   evaluation set the course reports (``training_mix.prepare_training_data``: the label
   shares and the rows removed per task go to ``run.json``), over-long prompts filtered out;
2. ``preflight`` checks, before any model is loaded;
3. on profiles with ``sft_warmup_steps`` (tiny), a short SFT warm start that teaches the
   template (``medreason_lib.training.sft``), which becomes the GRPO base model;
4. the model (``models.load_for_training``: peft LoRA on tiny, Unsloth 4-bit LoRA on GPU);
5. GRPOTrainer with the four rewards (``rewards.REWARD_FUNCS``: three format rewards worth at
   most 0.5 each, correctness 2.0; their sum is the reward, no extra weights), plus any
   ``extra_rewards`` of yours (``user_rewards``);
6. checkpoints every ``profile.save_steps`` into the run folder; ``resume=True`` continues
   from the last complete one with step count, optimizer and scheduler state (a checkpoint
   cut off by a crash is skipped; one already at ``max_steps`` finishes the run untrained);
7. metrics in ``<run>/metrics.csv``, the LoRA adapter in ``<run>/adapter``, and
   ``<run>/run.json`` saying which base model the adapter belongs to.

The run folder is ``runs/<profile>/grpo`` unless ``run_dir`` is given; set
``MEDREASON_RUNS`` to a Google Drive folder on Colab so a disconnect loses nothing. One
process trains into a folder at a time (``train.lock``), a fresh run moves an earlier one
aside into ``<run>/previous-<time>/`` instead of deleting it, and the adapter and
``run.json`` are saved atomically (``medreason_lib.training.run_folder`` gives the rules).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers.trainer_utils import get_last_checkpoint

from medreason_lib.data.training_mix import prepare_training_data
from medreason_lib.data.user_rewards import check_rewards
from medreason_lib.models import EvalModel, close_trainer, for_inference, free_memory
from medreason_lib.scoring.rewards import REWARD_FUNCS
from medreason_lib.settings import paths
from medreason_lib.settings.caps import capped
from medreason_lib.settings.profiles import Profile, gpu_memory_gb
from medreason_lib.training.callbacks import (
    AnswerShares,
    MetricsCSV,
    RecordedReward,
    SamplePrinter,
    training_label_shares,
    use_course_progress,
)
from medreason_lib.training.config import filter_long_prompts, grpo_config, preflight
from medreason_lib.training.learnability import Unlearnable, UnlearnableStop
from medreason_lib.training.run_folder import (
    RunFolderError,
    RunLock,
    adapter_from_checkpoint,
    before_final_save,
    checkpoint_step,
    read_run_info,
    replace_folder,
    resume_checkpoint,
    set_aside_earlier_run,
    write_json_atomic,
)


@dataclass
class TrainingRun:
    """Where a finished (or interrupted) run left its things."""

    run_dir: Path
    base_model: str
    adapter_dir: Path
    metrics_csv: Path
    global_step: int
    reward_seconds: float = 0.0
    train_seconds: float = 0.0
    # the trained model, still loaded, when ``train(keep_model=True)``: evaluate it in place
    # (``evaluation.evaluate_before_after``), then ``close()`` the run
    model: EvalModel | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        kept = "; the trained model is kept loaded (close() frees it)" if self.model else ""
        return (
            f"GRPO run of {self.global_step} steps in {self.run_dir}\n"
            f"  adapter   {self.adapter_dir} (LoRA on {self.base_model})\n"
            f"  metrics   {self.metrics_csv}\n"
            f"  time      {self.train_seconds:.0f} s training, of which rewards "
            f"{self.reward_seconds:.1f} s{kept}"
        )

    def close(self) -> None:
        """Free the kept model (nothing to do when ``train`` did not keep one)."""
        if self.model is not None:
            self.model.close()
            self.model = None

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainingRun:
        """Read ``run.json`` of a finished run (e.g. to evaluate or export it)."""
        run_dir = Path(run_dir)
        info = read_run_info(run_dir)  # an adapter_dir outside the folder is refused
        if not isinstance(info.get("base_model"), str) or "global_step" not in info:
            raise RunFolderError(f"{run_dir}/run.json lacks base_model or global_step")
        return cls(
            run_dir=run_dir,
            base_model=info["base_model"],
            adapter_dir=run_dir / info.get("adapter_dir", "adapter"),
            metrics_csv=run_dir / "metrics.csv",
            global_step=info["global_step"],
            reward_seconds=info.get("reward_seconds", 0.0),
            train_seconds=info.get("train_seconds", 0.0),
        )


def default_run_dir(profile: Profile) -> Path:
    return paths.runs_dir(profile.name) / "grpo"


def _earlier_times(run_dir: Path) -> tuple[float, float]:
    """Reward and training seconds of the attempts before a resume (from ``run.json``)."""
    try:
        info = read_run_info(run_dir) if (run_dir / "run.json").exists() else {}
    except RunFolderError:  # cut off by a crash: the times are lost, the run is not
        info = {}
    return info.get("reward_seconds", 0.0), info.get("train_seconds", 0.0)


def _rank() -> int:
    """This process's rank under ``accelerate launch``/``torchrun`` (0 alone)."""
    return int(os.environ.get("RANK", "0"))


def build_trainer(
    profile: Profile,
    run_dir: Path,
    *,
    dataset=None,
    reward_funcs=None,
    base_model: str | None = None,
    sample_every: int = 0,
    if_unlearnable: str | None = None,
    **config_overrides,
):
    """A ready GRPOTrainer (and its wrapped rewards) for ``profile``; nothing trains yet.
    ``if_unlearnable``: what ``learnability.UnlearnableStop`` does after a first step that
    cannot teach anything: "stop", "warn", or None: "warn" on the tiny models (random-init,
    trained for the mechanics, where a step costs a second) and under a completion-length cap
    (``$MEDREASON_MAX_NEW_TOKENS``: cut completions say nothing of the model), else "stop"."""
    if_unlearnable = if_unlearnable or unlearnable_action(profile)
    from trl import GRPOTrainer

    from medreason_lib.models import load_for_training
    from medreason_lib.training.trl_compat import install_cpu_logprob_fallback

    install_cpu_logprob_fallback()
    model, tokenizer, peft_config = load_for_training(profile, base=base_model)
    dataset = filter_long_prompts(dataset, tokenizer, profile)
    rewards = [RecordedReward(fn) for fn in (reward_funcs or REWARD_FUNCS)]
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=rewards,
        args=grpo_config(profile, run_dir, **config_overrides),
        train_dataset=dataset,
        peft_config=peft_config,
        callbacks=[
            AnswerShares(training_label_shares(dataset), rewards[0]),  # before MetricsCSV
            MetricsCSV(run_dir / "metrics.csv"),
            SamplePrinter(rewards, sample_every),
            UnlearnableStop(if_unlearnable),  # after AnswerShares, which logs the format rate
        ],
    )
    use_course_progress(trainer, "GRPO")  # one bar, no printed dicts or loss table
    return trainer, rewards


def train(
    profile: Profile,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    dataset=None,
    reward_funcs=None,
    sample_every: int = 10,
    keep_model: bool = False,
    base_model: str | Path | None = None,
    extra_rewards=None,
    **config_overrides,
) -> TrainingRun:
    """Run GRPO for ``profile`` (see the module docstring for the steps).

    ``base_model`` (a model folder, e.g. an SFT result: ``sft_traces.run_trace_sft``) is
    the model GRPO starts from instead of the profile's; no tiny warm start is made then.
    ``extra_rewards``: your own reward functions, added to the course's (or to
    ``reward_funcs``); each is checked on two sample rows before any model loads
    (``user_rewards.check_rewards``) and named in ``run.json``.

    The run folder: another process training into it is refused (``train.lock`` names it);
    without ``resume`` an earlier run there is moved into ``<run>/previous-<time>/``, never
    deleted; ``resume=True`` skips checkpoints cut off by a crash, and a last checkpoint
    already at ``max_steps`` finishes the run (adapter, ``run.json``) without training.

    A first step in which no completion followed the template and no group's rewards
    differed cannot teach anything (``learnability``): on a real model the run stops there
    and raises ``learnability.Unlearnable``, which points to the warm start; on the tiny
    models, or with ``if_unlearnable="warn"`` (passed on to ``build_trainer``), it only warns
    and records it in ``run.json``.

    When it returns, the trainer, its optimizer state and (unless ``keep_model``) the model
    are freed: the GPU holds nothing of this run. ``keep_model=True`` keeps the trained model
    in ``run.model`` (an ``models.EvalModel``) to evaluate it in place without loading a
    second copy; ``run.close()`` (or ``with train(...) as run:``) frees it afterwards.
    """
    run_dir = paths.usable_dir(run_dir or default_run_dir(profile), "the run folder")
    # under accelerate/torchrun process 0 holds the lock for the processes of its launch
    with RunLock(run_dir) if _rank() == 0 else contextlib.nullcontext():
        return _train(
            profile, run_dir, resume, dataset, reward_funcs, sample_every, keep_model,
            base_model, extra_rewards, config_overrides,
        )  # fmt: skip


def _train(
    profile, run_dir, resume, dataset, reward_funcs, sample_every, keep_model, base_model,
    extra_rewards, config_overrides,
) -> TrainingRun:  # fmt: skip
    import time

    # the mix (labels chosen per task) or the given rows, minus every evaluation item
    dataset, data_record = prepare_training_data(profile, dataset)
    preflight(profile, dataset, gpu_gb=gpu_memory_gb() if profile.uses_unsloth else None)
    extra_rewards = check_rewards(extra_rewards, dataset)
    if extra_rewards:
        reward_funcs = [*(reward_funcs or REWARD_FUNCS), *extra_rewards]
    if (
        profile.shaping_rewards
    ):  # TRL's shaping rewards the profile names (medreason_lib.training.shaping)
        from medreason_lib.training.shaping import with_shaping_rewards

        reward_funcs, config_overrides = with_shaping_rewards(
            profile, reward_funcs or REWARD_FUNCS, config_overrides
        )
    checkpoint = resume_checkpoint(run_dir, move=_rank() == 0) if resume else None
    if resume:
        print(f"resuming from {checkpoint}" if checkpoint else f"no complete checkpoint in "
              f"{run_dir}; starting at step 0")  # fmt: skip
    elif _rank() == 0:  # before the warm start, which a changed setting retrains
        set_aside_earlier_run(run_dir)
    earlier = _earlier_times(run_dir) if checkpoint else (0.0, 0.0)

    if base_model is not None:  # a given SFT result (notebook 10): GRPO starts from it
        base_model = str(base_model)
    elif profile.sft_warmup_steps and profile.is_tiny:
        from medreason_lib.training.sft import run_warmstart

        base_model = str(run_warmstart(profile, dataset, run_dir / "sft-warmstart"))
    elif profile.sft_warmup_steps:  # a model that can write: LoRA SFT on reasoning traces
        from medreason_lib.training.sft_traces import run_trace_sft, trace_sft_data

        rows = trace_sft_data(profile)[0]
        warm = run_trace_sft(
            profile, rows, run_dir / "sft-warmstart", steps=profile.sft_warmup_steps
        )
        base_model = str(warm.model_dir)
    else:
        base_model = profile.model_id

    if keep_model and profile.use_vllm:  # the kept model's engine must fit the evaluation too
        profile = _engine_for_evaluation(profile, base_model)
    max_steps = config_overrides.get("max_steps", profile.max_steps)
    adapter_dir = run_dir / "adapter"
    record = {"profile": profile.name, "profile_settings": profile.to_dict(),
              "base_model": base_model, "adapter_dir": "adapter",
              "extra_rewards": [fn.__name__ for fn in extra_rewards], **data_record}  # fmt: skip
    if checkpoint is not None and checkpoint_step(checkpoint) >= max_steps:
        return _finish_at(checkpoint, profile, run_dir, record, earlier, keep_model, max_steps)
    trainer, rewards = build_trainer(
        profile,
        run_dir,
        dataset=dataset,
        reward_funcs=reward_funcs,
        base_model=base_model,
        sample_every=sample_every,
        **config_overrides,
    )
    began = time.perf_counter()
    interrupted = False
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except KeyboardInterrupt:  # the stop button: keep what was trained, end the cell cleanly
        interrupted = True
    train_seconds = time.perf_counter() - began
    probe = _unlearnable_probe(trainer)
    if probe.stopped:  # nothing learned: no adapter, no run.json, the memory freed
        close_trainer(trainer)
        del trainer
        free_memory()
        raise Unlearnable(probe.message)
    record["unlearnable_warning"] = probe.message

    zero = trainer.is_world_process_zero()  # under accelerate, one process writes
    if zero:  # no run.json while the adapter is replaced: a crash then leaves no mixed run
        before_final_save(run_dir)
    if interrupted:
        _keep_interrupted(trainer, run_dir, adapter_dir)
    else:
        partial = run_dir / "adapter.partial"
        trainer.save_model(str(partial))
        if zero:
            replace_folder(partial, adapter_dir)
    run = TrainingRun(
        run_dir=run_dir,
        base_model=base_model,
        adapter_dir=adapter_dir,
        metrics_csv=run_dir / "metrics.csv",
        global_step=trainer.state.global_step,
        reward_seconds=earlier[0] + sum(r.seconds for r in rewards),
        train_seconds=earlier[1] + train_seconds,
    )
    if zero:
        processes = trainer.accelerator.num_processes  # > 1 under accelerate launch (DDP)
        _write_run_json(run, record, processes=processes, interrupted=interrupted)
    model = close_trainer(trainer, keep_model=keep_model)
    tokenizer = trainer.processing_class
    del trainer
    if keep_model:
        # vLLM engines apply a saved adapter per request; elsewhere it is in the model
        kept = EvalModel(model, tokenizer, adapter_dir if profile.use_vllm else None)
        run.model = for_inference(profile, kept)
        del kept
    del model, tokenizer
    free_memory()
    return run


def unlearnable_action(profile: Profile) -> str:
    """What a first step that cannot teach does by default (``learnability``): "warn" on the
    tiny models and where ``$MEDREASON_MAX_NEW_TOKENS`` cuts completions, else "stop"."""
    cut = capped(1 << 30, "MEDREASON_MAX_NEW_TOKENS") <= profile.max_completion_length
    return "warn" if profile.is_tiny or cut else "stop"


def _unlearnable_probe(trainer) -> UnlearnableStop:
    """The run's ``UnlearnableStop`` (a fresh one for a test's stand-in trainer). A function of
    its own: its callback handler holds the model, and no name in ``_train`` may keep it."""
    handler = getattr(trainer, "callback_handler", None)
    found = [c for c in getattr(handler, "callbacks", []) if isinstance(c, UnlearnableStop)]
    return found[0] if found else UnlearnableStop()


def _write_run_json(run: TrainingRun, record: dict, **more) -> None:
    """``run.json``: ``record`` (profile, base model, rewards, data) with the run's step and
    times, written atomically."""
    info = record | {"global_step": run.global_step, "reward_seconds": run.reward_seconds,
                     "train_seconds": run.train_seconds, **more}  # fmt: skip
    write_json_atomic(run.run_dir / "run.json", info)


def _finish_at(checkpoint, profile, run_dir, record, earlier, keep_model, max_steps):
    """A resumed run whose last complete checkpoint is already at ``max_steps`` (a crash
    during the final save): its adapter and ``run.json`` from that checkpoint, no training."""
    step = checkpoint_step(checkpoint)
    print(f"{checkpoint.name} is at step {step}, max_steps is {max_steps}: finishing the run "
          "from it (adapter, run.json) without training")  # fmt: skip
    run = TrainingRun(run_dir, record["base_model"], run_dir / "adapter", run_dir / "metrics.csv",
                      step, *earlier)  # fmt: skip
    if _rank() == 0:
        (run_dir / "run.json").unlink(missing_ok=True)
        adapter_from_checkpoint(checkpoint, run.adapter_dir)
        _write_run_json(run, record, processes=1, interrupted=False)
    if keep_model:
        from medreason_lib.models import load_for_eval

        length = profile.max_seq_length if profile.use_vllm else None
        run.model = load_for_eval(profile, base=run.base_model, adapter=run.adapter_dir,
                                  max_seq_length=length)  # fmt: skip
    return run


def _engine_for_evaluation(profile: Profile, base_model: str) -> Profile:
    """``profile`` with ``max_seq_length`` raised to what evaluating the trained model in
    place needs (the profile's benchmarks: longest prompt + ``max_new_tokens``), since the
    vLLM engine loaded for training is the one ``evaluate_before_after`` then generates with,
    and its ``max_model_len`` is fixed at load (``evaluation.eval_engine_len``)."""
    from medreason_lib.evaluation import EvalSettings, eval_engine_len, profile_benchmarks

    settings = EvalSettings.from_profile(profile)
    needed = eval_engine_len(profile, base_model, profile_benchmarks(profile), settings)
    return profile.replace(max_seq_length=max(needed, profile.max_seq_length))


def _keep_interrupted(trainer, run_dir: Path, adapter_dir: Path) -> None:
    """After a ``KeyboardInterrupt``: a checkpoint of the last finished step (unless one is
    there already), and the adapter taken from it, so the run's later cells and a
    ``resume=True`` both work from the steps done. Nothing trained yet (step 0): the adapter
    is the untrained LoRA, saved so that later cells still run."""
    step = trainer.state.global_step
    last = get_last_checkpoint(str(run_dir))
    if step > 0 and (last is None or not last.endswith(f"checkpoint-{step}")):
        trainer._save_checkpoint(trainer.model, trial=None)  # transformers' own checkpoint
        last = get_last_checkpoint(str(run_dir))
    if step == 0 or last is None:
        trainer.save_model(str(adapter_dir))
        source = "the untrained adapter (no step had finished)"
    else:
        adapter_from_checkpoint(Path(last), adapter_dir)
        source = f"the checkpoint of step {step} ({Path(last).name})"
    print(
        f"training interrupted after step {step} of {trainer.state.max_steps}: the run keeps "
        f"{source} as its adapter, and the cells below use it. To go on later: "
        "train(profile, resume=True)."
    )


class RunMissing(FileNotFoundError):
    """No finished training run where a notebook needs one; the message says what to run."""


def finished_run(profile: Profile, run_dir: str | Path | None = None) -> TrainingRun:
    """The finished run of ``profile`` (notebook 04's, ``runs/<profile>/grpo``) for notebooks
    that evaluate or export it.

    When there is none: a tiny profile trains it here, as notebook 04 does (about a minute on
    a CPU); a GPU profile raises ``RunMissing`` with the command to run instead, because its
    training takes hours and must not start as a side effect of opening another notebook.
    """
    run_dir = Path(run_dir) if run_dir else default_run_dir(profile)
    if (run_dir / "run.json").exists():
        run = TrainingRun.load(run_dir)
        print(f"notebook 04's run: {run.run_dir} ({run.global_step} GRPO steps)")
        return run
    if profile.is_tiny:
        print(f"no finished training run in {run_dir}: training one now, as notebook 04 does")
        return train(profile, run_dir=run_dir, sample_every=0)
    raise RunMissing(
        f"no finished training run in {run_dir}. On profile {profile.name!r} GRPO runs "
        f"{profile.max_steps} steps, hours on a GPU (not measured by this course), so this "
        "notebook does not start it on its own. Run notebook 04 first, or in a terminal: "
        f"python -m medreason_lib train --profile {profile.name}   (add --resume to continue "
        "after a disconnect); then run this notebook again."
    )
