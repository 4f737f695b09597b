"""The command line, end to end on a CPU from a fresh runs folder: `python -m medreason_lib
train` as a real process, then eval, export and ask of that run; every subcommand's --help;
and bad input answered with exit status 2 and one line, before any model is loaded.

A new process spends ~10 s importing torch/transformers/trl/peft before it does anything, so
only two tests start one: the fresh-state ``train`` (the module entry point, the environment
and the cached warm start, as a learner runs it) and ``--help`` (which imports nothing heavy).
Every other command runs through ``cli.main`` in this process (``run_cli``, tests/conftest.py)
with the environment the subprocesses get, and is checked on the same exit status, stdout and
stderr. None of them needs a fresh interpreter: the settings they depend on (MEDREASON_RUNS,
HF_TOKEN, and HF_HUB_OFFLINE where a push or ``eval --model`` checks it) are read from the
environment when the command runs (runs.py, export/hub.py, prefetch.py), not when a library
is imported, and the models they load are local folders."""

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from conftest import run_cli
from medreason_lib import cli
from medreason_lib.export.ask import DISCLAIMER
from medreason_lib.scoring import template

COMMANDS = ("plan", "train", "eval", "export", "ask")


def _env(runs, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "MEDREASON_PROFILE")}
    return env | {"MEDREASON_RUNS": str(runs), "HF_HUB_OFFLINE": "1"} | extra


def medreason(runs, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "medreason_lib", *args],
        env=env or _env(runs),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    took = time.perf_counter() - began
    print(f"$ medreason {' '.join(args)}: exit {done.returncode}, {took:.1f} s")
    return done


def main(runs, *args) -> SimpleNamespace:
    """``medreason(runs, *args)`` in this process: the same environment, exit status and
    output (``run_cli``)."""
    began = time.perf_counter()
    env = {"MEDREASON_RUNS": str(runs), "HF_HUB_OFFLINE": "1"}
    done = run_cli(*args, env=env | {"HF_TOKEN": None, "MEDREASON_PROFILE": None})
    took = time.perf_counter() - began
    print(f"$ medreason {' '.join(args)}: exit {done.returncode}, {took:.1f} s (in process)")
    return done


def _assert_ok(done) -> None:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_warm_start):
    """train -> eval -> export -> ask, as a learner runs them: ``train`` in a fresh process,
    the others on its run in this one (``main``). The runs folder starts empty; the SFT warm
    start comes from the cache that the session's ``tiny_warm_start`` filled
    (tests/conftest.py), as it would after notebook 04."""
    runs = tmp_path_factory.mktemp("runs")
    steps = {}
    steps["train"] = medreason(
        runs, "train", "--profile", "tiny", "--steps", "2", "--sample-every", "0"
    )
    steps["eval"] = main(runs, "eval", "--profile", "tiny", "--n", "2", "--quiet")
    steps["export"] = main(runs, "export", "--profile", "tiny", "--merge", "--modelfile")
    steps["ask"] = main(
        runs, "ask", "--profile", "tiny", "Does daily walking lower blood pressure?",
        "--context", "In a trial, walking lowered systolic pressure by 6 mm Hg.",
        "--max-new-tokens", "24",
    )  # fmt: skip
    return runs, steps


def test_train_eval_export_ask_from_a_fresh_state(pipeline):
    runs, steps = pipeline
    for done in steps.values():
        _assert_ok(done)
    run_dir = runs / "tiny" / "grpo"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["profile"] == "tiny" and info["global_step"] == 2
    assert "trained: 2 GRPO steps" in steps["train"].stdout
    assert "SFT warm start: reusing the cached one" in steps["train"].stdout

    report = json.loads((runs / "tiny" / "eval" / "trained-n2.json").read_text())
    assert len(report["ids"]) == 10  # 2 items x 5 benchmarks
    assert "+ LoRA adapter@" in report["model"]  # the run's adapter on its base

    out = steps["export"].stdout
    assert "verified: the adapter is trained" in out
    export = run_dir / "export"
    assert (export / "adapter" / "adapter_model.safetensors").is_file()
    assert (export / "merged" / "model.safetensors").is_file()
    modelfile = (export / "Modelfile").read_text()
    assert f'SYSTEM """{template.SYSTEM_PROMPT}"""' in modelfile and "FROM ./merged" in modelfile
    assert "vllm serve " in out and "--chat-template" in out
    assert (export / "vllm" / "chat_template.jinja").is_file()

    said = steps["ask"].stdout
    assert "question (pubmedqa, answer type yes_no_maybe)" in said
    assert "answer: " in said and DISCLAIMER in said


