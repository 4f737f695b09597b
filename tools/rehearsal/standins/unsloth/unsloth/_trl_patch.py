"""What ``import unsloth`` does to TRL, as far as the course depends on it.

Unsloth replaces TRL's trainers and configs with its own on import (so the course must import
it first: contract ``import-order``). Here the replacements:

- configs (``GRPOConfig``, ``SFTConfig``, ``DPOConfig``): record what the course asked of the
  GPU (``bf16``, ``fp16``, ``use_cpu``, ``optim``) in ``_rehearsal_request``, then run the
  real TRL config on the CPU in float32 with torch's AdamW;
- trainers (``GRPOTrainer``, ``SFTTrainer``, ``DPOTrainer``): check the recorded precision
  against the model's dtype (contract ``precision-mismatch``), book the training memory the
  planner gives for these settings, check ``max_completion_length`` against the engine of a
  ``fast_inference`` model (contract ``vllm-max-model-len``), then train with real TRL.

``MEDREASON_REHEARSAL_INTERRUPT="<notebook>:<step>"`` makes the first GRPO training of that
notebook raise ``KeyboardInterrupt`` once that step is done, as the next step begins (a
learner pressing stop while completions are being generated).
"""

from __future__ import annotations

import dataclasses
import os

import _medreason_rehearsal as sim
import torch

UnslothTrainer = None
UnslothTrainingArguments = None


def _config(base):
    class Config(base):
        def __post_init__(self):
            self._rehearsal_request = {
                "bf16": bool(self.bf16), "fp16": bool(self.fp16),
                "use_cpu": bool(self.use_cpu), "optim": str(self.optim),
            }  # fmt: skip
            self.bf16, self.fp16, self.use_cpu = False, False, True
            if "8bit" in str(self.optim):
                self.optim = "adamw_torch"
            super().__post_init__()

    Config.__name__ = Config.__qualname__ = "Unsloth" + base.__name__
    globals()[Config.__name__] = Config  # picklable by name, as datasets' hashing needs
    return Config


def _model_dtype(model):
    for obj in (model, getattr(model, "get_base_model", lambda: None)()):
        if obj is not None and "_rehearsal_dtype" in vars(obj):
            return vars(obj)["_rehearsal_dtype"], vars(obj).get("_rehearsal_forced_float32")
    return None, False


def _check_precision(model, args, trainer: str) -> None:
    """Contract precision-mismatch, with Unsloth's own message."""
    request = getattr(args, "_rehearsal_request", None)
    dtype, forced = _model_dtype(model)
    if request is None or dtype is None or forced:
        return
    if dtype == torch.float16 and request["bf16"]:
        sim.violation("precision-mismatch", f"{trainer}: bf16=True on a float16 model")
        raise TypeError(
            "Unsloth: Model is in float16 precision but you want to use bfloat16 precision. "
            "Set fp16 to `True` and bf16 to `False`"
        )
    if dtype == torch.bfloat16 and request["fp16"]:
        sim.violation("precision-mismatch", f"{trainer}: fp16=True on a bfloat16 model")
        raise TypeError(
            "Unsloth: Model is in bfloat16 precision but you want to use float16 precision. "
            "Set fp16 to `False` and bf16 to `True`"
        )
    if request["use_cpu"]:
        sim.violation("gpu-unused", f"{trainer}: use_cpu=True on a GPU runtime")


def _book_training(model, args, method: str) -> None:
    """Book what training adds to the loaded weights: LoRA, optimizer, activations."""
    from ._loader import GB, _plan

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    family = vars(base).get("_rehearsal_family")
    if family is None:
        return
    settings = {"per_device_train_batch_size": args.per_device_train_batch_size}
    if method == "grpo":
        settings |= {"num_generations": args.num_generations,
                     "max_completion_length": args.max_completion_length,
                     "use_vllm": getattr(model, "vllm_engine", None) is not None}  # fmt: skip
    plan = _plan(family, method, **settings)
    extra = sum(v for k, v in plan.breakdown.items() if k not in ("weights", "kv_cache"))
    sim.LEDGER.reserve(base, int(extra * GB), f"{method} training state")


