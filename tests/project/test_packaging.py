"""The installed package is the whole library: a wheel built from this checkout holds every
module and data file under ``medreason_lib/``, and setuptools finds every folder by itself
(a folder left out of a package list is shipped today with a warning that it "would be
ignored", and left out by a later setuptools)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_ships_every_module_and_data_file(tmp_path):
    """Built from a copy of the tracked files, as a fresh clone holds them (the checkout's own
    ``build/`` and untracked files play no part, and nothing is written into it)."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    source = tmp_path / "source"
    for name in tracked:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "is absent from the `packages` configuration" not in done.stderr, done.stderr[:400]
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    package = [f for f in tracked if f.startswith("medreason_lib/")]
    assert package, "git lists no file under medreason_lib/"
    missing = [f for f in package if f not in shipped]
    assert not missing, f"pyproject.toml's packages leave out: {missing}"
