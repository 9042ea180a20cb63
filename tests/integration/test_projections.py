"""Projections with checkpoints, resumption after kill -9, read-your-writes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from nats.aio.client import Client

from libs.api.events import testing_pb2 as t
from libs.api.internal.service_pb2 import HealthRequest, HealthResponse
from libs.bus import Bus, Context
from libs.config import Config
from libs.events import (
    NEW,
    Append,
    EventStore,
    ProjectionRunner,
    RecordedEvent,
    View,
    ensure_stream,
    execute,
)
from libs.readmodels import Collection, SqliteDocumentStore
from programs.cluster.natsserver import NatsServer
from tests.support import counter
from tests.support.counter_projection import COUNTERS, CounterProjection


async def _fill(nc: Client, counters: int, increments: int) -> int:
    """Open ``counters`` counters and increment each ``increments`` times
    (round-robin, so the log interleaves aggregates). Returns the last seq."""
    cfg = Config()
    await ensure_stream(nc.jetstream(), cfg)
    store = EventStore.from_config(nc, counter.registry(), cfg)
    positions = {}
    opened = await store.append_many(
        [Append(counter.ref(f"c{i}"), [t.CounterOpened()], NEW) for i in range(counters)]
    )
    for i, res in enumerate(opened):
        assert not isinstance(res, Exception)
        positions[i] = res.position
    for round_ in range(increments):
        items = [
            Append(counter.ref(f"c{i}"), [t.CounterIncremented(by=round_ + i)], positions[i])
            for i in range(counters)
        ]
        for i, res in enumerate(await store.append_many(items)):
            assert not isinstance(res, Exception)
            positions[i] = res.position
    await store.close()
    return max(p.seq for p in positions.values())


async def _dump(path: Path) -> list[dict[str, object]]:
    store = SqliteDocumentStore(path)
    await store.open(CounterProjection.collections)
    docs = [doc async for doc in store.query(COUNTERS)]
    await store.close()
    return docs


async def _worker(url: str, path: Path, target: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.counter_projection",
        url,
        str(path),
        str(target),
        stdout=asyncio.subprocess.PIPE,
    )


async def test_projection_killed_mid_stream_resumes_identical_to_a_fresh_build(
    nc: Client, nats_server: NatsServer, tmp_path: Path
) -> None:
    last = await _fill(nc, counters=40, increments=100)  # 4,040 messages
    crashed = tmp_path / "crashed.sqlite"

    # Run the projection in its own process and kill -9 it mid-stream.
    proc = await _worker(nats_server.url, crashed, last)
    assert proc.stdout is not None
    position = 0
    while position < 400:
        line = (await proc.stdout.readline()).decode().split()
        assert line, "worker exited early"
        position = int(line[1]) if line[0] == "at" else position
    proc.kill()
    await proc.wait()
    assert position < last, "the kill must land mid-stream"

    # A new process resumes from the checkpoint written with the data.
    proc = await _worker(nats_server.url, crashed, last)
    assert proc.stdout is not None
    first = (await proc.stdout.readline()).decode().split()
    assert first[0] == "start" and 0 < int(first[1]) < last
    await proc.communicate()
    assert proc.returncode == 0

    fresh = tmp_path / "fresh.sqlite"
    proc = await _worker(nats_server.url, fresh, last)
    await proc.communicate()

    crashed_docs, fresh_docs = await _dump(crashed), await _dump(fresh)
    assert len(fresh_docs) == 40
    assert crashed_docs == fresh_docs
    # And the values are right: counter i got sum(round + i for round in 0..99).
    by_value = sorted(d["value"] for d in fresh_docs)  # type: ignore[type-var]
    assert by_value == [sum(r + i for r in range(100)) for i in range(40)]


async def test_rebuild_from_zero_and_invalid_messages_are_skipped(
    nc: Client, tmp_path: Path
) -> None:
    last = await _fill(nc, counters=3, increments=5)
    # Something that is not our event store writes garbage on an event subject.
    await nc.jetstream().publish("ev.testing.counter.junk", b"\xff\xfe not an event")
    cfg = Config()
    store = EventStore.from_config(nc, counter.registry(), cfg)
    after = await store.append(
        counter.ref("c0"),
        [t.RenamedV1(full_name="Grace Hopper")],
        await store.position(counter.ref("c0")),
    )
    assert after.position.seq > last
    docs = SqliteDocumentStore(tmp_path / "p.sqlite")
    runner = ProjectionRunner(nc.jetstream(), counter.registry(), docs, CounterProjection())
    await runner.start()
    await runner.wait_for(after.position.seq)
    assert runner.skipped == 1
    c0 = await docs.get(COUNTERS, "c0")
    assert c0 is not None and c0["name"] == "Grace Hopper" and c0["value"] == 10
    before = [d async for d in docs.query(COUNTERS)]
    await runner.rebuild()
    await runner.wait_for(after.position.seq)
    assert [d async for d in docs.query(COUNTERS)] == before
    await runner.stop()
    await docs.close()
    await store.close()


async def test_command_returns_after_its_projection_applied_it(nc: Client, tmp_path: Path) -> None:
    """Read-your-writes: a query right after a command sees the command's effect."""
    cfg = Config()
    await ensure_stream(nc.jetstream(), cfg)
    store = EventStore.from_config(nc, counter.registry(), cfg)
    docs = SqliteDocumentStore(tmp_path / "svc.sqlite")
    runner = ProjectionRunner(nc.jetstream(), counter.registry(), docs, CounterProjection())
    await runner.start()
    bus = Bus(nc, service="counters")

    async def increment(req: HealthRequest, ctx: Context) -> Message:
        ref = counter.ref("rw")
        done = await execute(store, ref, counter.Counter(), counter.evolve, counter.increment(1))
        assert done.appended is not None
        await runner.wait_for(done.appended.position.seq)
        return HealthResponse(ready=True)

    async def get(req: HealthRequest, ctx: Context) -> Message:
        doc = await docs.get(COUNTERS, "rw")
        return HealthResponse(reason=str(doc["value"] if doc else 0))

    await bus.serve("Increment", HealthRequest, increment)
    await bus.serve("Get", HealthRequest, get, kind="qry")
    await execute(store, counter.ref("rw"), counter.Counter(), counter.evolve, counter.open_counter)
    for i in range(1, 31):
        await bus.request("counters", "Increment", HealthRequest(), HealthResponse)
        got = await bus.request("counters", "Get", HealthRequest(), HealthResponse, kind="qry")
        assert got.reason == str(i)
    await bus.close()
    await runner.stop()
    await docs.close()
    await store.close()


