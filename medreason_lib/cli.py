"""The command line: the whole pipeline without Jupyter, calling the notebooks' functions.

::

    python -m medreason_lib plan   --profile 3b --gpu T4        # will it fit? (memory.plan)
    python -m medreason_lib train  --profile tiny --steps 30     # training.train
    python -m medreason_lib train  --profile tiny --data my.csv --reward my_rewards:brevity
    python -m medreason_lib eval   --profile tiny --n 16         # evaluation.evaluate_model
    python -m medreason_lib eval   --profile 3b --model hooman650/MedQwen3B-Reasoner
    python -m medreason_lib eval   --profile tiny --method loglik  # lm-eval, log-likelihood
    python -m medreason_lib eval   --profile tiny --samples 8     # + avg@k, maj@k, pass@k
    python -m medreason_lib export --profile tiny --merge --modelfile
    python -m medreason_lib ask    --profile tiny "Does X help?" --context "An abstract..."
    python -m medreason_lib doctor                               # is this runtime ready?
    python -m medreason_lib prefetch --profile 3b --to FOLDER    # download once, then offline

(``medreason`` is the same command, installed by ``pip install -e .``.) Every subcommand takes
``--profile`` (default: ``$MEDREASON_PROFILE``, else what the machine fits) and reads and
writes ``runs/<profile>/`` like the notebooks; ``--run-dir`` picks another training run.
``train`` also runs under ``accelerate launch -m medreason_lib train ...``.

Bad input (no training run, GGUF on a CPU, a push without ``HF_TOKEN``, a question without a
format, an unknown ``$MEDREASON_PROFILE``, a run folder that is a file, a damaged model folder,
a run folder another ``train`` is using, ...) ends with exit status 2 and one line saying what
to do, never a traceback: the library raises an ``errors.UserError`` and ``main`` prints its
message. The cheap checks run before any model is loaded.
Heavy modules are imported inside the subcommands, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from medreason_lib import cli_args
from medreason_lib.cli_args import PROG
from medreason_lib.settings import paths
from medreason_lib.settings.errors import UserError, one_line
from medreason_lib.settings.profiles import ENV_VAR, Profile, get_profile


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "bad input": reported in one line with exit status 2. Every
    ``errors.UserError`` (``AskError``, ``DataError``, ``ExportUnavailable``, ``PrefetchError``,
    ``ModelFolderError``, ``RunFolderError``, ...), and the modules' own that are not one."""
    from medreason_lib.data.user_rewards import RewardError
    from medreason_lib.evaluation.loglik import LoglikError
    from medreason_lib.training.config import ConfigError

    return (UserError, FileNotFoundError, ConfigError, LoglikError, RewardError)


class UsageError(UserError):
    """Bad input found by the command line itself."""


def _profile(args) -> Profile:
    """The profile, chosen without loading anything (``--profile`` wins over the env); an
    unknown ``$MEDREASON_PROFILE`` or a bad cap (``$MEDREASON_MAX_STEPS``) is a usage error."""
    if args.profile:
        os.environ[ENV_VAR] = args.profile
    elif getattr(args, "run_dir", None):  # a run's own profile, as it recorded it (run.json)
        recorded = _recorded_profile(Path(args.run_dir).expanduser() / "run.json")
        if recorded is not None:
            return recorded
    try:
        return get_profile()
    except ValueError as exc:
        raise UsageError(exc) from None


def _eval_profile(profile: Profile, args) -> Profile:
    """The profile a generative ``eval`` runs: ``--source`` for its items, ``--max-new-tokens``
    for its completion budget (the sequence length grown to hold it)."""
    changes = {"data_source": args.source, "eval_source": ""} if args.source else {}
    if args.max_new_tokens:
        longest = profile.max_prompt_length + args.max_new_tokens
        changes |= {"max_completion_length": args.max_new_tokens}
        changes |= {"max_seq_length": max(profile.max_seq_length, longest)}
    return profile.replace(**changes)


