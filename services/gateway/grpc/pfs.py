"""``pfs.API``: each RPC is forwarded to the pfs service over the bus with
the caller's principal. RPCs not listed here answer UNIMPLEMENTED (the
generated base class) until pfs serves them.

A bus request cannot block for long or stream, so two RPCs are built here
from pfs's unary queries: ``InspectCommit`` with a ``block_state`` asks again
(backing off) until the commit reaches that state or the caller's deadline
passes, and ``ListCommitStream`` pages through ``ListCommit`` along the
ancestry (each page starts at the parent of the last commit sent).
``FlushCommit`` asks pfs which commits are downstream and waits for each to
finish the same way; ``SubscribeCommit`` asks for the branch's commits after
the last one it sent, again and again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc.aio
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import BytesValue

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.bus import Bus
from libs.errors import NotFound
from libs.objects import ObjectStore
from services.gateway import file_pages
from services.gateway.app import ingest as files
from services.gateway.grpc.streams import closed_by_client
from services.gateway.principal import Ask, ask

Ctx = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", bound=Message)

# Commits per ListCommit request behind ListCommitStream.
LIST_PAGE = 256
# Largest unary reply (Pachyderm 1.7's gRPC message limit; the server's
# PACH_GRPC_MAX_MESSAGE_BYTES by default).
MAX_REPLY = 20 << 20


class PfsServicer(pfs_pb2_grpc.APIServicer):
    def __init__(self, bus: Bus, store: ObjectStore, max_reply: int = MAX_REPLY) -> None:
        self.bus = bus
        self.store = store
        self.max_reply = max_reply

    def _ask(self, context: Ctx) -> Ask:
        async def call(name: str, request: Message, response_type: type[R], kind: str) -> R:
            return await ask(self.bus, context, "pfs", name, request, response_type, kind=kind)

        return call

    async def PutFile(  # type: ignore[override]
        self, request_iterator: AsyncIterator[pfs.PutFileRequest], context: Ctx
    ) -> Empty:
        requests = closed_by_client(request_iterator, context)
        return await files.put_files(self.store, self._ask(context), requests)

    async def GetFile(  # type: ignore[override]
        self, request: pfs.GetFileRequest, context: Ctx
    ) -> AsyncIterator[BytesValue]:
        async for block in files.read_file(self.store, self._ask(context), request):
            yield BytesValue(value=block)

    async def InspectFile(  # type: ignore[override]
        self, request: pfs.InspectFileRequest, context: Ctx
    ) -> pfs.FileInfo:
        return await ask(self.bus, context, "pfs", "InspectFile", request, pfs.FileInfo, kind="qry")

    async def ListFile(  # type: ignore[override]
        self, request: pfs.ListFileRequest, context: Ctx
    ) -> pfs.FileInfos:
        infos = file_pages.list_file(self._ask(context), request)
        return await file_pages.gather(infos, "ListFile", self.max_reply)

    async def ListFileStream(  # type: ignore[override]
        self, request: pfs.ListFileRequest, context: Ctx
    ) -> AsyncIterator[pfs.FileInfo]:
        async for info in file_pages.list_file(self._ask(context), request):
            yield info

    async def GlobFile(  # type: ignore[override]
        self, request: pfs.GlobFileRequest, context: Ctx
    ) -> pfs.FileInfos:
        infos = file_pages.glob_file(self._ask(context), request)
        return await file_pages.gather(infos, "GlobFile", self.max_reply)

    async def GlobFileStream(  # type: ignore[override]
        self, request: pfs.GlobFileRequest, context: Ctx
    ) -> AsyncIterator[pfs.FileInfo]:
        async for info in file_pages.glob_file(self._ask(context), request):
            yield info

    async def DiffFile(  # type: ignore[override]
        self, request: pfs.DiffFileRequest, context: Ctx
    ) -> pfs.DiffFileResponse:
        return await file_pages.diff_file(self._ask(context), request, self.max_reply)

    async def CopyFile(  # type: ignore[override]
        self, request: pfs.CopyFileRequest, context: Ctx
    ) -> Empty:
        return await files.copy_file(self.store, self._ask(context), request)

    async def DeleteAll(self, request: Empty, context: Ctx) -> Empty:  # type: ignore[override]
        return await ask(self.bus, context, "pfs", "DeleteAll", request, Empty)

    async def BuildCommit(  # type: ignore[override]
        self, request: pfs.BuildCommitRequest, context: Ctx
    ) -> pfs.Commit:
        return await ask(self.bus, context, "pfs", "BuildCommit", request, pfs.Commit)

    async def DeleteFile(  # type: ignore[override]
        self, request: pfs.DeleteFileRequest, context: Ctx
    ) -> Empty:
        return await ask(self.bus, context, "pfs", "DeleteFile", request, Empty)

    async def CreateRepo(self, request: pfs.CreateRepoRequest, context: Ctx) -> Empty:  # type: ignore[override]
        return await ask(self.bus, context, "pfs", "CreateRepo", request, Empty)

    async def InspectRepo(self, request: pfs.InspectRepoRequest, context: Ctx) -> pfs.RepoInfo:  # type: ignore[override]
        return await ask(self.bus, context, "pfs", "InspectRepo", request, pfs.RepoInfo, kind="qry")

    async def ListRepo(  # type: ignore[override]
        self, request: pfs.ListRepoRequest, context: Ctx
    ) -> pfs.ListRepoResponse:
        return await ask(
            self.bus, context, "pfs", "ListRepo", request, pfs.ListRepoResponse, kind="qry"
        )

    async def DeleteRepo(self, request: pfs.DeleteRepoRequest, context: Ctx) -> Empty:  # type: ignore[override]
        return await ask(self.bus, context, "pfs", "DeleteRepo", request, Empty)

    async def StartCommit(  # type: ignore[override]
        self, request: pfs.StartCommitRequest, context: Ctx
    ) -> pfs.Commit:
        return await ask(self.bus, context, "pfs", "StartCommit", request, pfs.Commit)

    async def FinishCommit(  # type: ignore[override]
        self, request: pfs.FinishCommitRequest, context: Ctx
    ) -> Empty:
        return await ask(self.bus, context, "pfs", "FinishCommit", request, Empty)

    async def InspectCommit(  # type: ignore[override]
        self, request: pfs.InspectCommitRequest, context: Ctx
    ) -> pfs.CommitInfo:
        info = await self._inspect(request.commit, context)
        if request.block_state == pfs.STARTED:
            return info
        # Follow the commit itself, not the branch it was named by.
        pinned = pfs.Commit(repo=request.commit.repo, id=info.commit.id)
        delay = 0.02
        while not await self._reached(info, request.block_state, context):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            info = await self._inspect(pinned, context)
        return info

    async def _inspect(self, commit: pfs.Commit, context: Ctx) -> pfs.CommitInfo:
        req = pfs.InspectCommitRequest(commit=commit)
        return await ask(self.bus, context, "pfs", "InspectCommit", req, pfs.CommitInfo, kind="qry")

    async def _reached(self, info: pfs.CommitInfo, state: int, context: Ctx) -> bool:
        if state == pfs.STARTED or info.HasField("finished"):
            return True
        if state == pfs.FINISHED:
            return False
        # READY: every provenance commit has finished.
        for commit in info.provenance:
            if not (await self._inspect(commit, context)).HasField("finished"):
                return False
        return True

    async def FlushCommit(  # type: ignore[override]
        self, request: pfs.FlushCommitRequest, context: Ctx
    ) -> AsyncIterator[pfs.CommitInfo]:
        """Each commit downstream of the given ones, once it has finished."""
        found = await ask(
            self.bus, context, "pfs", "FlushCommit", request, pfs.CommitInfos, kind="qry"
        )
        for info in found.commit_info:
            delay = 0.02
            while not info.HasField("finished"):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                try:
                    info = await self._inspect(info.commit, context)
                except NotFound:
                    continue  # about to be opened by the downstream reaction
            yield info

    async def SubscribeCommit(  # type: ignore[override]
        self, request: pfs.SubscribeCommitRequest, context: Ctx
    ) -> AsyncIterator[pfs.CommitInfo]:
        """The commits of a branch, oldest first, each once it reaches
        ``state``, then every later one as it comes, until the caller stops."""
        repo = pfs.InspectRepoRequest(repo=request.repo)
        await ask(self.bus, context, "pfs", "InspectRepo", repo, pfs.RepoInfo, kind="qry")
        last = getattr(request, "from").id
        delay = 0.02
        while True:
            page = pfs.ListCommitRequest(
                repo=request.repo, to=pfs.Commit(repo=request.repo, id=request.branch)
            )
            if last:
                getattr(page, "from").CopyFrom(pfs.Commit(repo=request.repo, id=last))
            try:
                found = await ask(
                    self.bus, context, "pfs", "ListCommit", page, pfs.CommitInfos, kind="qry"
                )
                infos = list(found.commit_info)
            except NotFound:
                infos = []  # no such branch, or no head yet
            for info in reversed(infos):
                if not await self._reached(info, request.state, context):
                    break
                yield info
                last = info.commit.id
                delay = 0.02
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def ListCommitStream(  # type: ignore[override]
        self, request: pfs.ListCommitRequest, context: Ctx
    ) -> AsyncIterator[pfs.CommitInfo]:
        page = pfs.ListCommitRequest()
        page.CopyFrom(request)
        remaining = request.number or None
        while True:
            size = LIST_PAGE if remaining is None else min(LIST_PAGE, remaining)
            if request.to.id:
                page.number = size
            infos = (
                await ask(self.bus, context, "pfs", "ListCommit", page, pfs.CommitInfos, kind="qry")
            ).commit_info
            for info in infos:
                yield info
            if remaining is not None:
                remaining -= len(infos)
            last = infos[-1] if infos else None
            if (
                not request.to.id  # one page: pfs has no cursor for a whole-repo listing
                or len(infos) < size
                or remaining == 0
                or last is None
                or not last.HasField("parent_commit")
            ):
                return
            page.to.CopyFrom(pfs.Commit(repo=request.repo, id=last.parent_commit.id))

    async def ListCommit(  # type: ignore[override]
        self, request: pfs.ListCommitRequest, context: Ctx
    ) -> pfs.CommitInfos:
        return await ask(
            self.bus, context, "pfs", "ListCommit", request, pfs.CommitInfos, kind="qry"
        )

    async def DeleteCommit(  # type: ignore[override]
        self, request: pfs.DeleteCommitRequest, context: Ctx
    ) -> Empty:
        return await ask(self.bus, context, "pfs", "DeleteCommit", request, Empty)

    async def CreateBranch(  # type: ignore[override]
        self, request: pfs.CreateBranchRequest, context: Ctx
    ) -> Empty:
        return await ask(self.bus, context, "pfs", "CreateBranch", request, Empty)

    async def InspectBranch(  # type: ignore[override]
        self, request: pfs.InspectBranchRequest, context: Ctx
    ) -> pfs.BranchInfo:
        return await ask(
            self.bus, context, "pfs", "InspectBranch", request, pfs.BranchInfo, kind="qry"
        )

    async def ListBranch(  # type: ignore[override]
        self, request: pfs.ListBranchRequest, context: Ctx
    ) -> pfs.BranchInfos:
        return await ask(
            self.bus, context, "pfs", "ListBranch", request, pfs.BranchInfos, kind="qry"
        )

    async def DeleteBranch(  # type: ignore[override]
        self, request: pfs.DeleteBranchRequest, context: Ctx
    ) -> Empty:
        return await ask(self.bus, context, "pfs", "DeleteBranch", request, Empty)


def register(
    server: grpc.aio.Server, bus: Bus, store: ObjectStore, max_reply: int = MAX_REPLY
) -> None:
    # The RPCs PfsServicer does not define yet keep the generated base's
    # UNIMPLEMENTED answer; the typed stubs declare them abstract.
    servicer = PfsServicer(bus, store, max_reply)  # type: ignore[abstract]
    pfs_pb2_grpc.add_APIServicer_to_server(servicer, server)
