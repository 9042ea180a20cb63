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


def register(server: grpc.aio.Server, bus: Bus) -> None:
    # The RPCs PfsServicer does not define yet keep the generated base's
    # UNIMPLEMENTED answer; the typed stubs declare them abstract.
    servicer = PfsServicer(bus)  # type: ignore[abstract]
    pfs_pb2_grpc.add_APIServicer_to_server(servicer, server)
