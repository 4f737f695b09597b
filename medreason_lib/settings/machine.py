"""What this machine has, for choosing a profile: the first NVIDIA GPU's memory, and the
built-in profile a machine with that much memory runs by default. Standard library only,
like ``profiles``, which re-exports both."""

from __future__ import annotations

import shutil
import subprocess


def gpu_memory_gb() -> float | None:
    """Memory of the first NVIDIA GPU in GB, or None when there is none.

    Asks ``nvidia-smi`` rather than torch so that choosing a profile never initialises CUDA.
    """
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        return float(out.strip().splitlines()[0]) / 1024
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def profile_for_gpu(gpu_gb: float | None) -> str:
    """The default profile for a machine: no GPU -> tiny; under 40 GB -> 3b; else 8b.

    ``20b`` is never picked automatically: it is a lesson of its own (notebook 07).
    """
    if gpu_gb is None:
        return "tiny"
    return "3b" if gpu_gb < 40 else "8b"
