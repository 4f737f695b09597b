"""How `make test` spreads its work over two processes (pytest-xdist, ``-n 2 --dist loadgroup``).

Unit tests go to whichever process is free, a test module at a time (so a module's shared
fixtures are built once). The notebooks cannot: a
notebook may read the runs of an earlier one (05 evaluates 04's run, 08 exports it, 11
starts DPO from it), so they run in two fixed chains, each in order in one process:

- ``notebooks-main``: 00 to 05, 08 and 11 (the 3b path and what reads notebook 04's run);
- ``notebooks-scale``: 06, 07, 09 and 10 (each trains what it needs in its own run folder).

The chains are collected first and ``--no-loadscope-reorder`` keeps that order, so that the two
longest pieces of work start at once and the unit tests fill the gaps. Without xdist (plain
``pytest``) the markers do nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
# notebooks that read no other notebook's runs, away from the main chain
INDEPENDENT = {"06", "07", "09", "10"}


def notebook_chain(path: Path) -> str | None:
    """The xdist group of a course notebook, or None for anything else."""
    if path.suffix != ".ipynb" or path.parent != NOTEBOOKS:
        return None
    return "notebooks-scale" if path.name[:2] in INDEPENDENT else "notebooks-main"


def pytest_collection_modifyitems(config, items):
    chained, rest = [], []
    for item in items:
        chain = notebook_chain(Path(str(item.path)))
        if chain is None:
            item.add_marker(pytest.mark.xdist_group(f"module-{Path(str(item.path)).name}"))
            rest.append(item)
        else:
            item.add_marker(pytest.mark.xdist_group(chain))
            chained.append(item)
    chained.sort(key=lambda item: Path(str(item.path)).name)
    items[:] = chained + rest
