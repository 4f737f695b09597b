"""Point the course at its home: ``python -m tools.set_home URL [--published]``.

Rewrites the one setting (``medreason_lib/settings/home.py``: ``COURSE_HOME``, ``PUBLISHED``)
and every copy of it that cannot read the setting: the README's Colab links, every notebook's
setup cell (its clone command), and any other mention of the old home in README.md and docs/.
While the home is not published, the README (above its Colab links) and each setup cell carry a
note that says so; ``--published`` removes the notes, and leaving it out puts them back. Run it
with the current URL to restore notes or links edited by hand. tests/settings/test_home.py
checks that the files agree with the setting."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medreason_lib.settings import home  # noqa: E402  (the helpers; the values are read from files)

SETTING = Path("medreason_lib/settings/home.py")
OPEN_IN_COLAB = "## Open in Colab\n\n"


def current(root: Path) -> tuple[str, bool]:
    """``(COURSE_HOME, PUBLISHED)`` as written in ``root``'s setting."""
    text = (root / SETTING).read_text()
    url = re.search(r'^COURSE_HOME = "([^"]+)"', text, re.M).group(1)
    published = re.search(r"^PUBLISHED = (True|False)", text, re.M).group(1) == "True"
    return url, published


def _setting(text: str, url: str, published: bool) -> str:
    text = re.sub(r'^COURSE_HOME = "[^"]+"', f'COURSE_HOME = "{url}"', text, flags=re.M)
    return re.sub(r"^PUBLISHED = (True|False)", f"PUBLISHED = {published}", text, flags=re.M)


def _readme(text: str, old: str, url: str, published: bool) -> str:
    text = text.replace(home.github_path(old), home.github_path(url)).replace(old, url)
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith(home.README_NOTE)), None)
    if start is not None:  # the old note: its quoted lines and the blank line after them
        end = start
        while end < len(lines) and lines[end].startswith(">"):
            end += 1
        del lines[start : end + (end < len(lines) and not lines[end].strip())]
        text = "\n".join(lines)
    if not published:
        if OPEN_IN_COLAB not in text:
            raise SystemExit(f"README.md has no {OPEN_IN_COLAB.strip()!r} section for the note")
        text = text.replace(OPEN_IN_COLAB, OPEN_IN_COLAB + home.readme_note(url) + "\n\n", 1)
    return text


def _setup_cell(lines: list[str], url: str, published: bool) -> list[str]:
    """A setup cell's source lines with the clone command and the note for ``url``."""
    out = []
    for line in lines:
        if line.lstrip().startswith(home.CELL_NOTE) or line.startswith("# the clone below fails"):
            continue  # the old note, put back below if the home is still unpublished
        if "git clone --depth 1" in line and home.CLONE_DIR in line:
            indent = line[: len(line) - len(line.lstrip())]
            line = indent + home.clone_line(url) + ("\n" if line.endswith("\n") else "")
        if not published and line.startswith('if "google.colab" in sys.modules:'):
            out += [note + "\n" for note in home.cell_note(url)]
        out.append(line)
    return out


def rewrite(root: Path, url: str, published: bool) -> list[Path]:
    """Rewrite ``root``'s setting and its copies for ``url``; the files that changed."""
    home.github_path(url)  # refuses anything but https://github.com/OWNER/NAME
    old, _ = current(root)
    changed = []

    def write(path: Path, text: str) -> None:
        if path.read_text() != text:
            path.write_text(text)
            changed.append(path)

    setting = root / SETTING
    write(setting, _setting(setting.read_text(), url, published))
    readme = root / "README.md"
    write(readme, _readme(readme.read_text(), old, url, published))
    for doc in sorted((root / "docs").glob("*.md")):
        text = doc.read_text()
        write(doc, text.replace(home.github_path(old), home.github_path(url)).replace(old, url))
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code" and home.CLONE_DIR in "".join(cell["source"]):
                cell["source"] = _setup_cell(cell["source"], url, published)
        write(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="https://github.com/OWNER/NAME")
    parser.add_argument("--published", action="store_true", help="the repository is public")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    changed = rewrite(args.root, args.url, args.published)
    state = "published" if args.published else "not yet published (notes kept)"
    print(f"course home {args.url}, {state}; {len(changed)} files changed")
    for path in changed:
        print(f"  {path.relative_to(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