class OtherProjection(CounterProjection):
    """A second projection sharing the same store, in its own collection."""

    name = "other"
    collections = (Collection("others", indexes=("value",)),)

    async def apply(self, event: RecordedEvent, view: View) -> None:
        view.put("others", event.aggregate.id, {"seen": event.aggregate_version})


async def test_rebuilding_one_projection_leaves_the_others(nc: Client, tmp_path: Path) -> None:
    last = await _fill(nc, counters=3, increments=2)
    docs = SqliteDocumentStore(tmp_path / "shared.sqlite")
    reg = counter.registry()
    mine = ProjectionRunner(nc.jetstream(), reg, docs, CounterProjection())
    other = ProjectionRunner(nc.jetstream(), reg, docs, OtherProjection())
    await mine.start()
    await other.start()
    await mine.wait_for(last)
    await other.wait_for(last)
    before = [d async for d in docs.query("others")]
    assert len(before) == 3
    await mine.rebuild()
    await mine.wait_for(last)
    assert [d async for d in docs.query("others")] == before
    assert await docs.checkpoint(other.checkpoint_name) == last
    assert len([d async for d in docs.query(COUNTERS)]) == 3
    await mine.stop()
    await other.stop()
    await docs.close()


class CountingProjection(OtherProjection):
    """Counts every event it is given, in its own collection."""

    name = "counting"
    collections = (Collection("counted"),)

    async def apply(self, event: RecordedEvent, view: View) -> None:
        doc = await view.get("counted", "all") or {"n": 0, "seqs": []}
        view.put("counted", "all", {"n": doc["n"] + 1, "seqs": [*doc["seqs"], event.stream_seq]})


async def test_one_runner_feeds_projections_from_their_own_checkpoints(
    nc: Client, tmp_path: Path
) -> None:
    """A group reads the log once for all its projections; one that was
    ahead (it ran alone before) is not given what it applied already, and
    every projection's checkpoint ends at the log's end."""
    last = await _fill(nc, counters=3, increments=2)
    docs = SqliteDocumentStore(tmp_path / "group.sqlite")
    reg = counter.registry()
    js = nc.jetstream()
    alone = ProjectionRunner(js, reg, docs, CountingProjection())
    await alone.start()
    await alone.wait_for(last)
    await alone.stop()
    counted = await docs.get("counted", "all")
    assert counted is not None and counted["n"] == last

    store = EventStore.from_config(nc, reg, Config())
    more = await store.append(
        counter.ref("c1"), [t.CounterIncremented(by=7)], await store.position(counter.ref("c1"))
    )
    await store.close()
    group = ProjectionRunner(js, reg, docs, [CounterProjection(), CountingProjection()])
    await group.start()
    assert group.position == 0  # the counters' checkpoint
    await group.wait_for(more.position.seq)
    await group.stop()
    counted = await docs.get("counted", "all")
    assert counted is not None
    assert counted["seqs"] == list(range(1, more.position.seq + 1))  # each event once
    for name in ("projection:counters", "projection:counting"):
        assert await docs.checkpoint(name) == more.position.seq
    fresh = tmp_path / "fresh.sqlite"
    only = SqliteDocumentStore(fresh)
    runner = ProjectionRunner(js, reg, only, CounterProjection())
    await runner.start()
    await runner.wait_for(more.position.seq)
    await runner.stop()
    await only.close()
    assert [d async for d in docs.query(COUNTERS)] == await _dump(fresh)
    await docs.close()