def _recorded_profile(run_json: Path) -> Profile | None:
    """The profile settings a run recorded in its ``run.json`` (None: none recorded)."""
    from medreason_lib.settings.profiles import apply_caps, profile_from_settings

    try:
        settings = json.loads(run_json.read_text()).get("profile_settings")
    except (OSError, ValueError, AttributeError):
        return None  # no run there, or not one of ours: the run checks say so later
    return None if settings is None else apply_caps(profile_from_settings(settings, str(run_json)))


def _tuned(args, profile: Profile) -> dict:
    """The profile changes that ``train``'s --model, --backend and tunables ask for."""
    from medreason_lib.cli_args import TUNABLES

    changes = {}
    if args.model:
        changes["model_id"] = str(args.model)
        # a model given by hand loads the profile's way (tiny: transformers) unless asked
        changes["backend"] = "unsloth" if profile.uses_unsloth else "transformers"
    if args.backend:
        changes["backend"] = args.backend
    for flag, kind, _ in TUNABLES:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        if (kind is int and value < 1) or value < 0 or value != value:
            raise UsageError(
                f"{flag} must be {'at least 1' if kind is int else '>= 0'}, got {value}"
            )
        changes[flag.lstrip("-").replace("-", "_")] = value
    if args.num_generations is not None:  # a step's completions must make whole groups
        batch = profile.per_device_train_batch_size * profile.gradient_accumulation_steps
        if batch % args.num_generations:
            changes["per_device_train_batch_size"] = args.num_generations * max(
                1, batch // args.num_generations
            )
    if "max_completion_length" in changes:
        changes["max_seq_length"] = max(
            profile.max_seq_length, profile.max_prompt_length + changes["max_completion_length"]
        )
    return changes


def _positive(value, option: str) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{option} must be at least 1, got {value}")


def _start(args) -> Profile:
    """``course.start``: seeds, imports Unsloth first on a GPU, one torch thread on tiny."""
    from medreason_lib.course import start

    return start(f"cli {args.command}")


# --------------------------------------------------------------------------- subcommands


