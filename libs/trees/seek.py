"""Reading from a cursor on, for pages: a directory's entries after a name,
and glob matches after a path, skipping the pages before the cursor unread.

(Kept out of ``libs.trees``'s ``__init__``: import it as ``libs.trees.seek``.)"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from libs.api.internal import tree_pb2
from libs.errors import NotFound
from libs.objects import ObjectStore
from libs.trees.codec import load_dir
from libs.trees.glob import compile_pattern
from libs.trees.model import Node, node_from_child
from libs.trees.pages import find_child, iter_children
from libs.trees.paths import ROOT, join, normalize, segments, sort_key
from libs.trees.read import get_child, root_entry


async def list_dir_after(
    store: ObjectStore, root: str, path: str, after: str | None = None, limit: int | None = None
) -> AsyncGenerator[Node, None]:
    """The entries of directory ``path`` whose names sort after ``after``
    (all of them for None), in name order, at most ``limit`` of them.

    NotFound if the path does not exist; a file lists as itself (unless
    ``after`` is given)."""
    path = normalize(path)
    child = await get_child(store, root, path)
    if child is None:
        raise NotFound(f"path {path} not found", path=path)
    if child.kind != tree_pb2.DIR:
        if after is None:
            yield node_from_child(child)
        return
    sent = 0
    async for entry in iter_children(store, await load_dir(store, child.hash), after):
        if after is not None and entry.name <= after:
            continue
        if limit is not None and sent >= limit:
            return
        sent += 1
        yield node_from_child(entry)


async def glob_after(
    store: ObjectStore, root: str, pattern: str, after: str | None = None
) -> AsyncGenerator[tuple[str, Node], None]:
    """``glob`` (same rules, same path order) from the first match after path
    ``after`` on: the directories on the cursor's path are entered at the
    cursor's name, so the matches before it are not read again."""
    full, segs = compile_pattern(pattern)
    child, node = await root_entry(store, root)
    cursor = segments(normalize(after)) if after else None
    key = sort_key(normalize(after)) if after else None
    async for path, found in _match(store, ROOT, child, segs, 0, full, node, cursor):
        if key is None or sort_key(path) > key:
            yield path, found


def _bound(cursor: list[str] | None, level: int) -> str | None:
    """The cursor's name at ``level`` when the walk is on the cursor's path."""
    return cursor[level] if cursor is not None and level < len(cursor) else None


def _on_path(cursor: list[str] | None, level: int, name: str) -> list[str] | None:
    return cursor if _bound(cursor, level) == name else None


async def _match(
    store: ObjectStore,
    path: str,
    child: tree_pb2.Child,
    segs: list[Any],
    depth: int,
    full: re.Pattern[str],
    loaded: tree_pb2.DirNode | None,
    cursor: list[str] | None,
) -> AsyncGenerator[tuple[str, Node], None]:
    if depth == len(segs):
        yield path, node_from_child(child)
        return
    seg = segs[depth]
    if seg.deep:
        if full.match(path):
            yield path, node_from_child(child)
        if child.kind == tree_pb2.DIR:
            async for sub, node in _walk(store, path, child, depth, cursor):
                if full.match(sub):
                    yield sub, node
        return
    if child.kind != tree_pb2.DIR:
        return
    dnode = loaded if loaded is not None else await load_dir(store, child.hash)
    bound = _bound(cursor, depth)
    if seg.literal is not None:
        if bound is not None and seg.literal < bound:
            return
        found = await find_child(store, dnode, seg.literal)
        if found is not None:
            sub_cursor = _on_path(cursor, depth, found.name)
            sub = join(path, found.name)
            async for item in _match(store, sub, found, segs, depth + 1, full, None, sub_cursor):
                yield item
        return
    start = max(seg.prefix, bound) if bound is not None else (seg.prefix or None)
    async with aclosing(iter_children(store, dnode, start)) as entries:
        async for entry in entries:
            if not entry.name.startswith(seg.prefix):
                break
            if seg.regex.match(entry.name):
                sub_cursor = _on_path(cursor, depth, entry.name)
                sub = join(path, entry.name)
                async for item in _match(
                    store, sub, entry, segs, depth + 1, full, None, sub_cursor
                ):
                    yield item


async def _walk(
    store: ObjectStore, path: str, child: tree_pb2.Child, level: int, cursor: list[str] | None
) -> AsyncGenerator[tuple[str, Node], None]:
    """Everything below ``child`` in walk order, from the cursor's path on."""
    bound = _bound(cursor, level)
    async with aclosing(iter_children(store, await load_dir(store, child.hash), bound)) as it:
        async for entry in it:
            sub = join(path, entry.name)
            yield sub, node_from_child(entry)
            if entry.kind == tree_pb2.DIR:
                async for item in _walk(
                    store, sub, entry, level + 1, _on_path(cursor, level, entry.name)
                ):
                    yield item
