"""A CPU fallback for the one TRL kernel that has none (trl 1.15).

Since huggingface/trl#7077, GRPOTrainer computes per-token log-probabilities through
``trl.trainer.utils._ChunkedLogProbFunction``, a Triton kernel. The CPU build of torch ships
no Triton, so trl sets that name to ``None`` and every GRPO step on a CPU fails with
``AttributeError: 'NoneType' object has no attribute 'apply'``; no GRPOConfig option turns the
fused LM head off. ``install_cpu_logprob_fallback`` puts a plain-torch function with the same
call signature in its place, only when the kernel is missing. On a GPU nothing changes.

The fallback materialises the ``[tokens, vocab]`` logits, which is what the kernel exists to
avoid: fine for the tiny model (vocabulary ~3k), never meant for a real one.
"""

from __future__ import annotations

import torch


class TorchChunkedLogProb:
    """Same ``apply`` signature and outputs as trl's ``ChunkedLogProbFunction``, in torch."""

    @staticmethod
    def apply(
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        temperature: float,
        chunk_size: int,
        final_logit_softcapping: float | None = None,
        logit_scale: float = 1.0,
        outputs: tuple[str, ...] = ("log_probs",),
    ):
        logits = hidden @ weight.to(hidden.dtype).t()
        if bias is not None:
            logits = logits + bias.to(logits.dtype)
        logits = logits.float() * logit_scale
        if final_logit_softcapping is not None:
            logits = final_logit_softcapping * torch.tanh(logits / final_logit_softcapping)
        logits = logits / temperature
        log_z = torch.logsumexp(logits, dim=-1)
        target_logit = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        log_probs = target_logit - log_z
        entropy = log_sum_sq = mean_logits = is_top1 = None
        if "entropy" in outputs:
            probs = torch.softmax(logits, dim=-1)
            entropy = log_z - (probs * logits).sum(-1)
        with torch.no_grad():
            if "log_sum_sq_probs" in outputs:
                log_sum_sq = torch.logsumexp(2 * logits, dim=-1) - 2 * log_z
            if "mean_logits" in outputs:
                mean_logits = logits.mean(-1)
            if "is_top1" in outputs:
                is_top1 = logits.argmax(-1) == targets
        return log_probs, entropy, log_sum_sq, mean_logits, is_top1


def install_cpu_logprob_fallback() -> bool:
    """Install ``TorchChunkedLogProb`` where trl's Triton kernel is missing.

    Returns True when it was installed (or already was), False when trl has its kernel.
    """
    import trl.trainer.utils as trl_utils

    current = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if current is None or current is TorchChunkedLogProb:
        trl_utils._ChunkedLogProbFunction = TorchChunkedLogProb
        return True
    return False
