"""Extract: a whole cluster as one stream of records (format version 1).

The consistent point (docs/decisions/0011-extract-restore-gc.md): every
durable reaction's ack floor is read first, then the stream's last sequence
L, then the objects are listed, then events 1..L are streamed. Writes during
the extract land after L and are not part of it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import blake3
import nats.errors
import nats.js.errors
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from libs import version
from libs.api.internal.backup_pb2 import (
    ExtractHeader,
    ExtractRecord,
    ExtractTrailer,
    ObjectEnd,
    ObjectStart,
    StoredEvents,
)
from libs.errors import FailedPrecondition, Internal, ObjectNotFound, Unavailable
from libs.events.registry import EventRegistry
from libs.extract_format import (
    FORMAT_VERSION,
    MAGIC,
    Checksum,
    frame,
    record_bytes,
    stored_events_bytes,
)
from libs.objects.base import ObjectStore
from libs.transfer import is_transfer
from services.admin.adapters.log_reader import StoredMessage, read_stream
from services.admin.domain.schemas import event_schemas, event_types

_log = structlog.get_logger("backup")

OBJECT_BLOCK = 1 << 20
PROGRESS_EVERY = 50_000
FRAMES_BLOCK = 256 << 10


async def reaction_floors(js: JetStreamContext, stream: str) -> dict[str, int]:
    """Durable consumer name -> the stream sequence up to which it
    acknowledged every message (its ack floor). Ephemeral consumers (another
    extract's reader, say) are not reactions and are left out."""
    floors: dict[str, int] = {}
    offset = 0
    while True:
        try:
            page = await js.consumers_info(stream, offset)
        except nats.js.errors.NotFoundError:
            raise FailedPrecondition(f"event stream {stream} does not exist") from None
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            raise Unavailable(f"event stream {stream} unavailable") from None
        if not page:
            return floors
        offset += len(page)
        for info in page:
            if not info.config.durable_name:
                continue
            floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
            floors[info.name] = int(floor or 0)


async def _last_seq(js: JetStreamContext, stream: str) -> int:
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        raise FailedPrecondition(f"event stream {stream} does not exist") from None
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        raise Unavailable(f"event stream {stream} unavailable") from None
    state = info.state
    last = int(state.last_seq or 0)
    first = int(state.first_seq or 0)
    messages = int(state.messages or 0)
    if last and (first != 1 or messages != last):
        raise FailedPrecondition(
            f"event stream {stream} does not hold every event from 1 to {last} "
            f"(first {first}, {messages} messages): it cannot be extracted"
        )
    return last


async def _object_records(store: ObjectStore, counts: list[int]) -> AsyncIterator[ExtractRecord]:
    """Every object in the store, in blocks; counts[0] objects and counts[1]
    bytes are updated as they go."""
    async for info in store.list(""):
        if is_transfer(info.key):
            continue  # scratch parts of transfers in flight (this extract's own, say)
        blocks = aiter(store.get_stream(info.key, block_size=OBJECT_BLOCK))
        try:
            first: bytes | None = await anext(blocks)
        except StopAsyncIteration:
            first = None
        except ObjectNotFound:
            # Deleted since the listing (garbage collection): no event at or
            # below the extract point references it.
            continue
        hasher = blake3.blake3()
        size = 0
        yield ExtractRecord(object=ObjectStart(key=info.key, size=info.size))
        if first is not None:
            hasher.update(first)
            size += len(first)
            yield ExtractRecord(object_data=first)
            async for block in blocks:
                hasher.update(block)
                size += len(block)
                yield ExtractRecord(object_data=block)
        if size != info.size:
            raise Internal(
                f"object {info.key} changed during the extract: listed with {info.size} "
                f"bytes, read {size}"
            )
        counts[0] += 1
        counts[1] += size
        yield ExtractRecord(object_end=ObjectEnd(blake3=hasher.hexdigest()))


async def _serialized(
    js: JetStreamContext,
    store: ObjectStore | None,
    registry: EventRegistry,
    *,
    stream: str,
    cluster_id: str,
    objects: bool,
) -> AsyncIterator[tuple[ExtractRecord | StoredMessage, bytes]]:
    """Each record and its serialized bytes (what its frame holds); events
    come as the stored message they are, their record built only if needed."""
    started = time.monotonic()
    floors = await reaction_floors(js, stream)
    last_seq = await _last_seq(js, stream)
    with_objects = objects and store is not None
    created = Timestamp()
    created.GetCurrentTime()
    header = ExtractHeader(
        format_version=FORMAT_VERSION,
        extract_id=uuid.uuid4().hex,
        cluster_id=cluster_id,
        created=created,
        software_version=version.pretty(),
        last_seq=last_seq,
        reaction_floors=floors,
        objects=with_objects,
        event_types=event_types(registry),
        event_schemas=event_schemas(registry),
    )
    log = _log.bind(extract_id=header.extract_id, stream=stream, last_seq=last_seq)
    log.info("extract started", reactions=len(floors), objects=with_objects)
    checksum = Checksum()
    record = ExtractRecord(header=header)
    data = record_bytes(record)
    checksum.add_record(data)
    yield record, data

    counts = [0, 0]
    if with_objects and store is not None:
        async for record in _object_records(store, counts):
            data = record_bytes(record)
            checksum.add_record(data)
            yield record, data
        log.info("extract objects done", objects=counts[0], bytes=counts[1])

    events = 0
    async for msg in read_stream(js, stream, last_seq):
        data = stored_events_bytes(msg.seq, msg.subject.encode(), msg.data)
        checksum.add_record(data)
        yield msg, data
        events += 1
        if events % PROGRESS_EVERY == 0:
            log.info("extract progress", events=events)
    if events != last_seq:
        raise Internal(f"extract read {events} events of {last_seq}")

    trailer = ExtractTrailer(
        events=events, objects=counts[0], object_bytes=counts[1], checksum=checksum.hexdigest()
    )
    record = ExtractRecord(trailer=trailer)
    yield record, record_bytes(record)
    log.info(
        "extract done",
        events=events,
        objects=counts[0],
        object_bytes=counts[1],
        seconds=round(time.monotonic() - started, 3),
    )


async def extract(
    js: JetStreamContext,
    store: ObjectStore | None,
    registry: EventRegistry,
    *,
    stream: str = "EVENTS",
    cluster_id: str = "",
    objects: bool = True,
) -> AsyncIterator[ExtractRecord]:
    """The records of an extract: header, objects, events 1..last_seq, trailer."""
    async for item, _ in _serialized(
        js, store, registry, stream=stream, cluster_id=cluster_id, objects=objects
    ):
        if isinstance(item, ExtractRecord):
            yield item
        else:
            yield ExtractRecord(
                events=StoredEvents(seq=item.seq, subject=item.subject, batch=item.data)
            )


async def extract_frames(
    js: JetStreamContext,
    store: ObjectStore | None,
    registry: EventRegistry,
    *,
    stream: str = "EVENTS",
    cluster_id: str = "",
    objects: bool = True,
) -> AsyncIterator[bytes]:
    """The framed extract (what a file holds): ``MAGIC`` then one frame per
    record, the same bytes as ``encode_frames(extract(...))``, serializing
    each record once. Small frames are joined into blocks of up to
    ``FRAMES_BLOCK`` bytes."""
    yield MAGIC
    pending: list[bytes] = []
    size = 0
    async for _, data in _serialized(
        js, store, registry, stream=stream, cluster_id=cluster_id, objects=objects
    ):
        pending.append(frame(data))
        size += len(data) + 4
        if size >= FRAMES_BLOCK:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)
