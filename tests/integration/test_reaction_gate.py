"""The cluster state bucket, the restore gate on real reactions, and
Health.applied_seq, on a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from libs.api.events import testing_pb2 as t
from libs.api.internal.service_pb2 import HealthRequest, HealthResponse
from libs.bus import Bus
from libs.config import Config
from libs.errors import DeadlineExceeded, FailedPrecondition
from libs.events import (
    NEW,
    Append,
    EventStore,
    ProjectionRunner,
    Reactor,
    RecordedEvent,
    ensure_stream,
)
from libs.events.background import LONG_POLL_S
from libs.readmodels import SqliteDocumentStore
from libs.restore_gate import ReactionGate
from libs.service import ServiceContext, serve
from programs.cluster.natsserver import NatsServer
from services.admin.adapters.cluster_state import ClusterState
from services.admin.app.wait_applied import wait_applied
from tests.support import counter
from tests.support.counter_projection import CounterProjection


async def _append_counters(nc: Client, names: list[str]) -> int:
    """Open one counter per name (one event each); the last stream sequence."""
    cfg = Config()
    await ensure_stream(nc.jetstream(), cfg)
    store = EventStore.from_config(nc, counter.registry(), cfg)
    results = await store.append_many(
        [Append(counter.ref(n), [t.CounterOpened(name=n)], NEW) for n in names]
    )
    await store.close()
    seqs = []
    for r in results:
        assert not isinstance(r, Exception)
        seqs.append(r.position.seq)
    return max(seqs)


async def _until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls test state
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _gated_reactor(
    nc: Client, gate: ReactionGate, name: str, seen: list[int]
) -> AsyncIterator[Reactor]:
    async def handle(event: RecordedEvent) -> None:
        seen.append(event.stream_seq)

    reactor = Reactor(
        nc.jetstream(),
        counter.registry(),
        name=name,
        subjects=["ev.testing.counter.>"],
        handler=handle,
        ack_wait=2.0,
        gate=gate,
    )
    await reactor.start()
    try:
        yield reactor
    finally:
        await reactor.stop()


async def test_cluster_id_is_created_once_and_kept(nc: Client, nats_server: NatsServer) -> None:
    first, second = await asyncio.gather(
        ClusterState.open(nc.jetstream()), ClusterState.open(nc.jetstream())
    )
    ids = await asyncio.gather(first.cluster_id(), second.cluster_id())
    assert ids[0] == ids[1] and len(ids[0]) == 32
    other = await nats.connect(nats_server.url)
    try:
        again = await ClusterState.open(other.jetstream())
        assert await again.cluster_id() == ids[0]
    finally:
        await other.close()


async def test_restore_status_lifecycle(nc: Client) -> None:
    state = await ClusterState.open(nc.jetstream())
    assert await state.restore_status() is None
    with pytest.raises(FailedPrecondition, match="no restore"):
        await state.finish_restore("r1")
    await state.begin_restore("r1", 9, {"react": 4})
    status = await state.restore_status()
    assert status is not None and status.running and status.reaction_floors == {"react": 4}
    with pytest.raises(FailedPrecondition, match="'r1'"):
        await state.finish_restore("r2")
    await state.finish_restore("r1")
    done = await state.restore_status()
    assert done is not None and not done.running and done.finished >= done.started
    await state.finish_restore("r1")  # idempotent
    await state.abandon_restore("r1")  # a finished restore stays
    assert await state.restore_status() == done


async def test_reactions_hold_during_a_restore_then_handle_only_above_their_floor(
    nc: Client,
) -> None:
    state = await ClusterState.open(nc.jetstream())
    await ensure_stream(nc.jetstream(), Config())
    # A restore of 6 events: "named" had handled up to 3 at the extract;
    # "unnamed" is not in the extract (it handled all of it).
    await state.begin_restore("r1", 6, {"named": 3})
    gate = ReactionGate(state)
    await gate.start()
    named: list[int] = []
    unnamed: list[int] = []
    async with (
        _gated_reactor(nc, gate, "named", named) as r_named,
        _gated_reactor(nc, gate, "unnamed", unnamed) as r_unnamed,
    ):
        assert await _append_counters(nc, [f"c{i}" for i in range(6)]) == 6
        await asyncio.sleep(0.5)
        assert named == [] and unnamed == []  # held while the restore runs
        await state.finish_restore("r1")
        await _until(lambda: r_named.skipped == 3 and r_unnamed.skipped == 6)
        await _until(lambda: len(named) == 3)
        assert sorted(named) == [4, 5, 6] and unnamed == []
        # events after the restore reach every reaction
        assert await _append_counters(nc, ["later"]) == 7
        await _until(lambda: 7 in named and 7 in unnamed)
        assert sorted(named) == [4, 5, 6, 7] and unnamed == [7]
    await gate.stop()


async def test_without_a_restore_a_gated_reaction_handles_everything(nc: Client) -> None:
    state = await ClusterState.open(nc.jetstream())
    gate = ReactionGate(state)
    await gate.start()
    seen: list[int] = []
    async with _gated_reactor(nc, gate, "plain", seen) as reactor:
        last = await _append_counters(nc, [f"c{i}" for i in range(20)])
        await _until(lambda: len(seen) == last)
        assert sorted(seen) == list(range(1, last + 1)) and reactor.skipped == 0
    await gate.stop()


async def test_health_applied_seq_reaches_the_end_of_the_log(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    """The projection follows counter subjects only; the log ends with
    messages on other subjects, and applied_seq still reaches its end."""
    cfg = Config(service="gated", nats_url=nats_server.url)
    await ensure_stream(nc.jetstream(), cfg)
    stop = asyncio.Event()
    runners: list[ProjectionRunner] = []

    async def setup(ctx: ServiceContext) -> None:
        docs = SqliteDocumentStore(tmp_path / "views.sqlite")
        ctx.stack.push_async_callback(docs.close)
        runner = ProjectionRunner(ctx.js, counter.registry(), docs, CounterProjection())
        await runner.start()
        ctx.stack.push_async_callback(runner.stop)
        runners.append(runner)
        ctx.watch_applied(runner)

    service = asyncio.create_task(serve("gated", setup, cfg, stop))
    bus = Bus(nc, service="tester")
    try:
        counted = await _append_counters(nc, ["a", "b", "c"])
        js = nc.jetstream()
        for i in range(5):
            await js.publish(f"ev.elsewhere.thing.{i}", b"not for the counters")
        last = (await js.stream_info("EVENTS")).state.last_seq
        assert last == counted + 5
        # an idle runner moves past other subjects' tail when its long poll
        # (LONG_POLL_S, 20 s) ends with nothing: allow that and a margin
        await wait_applied(bus, last, services=("gated",), timeout=LONG_POLL_S * 3)
        reply = await bus.request("gated", "Health", HealthRequest(), HealthResponse, kind="qry")
        assert reply.applied_seq == last and reply.ready
        with pytest.raises(DeadlineExceeded, match=rf"gated .* {last + 100} .*at {last}"):
            await wait_applied(bus, last + 100, services=("gated",), timeout=0.5)
    finally:
        stop.set()
        await service
        await bus.close()
    # the position moved over the other subjects was checkpointed
    docs = SqliteDocumentStore(tmp_path / "views.sqlite")
    await docs.open(CounterProjection.collections)
    assert await docs.checkpoint(runners[0].checkpoint_name) == last
    await docs.close()


async def test_wait_applied_names_a_service_that_is_not_there(nc: Client) -> None:
    bus = Bus(nc, service="tester")
    with pytest.raises(DeadlineExceeded, match=r"nobody .*not answering"):
        await wait_applied(bus, 1, services=("nobody",), timeout=0.3)
    await bus.close()
