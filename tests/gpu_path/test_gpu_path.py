"""The GPU path's decisions, checked on a CPU with a faked ``torch.cuda`` and fake objects.

Every GPU branch is skipped on the tiny profile, so what it decides is tested here directly:
the training precision on a card without bf16 (a T4), Unsloth's runtime settings before
``import unsloth``, what ``close_trainer`` lets go of, and which modules stay light to import.
The rules come from the pinned sources; ``test_api_drift.py`` checks that they are still there
(its section "facts the GPU path relies on").
"""

from __future__ import annotations

import pytest
import torch

from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training import config as training_config
from medreason_lib.training import dpo, pretrain_setup, sft

TINY = PROFILES["tiny"]


def fake_cuda(monkeypatch, capability: tuple[int, int]) -> None:
    """A CUDA machine whose current card has ``capability``. ``is_bf16_supported`` says True
    whatever the card, as torch's does by default (it counts emulation: True on a T4)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize(
    ("capability", "bf16"),
    [((7, 5), False), ((7, 0), False), ((8, 0), True), ((8, 9), True), ((9, 0), True)],
)
def test_bf16_is_decided_by_compute_capability_as_unsloth_does(monkeypatch, capability, bf16):
    """A T4 (7.5): torch's is_bf16_supported() says True, Unsloth loads float16 and its
    trainer refuses bf16=True; the flags must say fp16."""
    fake_cuda(monkeypatch, capability)
    assert training_config.precision_flags() == {"use_cpu": False, "bf16": bf16, "fp16": not bf16}


def test_every_trainer_gets_fp16_on_a_t4(monkeypatch, tmp_path):
    """GRPO, the SFT warm start, DPO and continued pretraining share the flags."""
    fake_cuda(monkeypatch, (7, 5))
    profile = PROFILES["3b"]
    built = {
        "grpo": training_config.grpo_settings(profile, tmp_path),
        "sft": sft.sft_settings(profile, tmp_path, 10),
        "dpo": dpo.dpo_settings(profile, tmp_path, 10),
        "cpt": pretrain_setup.cpt_config_kwargs(
            profile, pretrain_setup.cpt_settings(profile), tmp_path
        ),
    }
    for name, settings in built.items():
        assert (settings["bf16"], settings["fp16"], settings["use_cpu"]) == (False, True, False), (
            name
        )


def test_a_distributed_launch_judges_the_weakest_card(monkeypatch):
    """Under torchrun/accelerate (WORLD_SIZE > 1) every rank must pick the same dtype, and
    Unsloth judges the weakest visible card (unsloth/device_type.py cuda_bf16_capability)."""
    fake_cuda(monkeypatch, (9, 0))
    caps = {0: (9, 0), 1: (7, 5)}
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_capability",
        lambda device=None: caps[0 if device is None else device],
    )
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert training_config.precision_flags()["fp16"] is True
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert training_config.precision_flags()["bf16"] is True


def test_the_cpu_bf16_probe_answers_without_raising():
    assert training_config.cpu_has_bf16() in (True, False)


def test_a_cpu_gets_neither():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine")
    assert training_config.precision_flags() == {"use_cpu": True, "bf16": False, "fp16": False}


@pytest.mark.parametrize("native", [True, False])
def test_a_cpu_trains_a_real_model_in_bf16_where_native_and_never_recomputes(monkeypatch, native):
    """smol on a CPU: bf16 autocast where the CPU has it (several times faster, measured in
    benchmarks/bench_cpu_precision.py), float32 for tiny; no gradient checkpointing on a CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training_config, "cpu_has_bf16", lambda: native)
    smol = training_config.machine_flags(PROFILES["smol"])
    assert smol == {"use_cpu": True, "bf16": native, "fp16": False, "gradient_checkpointing": False}
    assert training_config.machine_flags(PROFILES["tiny"])["bf16"] is False
    assert training_config.machine_flags(PROFILES["3b"])["gradient_checkpointing"] is False


# --------------------------------------------------------------------------- import order

