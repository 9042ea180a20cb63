"""Lay one datum out in a scratch directory: ``<scratch>/pfs/<input>/...``.

Each input's matched node (a file or a whole directory) of its commit's tree
appears at ``<scratch>/pfs/<input>/<matched path>`` (Pachyderm 1.7 keeps the
matched path under ``/pfs/<input>``). A file's bytes are what reading it in
pfs returns: its directory's header, its content, its directory's footer.
``empty_files`` inputs get empty files; ``lazy`` inputs get named pipes that
``LazyFeeder`` fills only when the user code opens them.

``InputIndex`` maps a path as the user code sees it (``/pfs/<input>/...``)
back to the input files' refs, so the upload can store a symlink to an input
by reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from libs.api.internal import pps_work_pb2 as pachinternal
from libs.errors import InvalidArgument, NotFound
from libs.filedata import read_refs
from libs.objects import ObjectStore
from libs.trees import DataRef, effective_refs, file_refs, get, header_footer, normalize, walk
from libs.trees.paths import ROOT, parent_of

PFS = "/pfs"
OUT = "out"
_PARALLEL_FILES = 8  # input files downloaded at once
_SYNC_WRITE = 64 << 10  # smaller blocks are written without a thread hop
_POLL_MIN_S = 0.001  # lazy pipes: first wait between looks for a reader
_POLL_MAX_S = 0.05
_POLL_PER_PIPE_S = 10e-6

Refs = tuple[DataRef, ...]


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """A file (``refs`` set) or directory (``refs`` None) below a matched
    node, ``rel`` relative to it (``""``: the node itself)."""

    rel: str
    refs: Refs | None


async def tree_entries(
    store: ObjectStore, tree: str, path: str, previous: str = ""
) -> AsyncIterator[TreeEntry]:
    """The node at ``path`` and everything below it, files with their
    effective refs (header + content + footer); NotFound if absent. With
    ``previous`` (a tree), only the files that are new or changed since it."""
    path = normalize(path)
    node = await get(store, tree, path)
    if node is None:
        raise NotFound(f"path {path} not found in tree {tree}", path=path, tree=tree)
    if not node.is_dir:
        if not await _unchanged(store, previous, path, node.hash):
            yield TreeEntry("", await effective_refs(store, tree, path))
        return
    frames: dict[str, tuple[Refs, Refs]] = {}
    cut = 0 if path == ROOT else len(path)
    async for sub, n in walk(store, tree, path):
        rel = sub[cut:].lstrip("/")
        if n.is_dir:
            frames[sub] = await header_footer(store, n)
            yield TreeEntry(rel, None)
        elif not await _unchanged(store, previous, sub, n.hash):
            header, footer = frames[parent_of(sub)]
            yield TreeEntry(rel, header + await file_refs(store, n) + footer)


async def _unchanged(store: ObjectStore, previous: str, path: str, node_hash: str) -> bool:
    if not previous:
        return False
    before = await get(store, previous, path)
    return before is not None and before.hash == node_hash


@dataclass
class Layout:
    """A datum laid out: ``pfs_dir`` is what the user code sees as ``/pfs``."""

    pfs_dir: Path
    download_bytes: int = 0
    seconds: float = 0.0
    lazy: list[tuple[Path, Refs]] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        return self.pfs_dir / OUT


async def lay_out(task: pachinternal.DatumTask, store: ObjectStore, pfs_dir: Path) -> Layout:
    """Write every input of ``task`` under ``pfs_dir`` (new, or holding
    only empty directories); the output directory is left to the caller."""
    started = time.monotonic()
    layout = Layout(pfs_dir)
    os.makedirs(pfs_dir, exist_ok=True)
    for inp in task.inputs:
        check_input_name(inp.name)
        base = pfs_dir / inp.name
        base.mkdir(exist_ok=True)
        dest = base / normalize(inp.path).lstrip("/")
        if inp.empty_files:
            mode = "empty"
        elif inp.lazy:
            mode = "lazy"
        else:
            mode = "copy"
        layout.download_bytes += await write_tree(
            store, inp.tree, inp.path, dest, mode=mode, lazy=layout.lazy, previous=inp.previous_tree
        )
    layout.seconds = time.monotonic() - started
    return layout


def check_input_name(name: str) -> None:
    if not name or name in (OUT, ".", "..") or "/" in name:
        raise InvalidArgument(
            f"input name {name!r} cannot be a directory under /pfs (empty, 'out' or has '/')",
            name=name,
        )


async def write_tree(
    store: ObjectStore,
    tree: str,
    path: str,
    dest: Path,
    *,
    mode: str = "copy",
    lazy: list[tuple[Path, Refs]] | None = None,
    previous: str = "",
) -> int:
    """Write the node at ``path`` of ``tree`` to ``dest``; returns the bytes
    written. ``mode``: ``copy`` (bytes), ``empty`` (empty files) or ``lazy``
    (named pipes, appended with their refs to ``lazy``). With ``previous``
    (incremental pipelines), only files new or changed since that tree."""
    written = 0
    inflight: set[asyncio.Task[int]] = set()

    async def settle(until: int) -> None:
        nonlocal written, inflight
        while len(inflight) > until:
            done, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                written += t.result()

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        async for entry in tree_entries(store, tree, path, previous):
            target = dest / entry.rel if entry.rel else dest
            if entry.refs is None:
                target.mkdir(parents=True, exist_ok=True)
            elif mode == "empty":
                target.touch()
            elif mode == "lazy":
                os.mkfifo(target, 0o644)
                if lazy is not None:
                    lazy.append((target, entry.refs))
            else:
                await settle(_PARALLEL_FILES - 1)
                inflight.add(asyncio.create_task(write_file(store, entry.refs, target)))
        await settle(0)
    finally:
        for t in inflight:
            t.cancel()
        await asyncio.gather(*inflight, return_exceptions=True)
    return written


async def write_file(store: ObjectStore, refs: Sequence[DataRef], target: Path) -> int:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    size = 0
    try:
        async for block in read_refs(store, refs):
            if len(block) < _SYNC_WRITE:
                _write_all(fd, block)
            else:
                await asyncio.to_thread(_write_all, fd, block)
            size += len(block)
    finally:
        os.close(fd)
    return size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class LazyFeeder:
    """Feeds a datum's lazy inputs (named pipes): each pipe gets its file's
    bytes once, when a reader opens it. ``stop()`` ends every feed (a pipe
    nobody opened is simply never fed) and returns the bytes fed."""

    def __init__(self, store: ObjectStore, pipes: Sequence[tuple[Path, Refs]]) -> None:
        self._store = store
        self._pipes = list(pipes)
        self._feeds: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self.fed = 0

    def start(self) -> None:
        if self._pipes and self._poller is None:
            self._poller = asyncio.create_task(self._watch())

    async def stop(self) -> int:
        tasks = [*self._feeds, *([self._poller] if self._poller else [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._feeds.clear()
        self._poller = None
        return self.fed

    async def _watch(self) -> None:
        """Look for readers (a non-blocking open for writing succeeds only
        once a reader has the pipe open), backing off while none comes."""
        pending = self._pipes
        delay = _POLL_MIN_S
        while pending:
            waiting: list[tuple[Path, Refs]] = []
            for pipe, refs in pending:
                try:
                    fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                        raise
                    waiting.append((pipe, refs))
                    continue
                task = asyncio.create_task(self._feed(fd, refs))
                self._feeds.add(task)
                task.add_done_callback(self._feeds.discard)
                delay = _POLL_MIN_S
            pending = waiting
            if pending:
                await asyncio.sleep(delay)
                # many pipes: look less often, so the looking costs little
                delay = min(delay * 2, max(_POLL_MAX_S, len(pending) * _POLL_PER_PIPE_S))

    async def _feed(self, fd: int, refs: Refs) -> None:
        try:
            async for block in read_refs(self._store, refs):
                view = memoryview(block)
                while view:
                    try:
                        n = os.write(fd, view)
                    except BlockingIOError:
                        await _writable(fd)
                        continue
                    view = view[n:]
                    self.fed += n
        except (BrokenPipeError, ConnectionResetError):
            return  # the reader stopped reading: fine
        finally:
            os.close(fd)


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


class InputIndex:
    """Which input file a path under ``/pfs`` (as the user code sees it) is."""

    def __init__(self, store: ObjectStore, inputs: Sequence[pachinternal.DatumInput]) -> None:
        self._store = store
        self._inputs = {i.name: i for i in inputs}

    def locate(self, sandbox_path: str) -> tuple[pachinternal.DatumInput, str] | None:
        """The input and tree path of ``/pfs/<input>/<path>`` if it lies in
        the datum's matched node of that input; None otherwise."""
        parts = [p for p in sandbox_path.split("/") if p]
        if len(parts) < 2 or parts[0] != PFS.strip("/"):
            return None
        inp = self._inputs.get(parts[1])
        if inp is None:
            return None
        with contextlib.suppress(InvalidArgument):
            path = normalize("/".join(parts[2:]))
            matched = normalize(inp.path)
            if matched == ROOT or path == matched or path.startswith(matched + "/"):
                return inp, path
        return None

    async def entries(self, sandbox_path: str) -> AsyncIterator[TreeEntry] | None:
        """The input file or directory at ``sandbox_path`` (as
        ``tree_entries``), or None if it is no input's."""
        found = self.locate(sandbox_path)
        if found is None:
            return None
        inp, path = found
        if await get(self._store, inp.tree, path) is None:
            return None
        return tree_entries(self._store, inp.tree, path)
