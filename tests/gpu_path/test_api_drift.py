"""API drift: every keyword the course passes is a named parameter of the pinned release.

The keywords come from the library's own builders (``models.unsloth_load_kwargs``,
``training.config.grpo_settings``, ...) called with every profile, tiny and GPU. They are
checked against:

- trl / transformers / peft (installed at their pins): ``inspect`` on the real classes;
- Unsloth, unsloth_zoo, vLLM (GPU only, not installed here): their pinned source, read with
  ``ast`` from the files ``make wheels`` puts in ``.cache/wheels`` (``tools/api_drift.py``).

Only named parameters count: Unsloth's entry points end in ``**kwargs``, which would swallow a
misspelling. Where a keyword really travels through ``**kwargs``, the test follows it to the
function that names it. Nothing here is skipped: without the sources the tests fail and say to
run ``make wheels``.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from medreason_lib import export
from medreason_lib.evaluation.generation import GenerationSettings, hf_generate_kwargs
from medreason_lib.evaluation.generation_vllm import vllm_generate_kwargs, vllm_sampling_kwargs
from medreason_lib.models import (
    lora_config,
    unsloth_load_kwargs,
    unsloth_peft_kwargs,
    vllm_engine_kwargs,
)
from medreason_lib.settings.profiles import PROFILES
from medreason_lib.training.config import grpo_settings
from medreason_lib.training.sft import sft_settings
from tools import api_drift as ad

PINS = ad.gpu_pins()
ALL = list(PROFILES.values())
IDS = [p.name for p in ALL]
MODEL, TOKENIZER = object(), object()  # stand-ins for bind(): only the call's shape matters

LOADER = "unsloth/models/loader.py"
LLAMA = "unsloth/models/llama.py"
VISION = "unsloth/models/vision.py"
UTILS = "unsloth/models/_utils.py"
SAVE = "unsloth/save.py"
ZOO_VLLM = "unsloth_zoo/vllm_utils.py"
ZOO_SAVING = "unsloth_zoo/saving_utils.py"


# --------------------------------------------------------------------------- sources


def _open(locate):
    try:
        return ad.Source(locate())
    except FileNotFoundError as missing:
        message = str(missing)
    pytest.fail(message, pytrace=False)  # not a skip: `make test` provides the sources


@pytest.fixture(scope="module")
def unsloth():
    return _open(lambda: ad.wheel_path("unsloth", PINS["unsloth"]))


@pytest.fixture(scope="module")
def zoo():
    return _open(lambda: ad.wheel_path("unsloth_zoo", PINS["unsloth-zoo"]))


@pytest.fixture(scope="module")
def vllm():
    return _open(lambda: ad.vllm_sources_path(PINS["vllm"]))


@pytest.fixture(scope="module")
def course():
    return ad.Source(ad.ROOT)


def _vllm_member(vllm, name: str) -> str:
    """Where ``vllm.<name>`` lives, from vLLM's lazy-import table (``MODULE_ATTRS``)."""
    module, attr = vllm.constant("vllm/__init__.py", "MODULE_ATTRS")[name].split(":")
    assert attr == name
    return "vllm/" + module.lstrip(".").replace(".", "/") + ".py"


def _generation_settings(profile) -> list[GenerationSettings]:
    """A profile's generation settings: greedy, sampled, and k samples per prompt."""
    return [GenerationSettings.from_profile(profile, sample=s, samples=n) for s, n in
            ((False, 1), (True, 1), (True, 4))]  # fmt: skip


def _sampling_kwargs(profile) -> set[str]:
    """Every keyword ``vllm_sampling_kwargs`` gives for a profile: greedy, sampled and k
    samples per prompt, with and without special tokens."""
    keys = set()
    for settings in _generation_settings(profile):
        for skip in (False, True):
            keys |= set(vllm_sampling_kwargs(settings, skip_special_tokens=skip))
    return keys


# --------------------------------------------------------------------------- the checker itself


