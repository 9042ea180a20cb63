"""Reading a tree: look up a path, list a directory, walk a subtree.

Everything streams: a listing reads one page per level at a time, a walk
holds one listing per directory on its current path.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from libs.api.internal import tree_pb2
from libs.errors import InvalidArgument, NotFound
from libs.objects import ObjectStore
from libs.trees.codec import load_dir, load_file
from libs.trees.model import DataRef, Node, node_from_child, refs_from_pb
from libs.trees.pages import find_child, iter_children
from libs.trees.paths import ROOT, join, normalize, parent_of, segments
from libs.trees.stackless import Descend, flatten


async def root_child(store: ObjectStore, root: str) -> tree_pb2.Child:
    """The root directory as an entry (Internal if the root object is missing)."""
    return (await root_entry(store, root))[0]


async def root_entry(store: ObjectStore, root: str) -> tuple[tree_pb2.Child, tree_pb2.DirNode]:
    node = await load_dir(store, root)
    child = tree_pb2.Child(name="", kind=tree_pb2.DIR, hash=root, size=node.size, files=node.files)
    return child, node


async def get_child(store: ObjectStore, root: str, path: str) -> tree_pb2.Child | None:
    """The entry at normalized ``path``, or None; one page per level per segment."""
    child, node = await root_entry(store, root)
    for i, name in enumerate(segments(path)):
        if child.kind != tree_pb2.DIR:
            return None
        if i > 0:
            node = await load_dir(store, child.hash)
        found = await find_child(store, node, name)
        if found is None:
            return None
        child = found
    return child


async def get(store: ObjectStore, root: str, path: str) -> Node | None:
    """The file or directory at ``path``; None if there is none."""
    child = await get_child(store, root, normalize(path))
    return None if child is None else node_from_child(child)


async def file_refs(store: ObjectStore, node: Node) -> tuple[DataRef, ...]:
    """A file's content refs (loading them when not inlined); ``()`` for a directory."""
    if node.refs is not None:
        return node.refs
    if node.is_dir:
        return ()
    return refs_from_pb((await load_file(store, node.hash)).refs)


async def header_footer(
    store: ObjectStore, node: Node
) -> tuple[tuple[DataRef, ...], tuple[DataRef, ...]]:
    """A directory's header and footer refs; ``((), ())`` for a file."""
    if not node.is_dir:
        return (), ()
    d = await load_dir(store, node.hash)
    return refs_from_pb(d.header), refs_from_pb(d.footer)


async def effective_refs(store: ObjectStore, root: str, path: str) -> tuple[DataRef, ...]:
    """What reading ``path`` returns: a file as its parent's header + content +
    footer; a directory as its own header + footer. NotFound if absent."""
    path = normalize(path)
    node = await get(store, root, path)
    if node is None:
        raise NotFound(f"path {path} not found", path=path)
    if node.is_dir:
        header, footer = await header_footer(store, node)
        return header + footer
    content = await file_refs(store, node)
    parent = await get(store, root, parent_of(path))
    assert parent is not None
    header, footer = await header_footer(store, parent)
    return header + content + footer


async def list_dir(store: ObjectStore, root: str, path: str = ROOT) -> AsyncIterator[Node]:
    """The entries of directory ``path`` in name order (a file lists as itself).

    NotFound if the path does not exist."""
    path = normalize(path)
    child = await get_child(store, root, path)
    if child is None:
        raise NotFound(f"path {path} not found", path=path)
    if child.kind != tree_pb2.DIR:
        yield node_from_child(child)
        return
    async for entry in iter_children(store, await load_dir(store, child.hash)):
        yield node_from_child(entry)


async def walk(
    store: ObjectStore, root: str, prefix: str = ROOT, recursive: bool = True
) -> AsyncIterator[tuple[str, Node]]:
    """``(path, node)`` for ``prefix`` and everything below it (only its direct
    entries unless ``recursive``), depth first in name order. Nothing if absent."""
    prefix = normalize(prefix)
    child = await get_child(store, root, prefix)
    if child is None:
        return
    yield prefix, node_from_child(child)
    if child.kind == tree_pb2.DIR:
        async for item in walk_below(store, prefix, child, recursive):
            yield item


async def walk_below(
    store: ObjectStore, path: str, child: tree_pb2.Child, recursive: bool = True
) -> AsyncIterator[tuple[str, Node]]:
    """Everything below directory entry ``child`` at ``path``, depth first
    (with a stack of its own: paths nest deeper than Python's stack)."""
    async for item in flatten(_below(store, path, child, recursive)):
        yield item


async def _below(
    store: ObjectStore, path: str, child: tree_pb2.Child, recursive: bool
) -> AsyncGenerator[tuple[str, Node] | Descend[tuple[str, Node]], None]:
    async with aclosing(iter_children(store, await load_dir(store, child.hash))) as entries:
        async for entry in entries:
            sub = join(path, entry.name)
            yield sub, node_from_child(entry)
            if recursive and entry.kind == tree_pb2.DIR:
                yield Descend(_below(store, sub, entry, True))


def check_root(root: str) -> str:
    if not isinstance(root, str) or len(root) != 64:
        raise InvalidArgument(f"tree root must be a 64-digit hash, got {root!r}", root=root)
    return root
