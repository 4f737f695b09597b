"""The library's shape: part folders in layers, no import cycles, short modules and cells.

``medreason_lib`` is a folder per part (``settings/``, ``scoring/``, ``data/``, ...) and the
command line at its root. Its import graph is read with ``ast`` (nothing is imported): every
``import``/``from ... import`` of a package module counts, relative or absolute, at module
level, inside functions and under ``if TYPE_CHECKING``. A module is named by its path in the
package (``data.traces``; a folder's ``__init__.py`` is the folder's name, ``training``).

The layers are the folders, in the order of the table in README.md's "The library" section
(row 1 is the bottom); the modules at the package root are named in its top row. The graph
must have no cycle, and no module may import one of a folder above its own. Every folder and
root module must be in the table exactly once, and the table must name nothing that is not
there, so a new part cannot slip past the check. Only ``models`` (``models/__init__.py``) may
import the GPU stack, and only inside functions (``import unsloth`` raises without a GPU).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "medreason_lib"
README = ROOT / "README.md"
MAX_MODULE_LINES = 450
MAX_CELL_LINES = 40
GPU_PACKAGES = {"unsloth", "unsloth_zoo", "vllm"}
GPU_MODULE = "models"
DATA_FOLDERS = {"chat_templates", "lm_eval_tasks"}  # package data (lm-eval's own configs)


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``data/traces.py`` -> ``data.traces``; ``training/__init__.py`` -> ``training``."""
    parts = list(path.relative_to(package).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by name; the package's own ``__init__`` and the data
    folders are not modules of the graph."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.parts[0] in DATA_FOLDERS or "__pycache__" in rel.parts or rel == Path("__init__.py"):
            continue
        found[module_name(path, package)] = path
    return found


def part_of(module: str) -> str:
    """The folder a module belongs to (``data.traces`` -> ``data``), or the root module."""
    return module.split(".")[0]


class _Imports(ast.NodeVisitor):
    """Collects ``(module, names, level, inside a function, node)`` for every import."""

    def __init__(self) -> None:
        self.found: list[tuple[str, tuple[str, ...], int, bool, ast.AST]] = []
        self._depth = 0

    def _function(self, node) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, (), 0, self._depth > 0, node))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        names = tuple(alias.name for alias in node.names)
        self.found.append((node.module or "", names, node.level, self._depth > 0, node))

    def visit_Call(self, node: ast.Call) -> None:  # importlib.import_module("medreason_lib.x")
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            target = str(node.args[0].value)
            level = len(target) - len(target.lstrip("."))
            self.found.append((target.lstrip("."), (), level, self._depth > 0, node))
        self.generic_visit(node)


def imports_of(path: Path) -> list[tuple[str, tuple[str, ...], int, bool, ast.AST]]:
    visitor = _Imports()
    visitor.visit(ast.parse(path.read_text(), filename=str(path)))
    return visitor.found


def _resolve(dotted: str, names: tuple[str, ...], known: set[str]) -> set[str]:
    """The package modules ``from <dotted> import <names>`` (``dotted`` relative to the
    package) reaches: ``dotted.name`` where that is a module, else the longest prefix of
    ``dotted`` that is one."""
    out = {f"{dotted}.{n}".strip(".") for n in names} & known
    if out:
        return out
    parts = dotted.split(".") if dotted else []
    while parts:
        if ".".join(parts) in known:
            return {".".join(parts)}
        parts.pop()
    return set()


