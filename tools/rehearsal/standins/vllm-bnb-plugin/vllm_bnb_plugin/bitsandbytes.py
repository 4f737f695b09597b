"""The module unsloth_zoo imports on vLLM >= 0.28 for 4-bit weights."""
