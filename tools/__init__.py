"""Test and maintenance tooling of the course repository (not part of ``medreason_lib``).

- ``api_drift``: reads the pinned GPU packages' sources with ``ast`` to check every keyword
  the course passes (``tests/gpu_path/test_api_drift.py``,
  ``tests/runtime/test_gpu_dependencies.py``);
- ``wheel_fetch``: fetches the few vLLM files those tests read (``make wheels``);
- ``slowest_tests.sh``: the slowest tests of a run (``make test-durations``).
"""
