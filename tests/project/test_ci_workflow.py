"""The public CI workflow runs the course's one entry point with the CPU build of torch."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def test_workflow_runs_ci_entry_point_on_ubuntu_with_cpu_torch_and_pip_cache():
    flow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = flow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu")
    assert job["env"]["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    steps = job["steps"]
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["cache"] == "pip"
    runs = [s["run"] for s in steps if "run" in s]
    assert runs == ["bash .ci/run"], runs
    assert job["timeout-minutes"] <= 90  # the course's CI limit


def test_ci_entry_point_runs_the_readme_test_command_and_make_uses_the_index():
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)
    assert "`make test`" in (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH_INDEX   ?=" in makefile  # taken from the workflow's environment
    assert "--index-url $(TORCH_INDEX)" in makefile
