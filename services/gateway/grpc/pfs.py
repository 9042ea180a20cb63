"""``pfs.API``: each RPC is forwarded to the pfs service over the bus with
the caller's principal. RPCs not listed here answer UNIMPLEMENTED (the
generated base class) until pfs serves them."""

from __future__ import annotations

from typing import Any

import grpc.aio
from google.protobuf.empty_pb2 import Empty

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.bus import Bus
from services.gateway.principal import ask

Ctx = grpc.aio.ServicerContext[Any, Any]


class PfsServicer(pfs_pb2_grpc.APIServicer):
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

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
        return await ask(
            self.bus, context, "pfs", "InspectCommit", request, pfs.CommitInfo, kind="qry"
        )

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


def register(server: grpc.aio.Server, bus: Bus) -> None:
    # The RPCs PfsServicer does not define yet keep the generated base's
    # UNIMPLEMENTED answer; the typed stubs declare them abstract.
    servicer = PfsServicer(bus)  # type: ignore[abstract]
    pfs_pb2_grpc.add_APIServicer_to_server(servicer, server)
