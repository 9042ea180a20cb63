"""pps.API and admin.API served by a real grpc.aio server on loopback over a
fake bus: the caller's deadline bounds a blocking InspectJob, streams stream,
refusals and bus errors arrive as their gRPC codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from libs.api.admin import admin_pb2 as admin
from libs.api.admin import admin_pb2_grpc
from libs.api.internal import pps_work_pb2 as internal
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from libs.bus import Bus
from libs.errors import DeadlineExceeded, NotFound, Unavailable
from services.gateway.app.unserved import REFUSED
from services.gateway.errors import GrpcErrors
from services.gateway.grpc import admin as admin_grpc
from services.gateway.grpc import pps as pps_grpc
from tests.unit.test_gateway_pps_http import FakeBus


class HoldingBus(FakeBus):
    """Like pps: a blocking InspectJob is held until the request times out."""

    async def request(  # type: ignore[override]
        self,
        service: str,
        name: str,
        request: Message,
        response_type: type[Message],
        *,
        kind: str = "cmd",
        principal: str = "",
        timeout: float | None = None,
    ) -> Message:
        if name == "InspectJob":
            self.asked.append((f"{service}.{name}", kind, request, principal))
            await asyncio.sleep(min(timeout or 10.0, 0.2))
            raise DeadlineExceeded(f"qry.{service}.{name} did not answer")
        return await super().request(
            service, name, request, response_type, kind=kind, principal=principal, timeout=timeout
        )


async def serve(fake: FakeBus) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[GrpcErrors()])
    pps_grpc.register(server, cast(Bus, fake))
    admin_grpc.register(server, cast(Bus, fake))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


async def test_a_blocking_inspect_job_ends_at_the_callers_deadline() -> None:
    fake = HoldingBus()
    async for channel in serve(fake):
        stub = pps_pb2_grpc.APIStub(channel)
        req = pps.InspectJobRequest(job=pps.Job(id="j1"), block_state=True)
        started = asyncio.get_running_loop().time()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.InspectJob(req, timeout=0.7)
        elapsed = asyncio.get_running_loop().time() - started
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 2.0
    assert len(fake.asked) >= 3  # asked again after each held request


async def test_streams_and_unary_calls_over_grpc() -> None:
    lines = [f"line {i}" for i in range(5)]

    def logs(request: Message) -> Message:
        assert isinstance(request, internal.GetLogsPageRequest)
        part = lines[request.after : request.after + 2]
        return internal.LogPage(
            messages=[pps.LogMessage(message=m) for m in part], next=request.after + len(part)
        )

    fake = FakeBus(
        pps_GetLogsPage=logs,
        pps_ListJob=lambda _: pps.JobInfos(job_info=[pps.JobInfo(job=pps.Job(id="a"))]),
        pps_StopPipeline=lambda _: Empty(),
    )
    async for channel in serve(fake):
        stub = pps_pb2_grpc.APIStub(channel)
        req = pps.GetLogsRequest(pipeline=pps.Pipeline(name="edges"))
        got = [m.message async for m in stub.GetLogs(req, timeout=5)]
        assert got == lines
        jobs = [j.job.id async for j in stub.ListJobStream(pps.ListJobRequest(), timeout=5)]
        assert jobs == ["a"]
        stop = pps.StopPipelineRequest(pipeline=pps.Pipeline(name="edges"))
        await stub.StopPipeline(stop, metadata=[("authn-token", "tok")], timeout=5)
    assert fake.asked[-1][:2] == ("pps.StopPipeline", "cmd")
    assert fake.asked[-1][3] == "tok"


async def test_refusals_and_errors_carry_their_codes() -> None:
    def missing(_: Message) -> Message:
        raise NotFound("pipeline nope not found")

    def no_admin(_: Message) -> Message:
        raise Unavailable("no admin service is serving qry.admin.InspectCluster")

    fake = FakeBus(
        pps_InspectPipeline=missing, pps_GetPipelineSpec=missing, admin_InspectCluster=no_admin
    )
    async for channel in serve(fake):
        stub = pps_pb2_grpc.APIStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CreateJob(pps.CreateJobRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert info.value.details() == REFUSED["CreateJob"]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            req = pps.InspectPipelineRequest(pipeline=pps.Pipeline(name="nope"))
            await stub.InspectPipeline(req, timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.InspectJob(pps.InspectJobRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        admin_stub = admin_pb2_grpc.APIStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            extract = admin.ExtractPipelineRequest(pipeline=pps.Pipeline(name="nope"))
            await admin_stub.ExtractPipeline(extract, timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await admin_stub.InspectCluster(Empty(), timeout=5)
        # InspectCluster asks the admin service, which is not there.
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