HEAVY = ("transformers", "trl", "peft", "datasets")
# Imports the course's entry modules, then starts a GPU profile with a stand-in `unsloth`
# that records which heavy libraries were imported before it (Unsloth warns when trl,
# transformers or peft come first: its patches may not apply). The libraries imported after
# it still have their progress bars off (progress.quiet_libraries).
START = """
import json, sys
sys.path.insert(0, sys.argv[1])
import medreason_lib.course, medreason_lib.models, medreason_lib.settings.progress
import medreason_lib.settings.profiles, medreason_lib.runtime.install, medreason_lib.settings.paths
after_import = [m for m in {heavy} if m in sys.modules]
medreason_lib.course.start("import-order", profile="3b")
import unsloth, datasets
from transformers.utils import logging
bars = [logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()]
print(json.dumps({{"after_import": after_import, "before_unsloth": unsloth.SEEN, "bars": bars}}))
"""


def test_unsloth_is_imported_before_transformers_trl_peft_and_datasets(tmp_path):
    import json
    import os
    import subprocess
    import sys

    fake = tmp_path / "unsloth"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        f"import sys\nSEEN = [m for m in {HEAVY!r} if m in sys.modules]\n"
    )
    unset = ("MEDREASON_PROFILE", "HF_DATASETS_DISABLE_PROGRESS_BARS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env |= {"MEDREASON_RUNS": str(tmp_path / "runs"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", START.format(heavy=HEAVY), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"after_import": [], "before_unsloth": [], "bars": [False, False]}


# --------------------------------------------------------------------------- Unsloth's runtime

STANDBY = "UNSLOTH_VLLM_STANDBY"


@pytest.fixture
def fake_unsloth(tmp_path, monkeypatch):
    """A stand-in ``unsloth`` package that records the environment it was imported with and
    how often it was imported; removed from ``sys.modules`` afterwards."""
    import sys

    package = tmp_path / "fake" / "unsloth"
    package.mkdir(parents=True)
    counter = tmp_path / "imports"
    counter.write_text("")
    (package / "__init__.py").write_text(
        "import os\n"
        f"STANDBY = os.environ.get({STANDBY!r})\n"
        f"with open({str(counter)!r}, 'a') as f:\n    f.write('x')\n"
    )
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    monkeypatch.setenv(STANDBY, "")  # recorded: teardown restores the original state
    monkeypatch.delenv(STANDBY)
    yield lambda: len(counter.read_text())
    sys.modules.pop("unsloth", None)


def test_a_vllm_profile_imports_unsloth_with_vllm_standby_on(fake_unsloth):
    import sys

    from medreason_lib import models
    from medreason_lib.models import memory

    models.prepare_runtime(PROFILES["3b"])
    assert sys.modules["unsloth"].STANDBY == "1" and fake_unsloth() == 1
    assert memory.vllm_standby(PROFILES["3b"])
    assert memory.plan_for_profile(PROFILES["3b"]).settings["vllm_standby"] is True
    models.prepare_runtime(PROFILES["3b"])  # another notebook's start() in the same kernel
    assert fake_unsloth() == 1


def test_standby_follows_the_profile_and_an_explicit_setting(fake_unsloth, monkeypatch):
    import os
    import sys

    from medreason_lib import models
    from medreason_lib.models import memory

    models.prepare_runtime(TINY)  # tiny: nothing of the GPU stack
    assert "unsloth" not in sys.modules and STANDBY not in os.environ
    monkeypatch.setenv(STANDBY, "0")  # the learner's choice wins
    models.prepare_runtime(PROFILES["3b"])
    assert sys.modules["unsloth"].STANDBY == "0" and not memory.vllm_standby(PROFILES["3b"])


def test_unsloth_imported_without_standby_keeps_it_off(fake_unsloth):
    """Standby needs Unsloth imported with it (unsloth_zoo turns off PyTorch's expandable
    segments at import, and vLLM's standby allocator refuses them): once Unsloth is in, a
    vLLM profile started later in the same process must not switch it on."""
    import os
    import sys

    from medreason_lib import models
    from medreason_lib.models import memory

    models.prepare_runtime(PROFILES["20b"])  # gpt-oss: no vLLM
    assert sys.modules["unsloth"].STANDBY is None
    models.prepare_runtime(PROFILES["3b"])
    assert fake_unsloth() == 1 and os.environ.get(STANDBY) == "0"
    assert not memory.vllm_standby(PROFILES["3b"])
    assert memory.plan_for_profile(PROFILES["3b"]).settings["vllm_standby"] is False


