"""A job's output tree from its datums' output trees.

``merge_outputs`` puts every file of every datum output into one tree; a
path written by several datums holds their contents concatenated in datum
order, directories merge, and an empty directory a datum left stays. Only
refs move: no file byte is read.

``merge_incremental`` derives the output of a job whose datums differ from
the previous job's by a few removed and added datums from the previous
output, when no output path of those datums is shared with a datum that
stays; it returns None when it cannot tell, and the caller merges in full.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from contextlib import aclosing
from dataclasses import dataclass

from libs.api.internal import tree_pb2
from libs.errors import FailedPrecondition
from libs.objects import ObjectStore
from libs.trees import (
    EMPTY_ROOT,
    DataRef,
    Delete,
    Node,
    Op,
    Put,
    SetHeader,
    TreeRoot,
    build,
    file_refs,
    get,
)
from libs.trees.codec import load_dir
from libs.trees.model import node_from_child
from libs.trees.pages import iter_children
from libs.trees.paths import ROOT, join, parent_of
from libs.trees.read import root_entry
from libs.trees.stackless import Descend, flatten

AHEAD = 128  # datum outputs read concurrently by merge_outputs
SMALL_OUTPUT = 256  # outputs with more files than this are streamed, not read ahead whole


async def merge_outputs(store: ObjectStore, outputs: AsyncIterable[str]) -> TreeRoot:
    """One tree holding every datum output (roots in datum order; empty ones skipped).

    FailedPrecondition when one datum's file is another's directory."""
    return await build(store, None, _merged_ops(store, outputs))


async def merge_incremental(
    store: ObjectStore,
    previous_output: str,
    removed: AsyncIterable[str],
    added: AsyncIterable[str],
) -> TreeRoot | None:
    """``previous_output`` without the ``removed`` datums' outputs, with the
    ``added`` ones (output roots, each stream in datum order); None when that
    is not sure to equal a full merge of the new datum set.

    It is sure when every file of a removed datum is, in the previous
    output, exactly that datum's content (so no other datum wrote it), no
    two removed datums wrote the same path, no removed datum left an empty
    directory, and every file of an added datum is new to the previous
    output or was a removed datum's. Directories left without files by the
    removal are dropped. Limit: a staying datum's *empty* file (or empty
    directory) at a path a removed datum also wrote cannot be told apart,
    and goes with it. The added datums' ops are held in memory until the
    checks pass (an incremental change is small)."""
    gone = await _removed_files(store, removed)
    if gone is None:
        return None
    for path, refs in gone.items():
        node = await get(store, previous_output, path)
        if node is None or node.is_dir or await file_refs(store, node) != refs:
            return None
    new = await _added_ops(store, previous_output, added, gone)
    if new is None:
        return None
    ops: list[Op] = [Delete(p) for p in gone]
    ops.extend(await _emptied_dirs(store, previous_output, gone, new.below))
    ops.extend(new.ops)
    try:
        return await build(store, previous_output, _stream(ops))
    except FailedPrecondition:
        return None  # a file/directory conflict: the full merge reports it


async def _merged_ops(store: ObjectStore, outputs: AsyncIterable[str]) -> AsyncIterator[Op]:
    async for item in _read_ahead(store, outputs):
        if isinstance(item, str):
            async for path, node in _entries(store, item):
                op = await _op(store, path, node)
                if op is not None:
                    yield op
        else:
            for op in item:
                yield op


async def _read_ahead(
    store: ObjectStore, outputs: AsyncIterable[str]
) -> AsyncIterator[list[Op] | str]:
    """Each non-empty output's ops, in order, read up to ``AHEAD`` outputs in
    advance (each read waits on the object store's threads, so reading one
    at a time would leave them idle); a big output comes as its root, to be
    streamed."""
    pending: deque[asyncio.Future[list[Op] | str]] = deque()
    try:
        async for root in outputs:
            if not root or root == EMPTY_ROOT:
                continue
            pending.append(asyncio.ensure_future(_datum_ops(store, root)))
            if len(pending) >= AHEAD:
                yield await pending.popleft()
        while pending:
            yield await pending.popleft()
    finally:
        for fut in pending:
            fut.cancel()
            fut.add_done_callback(_retrieve)


def _retrieve(fut: asyncio.Future[list[Op] | str]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _datum_ops(store: ObjectStore, root: str) -> list[Op] | str:
    """A datum output's ops, or its root when it holds more than ``SMALL_OUTPUT`` files."""
    _, node = await root_entry(store, root)
    if node.files > SMALL_OUTPUT:
        return root
    ops: list[Op] = []
    async for path, entry in flatten(_below(store, ROOT, node)):
        op = await _op(store, path, entry)
        if op is not None:
            ops.append(op)
    return ops