def _check_engine(model, args) -> None:
    engine = getattr(model, "vllm_engine", None)
    if engine is None:
        return
    limit = engine.llm_engine.model_config.max_model_len
    if args.max_completion_length >= limit:  # contract vllm-max-model-len
        sim.violation("vllm-max-model-len",
                      f"max_completion_length {args.max_completion_length} >= {limit}")  # fmt: skip
        raise ValueError(
            f"max_completion_length {args.max_completion_length} leaves no room for a prompt "
            f"in the engine's max_model_len {limit}"
        )


def _interrupt_callback():
    from transformers import TrainerCallback

    wanted = os.environ.get("MEDREASON_REHEARSAL_INTERRUPT", "")
    notebook, _, step = wanted.partition(":")
    if not wanted or notebook != os.environ.get("MEDREASON_NOTEBOOK"):
        return None
    if any(e[1] == "interrupt" for e in sim.read_state()["events"] if e[0] == notebook):
        return None

    class Interrupt(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step >= int(step):
                sim.event("interrupt", f"KeyboardInterrupt after step {state.global_step}")
                raise KeyboardInterrupt

    return Interrupt()


def _trainer(base, method: str):
    class Trainer(base):
        def __init__(self, *args, **kwargs):
            model = kwargs.get("model", args[0] if args else None)
            config = kwargs.get("args")
            if config is None:
                config = next((a for a in args if hasattr(a, "_rehearsal_request")), None)
            _check_precision(model, config, base.__name__)
            if method == "grpo":
                _check_engine(model, config)
            if config is not None and not isinstance(model, str):
                _book_training(model, config, method)
            super().__init__(*args, **kwargs)
            engine = getattr(model, "vllm_engine", None)
            if method == "grpo" and engine is not None:  # Unsloth hands TRL the model's engine
                import types

                self.llm = engine
                self.vllm_generation = types.SimpleNamespace(llm=engine, model=model)
            if method == "grpo" and (callback := _interrupt_callback()) is not None:
                self.add_callback(callback)

    Trainer.__name__ = Trainer.__qualname__ = "Unsloth" + base.__name__
    globals()[Trainer.__name__] = Trainer
    return Trainer


def patch_trl() -> None:
    global UnslothTrainer, UnslothTrainingArguments
    import trl

    pairs = {"GRPO": "grpo", "SFT": "qlora", "DPO": "qlora"}
    for name, method in pairs.items():
        setattr(trl, f"{name}Config", _config(getattr(trl, f"{name}Config")))
        setattr(trl, f"{name}Trainer", _trainer(getattr(trl, f"{name}Trainer"), method))

    @dataclasses.dataclass
    class _TrainingArguments(trl.SFTConfig):
        embedding_learning_rate: float | None = None

    _TrainingArguments.__name__ = _TrainingArguments.__qualname__ = "UnslothTrainingArguments"
    UnslothTrainingArguments = _TrainingArguments

    class _Trainer(trl.SFTTrainer):
        """Unsloth's trainer for continued pretraining: the embeddings at their own rate."""

        def create_optimizer(self, *args, **kwargs):
            rate = getattr(self.args, "embedding_learning_rate", None)
            if rate is None or self.optimizer is not None:
                return super().create_optimizer(*args, **kwargs)
            embed = [p for n, p in self.model.named_parameters()
                     if p.requires_grad and ("modules_to_save" in n)]  # fmt: skip
            rest = [p for n, p in self.model.named_parameters()
                    if p.requires_grad and "modules_to_save" not in n]  # fmt: skip
            groups = [{"params": rest, "lr": self.args.learning_rate}]
            groups.append({"params": embed, "lr": rate})
            self.optimizer = torch.optim.AdamW(groups, weight_decay=self.args.weight_decay)
            return self.optimizer

    _Trainer.__name__ = _Trainer.__qualname__ = "UnslothTrainer"
    UnslothTrainer = _Trainer
