"""What a notebook runs and installs on a given GPU, and how long its training may take
(issue 21: the Colab setup cell, the T4, and no hours of training unasked)."""

from __future__ import annotations

import subprocess

import pytest

from medreason_lib.runtime import install, speed
from medreason_lib.settings import profiles
from medreason_lib.settings.profiles import PROFILES

T4 = install.GpuFacts("Tesla T4", "580.82.07", (7, 5))
L4 = install.GpuFacts("NVIDIA L4", "580.82.07", (8, 9))
OLD_DRIVER_L4 = install.GpuFacts("NVIDIA L4", "550.54.15", (8, 9))
MEMORY = {"Tesla T4": 15.0, "NVIDIA L4": 22.5}


@pytest.fixture
def gpu(monkeypatch):
    """``gpu(facts)``: this machine now has that GPU, as nvidia-smi tells the course."""

    def use(facts):
        monkeypatch.delenv(profiles.ENV_VAR, raising=False)
        monkeypatch.setattr(install, "read_gpu", lambda: facts)
        monkeypatch.setattr(profiles, "gpu_memory_gb", lambda: MEMORY[facts.name])

    return use


@pytest.fixture
def pip_calls(monkeypatch):
    calls = []

    def record(args, *rest, **kwargs):
        calls.append([str(a) for a in args])
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(install.subprocess, "run", record)
    monkeypatch.setattr(
        install.InstallPlan, "missing", lambda self, installed=None: list(self.requirements)
    )
    return calls


def _installed(calls) -> str:
    return " ".join(" ".join(c) for c in calls)


def test_setup_cell_installs_vllm_for_a_vllm_profile_before_vllm_exists(
    gpu, pip_calls, monkeypatch
):
    """get_profile turns use_vllm off while vLLM is not importable; the install must plan from
    the profile as the course defines it, or vLLM is never installed (it was, on every GPU)."""
    monkeypatch.setattr(profiles.importlib.util, "find_spec", lambda name: None)
    gpu(L4)
    plan = install.colab_install("04_grpo_qwen_3b")
    assert "vllm==" in _installed(pip_calls) and "vllm-bnb-plugin==" in _installed(pip_calls)
    assert "vllm" in plan.sections


def test_a_t4_gets_no_vllm_and_says_why(gpu, pip_calls, capsys):
    gpu(T4)
    install.colab_install("04_grpo_qwen_3b")
    assert "unsloth==" in _installed(pip_calls) and "vllm==" not in _installed(pip_calls)
    assert "not installing vllm: Tesla T4" in capsys.readouterr().out


def test_notebooks_00_to_02_install_and_import_no_gpu_stack(gpu, pip_calls):
    gpu(T4)
    for notebook in ("00_setup_and_tour", "01_template_and_format_rewards", "02_medical_data"):
        assert not install.needs_gpu_stack(notebook)
        install.colab_install(notebook)
    assert "unsloth" not in _installed(pip_calls)
    assert install.needs_gpu_stack("04_grpo_qwen_3b") and install.needs_gpu_stack("interactive")


def test_the_driver_gate_has_a_way_past_it(gpu, pip_calls, monkeypatch):
    gpu(OLD_DRIVER_L4)
    with pytest.raises(install.UnsupportedRuntime, match="check_driver=False"):
        install.colab_install("04_grpo_qwen_3b")
    install.colab_install("04_grpo_qwen_3b", check_driver=False)
    monkeypatch.setenv(install.DRIVER_CHECK_VAR, "1")
    install.colab_install("03_baseline_evaluation")
    assert len(pip_calls) >= 2


@pytest.mark.parametrize(
    ("notebook", "stand_in"), [("06_scale", "tiny-qwen3"), ("07_scale", "tiny-gptoss")]
)
def test_scale_notebooks_on_a_t4_run_their_stand_in_and_say_what_to_do(
    gpu, capsys, notebook, stand_in
):
    gpu(T4)
    chosen = install.profile_for_notebook(notebook)
    out = capsys.readouterr().out
    assert chosen.name == stand_in
    assert "does not fit this Tesla T4" in out and "L4 or A100" in out


def test_scale_notebook_on_an_l4_runs_the_real_profile(gpu):
    gpu(L4)
    assert install.profile_for_notebook("06_scale").name == "8b"


