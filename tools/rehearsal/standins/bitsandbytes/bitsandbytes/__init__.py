"""Rehearsal stand-in for bitsandbytes 0.50.2: importable, with nothing the CPU run calls.
(The Unsloth stand-in swaps its 8-bit optimiser for torch's AdamW in the real CPU run, after
recording that the course asked for it.)"""

__version__ = "0.50.2"

from . import nn, optim  # noqa: E402, F401
