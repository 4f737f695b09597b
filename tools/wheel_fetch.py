"""Fetch a few files out of a large wheel on the package index, without downloading it.

The API-drift tests (``tools/api_drift.py``) read four files of vLLM's source; its
wheel is about 336 MB. Like pip's "lazy wheel", ``fetch_wheel_members`` reads the wheel's zip
directory and just those members with HTTP range requests (about 2 MB), and checks each
against the sha256 that the wheel's own ``RECORD`` lists. The index's sha256 covers the whole
wheel, so it can only be checked when the whole wheel is downloaded: that is the fallback
when a server ignores range requests. ``make wheels`` runs
``python -m tools.wheel_fetch vllm-sources VERSION DEST`` from the repository root.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import html
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
from pathlib import Path

from .api_drift import DEFAULT_INDEX, VLLM_MEMBERS, WHEELS_DIR, _members_present, _normalise


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
    parser = argparse.ArgumentParser(prog="python -m tools.wheel_fetch")
    sub = parser.add_subparsers(dest="command", required=True)
    vllm = sub.add_parser("vllm-sources", help="fetch the vLLM files the drift tests read")
    vllm.add_argument("version")
    vllm.add_argument("dest_dir", nargs="?", default=str(WHEELS_DIR))
    args = parser.parse_args(argv)
    dest = Path(args.dest_dir) / f"vllm-{args.version}"
    # its METADATA too: tests/runtime/test_gpu_dependencies.py checks the pins against its
    # requirements
    metadata = f"vllm-{args.version}.dist-info/METADATA"
    fetch_wheel_members("vllm", args.version, (*VLLM_MEMBERS, metadata), dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
