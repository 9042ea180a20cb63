"""File commands and queries: PutFileRefs (the gateway stored the bytes),
DeleteFile, InspectFile, ListFile, FileRefs (for get-file), and the tree
build finish-commit runs.

Writes go to the commit aggregate (``services.pfs.domain.files``). A
finished commit is read from its tree; an open one from its parent's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.empty_pb2 import Empty

from libs import trees
from libs.api.events import pfs_pb2 as ev
from libs.api.internal import pfs_files_pb2 as internal
from libs.api.internal import tree_pb2
from libs.api.pfs import pfs_pb2 as pfs
from libs.bus import Bus, Context
from libs.errors import ConcurrencyError, FailedPrecondition, NotFound
from libs.events import AggregateCache, EventStore
from libs.objects import ObjectStore
from libs.readmodels import DocumentStore
from services.pfs.adapters.commits_view import COMMITS, commit_key
from services.pfs.app.lookup import commit_doc, repo_name
from services.pfs.domain import files
from services.pfs.domain.files import CommitWrites

# Data refs per FileRefs reply.
REFS_PAGE = 4096


@dataclass
class Files:
    docs: DocumentStore
    events: EventStore
    store: ObjectStore
    cache: AggregateCache[CommitWrites]

    @classmethod
    def create(cls, docs: DocumentStore, events: EventStore, store: ObjectStore) -> Files:
        cache = AggregateCache(events, initial=CommitWrites, evolve=files.evolve)
        return cls(docs, events, store, cache)

    async def register(self, bus: Bus) -> None:
        await bus.serve("PutFileRefs", internal.PutFileRefsRequest, self.put_file_refs)
        await bus.serve("DeleteFile", pfs.DeleteFileRequest, self.delete_file)
        await bus.serve("InspectFile", pfs.InspectFileRequest, self.inspect_file, kind="qry")
        await bus.serve("ListFile", pfs.ListFileRequest, self.list_file, kind="qry")
        await bus.serve("GlobFile", pfs.GlobFileRequest, self.glob_file, kind="qry")
        await bus.serve("FileRefs", internal.FileRefsRequest, self.file_refs, kind="qry")

    # --- writes ----------------------------------------------------------------

    async def put_file_refs(self, req: internal.PutFileRefsRequest, ctx: Context) -> Empty:
        name = repo_name(req.commit.repo)
        puts = [files.put(w.path, trees.model.refs_from_pb(w.refs), w.append) for w in req.writes]
        await self._write(name, req.commit.id, puts, ctx)
        return Empty()

    async def delete_file(self, req: pfs.DeleteFileRequest, ctx: Context) -> Empty:
        name = repo_name(req.file.commit.repo)
        await self._write(name, req.file.commit.id, [files.delete(req.file.path)], ctx)
        return Empty()

    async def _write(self, name: str, reference: str, events: list[Any], ctx: Context) -> None:
        doc = await commit_doc(self.docs, name, reference)
        if doc["finished_ns"]:
            raise FailedPrecondition(
                f"commit {name}/{doc['id']} has already been finished", repo=name, commit=doc["id"]
            )
        if not events:
            return
        await self.cache.execute(
            files.ref(doc["id"]),
            files.write(name, doc["id"], events),
            principal=ctx.principal,
            correlation_id=ctx.request_id,
        )

    # --- finish ----------------------------------------------------------------

    async def seal(self, name: str, reference: str, ctx: Context) -> tuple[str, int]:
        """Build the tree of open commit ``reference`` from its writes on top
        of its parent's tree, close it to writes, and return (root, size).

        FailedPrecondition on a file/directory conflict: the commit stays open."""
        doc = await commit_doc(self.docs, name, reference)
        if doc["finished_ns"]:
            raise FailedPrecondition(
                f"commit {name}/{doc['id']} has already been finished", repo=name, commit=doc["id"]
            )
        aggregate = files.ref(doc["id"])
        base = await self._parent_root(name, doc)
        while True:
            loaded = await self.cache.load(aggregate)
            if loaded.state.sealed:
                return await self._sealed_tree(doc["id"])
            root = await trees.build(self.store, base, self._ops(doc["id"], loaded.position.seq))
            sealed = ev.CommitWritesSealed(tree=root.hash, size_bytes=root.size)
            try:
                await self.events.append(
                    aggregate,
                    [sealed],
                    loaded.position,
                    principal=ctx.principal,
                    correlation_id=ctx.request_id,
                )
            except ConcurrencyError:
                continue  # a write landed meanwhile: build again with it
            return root.hash, root.size

    async def _ops(self, commit_id: str, upto_seq: int) -> AsyncIterator[trees.Op]:
        async for recorded in self.events.read(files.ref(commit_id)):
            if recorded.stream_seq > upto_seq:
                return
            op = files.as_op(recorded.event)
            if op is not None:
                yield op

    async def _sealed_tree(self, commit_id: str) -> tuple[str, int]:
        async for recorded in self.events.read(files.ref(commit_id)):
            if isinstance(recorded.event, ev.CommitWritesSealed):
                return recorded.event.tree, recorded.event.size_bytes
        raise NotFound(f"commit {commit_id} has no tree", commit=commit_id)

    async def _parent_root(self, name: str, doc: dict[str, Any]) -> str | None:
        if not doc["parent"]:
            return None
        parent = await self.docs.get(COMMITS, commit_key(name, doc["parent"]))
        return (parent or {}).get("tree") or None

    # --- reads -------------------------------------------------------------------

    async def _root(self, commit: pfs.Commit) -> tuple[str, pfs.Commit]:
        """The tree to read for ``commit`` and the commit, by id."""
        name = repo_name(commit.repo)
        doc = await commit_doc(self.docs, name, commit.id)
        root = doc["tree"] if doc["finished_ns"] else await self._parent_root(name, doc)
        if not root:
            root = trees.EMPTY_ROOT  # readable without a stored object
        return root, pfs.Commit(repo=pfs.Repo(name=name), id=doc["id"])

    async def _node(self, f: pfs.File) -> tuple[str, pfs.Commit, str, trees.Node]:
        root, commit = await self._root(f.commit)
        path = trees.normalize(f.path or "/")
        node = await trees.get(self.store, root, path)
        if node is None:
            raise NotFound(
                f"file {path} not found in commit {commit.repo.name}/{commit.id}", path=path
            )
        return root, commit, path, node

    async def inspect_file(self, req: pfs.InspectFileRequest, ctx: Context) -> pfs.FileInfo:
        _, commit, path, node = await self._node(req.file)
        return file_info(commit, path, node)

    async def list_file(self, req: pfs.ListFileRequest, ctx: Context) -> pfs.FileInfos:
        root, commit, path, node = await self._node(req.file)
        if not node.is_dir:
            return pfs.FileInfos(file_info=[file_info(commit, path, node)])
        infos = [
            file_info(commit, trees.paths.join(path, child.name), child)
            async for child in trees.list_dir(self.store, root, path)
        ]
        return pfs.FileInfos(file_info=infos)

    async def glob_file(self, req: pfs.GlobFileRequest, ctx: Context) -> pfs.FileInfos:
        """Files and directories matching ``pattern``, with the glob rules
        pipelines use (``libs.trees.glob``)."""
        root, commit = await self._root(req.commit)
        infos = [
            file_info(commit, path, node)
            async for path, node in trees.glob(self.store, root, req.pattern)
        ]
        return pfs.FileInfos(file_info=infos)

    async def file_refs(
        self, req: internal.FileRefsRequest, ctx: Context
    ) -> internal.FileRefsResponse:
        root, _, path, node = await self._node(req.file)
        if node.is_dir:
            raise FailedPrecondition(f"cannot get {path}: it is a directory", path=path)
        refs = await trees.effective_refs(self.store, root, path)
        page = refs[req.first : req.first + REFS_PAGE]
        return internal.FileRefsResponse(
            refs=[tree_pb2.DataRef(chunk=r.chunk, offset=r.offset, length=r.length) for r in page],
            more=req.first + REFS_PAGE < len(refs),
            size_bytes=sum(r.length for r in refs),
        )


def file_info(commit: pfs.Commit, path: str, node: trees.Node) -> pfs.FileInfo:
    return pfs.FileInfo(
        file=pfs.File(commit=commit, path=path),
        file_type=pfs.DIR if node.is_dir else pfs.FILE,
        size_bytes=node.size,
        hash=bytes.fromhex(node.hash),
    )