def test_ask_a_merged_folder(pipeline):
    runs, _ = pipeline
    merged = runs / "tiny" / "grpo" / "export" / "merged"
    before = dict(os.environ), torch.get_num_threads()
    done = main(
        runs, "ask", "--profile", "tiny", "Which drug?", "--options", "a", "b", "c", "d",
        "--model", str(merged), "--max-new-tokens", "8",
    )  # fmt: skip
    _assert_ok(done)
    assert "question (medqa, answer type choice)" in done.stdout and DISCLAIMER in done.stdout
    # nothing of the command stays in this process: not the profile --profile wrote into the
    # environment, not course.start's notebook name, not its one torch thread
    assert (dict(os.environ), torch.get_num_threads()) == before


def test_export_fails_when_the_adapter_did_not_train(tmp_path, monkeypatch, capsys):
    """A run whose adapter is untrained (all LoRA B zero) exports with exit status 1."""
    from medreason_lib import export
    from medreason_lib.models.tiny import tiny_model_path
    from medreason_lib.settings.profiles import PROFILES

    monkeypatch.setenv("MEDREASON_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDREASON_PROFILE", "tiny")  # restored after: --profile sets it
    monkeypatch.setenv("MEDREASON_NOTEBOOK", "test_cli")  # course.start would set it
    run_dir = tmp_path / "zero-run"
    base = tiny_model_path("qwen2")
    export.untrained_adapter(PROFILES["tiny"], base, run_dir / "adapter")
    info = {"profile": "tiny", "base_model": str(base), "adapter_dir": "adapter", "global_step": 0}
    (run_dir / "run.json").write_text(json.dumps(info))
    args = ["export", "--profile", "tiny", "--run-dir", str(run_dir), "--merge", "--modelfile"]
    assert cli.main(args) == 1
    out = capsys.readouterr()
    assert "NOT VERIFIED" in out.out and "did NOT verify" in out.err
    assert "export stopped" in out.out and not (run_dir / "export" / "Modelfile").exists()


def test_train_with_a_vllm_server_passes_trls_server_settings(monkeypatch, tmp_path):
    """``--vllm-server`` turns the in-process engine off and TRL's server mode on; GRPOConfig
    accepts the settings (the run itself needs two GPUs, which the tests do not have). The
    base is 16-bit here: with a 4-bit one the command refuses (next test)."""
    from medreason_lib import training
    from medreason_lib.settings import profiles
    from medreason_lib.training.config import grpo_config

    monkeypatch.setenv("MEDREASON_PROFILE", "tiny")  # restored after: --profile sets it
    sixteen_bit = profiles.PROFILES["3b"].replace(load_in_4bit=False)
    monkeypatch.setitem(profiles.PROFILES, "3b", sixteen_bit)
    calls = []
    finished = SimpleNamespace(global_step=1, train_seconds=1.0, run_dir=tmp_path,
                               adapter_dir=tmp_path / "adapter", base_model="base")  # fmt: skip

    def fake_train(profile, **kwargs):
        calls.append((profile, kwargs))
        return finished

    monkeypatch.setattr(cli, "_start", lambda args: None)  # a GPU profile would import Unsloth
    monkeypatch.setattr(training, "train", fake_train)
    assert cli.main(["train", "--profile", "3b", "--vllm-server", "http://localhost:8000"]) == 0
    ((profile, kwargs),) = calls
    assert profile.name == "3b" and profile.use_vllm is False
    assert kwargs["use_vllm"] is True and kwargs["vllm_mode"] == "server"
    assert kwargs["vllm_server_base_url"] == "http://localhost:8000"
    config = grpo_config(profile, tmp_path, **cli.vllm_server_overrides("http://localhost:8000"))
    assert (config.use_vllm, config.vllm_mode) == (True, "server")


