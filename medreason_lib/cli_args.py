"""The command line's arguments: every subcommand's options and help text (``cli`` runs them).

Kept apart from ``cli`` so the options a learner reads in ``--help`` sit in one place, and the
command functions in another.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable

from medreason_lib.settings.profiles import ENV_VAR, PROFILES

PROG = "python -m medreason_lib"


# The settings a learner tunes most, as options of `train`: (flag, type, what it sets)
TUNABLES = (
    ("--learning-rate", float, "learning rate"),
    ("--num-generations", int, "completions per prompt (GRPO's group size)"),
    ("--max-completion-length", int, "tokens a completion may have"),
    ("--temperature", float, "sampling temperature of the rollouts"),
    ("--beta", float, "KL weight (0: no reference model)"),
)


def _common(parser: argparse.ArgumentParser, *, run_dir: bool = True) -> None:
    parser.add_argument(
        "--profile",
        metavar="NAME|FILE",
        help=f"run profile: {', '.join(PROFILES)}, or a profile file (.toml/.json: settings on a "
        f"built-in base, medreason_lib.settings.profile_files) (default: ${ENV_VAR}, else the "
        "profile this machine fits; eval/export --run-dir: the profile the run recorded)",
    )
    if run_dir:
        parser.add_argument(
            "--run-dir",
            help="the training run folder (default: runs/<profile>/grpo, or $MEDREASON_RUNS)",
        )


# Every subcommand, in --help's order: name -> (help, description, run_dir, add_options),
# registered by ``command`` on the function that adds the subcommand's own options.
COMMANDS: dict[str, tuple[str, str, bool, Callable]] = {}


def command(name: str, *, run_dir: bool = True) -> Callable:
    """Register the function below as subcommand ``name``: its docstring's first paragraph is
    the one-line help, the rest the description ``<command> --help`` prints."""

    def register(add_options: Callable) -> Callable:
        help_text, _, description = inspect.cleandoc(add_options.__doc__ or "").partition("\n\n")
        COMMANDS[name] = (" ".join(help_text.split()), description, run_dir, add_options)
        return add_options

    return register


@command("plan", run_dir=False)
def _plan(p: argparse.ArgumentParser) -> None:
    """GPU memory plan of a profile (will it fit?)

    Print medreason_lib.models.memory.plan(profile, method, gpu): peak GPU memory of training,
    by part, and what to lower first.
    """
    p.add_argument(
        "--gpu", help="a GPU name (T4, L4, A10G, A100-40GB, A100-80GB, H100, H200) or GB"
    )
    p.add_argument("--method", default="grpo", choices=["grpo", "qlora", "lora16"])


@command("train")
def _train(p: argparse.ArgumentParser) -> None:
    """GRPO training (training.train), as notebook 04

    Run training.train(profile): the SFT warm start where the profile has one, then GRPO;
    writes checkpoints, metrics.csv, the adapter and run.json to the run folder. A run folder
    that already holds a run is not overwritten: without --resume the earlier run is moved into
    <run folder>/previous-<time>/ (a run folder of its own: eval --run-dir reads it; delete it
    when done). One train at a time per folder: a second is refused, naming the first
    (train.lock). Also runs as `accelerate launch -m medreason_lib train ...`.
    """
    p.add_argument("--steps", type=int, help="GRPO steps in all (default: the profile's max_steps)")
    p.add_argument(
        "--model",
        metavar="ID_OR_FOLDER",
        help="train this model instead of the profile's (a hub id or a local model folder), "
        "loaded the profile's way (tiny/smol: transformers; GPU profiles: Unsloth) unless "
        "--backend says otherwise",
    )
    p.add_argument("--backend", choices=["transformers", "unsloth"], help="how to load the model")
    for flag, kind, what in TUNABLES:
        p.add_argument(flag, type=kind, help=f"{what} (default: the profile's)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last complete checkpoint (one cut off by a crash is skipped); "
        "a run whose last checkpoint is at --steps is finished without training",
    )
    p.add_argument(
        "--sft-steps",
        type=int,
        help="SFT warm-start steps (default: the profile's; 0 skips it, for a model that "
        "already writes the template)",
    )
    p.add_argument(
        "--sample-every", type=int, default=10, help="print a sampled completion every N steps"
    )
    p.add_argument(
        "--data",
        metavar="FILE",
        help="train on your own CSV or JSON Lines file instead of the profile's mix (columns: "
        "question, answer, task_type; context, options or A-D where they apply; see "
        "data/README.md). Every bad row is listed, exit status 2, before any model loads",
    )
    p.add_argument(
        "--reward",
        action="append",
        metavar="MODULE:FUNCTION",
        help="add your own reward function, fn(completions, **kwargs) -> list[float], to the "
        "course's: my_rewards:brevity or path/to/file.py:brevity (repeatable)",
    )
    p.add_argument(
        "--report-to",
        nargs="+",
        choices=["none", "trackio", "wandb"],
        help="experiment trackers besides metrics.csv (default: the profile's, none)",
    )
    p.add_argument(
        "--vllm-server",
        metavar="URL",
        help="generate rollouts on a `trl vllm-serve` server (e.g. http://localhost:8000, on a "
        "second GPU) instead of a vLLM engine inside the training process (a 16-bit base only: "
        "the GPU profiles load 4-bit and are refused; not tested by the course)",
    )


@command("eval")
def _eval(p: argparse.ArgumentParser) -> None:
    """evaluate the trained adapter, the baseline or any model (evaluation.evaluate_model)

    Evaluate on the profile's benchmarks with the course's settings (greedy, the template
    system prompt, the one answer extractor) and save runs/<profile>/eval/<name>.json. Default:
    the run's adapter on its base model (run.json); --baseline: the profile's untrained model;
    --model: a published model (hub id) or a local model folder, as it is, loaded the way the
    profile loads its own.
    """
    p.add_argument(
        "--model",
        help="a hub id (hooman650/MedQwen3B-Reasoner) or a saved model folder to evaluate "
        "with the course's harness, no adapter (report: model-<name>)",
    )
    p.add_argument("--baseline", action="store_true", help="evaluate the model without an adapter")
    p.add_argument("--adapter", help="a LoRA adapter folder (default: the run's)")
    p.add_argument(
        "--base", help="the base model of --adapter / --baseline (default: the run's / profile's)"
    )
    p.add_argument("--n", type=int, help="items per benchmark (default: the profile's eval_size)")
    p.add_argument(
        "--name", help="report name (default: trained or baseline, with -n<N> when --n is given)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--method",
        choices=["generate", "loglik"],
        default="generate",
        help="generate: the course's harness (the model writes reasoning and an answer); "
        "loglik: zero-shot log-likelihood of each option with lm-evaluation-harness, as most "
        "published tables score (report: loglik-<name>; not comparable with generate)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="--method loglik only: every item of the official evaluation sets (default: the "
        "profile's eval_size per benchmark, the items the generative evaluation uses)",
    )
    p.add_argument(
        "--source",
        help="where the items come from: bundled, hub or a folder of upstream raw files, e.g. "
        "shared/reference-data (default: the profile's data_source)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        help="generation's completion budget (default: the profile's max_completion_length)",
    )
    p.add_argument(
        "--samples",
        type=int,
        metavar="K",
        help="also sample K completions per item (K >= 2; vLLM: one request with n=K) and report "
        "greedy, avg@K (with its interval), maj@K and pass@K side by side on the same items "
        "(report: <name>-k<K>-t<temperature>; the greedy one: <name>)",
    )
    p.add_argument("--temperature", type=float, help="--samples only: > 0 (default: the profile's)")
    p.add_argument("--top-p", type=float, help="--samples only: in (0, 1] (default: the profile's)")


@command("export")
def _export(p: argparse.ArgumentParser) -> None:
    """save, merge, verify, GGUF, Ollama/vLLM files, push (medreason_lib.export)

    Save the run's adapter to <run>/export/adapter and verify it trained. --merge: merge it
    into the base weights (export/merged) and write the vLLM serve files; --gguf: a GGUF file
    (GPU profiles); --modelfile: an Ollama Modelfile; --push: upload to the Hugging Face Hub
    (token from HF_TOKEN, never printed). Exit status 1 when the adapter does not verify.
    """
    p.add_argument("--merge", action="store_true", help="merge the adapter into the base weights")
    p.add_argument(
        "--gguf",
        action="append",
        metavar="QUANT",
        help="make a GGUF file: q4_k_m or q8_0 (repeatable; GPU profiles only)",
    )
    p.add_argument("--push", metavar="REPO", help="push to the Hub repository user/name")
    p.add_argument("--modelfile", action="store_true", help="write an Ollama Modelfile (merges)")
    p.add_argument("--no-verify", action="store_true", help="skip the adapter checks")


@command("ask")
def _ask(p: argparse.ArgumentParser) -> None:
    """ask the trained model one question (educational use only)

    Ask one question in a training format and print the parsed reasoning and answer. --context
    ABSTRACT: a yes/no/maybe question; --options A B C D: multiple choice; --task gsm8k:
    arithmetic. Not medical advice.
    """
    p.add_argument("question", help="the question (quote it)")
    p.add_argument("--context", help="the abstract a yes/no/maybe question is about")
    p.add_argument("--options", nargs=4, metavar=("A", "B", "C", "D"), help="four options")
    p.add_argument("--task", help="the task format (pubmedqa, medqa, medmcqa, mmlu_medical, gsm8k)")
    p.add_argument("--model", help="a merged model folder to ask instead of the run's adapter")
    p.add_argument("--max-new-tokens", type=int, help="default: the profile's completion length")
    p.add_argument("--show-completion", action="store_true", help="also print the raw completion")


@command("doctor", run_dir=False)
def _doctor(p: argparse.ArgumentParser) -> None:
    """is this runtime ready? GPU, driver, pins, disk, token, hub, profile fit

    One line per fact (GPU, driver, CUDA, bf16, package pins, disk, HF_TOKEN never shown, the
    hub, the profile and its memory plan); exit status 1 with one line per problem and its fix.
    Never initialises CUDA (medreason_lib.runtime.doctor).
    """
    p.add_argument("--no-hub", action="store_true", help="do not contact the hub")


@command("prefetch", run_dir=False)
def _prefetch(p: argparse.ArgumentParser) -> None:
    """download a profile's model and datasets once, for offline runs

    Download the profile's models and datasets into the cache or --to FOLDER with their sizes;
    then every loader reads them with HF_HOME=FOLDER HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    (medreason_lib.runtime.prefetch).
    """
    p.add_argument("--to", metavar="FOLDER", help="a folder to use as HF_HOME (default: the cache)")
    p.add_argument("--dry-run", action="store_true", help="list what it would fetch; no request")
    p.add_argument("--model", action="append", metavar="ID", help="also this model (repeatable)")
    p.add_argument("--reference", action="store_true", help="also the published reference model")
    p.add_argument("--check", action="store_true", help="read it all back with the hub off")


def build_parser(handlers: dict[str, Callable]) -> argparse.ArgumentParser:
    """The parser of every subcommand; ``handlers`` maps each command to its function."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train, evaluate, export and ask a medical reasoning model (GRPO), "
        "without Jupyter. Educational use only: not medical advice.",
        epilog=f"`{PROG} <command> --help` describes each command. The notebooks call the "
        "same library functions.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    for name, (help_text, description, run_dir, add_options) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=description)
        _common(p, run_dir=run_dir)
        add_options(p)
        p.set_defaults(handler=handlers[name])
    return parser


def sampling_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``eval``'s --samples, --temperature and --top-p (None: nothing),
    in one line naming the option."""
    if args.samples is None:
        if args.temperature is not None or args.top_p is not None:
            return "--temperature and --top-p are for --samples K (sampled evaluation)"
        return None
    if args.method != "generate":
        return "--samples is for --method generate (log-likelihood scoring samples nothing)"
    if args.samples < 2:
        return f"--samples must be at least 2 (K completions per item), got {args.samples}"
    if args.temperature is not None and not args.temperature > 0:
        return (
            f"--temperature must be above 0 with --samples, got {args.temperature} (at 0 the "
            "K completions would all be the greedy one)"
        )
    if args.top_p is not None and not 0 < args.top_p <= 1:
        return f"--top-p must be in (0, 1], got {args.top_p}"
    return None