async def _op(store: ObjectStore, path: str, node: Node) -> Op | None:
    """The write that carries one entry of a datum output into the merged tree."""
    if not node.is_dir:
        return Put(path, await file_refs(store, node), append=True)
    if node.files == 0:
        return SetHeader(path, ())  # makes the (empty) directory, leaves entries alone
    return None


async def _entries(store: ObjectStore, root: str) -> AsyncIterator[tuple[str, Node]]:
    """Every file and directory of a tree below its root, depth first."""
    _, node = await root_entry(store, root)
    async for item in flatten(_below(store, ROOT, node)):
        yield item


async def _below(
    store: ObjectStore, path: str, node: tree_pb2.DirNode
) -> AsyncGenerator[tuple[str, Node] | Descend[tuple[str, Node]], None]:
    """A directory's entries; subdirectories are ``Descend``-ed into (paths
    nest deeper than Python's stack)."""
    async with aclosing(iter_children(store, node)) as entries:
        async for entry in entries:
            sub = join(path, entry.name)
            yield sub, node_from_child(entry)
            if entry.kind == tree_pb2.DIR:
                yield Descend(_below(store, sub, await load_dir(store, entry.hash)))


async def _removed_files(
    store: ObjectStore, removed: AsyncIterable[str]
) -> dict[str, tuple[DataRef, ...]] | None:
    """Path -> content of every removed datum's file; None when two share a
    path or one left an empty directory."""
    files: dict[str, tuple[DataRef, ...]] = {}
    async for root in removed:
        if not root or root == EMPTY_ROOT:
            continue
        async for path, node in _entries(store, root):
            if node.is_dir:
                if node.files == 0:
                    return None
                continue
            if path in files:
                return None
            files[path] = await file_refs(store, node)
    return files


@dataclass
class _Added:
    ops: list[Op]
    below: set[str]  # every directory that holds something added (and added directories)


async def _added_ops(
    store: ObjectStore,
    previous_output: str,
    added: AsyncIterable[str],
    gone: dict[str, tuple[DataRef, ...]],
) -> _Added | None:
    """The writes of the added datums; None when one writes a file the
    previous output has and no removed datum wrote."""
    out = _Added([], set())
    seen: set[str] = set()
    async for root in added:
        if not root or root == EMPTY_ROOT:
            continue
        async for path, node in _entries(store, root):
            op = await _op(store, path, node)
            if op is None:
                continue
            fresh = isinstance(op, Put) and path not in gone and path not in seen
            if fresh and await get(store, previous_output, path) is not None:
                return None
            seen.add(path)
            out.ops.append(op)
            out.below.update(_dirs_of(path, include_self=isinstance(op, SetHeader)))
    return out


async def _emptied_dirs(
    store: ObjectStore,
    previous_output: str,
    gone: dict[str, tuple[DataRef, ...]],
    keep: set[str],
) -> list[Op]:
    """Deletes of the directories whose every file is removed and that get
    nothing added (topmost ones only)."""
    counts: dict[str, int] = {}
    for path in gone:
        for d in _dirs_of(path, include_self=False):
            counts[d] = counts.get(d, 0) + 1
    ops: list[Op] = []
    dropped: list[str] = []
    for d in sorted(counts, key=len):
        if d in keep or any(d.startswith(x + "/") for x in dropped):
            continue
        node = await get(store, previous_output, d)
        if node is not None and node.is_dir and node.files == counts[d]:
            ops.append(Delete(d))
            dropped.append(d)
    return ops


def _dirs_of(path: str, include_self: bool) -> Iterable[str]:
    """The directories above ``path`` (not the root), and ``path`` itself if asked."""
    if include_self and path != ROOT:
        yield path
    d = parent_of(path)
    while d != ROOT:
        yield d
        d = parent_of(d)


async def _stream(ops: Iterable[Op]) -> AsyncIterator[Op]:
    for op in ops:
        yield op
