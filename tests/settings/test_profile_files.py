"""Profiles read from a file (issue 23): settings on a built-in base, checked one by one, taken
by every command and recorded by a run so that ``eval --run-dir`` evaluates it as trained."""

from __future__ import annotations

import json

import pytest

from medreason_lib import cli
from medreason_lib.settings.errors import UserError
from medreason_lib.settings.profiles import PROFILES, get_profile, profile_from_settings


def _write(tmp_path, text: str, name: str = "mine.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_toml_file_changes_only_what_it_names(tmp_path):
    path = _write(
        tmp_path,
        'base = "smol"\nname = "smol-slow"\nlearning_rate = 2e-5\nnum_generations = 8\n'
        'lora_targets = ["q_proj", "v_proj"]\nmix_weights = { pubmedqa = 1.0 }\n',
    )
    profile = get_profile(str(path))
    smol = PROFILES["smol"]
    assert profile.name == "smol-slow"
    assert (profile.learning_rate, profile.num_generations) == (2e-5, 8)
    assert profile.lora_targets == ("q_proj", "v_proj")  # a list in the file, a tuple here
    assert profile.mix_weights == {"pubmedqa": 1.0}
    assert profile.replace(
        name="smol", learning_rate=smol.learning_rate, num_generations=smol.num_generations,
        lora_targets=smol.lora_targets, mix_weights=smol.mix_weights,
    ) == smol  # fmt: skip


def test_a_json_file_named_by_the_environment_and_its_stem(tmp_path, monkeypatch):
    path = _write(tmp_path, json.dumps({"base": "tiny", "max_steps": 3}), "quick.json")
    monkeypatch.setenv("MEDREASON_PROFILE", str(path))
    profile = get_profile()
    assert (profile.name, profile.max_steps, profile.model_id) == ("quick", 3, "tiny:qwen2")


def test_a_cpu_file_profile_gives_the_stand_in_for_a_scale_notebook(tmp_path):
    path = _write(tmp_path, 'base = "smol"\n')
    assert get_profile(str(path), scale="8b").name == "tiny-qwen3"
    assert get_profile("smol", scale="20b").name == "tiny-gptoss"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('base = "smol"\nlearnin_rate = 1e-5\n', "unknown setting 'learnin_rate'"),
        ('base = "smol"\nnum_generations = "eight"\n', "'num_generations' should be a int"),
        ('base = "smol"\nload_in_4bit = 1\n', "'load_in_4bit' should be a bool"),
        ('base = "huge"\n', "'base' must name a built-in profile"),
        ("learning_rate = 1e-5\n", "'base' must name a built-in profile"),
        ('base = "smol"\nname = "tiny"\n', "not a built-in profile's"),
        ('base = "smol"\nname = "../x"\n', "must be a plain name"),
        ('base = "smol"\nbackend = "jax"\n', "unknown backend 'jax'"),
        ('base = "smol"\nmax_completion_length = 4096\n', "max_seq_length 672 is shorter"),
        ('base = "smol"\nlearning_rate = \n', "cannot be read"),
    ],
)
def test_a_bad_file_is_one_line_that_names_file_and_setting(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(UserError, match=message) as caught:
        get_profile(str(path))
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        get_profile(str(tmp_path / "nothing.toml"))


def test_recorded_settings_round_trip_through_json():
    for profile in PROFILES.values():
        settings = json.loads(json.dumps(profile.to_dict()))
        rebuilt = profile_from_settings(settings, "run.json")
        assert rebuilt.to_dict() == profile.to_dict()
        assert rebuilt.lora_targets == profile.lora_targets


def test_eval_run_dir_takes_the_profile_the_run_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDREASON_PROFILE", "tiny")
    custom = PROFILES["tiny"].replace(name="tiny-mine", max_completion_length=32)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"profile_settings": custom.to_dict()}))
    args = cli.build_parser().parse_args(["eval", "--run-dir", str(run)])
    assert cli._profile(args) == custom
    args = cli.build_parser().parse_args(["eval", "--profile", "tiny", "--run-dir", str(run)])
    assert cli._profile(args).name == "tiny"  # --profile still wins


def test_the_command_line_takes_a_profile_file(tmp_path, capsys):
    path = _write(tmp_path, 'base = "3b"\nname = "3b-short"\nmax_completion_length = 512\n')
    assert cli.main(["plan", "--profile", str(path), "--gpu", "T4"]) in (0, 1)
    assert "3b-short" in capsys.readouterr().out
    bad = _write(tmp_path, 'base = "3b"\nlr = 1\n', "bad.toml")
    assert cli.main(["plan", "--profile", str(bad), "--gpu", "T4"]) == 2
    assert "unknown setting 'lr'" in capsys.readouterr().err