# --------------------------------------------------------------------------- freeing vLLM


class Executor:
    """Stands for vLLM's model executor: the workers, the weights and the KV cache."""


def fake_engine():
    """The shape of vLLM's in-process ``LLM``: the executor is held twice, as
    ``llm_engine.model_executor`` and ``llm_engine.engine_core.engine_core.model_executor``
    (vllm/v1/engine/llm_engine.py: ``self.model_executor =
    self.engine_core.engine_core.model_executor`` when not multiprocessing)."""
    from types import SimpleNamespace

    class LLM:
        pass

    executor = Executor()
    core = SimpleNamespace(engine_core=SimpleNamespace(model_executor=executor))
    engine = LLM()
    engine.llm_engine = SimpleNamespace(model_executor=executor, engine_core=core)
    return engine, executor


@pytest.fixture
def fake_zoo(monkeypatch):
    """``unsloth_zoo.vllm_utils.delete_vllm`` as the pinned one does it (test_api_drift checks
    that): delete ``llm.llm_engine.model_executor``, then collect."""
    import gc
    import sys
    from types import ModuleType

    def delete_vllm(llm=None):
        if llm is not None:
            del llm.llm_engine.model_executor
        gc.collect()

    zoo, utils = ModuleType("unsloth_zoo"), ModuleType("unsloth_zoo.vllm_utils")
    utils.delete_vllm, zoo.vllm_utils = delete_vllm, utils
    monkeypatch.setitem(sys.modules, "unsloth_zoo", zoo)
    monkeypatch.setitem(sys.modules, "unsloth_zoo.vllm_utils", utils)


def _unsloth_model(engine):
    """A module with the engine where Unsloth puts it (``model.vllm_engine``)."""
    model = torch.nn.Linear(2, 2)
    model.vllm_engine = engine
    return model


def test_closing_drops_both_references_to_the_executor(fake_zoo):
    """Even while something outside still holds the engine, its executor is freed."""
    import gc
    import weakref

    from medreason_lib import models

    engine, executor = fake_engine()
    gone = weakref.ref(executor)
    del executor
    models.EvalModel(_unsloth_model(engine), tokenizer=None).close()
    gc.collect()
    assert gone() is None, "the executor outlived close(): a reference to it is left"
    assert engine is not None  # held here, as a library's list might


def _grpo_trainer(model, engine):
    """What TRL 1.15's GRPOTrainer holds with vLLM under Unsloth: ``vllm_generation`` (trl/
    generation/vllm_generation.py) with ``llm`` (Unsloth sets it to ``model.vllm_engine``),
    ``model`` and Unsloth's ``_unsloth_load_lora``; and Unsloth's own ``trainer.llm``."""
    from types import SimpleNamespace

    generation = SimpleNamespace(llm=engine, model=model, _unsloth_load_lora=lambda: model)
    accelerator = SimpleNamespace(free_memory=lambda: None)
    return SimpleNamespace(model=model, llm=engine, vllm_generation=generation,
                           optimizer=object(), accelerator=accelerator)  # fmt: skip


def test_close_trainer_lets_go_of_trls_engine(fake_zoo):
    import gc
    import weakref

    from medreason_lib import models

    engine, executor = fake_engine()
    alive = weakref.ref(engine)
    trainer = _grpo_trainer(_unsloth_model(engine), engine)
    generation = trainer.vllm_generation
    del engine, executor
    models.close_trainer(trainer)
    gc.collect()
    assert alive() is None, "a trainer closed without keep_model still holds the vLLM engine"
    assert generation.llm is None and generation.model is None


def test_close_trainer_keeping_the_model_keeps_its_engine(fake_zoo):
    """keep_model: the model and its engine evaluate in place; only the trainer lets go."""
    from medreason_lib import models

    engine, _ = fake_engine()
    trainer = _grpo_trainer(_unsloth_model(engine), engine)
    generation = trainer.vllm_generation
    model = models.close_trainer(trainer, keep_model=True)
    assert model.vllm_engine is engine and engine.llm_engine.model_executor is not None
    assert trainer.vllm_generation is None and generation.llm is None and trainer.llm is None