def test_a_named_profile_is_kept_even_when_it_does_not_fit(gpu, monkeypatch):
    gpu(T4)
    monkeypatch.setenv(profiles.ENV_VAR, "8b")
    assert install.profile_for_notebook("06_scale").name == "8b"  # preflight says what to do


def test_long_gpu_runs_need_an_explicit_choice(capsys):
    three_b = PROFILES["3b"].replace(use_vllm=False)
    short = speed.session_profile(three_b, gpu_name="Tesla T4", workshop_steps=20)
    out = capsys.readouterr().out
    assert short.max_steps == 20 and "FULL_RUN = True" in out
    full = speed.session_profile(three_b, gpu_name="Tesla T4", full_run=True)
    assert full.max_steps == three_b.max_steps
    assert speed.session_profile(PROFILES["tiny"]) == PROFILES["tiny"]  # minutes on a CPU


def test_step_estimates_order_the_cards():
    three_b = PROFILES["3b"]
    times = [speed.estimate_step(three_b, g).seconds for g in ("T4", "L4", "A100-40GB", "H100")]
    assert times == sorted(times, reverse=True)
    assert (
        speed.gpu_key("NVIDIA A100-SXM4-80GB") == "A100-80GB" and speed.gpu_key("Tesla T4") == "T4"
    )
    assert speed.gpu_key("Quadro RTX 8000") is None


def test_environment_caps_shrink_a_profile_and_reject_nonsense(monkeypatch):
    monkeypatch.setenv("MEDREASON_MAX_STEPS", "3")
    monkeypatch.setenv("MEDREASON_MAX_ITEMS", "5")
    monkeypatch.setenv("MEDREASON_DATA_SOURCE", "bundled")
    capped = profiles.apply_caps(PROFILES["3b"])
    assert (capped.max_steps, capped.train_size, capped.eval_size) == (3, 5, 5)
    assert capped.data_source == "bundled" and capped.train_splits == {}
    monkeypatch.setenv("MEDREASON_MAX_STEPS", "0")
    with pytest.raises(ValueError, match="MEDREASON_MAX_STEPS"):
        profiles.apply_caps(PROFILES["3b"])


def test_an_evaluation_engine_is_sized_for_its_items(monkeypatch):
    """On a vLLM profile the engine's max_model_len must hold the longest evaluation prompt
    plus max_new_tokens, not just the training max_seq_length (issue 21: notebook 05)."""
    from medreason_lib import evaluation, models
    from medreason_lib.models.tiny import tiny_model_path

    seen = {}
    monkeypatch.setattr(models, "load_for_eval", lambda profile, **kw: seen.update(kw))
    short = PROFILES["3b"].replace(max_seq_length=64, max_completion_length=48)
    items = evaluation.load_benchmarks(n=2, seed=0, source="bundled")
    settings = evaluation.EvalSettings.from_profile(short)
    base = str(tiny_model_path("qwen2", 0))
    evaluation.load_for_items(short, items, settings, base=base)
    assert seen["max_seq_length"] > short.max_seq_length
    assert seen["max_seq_length"] == evaluation.eval_engine_len(short, base, items, settings)


def test_a_kept_model_gets_an_engine_long_enough_for_its_evaluation(monkeypatch):
    """train(keep_model=True) on a vLLM profile loads the engine that the in-place evaluation
    then uses (06, 10): it is sized for that evaluation when training starts."""
    from medreason_lib import evaluation, training

    seen = {}

    def stop(profile, *args, **kwargs):
        seen["profile"] = profile
        raise RuntimeError("stop before loading a model")

    monkeypatch.setattr(training, "build_trainer", stop)
    monkeypatch.setattr(training, "preflight", lambda *a, **k: None)
    monkeypatch.setattr(evaluation, "eval_engine_len", lambda *a, **k: 5000)
    monkeypatch.setattr(evaluation, "profile_benchmarks", lambda profile: None)
    three_b = PROFILES["3b"].replace(data_source="bundled", train_splits={}, train_size=8)
    with pytest.raises(RuntimeError, match="stop before"):
        training.train(three_b, keep_model=True, sample_every=0)
    assert seen["profile"].max_seq_length == 5000
