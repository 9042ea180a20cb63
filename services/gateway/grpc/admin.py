"""``admin.API``: ``ExtractPipeline`` answers with the request a pipeline
was created (or last updated) with, asked of pps (``GetPipelineSpec``), as
one 1.7 restore op. ``Extract``, ``Restore`` and ``InspectCluster`` keep the
generated base's UNIMPLEMENTED answer until they are built."""

from __future__ import annotations

from typing import Any, TypeVar

import grpc.aio
from google.protobuf.message import Message

from libs.api.admin import admin_pb2 as admin
from libs.api.admin import admin_pb2_grpc
from libs.api.internal import pps_work_pb2 as internal
from libs.bus import Bus
from libs.errors import InvalidArgument
from services.gateway.principal import Ask, ask

Ctx = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", bound=Message)


async def extract_pipeline(pps_ask: Ask, request: admin.ExtractPipelineRequest) -> admin.Op:
    """The pipeline's spec as ``Op{op1_7{pipeline}}``."""
    if not request.pipeline.name:
        raise InvalidArgument("ExtractPipeline needs a pipeline name")
    spec = await pps_ask(
        "GetPipelineSpec",
        internal.PipelineSpecRequest(pipeline=request.pipeline),
        internal.PipelineSpec,
        "qry",
    )
    return admin.Op(op1_7=admin.Op1_7(pipeline=spec.spec))


class AdminServicer(admin_pb2_grpc.APIServicer):
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def _ask(self, context: Ctx) -> Ask:
        async def call(name: str, request: Message, response_type: type[R], kind: str) -> R:
            return await ask(self.bus, context, "pps", name, request, response_type, kind=kind)

        return call

    async def ExtractPipeline(  # type: ignore[override]
        self, request: admin.ExtractPipelineRequest, context: Ctx
    ) -> admin.Op:
        return await extract_pipeline(self._ask(context), request)


def register(server: grpc.aio.Server, bus: Bus) -> None:
    # The RPCs AdminServicer does not define keep the generated base's
    # UNIMPLEMENTED answer; the typed stubs declare them abstract.
    servicer = AdminServicer(bus)  # type: ignore[abstract]
    admin_pb2_grpc.add_APIServicer_to_server(servicer, server)
