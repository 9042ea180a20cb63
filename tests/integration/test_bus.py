"""The command/query bus against a real nats-server."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.aio.msg import Msg

from libs.api.internal.service_pb2 import HealthRequest, HealthResponse
from libs.bus import Bus, Context
from libs.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    MalformedMessage,
    MessageTooLarge,
    NotFound,
    Unavailable,
)
from programs.cluster.natsserver import NatsServer


async def _echo(req: HealthRequest, ctx: Context) -> Message:
    return HealthResponse(service="echo", replica=ctx.principal, reason=ctx.request_id)


async def test_request_reply_carries_principal(nc: Client) -> None:
    bus = Bus(nc, service="svc")
    await bus.serve("Health", HealthRequest, _echo, kind="qry")
    reply = await bus.request(
        "svc",
        "Health",
        HealthRequest(),
        HealthResponse,
        kind="qry",
        principal="robot:x",
        request_id="r1",
    )
    assert reply.service == "echo"
    assert reply.replica == "robot:x"
    assert reply.reason == "r1"
    await bus.close()


async def test_typed_error_crosses_the_wire(nc: Client) -> None:
    bus = Bus(nc, service="svc")

    async def missing(req: HealthRequest, ctx: Context) -> Message:
        raise NotFound("repo images not found", repo="images")

    await bus.serve("Inspect", HealthRequest, missing)
    with pytest.raises(NotFound) as info:
        await bus.request("svc", "Inspect", HealthRequest(), HealthResponse)
    assert info.value.fields == {"repo": "images"}
    assert str(info.value) == "repo images not found"
    await bus.close()


async def test_handler_crash_is_internal_error_and_service_keeps_serving(nc: Client) -> None:
    bus = Bus(nc, service="svc")
    calls = 0

    async def flaky(req: HealthRequest, ctx: Context) -> Message:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return HealthResponse(ready=True)

    await bus.serve("Flaky", HealthRequest, flaky)
    with pytest.raises(Internal, match="boom"):
        await bus.request("svc", "Flaky", HealthRequest(), HealthResponse)
    assert (await bus.request("svc", "Flaky", HealthRequest(), HealthResponse)).ready
    await bus.close()


async def test_malformed_and_oversize_requests_get_typed_errors(nc: Client) -> None:
    bus = Bus(nc, service="svc", max_message_bytes=1024)
    await bus.serve("Health", HealthRequest, _echo, kind="qry")
    # A raw client sends bytes that are not a HealthRequest.
    msg = await nc.request("qry.svc.Health", b"\xff\xff\xff", timeout=2)
    err = json.loads((msg.headers or {})["Pach-Error"])
    assert err["type"] == "MalformedMessage"
    # ... and a body over the service's limit.
    msg = await nc.request("qry.svc.Health", b"\x0a" * 4096, timeout=2)
    assert json.loads((msg.headers or {})["Pach-Error"])["type"] == "MessageTooLarge"
    # The caller's side refuses to send an oversize request at all.
    with pytest.raises(MessageTooLarge):
        await bus.request(
            "svc", "Health", HealthResponse(reason="x" * 2048), HealthResponse, kind="qry"
        )
    # The service still answers.
    assert await bus.request("svc", "Health", HealthRequest(), HealthResponse, kind="qry")
    await bus.close()


async def test_garbage_reply_is_malformed(nc: Client) -> None:
    async def bad(msg: Msg) -> None:
        await msg.respond(b"\xff\xff")

    await nc.subscribe("qry.raw.Health", cb=bad)
    bus = Bus(nc, service="caller")
    with pytest.raises(MalformedMessage):
        await bus.request("raw", "Health", HealthRequest(), HealthResponse, kind="qry")


async def test_no_responder_is_unavailable_and_slow_is_deadline(nc: Client) -> None:
    bus = Bus(nc, service="svc")
    with pytest.raises(Unavailable):
        await bus.request("nobody", "Health", HealthRequest(), HealthResponse, kind="qry")

    async def slow(req: HealthRequest, ctx: Context) -> Message:
        await asyncio.sleep(2)
        return HealthResponse()

    await bus.serve("Slow", HealthRequest, slow)
    with pytest.raises(DeadlineExceeded):
        await bus.request("svc", "Slow", HealthRequest(), HealthResponse, timeout=0.2)
    await bus.close()


async def test_bad_subject_parts_are_rejected(nc: Client) -> None:
    bus = Bus(nc, service="svc")
    with pytest.raises(InvalidArgument):
        await bus.request("a.b", "X", HealthRequest(), HealthResponse)
    with pytest.raises(InvalidArgument):
        await bus.request("svc", "X", HealthRequest(), HealthResponse, kind="evt")


async def test_replicas_share_the_load(nats_server: NatsServer) -> None:
    """Two replicas in one queue group: each request is handled exactly once."""
    clients = [await nats.connect(nats_server.url) for _ in range(3)]
    seen: dict[str, int] = {"a": 0, "b": 0}

    def replica(name: str):  # type: ignore[no-untyped-def]
        async def handler(req: HealthRequest, ctx: Context) -> Message:
            seen[name] += 1
            return HealthResponse(replica=name)

        return handler

    buses = [Bus(clients[0], service="svc"), Bus(clients[1], service="svc")]
    await buses[0].serve("Health", HealthRequest, replica("a"), kind="qry")
    await buses[1].serve("Health", HealthRequest, replica("b"), kind="qry")
    caller = Bus(clients[2], service="caller")
    replies = await asyncio.gather(
        *(
            caller.request("svc", "Health", HealthRequest(), HealthResponse, kind="qry")
            for _ in range(200)
        )
    )
    assert len(replies) == 200
    assert seen["a"] + seen["b"] == 200
    assert seen["a"] > 0 and seen["b"] > 0
    for b in buses:
        await b.close()
    for c in clients:
        await c.close()


async def test_close_lets_inflight_requests_finish(nc: Client, nats_server: NatsServer) -> None:
    server_nc = await nats.connect(nats_server.url)
    bus = Bus(server_nc, service="svc")
    started = asyncio.Event()

    async def slowish(req: HealthRequest, ctx: Context) -> Message:
        started.set()
        await asyncio.sleep(0.3)
        return HealthResponse(ready=True)

    await bus.serve("Work", HealthRequest, slowish)
    caller = Bus(nc, service="caller")
    pending = asyncio.create_task(caller.request("svc", "Work", HealthRequest(), HealthResponse))
    await started.wait()
    await bus.close()
    assert (await pending).ready
    await server_nc.close()


async def test_a_note_reaches_every_replica_and_bad_notes_are_dropped(
    nats_server: NatsServer,
) -> None:
    """``notify`` is heard by every listening replica (no queue group); a
    note that does not decode, is too large, or whose handler fails is
    dropped and the listener goes on."""
    clients = [await nats.connect(nats_server.url) for _ in range(3)]
    heard: dict[str, list[str]] = {"a": [], "b": []}

    def replica(name: str):  # type: ignore[no-untyped-def]
        async def handler(note: HealthResponse, ctx: Context) -> None:
            if note.service == "boom":
                raise RuntimeError("a handler bug")
            heard[name].append(f"{note.service}/{ctx.principal}")

        return handler

    buses = [Bus(clients[0], service="svc"), Bus(clients[1], service="svc")]
    for bus, name in zip(buses, "ab", strict=True):
        await bus.listen("Seen", HealthResponse, replica(name))
    sender = Bus(clients[2], service="caller", max_message_bytes=64)
    with pytest.raises(MessageTooLarge):
        await sender.notify("svc", "Seen", HealthResponse(service="x" * 100))
    await clients[2].publish("note.svc.Seen", b"\xff\xff not protobuf")
    await sender.notify("svc", "Seen", HealthResponse(service="boom"))
    await sender.notify("svc", "Seen", HealthResponse(service="one"), principal="robot:me")
    await clients[2].flush()
    for _ in range(500):  # up to 10 s on a loaded machine
        if heard["a"] and heard["b"]:
            break
        await asyncio.sleep(0.02)
    assert heard == {"a": ["one/robot:me"], "b": ["one/robot:me"]}
    with pytest.raises(InvalidArgument):
        await sender.notify("svc", "bad name!", HealthResponse())
    for b in buses:
        await b.close()
    for c in clients:
        await c.close()


async def test_a_survey_gathers_the_answers_of_every_listener(nats_server: NatsServer) -> None:
    """``survey`` hears every listener that answers within the window; one
    with nothing to say (None), one that fails and one that is too slow are
    not among the answers; a plain note to the same listeners wants none."""
    clients = [await nats.connect(nats_server.url) for _ in range(6)]

    def replica(name: str, delay: float = 0.0):  # type: ignore[no-untyped-def]
        async def handler(note: HealthRequest, ctx: Context) -> Message | None:
            await asyncio.sleep(delay)
            if name == "quiet":
                return None
            if name == "broken":
                raise RuntimeError("a handler bug")
            return HealthResponse(service=name, replica=ctx.principal)

        return handler

    names = [("a", 0.0), ("b", 0.0), ("quiet", 0.0), ("broken", 0.0), ("slow", 2.0)]
    buses = [Bus(c, service="svc") for c in clients[:5]]
    for bus, (name, delay) in zip(buses, names, strict=True):
        await bus.listen("Who", HealthRequest, replica(name, delay))
    sender = Bus(clients[5], service="caller", max_message_bytes=64)
    got = await sender.survey(
        "svc", "Who", HealthRequest(), HealthResponse, window=0.5, principal="p"
    )
    assert sorted((r.service, r.replica) for r in got) == [("a", "p"), ("b", "p")]
    await sender.notify("svc", "Who", HealthRequest())  # no reply subject: nothing sent
    with pytest.raises(MessageTooLarge):
        await sender.survey(
            "svc", "Who", HealthResponse(service="x" * 100), HealthResponse, window=0.1
        )
    with pytest.raises(InvalidArgument):
        await sender.survey("svc", "bad name!", HealthRequest(), HealthResponse, window=0.1)
    for b in buses:
        await b.close()
    for c in clients:
        await c.close()