def vllm_server_overrides(url: str) -> dict:
    """GRPOConfig settings for TRL's vLLM server mode: rollouts are generated by a
    ``trl vllm-serve`` process (on another GPU) at ``url``; the trainer sends it the updated
    weights after every step, so the base must be 16-bit (``models.kwargs.vllm_server_refusal``:
    the GPU profiles load 4-bit and are refused)."""
    return {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": url}


def _plan(args) -> int:
    from medreason_lib.models import memory

    profile = _profile(args)
    gpu = args.gpu
    if gpu is not None and gpu.replace(".", "", 1).isdigit():
        gpu = float(gpu)  # GB
        if not gpu > 0:
            raise UsageError(f"--gpu {args.gpu}: a GPU's memory must be more than 0 GB")
    try:
        plan = memory.plan_for_profile(profile, args.method, gpu=gpu)
    except ValueError as exc:  # an unknown GPU name
        raise UsageError(exc) from None
    print(f"profile {profile.name}: {plan}")
    return 0


def _train(args) -> int:
    if int(os.environ.get("RANK", "0")) > 0:  # under accelerate/torchrun: process 0 reports
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    profile = _profile(args)
    _positive(args.steps, "--steps")
    if args.sft_steps is not None and args.sft_steps < 0:
        raise UsageError(f"--sft-steps must be at least 0, got {args.sft_steps}")
    if args.run_dir:  # a file, or a folder this process cannot write in: before any work
        paths.usable_dir(args.run_dir, "--run-dir")
    paths.runs_dir(profile.name)
    paths.cache_dir()
    changes, overrides = _tuned(args, profile), {}
    if args.steps is not None:
        changes["max_steps"] = args.steps
    if args.sft_steps is not None:
        changes["sft_warmup_steps"] = args.sft_steps
    if args.report_to is not None:
        changes["report_to"] = tuple(t for t in args.report_to if t != "none")
    if args.vllm_server:
        if not profile.uses_unsloth:
            raise UsageError(
                "--vllm-server needs a GPU profile and a running `trl vllm-serve`; the tiny "
                "profiles generate with transformers on the CPU"
            )
        from medreason_lib.models.kwargs import (
            vllm_server_refusal,  # light: nothing heavy before _start
        )

        refusal = vllm_server_refusal(profile)
        if refusal:
            raise UsageError(refusal)
        changes["use_vllm"] = False  # no vLLM engine inside the training process
        overrides = vllm_server_overrides(args.vllm_server)
    dataset, extra_rewards = None, []
    if args.data:  # every bad row, before any model loads
        from medreason_lib.data.user_data import load_user_data

        dataset = load_user_data(args.data)
    if args.reward:
        from medreason_lib.data.user_rewards import load_reward

        extra_rewards = [load_reward(spec) for spec in args.reward]
    _start(args)
    from medreason_lib import training

    run = training.train(
        profile.replace(**changes),
        run_dir=args.run_dir,
        resume=args.resume,
        sample_every=args.sample_every,
        dataset=dataset,
        extra_rewards=extra_rewards,
        **overrides,
    )
    print(
        f"trained: {run.global_step} GRPO steps in {run.train_seconds:.0f} s\n"
        f"  run folder: {run.run_dir}\n  adapter:    {run.adapter_dir}\n"
        f"  base model: {run.base_model}\n"
        f"next: {PROG} eval --profile {profile.name}"
        + (f" --run-dir {args.run_dir}" if args.run_dir else "")
    )
    return 0


def _eval(args) -> int:
    from medreason_lib import export
    from medreason_lib.models.folders import check_adapter_folder, check_model_folder
    from medreason_lib.runtime import prefetch

    profile = _profile(args)
    if args.model and (args.adapter or args.base or args.baseline):
        raise UsageError(
            "--model evaluates a model as it is: drop --adapter, --base and --baseline "
            "(for an adapter on a base model use --adapter with --base)"
        )
    if args.baseline and args.adapter:
        raise UsageError("--baseline evaluates the model without an adapter: drop --adapter")
    if args.name is not None:
        paths.safe_name(args.name)  # a report file in runs/<profile>/eval, never elsewhere
    paths.runs_dir(profile.name)  # the reports' folder: a file or not writable is refused
    base, adapter = args.base, None
    if args.model:
        base = prefetch.model_source(args.model)
    if base and Path(base).expanduser().is_dir():
        check_model_folder(base, "--model" if args.model else "--base")
    if not args.baseline and not args.model:
        if args.adapter:
            adapter = check_adapter_folder(args.adapter, "--adapter")
            if base is None and (export.run_dir_for(profile, args.run_dir) / "run.json").exists():
                base = export.run_base_model(profile, args.run_dir)
        else:
            export.check_run(profile, args.run_dir)
    _positive(args.n, "--n")
    if args.full and (args.method != "loglik" or args.n is not None):
        raise UsageError("--full is for --method loglik, without --n")
    _positive(args.max_new_tokens, "--max-new-tokens")
    if args.method != "loglik":  # generation: the items' source and the completion budget
        profile = _eval_profile(profile, args)
    if cli_args.sampling_problem(args):
        raise UsageError(cli_args.sampling_problem(args))
    _start(args)
    from medreason_lib import evaluation

    if not args.baseline and not args.model and adapter is None:
        run = export.load_run(profile, args.run_dir)
        base, adapter = base or run.base_model, run.adapter_dir
    if args.model:
        name = args.name or prefetch.model_report_name(args.model)
    else:
        name = args.name or ("baseline" if args.baseline else "trained")
    if not args.name:  # never replace a report with one on other items or another budget
        name += f"-n{args.n}" if args.n is not None else ""
        name += f"-{paths.safe_name(Path(args.source).name)}" if args.source else ""
        name += f"-m{args.max_new_tokens}" if args.max_new_tokens else ""
    if args.method == "loglik":
        return _eval_loglik(args, profile, name, base, adapter)
    dataset = None
    if args.n is not None:
        dataset = evaluation.load_benchmarks(
            n=args.n, seed=profile.seed, source=evaluation.evaluation_source(profile)
        )
    common = {"base": base, "adapter": adapter, "dataset": dataset, "progress": not args.quiet}
    if args.samples is None:
        report = evaluation.evaluate_model(profile, name, **common)
    else:  # greedy and K samples per item, one load; the report holds both
        sampling = {"temperature": args.temperature, "top_p": args.top_p}
        report = evaluation.evaluate_sampled_model(
            profile, name, samples=args.samples, **sampling, **common
        )
    print(report)
    print(f"report: {evaluation.eval_dir(profile) / report.name}.json")
    return 0


def _eval_loglik(args, profile: Profile, name: str, base, adapter) -> int:
    from medreason_lib.evaluation import loglik

    if not args.name:
        name = f"loglik-{name}" + ("-full" if args.full else "")
    n = None if args.full else (args.n or profile.eval_size)
    report = loglik.evaluate_loglik(
        profile, name, base=base, adapter=adapter, n=n, source=args.source, progress=not args.quiet
    )
    print(report)
    print(f"report: {loglik.report_path(profile, name)}")
    return 0


def _export(args) -> int:
    from medreason_lib import export

    profile = _profile(args)
    export.check_run(profile, args.run_dir)  # the cheap checks first, before any import
    for quantization in args.gguf or ():
        export.check_gguf(profile, quantization)
    if args.push is not None:
        export.check_push(args.push)
    _start(args)
    result = export.export_run(
        profile,
        args.run_dir,
        merge_weights=args.merge,
        gguf=args.gguf or (),
        push=args.push,
        modelfile=args.modelfile,
        verify=not args.no_verify,
    )
    lines = ["", f"adapter:   {result.adapter}"]
    if result.merged:
        lines.append(f"merged:    {result.merged}")
    lines += [f"gguf:      {path}" for path in result.gguf]
    if result.modelfile:
        lines += [
            f"Modelfile: {result.modelfile}",
            f"  ollama create {export.served_name(profile)} -f {result.modelfile}",
            f"  ollama run {export.served_name(profile)}",
        ]
    if result.vllm:
        lines += [
            "vLLM (the chat template adds the course's system prompt when a request has none):",
            f"  {result.vllm.command}",
            "  example request:",
            f"  {result.vllm.curl}",
        ]
    lines += [f"pushed:    {url}" for url in result.pushed]
    print("\n".join(lines))
    if result.verify is not None and not result.verify.ok:
        print(f"{PROG} export: the adapter did NOT verify (see above)", file=sys.stderr)
        return 1
    return 0


def _ask(args) -> int:
    from medreason_lib import export
    from medreason_lib.export import ask
    from medreason_lib.models.folders import check_model_folder

    profile = _profile(args)
    ask.ask_prompt(args.question, args.context, args.options, task=args.task)  # fail early
    _positive(args.max_new_tokens, "--max-new-tokens")
    if args.model is None:
        export.check_run(profile, args.run_dir)
    else:
        check_model_folder(args.model, "--model")  # config, weights, tokenizer: whole
    _start(args)
    from medreason_lib import models

    if args.model is not None:
        loaded = models.load_for_eval(profile, base=args.model)
    else:
        loaded = ask.load_trained(profile, args.run_dir)
    with loaded:
        answer = ask.ask(
            loaded,
            args.question,
            args.context,
            args.options,
            task=args.task,
            profile=profile,
            max_new_tokens=args.max_new_tokens,
        )
    print(answer)
    if args.show_completion:
        print(f"completion: {answer.completion!r}")
    return 0


def _doctor(args) -> int:
    from medreason_lib.runtime import doctor

    return doctor.run(args.profile, check_hub=not args.no_hub)


def _prefetch(args) -> int:
    from medreason_lib.runtime import prefetch

    return prefetch.command(_profile(args), args)


HANDLERS = {
    "plan": _plan,
    "train": _train,
    "eval": _eval,
    "export": _export,
    "ask": _ask,
    "doctor": _doctor,
    "prefetch": _prefetch,
}


def build_parser() -> argparse.ArgumentParser:
    return cli_args.build_parser(HANDLERS)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"\n{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not isinstance(exc, _usage_errors()):
            raise
        detail = str(exc) if getattr(exc, "multiline", False) else one_line(exc)
        print(f"{PROG} {args.command}: error: {detail}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
