"""Extract and restore (libs.backup) against real nats-servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import api

from libs.api.events import testing_pb2 as t
from libs.api.internal.backup_pb2 import ExtractRecord
from libs.backup import (
    FORMAT_VERSION,
    MAGIC,
    RestoreProgress,
    decode_frames,
    encode_frames,
    extract,
    extract_frames,
    restore,
)
from libs.cluster_state import ClusterState
from libs.config import Config
from libs.events import NEW, Append, EventStore, ensure_stream
from libs.events.registry import EventRegistry
from libs.natsserver import NatsServer
from libs.objects import LocalObjectStore, ObjectStore, put_chunks
from tests.support import counter

pytestmark = pytest.mark.timeout(120)


# --- fixtures ---------------------------------------------------------------


@pytest.fixture
def target_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=tmp_path / "target-js", log_file=tmp_path / "target.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def target(target_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(target_server.url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def source_store(tmp_path: Path) -> ObjectStore:
    return LocalObjectStore(tmp_path / "source-objects")


@pytest.fixture
def target_store(tmp_path: Path) -> ObjectStore:
    return LocalObjectStore(tmp_path / "target-objects")


async def _events(nc: Client, n_counters: int = 30) -> EventStore:
    await ensure_stream(nc.jetstream(), Config())
    store = EventStore(nc, counter.registry())
    items = [
        Append(counter.ref(f"c{i}"), [t.CounterOpened(name=f"c{i}")], NEW)
        for i in range(n_counters)
    ]
    results = await store.append_many(items)
    for i, r in enumerate(results):
        assert not isinstance(r, Exception), r
        await store.append(
            counter.ref(f"c{i}"),
            [t.CounterIncremented(by=i), t.CounterIncremented(by=1)],
            r.position,
        )
    return store


async def _objects(store: ObjectStore) -> None:
    async def blocks(data: bytes) -> AsyncIterator[bytes]:
        yield data

    await put_chunks(store, blocks(b"hello " * 1000))
    await put_chunks(store, blocks(bytes(range(256)) * 9000), chunk_size=1 << 20)  # 2 chunks
    await store.put("trees/abc/root", b"a tree")
    await store.put("empty", b"")


async def _stored(nc: Client, stream: str = "EVENTS") -> list[tuple[int, str, bytes]]:
    js = nc.jetstream()
    info = await js.stream_info(stream)
    out = []
    for seq in range(1, (info.state.last_seq or 0) + 1):
        msg = await js.get_msg(stream, seq)
        out.append((msg.seq or 0, msg.subject or "", msg.data or b""))
    return out


async def _all_objects(store: ObjectStore) -> dict[str, bytes]:
    return {info.key: await store.get(info.key) async for info in store.list("")}


async def _records(
    nc: Client, store: ObjectStore | None, registry: EventRegistry | None = None
) -> list[ExtractRecord]:
    return [
        r
        async for r in extract(
            nc.jetstream(), store, registry or counter.registry(), cluster_id="src"
        )
    ]


async def _aiter(items: list[ExtractRecord]) -> AsyncIterator[ExtractRecord]:
    for item in items:
        yield item


async def _chunks(data: bytes, size: int = 7777) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _framed(nc: Client, store: ObjectStore | None) -> bytes:
    return b"".join([b async for b in extract_frames(nc.jetstream(), store, counter.registry())])


async def _assert_untouched(target: Client) -> None:
    info = await target.jetstream().stream_info("EVENTS")
    assert info.state.messages == 0 and info.state.last_seq == 0
    status = await (await ClusterState.open(target.jetstream())).restore_status()
    assert status is None or not status.running


# --- round trip ---------------------------------------------------------------


async def test_extract_then_restore_gives_identical_messages_and_objects(
    nc: Client, target: Client, source_store: ObjectStore, target_store: ObjectStore, tmp_path: Path
) -> None:
    await _events(nc)
    await _objects(source_store)
    records = await _records(nc, source_store)
    header = records[0].header
    assert header.format_version == FORMAT_VERSION and header.last_seq == 60
    assert header.cluster_id == "src" and header.objects and header.extract_id
    assert {e.type for e in header.event_types} >= {"testing.CounterOpened", "testing.Renamed"}
    assert any(f.name.endswith("testing.proto") for f in header.event_schemas.file)
    assert any(f.name.endswith("envelope.proto") for f in header.event_schemas.file)
    kinds = [r.WhichOneof("record") for r in records]
    assert kinds[-1] == "trailer" and kinds.count("events") == 60
    assert all(len(r.object_data) <= 1 << 20 for r in records)

    progress: list[RestoreProgress] = []
    summary = await restore(
        target,
        target_store,
        _aiter(records),
        registry=counter.registry(),
        spool_dir=tmp_path / "spool",
        progress=progress.append,
    )
    assert summary.events == 60 and summary.objects == 5 and summary.last_seq == 60
    assert progress[-1].phase == "done"
    assert await _stored(target) == await _stored(nc)
    assert await _all_objects(target_store) == await _all_objects(source_store)
    assert list((tmp_path / "spool").iterdir()) == []  # the spool is gone
    status = await (await ClusterState.open(target.jetstream())).restore_status()
    assert status is not None and not status.running and status.last_seq == 60
    assert status.restore_id == header.extract_id

    # The restored log reads back through the event store.
    restored = EventStore(target, counter.registry())
    events = [e async for e in restored.read(counter.ref("c7"))]
    assert [e.type for e in events] == [
        "testing.CounterOpened",
        "testing.CounterIncremented",
        "testing.CounterIncremented",
    ]


async def test_framed_file_round_trip_without_objects(
    nc: Client, target: Client, source_store: ObjectStore, target_store: ObjectStore, tmp_path: Path
) -> None:
    await _events(nc, 5)
    await _objects(source_store)
    data = await _framed(nc, None)
    assert data.startswith(MAGIC)
    records = [r async for r in decode_frames(_chunks(data))]
    assert not records[0].header.objects
    assert not any(r.WhichOneof("record") == "object" for r in records)
    # encode_frames writes the same bytes extract_frames did.
    assert b"".join([b async for b in encode_frames(_aiter(records))]) == data
    summary = await restore(
        target,
        target_store,
        decode_frames(_chunks(data)),
        registry=counter.registry(),
        spool_dir=tmp_path / "spool",
    )
    assert summary.events == 10 and summary.objects == 0
    assert await _stored(target) == await _stored(nc)
    assert await _all_objects(target_store) == {}


async def test_reaction_floors_come_from_durable_consumers(nc: Client) -> None:
    await _events(nc, 10)
    js = nc.jetstream()
    sub = await js.pull_subscribe("ev.>", durable="reaction-a", stream="EVENTS")
    msgs = await sub.fetch(7, timeout=5)
    for m in msgs:
        await m.ack_sync()
    await js.add_consumer(
        "EVENTS",
        config=api.ConsumerConfig(durable_name="reaction-b", ack_policy=api.AckPolicy.EXPLICIT),
    )
    ephemeral = await js.pull_subscribe("ev.>", stream="EVENTS")
    await ephemeral.fetch(3, timeout=5)
    header = (await _records(nc, None))[0].header
    assert dict(header.reaction_floors) == {"reaction-a": 7, "reaction-b": 0}


async def test_extract_during_writes_is_exactly_one_to_last_seq(
    nc: Client, source_store: ObjectStore
) -> None:
    store = await _events(nc, 10)
    stop = asyncio.Event()
    enough = asyncio.Event()
    written = [0]

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            items = [Append(counter.ref(f"w{i}-{j}"), [t.CounterOpened()], NEW) for j in range(50)]
            await store.append_many(items)
            written[0] += 50
            if written[0] >= 500:
                enough.set()
            i += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    try:
        await enough.wait()
        seqs = []
        last = 0
        async for r in extract(nc.jetstream(), source_store, counter.registry()):
            kind = r.WhichOneof("record")
            if kind == "header":
                last = r.header.last_seq
            elif kind == "events":
                seqs.append(r.events.seq)
            elif kind == "trailer":
                assert r.trailer.events == last
    finally:
        stop.set()
        await task
    assert last >= 520
    assert seqs == list(range(1, last + 1))
    info = await nc.jetstream().stream_info("EVENTS")
    assert (info.state.last_seq or 0) > last  # the writer went on past the extract point


async def test_small_read_batches_still_read_everything(nc: Client) -> None:
    from libs.backup.log_reader import read_stream

    await _events(nc, 40)
    got = [m.seq async for m in read_stream(nc.jetstream(), "EVENTS", 80, batch=7, batch_bytes=300)]
    assert got == list(range(1, 81))