def test_vllm_server_with_a_4bit_base_is_refused_saying_what_to_do(capsys, monkeypatch):
    """TRL's server mode sends the server the training model's weights as they are: with a
    bitsandbytes 4-bit base, packed uint8 data of another shape. Refused before anything
    loads, in one line that names both ways out."""
    from medreason_lib import training
    from medreason_lib.settings.profiles import PROFILES
    from medreason_lib.training.config import ConfigError, grpo_settings

    monkeypatch.setenv("MEDREASON_PROFILE", "tiny")
    monkeypatch.setattr(cli, "_start", lambda args: pytest.fail("started before refusing"))
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("trained"))
    assert cli.main(["train", "--profile", "3b", "--vllm-server", "http://x:8000"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "4-bit" in err
    assert "drop --vllm-server" in err and "load_in_4bit=False" in err
    server = cli.vllm_server_overrides("http://x:8000")
    four_bit = PROFILES["3b"].replace(use_vllm=False)
    with pytest.raises(ConfigError, match="load_in_4bit=False"):  # the Python API too
        grpo_settings(four_bit, "out", **server)
    assert grpo_settings(four_bit.replace(load_in_4bit=False), "out", **server)["vllm_mode"]


def test_vllm_server_on_tiny_is_refused(capsys, monkeypatch):
    monkeypatch.setenv("MEDREASON_PROFILE", "tiny")
    assert cli.main(["train", "--profile", "tiny", "--vllm-server", "http://x:8000"]) == 2
    assert "GPU profile" in capsys.readouterr().err


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m medreason_lib {command}") and "--profile" in out


def test_module_entry_point_help(tmp_path):
    done = medreason(tmp_path, "--help", timeout=60)
    _assert_ok(done)
    for command in COMMANDS:
        assert command in done.stdout


def test_plan_prints_the_memory_plan(capsys, monkeypatch):
    monkeypatch.setenv("MEDREASON_PROFILE", "tiny")  # restored after: --profile sets it
    assert cli.main(["plan", "--profile", "3b", "--gpu", "T4"]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "T4 (15.0 GB): fits" in out


# --------------------------------------------------------------------------- bad input


def _assert_usage_error(done, *fragments: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("python -m medreason_lib ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def fake_run(tmp_path):
    """A run folder that passes the cheap checks (the errors come before any loading)."""
    run_dir = tmp_path / "runs" / "tiny" / "grpo"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"profile": "tiny"}))
    return tmp_path / "runs"


def test_a_missing_run_directory(tmp_path):
    for command in (["export"], ["eval"], ["ask", "Q?", "--context", "C."]):
        done = main(tmp_path, *command, "--profile", "tiny", "--run-dir", str(tmp_path / "no"))
        _assert_usage_error(done, "no finished training run", "train --profile tiny")


def test_gguf_on_a_cpu(fake_run):
    done = main(fake_run, "export", "--profile", "tiny", "--gguf", "q4_k_m")
    _assert_usage_error(done, "GGUF export needs the GPU path", "--merge")


def test_push_without_a_token(fake_run):
    done = main(fake_run, "export", "--profile", "tiny", "--push", "someone/medreason")
    _assert_usage_error(done, "HF_TOKEN")


def test_questions_without_a_format_and_bad_numbers(fake_run):
    _assert_usage_error(main(fake_run, "ask", "--profile", "tiny", "Dose?"), "--context")
    _assert_usage_error(main(fake_run, "train", "--profile", "tiny", "--steps", "0"), "--steps")
    _assert_usage_error(main(fake_run, "plan", "--profile", "3b", "--gpu", "T5"), "T4")
    tiny_run = str(fake_run / "tiny" / "grpo")
    wrong = main(fake_run, "export", "--profile", "3b", "--run-dir", tiny_run)
    _assert_usage_error(wrong, "trained with profile 'tiny'", "--profile tiny")


# --------------------------------------------------------------------------- eval --model


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """The tiny profile's model saved with save_pretrained into a folder of its own."""
    from medreason_lib.models.tiny import build_tiny

    folder = tmp_path_factory.mktemp("models") / "my-tiny-model"
    model, tokenizer = build_tiny("qwen2", seed=0, cache=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_eval_a_saved_model_folder_with_the_course_harness(saved_model, tmp_path):
    """``eval --model FOLDER`` evaluates the folder as it is, with the baseline's prompts,
    settings and extractor: the same weights give the same completions as ``--baseline``."""
    from medreason_lib.runtime import prefetch

    runs = tmp_path / "runs"
    done = main(runs, "eval", "--profile", "tiny", "--model", str(saved_model),
                "--n", "2", "--quiet")  # fmt: skip
    _assert_ok(done)
    name = prefetch.model_report_name(str(saved_model))
    assert name == "model-my-tiny-model"
    path = runs / "tiny" / "eval" / f"{name}-n2.json"
    assert f"report: {path}" in done.stdout
    report = json.loads(path.read_text())
    assert len(report["ids"]) == 10 and report["model"].startswith("my-tiny-model@")
    assert "LoRA" not in report["model"]
    baseline = main(runs, "eval", "--profile", "tiny", "--baseline", "--n", "2", "--quiet")
    _assert_ok(baseline)
    base = json.loads((runs / "tiny" / "eval" / "baseline-n2.json").read_text())
    assert base["settings"] == report["settings"] and base["ids"] == report["ids"]

    def records(stem):
        lines = (runs / "tiny" / "eval" / f"{stem}.jsonl").read_text().splitlines()
        return {r["id"]: (r["completion"], r["extracted"]) for r in map(json.loads, lines)}

    assert records(f"{name}-n2") == records("baseline-n2")


def test_eval_model_bad_input(saved_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDREASON_PROFILE", "tiny")  # restored after: --profile sets it
    monkeypatch.setenv("MEDREASON_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    cases = {
        ("--model", str(tmp_path / "no" / "such" / "folder")): "neither a folder nor a hub id",
        ("--model", str(tmp_path)): "holds no model (config.json)",
        ("--model", str(adapter)): f"is a LoRA adapter: use --adapter {adapter}",
        ("--model", "someone/not-cached"): "prefetch --model someone/not-cached",
        ("--model", str(saved_model), "--baseline"): "drop --adapter, --base and --baseline",
        ("--model", str(saved_model), "--adapter", str(adapter)): "--model evaluates a model",
    }
    for args, message in cases.items():
        assert cli.main(["eval", "--profile", "tiny", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (args, err)


def test_train_takes_any_model_and_the_settings_a_learner_tunes(monkeypatch, tmp_path):
    """`train --model FOLDER` trains that model the profile's way (tiny: transformers + peft,
    not Unsloth), and the tunables reach the profile; a nonsense value is one line, exit 2
    (issue 23)."""
    import medreason_lib.training as training
    from medreason_lib.models.tiny import tiny_model_path

    seen = {}

    def capture(profile, **kwargs):
        seen["profile"] = profile
        raise SystemExit(0)

    monkeypatch.setattr(training, "train", capture)
    folder = str(tiny_model_path("qwen2", 0))
    args = ["train", "--profile", "tiny", "--model", folder, "--learning-rate", "1e-4"]
    args += ["--num-generations", "3", "--beta", "0.05", "--max-completion-length", "64"]
    result = run_cli(*args, "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    profile = seen["profile"]
    assert profile.model_id == folder and profile.backend == "transformers"
    assert not profile.uses_unsloth  # a folder is not a tiny: id, yet it loads like tiny
    assert (profile.learning_rate, profile.num_generations, profile.beta) == (1e-4, 3, 0.05)
    assert profile.per_device_train_batch_size % 3 == 0  # whole groups a step
    assert profile.max_completion_length == 64
    assert profile.max_seq_length >= profile.max_prompt_length + 64
    bad = run_cli("train", "--profile", "tiny", "--learning-rate", "-1")
    assert bad.returncode == 2 and "--learning-rate" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_eval_on_reference_data_with_a_larger_budget(saved_model, tmp_path):
    """``eval --source FOLDER --max-new-tokens N``: the generative harness on the upstream raw
    files, with another completion budget, under a report name of its own (issue 23)."""
    from medreason_lib.settings import paths

    reference = paths.reference_data_dir()
    if reference is None:
        pytest.skip("no shared/reference-data beside this checkout")
    runs = tmp_path / "runs"
    done = main(runs, "eval", "--profile", "tiny", "--model", str(saved_model), "--n", "2",
                "--source", str(reference), "--max-new-tokens", "8", "--quiet")  # fmt: skip
    _assert_ok(done)
    path = runs / "tiny" / "eval" / f"model-my-tiny-model-n2-{reference.name}-m8.json"
    report = json.loads(path.read_text())
    assert report["settings"]["generation"]["max_new_tokens"] == 8
    bundled = main(runs, "eval", "--profile", "tiny", "--model", str(saved_model), "--n", "2",
                   "--quiet")  # fmt: skip
    _assert_ok(bundled)
    other = json.loads((runs / "tiny" / "eval" / "model-my-tiny-model-n2.json").read_text())
    assert set(report["ids"]).isdisjoint(other["ids"])  # the reference items, not the bundled
    bad = main(runs, "eval", "--profile", "tiny", "--baseline", "--max-new-tokens", "0")
    assert bad.returncode == 2 and "--max-new-tokens must be at least 1" in bad.stderr
