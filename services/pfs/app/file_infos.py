"""FileInfos from tree nodes, as Pachyderm 1.7 reports them.

A file's ``size_bytes`` is what get-file returns for it: its content plus
its directory's header and footer (1.7 counts them in a split file's size).
A directory's is the total of the files below it (headers and footers not
counted, 0006). Inspecting a directory lists its children's names, up to
``CHILDREN_MAX`` names or ``CHILDREN_BYTES`` bytes of them (a million-entry
directory would not fit in a reply); ListFile pages through the rest."""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass, field

from libs import trees
from libs.api.pfs import pfs_pb2 as pfs
from libs.objects import ObjectStore
from libs.trees.paths import parent_of
from libs.trees.seek import list_dir_after

CHILDREN_MAX = 10_000
CHILDREN_BYTES = 256 * 1024


@dataclass
class InfoMaker:
    """Builds FileInfos for nodes of one tree, remembering the header+footer
    size of the last directory asked about (listings and walks ask about the
    same parent again and again)."""

    store: ObjectStore
    root: str
    commit: pfs.Commit
    _parent: str | None = field(default=None, init=False)
    _extra: int = field(default=0, init=False)

    async def info(self, path: str, node: trees.Node, children: bool = False) -> pfs.FileInfo:
        size = node.size
        if not node.is_dir and path != "/":
            size += await self._header_footer_size(parent_of(path))
        fi = pfs.FileInfo(
            file=pfs.File(commit=self.commit, path=path),
            file_type=pfs.DIR if node.is_dir else pfs.FILE,
            size_bytes=size,
            hash=bytes.fromhex(node.hash),
        )
        if children and node.is_dir:
            fi.children.extend(await self._children(path))
        return fi

    def known_parent(self, path: str, header_footer_size: int) -> None:
        self._parent, self._extra = path, header_footer_size

    async def _header_footer_size(self, directory: str) -> int:
        if directory != self._parent:
            node = await trees.get(self.store, self.root, directory)
            extra = 0
            if node is not None:
                header, footer = await trees.header_footer(self.store, node)
                extra = sum(r.length for r in header) + sum(r.length for r in footer)
            self.known_parent(directory, extra)
        return self._extra

    async def _children(self, path: str) -> list[str]:
        names: list[str] = []
        used = 0
        async with aclosing(list_dir_after(self.store, self.root, path)) as entries:
            async for child in entries:
                used += len(child.name) + 2
                if len(names) >= CHILDREN_MAX or used > CHILDREN_BYTES:
                    break
                names.append(child.name)
        return names


async def header_footer_size(store: ObjectStore, node: trees.Node) -> int:
    header, footer = await trees.header_footer(store, node)
    return sum(r.length for r in header) + sum(r.length for r in footer)