def test_a_misspelling_is_caught_on_the_ast_path(unsloth):
    from_pretrained = unsloth.function(LOADER, "FastLanguageModel.from_pretrained")
    # At runtime this typo would vanish into **kwargs: that is why only named parameters count.
    assert from_pretrained.var_keyword == "kwargs"
    with pytest.raises(ad.KeywordDrift, match=r"'load_in_4bitt' \(did you mean 'load_in_4bit'"):
        ad.assert_keywords_exist(from_pretrained, {"load_in_4bitt", "max_seq_length"})
    assert ad.missing_keywords(from_pretrained, {"load_in_4bitt", "max_seq_length"}) == [
        "load_in_4bitt"
    ]


def test_a_misspelling_is_caught_on_the_inspect_path():
    from trl import GRPOConfig

    with pytest.raises(ad.KeywordDrift, match=r"'num_generation' \(did you mean 'num_generations'"):
        ad.assert_keywords_exist(GRPOConfig, {"num_generation", "beta"})


def test_the_locator_on_a_small_source_tree(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        "from dataclasses import dataclass, field\n"
        "QUANTS = {'q4_k_m': 'x', 'q8_0': 'y'}\n"
        "class Front(Base):\n"
        "    @staticmethod\n"
        "    def load(model, *args, **kwargs):\n"
        "        return Base.load(model, *args, **kwargs)\n"
        "class Base:\n"
        "    @staticmethod\n"
        "    def load(model, r=16, *, seed=0, **kwargs):\n"
        "        if mode == 'bad':\n"
        "            raise ValueError(mode)\n"
        "        if mode.lower() in ('a', 'b'):\n"
        "            pass\n"
        "@dataclass\n"
        "class Cfg:\n"
        "    a: int = 1\n"
        "    _b: int = field(default=0, init=False)\n"
        "if X:\n"
        "    def twice(): pass\n"
        "else:\n"
        "    def twice(): pass\n"
        "with guard():\n"
        "    def guarded(): pass\n"
    )
    src = ad.Source(tmp_path)
    front, base = src.function("pkg/m.py", "Front.load"), src.function("pkg/m.py", "Base.load")
    assert front.is_staticmethod and front.named_parameters() == {"model"}
    assert front.forwarded_to() == ["Base.load"]
    assert base.named_parameters() == {"model", "r", "seed"}
    base.signature().bind(MODEL, 8, seed=1)
    with pytest.raises(TypeError):
        base.signature().bind(MODEL, 8, 1)  # seed is keyword-only
    assert base.refused_literals("mode") == {"bad"}
    assert base.compared_literals("mode") == {"bad", "a", "b"}
    assert src.class_fields("pkg/m.py", "Cfg") == {"a"}
    assert src.constant("pkg/m.py", "QUANTS") == {"q4_k_m": "x", "q8_0": "y"}
    assert src.function("pkg/m.py", "guarded").where == "pkg/m.py:23"
    with pytest.raises(LookupError, match="found 2"):
        src.function("pkg/m.py", "twice")
    with pytest.raises(LookupError, match="found 0"):
        src.function("pkg/m.py", "Front.missing")


def test_missing_sources_fail_with_the_make_target(tmp_path):
    with pytest.raises(FileNotFoundError, match="make wheels"):
        ad.wheel_path("unsloth", PINS["unsloth"], tmp_path)
    with pytest.raises(FileNotFoundError, match="make wheels"):
        ad.vllm_sources_path(PINS["vllm"], tmp_path)


def test_pins_are_read_from_requirements_gpu():
    assert {"unsloth", "unsloth-zoo", "vllm"} <= PINS.keys()


# --------------------------------------------------------------- trl, transformers, peft


@pytest.mark.parametrize("profile", ALL, ids=IDS)
def test_grpo_settings_are_grpoconfig_fields(profile, tmp_path):
    from trl import GRPOConfig

    settings = grpo_settings(profile, tmp_path)
    ad.assert_keywords_exist(GRPOConfig, settings, "trl.GRPOConfig")
    GRPOConfig(**settings)  # and its values pass GRPOConfig's own validation, on every profile


def test_grpo_loss_type_and_scale_rewards_are_values_trl_knows():
    """The values GRPOTrainer compares ``loss_type``/``scale_rewards`` with, read from the
    installed trl's source (GRPOConfig takes any string; the trainer decides)."""
    import trl

    installed = ad.Source(Path(trl.__file__).parent.parent)
    trainer = "trl/trainer/grpo_trainer.py"
    known = {n: installed.compared_literals(trainer, n) for n in ("loss_type", "scale_rewards")}
    for profile in ALL:
        assert profile.loss_type in known["loss_type"], (profile.name, known["loss_type"])
        assert profile.scale_rewards in known["scale_rewards"], (profile.name, known)


