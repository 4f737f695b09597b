"""API-drift checks: is every keyword the course passes still a parameter of the pinned release?

The GPU stack (Unsloth, unsloth_zoo, vLLM) cannot be imported on a CPU: ``import unsloth`` raises
without a GPU, and neither package is installed in the CPU environment. So their signatures are
read from the pinned release's *source*, with ``ast``, without importing or running anything:
``Source`` opens a wheel (a zip, read with ``zipfile``) or a folder holding the package's files,
and ``Source.function("unsloth/models/loader.py", "FastLanguageModel.from_pretrained")`` finds a
definition by qualified name. The CPU stack (trl, transformers, peft) is installed at its pins
and is checked with ``inspect`` on the real classes instead (``inspect_parameters``).

Only *named* parameters count. Most Unsloth entry points end in ``**kwargs``, which accepts a
misspelt keyword without a word (``load_in_4bitt=True`` is silently dropped), so
``assert_keywords_exist`` checks against the named parameters only; a keyword that really does
travel through ``**kwargs`` must be traced to the function that names it
(``Function.forwarded_to`` lists where a function passes its ``*args``/``**kwargs`` on).

Where the sources come from (``make wheels``, which ``make test`` runs; versions from
``requirements-gpu.txt``), all under ``.cache/wheels``:

- unsloth, unsloth_zoo: their wheels, by ``pip download --no-deps`` (about 29 + 3 MB).
- vLLM: its wheel is about 336 MB, and the checks need four of its files (250 kB). They are
  read out of the wheel on the package index with HTTP range requests, the way pip's "lazy
  wheel" reads metadata (about 2 MB transferred): see ``tools/wheel_fetch.py``.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import json
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WHEELS_DIR = ROOT / ".cache" / "wheels"
GPU_REQUIREMENTS = ROOT / "requirements-gpu.txt"

# The vLLM files the drift tests read: the lazy-import table that says where ``vllm.LLM`` and
# ``vllm.SamplingParams`` live, those two modules, and ``EngineArgs`` (where ``LLM(**kwargs)``
# sends the keywords it does not name itself).
VLLM_MEMBERS = (
    "vllm/__init__.py",
    "vllm/sampling_params.py",
    "vllm/entrypoints/llm.py",
    "vllm/engine/arg_utils.py",
)
DEFAULT_INDEX = "https://pypi.org/simple"
MAKE_HINT = "run `make wheels` (`make test` runs it) to fetch the pinned GPU packages' sources"


class KeywordDrift(AssertionError):
    """A keyword the course passes is not a named parameter of the pinned function."""


# --------------------------------------------------------------------------- pins and files


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def gpu_pins(path: str | Path = GPU_REQUIREMENTS) -> dict[str, str]:
    """``{distribution: version}`` for every ``name==version`` line of requirements-gpu.txt
    (names normalised: ``unsloth_zoo`` -> ``unsloth-zoo``)."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
        if m:
            pins[_normalise(m.group(1))] = m.group(2)
    return pins


def wheel_path(dist: str, version: str, directory: str | Path = WHEELS_DIR) -> Path:
    """The downloaded wheel of ``dist==version`` in ``directory``; ``FileNotFoundError`` (saying
    to run ``make wheels``) when it is not there."""
    stem = _normalise(dist).replace("-", "_")
    found = sorted(Path(directory).glob(f"{stem}-{version}-*.whl"))
    if not found:
        raise FileNotFoundError(f"no {stem}-{version}-*.whl in {directory}: {MAKE_HINT}")
    return found[0]


def _members_present(dest: Path, members: Iterable[str]) -> bool:
    manifest = dest / "_source.json"
    if not manifest.is_file():
        return False
    listed = json.loads(manifest.read_text()).get("members", {})
    return all(m in listed and (dest / m).is_file() for m in members)


def vllm_sources_path(version: str, directory: str | Path = WHEELS_DIR) -> Path:
    """The folder of vLLM files that ``vllm-sources`` wrote; ``FileNotFoundError`` when absent
    or incomplete."""
    dest = Path(directory) / f"vllm-{version}"
    if not _members_present(dest, VLLM_MEMBERS):
        raise FileNotFoundError(f"no complete {dest}: {MAKE_HINT}")
    return dest


# --------------------------------------------------------------------------- reading source