def package_imports(path: Path, known: set[str], package: Path = PACKAGE) -> set[str]:
    """The package modules ``path`` imports (relative or absolute, anywhere in the file)."""
    rel = path.relative_to(package).parts
    here = list(rel[:-1])  # the package ``path`` is in, as parts below medreason_lib
    out = set()
    for dotted, names, level, _, _ in imports_of(path):
        if level:
            base = here[: len(here) - (level - 1)] if level > 1 else here
            target = ".".join([*base, *([dotted] if dotted else [])])
        elif dotted == package.name or dotted.startswith(package.name + "."):
            target = dotted[len(package.name) + 1 :]
        else:
            continue
        out |= _resolve(target, names, known)
    return out


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    found = modules(package)
    return {
        name: package_imports(path, set(found), package) - {name} for name, path in found.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def layer_table(readme: str) -> list[tuple[str, list[str]]]:
    """The rows of README's folder map, bottom layer first: ``(layer, [folders])``.

    The table is the first one under "## The library" whose header starts with
    ``| layer | folders |``; a row's folders (or root modules) are the backticked names of its
    second column, a trailing ``/`` dropped.
    """
    section = readme.split("\n## The library", 1)
    if len(section) != 2:
        raise ValueError("README.md has no '## The library' section")
    body = section[1].split("\n## ", 1)[0]
    lines = body.splitlines()
    header = next(
        (i for i, line in enumerate(lines) if re.match(r"\|\s*layer\s*\|\s*folders\s*\|", line)),
        None,
    )
    if header is None:
        raise ValueError("README.md's library section has no '| layer | folders |' table")
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((cells[0], re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)/?`", cells[1])))
    return rows


def layers(readme: str) -> dict[str, int]:
    """Each folder's (and root module's) layer number (1 = bottom); a name listed twice is
    an error."""
    out: dict[str, int] = {}
    for number, (layer, names) in enumerate(layer_table(readme), start=1):
        if not names:
            raise ValueError(f"README.md layer table: row {layer!r} lists no folders")
        for name in names:
            if name in out:
                raise ValueError(f"README.md layer table: {name!r} is listed twice")
            out[name] = number
    return out


def upward_imports(graph: dict[str, set[str]], layer: dict[str, int]) -> list[str]:
    """``a imports b`` for every import into a folder above the importer's."""
    out = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            la, lb = layer.get(part_of(a)), layer.get(part_of(b))
            if la is not None and lb is not None and lb > la:
                out.append(f"{a} (layer {la}, {part_of(a)}) imports {b} (layer {lb}, {part_of(b)})")
    return out


# --------------------------------------------------------------------------- the checks


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_folder_is_in_the_readme_layer_table_once():
    layer = layers(README.read_text())
    found = {part_of(m) for m in modules()}
    missing = sorted(found - set(layer))
    stale = sorted(set(layer) - found)
    assert not missing, f"folders or root modules missing from README.md's layer table: {missing}"
    assert not stale, f"README.md's layer table names folders that do not exist: {stale}"


def test_the_parts_are_folders():
    """Only the command line sits at the package root; every other module is in a part's
    folder, and each part folder is a package with a docstring saying what it holds."""
    root = sorted(m for m in modules() if "." not in m and not (PACKAGE / m).is_dir())
    assert root == ["__main__", "cli", "cli_args"], root
    for folder in {part_of(m) for m in modules()} - set(root):
        init = PACKAGE / folder / "__init__.py"
        assert init.is_file(), f"{folder}/ has no __init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{folder}/__init__.py: no docstring"


def test_nothing_imports_upward():
    problems = upward_imports(import_graph(), layers(README.read_text()))
    assert not problems, "upward imports against README.md's layers:\n" + "\n".join(problems)


def test_the_package_init_imports_nothing():
    """``import medreason_lib`` stays cheap and outside the graph (the notebooks import the
    parts by name)."""
    assert not imports_of(PACKAGE / "__init__.py")


def test_modules_are_short():
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by idea): {long}"


def test_only_models_imports_the_gpu_stack_and_only_inside_functions():
    problems = []
    for name, path in modules().items():
        for dotted, _, level, in_function, node in imports_of(path):
            if level or dotted.split(".")[0] not in GPU_PACKAGES:
                continue
            if name != GPU_MODULE:
                problems.append(f"{path}:{node.lineno} imports {dotted}")
            elif not in_function:
                problems.append(f"{path}:{node.lineno} imports {dotted} at module level")
    assert not problems, "\n".join(problems)


def test_no_test_tooling_in_the_package():
    """What a learner imports only: the API-drift readers and the wheel fetcher live in
    tools/, and nothing in the package imports pytest."""
    assert not {"api_drift", "wheel_fetch"} & {m.split(".")[-1] for m in modules()}
    for path in modules().values():
        for dotted, _, level, _, node in imports_of(path):
            assert level or dotted.split(".")[0] not in {"pytest", "tools"}, (
                f"{path}:{node.lineno} imports {dotted}"
            )


def _code_cells(path: Path):
    notebook = json.loads(path.read_text())
    for number, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            source = cell["source"]
            yield number, "".join(source) if isinstance(source, list) else source


@pytest.mark.parametrize(
    "notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name
)
def test_notebook_code_cells_are_short(notebook):
    """A notebook teaches; the library does: no code cell over 40 lines."""
    long = [
        f"cell {number}: {len(source.splitlines())} lines"
        for number, source in _code_cells(notebook)
        if len(source.splitlines()) > MAX_CELL_LINES
    ]
    assert not long, f"{notebook.name}: code cells over {MAX_CELL_LINES} lines: {long}"


# --------------------------------------------------------------------------- the checker


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "medreason_lib"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_the_graph_sees_every_form_of_import(tmp_path):
    package = _package(
        tmp_path,
        {
            "p/__init__.py": '"""p."""\nfrom .a import f\n',
            "p/a.py": "from . import b\n",
            "p/b.py": "def f():\n    from ..q.c import x\n",
            "q/__init__.py": '"""q."""\n',
            "q/c.py": "import medreason_lib.q.d\nfrom medreason_lib.q import e\n",
            "q/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .e import Y\n",
            "q/e.py": "import importlib\nM = importlib.import_module('medreason_lib.p.a')\nx = 1\n",
            "cli.py": "from medreason_lib import p\n",
        },
    )
    graph = import_graph(package)
    assert graph == {
        "p": {"p.a"}, "p.a": {"p.b"}, "p.b": {"q.c"}, "q": set(), "q.c": {"q.d", "q.e"},
        "q.d": {"q.e"}, "q.e": {"p.a"}, "cli": {"p"},
    }  # fmt: skip
    assert find_cycle(graph) == ["p.a", "p.b", "q.c", "q.d", "q.e", "p.a"]
    del graph["q.e"]
    assert find_cycle(graph) is None


README_SAMPLE = """# X

## The library

| layer | folders | what |
|---|---|---|
| 1. bottom | `a/`, `b/` | things (`not_a_folder` here is prose) |
| 2. top | `c` | more |

## Next
"""


def test_the_layer_table_is_read_and_enforced():
    layer = layers(README_SAMPLE)
    assert layer == {"a": 1, "b": 1, "c": 2}
    graph = {"a.x": {"c"}, "b.y": {"a.x"}, "c": {"a.x", "b.y"}}
    assert upward_imports(graph, layer) == ["a.x (layer 1, a) imports c (layer 2, c)"]
    with pytest.raises(ValueError, match="listed twice"):
        layers(README_SAMPLE.replace("| `c` |", "| `c`, `a/` |"))
    with pytest.raises(ValueError, match="no '## The library'"):
        layers("# nothing here\n")


# the test folders that are not a library part: the command line (the package root), the GPU
# path across parts (stand-ins, API drift, the smoke script), and the project's own shape
TEST_FOLDERS_BESIDE_PARTS = {"cli", "gpu_path", "project"}


def test_the_tests_follow_the_parts():
    """A change to one part has an obvious set of tests: ``tests/<part>/`` for every part
    folder, and no test file loose in ``tests/``."""
    parts = {part_of(m) for m in modules() if (PACKAGE / part_of(m)).is_dir()}
    tests = ROOT / "tests"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert not parts - folders, f"parts with no tests/<part>/ folder: {sorted(parts - folders)}"
    extra = folders - parts - TEST_FOLDERS_BESIDE_PARTS
    assert not extra, f"test folders that name no part: {sorted(extra)}"
    for folder in folders:
        assert list((tests / folder).glob("test_*.py")), f"tests/{folder}/ holds no test file"
    assert not list(tests.glob("test_*.py")), "test files loose in tests/: put them in a part"


def _notebook_imports(path: Path):
    """``(cell, module, names)`` of every ``from medreason_lib... import`` and ``import
    medreason_lib...`` in a notebook's code cells (shell and magic lines left out)."""
    for number, source in _code_cells(path):
        lines = source.splitlines()
        code = "\n".join(line for line in lines if not line.lstrip().startswith(("!", "%")))
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medreason_lib"):
                yield number, node.module, [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("medreason_lib"):
                        yield number, alias.name, []


@pytest.mark.parametrize(
    "notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name
)
def test_notebooks_import_public_names_that_exist(notebook):
    """A notebook imports a part, a module or a name by its public name: nothing private
    (no ``_`` name anywhere in the import) and nothing that does not exist."""
    import importlib

    problems = []
    for cell, module, names in _notebook_imports(notebook):
        private = [p for p in [*module.split("."), *names] if p.startswith("_")]
        if private:
            problems.append(f"cell {cell}: {module} import {names}: private {private}")
            continue
        imported = importlib.import_module(module)
        for name in names:
            if not hasattr(imported, name) and importlib.util.find_spec(f"{module}.{name}") is None:
                problems.append(f"cell {cell}: {module} has no {name}")
    assert not problems, f"{notebook.name}:\n" + "\n".join(problems)
