"""File queries: InspectFile, and ListFile, GlobFile, DiffFile and FileRefs
a page at a time (a bus reply is at most 1 MiB; the gateway assembles the
pages into its unary replies and streams).

A page holds entries in path order after the request's cursor (``after``, a
full path) and says whether ``more`` follow. A listing seeks to its cursor
and a glob enters the directories on the cursor's path at the cursor (pages
before it are not read); a diff runs again from the start and skips what is
at or before the cursor, so a diff page costs the changes before it too
(``trees.diff`` has no cursor; see 0007)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TypeVar

from libs import trees
from libs.api.internal import pfs_files_pb2 as internal
from libs.api.internal import tree_pb2
from libs.api.pfs import pfs_pb2 as pfs
from libs.bus import Bus, Context
from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.objects import ObjectStore
from libs.readmodels import DocumentStore
from libs.trees.paths import parent_of, sort_key
from libs.trees.seek import list_dir_after
from services.pfs.app.commit_trees import CommitTree, commit_tree, parent_tree
from services.pfs.app.file_infos import InfoMaker, header_footer_size

# Encoded FileInfo bytes per page: well under the bus's 1 MiB.
PAGE_BYTES = 512 * 1024
# Data refs per FileRefs reply.
REFS_PAGE = 4096


@dataclass
class FileReads:
    docs: DocumentStore
    store: ObjectStore

    async def register(self, bus: Bus) -> None:
        await bus.serve("InspectFile", pfs.InspectFileRequest, self.inspect_file, kind="qry")
        await bus.serve(
            "ListFilePage", internal.ListFilePageRequest, self.list_file_page, kind="qry"
        )
        await bus.serve(
            "GlobFilePage", internal.GlobFilePageRequest, self.glob_file_page, kind="qry"
        )
        await bus.serve(
            "DiffFilePage", internal.DiffFilePageRequest, self.diff_file_page, kind="qry"
        )
        await bus.serve("FileRefs", internal.FileRefsRequest, self.file_refs, kind="qry")
        await bus.serve(
            "GlobFileRefs", internal.GlobFileRefsRequest, self.glob_file_refs, kind="qry"
        )

    async def _node(self, f: pfs.File) -> tuple[CommitTree, str, trees.Node]:
        tree = await commit_tree(self.docs, f.commit)
        path = trees.normalize(f.path or "/")
        node = await trees.get(self.store, tree.root, path)
        if node is None:
            raise NotFound(
                f"file {path} not found in commit {tree.commit.repo.name}/{tree.commit.id}",
                path=path,
            )
        return tree, path, node

    async def inspect_file(self, req: pfs.InspectFileRequest, ctx: Context) -> pfs.FileInfo:
        tree, path, node = await self._node(req.file)
        return await InfoMaker(self.store, tree.root, tree.commit).info(path, node, children=True)

    async def list_file_page(
        self, req: internal.ListFilePageRequest, ctx: Context
    ) -> internal.FileInfoPage:
        """The entries of a directory (a file: itself) after ``after``."""
        tree, path, node = await self._node(req.request.file)
        after = _cursor(req.after)
        if after is not None and (parent_of(after) != path or after == "/"):
            raise InvalidArgument(
                f"list-file cursor {req.after!r} is not an entry of {path}", after=req.after
            )
        maker = InfoMaker(self.store, tree.root, tree.commit)
        if node.is_dir:
            maker.known_parent(path, await header_footer_size(self.store, node))
        name = None if after is None else after.rsplit("/", 1)[1]
        entries = _entries(path, list_dir_after(self.store, tree.root, path, name), node.is_dir)
        return await _page(maker, entries, tree.commit)

    async def glob_file_page(
        self, req: internal.GlobFilePageRequest, ctx: Context
    ) -> internal.FileInfoPage:
        """Files and directories matching ``pattern`` after ``after``, with the
        glob rules pipelines use (``libs.trees.glob``)."""
        tree = await commit_tree(self.docs, req.request.commit)
        after = _cursor(req.after)
        matches = trees.glob(self.store, tree.root, req.request.pattern, after)
        return await _page(InfoMaker(self.store, tree.root, tree.commit), matches, tree.commit)

    async def diff_file_page(
        self, req: internal.DiffFilePageRequest, ctx: Context
    ) -> internal.DiffFilePage:
        """What changed at and below ``new_file.path`` from the old file (by
        default the same path in the new commit's parent), in Pachyderm 1.7's
        terms: files only, or with ``shallow`` the changed direct entries."""
        r = req.request
        if not r.HasField("new_file"):
            raise InvalidArgument("diff-file needs new_file")
        new = await commit_tree(self.docs, r.new_file.commit)
        path = trees.normalize(r.new_file.path or "/")
        old: CommitTree | None
        old_path = path
        if r.HasField("old_file") and r.old_file.commit.repo.name:
            old = await commit_tree(self.docs, r.old_file.commit)
            old_path = trees.normalize(r.old_file.path or "/")
        else:
            old = await parent_tree(self.docs, new)
        old_root = old.root if old is not None else trees.EMPTY_ROOT
        old_commit = old.commit if old is not None else pfs.Commit()
        page = internal.DiffFilePage(new_commit=new.commit, old_commit=old_commit)
        new_maker = InfoMaker(self.store, new.root, new.commit)
        old_maker = InfoMaker(self.store, old_root, old_commit)
        changes = _diff(self.store, old_root, new.root, path, r.shallow, old_path)
        used = 0
        async with aclosing(_after(changes, _cursor(req.after))) as items:
            async for change_path, (old_node, new_node) in items:
                if used >= PAGE_BYTES:
                    page.more = True
                    break
                if new_node is not None:
                    info = await new_maker.info(change_path, new_node)
                    page.new_files.append(info)
                    used += info.ByteSize() + 4
                if old_node is not None:
                    info = await old_maker.info(rebase(change_path, path, old_path), old_node)
                    page.old_files.append(info)
                    used += info.ByteSize() + 4
                page.last = change_path
        return page

    async def file_refs(
        self, req: internal.FileRefsRequest, ctx: Context
    ) -> internal.FileRefsResponse:
        """A page of what reading a path returns: a file as its directory's
        header + its content + the footer; a directory as its own header +
        footer (Pachyderm 1.7: an error when it has neither)."""
        tree, path, node = await self._node(req.file)
        if node.is_dir:
            header, footer = await trees.header_footer(self.store, node)
            if not header and not footer:
                raise FailedPrecondition(
                    f"cannot read directory {path}: it has no header or footer", path=path
                )
            content: tuple[trees.DataRef, ...] = ()
        else:
            content = await trees.file_refs(self.store, node)
            parent = await trees.get(self.store, tree.root, parent_of(path))
            if parent is None:
                raise FailedPrecondition(f"the directory of {path} is missing", path=path)
            header, footer = await trees.header_footer(self.store, parent)
        parts = (header, content, footer)
        total = sum(len(p) for p in parts)
        first = req.first
        page: list[tree_pb2.DataRef] = []
        offset = 0
        for part in parts:
            lo = max(first - offset, 0)
            hi = min(first + REFS_PAGE - offset, len(part))
            page.extend(trees.model.refs_to_pb(part[lo:hi]) if lo < hi else [])
            offset += len(part)
        return internal.FileRefsResponse(
            refs=page,
            more=first + REFS_PAGE < total,
            size_bytes=sum(r.length for p in parts for r in p),
        )

    async def glob_file_refs(
        self, req: internal.GlobFileRefsRequest, ctx: Context
    ) -> internal.GlobFileRefsResponse:
        """A page of what reading a glob pattern returns: the matching files
        in path order, each directory's header once before the first of its
        files and its footer after the last (a matching directory: its own
        header and footer around what matches below it). Nothing matching is
        NotFound; only directories without header or footer matching is
        FailedPrecondition. The cursor travels in the request and the reply
        (``GlobFileRefsRequest``), so no page holds more than ``REFS_PAGE``
        refs of content."""
        tree = await commit_tree(self.docs, req.file.commit)
        pattern = req.file.path or "/"
        page = _GlobPage(self.store, tree.root, list(req.open))
        after = req.after
        first = req.first
        matched = req.matched
        resp = internal.GlobFileRefsResponse(commit=tree.commit)
        matches = trees.glob(self.store, tree.root, pattern, _cursor(after))
        async with aclosing(matches) as items:
            async for path, node in items:
                if len(page.refs) >= REFS_PAGE:
                    resp.more = True
                    break
                if first == 0:
                    matched += 1
                    await page.enter(path, node)
                if node.is_dir:
                    after = path
                    continue
                content = await trees.file_refs(self.store, node)
                take = content[first : first + max(REFS_PAGE - len(page.refs), 1)]
                page.refs.extend(take)
                if first + len(take) < len(content):
                    first += len(take)
                    resp.more = True
                    break
                after, first = path, 0
        if not resp.more:
            await page.close_all()
        sent = req.refs_sent + len(page.refs)
        if not resp.more and matched == 0:
            raise NotFound(
                f"no file(s) found that match {pattern} in commit "
                f"{tree.commit.repo.name}/{tree.commit.id}",
                path=pattern,
            )
        if not resp.more and sent == 0 and not page.files:
            raise FailedPrecondition(
                f"cannot read {pattern}: it matches only directories, with no header or footer",
                path=pattern,
            )
        resp.refs.extend(trees.model.refs_to_pb(page.refs))
        resp.after, resp.first, resp.matched, resp.refs_sent = after, first, matched, sent
        resp.open.extend(page.open)
        return resp


@dataclass
class _GlobPage:
    """The refs of one GlobFileRefs page and the directories whose header
    was sent and whose footer is still due (outermost first)."""

    store: ObjectStore
    root: str
    open: list[str]
    refs: list[trees.DataRef] = field(default_factory=list)
    files: bool = False

    async def enter(self, path: str, node: trees.Node) -> None:
        """Close the open directories ``path`` is not in; open ``path`` (a
        directory) or its parent (a file) unless it is open already."""
        while self.open and not _within(path, self.open[-1]):
            await self._close()
        if not node.is_dir:
            self.files = True
        at = path if node.is_dir else parent_of(path)
        if self.open and self.open[-1] == at:
            return
        directory = node if node.is_dir else await trees.get(self.store, self.root, at)
        if directory is None:
            raise FailedPrecondition(f"the directory of {path} is missing", path=path)
        header, _ = await trees.header_footer(self.store, directory)
        self.refs.extend(header)
        self.open.append(at)

    async def close_all(self) -> None:
        while self.open:
            await self._close()

    async def _close(self) -> None:
        at = self.open.pop()
        directory = await trees.get(self.store, self.root, at)
        if directory is not None:
            _, footer = await trees.header_footer(self.store, directory)
            self.refs.extend(footer)


def _within(path: str, directory: str) -> bool:
    return directory == "/" or path.startswith(directory + "/")


def _cursor(after: str) -> str | None:
    return trees.normalize(after) if after else None


Entry = tuple[str, trees.Node]
T = TypeVar("T")


async def _entries(
    path: str, nodes: AsyncIterator[trees.Node], is_dir: bool
) -> AsyncGenerator[Entry, None]:
    async for node in nodes:
        yield (trees.paths.join(path, node.name) if is_dir else path), node


async def _after(
    items: AsyncIterator[tuple[str, T]], after: str | None
) -> AsyncGenerator[tuple[str, T], None]:
    """The items whose paths sort after ``after`` in walk order."""
    key = sort_key(after) if after is not None else None
    async for path, item in items:
        if key is None or sort_key(path) > key:
            yield path, item


async def _page(
    maker: InfoMaker, entries: AsyncGenerator[Entry, None], commit: pfs.Commit
) -> internal.FileInfoPage:
    page = internal.FileInfoPage(commit=commit)
    used = 0
    async with aclosing(entries) as it:
        async for path, node in it:
            if used >= PAGE_BYTES:
                page.more = True
                break
            info = await maker.info(path, node)
            page.file_info.append(info)
            used += info.ByteSize() + 4
    return page


Sides = tuple[trees.Node | None, trees.Node | None]


def rebase(path: str, top: str, new_top: str) -> str:
    """``path`` (at or below ``top``) moved under ``new_top``."""
    rest = path if top == "/" else path[len(top) :]
    if new_top == "/":
        return rest or "/"
    return new_top + rest if rest != "/" else new_top


async def _diff(
    store: ObjectStore, old_root: str, new_root: str, path: str, shallow: bool, old_path: str
) -> AsyncGenerator[tuple[str, Sides], None]:
    """``trees.diff`` in Pachyderm 1.7's terms: a deep diff reports files
    only; a shallow one reports the changed entries of ``path`` (a directory
    added or removed at ``path`` itself reports its entries). The old side is
    read at ``old_path``; paths are the new side's."""
    changes = trees.diff(store, old_root, new_root, path, shallow, old_path)
    async for change_path, old, new in changes:
        if not shallow:
            sides = (_file(old), _file(new))
            if sides != (None, None):
                yield change_path, sides
            continue
        if change_path != path:
            yield change_path, (old, new)
            continue
        # The top itself changed kind or appeared: list what a directory holds.
        if (old is not None and not old.is_dir) or (new is not None and not new.is_dir):
            yield path, (_file(old), _file(new))
        expand = [(old_root, old_path, old, 0), (new_root, path, new, 1)]
        async for item in _expand_top(store, path, expand):
            yield item


def _file(node: trees.Node | None) -> trees.Node | None:
    return node if node is not None and not node.is_dir else None


async def _expand_top(
    store: ObjectStore, path: str, sides: list[tuple[str, str, trees.Node | None, int]]
) -> AsyncGenerator[tuple[str, Sides], None]:
    """The entries of a directory that exists at ``path`` on one side only
    (each side read at its own path; reported under ``path``)."""
    for root, at, node, side in sides:
        if node is None or not node.is_dir:
            continue
        async with aclosing(list_dir_after(store, root, at)) as entries:
            async for child in entries:
                pair: Sides = (child, None) if side == 0 else (None, child)
                yield trees.paths.join(path, child.name), pair