class _SourceDefault:
    """A default value as written in the source (nothing is evaluated)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _dotted(node: ast.AST) -> str:
    return ast.unparse(node)


def _walk_defs(body: Iterable[ast.stmt]):
    """Statements of a module or class body, descending into if/try/with blocks (definitions
    made conditionally) but not into functions or classes."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.If | ast.With | ast.AsyncWith | ast.For | ast.While):
            yield from _walk_defs(stmt.body)
            yield from _walk_defs(getattr(stmt, "orelse", []))  # a with block has none
        elif isinstance(stmt, ast.Try | ast.TryStar):
            yield from _walk_defs(stmt.body)
            for handler in stmt.handlers:
                yield from _walk_defs(handler.body)
            yield from _walk_defs(stmt.orelse)
            yield from _walk_defs(stmt.finalbody)


def _mentions(node: ast.AST, name: str) -> bool:
    """Whether ``node`` reads the variable ``name`` or an attribute called ``name``."""
    return any(
        (isinstance(n, ast.Name) and n.id == name)
        or (isinstance(n, ast.Attribute) and n.attr == name)
        for n in ast.walk(node)
    )


def _string_literals(node: ast.AST) -> set[str]:
    """``"x"`` -> {"x"}; a tuple/list/set/dict of strings -> its strings; else nothing."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return set().union(*(_string_literals(e) for e in node.elts)) if node.elts else set()
    if isinstance(node, ast.Dict):
        keys = [k for k in node.keys if k is not None]
        return set().union(*(_string_literals(k) for k in keys)) if keys else set()
    return set()


def compared_literals(node: ast.AST, name: str) -> set[str]:
    """Strings that an expression on ``name`` is compared with anywhere in ``node``:
    ``name == "a"``, ``name in ("b", "c")``, ``name.lower() == "d"``, ``"e" in name``,
    ``self.name == "f"``. The values the code recognises, where it lists them literally."""
    found: set[str] = set()
    for n in ast.walk(node):
        if not isinstance(n, ast.Compare):
            continue
        operands = [n.left, *n.comparators]
        if any(_mentions(o, name) for o in operands):
            for o in operands:
                if not _mentions(o, name):
                    found |= _string_literals(o)
    return found


@dataclass(frozen=True)
class Function:
    """One ``def`` found in a release's source."""

    qualname: str
    where: str  # "path/in/wheel.py:LINE"
    node: ast.FunctionDef | ast.AsyncFunctionDef

    @property
    def decorators(self) -> list[str]:
        return [_dotted(d) for d in self.node.decorator_list]

    @property
    def is_staticmethod(self) -> bool:
        return "staticmethod" in self.decorators

    def signature(self) -> inspect.Signature:
        """The parameters as written (defaults are ``_SourceDefault`` placeholders); ``bind``
        on it checks a call's shape, positional arguments included."""
        a = self.node.args
        P = inspect.Parameter
        params = []
        positional = a.posonlyargs + a.args
        defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
        for i, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
            kind = P.POSITIONAL_ONLY if i < len(a.posonlyargs) else P.POSITIONAL_OR_KEYWORD
            value = P.empty if default is None else _SourceDefault(ast.unparse(default))
            params.append(P(arg.arg, kind, default=value))
        if a.vararg:
            params.append(P(a.vararg.arg, P.VAR_POSITIONAL))
        for arg, default in zip(a.kwonlyargs, a.kw_defaults, strict=True):
            value = P.empty if default is None else _SourceDefault(ast.unparse(default))
            params.append(P(arg.arg, P.KEYWORD_ONLY, default=value))
        if a.kwarg:
            params.append(P(a.kwarg.arg, P.VAR_KEYWORD))
        return inspect.Signature(params)

    def named_parameters(self) -> frozenset[str]:
        """Parameters a keyword can name (``*args``/``**kwargs`` excluded)."""
        return _named(self.signature())

    @property
    def var_keyword(self) -> str | None:
        return self.node.args.kwarg.arg if self.node.args.kwarg else None

    def forwarded_to(self) -> list[str]:
        """Callees (as written) that receive this function's ``*args`` or ``**kwargs``, as is
        (``f(*args, **kwargs)``) or transformed (``f(**g(args, kwargs))``): where keywords that
        no named parameter takes end up."""
        a = self.node.args
        star = a.vararg.arg if a.vararg else None
        kw = a.kwarg.arg if a.kwarg else None

        def reads(node: ast.AST, var: str | None) -> bool:
            return var is not None and any(
                isinstance(n, ast.Name) and n.id == var for n in ast.walk(node)
            )

        out = []
        for call in (n for n in ast.walk(self.node) if isinstance(n, ast.Call)):
            unpacked = [x.value for x in call.args if isinstance(x, ast.Starred)]
            unpacked += [k.value for k in call.keywords if k.arg is None]
            if any(reads(v, star) or reads(v, kw) for v in unpacked):
                out.append(_dotted(call.func))
        return out

    def calls(self, callee: str) -> list[ast.Call]:
        """Calls of ``callee`` (as written, e.g. ``"FastBaseModel.get_peft_model"``)."""
        return [
            n for n in ast.walk(self.node) if isinstance(n, ast.Call) and _dotted(n.func) == callee
        ]

    def attribute_assignments(self, attr: str) -> list[str]:
        """The right-hand sides (as written) of ``<anything>.attr = ...`` in this function."""
        out = []
        for n in ast.walk(self.node):
            if isinstance(n, ast.Assign) and any(
                isinstance(t, ast.Attribute) and t.attr == attr for t in n.targets
            ):
                out.append(_dotted(n.value))
        return out

    def imports(self) -> dict[str, str]:
        """``{local name: "module.name"}`` for the ``from module import name`` in this function."""
        out = {}
        for n in ast.walk(self.node):
            if isinstance(n, ast.ImportFrom) and n.module:
                for alias in n.names:
                    out[alias.asname or alias.name] = f"{'.' * n.level}{n.module}.{alias.name}"
        return out

    def mentions(self, name: str) -> bool:
        return _mentions(self.node, name)

    def compared_literals(self, name: str) -> set[str]:
        """Strings that an expression on ``name`` is compared with in this function (see
        ``compared_literals``)."""
        return compared_literals(self.node, name)

    def refused_literals(self, name: str) -> set[str]:
        """Values ``v`` that the function refuses outright: ``if name == v: raise ...``."""
        found: set[str] = set()
        for n in ast.walk(self.node):
            if not (isinstance(n, ast.If) and n.body and isinstance(n.body[0], ast.Raise)):
                continue
            t = n.test
            if (
                isinstance(t, ast.Compare)
                and len(t.ops) == 1
                and isinstance(t.ops[0], ast.Eq | ast.In)
                and isinstance(t.left, ast.Name)
                and t.left.id == name
            ):
                found |= _string_literals(t.comparators[0])
        return found


