"""Where the course lives: the one place its home URL is written.

The README's Colab links and every notebook's setup cell hold copies of it: a setup cell runs
on a fresh Colab runtime *before* the course exists there, so it cannot import this module,
and a link in a README cannot either. ``python -m tools.set_home URL [--published]`` rewrites
this module and every copy; tests/settings/test_home.py checks that they agree.

``PUBLISHED`` says whether ``COURSE_HOME`` is a public repository yet. While it is False, the
README (above its Colab links) and every setup cell say so, since a learner who clicks a link
or runs the clone would otherwise meet an error with no explanation.
"""

from __future__ import annotations

COURSE_HOME = "https://github.com/medreason/medreason-course"
BRANCH = "main"
PUBLISHED = False

CLONE_DIR = "/content/medreason-course"  # where a Colab setup cell clones the course
README_NOTE = "> **Not yet published.**"  # the README's note begins so (tools.set_home)
CELL_NOTE = "# NOT YET PUBLISHED:"  # and a setup cell's note


def github_path(home: str = COURSE_HOME) -> str:
    """``owner/name`` of a GitHub home URL."""
    prefix = "https://github.com/"
    if not home.startswith(prefix) or home.rstrip("/").count("/") != 4:
        raise ValueError(f"the course's home must be https://github.com/OWNER/NAME, not {home!r}")
    return home.removeprefix(prefix).rstrip("/")


def colab_url(notebook: str, home: str = COURSE_HOME, branch: str = BRANCH) -> str:
    """The "open in Colab" link of a notebook file name (``04_grpo_qwen_3b.ipynb``)."""
    return (
        f"https://colab.research.google.com/github/{github_path(home)}/blob/{branch}/"
        f"notebooks/{notebook}"
    )


def clone_line(home: str = COURSE_HOME) -> str:
    """The setup cell's clone command (a Colab shell line)."""
    return f"!test -d {CLONE_DIR} || git clone --depth 1 {home} {CLONE_DIR}"


def cell_note(home: str = COURSE_HOME) -> list[str]:
    """The setup cell's comment while the home is not published (two lines; the clone line
    under it names the home)."""
    del home  # the clone line below names it
    return [
        f"{CELL_NOTE} the course's home is not a public repository yet, so on Colab",
        "# the clone below fails until it is (README, 'Open in Colab'); run locally: make lab",
    ]


def readme_note(home: str = COURSE_HOME) -> str:
    """The README's note above its Colab links while the home is not published."""
    return (
        f"{README_NOTE} The course's home, `{home}`, is not a public repository yet: the\n"
        "> Colab links below and every notebook's setup cell clone it, and fail until it is\n"
        "> published. Meanwhile open the notebooks on your own machine (`make lab`, above).\n"
        "> Maintainers: `python -m tools.set_home URL --published` points every link and setup\n"
        "> cell at the real home and removes these notes."
    )
