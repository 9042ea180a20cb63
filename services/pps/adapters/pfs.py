"""pps's view of pfs: the pfs commands and queries pps asks over the bus.

pps never reads pfs's tables; it asks. Every call carries the principal of
the request (or event) it serves, and raises pfs's typed errors as they
come (NotFound for a missing repo, ...)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from libs import trees
from libs.api.internal import pfs_branches_pb2 as branches_internal
from libs.api.internal import pfs_files_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.bus import Bus
from libs.errors import NotFound, PachError

BranchKey = tuple[str, str]  # (repo, branch)
M = TypeVar("M", bound=Message)


def _branch(repo: str, name: str) -> pfs.Branch:
    return pfs.Branch(repo=pfs.Repo(name=repo), name=name)


def _commit(repo: str, commit_id: str) -> pfs.Commit:
    return pfs.Commit(repo=pfs.Repo(name=repo), id=commit_id)


@dataclass
class Pfs:
    bus: Bus
    principal: str = ""

    def as_principal(self, principal: str) -> Pfs:
        return Pfs(self.bus, principal)

    async def _cmd(
        self,
        name: str,
        req: Message,
        resp: type[M],
        *,
        kind: str = "cmd",
        timeout: float | None = None,
    ) -> M:
        return await self.bus.request(
            "pfs", name, req, resp, kind=kind, principal=self.principal, timeout=timeout
        )

    # --- repos --------------------------------------------------------------

    async def inspect_repo(self, name: str) -> pfs.RepoInfo | None:
        try:
            info = await self._cmd(
                "InspectRepo",
                pfs.InspectRepoRequest(repo=pfs.Repo(name=name)),
                pfs.RepoInfo,
                kind="qry",
            )
        except NotFound:
            return None
        return info

    async def create_repo(self, name: str, description: str = "", update: bool = False) -> None:
        req = pfs.CreateRepoRequest(repo=pfs.Repo(name=name), description=description)
        req.update = update
        await self._cmd("CreateRepo", req, Empty)

    async def delete_repo(self, name: str, force: bool = True) -> None:
        req = pfs.DeleteRepoRequest(repo=pfs.Repo(name=name), force=force)
        try:
            await self._cmd("DeleteRepo", req, Empty)
        except NotFound:
            return

    # --- branches -----------------------------------------------------------

    async def create_branch(
        self, repo: str, name: str, provenance: Sequence[BranchKey], head: str = ""
    ) -> None:
        req = pfs.CreateBranchRequest(
            branch=_branch(repo, name), provenance=[_branch(r, b) for r, b in provenance]
        )
        if head:
            req.head.CopyFrom(_commit(repo, head))
        await self._cmd("CreateBranch", req, Empty)

    async def propagate_branch(self, repo: str, name: str, commit_id: str) -> None:
        """Open ``commit_id`` on output branch ``repo``@``name`` over the
        current heads of its provenance, even if its head has them already."""
        req = branches_internal.PropagateBranchRequest(
            branch=_branch(repo, name), commit_id=commit_id
        )
        await self._cmd("PropagateBranch", req, Empty)

    async def inspect_branch(self, repo: str, name: str) -> pfs.BranchInfo | None:
        try:
            info = await self._cmd(
                "InspectBranch",
                pfs.InspectBranchRequest(branch=_branch(repo, name)),
                pfs.BranchInfo,
                kind="qry",
            )
        except NotFound:
            return None
        return info

    # --- commits ------------------------------------------------------------

    async def inspect_commit(self, repo: str, commit_id: str) -> pfs.CommitInfo:
        info = await self._cmd(
            "InspectCommit",
            pfs.InspectCommitRequest(commit=_commit(repo, commit_id)),
            pfs.CommitInfo,
            kind="qry",
        )
        return info

    async def wait_finished(
        self, repo: str, commit_id: str, poll: float = 0.05, max_poll: float = 1.0
    ) -> pfs.CommitInfo:
        """The commit's info once it has finished (NotFound if it is deleted
        meanwhile). Polls, backing off to ``max_poll``."""
        delay = poll
        while True:
            info = await self.inspect_commit(repo, commit_id)
            if info.HasField("finished"):
                return info
            await asyncio.sleep(delay)
            delay = min(max_poll, delay * 2)

    async def start_commit(self, repo: str, branch: str) -> str:
        req = pfs.StartCommitRequest(parent=_commit(repo, ""), branch=branch)
        commit = await self._cmd("StartCommit", req, pfs.Commit)
        return commit.id

    async def build_commit(
        self,
        repo: str,
        branch: str,
        tree: str,
        commit_id: str,
        provenance: Sequence[tuple[str, str]] = (),
    ) -> None:
        """A finished commit ``commit_id`` on ``branch`` holding ``tree``
        (a ``libs.trees`` root), on top of the branch's head."""
        req = pfs.BuildCommitRequest(
            parent=_commit(repo, ""),
            branch=branch,
            ID=commit_id,
            provenance=[_commit(r, c) for r, c in provenance],
        )
        req.tree.CopyFrom(pfs.Object(hash=tree))
        await self._cmd("BuildCommit", req, pfs.Commit, timeout=3600.0)

    async def finish_commit(
        self, repo: str, commit_id: str, *, tree: str = "", empty: bool = False
    ) -> None:
        """Finish an open commit: with its own writes, with ``tree`` (a
        ``libs.trees`` root) as its content, or ``empty``. A commit that is
        already finished is left as it is (a repeat after a crash)."""
        req = pfs.FinishCommitRequest(commit=_commit(repo, commit_id), empty=empty)
        if tree:
            req.tree.CopyFrom(pfs.Object(hash=tree))
        try:
            await self._cmd("FinishCommit", req, Empty, timeout=3600.0)
        except PachError:
            if (await self.inspect_commit(repo, commit_id)).HasField("finished"):
                return
            raise

    async def delete_commit(self, repo: str, commit_id: str) -> None:
        try:
            await self._cmd(
                "DeleteCommit", pfs.DeleteCommitRequest(commit=_commit(repo, commit_id)), Empty
            )
        except NotFound:
            return

    # --- files --------------------------------------------------------------

    async def put_refs(
        self,
        repo: str,
        commit_or_branch: str,
        path: str,
        refs: Sequence[trees.DataRef],
        *,
        append: bool = False,
    ) -> None:
        """Record ``path`` = ``refs`` (durable already) in an open commit."""
        write = internal.FileWrite(path=path, refs=trees.model.refs_to_pb(refs), append=append)
        req = internal.PutFileRefsRequest(commit=_commit(repo, commit_or_branch), writes=[write])
        await self._cmd("PutFileRefs", req, internal.PutFileRefsResponse)
