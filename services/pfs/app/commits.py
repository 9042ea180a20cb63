"""Commit commands and queries: StartCommit, FinishCommit, DeleteCommit,
InspectCommit, ListCommit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.empty_pb2 import Empty

from libs.api.pfs import pfs_pb2 as pfs
from libs.bus import Bus, Context
from libs.errors import InvalidArgument
from libs.readmodels import DocumentStore
from services.pfs.adapters.commits_view import COMMITS, commit_info, commit_key
from services.pfs.app.lookup import commit_doc, repo_name, require_repo
from services.pfs.app.writer import RepoWriter
from services.pfs.domain import commits


@dataclass
class Commits:
    writer: RepoWriter
    docs: DocumentStore

    async def register(self, bus: Bus) -> None:
        await bus.serve("StartCommit", pfs.StartCommitRequest, self.start_commit)
        await bus.serve("FinishCommit", pfs.FinishCommitRequest, self.finish_commit)
        await bus.serve("DeleteCommit", pfs.DeleteCommitRequest, self.delete_commit)
        await bus.serve("InspectCommit", pfs.InspectCommitRequest, self.inspect_commit, kind="qry")
        await bus.serve("ListCommit", pfs.ListCommitRequest, self.list_commit, kind="qry")

    async def start_commit(self, req: pfs.StartCommitRequest, ctx: Context) -> pfs.Commit:
        name = repo_name(req.parent.repo)
        if req.provenance:
            raise InvalidArgument("commit provenance is set by pipelines, not by callers")
        commit_id = uuid.uuid4().hex
        decide = commits.start_commit(name, commit_id, req.branch, req.parent.id, req.description)
        await self.writer.run(name, decide, ctx)
        return pfs.Commit(repo=pfs.Repo(name=name), id=commit_id)

    async def finish_commit(self, req: pfs.FinishCommitRequest, ctx: Context) -> Empty:
        name = repo_name(req.commit.repo)
        decide = commits.finish_commit(name, req.commit.id, req.description or None)
        await self.writer.run(name, decide, ctx)
        return Empty()

    async def delete_commit(self, req: pfs.DeleteCommitRequest, ctx: Context) -> Empty:
        name = repo_name(req.commit.repo)
        await self.writer.run(name, commits.delete_commit(name, req.commit.id), ctx)
        return Empty()

    async def inspect_commit(self, req: pfs.InspectCommitRequest, ctx: Context) -> pfs.CommitInfo:
        name = repo_name(req.commit.repo)
        return commit_info(await commit_doc(self.docs, name, req.commit.id))

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
            out.append(commit_info(doc))
        return pfs.CommitInfos(commit_info=out)

    async def _ancestors(self, repo: str, doc: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        current: dict[str, Any] | None = doc
        while current is not None:
            yield current
            if not current["parent"]:
                return
            current = await self.docs.get(COMMITS, commit_key(repo, current["parent"]))