@pytest.mark.parametrize("profile", ALL, ids=IDS)
def test_sft_settings_are_sftconfig_fields(profile, tmp_path):
    from trl import SFTConfig

    settings = sft_settings(profile, tmp_path, steps=10)
    ad.assert_keywords_exist(SFTConfig, settings, "trl.SFTConfig")
    SFTConfig(**settings)


def test_lora_config_keywords_are_loraconfig_fields(course):
    """``models.lora_config`` builds the LoraConfig inline: its keywords are read from the
    call in our own source, and checked against peft's dataclass fields."""
    from peft import LoraConfig, TaskType

    (call,) = course.function("medreason_lib/models/kwargs.py", "lora_config").calls("LoraConfig")
    passed = {k.arg for k in call.keywords}
    assert None not in passed and not call.args, "lora_config should pass keywords only"
    fields = {f.name for f in dataclasses.fields(LoraConfig) if f.init}
    ad.assert_keywords_exist(fields, passed, "peft.LoraConfig")
    for profile in ALL:
        config = lora_config(profile)
        assert config.task_type == TaskType.CAUSAL_LM
        assert set(config.target_modules) == set(profile.lora_targets)


def test_hf_generate_kwargs_reach_generate_or_generation_config():
    """``model.generate(**kwargs)``: what ``generate`` does not name goes to
    ``generation_config.update(**kwargs)`` (transformers' ``_prepare_generation_config``), so
    the accepted names are generate's own plus GenerationConfig's attributes."""
    import inspect

    from transformers import GenerationConfig
    from transformers.generation.utils import GenerationMixin

    assert "generation_config.update(**kwargs)" in inspect.getsource(
        GenerationMixin._prepare_generation_config
    )
    accepted = ad.inspect_parameters(GenerationMixin.generate) | set(vars(GenerationConfig()))
    for profile in ALL:
        for settings in _generation_settings(profile):
            ad.assert_keywords_exist(accepted, hf_generate_kwargs(settings, 0), "model.generate")


# --------------------------------------------------------------------------- Unsloth: loading


def test_fastlanguagemodel_is_the_loader_class(unsloth):
    # unsloth/__init__.py also defines a FastLanguageModel stub, for Apple MLX only.
    assert unsloth.imported_from("unsloth/models/__init__.py", "FastLanguageModel") == [".loader"]
    # models.load_model calls FastLanguageModel.for_inference(model)
    unsloth.function(LOADER, "FastLanguageModel.for_inference").signature().bind(MODEL)


@pytest.mark.parametrize("profile", ALL, ids=IDS)
def test_unsloth_load_kwargs_exist_in_from_pretrained(unsloth, profile):
    from_pretrained = unsloth.function(LOADER, "FastLanguageModel.from_pretrained")
    kwargs = unsloth_load_kwargs(profile)
    ad.assert_keywords_exist(from_pretrained, kwargs)
    from_pretrained.signature().bind(**kwargs)


def test_get_peft_model_goes_to_fastllamamodel(unsloth):
    """``FastLanguageModel.get_peft_model(model, *args, **kwargs)`` names nothing itself: it
    hands everything to ``FastLlamaModel.get_peft_model`` (or, for text-diffusion models
    only, to FastDiffusionModel's). The keywords are checked against FastLlamaModel's."""
    front = unsloth.function(LOADER, "FastLanguageModel.get_peft_model")
    assert front.named_parameters() == {"model"} and front.var_keyword
    assert sorted(set(front.forwarded_to())) == [
        "FastDiffusionModel.get_peft_model",
        "FastLlamaModel.get_peft_model",
    ], "FastLanguageModel.get_peft_model now routes elsewhere: check where the keywords go"


