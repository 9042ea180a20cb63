"""The mark phase: from tree roots and data refs to every object they use.

A tree object (``trees/…``) is loaded once, however many trees share it: a
key enters the ``MarkSet`` once and only then is it loaded and its children
queued. Directories give their header/footer refs, their children (a stored
file's ``FileNode`` and a directory's ``DirNode`` by hash, an inlined
file's refs directly) and their pages; a ``FileNode`` gives its refs. Refs
name chunks or packs, both under ``chunks/`` (``libs.objects.chunk_key``).
``concurrency`` objects are loaded at a time.

A live tree object that is missing or undecodable stops the collection
(``Internal``): what it references cannot be known, so nothing is swept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from google.protobuf.message import DecodeError

from libs.api.internal import tree_pb2
from libs.errors import Internal, InvalidArgument, ObjectNotFound
from libs.objects import ObjectStore, chunk_key
from libs.trees import EMPTY_ROOT, tree_key
from services.pfs.app.gc_marks import MarkSet

CONCURRENCY = 16


class TreeMarker:
    """Marks tree objects and chunks reachable from what it is given."""

    def __init__(self, store: ObjectStore, marks: MarkSet, concurrency: int = CONCURRENCY) -> None:
        self._store = store
        self._marks = marks
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers = [asyncio.create_task(self._work()) for _ in range(max(1, concurrency))]
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self.roots = 0
        self.loaded = 0

    async def tree(self, root: str) -> None:
        """Mark the tree with root hash ``root`` (an empty string: none)."""
        if not root:
            return
        self.roots += 1
        await self._trees([root])

    async def refs(self, chunks: Iterable[str]) -> None:
        """Mark the chunks (or packs) named by data refs' ``chunk`` fields."""
        keys = [_chunk(c) for c in chunks]
        self.roots += len(keys)
        await self._marks.add_new(keys)

    async def wait(self) -> None:
        """Return once every object reachable from what was given is marked;
        raise the first failure of the walk."""
        join = asyncio.ensure_future(self._queue.join())
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait({join, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            join.cancel()
            failed.cancel()
        self._raise_failure()

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    # --- internals --------------------------------------------------------------

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _trees(self, hashes: Iterable[str]) -> None:
        keys = [tree_key(h) for h in hashes]
        for key in await self._marks.add_new(keys):
            digest = key.rsplit("/", 1)[1]
            if digest != EMPTY_ROOT:  # the empty directory needs no object
                self._queue.put_nowait(digest)

    async def _work(self) -> None:
        while True:
            digest = await self._queue.get()
            try:
                if self._failure is None:
                    await self._visit(digest)
            except Exception as exc:  # the first failure ends the mark phase
                if self._failure is None:
                    self._failure = exc
                    self._failed.set()
            finally:
                self._queue.task_done()

    async def _visit(self, digest: str) -> None:
        obj = await self._load(digest)
        self.loaded += 1
        trees: list[str] = []
        chunks: list[str] = []
        which = obj.WhichOneof("node")
        if which == "file":
            chunks.extend(r.chunk for r in obj.file.refs)
        elif which == "dir":
            d = obj.dir
            chunks.extend(r.chunk for r in d.header)
            chunks.extend(r.chunk for r in d.footer)
            _children(d.children, trees, chunks)
            trees.extend(p.hash for p in d.pages)
        elif which == "page":
            _children(obj.page.children, trees, chunks)
            trees.extend(p.hash for p in obj.page.pages)
        if chunks:
            await self._marks.add_new([_chunk(c) for c in chunks])
        if trees:
            await self._trees(trees)

    async def _load(self, digest: str) -> tree_pb2.TreeObject:
        try:
            data = await self._store.get(tree_key(digest))
        except ObjectNotFound:
            raise Internal(
                f"garbage collection stopped: live tree object {digest} is missing "
                "(nothing was deleted)",
                hash=digest,
            ) from None
        obj = tree_pb2.TreeObject()
        try:
            obj.ParseFromString(data)
        except DecodeError:
            raise Internal(
                f"garbage collection stopped: live tree object {digest} cannot be decoded "
                "(nothing was deleted)",
                hash=digest,
            ) from None
        return obj


def _children(children: Iterable[tree_pb2.Child], trees: list[str], chunks: list[str]) -> None:
    for child in children:
        if child.kind == tree_pb2.DIR or child.stored:
            trees.append(child.hash)
        chunks.extend(r.chunk for r in child.refs)


def _chunk(chunk: str) -> str:
    try:
        return chunk_key(chunk)
    except InvalidArgument:
        raise Internal(
            f"garbage collection stopped: a live data ref names {chunk!r}, which is no chunk "
            "(nothing was deleted)",
            chunk=chunk,
        ) from None