def _named(sig: inspect.Signature) -> frozenset[str]:
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return frozenset(p.name for p in sig.parameters.values() if p.kind not in skip)


class Source:
    """The Python files of one release: a wheel (zip) or a folder that holds the package folder
    (``site-packages``, an unpacked wheel, a source checkout). Members are ``/`` paths inside it,
    e.g. ``"unsloth/models/loader.py"``. Nothing is imported."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._zip = None
        if self.path.is_file():
            self._zip = zipfile.ZipFile(self.path)
        elif not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} is neither a wheel nor a folder")
        self._trees: dict[str, ast.Module] = {}

    def __repr__(self) -> str:
        return f"Source({str(self.path)!r})"

    def read(self, member: str) -> str:
        try:
            if self._zip is not None:
                return self._zip.read(member).decode("utf-8")
            return (self.path / member).read_text(encoding="utf-8")
        except (KeyError, FileNotFoundError):
            raise FileNotFoundError(f"{member} is not in {self.path}") from None

    def tree(self, member: str) -> ast.Module:
        if member not in self._trees:
            self._trees[member] = ast.parse(self.read(member), filename=member)
        return self._trees[member]

    def _find(self, member: str, qualname: str, kinds: tuple[type, ...]) -> list[ast.AST]:
        *outer, last = qualname.split(".")
        scopes: list[list[ast.stmt]] = [self.tree(member).body]
        for part in outer:
            scopes = [
                s.body
                for body in scopes
                for s in _walk_defs(body)
                if isinstance(s, ast.ClassDef) and s.name == part
            ]
        return [
            s
            for body in scopes
            for s in _walk_defs(body)
            if isinstance(s, kinds) and getattr(s, "name", None) == last
        ]

    def function(self, member: str, qualname: str) -> Function:
        """The one ``def`` called ``qualname`` (``"Class.method"`` or ``"function"``) in
        ``member``. ``LookupError`` when there is none, or more than one (a name defined in
        several branches): then say which one the call reaches instead of guessing."""
        found = self._find(member, qualname, (ast.FunctionDef, ast.AsyncFunctionDef))
        if len(found) != 1:
            lines = [f"{member}:{n.lineno}" for n in found]
            raise LookupError(
                f"{qualname}: expected one definition in {member} of {self.path.name}, "
                f"found {len(found)} {lines}"
            )
        node = found[0]
        return Function(qualname, f"{member}:{node.lineno}", node)

    def class_def(self, member: str, qualname: str) -> ast.ClassDef:
        found = self._find(member, qualname, (ast.ClassDef,))
        if len(found) != 1:
            raise LookupError(f"class {qualname}: found {len(found)} definitions in {member}")
        return found[0]

    def class_fields(self, member: str, qualname: str) -> frozenset[str]:
        """Constructor fields of a dataclass / ``msgspec.Struct`` / pydantic-style class: the
        annotated names of its body, less ``ClassVar`` and ``field(init=False)``. Base classes
        are not followed (callers check the class has no ``__init__`` of its own)."""
        cls = self.class_def(member, qualname)
        names = set()
        for stmt in cls.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            if "ClassVar" in ast.unparse(stmt.annotation):
                continue
            v = stmt.value
            if isinstance(v, ast.Call) and _dotted(v.func).split(".")[-1] == "field":
                init = next((k.value for k in v.keywords if k.arg == "init"), None)
                if isinstance(init, ast.Constant) and init.value is False:
                    continue
            names.add(stmt.target.id)
        return frozenset(names)

    def class_defines(self, member: str, qualname: str, method: str) -> bool:
        cls = self.class_def(member, qualname)
        return any(
            isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef) and s.name == method
            for s in _walk_defs(cls.body)
        )

    def constant(self, member: str, name: str) -> Any:
        """The literal value of a module-level ``NAME = <literal>`` (``ast.literal_eval``)."""
        values = [
            s.value
            for s in _walk_defs(self.tree(member).body)
            if isinstance(s, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in s.targets)
        ]
        if len(values) != 1:
            raise LookupError(f"{name}: found {len(values)} assignments in {member}")
        return ast.literal_eval(values[0])

    def compared_literals(self, member: str, name: str) -> set[str]:
        """``compared_literals`` over a whole module."""
        return compared_literals(self.tree(member), name)

    def imported_from(self, member: str, name: str) -> list[str]:
        """Modules that ``member`` imports ``name`` from, at module level (``from .loader import
        FastLanguageModel`` -> ``[".loader"]``)."""
        return [
            "." * s.level + (s.module or "")
            for s in _walk_defs(self.tree(member).body)
            if isinstance(s, ast.ImportFrom) and any(a.name == name for a in s.names)
        ]


# --------------------------------------------------------------------------- the check


def inspect_parameters(obj: Any) -> frozenset[str]:
    """Named parameters of an installed callable or class (``inspect.signature``)."""
    return _named(inspect.signature(obj))


def accepted_keywords(target: Any) -> frozenset[str]:
    """The keywords ``target`` names: a ``Function`` from source, an ``inspect.Signature``, an
    installed callable/class, or a collection of names."""
    if isinstance(target, Function):
        return target.named_parameters()
    if isinstance(target, inspect.Signature):
        return _named(target)
    if isinstance(target, str):
        raise TypeError("pass a collection of names, not one string")
    if callable(target):
        return inspect_parameters(target)
    return frozenset(target)


def missing_keywords(target: Any, passed: Iterable[str]) -> list[str]:
    """The keywords of ``passed`` that ``target`` does not name, sorted."""
    return sorted(set(passed) - accepted_keywords(target))


def assert_keywords_exist(target: Any, passed: Iterable[str], where: str = "") -> None:
    """Raise ``KeywordDrift`` naming each keyword of ``passed`` that ``target`` lacks (with the
    closest parameter names), so a rename or misspelling fails here rather than on a GPU."""
    accepted = accepted_keywords(target)
    missing = sorted(set(passed) - accepted)
    if not missing:
        return
    label = where or (target.where if isinstance(target, Function) else repr(target))
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, sorted(accepted), n=3)
        hints.append(
            f"{name!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
        )
    raise KeywordDrift(f"{label} has no parameter {'; '.join(hints)}")