@pytest.mark.parametrize("profile", ALL, ids=IDS)
def test_unsloth_peft_kwargs_exist_in_get_peft_model(unsloth, profile):
    real = unsloth.function(LLAMA, "FastLlamaModel.get_peft_model")
    kwargs = unsloth_peft_kwargs(profile)
    ad.assert_keywords_exist(real, kwargs)
    real.signature().bind(MODEL, **kwargs)
    assert kwargs["use_gradient_checkpointing"] in real.compared_literals(
        "use_gradient_checkpointing"
    )
    # A model loaded through FastModel (gpt-oss: the 20b profile) takes the "new model" route:
    # FastLlamaModel.get_peft_model passes the same keywords on to FastBaseModel.get_peft_model.
    (call,) = real.calls("FastBaseModel.get_peft_model")
    assert set(kwargs) <= {k.arg for k in call.keywords}
    ad.assert_keywords_exist(unsloth.function(VISION, "FastBaseModel.get_peft_model"), kwargs)


# --------------------------------------------------------------------------- vLLM


@pytest.mark.parametrize("profile", ALL, ids=IDS)
def test_sampling_kwargs_are_samplingparams_fields(vllm, profile):
    member = _vllm_member(vllm, "SamplingParams")
    # A msgspec.Struct with no __init__ of its own: the constructor takes exactly its fields.
    assert not vllm.class_defines(member, "SamplingParams", "__init__")
    fields = vllm.class_fields(member, "SamplingParams")
    ad.assert_keywords_exist(fields, _sampling_kwargs(profile), f"{member} SamplingParams")


@pytest.mark.parametrize("profile", ALL, ids=IDS)
def test_vllm_engine_kwargs_exist_in_llm_or_engineargs(vllm, profile):
    """``LLM(model, ..., **kwargs)`` names some engine settings and passes the rest to
    ``EngineArgs(**kwargs)`` (a dataclass): ``max_model_len`` is one of those."""
    member = _vllm_member(vllm, "LLM")
    init = vllm.function(member, "LLM.__init__")
    assert "EngineArgs" in init.forwarded_to()
    kwargs = vllm_engine_kwargs(profile, "runs/merged")
    rest = set(kwargs) - init.named_parameters()
    engine_args = _vllm_member(vllm, "EngineArgs")
    fields = vllm.class_fields(engine_args, "EngineArgs")
    ad.assert_keywords_exist(fields, rest, f"{engine_args} EngineArgs (via LLM's **kwargs)")
    assert "max_model_len" in rest  # the trace is exercised, not vacuous


def test_fast_generate_is_the_engines_generate(unsloth, vllm):
    """Unsloth sets ``model.fast_generate = model.vllm_engine.generate`` (a ``vllm.LLM``) when it
    loads with ``fast_inference=True``, so generation's keywords are ``LLM.generate``'s."""
    load = unsloth.function(LLAMA, "FastLlamaModel.from_pretrained")
    assert "model.vllm_engine.generate" in load.attribute_assignments("fast_generate")
    generate = vllm.function(_vllm_member(vllm, "LLM"), "LLM.generate")
    kwargs = vllm_generate_kwargs(object(), lora_request=object())
    ad.assert_keywords_exist(generate, kwargs)
    generate.signature().bind(MODEL, ["prompt text"], **kwargs)  # generate_fn(texts, **kwargs)


def test_load_lora_call_matches_unsloth_zoo(unsloth, zoo, course):
    """``model.load_lora`` is ``functools.partial(unsloth_zoo.vllm_utils.load_lora, model)``,
    attached by ``patch_peft_fast_inference``; our call passes the adapter folder only."""
    patch = unsloth.function(UTILS, "patch_peft_fast_inference")
    assert "functools.partial(load_lora, model)" in patch.attribute_assignments("load_lora")
    assert patch.imports()["load_lora"] == "unsloth_zoo.vllm_utils.load_lora"
    load_lora = zoo.function(ZOO_VLLM, "load_lora")
    ours = course.function("medreason_lib/evaluation/generation_vllm.py", "fast_generate_lora")
    (call,) = ours.calls("model.load_lora")
    ad.assert_keywords_exist(load_lora, {k.arg for k in call.keywords})
    load_lora.signature().bind(MODEL, *(["adapter"] * len(call.args)))


# --------------------------------------------------------------------------- Unsloth: export

