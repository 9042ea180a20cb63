"""Reading from a cursor on, for pages: a directory's entries after a name,
skipping the pages before the cursor unread (glob matches after a path:
``libs.trees.glob.glob(..., after=)``).

(Kept out of ``libs.trees``'s ``__init__``: import it as ``libs.trees.seek``.)"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from libs.api.internal import tree_pb2
from libs.errors import NotFound
from libs.objects import ObjectStore
from libs.trees.codec import load_dir
from libs.trees.model import Node, node_from_child
from libs.trees.pages import iter_children
from libs.trees.paths import normalize
from libs.trees.read import get_child


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