def test_a_runner_feeds_only_projections_of_the_same_subjects() -> None:
    class Elsewhere(OtherProjection):
        subjects = ("ev.testing.other.>",)

    with pytest.raises(ValueError, match="same subjects"):
        ProjectionRunner(None, counter.registry(), None, [CounterProjection(), Elsewhere()])  # type: ignore[arg-type]


async def test_a_projection_with_no_events_of_its_own_reaches_the_end(
    nc: Client, tmp_path: Path
) -> None:
    """After a restore, a projection may find nothing on its subjects in the
    whole log. Its consumer's first fetch scans to the end, and nats-server
    then reports the end as "delivered" though nothing was: the runner must
    count what it received, not read that as an event in flight."""
    js = nc.jetstream()
    await ensure_stream(js, Config())
    for i in range(50):
        await js.publish(f"ev.elsewhere.thing.{i}", b"someone else's event")
    end = (await js.stream_info("EVENTS")).state.last_seq
    docs = SqliteDocumentStore(tmp_path / "none.sqlite")
    runner = ProjectionRunner(js, counter.registry(), docs, CounterProjection())
    await runner.start()
    try:
        await asyncio.sleep(1.5)  # the first fetch has scanned the whole stream
        await runner.wait_for(end, timeout=10)
        assert await docs.checkpoint(runner.checkpoint_name) == end
    finally:
        await runner.stop()
        await docs.close()


async def test_an_idle_projection_moves_past_events_on_other_subjects(
    nc: Client, tmp_path: Path
) -> None:
    """position means "applied the whole log up to here": when the tail of the
    stream is on subjects the projection does not follow, it moves to the
    stream's end once nothing is pending, checkpoints it and resumes after it."""
    last = await _fill(nc, counters=2, increments=2)
    js = nc.jetstream()
    for i in range(4):
        await js.publish(f"ev.elsewhere.thing.{i}", b"someone else's event")
    end = (await js.stream_info("EVENTS")).state.last_seq
    assert end == last + 4
    docs = SqliteDocumentStore(tmp_path / "idle.sqlite")
    runner = ProjectionRunner(js, counter.registry(), docs, CounterProjection())
    await runner.start()
    await runner.wait_for(end, timeout=10)
    assert runner.position == end
    assert await docs.checkpoint(runner.checkpoint_name) == end
    await runner.stop()
    # restarted, it starts after the skipped tail and still sees what comes next
    store = EventStore.from_config(nc, counter.registry(), Config())
    more = await store.append(
        counter.ref("c0"), [t.CounterIncremented(by=100)], await store.position(counter.ref("c0"))
    )
    await store.close()
    await runner.start()
    assert runner.position == end
    await runner.wait_for(more.position.seq)
    c0 = await docs.get(COUNTERS, "c0")
    assert c0 is not None and c0["value"] == 0 + 1 + 100
    await runner.stop()
    await docs.close()


async def test_a_projection_far_behind_reads_bigger_groups_and_applies_all(
    nc: Client, tmp_path: Path
) -> None:
    last = await _fill(nc, counters=20, increments=60)  # 1,220 messages
    docs = SqliteDocumentStore(tmp_path / "behind.sqlite")
    groups: list[int] = []

    class Counting(ProjectionRunner):
        async def _apply(self, msgs: Sequence[Any]) -> None:
            groups.append(len(msgs))
            await super()._apply(msgs)

    runner = Counting(
        nc.jetstream(),
        counter.registry(),
        docs,
        CounterProjection(),
        batch_size=16,
        catchup_batch=256,
    )
    await runner.start()
    await runner.wait_for(last, timeout=30)
    await runner.stop()
    assert groups[0] == 16 and max(groups) == 256  # doubled while full, capped
    values = sorted([d["value"] async for d in docs.query(COUNTERS)])  # type: ignore[type-var]
    assert values == [sum(r + i for r in range(60)) for i in range(20)]
    await docs.close()
