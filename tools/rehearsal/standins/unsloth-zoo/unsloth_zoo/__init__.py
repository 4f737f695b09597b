"""Rehearsal stand-in for unsloth_zoo 2026.10.9 (``tools/rehearsal``): the names the course
imports from it."""

__version__ = "2026.10.9"
