"""Durable reactions (libs.events.Reactor) on a real nats-server."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import nats
from nats.aio.client import Client

from libs.api.events import testing_pb2 as t
from libs.config import Config
from libs.errors import Unavailable
from libs.events import NEW, Append, EventStore, Reactor, RecordedEvent, ensure_stream
from programs.cluster.natsserver import NatsServer
from tests.support import counter


async def _open_counters(nc: Client, names: list[str]) -> None:
    cfg = Config()
    await ensure_stream(nc.jetstream(), cfg)
    store = EventStore.from_config(nc, counter.registry(), cfg)
    results = await store.append_many(
        [Append(counter.ref(n), [t.CounterOpened(name=n)], NEW) for n in names]
    )
    assert not any(isinstance(r, Exception) for r in results)
    await store.close()


def _reactor(nc: Client, handler: Callable[[RecordedEvent], object], **kw: object) -> Reactor:
    async def handle(event: RecordedEvent) -> None:
        result = handler(event)
        if asyncio.iscoroutine(result):
            await result

    return Reactor(
        nc.jetstream(),
        counter.registry(),
        name=str(kw.pop("name", "react")),
        subjects=["ev.testing.counter.>"],
        handler=handle,
        retry_delay=0.05,
        **kw,  # type: ignore[arg-type]
    )


async def _until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls test state
            await asyncio.sleep(0.02)


async def test_replicas_share_a_durable_consumer_each_event_once(
    nats_server: NatsServer,
) -> None:
    clients = [await nats.connect(nats_server.url) for _ in range(3)]
    names = [f"r{i}" for i in range(300)]
    seen: Counter[str] = Counter()
    by_replica: Counter[int] = Counter()

    def handler(replica: int) -> Callable[[RecordedEvent], object]:
        async def handle(event: RecordedEvent) -> None:
            seen[event.envelope.event_id] += 1
            by_replica[replica] += 1
            await asyncio.sleep(0.005)  # real work takes time: both replicas get some

        return handle

    reactors = [_reactor(clients[i], handler(i), batch_size=8) for i in range(2)]
    for r in reactors:
        await r.start()
    await _open_counters(clients[2], names)
    await _until(lambda: len(seen) == 300)
    await asyncio.sleep(0.3)  # nothing further arrives
    assert set(seen.values()) == {1}
    assert by_replica[0] > 0 and by_replica[1] > 0
    for r in reactors:
        await r.stop()
    for c in clients:
        await c.close()


async def test_acknowledged_events_are_not_redelivered_after_a_restart(nc: Client) -> None:
    first: list[str] = []
    reactor = _reactor(nc, lambda e: first.append(e.aggregate.id), name="durable")
    await reactor.start()
    await _open_counters(nc, ["a", "b", "c"])
    await _until(lambda: len(first) == 3)
    await reactor.stop()

    await _open_counters(nc, ["d", "e"])  # while no replica runs
    second: list[str] = []
    reactor = _reactor(nc, lambda e: second.append(e.aggregate.id), name="durable")
    await reactor.start()
    await _until(lambda: len(second) == 2)
    await asyncio.sleep(0.3)
    assert sorted(second) == ["d", "e"]
    await reactor.stop()


async def test_transient_errors_retry_and_poison_events_are_dropped(nc: Client) -> None:
    attempts: Counter[str] = Counter()
    done: list[str] = []

    def handle(event: RecordedEvent) -> None:
        name = event.aggregate.id
        attempts[name] += 1
        if name == "flaky" and attempts[name] <= 7:  # more than max_attempts
            raise Unavailable("object store down")
        if name == "poison":
            raise ValueError("a bug in the handler")
        done.append(name)

    reactor = _reactor(nc, handle, name="errors", max_attempts=3)
    await reactor.start()
    await _open_counters(nc, ["flaky", "poison", "fine"])
    await _until(lambda: sorted(done) == ["fine", "flaky"])
    await asyncio.sleep(0.5)
    assert attempts["poison"] == 3  # tried max_attempts times, then terminated
    assert attempts["flaky"] == 8  # transient: retried until it worked
    await reactor.stop()


async def test_invalid_messages_are_dropped_and_the_rest_flow(nc: Client) -> None:
    handled: list[str] = []
    reactor = _reactor(nc, lambda e: handled.append(e.aggregate.id), name="garbage")
    await reactor.start()
    await ensure_stream(nc.jetstream(), Config())
    await nc.jetstream().publish("ev.testing.counter.junk", b"\x00\xffnot an event")
    await _open_counters(nc, ["after"])
    await _until(lambda: handled == ["after"])
    # The junk was terminated, not left pending for redelivery.
    info = await nc.jetstream().consumer_info("EVENTS", "garbage")
    assert info.num_ack_pending == 0
    assert info.num_redelivered == 0
    await reactor.stop()
