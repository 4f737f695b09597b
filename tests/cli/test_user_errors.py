"""A user's mistake never ends in a traceback (issue 22, part 3): one table of bad invocations,
each run through the command line (``cli.main`` in this process, ``run_cli``), each expected
to end with exit status 2 and exactly one line on stderr that names the thing at fault.

The mechanism is ``medreason_lib.settings.errors.UserError``: the library raises it (or a subclass)
for
bad input, and ``cli.main`` prints its message. A row that raises instead, prints a
traceback, exits otherwise, or writes more than one line fails the test with the row's name.
No row trains; the few that load a model load the tiny one (under a second)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_cli

PROG = "python -m medreason_lib"
DEEP = "[" * 5000 + "]" * 5000
NUL_CSV = 'question,answer,task_type,context\n"Is it\x00 safe?",yes,pubmedqa,"An abstract."\n'
NUL_OPTIONS = {
    "question": "Which?",
    "answer": "A",
    "task_type": "multiple_choice",
    "options": ["a", "b\x00", "c", "d"],
}


def unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot write in: a read-only folder, or (root writes anywhere
    the permission bits say no) a folder under /sys, which no one may create files in."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        (folder / "probe").touch()
    except OSError:
        return folder
    (folder / "probe").unlink()
    return Path("/sys/medreason-test")


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """The bad inputs the table points at, built once: files, folders, model folders, runs."""
    from medreason_lib.models.tiny import tiny_model_path

    root = tmp_path_factory.mktemp("bad-input")
    model = tiny_model_path("qwen2", 0)
    found = {"root": root, "model": model, "file": root / "a-file"}
    found["file"].write_text("not a folder")
    found["unwritable"] = unwritable(root)

    def model_copy(name, damage):
        folder = root / name
        shutil.copytree(model, folder)
        damage(folder)
        found[name] = folder

    config = json.loads((model / "config.json").read_text())
    weights = (model / "model.safetensors").read_bytes()
    model_copy("cut-config", lambda f: (f / "config.json").write_text(json.dumps(config)[:60]))
    model_copy(
        "unknown-arch",
        lambda f: (f / "config.json").write_text(
            json.dumps(config | {"model_type": "no-such-arch", "architectures": ["NoSuch"]})
        ),
    )
    model_copy(
        "not-causal",
        lambda f: (f / "config.json").write_text(json.dumps(config | {"model_type": "vit"})),
    )
    model_copy("no-weights", lambda f: (f / "model.safetensors").unlink())
    model_copy("cut-weights", lambda f: (f / "model.safetensors").write_bytes(weights[:100_000]))
    model_copy("no-tokenizer", lambda f: [(f / n).unlink() for n in
                                          ("tokenizer.json", "tokenizer_config.json")])  # fmt: skip

    data = root / "data"
    data.mkdir()
    (data / "deep.jsonl").write_text(
        json.dumps({"question": "Q?", "answer": "yes", "task_type": "yes_no_maybe"})[:-1]
        + f', "context": {DEEP}}}\n'
    )
    (data / "nul.csv").write_text(NUL_CSV)
    (data / "nul.jsonl").write_text(json.dumps(NUL_OPTIONS) + "\n")
    with (data / "big.csv").open("wb") as f:  # 50 MB (sparse): refused before it is read
        f.write(b"question,answer,task_type\n")
        f.truncate(50 * 2**20)
    found["data"] = data

    runs = root / "runs"

    def run_folder(name, info, adapter=None):
        folder = runs / name
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(info if isinstance(info, str) else json.dumps(info))
        if adapter:
            (folder / "adapter").mkdir()
            (folder / "adapter" / "adapter_config.json").write_text("{}")
            (folder / "adapter" / "adapter_model.safetensors").write_bytes(adapter)
        found[name] = folder

    good = {"profile": "tiny", "base_model": str(model), "adapter_dir": "adapter",
            "global_step": 2}  # fmt: skip
    run_folder("cut-run-json", json.dumps(good)[:40])
    run_folder("escaping-run", good | {"adapter_dir": "../../elsewhere"})
    run_folder("cut-adapter", good, adapter=weights[:5000])
    busy = runs / "busy"
    busy.mkdir(parents=True)
    (busy / "train.lock").write_text(
        json.dumps({"pid": 1, "host": os.uname().nodename, "started": "2026-12-06 10:00:00"})
    )  # pid 1 always runs: the lock's holder is alive
    found["busy"] = busy
    found["runs"] = runs
    return found


ASK = ("ask", "--profile", "tiny", "Is it safe?", "--context", "An abstract.")
LONG_CONTEXT = "The trial measured blood pressure in every group. " * 400

# name -> (arguments, environment, text the one line must hold). ``{key}`` in an argument or
# a value is the path ``bad[key]`` (``{key}/more`` too).
CASES = {
    "unknown profile: train": (("train",), {"MEDREASON_PROFILE": "nope"}, "unknown profile 'nope'"),
    "unknown profile: plan": (("plan",), {"MEDREASON_PROFILE": "nope"}, "unknown profile 'nope'"),
    "unknown profile: eval": (("eval",), {"MEDREASON_PROFILE": "nope"}, "unknown profile 'nope'"),
    "unknown profile: ask": (("ask", "Q?"), {"MEDREASON_PROFILE": "x"}, "$MEDREASON_PROFILE"),
    "unknown profile: export": (("export",), {"MEDREASON_PROFILE": "x"}, "unknown profile 'x'"),
    "unknown profile: prefetch": (("prefetch", "--dry-run"), {"MEDREASON_PROFILE": "x"},
                                  "unknown profile 'x'"),
    "a cap that is no number": (("train", "--profile", "tiny"), {"MEDREASON_MAX_STEPS": "ten"},
                                "$MEDREASON_MAX_STEPS"),
    "plan --gpu 0": (("plan", "--profile", "3b", "--gpu", "0"), {}, "--gpu 0"),
    "plan --gpu 0.0": (("plan", "--profile", "3b", "--gpu", "0.0"), {}, "--gpu 0.0"),
    "plan --gpu -8": (("plan", "--profile", "3b", "--gpu", "-8"), {}, "'-8'"),
    "plan --gpu nan": (("plan", "--profile", "3b", "--gpu", "nan"), {}, "'nan'"),
    "--run-dir is a file": (("train", "--profile", "tiny", "--run-dir", "{file}"), {},
                            "--run-dir {file} is not a folder"),
    "--run-dir inside a file": (("train", "--profile", "tiny", "--run-dir", "{file}/run"), {},
                                "{file} is a file"),
    "--run-dir not writable": (("train", "--profile", "tiny", "--run-dir", "{unwritable}/run"),
                               {}, "not writable"),
    "MEDREASON_RUNS is a file: train": (("train", "--profile", "tiny"),
                                        {"MEDREASON_RUNS": "{file}"}, "$MEDREASON_RUNS"),
    "MEDREASON_RUNS is a file: eval": (("eval", "--profile", "tiny"),
                                       {"MEDREASON_RUNS": "{file}"}, "$MEDREASON_RUNS"),
    "MEDREASON_RUNS not writable": (("train", "--profile", "tiny"),
                                    {"MEDREASON_RUNS": "{unwritable}"}, "not writable"),
    "MEDREASON_CACHE is a file": (("train", "--profile", "tiny"),
                                  {"MEDREASON_CACHE": "{file}"}, "$MEDREASON_CACHE {file}"),
    "ask --max-new-tokens 0": ((*ASK, "--model", "{model}", "--max-new-tokens", "0"), {},
                               "--max-new-tokens must be at least 1"),
    "ask --max-new-tokens -5": ((*ASK, "--model", "{model}", "--max-new-tokens", "-5"), {},
                                "--max-new-tokens"),
    "ask: config.json cut off": ((*ASK, "--model", "{cut-config}"), {},
                                 "{cut-config}/config.json is not valid JSON"),
    "ask: unknown architecture": ((*ASK, "--model", "{unknown-arch}"), {}, "'no-such-arch'"),
    "ask: not a causal LM": ((*ASK, "--model", "{not-causal}"), {}, "not a causal language"),
    "ask: weights missing": ((*ASK, "--model", "{no-weights}"), {}, "holds no weights file"),
    "ask: weights cut off": ((*ASK, "--model", "{cut-weights}"), {},
                             "model.safetensors is cut off"),
    "ask: no tokenizer": ((*ASK, "--model", "{no-tokenizer}"), {}, "holds no tokenizer"),
    "ask: context over the positions": (
        ("ask", "--profile", "tiny", "Is it safe?", "--context", LONG_CONTEXT, "--model",
         "{model}"), {}, "over the model's limit of 1024 positions"),
    "eval --model: config cut off": (("eval", "--profile", "tiny", "--model", "{cut-config}"),
                                     {}, "config.json is not valid JSON"),
    "eval --model: weights cut off": (("eval", "--profile", "tiny", "--model", "{cut-weights}"),
                                      {}, "model.safetensors is cut off"),
    "eval --adapter: weights cut off": (
        ("eval", "--profile", "tiny", "--adapter", "{cut-adapter}/adapter"), {},
        "adapter_model.safetensors is cut off"),
    "eval --name ../x": (("eval", "--profile", "tiny", "--baseline", "--name", "../x"), {},
                         "--name '../x'"),
    "eval --name /abs": (("eval", "--profile", "tiny", "--baseline", "--name", "/tmp/x"), {},
                         "--name '/tmp/x'"),
    "eval --name a/b": (("eval", "--profile", "tiny", "--baseline", "--name", "a/b"), {},
                        "not a plain name"),
    "eval --name .hidden": (("eval", "--profile", "tiny", "--baseline", "--name", ".x"), {},
                            "not a plain name"),
    "run.json cut off": (("eval", "--profile", "tiny", "--run-dir", "{cut-run-json}"), {},
                         "{cut-run-json}/run.json is not valid JSON"),
    "run.json adapter outside": (("eval", "--profile", "tiny", "--run-dir", "{escaping-run}"),
                                 {}, "points outside the run folder"),
    "run's adapter cut off": (("ask", "--profile", "tiny", "Q?", "--context", "C.", "--run-dir",
                               "{cut-adapter}"), {}, "adapter_model.safetensors is cut off"),
    "train into a busy folder": (("train", "--profile", "tiny", "--run-dir", "{busy}"), {},
                                 "in use by another training run (process 1"),
    "data: JSON nested too deep": (("train", "--profile", "tiny", "--data", "{data}/deep.jsonl"),
                                   {}, "{data}/deep.jsonl, line 1: nested too deep"),
    "data: a NUL byte (CSV)": (("train", "--profile", "tiny", "--data", "{data}/nul.csv"), {},
                               "{data}/nul.csv, line 2, field 'question': holds a NUL byte"),
    "data: a NUL byte (JSONL)": (("train", "--profile", "tiny", "--data", "{data}/nul.jsonl"),
                                 {}, "line 1, field 'options': holds a NUL byte"),
    "data: 50 MB": (("train", "--profile", "tiny", "--data", "{data}/big.csv"), {},
                    "50.0 MB, over the limit of 10 MB ($MEDREASON_MAX_DATA_MB)"),
    "data: a bad size limit": (("train", "--profile", "tiny", "--data", "{data}/nul.csv"),
                               {"MEDREASON_MAX_DATA_MB": "lots"}, "$MEDREASON_MAX_DATA_MB"),
}  # fmt: skip


def _fill(text: str, bad: dict) -> str:
    for key, value in bad.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def test_bad_invocations_end_in_one_line_and_exit_2(bad, tmp_path):
    """Every row of ``CASES``: exit status 2, one line on stderr naming the thing at fault,
    no traceback (collected over all rows, so one run shows every failure)."""
    failures = []
    for name, (args, env, needle) in CASES.items():
        args = [_fill(a, bad) for a in args]
        env = {"MEDREASON_RUNS": str(tmp_path / "runs"), "HF_HUB_OFFLINE": "1",
               "MEDREASON_PROFILE": None} | {k: _fill(v, bad) for k, v in env.items()}  # fmt: skip
        try:
            done = run_cli(*args, env=env)
        except BaseException as exc:  # noqa: BLE001 (a traceback is the failure looked for)
            failures.append(f"{name}: raised {type(exc).__name__}: {exc}"[:300])
            continue
        lines = done.stderr.strip().splitlines()
        problem = (
            "a traceback" if "Traceback" in done.stdout + done.stderr
            else f"exit {done.returncode}" if done.returncode != 2
            else f"{len(lines)} lines on stderr" if len(lines) != 1
            else f"no {_fill(needle, bad)!r}" if _fill(needle, bad) not in lines[0]
            else None if lines[0].startswith(f"{PROG} {args[0]}: error: ") else "no prefix"
        )  # fmt: skip
        if problem:
            failures.append(f"{name}: {problem}: {done.stderr.strip()[-400:]!r}")
    assert not failures, f"{len(failures)} of {len(CASES)} rows:\n" + "\n".join(failures)
    assert len(CASES) >= 25
    assert not (bad["busy"] / "sft-warmstart").exists()  # refused before the warm start


def test_user_error_is_the_one_mechanism():
    """The library's input errors are ``UserError``s (the command line's one rule), and keep
    their older base classes for code that catches those."""
    from medreason_lib.data import raw_formats
    from medreason_lib.data.user_files import UserDataError
    from medreason_lib.evaluation.records import RecordsDamaged
    from medreason_lib.export import ask
    from medreason_lib.models import folders as model_folders
    from medreason_lib.runtime import prefetch
    from medreason_lib.settings import errors, paths
    from medreason_lib.training import runs
    from medreason_lib.training.run_folder import RunFolderError

    for cls, older in (
        (ask.AskError, ValueError),
        (raw_formats.DataError, ValueError),
        (UserDataError, ValueError),
        (prefetch.PrefetchError, ValueError),
        (runs.ExportUnavailable, RuntimeError),
        (model_folders.ModelFolderError, OSError),
        (RecordsDamaged, ValueError),
        (RunFolderError, Exception),
    ):
        assert issubclass(cls, errors.UserError) and issubclass(cls, older), cls
    with pytest.raises(errors.UserError, match="not a plain name"):
        paths.safe_name("../escape")
    assert paths.safe_name("model-owner--name-n16") == "model-owner--name-n16"


def test_a_long_context_is_refused_by_ask_itself(one_thread):
    """``ask.ask`` (the notebooks' call, not only the command line) refuses a prompt that does
    not fit the model's positions, naming the limit; a short one is answered."""
    from medreason_lib import models
    from medreason_lib.export import ask
    from medreason_lib.settings.profiles import PROFILES

    profile = PROFILES["tiny"]
    with models.load_model(profile) as loaded:
        with pytest.raises(ask.AskError, match="over the model's limit of 1024 positions"):
            ask.ask(loaded, "Is it safe?", LONG_CONTEXT, profile=profile, max_new_tokens=4)
        with pytest.raises(ask.AskError, match="at least 1"):
            ask.ask(loaded, "Is it safe?", "An abstract.", profile=profile, max_new_tokens=0)
        answer = ask.ask(loaded, "Is it safe?", "An abstract.", profile=profile, max_new_tokens=4)
    assert answer.task == "pubmedqa"


def test_an_adapter_folder_loaded_as_a_model_is_checked_as_an_adapter(tiny_run, tmp_path):
    """Unsloth loads an adapter folder as a model (export's merge, DPO on a GPU): the check
    before loading takes it for an adapter (it has no config.json of its own), and still
    refuses a damaged one (the rehearsal of notebook 08 on an L4 found it refused as 'no
    model')."""
    import shutil

    from medreason_lib.models.folders import check_before_loading
    from medreason_lib.settings.errors import UserError

    check_before_loading(tiny_run.adapter_dir)  # a good adapter: no error
    broken = tmp_path / "adapter"
    shutil.copytree(tiny_run.adapter_dir, broken)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match="adapter"):
        check_before_loading(broken)
