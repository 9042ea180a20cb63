"""Commit commands and queries: StartCommit, BuildCommit, FinishCommit,
DeleteCommit, InspectCommit, ListCommit, FlushCommit."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.empty_pb2 import Empty

from libs import trees
from libs.api.events import pfs_pb2 as ev
from libs.api.pfs import pfs_pb2 as pfs
from libs.bus import Bus, Context
from libs.errors import Internal, InvalidArgument, NotFound
from libs.readmodels import DocumentStore
from services.pfs.adapters.branches_view import EDGES, branch_key
from services.pfs.adapters.commits_view import (
    COMMIT_EDGES,
    COMMITS,
    commit_info,
    commit_key,
    full_commit_info,
)
from services.pfs.app.files import Files
from services.pfs.app.lookup import commit_doc, repo_name, require_repo
from services.pfs.app.writer import RepoWriter
from services.pfs.domain import commits
from services.pfs.domain.repo import Key

_TREE_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Commits:
    writer: RepoWriter
    docs: DocumentStore
    files: Files

    async def register(self, bus: Bus) -> None:
        await bus.serve("StartCommit", pfs.StartCommitRequest, self.start_commit)
        await bus.serve("BuildCommit", pfs.BuildCommitRequest, self.build_commit)
        await bus.serve("FinishCommit", pfs.FinishCommitRequest, self.finish_commit)
        await bus.serve("DeleteCommit", pfs.DeleteCommitRequest, self.delete_commit)
        await bus.serve("InspectCommit", pfs.InspectCommitRequest, self.inspect_commit, kind="qry")
        await bus.serve("ListCommit", pfs.ListCommitRequest, self.list_commit, kind="qry")
        await bus.serve("FlushCommit", pfs.FlushCommitRequest, self.flush_commit, kind="qry")

    async def start_commit(self, req: pfs.StartCommitRequest, ctx: Context) -> pfs.Commit:
        name = repo_name(req.parent.repo)
        if req.provenance:
            raise InvalidArgument("commit provenance is set by pipelines, not by callers")
        commit_id = uuid.uuid4().hex
        decide = commits.start_commit(name, commit_id, req.branch, req.parent.id, req.description)
        await self.writer.run(name, decide, ctx)
        return pfs.Commit(repo=pfs.Repo(name=name), id=commit_id)

    async def build_commit(self, req: pfs.BuildCommitRequest, ctx: Context) -> pfs.Commit:
        """A finished commit from an existing tree (``tree.hash``: a
        ``libs.trees`` root in the object store) on ``branch``, with
        ``parent`` (default: the branch's head) and ``provenance``."""
        name = repo_name(req.parent.repo)
        if not req.tree.hash:
            raise InvalidArgument("build-commit needs a tree: set tree.hash to a tree's root hash")
        root = await self._given_tree(req.tree.hash)
        tree, size = root.hash, root.size
        provenance: list[Key] = []
        for p in req.provenance:
            up = repo_name(p.repo)
            doc = await commit_doc(self.docs, up, p.id)
            # Provenance is transitive: my provenance's provenance is mine.
            for key in [(up, doc["id"]), *((r, c) for r, c in doc["provenance"])]:
                if key not in provenance:
                    provenance.append(key)
        commit_id = req.ID or uuid.uuid4().hex
        decide = commits.build_commit(
            name, commit_id, req.branch, req.parent.id, tree, size, provenance
        )
        await self.writer.run(name, decide, ctx)
        return pfs.Commit(repo=pfs.Repo(name=name), id=commit_id)

    async def _given_tree(self, tree: str) -> trees.TreeRoot:
        """A caller's tree root, checked: InvalidArgument for a malformed hash
        or an object that is no root, NotFound when the store lacks it."""
        if not _TREE_HASH.match(tree):
            raise InvalidArgument(
                f"tree hash {tree!r} is invalid: 64 lowercase hex characters expected", tree=tree
            )
        store = self.files.store
        if tree != trees.EMPTY_ROOT and not await store.exists(trees.tree_key(tree)):
            raise NotFound(f"tree {tree} not found in the object store", tree=tree)
        try:
            node = await trees.get(store, tree, "/")
        except Internal:
            raise InvalidArgument(
                f"object {tree} is not the root directory of a tree", tree=tree
            ) from None
        if node is None:
            return trees.TreeRoot(tree, 0, 0)
        return trees.TreeRoot(tree, node.size, node.files)

    async def finish_commit(self, req: pfs.FinishCommitRequest, ctx: Context) -> Empty:
        name = repo_name(req.commit.repo)
        given: trees.TreeRoot | None = None
        if req.empty:
            given = await trees.build(self.files.store, None, _nothing())
        elif req.tree.hash:
            given = await self._given_tree(req.tree.hash)
        tree, size = await self.files.seal(name, req.commit.id, ctx, given)
        decide = commits.finish_commit(name, req.commit.id, req.description or None, tree, size)
        await self.writer.run(name, decide, ctx)
        return Empty()

    async def delete_commit(self, req: pfs.DeleteCommitRequest, ctx: Context) -> Empty:
        """Delete an input commit and every commit downstream of it."""
        name = repo_name(req.commit.repo)
        done = await self.writer.run(name, commits.delete_commit(name, req.commit.id), ctx)
        deleted = next(e for e in done.events if isinstance(e, ev.CommitDeleted))
        edges = self.docs.query(COMMIT_EDGES, where={"up_key": commit_key(name, deleted.id)})
        for down_repo, down_id in sorted({(e["repo"], e["id"]) async for e in edges}):
            decide = commits.delete_commit(down_repo, down_id, downstream=True)
            try:
                await self.writer.run(down_repo, decide, ctx)
            except NotFound:
                continue  # gone meanwhile
        return Empty()

    async def inspect_commit(self, req: pfs.InspectCommitRequest, ctx: Context) -> pfs.CommitInfo:
        name = repo_name(req.commit.repo)
        return await full_commit_info(self.docs, await commit_doc(self.docs, name, req.commit.id))

    async def list_commit(self, req: pfs.ListCommitRequest, ctx: Context) -> pfs.CommitInfos:
        name = repo_name(req.repo)
        await require_repo(self.docs, name)
        stop = ""
        if req.HasField("from") and getattr(req, "from").id:
            stop = (await commit_doc(self.docs, name, getattr(req, "from").id))["id"]
        if req.to.id:
            docs = self._ancestors(name, await commit_doc(self.docs, name, req.to.id))
        else:
            docs = self.docs.query(
                COMMITS, where={"repo": name}, order_by="started_ns", descending=True
            )
        out: list[pfs.CommitInfo] = []
        async for doc in docs:
            if doc["id"] == stop or (req.number and len(out) >= req.number):
                break
            out.append(await full_commit_info(self.docs, doc))
        return pfs.CommitInfos(commit_info=out)

    async def flush_commit(self, req: pfs.FlushCommitRequest, ctx: Context) -> pfs.CommitInfos:
        """The commits downstream of ``req.commits``: those that exist, and
        those the downstream reaction is about to open for a finished input
        commit (only ``commit`` set: the caller waits for them to appear)."""
        to = {r.name for r in req.to_repos}
        found: dict[tuple[str, str], pfs.CommitInfo] = {}
        for c in req.commits:
            name = repo_name(c.repo)
            doc = await commit_doc(self.docs, name, c.id)
            edges = self.docs.query(COMMIT_EDGES, where={"up_key": commit_key(name, doc["id"])})
            async for edge in edges:
                down = await self.docs.get(COMMITS, commit_key(edge["repo"], edge["id"]))
                if down is not None:
                    found[(edge["repo"], edge["id"])] = commit_info(down)
            if doc["branch"] and not doc["provenance"] and doc["finished_ns"]:
                branch_edges = self.docs.query(
                    EDGES, where={"up_key": branch_key(name, doc["branch"])}
                )
                async for edge in branch_edges:
                    if edge["since_ns"] > doc["finished_ns"]:
                        continue  # the branch came downstream after the commit finished
                    cid = commits.downstream_id(doc["id"], edge["repo"], edge["branch"])
                    commit = pfs.Commit(repo=pfs.Repo(name=edge["repo"]), id=cid)
                    found.setdefault((edge["repo"], cid), pfs.CommitInfo(commit=commit))
        infos = [info for key, info in sorted(found.items()) if not to or key[0] in to]
        return pfs.CommitInfos(commit_info=infos)

    async def _ancestors(self, repo: str, doc: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        current: dict[str, Any] | None = doc
        while current is not None:
            yield current
            if not current["parent"]:
                return
            current = await self.docs.get(COMMITS, commit_key(repo, current["parent"]))


async def _nothing() -> AsyncIterator[trees.Op]:
    """No writes (an empty tree)."""
    return
    yield
