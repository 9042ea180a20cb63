"""Extract and restore (the admin service's engine) against real nats-servers."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import api

from libs.api.events import testing_pb2 as t
from libs.api.internal.backup_pb2 import ExtractRecord
from libs.config import Config
from libs.errors import FailedPrecondition, InvalidArgument
from libs.events import NEW, Append, EventStore, ensure_stream
from libs.events.registry import EventRegistry
from libs.extract_format import FORMAT_VERSION, MAGIC, decode_frames, encode_frames
from libs.objects import LocalObjectStore, ObjectStore, put_chunks
from programs.cluster.natsserver import NatsServer
from services.admin.adapters.cluster_state import ClusterState
from services.admin.app.extract import extract, extract_frames
from services.admin.app.restore import RestoreProgress, restore, restore_frames
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
    from services.admin.adapters.log_reader import read_stream

    await _events(nc, 40)
    got = [m.seq async for m in read_stream(nc.jetstream(), "EVENTS", 80, batch=7, batch_bytes=300)]
    assert got == list(range(1, 81))


# --- refusals -------------------------------------------------------------------


def _frame_offsets(data: bytes) -> list[tuple[int, str]]:
    """(offset, record kind) of every frame of a framed extract."""
    out = []
    pos = len(MAGIC)
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        record = ExtractRecord()
        record.ParseFromString(data[pos + 4 : pos + 4 + length])
        out.append((pos, str(record.WhichOneof("record"))))
        pos += 4 + length
    return out


async def _refused(
    target: Client,
    target_store: ObjectStore,
    tmp_path: Path,
    data: bytes,
    match: str,
    registry: EventRegistry | None = None,
) -> None:
    with pytest.raises(InvalidArgument, match=match):
        await restore_frames(
            target,
            target_store,
            _chunks(data),
            registry=registry or counter.registry(),
            spool_dir=tmp_path / "spool",
        )
    await _assert_untouched(target)
    spool = tmp_path / "spool"
    assert not spool.exists() or list(spool.iterdir()) == []


async def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


async def test_truncated_extracts_are_refused_and_nothing_lands(
    nc: Client, target: Client, source_store: ObjectStore, target_store: ObjectStore, tmp_path: Path
) -> None:
    await _events(nc, 10)
    await _objects(source_store)
    data = await _framed(nc, source_store)
    frames = _frame_offsets(data)
    first_data = next(pos for pos, kind in frames if kind == "object_data")
    first_event = next(pos for pos, kind in frames if kind == "events")
    trailer = next(pos for pos, kind in frames if kind == "trailer")
    cuts = {
        "inside the magic": (4, "shorter than its magic"),
        "inside the header": (len(MAGIC) + 10, "truncated: frame 0 .* holds"),
        "after the header": (frames[1][0], "truncated: it ends after 0 of 20 events"),
        "inside an object": (first_data + 100, "truncated: frame .* holds"),
        "between object blocks": (first_data, "truncated: it ends inside object"),
        "inside the events": (first_event + 50, "truncated: frame .* holds"),
        "between events": (first_event, "truncated: it ends after 0 of 20 events"),
        "before the trailer": (trailer, "truncated: it ends after 20 of 20 events"),
        "inside the trailer's length": (trailer + 2, "truncated: frame .* inside its length"),
        "inside the trailer": (len(data) - 3, "truncated: frame .* holds"),
    }
    for where, (cut, match) in cuts.items():
        try:
            await _refused(target, target_store, tmp_path, data[:cut], match)
        except BaseException as exc:
            raise AssertionError(f"cut {where} (byte {cut}): {exc!r}") from exc
    # The full extract still restores into the same target afterwards.
    summary = await restore_frames(
        target,
        target_store,
        _chunks(data),
        registry=counter.registry(),
        spool_dir=tmp_path / "spool",
    )
    assert summary.events == 20


async def test_corrupt_extracts_are_refused_and_nothing_lands(
    nc: Client, target: Client, source_store: ObjectStore, target_store: ObjectStore, tmp_path: Path
) -> None:
    await _events(nc, 10)
    await _objects(source_store)
    data = await _framed(nc, source_store)
    frames = _frame_offsets(data)
    event_at = [pos for pos, kind in frames if kind == "events"][5]
    object_at = [pos for pos, kind in frames if kind == "object_data"][1]
    trailer_at = next(pos for pos, kind in frames if kind == "trailer")
    # The last bytes of an event frame are its batch's last payload bytes.
    next_frame = frames[[p for p, _ in frames].index(event_at) + 1][0]
    await _refused(
        target,
        target_store,
        tmp_path,
        await _flip(data, next_frame - 2),
        "corrupt: (its checksum|event message 6)",
    )
    await _refused(
        target, target_store, tmp_path, await _flip(data, object_at + 200), "corrupt: object"
    )
    # The checksum is the trailer's last field: flip one of its hex digits.
    await _refused(
        target, target_store, tmp_path, await _flip(data, len(data) - 1), "corrupt: its checksum"
    )
    assert trailer_at < len(data) - 1
    await _refused(target, target_store, tmp_path, b"PACHEXT\x02" + data[8:], "not an extract")
    await _refused(target, target_store, tmp_path, b"", "extract is empty")
    # A frame claiming 1 GiB.
    await _refused(
        target,
        target_store,
        tmp_path,
        data[: len(MAGIC)] + (1 << 30).to_bytes(4, "big") + data[len(MAGIC) + 4 :],
        "over the",
    )


async def test_newer_format_and_unknown_event_types_are_refused(
    nc: Client, target: Client, target_store: ObjectStore, tmp_path: Path
) -> None:
    await _events(nc, 3)
    records = await _records(nc, None)

    async def refused(records: list[ExtractRecord], match: str, reg: EventRegistry) -> None:
        with pytest.raises(InvalidArgument, match=match):
            await restore(
                target, target_store, _aiter(records), registry=reg, spool_dir=tmp_path / "s"
            )
        await _assert_untouched(target)

    newer = [ExtractRecord(), *records[1:]]
    newer[0].CopyFrom(records[0])
    newer[0].header.format_version = FORMAT_VERSION + 1
    await refused(
        newer,
        "format version 2 is newer than this software reads \\(format version 1\\)",
        counter.registry(),
    )
    # A registry that knows only CounterOpened: the extract names types it does not know.
    small = EventRegistry()
    small.register(t.CounterOpened)
    await refused(records, "does not know: .*testing.CounterIncremented", small)
    # An envelope of an unknown type inside an event message (the header
    # claiming only known types).
    only_known = [ExtractRecord(), *records[1:]]
    only_known[0].CopyFrom(records[0])
    del only_known[0].header.event_types[:]
    await refused(only_known, "event type 'testing.CounterIncremented' \\(message", small)
    # A newer schema version of a known type.
    newer_schema = [ExtractRecord(), *records[1:]]
    newer_schema[0].CopyFrom(records[0])
    for et in newer_schema[0].header.event_types:
        if et.type == "testing.CounterOpened":
            et.schema_version = 9
    await refused(newer_schema, "testing.CounterOpened v9", counter.registry())
    await refused(records[1:], "starts with a events record, not its header", counter.registry())


async def test_restore_into_a_non_empty_log_is_refused_and_changes_nothing(
    nc: Client, target: Client, source_store: ObjectStore, target_store: ObjectStore, tmp_path: Path
) -> None:
    await _events(nc, 3)
    await _objects(source_store)
    records = await _records(nc, source_store)
    await _events(target, 1)
    before = await _stored(target)
    with pytest.raises(
        FailedPrecondition, match="restore needs an empty cluster: its event log holds 2 events"
    ):
        await restore(
            target,
            target_store,
            _aiter(records),
            registry=counter.registry(),
            spool_dir=tmp_path / "spool",
        )
    assert await _stored(target) == before
    assert await _all_objects(target_store) == {}
    status = await (await ClusterState.open(target.jetstream())).restore_status()
    assert status is None


async def test_a_restore_that_stopped_part_way_is_finished_by_the_same_extract_only(
    nc: Client, target: Client, source_store: ObjectStore, target_store: ObjectStore, tmp_path: Path
) -> None:
    await _events(nc, 10)
    await _objects(source_store)
    records = await _records(nc, source_store)
    header = records[0].header
    # A restore that appended 7 events and then died.
    cluster = await ClusterState.open(target.jetstream())
    await cluster.begin_restore(header.extract_id, header.last_seq, dict(header.reaction_floors))
    await ensure_stream(target.jetstream(), Config())
    for r in records:
        if r.WhichOneof("record") == "events" and r.events.seq <= 7:
            ack = await target.jetstream().publish(r.events.subject, r.events.batch)
            assert ack.seq == r.events.seq
    # Another extract may not go on from there.
    other = await _records(nc, source_store)
    with pytest.raises(FailedPrecondition, match="stopped part way: restore that extract again"):
        await restore(
            target,
            target_store,
            _aiter(other),
            registry=counter.registry(),
            spool_dir=tmp_path / "spool",
        )
    summary = await restore(
        target,
        target_store,
        _aiter(records),
        registry=counter.registry(),
        spool_dir=tmp_path / "spool",
    )
    assert summary.events == 20
    assert await _stored(target) == await _stored(nc)
    assert await _all_objects(target_store) == await _all_objects(source_store)
    status = await cluster.restore_status()
    assert status is not None and not status.running


async def test_a_stopped_restore_whose_log_differs_is_not_resumed(
    nc: Client, target: Client, target_store: ObjectStore, tmp_path: Path
) -> None:
    await _events(nc, 3)
    records = await _records(nc, None)
    header = records[0].header
    cluster = await ClusterState.open(target.jetstream())
    await cluster.begin_restore(header.extract_id, header.last_seq, {})
    await ensure_stream(target.jetstream(), Config())
    await target.jetstream().publish(records[1].events.subject, b"something else")
    with pytest.raises(FailedPrecondition, match="event 1 in the log is not the extract's"):
        await restore(
            target,
            target_store,
            _aiter(records),
            registry=counter.registry(),
            spool_dir=tmp_path / "spool",
        )
    info = await target.jetstream().stream_info("EVENTS")
    assert info.state.messages == 1


async def test_progress_is_reported_and_objects_are_skipped_without_a_store(
    nc: Client,
    target: Client,
    source_store: ObjectStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (the module, not its ``restore`` function)
    restore_module = importlib.import_module("services.admin.app.restore")
    monkeypatch.setattr(restore_module, "PROGRESS_EVERY", 7)
    await _events(nc, 15)
    await _objects(source_store)
    records = await _records(nc, source_store)
    progress: list[RestoreProgress] = []
    summary = await restore(
        target,
        None,
        _aiter(records),
        registry=counter.registry(),
        spool_dir=tmp_path / "spool",
        progress=progress.append,
    )
    # The objects were checked (they count) but there was nowhere to write them.
    assert summary.objects == 5 and summary.events == 30
    seen = [(p.phase, p.events) for p in progress]
    assert [e for phase, e in seen if phase == "events"] == [7, 14, 21, 28, 30]
    assert [e for phase, e in seen if phase == "appending"] == [7, 14, 21, 28]
    assert seen[-1] == ("done", 30)
    assert all(p.total_events == 30 for p in progress)
    assert await _stored(target) == await _stored(nc)
