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
  wheel" reads metadata (about 2 MB transferred): ``python -m medreason_lib.api_drift
  vllm-sources VERSION DEST``. Each file is checked against the sha256 that the wheel's own
  ``RECORD`` lists for it. The index's sha256 covers the whole wheel, so it can only be checked
  when the whole wheel is downloaded: that is the fallback when a server ignores range requests.
"""

from __future__ import annotations

import argparse
import ast
import base64
import csv
import difflib
import hashlib
import html
import inspect
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request
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


# --------------------------------------------------------------------------- fetching vLLM


class RangeNotSupported(RuntimeError):  # not OSError: zipfile would mask it
    """The server answered a range request with the whole file."""


class _HTTPRangeFile(io.RawIOBase):
    """A read-only, seekable file over HTTP, fetched in blocks with ``Range`` requests; enough
    for ``zipfile`` to read the central directory and a few members of a large wheel."""

    def __init__(self, url: str, size: int, block: int = 256 * 1024) -> None:
        super().__init__()
        self.url, self.size, self.block = url, size, block
        self.pos = 0
        self.blocks: dict[int, bytes] = {}
        self.requests = 0
        self.transferred = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.pos)
        if n <= 0:
            return 0
        first, last = self.pos // self.block, (self.pos + n - 1) // self.block
        missing = [i for i in range(first, last + 1) if i not in self.blocks]
        if missing:
            self._fetch(missing[0], missing[-1])
        data = b"".join(self.blocks[i] for i in range(first, last + 1))
        start = self.pos - first * self.block
        buffer[:n] = data[start : start + n]
        self.pos += n
        return n

    def _fetch(self, first: int, last: int) -> None:
        start, end = first * self.block, min((last + 1) * self.block, self.size) - 1
        req = urllib.request.Request(self.url, headers={"Range": f"bytes={start}-{end}"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            if resp.status != 206:
                raise RangeNotSupported(f"{self.url} answered {resp.status} to a range request")
            data = resp.read()
        if len(data) != end - start + 1:
            raise OSError(f"range {start}-{end} of {self.url}: got {len(data)} bytes")
        self.requests += 1
        self.transferred += len(data)
        for i in range(first, last + 1):
            offset = i * self.block - start
            self.blocks[i] = data[offset : offset + self.block]


def _index_files(project: str, index_url: str) -> list[dict]:
    """``[{"filename", "url", "sha256"}]`` of a project on a PEP 691 (JSON) or PEP 503 (HTML)
    simple index."""
    url = f"{index_url.rstrip('/')}/{_normalise(project)}/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    with urllib.request.urlopen(
        urllib.request.Request(url, headers={"Accept": accept}), timeout=60
    ) as resp:
        body = resp.read().decode("utf-8")
        ctype = resp.headers.get("Content-Type", "")
    if "json" in ctype:
        return [
            {
                "filename": f["filename"],
                "url": urllib.parse.urljoin(url, f["url"]),
                "sha256": f.get("hashes", {}).get("sha256"),
            }
            for f in json.loads(body)["files"]
        ]
    files = []
    for m in re.finditer(r'<a\s[^>]*href="([^"]+)"[^>]*>([^<]+)</a>', body):
        href = urllib.parse.urljoin(url, html.unescape(m.group(1)))
        sha = re.search(r"#sha256=([0-9a-f]{64})", href)
        files.append(
            {
                "filename": m.group(2).strip(),
                "url": href.split("#")[0],
                "sha256": sha.group(1) if sha else None,
            }
        )
    return files


def _record_hashes(wheel: zipfile.ZipFile) -> dict[str, str]:
    record = next(n for n in wheel.namelist() if n.endswith(".dist-info/RECORD"))
    rows = csv.reader(io.StringIO(wheel.read(record).decode("utf-8")))
    return {row[0]: row[1] for row in rows if len(row) >= 2 and row[1]}


def _record_digest(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


def _members_present(dest: Path, members: Iterable[str]) -> bool:
    manifest = dest / "_source.json"
    if not manifest.is_file():
        return False
    listed = json.loads(manifest.read_text()).get("members", {})
    return all(m in listed and (dest / m).is_file() for m in members)


def _members_and_record(wheel: zipfile.ZipFile, members: tuple[str, ...]):
    missing = [m for m in members if m not in wheel.NameToInfo]
    if missing:
        raise FileNotFoundError(f"{missing} not in the wheel: update VLLM_MEMBERS")
    return {m: wheel.read(m) for m in members}, _record_hashes(wheel)


def _read_members(chosen: dict, members: tuple[str, ...]):
    """``(files, RECORD hashes, method, bytes transferred)`` for the wheel ``chosen``: by range
    requests, or from the whole wheel (checked against the index's sha256) when the server
    does not do ranges, or straight from disk for a ``file:`` index."""
    url = chosen["url"]
    if url.startswith("file:"):
        path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
        with zipfile.ZipFile(path) as wheel:
            return (*_members_and_record(wheel, members), "local file", 0)
    head = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(head, timeout=60) as resp:
        size = int(resp.headers.get("Content-Length") or 0)
    if size:
        remote = _HTTPRangeFile(url, size)
        try:
            with zipfile.ZipFile(remote) as wheel:
                files, record = _members_and_record(wheel, members)
            return files, record, "range requests", remote.transferred
        except RangeNotSupported as why:
            print(f"{why}: downloading the whole wheel instead")
    with tempfile.TemporaryDirectory() as tmp:
        whole = Path(tmp) / chosen["filename"]
        sha = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=600) as resp, whole.open("wb") as f:
            while chunk := resp.read(1 << 20):
                sha.update(chunk)
                f.write(chunk)
        if chosen["sha256"] and sha.hexdigest() != chosen["sha256"]:
            raise OSError(f"{chosen['filename']}: sha256 differs from the index's")
        with zipfile.ZipFile(whole) as wheel:
            return (*_members_and_record(wheel, members), "whole wheel", whole.stat().st_size)


def fetch_wheel_members(
    project: str,
    version: str,
    members: Iterable[str],
    dest: str | Path,
    *,
    index_url: str | None = None,
) -> Path:
    """Copy ``members`` of ``project==version``'s wheel into ``dest`` (kept as ``dest/member``,
    with a ``_source.json`` saying where they came from), reading only those members with HTTP
    range requests; each is checked against the wheel's ``RECORD``. Does nothing when ``dest``
    already holds them. Returns ``dest``."""
    members = tuple(members)
    dest = Path(dest)
    if _members_present(dest, members):
        print(f"{dest}: present")
        return dest
    index_url = index_url or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX
    wheels = [
        f
        for f in _index_files(project, index_url)
        if f["filename"].startswith(f"{_normalise(project).replace('-', '_')}-{version}-")
        and f["filename"].endswith(".whl")
    ]
    if not wheels:
        raise FileNotFoundError(f"no wheel of {project}=={version} on {index_url}")
    # The Python files are the same in every platform's wheel; take the x86_64 one if listed.
    chosen = sorted(wheels, key=lambda f: ("x86_64" not in f["filename"], f["filename"]))[0]
    t0 = time.perf_counter()
    files, record, method, transferred = _read_members(chosen, members)
    for m, data in files.items():
        if record.get(m) != _record_digest(data):
            raise OSError(f"{m} of {chosen['filename']} does not match its RECORD hash")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for m, data in files.items():
        (partial / m).parent.mkdir(parents=True, exist_ok=True)
        (partial / m).write_bytes(data)
    manifest = {
        "project": project,
        "version": version,
        "wheel": chosen["filename"],
        "url": chosen["url"],
        "wheel_sha256_on_index": chosen["sha256"],
        "method": method,
        "bytes_transferred": transferred,
        "members": {m: record[m] for m in files},
    }
    (partial / "_source.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    took = time.perf_counter() - t0
    print(
        f"{dest}: {len(files)} files of {chosen['filename']} by {method} "
        f"({transferred / 1e6:.1f} MB transferred, {took:.1f} s)"
    )
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medreason_lib.api_drift")
    sub = parser.add_subparsers(dest="command", required=True)
    vllm = sub.add_parser("vllm-sources", help="fetch the vLLM files the drift tests read")
    vllm.add_argument("version")
    vllm.add_argument("dest_dir", nargs="?", default=str(WHEELS_DIR))
    args = parser.parse_args(argv)
    dest = Path(args.dest_dir) / f"vllm-{args.version}"
    fetch_wheel_members("vllm", args.version, VLLM_MEMBERS, dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
