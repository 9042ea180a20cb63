"""pps over the HTTP JSON API against a fake bus: unary RPCs forward,
InspectJob blocks, the streaming RPCs answer a JSON array, and the RPCs the
gateway does not serve say so."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from libs.api.internal import gc_pb2
from libs.api.internal import pps_work_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pps import pps_pb2 as pps
from libs.bus import Bus
from libs.errors import NotFound
from services.gateway.app import polling
from services.gateway.app.unserved import REFUSED
from services.gateway.errors import http_errors
from services.gateway.http import api

Reply = Callable[[Message], Message]


class FakeBus:
    """A bus whose replies come from a script keyed by ``service.Name``."""

    timeout = 10.0

    def __init__(self, **script: Reply) -> None:
        self.script = script
        self.asked: list[tuple[str, str, Message, str]] = []

    async def request(
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
        self.asked.append((f"{service}.{name}", kind, request, principal))
        reply = self.script[f"{service}_{name}"](request)
        assert isinstance(reply, response_type)
        return reply


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(polling, "FIRST_POLL", 0.001)
    monkeypatch.setattr(polling, "LAST_POLL", 0.002)


async def client_for(bus: FakeBus) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application(middlewares=[http_errors])
    api.mount(app, cast(Bus, bus))
    async with TestClient(TestServer(app)) as client:
        yield client


async def post(
    client: TestClient[web.Request, web.Application], method: str, body: Any = None
) -> tuple[int, Any]:
    resp = await client.post(f"/api/pps/{method}", json=body or {}, headers={"authn-token": "t"})
    return resp.status, await resp.json()


def jobs(*states: int) -> Reply:
    left = list(states)

    def reply(_: Message) -> Message:
        state = left.pop(0) if len(left) > 1 else left[0]
        return pps.JobInfo(job=pps.Job(id="j1"), state=state)  # type: ignore[arg-type]

    return reply


async def test_unary_pps_rpcs_forward_with_the_callers_token() -> None:
    bus = FakeBus(
        pps_ListPipeline=lambda _: pps.PipelineInfos(
            pipeline_info=[pps.PipelineInfo(pipeline=pps.Pipeline(name="edges"))]
        ),
        pps_CreatePipeline=lambda _: Empty(),
    )
    async for client in client_for(bus):
        status, body = await post(client, "ListPipeline")
        assert status == 200 and body["pipelineInfo"][0]["pipeline"]["name"] == "edges"
        spec = {"pipeline": {"name": "edges"}, "transform": {"cmd": ["sh"]}}
        assert await post(client, "CreatePipeline", spec) == (200, {})
    assert [(n, k, p) for n, k, _, p in bus.asked] == [
        ("pps.ListPipeline", "qry", "t"),
        ("pps.CreatePipeline", "cmd", "t"),
    ]
    created = bus.asked[1][2]
    assert isinstance(created, pps.CreatePipelineRequest) and list(created.transform.cmd) == ["sh"]


async def test_inspect_job_with_block_state_waits_for_the_end() -> None:
    bus = FakeBus(pps_InspectJob=jobs(pps.JOB_STARTING, pps.JOB_RUNNING, pps.JOB_SUCCESS))
    async for client in client_for(bus):
        status, body = await post(client, "InspectJob", {"job": {"id": "j1"}, "blockState": True})
        assert status == 200 and body["state"] == "JOB_SUCCESS"
        status, body = await post(client, "InspectJob", {})
        assert status == 400 and "job id or an output commit" in body["error"]["message"]
    assert len(bus.asked) == 3


async def test_streaming_rpcs_answer_a_json_array() -> None:
    datums = pps.ListDatumResponse(
        datum_infos=[pps.DatumInfo(datum=pps.Datum(id=i)) for i in ("a", "b")], total_pages=1
    )
    bus = FakeBus(
        pps_ListJob=lambda _: pps.JobInfos(job_info=[pps.JobInfo(job=pps.Job(id="j1"))]),
        pps_ListDatum=lambda _: datums,
        pps_GetLogsPage=lambda r: internal.LogPage(
            messages=[] if r.after else [pps.LogMessage(message="hi")],  # type: ignore[attr-defined]
            next=1,
        ),
        pfs_FlushCommit=lambda _: pfs.CommitInfos(
            commit_info=[pfs.CommitInfo(commit=pfs.Commit(repo=pfs.Repo(name="e"), id="c"))]
        ),
        pps_InspectPipeline=lambda _: pps.PipelineInfo(),
        pps_InspectJob=jobs(pps.JOB_SUCCESS),
    )
    async for client in client_for(bus):
        assert (await post(client, "ListJobStream"))[1] == [{"job": {"id": "j1"}}]
        status, body = await post(client, "ListDatumStream", {"job": {"id": "j1"}})
        assert status == 200 and [d["datumInfo"]["datum"]["id"] for d in body] == ["a", "b"]
        status, body = await post(client, "GetLogs", {"job": {"id": "j1"}})
        assert status == 200 and [m["message"] for m in body] == ["hi"]
        status, body = await post(client, "FlushJob", {"commits": [{"repo": {"name": "i"}}]})
        assert status == 200 and [j["state"] for j in body] == ["JOB_SUCCESS"]
        status, body = await post(client, "GetLogs", {"follow": True})
        assert status == 400 and "use gRPC" in body["error"]["message"]


async def test_errors_and_refusals_over_http() -> None:
    def missing(_: Message) -> Message:
        raise NotFound("pipeline nope not found")

    bus = FakeBus(pps_InspectPipeline=missing)
    async for client in client_for(bus):
        status, body = await post(client, "InspectPipeline", {"pipeline": {"name": "nope"}})
        assert status == 404 and "nope" in body["error"]["message"]
        for rpc in ("CreateJob", "RerunPipeline", "ActivateAuth"):
            status, body = await post(client, rpc)
            assert status == 501 and body["error"]["message"] == REFUSED[rpc]
    assert len(bus.asked) == 1


async def test_garbage_collect_over_http_asks_pfs_and_answers_the_counts() -> None:
    result = gc_pb2.GarbageCollectResult(deleted=gc_pb2.ObjectCount(objects=3, bytes=300))
    bus = FakeBus(pfs_GarbageCollect=lambda _: result)
    async for client in client_for(bus):
        status, body = await post(client, "GarbageCollect", {"memoryBytes": "1048576"})
        assert status == 200 and body["deleted"] == {"objects": "3", "bytes": "300"}
        status, body = await post(client, "GarbageCollect", {"memoryBytes": "-1"})
        assert status == 400 and "memory" in body["error"]["message"]
    [(name, kind, request, _)] = bus.asked
    assert (name, kind) == ("pfs.GarbageCollect", "cmd")
    assert isinstance(request, gc_pb2.GarbageCollectRequest) and request.memory_bytes == 1 << 20
