"""File commands: the writes of PutFileRefs (the gateway stored the bytes:
content, split pieces, headers and footers; ``put_sessions`` decides the
commit), DeleteFile, CopyFile, and the tree build finish-commit runs.
Queries are in ``file_reads``.

Writes go to the commit aggregate (``services.pfs.domain.files``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.empty_pb2 import Empty

from libs import trees
from libs.api.events import pfs_pb2 as ev
from libs.api.internal import pfs_files_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.bus import Bus, Context
from libs.errors import ConcurrencyError, FailedPrecondition, InvalidArgument, NotFound
from libs.events import AggregateCache, EventStore
from libs.objects import ObjectStore
from libs.readmodels import DocumentStore
from services.pfs.app.commit_trees import commit_tree, parent_root
from services.pfs.app.file_reads import FileReads
from services.pfs.app.lookup import commit_doc, repo_name
from services.pfs.domain import files
from services.pfs.domain.files import CommitWrites


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
        await bus.serve("DeleteFile", pfs.DeleteFileRequest, self.delete_file)
        await bus.serve("CopyFile", pfs.CopyFileRequest, self.copy_file)
        await FileReads(self.docs, self.store).register(bus)

    # --- writes ----------------------------------------------------------------

    async def delete_file(self, req: pfs.DeleteFileRequest, ctx: Context) -> Empty:
        name = repo_name(req.file.commit.repo)
        await self.write(name, req.file.commit.id, [files.delete(req.file.path)], ctx)
        return Empty()

    async def copy_file(self, req: pfs.CopyFileRequest, ctx: Context) -> Empty:
        """Copy ``src`` (in a finished commit) to ``dst`` (in an open one) by
        reference: with ``overwrite`` it replaces ``dst``; without, each
        source file is appended to the file at its destination (Pachyderm 1.7)."""
        src_path = trees.normalize(req.src.path or "/")
        dst_path = trees.normalize(req.dst.path or "/")
        dst_repo = repo_name(req.dst.commit.repo)
        src = await commit_tree(self.docs, req.src.commit)
        where = f"{src.commit.repo.name}/{src.commit.id}"
        if not src.finished:
            raise FailedPrecondition(
                f"copy-file reads finished commits; {where} is still open", commit=where
            )
        node = await trees.get(self.store, src.root, src_path)
        if node is None:
            raise NotFound(f"file {src_path} not found in commit {where}", path=src_path)
        if dst_path == "/" and not node.is_dir:
            raise InvalidArgument(
                f"cannot copy file {src_path} to /: it is the root directory", path=src_path
            )
        event = files.copy(
            src.commit.repo.name, src.commit.id, src.root, src_path, dst_path, req.overwrite
        )
        await self.write(dst_repo, req.dst.commit.id, [event], ctx)
        return Empty()

    async def write(
        self, name: str, reference: str, writes: Sequence[files.Write], ctx: Context
    ) -> str:
        """Record ``writes`` in the open commit ``reference`` names; its id."""
        doc = await commit_doc(self.docs, name, reference)
        if doc["finished_ns"]:
            raise FailedPrecondition(
                f"commit {name}/{doc['id']} has already been finished", repo=name, commit=doc["id"]
            )
        if not writes:
            return str(doc["id"])
        aggregate = files.ref(doc["id"])
        bases = await self._split_bases(name, doc, writes)
        await self.cache.execute(
            aggregate,
            files.write(name, doc["id"], writes, bases),
            principal=ctx.principal,
            correlation_id=ctx.request_id,
        )
        return str(doc["id"])

    async def _split_bases(
        self, name: str, doc: dict[str, Any], writes: Sequence[files.Write]
    ) -> dict[str, int]:
        """Where the split directories this commit has not split into yet
        number from: after their pieces in the parent tree, unless deleted in
        this commit."""
        if not any(isinstance(w, files.Split) for w in writes):
            return {}
        state = (await self.cache.load(files.ref(doc["id"]))).state
        todo = files.unnumbered(state, writes)
        if not todo:
            return {}
        deleted: set[str] = set()
        if state.deletes:
            async for recorded in self.events.read(files.ref(doc["id"])):
                e = recorded.event
                if isinstance(e, ev.FileDeleted):
                    deleted.update(d for d in todo if files.is_at_or_below(d, e.path))
        root = await parent_root(self.docs, name, doc) or trees.EMPTY_ROOT
        bases = {}
        for directory in todo:
            node = await trees.get(self.store, root, directory)
            bases[directory] = files.base_count(directory, node, directory in deleted)
        return bases

    # --- finish ----------------------------------------------------------------

    async def seal(
        self, name: str, reference: str, ctx: Context, given: trees.TreeRoot | None = None
    ) -> tuple[str, int]:
        """Build the tree of open commit ``reference`` from its writes on top
        of its parent's tree, close it to writes, and return (root, size).
        With ``given`` (a pipeline's merged output), that tree is the commit's
        and its writes are ignored, as in 1.7's FinishCommit with a tree.

        FailedPrecondition on a file/directory conflict: the commit stays open."""
        doc = await commit_doc(self.docs, name, reference)
        if doc["finished_ns"]:
            raise FailedPrecondition(
                f"commit {name}/{doc['id']} has already been finished", repo=name, commit=doc["id"]
            )
        aggregate = files.ref(doc["id"])
        base = await parent_root(self.docs, name, doc)
        while True:
            loaded = await self.cache.load(aggregate)
            if loaded.state.sealed:
                return await self._sealed_tree(doc["id"])
            root = given or await trees.build(
                self.store, base, self._ops(doc["id"], loaded.position.seq)
            )
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
            event = recorded.event
            if isinstance(event, ev.FileCopied) and not event.overwrite:
                async for op in self._copy_appends(event):
                    yield op
                continue
            for op in files.as_ops(event):
                yield op

    async def _copy_appends(self, event: ev.FileCopied) -> AsyncIterator[trees.Op]:
        """A non-overwriting copy, one source node at a time."""
        async for path, node in trees.walk(self.store, event.src_root, event.src_path):
            content: tuple[trees.DataRef, ...] = ()
            header: tuple[trees.DataRef, ...] = ()
            footer: tuple[trees.DataRef, ...] = ()
            if node.is_dir:
                header, footer = await trees.header_footer(self.store, node)
            else:
                content = await trees.file_refs(self.store, node)
            for op in files.copy_append_ops(event, path, node, content, header, footer):
                yield op

    async def _sealed_tree(self, commit_id: str) -> tuple[str, int]:
        async for recorded in self.events.read(files.ref(commit_id)):
            if isinstance(recorded.event, ev.CommitWritesSealed):
                return recorded.event.tree, recorded.event.size_bytes
        raise NotFound(f"commit {commit_id} has no tree", commit=commit_id)


def write_event(w: internal.FileWrite) -> files.Write:
    """The commit event (or split write) one FileWrite stands for."""
    refs = trees.model.refs_from_pb(w.refs)
    if w.kind == internal.CONTENT:
        return files.split(w.path, refs) if w.split else files.put(w.path, refs, w.append)
    if w.split:
        raise InvalidArgument(f"split applies to file content, not a header or footer ({w.path})")
    if w.kind == internal.HEADER:
        return files.set_header(w.path, refs)
    if w.kind == internal.FOOTER:
        return files.set_footer(w.path, refs)
    raise InvalidArgument(f"unknown write kind {w.kind} for {w.path}", path=w.path)
