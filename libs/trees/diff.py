"""Diff two trees in O(changes): equal entries and equal pages are skipped by hash.

Yields ``(path, old, new)`` in path order for every added (old None),
removed (new None) or changed file, and for directories that were added,
removed or replaced by a file (or the reverse), followed by everything below
them. A directory whose contents changed is not itself reported unless
``shallow``, which reports the changed direct entries of ``prefix`` only.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

from libs.api.internal import tree_pb2
from libs.objects import ObjectStore
from libs.trees.codec import load_dir, load_page
from libs.trees.model import Node, node_from_child
from libs.trees.pages import Item, page_items, top_items
from libs.trees.paths import ROOT, join, normalize
from libs.trees.read import get_child, walk_below
from libs.trees.stackless import Descend, flatten

Change = tuple[str, Node | None, Node | None]


async def diff(
    store: ObjectStore,
    old_root: str,
    new_root: str,
    prefix: str = ROOT,
    shallow: bool = False,
    old_prefix: str | None = None,
) -> AsyncIterator[Change]:
    """What changed between two trees at and below ``prefix``, streamed.

    With ``old_prefix``, the old tree is read at that path instead and
    compared with the new tree at ``prefix``; paths are the new tree's."""
    prefix = normalize(prefix)
    old = await get_child(store, old_root, normalize(old_prefix or prefix))
    new = await get_child(store, new_root, prefix)
    async for change in flatten(_entry(store, prefix, old, new, shallow, True)):
        yield change


def _node(child: tree_pb2.Child | None) -> Node | None:
    return None if child is None else node_from_child(child)


async def _entry(
    store: ObjectStore,
    path: str,
    old: tree_pb2.Child | None,
    new: tree_pb2.Child | None,
    shallow: bool,
    top: bool,
) -> AsyncGenerator[Change | Descend[Change], None]:
    """One entry's changes; a changed directory's entries are ``Descend``-ed
    into (``flatten`` keeps the stack: paths nest deeper than Python's)."""
    if old is not None and new is not None and old.hash == new.hash and old.kind == new.kind:
        return
    old_dir = old is not None and old.kind == tree_pb2.DIR
    new_dir = new is not None and new.kind == tree_pb2.DIR
    if old_dir and new_dir:
        assert old is not None and new is not None
        if shallow and not top:
            yield path, _node(old), _node(new)
            return
        a = _Cursor(store, await load_dir(store, old.hash))
        b = _Cursor(store, await load_dir(store, new.hash))
        async with aclosing(_children(a, b)) as entries:
            async for name, x, y in entries:
                yield Descend(_entry(store, join(path, name), x, y, shallow, False))
        return
    if old is None and new is None:
        return
    yield path, _node(old), _node(new)
    if shallow:
        return
    if old_dir:
        assert old is not None
        async for sub, node in walk_below(store, path, old):
            yield sub, node, None
    if new_dir:
        assert new is not None
        async for sub, node in walk_below(store, path, new):
            yield sub, None, node


@dataclass
class _Frame:
    level: int
    items: Sequence[Item]
    pos: int = 0


@dataclass
class _Cursor:
    """The entries of one directory, in order, with pages left unread until needed."""

    store: ObjectStore
    node: tree_pb2.DirNode
    stack: list[_Frame] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stack.append(_Frame(self.node.height, top_items(self.node)))

    def front(self) -> tuple[int, Item] | None:
        while self.stack and self.stack[-1].pos >= len(self.stack[-1].items):
            self.stack.pop()
        if not self.stack:
            return None
        top = self.stack[-1]
        return top.level, top.items[top.pos]

    def advance(self) -> None:
        self.stack[-1].pos += 1

    async def expand(self) -> None:
        top = self.stack[-1]
        ref = top.items[top.pos]
        assert isinstance(ref, tree_pb2.PageRef)
        top.pos += 1
        page = await load_page(self.store, ref.hash)
        self.stack.append(_Frame(top.level - 1, page_items(page)))


async def _children(
    a: _Cursor, b: _Cursor
) -> AsyncGenerator[tuple[str, tree_pb2.Child | None, tree_pb2.Child | None], None]:
    """Entries that differ between two directories, skipping equal pages unread."""
    while True:
        fa, fb = a.front(), b.front()
        if fa is None and fb is None:
            return
        x = fa[1] if fa is not None else None
        y = fb[1] if fb is not None else None
        if isinstance(x, tree_pb2.PageRef) and isinstance(y, tree_pb2.PageRef):
            if x.hash == y.hash:
                a.advance()
                b.advance()
            elif fa is not None and fb is not None and fa[0] >= fb[0]:
                await a.expand()
            else:
                await b.expand()
            continue
        if isinstance(x, tree_pb2.PageRef):
            await a.expand()
            continue
        if isinstance(y, tree_pb2.PageRef):
            await b.expand()
            continue
        if y is None or (x is not None and x.name < y.name):
            assert x is not None
            a.advance()
            yield x.name, x, None
        elif x is None or y.name < x.name:
            b.advance()
            yield y.name, None, y
        else:
            a.advance()
            b.advance()
            if x.hash != y.hash or x.kind != y.kind:
                yield x.name, x, y
