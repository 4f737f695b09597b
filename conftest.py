"""How `make test` spreads its work over two processes (pytest-xdist, ``-n 2``).

Unit tests go to whichever process is free, a test module at a time (so a module's shared
fixtures are built once). The notebooks cannot: a notebook may read the runs of an earlier one
(05 evaluates 04's run, 08 exports it, 11 starts DPO from it), so they run in two fixed
chains, each in order in one process:

- ``notebooks-main``: 00 to 05, 08 and 11 (the 3b path and what reads notebook 04's run);
- ``notebooks-scale``: 06, 07, 09 and 10 (each trains what it needs in its own run folder).

The chains are collected first and scheduled first, so that the two longest pieces of work
start at once and the unit tests fill the gaps. The scheduler is xdist's "load scope" one with
these scopes (``pytest_xdist_make_scheduler``, xdist's own extension hook). Its ``xdist_group``
markers are not used: xdist 3.8 marks a group by rewriting ``item._nodeid``, which pytest 9
no longer reads, so ``--dist loadgroup`` silently schedules test by test. Without xdist (plain
``pytest``) nothing here changes what runs.
"""

from __future__ import annotations

import pytest

# notebooks that read no other notebook's runs, away from the main chain
INDEPENDENT = {"06", "07", "09", "10"}


def scope_of(nodeid: str) -> str:
    """The unit of scheduling of a test: its notebook chain, or its module."""
    path = nodeid.split("::", 1)[0]
    name = path.rsplit("/", 1)[-1]
    if path.startswith("notebooks/") and name.endswith(".ipynb"):
        return "notebooks-scale" if name[:2] in INDEPENDENT else "notebooks-main"
    return path


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Notebooks first, in name order; then everything else as collected."""
    chained = [i for i in items if scope_of(i.nodeid).startswith("notebooks-")]
    chained.sort(key=lambda item: item.nodeid)
    rest = [i for i in items if not scope_of(i.nodeid).startswith("notebooks-")]
    items[:] = chained + rest


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class CourseScheduling(LoadScopeScheduling):
        """Load-scope scheduling with the course's scopes, in collection order."""

        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    config.option.loadscopereorder = False  # keep the chains at the head of the queue
    return CourseScheduling(config, log)
