"""Upload a datum's ``/pfs/out``: store its files and build the datum's tree.
``stats_tree`` builds the datum's stats tree (``enable_stats``).

Every regular file is stored with ``libs.filedata.FileWriter``. A symlink is
followed as the user code would see it (paths under ``/pfs`` are the datum's
scratch directory); when it ends at an input file or directory of the datum,
the output gets that input's refs, so no bytes are copied. A symlink to
anything else is stored as what it points to; one that points nowhere the
upload can read fails the datum, naming it. Empty directories are dropped
(trees hold files). Returns the tree's root, the bytes stored and the time.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from libs.api.internal import pps_work_pb2 as pachinternal
from libs.api.pps import pps_pb2
from libs.errors import FailedPrecondition
from libs.filedata import FileWriter
from libs.objects import ObjectStore
from libs.trees import Copy, DataRef, Op, Put, TreeRoot, build, file_refs, get
from libs.trees.paths import join, normalize
from libs.trees.stackless import Descend, flatten
from services.pps.worker.layout import OUT, PFS, InputIndex

_READ = 8 << 20
_SMALL = 1 << 20  # files up to this size are read without a thread hop
_MAX_HOPS = 40  # symlinks followed in one path (as Linux)
_MAX_DEPTH = 8  # symlinked directories followed inside one another
# Sandbox directories the upload cannot see (the sandbox's own).
_PRIVATE = ("/tmp", "/proc", "/dev")


@dataclass(frozen=True, slots=True)
class Uploaded:
    root: TreeRoot
    upload_bytes: int
    seconds: float


async def upload(
    store: ObjectStore,
    pfs_dir: Path,
    index: InputIndex,
    *,
    spill_dir: Path | None = None,
    previous: str = "",
    laid_out_ns: int = 0,
    host_readable: Callable[[Path], bool] | None = None,
) -> Uploaded:
    """Store ``<pfs_dir>/out`` as a tree (see the module docstring). With
    ``previous`` (incremental: ``/pfs/out`` started as that tree, laid out
    before ``laid_out_ns``, a ctime), a file the code did not touch since
    keeps that tree's refs, so the output shows what the datum changed.
    ``host_readable``: whether the sandbox could read a host file (the
    runner's ``sees``); a symlink out of ``/pfs`` is followed only to such a
    file (None: to none), so user code cannot have the worker read for it
    what it could not read itself."""
    started = time.monotonic()
    walker = _Walker(store, pfs_dir, index, previous, laid_out_ns, host_readable)
    root = await build(store, None, walker.ops(), spill_dir=spill_dir)
    return Uploaded(root, walker.stored, time.monotonic() - started)


class _Walker:
    def __init__(
        self,
        store: ObjectStore,
        pfs_dir: Path,
        index: InputIndex,
        previous: str = "",
        laid_out_ns: int = 0,
        host_readable: Callable[[Path], bool] | None = None,
    ) -> None:
        self._readable = host_readable
        self._store = store
        self._pfs = pfs_dir
        self._index = index
        self._writer = FileWriter(store)
        self._previous = previous
        self._laid_out_ns = laid_out_ns
        self.stored = 0

    async def ops(self) -> AsyncIterator[Op]:
        ops: AsyncGenerator[Op, None] = flatten(self._dir(self._pfs / OUT, "/", f"{PFS}/{OUT}", 0))
        async for op in ops:
            yield op
        await self._writer.flush()  # packed refs are durable only now

    async def _dir(
        self, host: Path, tree: str, sandbox: str, depth: int
    ) -> AsyncGenerator[Op | Descend[Op], None]:
        """A directory's ops; subdirectories are ``Descend``-ed into (user
        code may nest /pfs/out deeper than Python's stack)."""
        with os.scandir(host) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            dst = join(tree, entry.name)
            where = f"{sandbox}/{entry.name}"
            if entry.is_symlink():
                yield Descend(self._link(where, dst, depth))
            elif entry.is_dir(follow_symlinks=False):
                yield Descend(self._dir(Path(entry.path), dst, where, depth))
            elif entry.is_file(follow_symlinks=False):
                path = Path(entry.path)
                if not self._inside(path) and not self._may_read(path):
                    raise FailedPrecondition(
                        f"output {PFS}/{OUT}{dst} is {where}, which user code cannot read",
                        path=dst,
                    )
                kept = await self._untouched(entry, dst)
                yield kept if kept is not None else await self._file(path, dst)
            # fifos, sockets and devices are not files: skipped

    async def _link(
        self, sandbox: str, dst: str, depth: int
    ) -> AsyncGenerator[Op | Descend[Op], None]:
        target = self._resolve(sandbox)
        entries = await self._index.entries(target)
        if entries is not None:  # an input file or directory: by reference
            async for e in entries:
                if e.refs is not None:
                    yield Put(join(dst, e.rel) if e.rel else dst, e.refs)
            return
        host = self._host(target)
        st = None if host is None else _stat(host)
        if host is not None and not self._inside(host) and not self._may_read(host):
            st = None
        if host is None or st is None:
            raise FailedPrecondition(
                f"output {PFS}/{OUT}{dst} is a symlink to {target}, which the worker cannot read",
                path=dst,
                target=target,
            )
        if stat.S_ISDIR(st.st_mode):
            if depth >= _MAX_DEPTH:
                raise FailedPrecondition(
                    f"output {PFS}/{OUT}{dst}: symlinked directories nest deeper than {_MAX_DEPTH}",
                    path=dst,
                )
            yield Descend(self._dir(host, dst, target, depth + 1))
        elif stat.S_ISREG(st.st_mode):
            yield await self._file(host, dst)

    async def _untouched(self, entry: os.DirEntry[str], dst: str) -> Put | None:
        """The previous output's file at ``dst`` when the code left it as laid
        out (its inode unchanged since: ctime, which the code cannot set)."""
        if not self._previous or not self._laid_out_ns:
            return None
        st = entry.stat(follow_symlinks=False)
        if st.st_ctime_ns >= self._laid_out_ns:
            return None
        node = await get(self._store, self._previous, dst)
        if node is None or node.is_dir or node.size != st.st_size:
            return None
        return Put(dst, await file_refs(self._store, node))

    async def _file(self, host: Path, dst: str) -> Put:
        refs = await self._writer.write_file(_blocks(host))
        size = sum(r.length for r in refs)
        self.stored += size
        return Put(dst, refs)

    def _inside(self, host: Path) -> bool:
        return host.absolute().is_relative_to(self._pfs.absolute())

    def _may_read(self, host: Path) -> bool:
        """A host file out of /pfs: only what the sandbox itself could read
        (a directory: each file is checked as it is reached)."""
        return self._readable is not None and self._readable(host)

    def _host(self, sandbox: str) -> Path | None:
        """Where a sandbox path is on this machine (None: private to the sandbox)."""
        if sandbox == PFS or sandbox.startswith(PFS + "/"):
            return self._pfs / sandbox[len(PFS) :].lstrip("/")
        if any(sandbox == p or sandbox.startswith(p + "/") for p in _PRIVATE):
            return None
        return Path(sandbox)

    def _resolve(self, sandbox: str) -> str:
        """The sandbox path with every symlink in it followed."""
        parts = deque(sandbox.split("/"))
        done: list[str] = []
        hops = 0
        while parts:
            name = parts.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                if done:
                    done.pop()
                continue
            here = "/" + "/".join([*done, name])
            host = self._host(here)
            if host is not None and host.is_symlink():
                hops += 1
                if hops > _MAX_HOPS:
                    raise FailedPrecondition(
                        f"too many levels of symlinks in {sandbox}", path=sandbox
                    )
                target = os.readlink(host)
                if target.startswith("/"):
                    done = []
                parts.extendleft(reversed(target.split("/")))
                continue
            done.append(name)
        return "/" + "/".join(done)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


async def _blocks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        if size <= _SMALL:
            data = f.read()  # to the end, even if the file grew meanwhile
            if data:
                yield data
            return
        while block := await asyncio.to_thread(f.read, _READ):
            yield block


async def stats_tree(
    store: ObjectStore,
    task: pachinternal.DatumTask,
    *,
    job_id: str,
    stats: pps_pb2.ProcessStats,
    logs: Iterable[pps_pb2.LogMessage],
    output_tree: str = "",
    failure: str = "",
) -> TreeRoot:
    """The datum's stats as Pachyderm 1.7 lays them out under ``/<datum id>``:
    ``job:<job id>`` (empty), ``logs`` (one JSON LogMessage a line),
    ``stats`` (JSON ProcessStats), ``pfs/<input>/<path>`` and ``pfs/out``
    (by reference), and ``failure`` (the reason) when it failed."""
    base = f"/{task.id}"
    writer = FileWriter(store)

    async def text(data: bytes) -> list[DataRef]:
        async def one() -> AsyncIterator[bytes]:
            yield data

        return await writer.write_file(one())

    lines = "".join(json_format.MessageToJson(m, indent=None) + "\n" for m in logs)
    ops: list[Op] = [
        Put(f"{base}/job:{job_id}"),
        Put(f"{base}/logs", await text(lines.encode())),
        Put(f"{base}/stats", await text(json_format.MessageToJson(stats).encode())),
    ]
    for inp in task.inputs:
        path = normalize(inp.path)
        dst = f"{base}/pfs/{inp.name}" + ("" if path == "/" else path)
        ops.append(Copy(inp.tree, path, dst))
    if output_tree:
        ops.append(Copy(output_tree, "/", f"{base}/pfs/out"))
    if failure:
        ops.append(Put(f"{base}/failure", await text(failure.encode())))
    await writer.flush()

    async def stream() -> AsyncIterator[Op]:
        for op in ops:
            yield op

    return await build(store, None, stream())
