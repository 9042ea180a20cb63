"""``pps.API``: each unary RPC is forwarded to the pps service over the bus
with the caller's principal and deadline; the RPCs that wait or stream
(``InspectJob`` with ``block_state``, ``FlushJob``, ``ListDatum``,
``ListDatumStream``, ``GetLogs``) come from ``services.gateway.app.jobs``,
and ``ListJobStream`` sends ``ListJob``'s answer one job at a time.

``RestartDatum`` answers 1.7's Empty; which datums it restarted travels in
the trailing metadata ``RESTART_RESULT_KEY`` (pachctl says so).

``GarbageCollect`` runs pfs's collection (``services.gateway.app.gc``) and
answers 1.7's empty ``GarbageCollectResponse``; what it kept, deleted and
protected travels in the trailing metadata ``GC_RESULT_KEY`` (a serialized
``pachgc.GarbageCollectResult``), which ``pachctl garbage-collect`` prints.

``CreateJob`` (deprecated in 1.7), ``RerunPipeline`` (never implemented by
1.7) and ``ActivateAuth`` (a later issue) answer UNIMPLEMENTED
(``services.gateway.app.unserved``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc.aio
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from libs.api.internal import pps_work_pb2 as work
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from libs.bus import Bus
from services.gateway.app.gc import garbage_collect
from services.gateway.app.jobs import (
    flush_jobs,
    gather_datums,
    list_datums,
    log_messages,
    wait_for_job,
)
from services.gateway.app.replies import MAX_REPLY
from services.gateway.app.unserved import refusal
from services.gateway.principal import Ask, ask

Ctx = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", bound=Message)

# Trailing metadata of GarbageCollect: a serialized pachgc.GarbageCollectResult.
GC_RESULT_KEY = "pach-gc-result-bin"
# Trailing metadata of RestartDatum: a serialized pachinternal.RestartDatumResult
# (what was restarted; the reply itself is 1.7's Empty).
RESTART_RESULT_KEY = "pach-restart-datum-bin"


class PpsServicer(pps_pb2_grpc.APIServicer):
    def __init__(self, bus: Bus, max_reply: int = MAX_REPLY) -> None:
        self.bus = bus
        self.max_reply = max_reply

    def _ask(self, context: Ctx, service: str = "pps") -> Ask:
        async def call(name: str, request: Message, response_type: type[R], kind: str) -> R:
            return await ask(self.bus, context, service, name, request, response_type, kind=kind)

        return call

    async def _cmd(self, context: Ctx, name: str, request: Message) -> Empty:
        return await ask(self.bus, context, "pps", name, request, Empty)

    # --- pipelines ---------------------------------------------------------

    async def CreatePipeline(  # type: ignore[override]
        self, request: pps.CreatePipelineRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "CreatePipeline", request)

    async def InspectPipeline(  # type: ignore[override]
        self, request: pps.InspectPipelineRequest, context: Ctx
    ) -> pps.PipelineInfo:
        return await self._ask(context)("InspectPipeline", request, pps.PipelineInfo, "qry")

    async def ListPipeline(  # type: ignore[override]
        self, request: pps.ListPipelineRequest, context: Ctx
    ) -> pps.PipelineInfos:
        return await self._ask(context)("ListPipeline", request, pps.PipelineInfos, "qry")

    async def DeletePipeline(  # type: ignore[override]
        self, request: pps.DeletePipelineRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "DeletePipeline", request)

    async def StartPipeline(  # type: ignore[override]
        self, request: pps.StartPipelineRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "StartPipeline", request)

    async def StopPipeline(  # type: ignore[override]
        self, request: pps.StopPipelineRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "StopPipeline", request)

    async def RerunPipeline(  # type: ignore[override]
        self, request: pps.RerunPipelineRequest, context: Ctx
    ) -> Empty:
        raise refusal("RerunPipeline")

    async def DeleteAll(self, request: Empty, context: Ctx) -> Empty:  # type: ignore[override]
        return await self._cmd(context, "DeleteAll", request)

    # --- secrets (not in 1.7: Pachyderm 2.x's RPCs) --------------------------

    async def CreateSecret(  # type: ignore[override]
        self, request: pps.CreateSecretRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "CreateSecret", request)

    async def DeleteSecret(  # type: ignore[override]
        self, request: pps.DeleteSecretRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "DeleteSecret", request)

    async def InspectSecret(  # type: ignore[override]
        self, request: pps.InspectSecretRequest, context: Ctx
    ) -> pps.SecretInfo:
        return await self._ask(context)("InspectSecret", request, pps.SecretInfo, "qry")

    async def ListSecret(self, request: Empty, context: Ctx) -> pps.SecretInfos:  # type: ignore[override]
        return await self._ask(context)("ListSecret", request, pps.SecretInfos, "qry")

    # --- jobs --------------------------------------------------------------

    async def CreateJob(  # type: ignore[override]
        self, request: pps.CreateJobRequest, context: Ctx
    ) -> pps.Job:
        raise refusal("CreateJob")

    async def InspectJob(  # type: ignore[override]
        self, request: pps.InspectJobRequest, context: Ctx
    ) -> pps.JobInfo:
        return await wait_for_job(self._ask(context), request, context.time_remaining)

    async def ListJob(  # type: ignore[override]
        self, request: pps.ListJobRequest, context: Ctx
    ) -> pps.JobInfos:
        return await self._ask(context)("ListJob", request, pps.JobInfos, "qry")

    async def ListJobStream(  # type: ignore[override]
        self, request: pps.ListJobRequest, context: Ctx
    ) -> AsyncIterator[pps.JobInfo]:
        infos = await self._ask(context)("ListJob", request, pps.JobInfos, "qry")
        for info in infos.job_info:
            yield info

    async def FlushJob(  # type: ignore[override]
        self, request: pps.FlushJobRequest, context: Ctx
    ) -> AsyncIterator[pps.JobInfo]:
        jobs = flush_jobs(
            self._ask(context, "pfs"), self._ask(context), request, context.time_remaining
        )
        async for info in jobs:
            yield info

    async def DeleteJob(  # type: ignore[override]
        self, request: pps.DeleteJobRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "DeleteJob", request)

    async def StopJob(  # type: ignore[override]
        self, request: pps.StopJobRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "StopJob", request)

    # --- datums ------------------------------------------------------------

    async def InspectDatum(  # type: ignore[override]
        self, request: pps.InspectDatumRequest, context: Ctx
    ) -> pps.DatumInfo:
        return await self._ask(context)("InspectDatum", request, pps.DatumInfo, "qry")

    async def ListDatum(  # type: ignore[override]
        self, request: pps.ListDatumRequest, context: Ctx
    ) -> pps.ListDatumResponse:
        return await gather_datums(self._ask(context), request, self.max_reply)

    async def ListDatumStream(  # type: ignore[override]
        self, request: pps.ListDatumRequest, context: Ctx
    ) -> AsyncIterator[pps.ListDatumStreamResponse]:
        async for item in list_datums(self._ask(context), request):
            yield item

    async def RestartDatum(  # type: ignore[override]
        self, request: pps.RestartDatumRequest, context: Ctx
    ) -> Empty:
        result = await self._ask(context)("RestartDatum", request, work.RestartDatumResult, "cmd")
        context.set_trailing_metadata(((RESTART_RESULT_KEY, result.SerializeToString()),))
        return Empty()

    # --- logs and the rest -------------------------------------------------

    async def GetLogs(  # type: ignore[override]
        self, request: pps.GetLogsRequest, context: Ctx
    ) -> AsyncIterator[pps.LogMessage]:
        async for message in log_messages(self._ask(context), request):
            yield message

    async def GarbageCollect(  # type: ignore[override]
        self, request: pps.GarbageCollectRequest, context: Ctx
    ) -> pps.GarbageCollectResponse:
        result = await garbage_collect(self._ask(context, "pfs"), request)
        context.set_trailing_metadata(((GC_RESULT_KEY, result.SerializeToString()),))
        return pps.GarbageCollectResponse()

    async def ActivateAuth(  # type: ignore[override]
        self, request: pps.ActivateAuthRequest, context: Ctx
    ) -> pps.ActivateAuthResponse:
        raise refusal("ActivateAuth")


def register(server: grpc.aio.Server, bus: Bus, max_reply: int = MAX_REPLY) -> None:
    pps_pb2_grpc.add_APIServicer_to_server(PpsServicer(bus, max_reply), server)