# What medreason_lib.export calls on the trained Unsloth model, with the keywords its own builders
# make, for every value it offers (export.MERGE_METHODS, export.GGUF_QUANTIZATIONS). "merged_4bit"
# is not among them on purpose: this Unsloth refuses it and asks for "merged_4bit_forced"
# (test_plain_merged_4bit_is_refused_by_this_unsloth; export.unsloth_merged_kwargs refuses it too).
# The adapter itself is written by training (trainer.save_model), and pushes upload the exported
# folders with huggingface_hub, so save_lora and push_to_hub_* are not called.
EXPORT_CALLS = [
    *(
        ("save_pretrained_merged", ("runs/3b/merged", TOKENIZER), export.unsloth_merged_kwargs(m))
        for m in export.MERGE_METHODS
    ),
    *(
        ("save_pretrained_gguf", ("runs/3b/gguf", TOKENIZER), export.unsloth_gguf_kwargs(q))
        for q in export.GGUF_QUANTIZATIONS
    ),
]


def _saving_method(unsloth, method: str) -> str:
    """The function ``patch_saving_functions`` binds to ``model.<method>``, from its
    ``model.<method> = _bind_saving_method(<function>, model, "<method>")`` lines."""
    patch = unsloth.function(SAVE, "patch_saving_functions")
    found = {
        ast.unparse(node.args[0])
        for node in ast.walk(patch.node)
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) == "_bind_saving_method"
        and ast.literal_eval(node.args[2]) == method
    }
    assert len(found) == 1, f"model.{method} is bound to {sorted(found)}"
    return found.pop()


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    EXPORT_CALLS,
    ids=[f"{m}-{i}" for i, (m, *_) in enumerate(EXPORT_CALLS)],
)
def test_export_calls_match_unsloth(unsloth, zoo, method, args, kwargs):
    target = unsloth.function(SAVE, _saving_method(unsloth, method))
    ad.assert_keywords_exist(target, kwargs)
    bound = target.signature().bind(MODEL, *args, **kwargs)
    assert bound.arguments["tokenizer"] is TOKENIZER  # the tokenizer lands where it should


def _save_method_checks(unsloth, zoo):
    """(recognised, refused) ``save_method`` values of the merged save, as the pinned source
    compares them: the entry point, its writer, the adapter test, and unsloth_zoo's merge."""
    functions = [
        unsloth.function(SAVE, "unsloth_generic_save_pretrained_merged"),
        unsloth.function(SAVE, "unsloth_generic_push_to_hub_merged"),
        unsloth.function(SAVE, "unsloth_generic_save"),
        unsloth.function(SAVE, "_is_adapter_save_method"),
        zoo.function(ZOO_SAVING, "merge_and_overwrite_lora"),
    ]
    recognised = set().union(*(f.compared_literals("save_method") for f in functions))
    refused = set().union(*(f.refused_literals("save_method") for f in functions))
    return recognised, refused


def test_export_values_are_ones_unsloth_accepts(unsloth, zoo):
    assert _saving_method(unsloth, "save_pretrained_merged") == (
        "unsloth_generic_save_pretrained_merged"
    )
    assert _saving_method(unsloth, "push_to_hub_merged") == "unsloth_generic_push_to_hub_merged"
    for entry in ("unsloth_generic_save_pretrained_merged", "unsloth_generic_push_to_hub_merged"):
        assert unsloth.function(SAVE, entry).calls("unsloth_generic_save")
    recognised, refused = _save_method_checks(unsloth, zoo)
    quants = unsloth.constant(SAVE, "ALLOWED_QUANTS")
    assert unsloth.function(SAVE, "save_to_gguf").mentions("ALLOWED_QUANTS")  # its allow-list
    for method, _, kwargs in EXPORT_CALLS:
        if "save_method" in kwargs:
            value = kwargs["save_method"]
            assert value in recognised, f"{method}: save_method {value!r} unknown to Unsloth"
            assert value not in refused, f"{method}: save_method {value!r} refused by Unsloth"
        if "quantization_method" in kwargs:
            value = kwargs["quantization_method"]
            assert value in quants, f"{method}: {value!r} not in ALLOWED_QUANTS {sorted(quants)}"


