"""A directory's entries as a tree of pages with content-defined boundaries.

Entries are cut into level-0 pages; the refs to those pages (first name,
hash, totals) are cut the same way into level-1 pages, and so on, until one
level fits in a single page, which is inlined in the ``DirNode``. A page ends
after an entry whose name hashes to 0 mod ``TARGET`` (or at ``MAX_ITEMS``),
so boundaries depend only on the names: the same entries always give the
same pages whatever edits led to them, an edit rewrites only the pages on its
path, and equal pages of two directories are skipped by hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from libs.api.internal import tree_pb2
from libs.objects import ObjectStore
from libs.trees.codec import encode, load_page, put_once

TARGET = 256  # average entries per page
MAX_ITEMS = 1024  # a page never holds more

Item = tree_pb2.Child | tree_pb2.PageRef


def is_boundary(level: int, name: str) -> bool:
    """Whether a page of ``level`` ends after the entry (or page) named ``name``."""
    digest = hashlib.blake2s(name.encode("ascii"), digest_size=8, person=b"lvl%d" % level)
    return int.from_bytes(digest.digest(), "little") % TARGET == 0


def top_items(node: tree_pb2.DirNode) -> Sequence[Item]:
    return node.children if node.height == 0 else node.pages


def page_items(page: tree_pb2.Page) -> Sequence[Item]:
    return page.children if page.level == 0 else page.pages


@dataclass
class _Held:
    """The first page of a level, kept back in case it is the only one (then inlined)."""

    ref: tree_pb2.PageRef
    page: tree_pb2.Page | None
    data: bytes | None


@dataclass
class DirWriter:
    """Builds a directory's page tree from its entries, given in name order.

    ``pass_page`` reuses a whole unchanged page when every level below it is
    at a page boundary (``empty_below``), so it is not read or rewritten."""

    store: ObjectStore
    _buf: list[list[Item]] = field(default_factory=list)
    _pages: list[int] = field(default_factory=list)
    _held: list[_Held | None] = field(default_factory=list)

    def _level(self, level: int) -> None:
        while len(self._buf) <= level:
            self._buf.append([])
            self._pages.append(0)
            self._held.append(None)

    def empty_below(self, level: int) -> bool:
        """Whether a whole level ``level - 1`` page can be added unchanged: every
        lower level is at a page boundary, and no lower level holds back its
        first page (which would have to come before it)."""
        return not any(self._buf[:level]) and all(h is None for h in self._held[: level - 1])

    async def add_child(self, child: tree_pb2.Child) -> None:
        await self._add(0, child, child.name)

    async def pass_page(self, level: int, ref: tree_pb2.PageRef) -> None:
        """Add an existing level-``level`` page (caller checked ``empty_below(level + 1)``)."""
        self._level(level)
        await self._emit(level, _Held(ref, None, None))

    async def _add(self, level: int, item: Item, name: str) -> None:
        self._level(level)
        buf = self._buf[level]
        buf.append(item)
        if len(buf) >= MAX_ITEMS or is_boundary(level, name):
            await self._cut(level)

    async def _cut(self, level: int) -> None:
        items = self._buf[level]
        self._buf[level] = []
        ref = tree_pb2.PageRef()
        if level == 0:
            page = tree_pb2.Page(level=0, children=items)  # type: ignore[arg-type]
            ref.first = page.children[0].name
            for c in page.children:
                ref.size += c.size
                ref.files += c.files
            ref.count = len(page.children)
        else:
            page = tree_pb2.Page(level=level, pages=items)  # type: ignore[arg-type]
            ref.first = page.pages[0].first
            for p in page.pages:
                ref.size += p.size
                ref.files += p.files
                ref.count += p.count
        ref.hash, data = encode(tree_pb2.TreeObject(page=page))
        await self._emit(level, _Held(ref, page, data))

    async def _emit(self, level: int, done: _Held) -> None:
        """A level-``level`` page is complete: it becomes an item of level + 1."""
        self._pages[level] += 1
        if self._pages[level] == 1:
            self._held[level] = done
            return
        held = self._held[level]
        if held is not None:
            self._held[level] = None
            await self._promote(level, held)
        await self._promote(level, done)

    async def _promote(self, level: int, done: _Held) -> None:
        if done.data is not None:
            await put_once(self.store, done.ref.hash, done.data)
        await self._add(level + 1, done.ref, done.ref.first)

    async def finish(self) -> tree_pb2.DirNode:
        """The directory node (without header/footer) holding the top level inline.

        Levels are closed bottom up; the top is the first level that ends with
        a single page and has nothing above it (a page passed on whole may sit
        above lower levels still being filled)."""
        level = 0
        while True:
            self._level(level)
            if self._buf[level]:
                await self._cut(level)
            held = self._held[level]
            if not self._above(level):
                if held is None:
                    return tree_pb2.DirNode()
                return await self._inline(level, held)
            if held is not None:
                self._held[level] = None
                await self._promote(level, held)
            level += 1

    def _above(self, level: int) -> bool:
        return any(
            self._buf[k] or self._held[k] is not None or self._pages[k]
            for k in range(level + 1, len(self._buf))
        )

    async def _inline(self, level: int, held: _Held) -> tree_pb2.DirNode:
        page = held.page if held.page is not None else await load_page(self.store, held.ref.hash)
        node = tree_pb2.DirNode(
            height=level, size=held.ref.size, files=held.ref.files, count=held.ref.count
        )
        if level == 0:
            node.children.extend(page.children)
        else:
            node.pages.extend(page.pages)
        return node


async def iter_children(
    store: ObjectStore, node: tree_pb2.DirNode, start: str | None = None
) -> AsyncGenerator[tree_pb2.Child, None]:
    """A directory's entries in name order, from the first name >= ``start``.

    Reads one page per level at a time; pages wholly before ``start`` are skipped."""
    async for child in _iter_items(store, node.height, top_items(node), start):
        yield child


async def _iter_items(
    store: ObjectStore, level: int, items: Sequence[Item], start: str | None
) -> AsyncGenerator[tree_pb2.Child, None]:
    if level == 0:
        for child in items:
            assert isinstance(child, tree_pb2.Child)
            if start is None or child.name >= start:
                yield child
        return
    for i, ref in enumerate(items):
        assert isinstance(ref, tree_pb2.PageRef)
        if start is not None and i + 1 < len(items):
            nxt = items[i + 1]
            assert isinstance(nxt, tree_pb2.PageRef)
            if nxt.first <= start:
                continue
        page = await load_page(store, ref.hash)
        async for child in _iter_items(store, level - 1, page_items(page), start):
            yield child


async def find_child(
    store: ObjectStore, node: tree_pb2.DirNode, name: str
) -> tree_pb2.Child | None:
    """The entry called ``name``, reading one page per level."""
    level, items = node.height, top_items(node)
    while level > 0:
        pick: tree_pb2.PageRef | None = None
        for ref in items:
            assert isinstance(ref, tree_pb2.PageRef)
            if ref.first > name:
                break
            pick = ref
        if pick is None:
            return None
        page = await load_page(store, pick.hash)
        level, items = level - 1, page_items(page)
    for child in items:
        assert isinstance(child, tree_pb2.Child)
        if child.name == name:
            return child
    return None
