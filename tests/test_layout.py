"""The library's shape: layers, no import cycles, short modules, short notebook cells.

The import graph of ``medreason_lib`` is read with ``ast`` (nothing is imported): every
``import``/``from ... import`` of a package module counts, at module level, inside functions
and under ``if TYPE_CHECKING``. It must have no cycle, and no module may import one of a
higher layer than its own, the layers being the table in README.md's "The library" section
(row 1 is the bottom). Every module must be in that table exactly once, so a new module
cannot slip past the check. Only ``models`` may import the GPU stack, and only inside
functions (``import unsloth`` raises on a machine without a GPU).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "medreason_lib"
README = ROOT / "README.md"
MAX_MODULE_LINES = 450
MAX_CELL_LINES = 40
GPU_PACKAGES = {"unsloth", "unsloth_zoo", "vllm"}
GPU_MODULE = "models"


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by name (``__init__`` is the package itself)."""
    return {p.stem: p for p in sorted(package.glob("*.py")) if p.stem != "__init__"}


class _Imports(ast.NodeVisitor):
    """Collects ``(imported name, inside a function)`` for every import statement."""

    def __init__(self) -> None:
        self.found: list[tuple[str, int, bool, ast.AST]] = []  # (dotted, level, in_fn, node)
        self._depth = 0

    def _function(self, node) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, 0, self._depth > 0, node))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level and not base:  # from . import a, b
            for alias in node.names:
                self.found.append((alias.name, node.level, self._depth > 0, node))
        elif not node.level and base == PACKAGE.name:  # from medreason_lib import a, b
            for alias in node.names:
                self.found.append((f"{base}.{alias.name}", 0, self._depth > 0, node))
        else:
            self.found.append((base, node.level, self._depth > 0, node))

    def visit_Call(self, node: ast.Call) -> None:  # importlib.import_module("medreason_lib.x")
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            target = str(node.args[0].value)
            level = len(target) - len(target.lstrip("."))
            self.found.append((target.lstrip("."), level, self._depth > 0, node))
        self.generic_visit(node)


def imports_of(path: Path) -> list[tuple[str, int, bool, ast.AST]]:
    visitor = _Imports()
    visitor.visit(ast.parse(path.read_text(), filename=str(path)))
    return visitor.found


def package_imports(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports (relative or absolute, anywhere in the file)."""
    out = set()
    for dotted, level, _, _ in imports_of(path):
        if level:  # relative: this package (the modules are one folder deep)
            head = dotted.split(".")[0]
        elif dotted.split(".")[0] == PACKAGE.name and "." in dotted:
            head = dotted.split(".")[1]
        else:
            continue
        if head in known:
            out.add(head)
    return out


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    found = modules(package)
    return {name: package_imports(path, set(found)) - {name} for name, path in found.items()}


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
    """The rows of README's layer table, bottom layer first: ``(layer, [modules])``.

    The table is the first one under "## The library" whose header starts with
    ``| layer | modules |``; a row's modules are the backticked names of its second column.
    """
    section = readme.split("\n## The library", 1)
    if len(section) != 2:
        raise ValueError("README.md has no '## The library' section")
    body = section[1].split("\n## ", 1)[0]
    lines = body.splitlines()
    header = next(
        (i for i, line in enumerate(lines) if re.match(r"\|\s*layer\s*\|\s*modules\s*\|", line)),
        None,
    )
    if header is None:
        raise ValueError("README.md's library section has no '| layer | modules |' table")
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((cells[0], re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", cells[1])))
    return rows


def layers(readme: str) -> dict[str, int]:
    """Each module's layer number (1 = bottom); a module listed twice is an error."""
    out: dict[str, int] = {}
    for number, (layer, names) in enumerate(layer_table(readme), start=1):
        if not names:
            raise ValueError(f"README.md layer table: row {layer!r} lists no modules")
        for name in names:
            if name in out:
                raise ValueError(f"README.md layer table: {name!r} is listed twice")
            out[name] = number
    return out


def upward_imports(graph: dict[str, set[str]], layer: dict[str, int]) -> list[str]:
    return [
        f"{a} (layer {layer[a]}) imports {b} (layer {layer[b]})"
        for a in sorted(graph)
        for b in sorted(graph[a])
        if a in layer and b in layer and layer[b] > layer[a]
    ]


# --------------------------------------------------------------------------- the checks


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_is_in_the_readme_layer_table_once():
    layer = layers(README.read_text())
    found = set(modules())
    missing = sorted(found - set(layer))
    stale = sorted(set(layer) - found)
    assert not missing, f"modules missing from README.md's layer table: {missing}"
    assert not stale, f"README.md's layer table names modules that do not exist: {stale}"


def test_nothing_imports_upward():
    problems = upward_imports(import_graph(), layers(README.read_text()))
    assert not problems, "upward imports against README.md's layers:\n" + "\n".join(problems)


def test_the_package_init_imports_nothing():
    """``import medreason_lib`` stays cheap and outside the graph (the notebooks import
    submodules by name)."""
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
        for dotted, level, in_function, node in imports_of(path):
            if level or dotted.split(".")[0] not in GPU_PACKAGES:
                continue
            if name != GPU_MODULE:
                problems.append(f"{name}.py:{node.lineno} imports {dotted}")
            elif not in_function:
                problems.append(f"{name}.py:{node.lineno} imports {dotted} at module level")
    assert not problems, "\n".join(problems)


def test_no_test_tooling_in_the_package():
    """What a learner imports only: the API-drift readers and the wheel fetcher live in
    tools/, and nothing in the package imports pytest."""
    assert not {"api_drift", "wheel_fetch"} & set(modules())
    for name, path in modules().items():
        for dotted, level, _, node in imports_of(path):
            assert level or dotted.split(".")[0] not in {"pytest", "tools"}, (
                f"{name}.py:{node.lineno} imports {dotted}"
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
        (package / f"{name}.py").write_text(text)
    return package


def test_the_graph_sees_every_form_of_import(tmp_path):
    package = _package(
        tmp_path,
        {
            "a": "from . import b\n",
            "b": "def f():\n    from .c import x\n",
            "c": "import medreason_lib.d\nfrom medreason_lib import e\n",
            "d": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .e import Y\n",
            "e": "import importlib\nM = importlib.import_module('medreason_lib.a')\nx = 1\n",
        },
    )
    graph = import_graph(package)
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"d", "e"}, "d": {"e"}, "e": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "d", "e", "a"]
    del graph["e"]
    assert find_cycle(graph) is None


README_SAMPLE = """# X

## The library

| layer | modules | what |
|---|---|---|
| 1. bottom | `a`, `b` | things (`not_a_module` here is prose) |
| 2. top | `c` | more |

## Next
"""


def test_the_layer_table_is_read_and_enforced():
    layer = layers(README_SAMPLE)
    assert layer == {"a": 1, "b": 1, "c": 2}
    graph = {"a": {"c"}, "b": {"a"}, "c": {"a", "b"}}
    assert upward_imports(graph, layer) == ["a (layer 1) imports c (layer 2)"]
    with pytest.raises(ValueError, match="listed twice"):
        layers(README_SAMPLE.replace("| `c` |", "| `c`, `a` |"))
    with pytest.raises(ValueError, match="no '## The library'"):
        layers("# nothing here\n")