def test_plain_merged_4bit_is_refused_by_this_unsloth(unsloth, zoo):
    """A fact of the pinned release the export module must respect: ``unsloth_generic_save``
    starts ``if save_method == "merged_4bit": raise RuntimeError(... use merged_4bit_forced)``.
    If this fails, a new pin accepts it again and EXPORT_CALLS may use it."""
    _, refused = _save_method_checks(unsloth, zoo)
    assert "merged_4bit" in refused


# ----------------------------------------------------------------- facts the GPU path relies on
# (tests/gpu_path/test_gpu_path.py tests the course's side of each with fakes)

DEVICE_TYPE, RL = "unsloth/device_type.py", "unsloth/models/rl.py"


def _lines(source, member: str) -> set[str]:
    return {line.strip() for line in source.read(member).splitlines()}


def test_unsloth_still_decides_bf16_by_compute_capability(unsloth):
    """What ``precision_flags`` copies: bf16 is compute capability major >= 8 of the current
    card (the weakest visible one under a distributed launch), the loader picks float16
    otherwise, and the RL trainer refuses bf16=True on a float16 model."""
    utils = _lines(unsloth, UTILS)
    assert "_bf16_cap = cuda_bf16_capability()" in utils
    assert "SUPPORTS_BFLOAT16 = _bf16_cap is not None and _bf16_cap[0] >= 8" in utils
    pick = unsloth.function(DEVICE_TYPE, "cuda_bf16_capability")
    assert pick.mentions("distributed_launch") and pick.calls("cuda_current_capability")
    assert unsloth.function(DEVICE_TYPE, "cuda_gate_capabilities").calls(
        "cuda_visible_capabilities"
    )
    assert "dtype = torch.float16 if not SUPPORTS_BFLOAT16 else torch.bfloat16" in _lines(
        unsloth, LLAMA
    )
    refusal = "Model is in float16 precision but you want to use bfloat16 precision"
    assert refusal in unsloth.read(RL)


def test_unsloth_zoo_reads_vllm_standby_at_import_and_at_load(zoo):
    """What ``models.prepare_runtime`` and ``memory.vllm_standby`` follow: unsloth_zoo drops
    PyTorch's expandable segments at import when UNSLOTH_VLLM_STANDBY is "1" (standby's
    allocator refuses them), and ``load_vllm`` turns standby on for any value but "0"."""
    init = zoo.read("unsloth_zoo/__init__.py")
    assert 'elif os.environ.get("UNSLOTH_VLLM_STANDBY", "0") == "1":' in init
    assert "expandable_segments" in init
    standby = 'unsloth_vllm_standby or (os.getenv("UNSLOTH_VLLM_STANDBY", "0") != "0")'
    assert any(standby in line for line in _lines(zoo, ZOO_VLLM))
    assert zoo.function(ZOO_VLLM, "load_vllm").mentions("unsloth_vllm_standby")


def test_the_vllm_engines_references_that_close_trainer_drops(unsloth, zoo):
    """``models._detach`` and ``close_trainer`` drop what these still hold: unsloth_zoo's
    ``delete_vllm`` deletes ``llm.llm_engine.model_executor`` only (not the engine core's);
    TRL 1.15 keeps the engine as ``trainer.vllm_generation.llm`` and the model as its
    ``model``; Unsloth puts ``model.vllm_engine`` there and keeps ``model.load_lora`` too."""
    import inspect

    from trl.generation.vllm_generation import VLLMGeneration
    from trl.trainer.grpo_trainer import GRPOTrainer

    delete = zoo.function(ZOO_VLLM, "delete_vllm")
    deleted = [ast.unparse(t) for n in ast.walk(delete.node) if isinstance(n, ast.Delete)
               for t in n.targets]  # fmt: skip
    assert "llm.llm_engine.model_executor" in deleted and not delete.mentions("engine_core")
    assert "self.model = model" in inspect.getsource(VLLMGeneration.__init__)
    assert "self.llm = LLM(" in inspect.getsource(VLLMGeneration._init_vllm)
    assert "self.vllm_generation = VLLMGeneration(" in inspect.getsource(GRPOTrainer.__init__)
    patch = unsloth.read("unsloth/models/rl_replacements.py")
    assert "self.llm = model.vllm_engine" in patch
    assert "self._unsloth_load_lora = model.load_lora" in patch
