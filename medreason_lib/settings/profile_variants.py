"""Named variants of a profile: the GRPO objectives the course compares and the SFT settings
of published models, each as the ``Profile`` fields it sets (``Profile.with_loss_variant``,
``Profile.with_sft_setting``)."""

from __future__ import annotations

# The GRPO objectives the course compares, as the GRPOConfig fields each one sets:
# - grpo: the original per-sequence mean (DeepSeekMath), symmetric clipping.
# - dapo: token-level normalisation, clip-higher (epsilon_high 0.28) and overlong masking
#   (truncated completions get no loss), as the DAPO paper recommends.
# - dr_grpo: Dr. GRPO, a constant normaliser and no division by the group's std.
# - gspo: GSPO, one importance ratio per sequence, with the paper's narrow clipping range.
_VARIANT_DEFAULTS = {"scale_rewards": "group", "epsilon": 0.2, "epsilon_high": 0.2}
_VARIANT_DEFAULTS |= {"importance_sampling_level": "token", "mask_truncated_completions": False}
LOSS_VARIANTS: dict[str, dict] = {
    "grpo": {**_VARIANT_DEFAULTS, "loss_type": "grpo"},
    "dapo": {
        **_VARIANT_DEFAULTS,
        "loss_type": "dapo",
        "epsilon_high": 0.28,
        "mask_truncated_completions": True,
    },
    "dr_grpo": {**_VARIANT_DEFAULTS, "loss_type": "dr_grpo", "scale_rewards": "none"},
    "gspo": {
        **_VARIANT_DEFAULTS,
        "loss_type": "grpo",
        "importance_sampling_level": "sequence",
        "epsilon": 3e-4,
        "epsilon_high": 4e-4,
    },
}


# Named SFT settings of published models, as the Profile fields each one sets:
# - q3x1: Clinical Reasoning Hub's Diagnostic-Reasoning-Q3X1 (Qwen3-8B), QLoRA: the base in
#   4-bit, LoRA rank 128 and alpha 256 (its published settings, as issue 13 cites them), on
#   the profile's LoRA targets (all attention and MLP projections).
SFT_SETTINGS: dict[str, dict] = {
    "q3x1": {"load_in_4bit": True, "lora_rank": 128, "lora_alpha": 256},
}
