"""Rehearsal stand-in for vllm-bnb-plugin 0.0.3: present or absent is what counts
(contract ``4bit-vllm-needs-plugin``)."""

__version__ = "0.0.3"
