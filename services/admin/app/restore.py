"""Restore: an extract put back, bit for bit, into an empty cluster.

Nothing lands in the event log until the whole extract has arrived and
checked out (docs/decisions/0011-extract-restore-gc.md, Restore): objects are
written as they arrive (verified; content addressed, invisible without the
events), events are spooled to a temporary file, and only after the trailer's
counts and checksum match are they appended, each at its original sequence.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import blake3
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from libs.api.internal.backup_pb2 import ExtractHeader, ExtractRecord, StoredEvents
from libs.bus import Bus
from libs.config import Config
from libs.errors import (
    FailedPrecondition,
    InvalidArgument,
    MalformedMessage,
    PachError,
    Unavailable,
)
from libs.events.envelope import SUBJECT_PREFIX, encode_token, parse_batch
from libs.events.identity import create_stream, stream_identity
from libs.events.publisher import Ack, NoStream, Outgoing, Publisher, PublishError
from libs.events.registry import EventRegistry
from libs.events.store import ERR_WRONG_LAST_SEQUENCE
from libs.extract_format import FORMAT_VERSION, Checksum, decode_frames_raw, record_bytes
from libs.objects.base import ObjectStore
from libs.restore_gate import RestoreStatus
from services.admin.adapters.cluster_state import ClusterState
from services.admin.adapters.spool import EventSpool
from services.admin.app.wait_applied import wait_applied

_log = structlog.get_logger("backup")

PROGRESS_EVERY = 50_000
_SEND_GROUP = 256
_ACK_TIMEOUT_S = 30.0
_H_EXPECTED_LAST_SEQ = api.Header.EXPECTED_LAST_SEQUENCE.value
_H_MSG_ID = api.Header.MSG_ID.value


@dataclass(frozen=True)
class RestoreProgress:
    phase: str  # "objects", "events" (arriving, checked, spooled), "appending", "done"
    events: int
    objects: int
    bytes: int  # object bytes
    total_events: int


@dataclass(frozen=True)
class RestoreSummary:
    events: int
    objects: int
    object_bytes: int
    seconds: float
    extract_id: str = ""
    last_seq: int = 0


def _truncated(what: str) -> InvalidArgument:
    return InvalidArgument(f"extract is truncated: {what}")


def _corrupt(what: str) -> InvalidArgument:
    return InvalidArgument(f"extract is corrupt: {what}")


async def _log_state(js: JetStreamContext, stream: str) -> tuple[int, int]:
    """(messages, last sequence) of the event log."""
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        raise FailedPrecondition(f"event stream {stream} does not exist") from None
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        raise Unavailable(f"event stream {stream} unavailable") from None
    return int(info.state.messages or 0), int(info.state.last_seq or 0)


async def _log_for_restore(js: JetStreamContext, cfg: Config, cluster: ClusterState) -> None:
    """The stream a restore appends to: a lost one is made again, carrying
    this cluster's id (a restore is the one way a lost log comes back); an
    empty one carrying another cluster's id (or none) is replaced."""
    cluster_id = await cluster.cluster_id()
    ident = await stream_identity(js, cfg.events_stream)
    if ident.present and ident.cluster_id != cluster_id and not ident.last_seq:
        _log.warning(
            "replacing an empty event stream that is not this cluster's",
            stream=cfg.events_stream,
            found=ident.cluster_id,
            cluster_id=cluster_id,
        )
        await js.delete_stream(cfg.events_stream)
        ident = await stream_identity(js, cfg.events_stream)
    if not ident.present:
        ident = await create_stream(js, cfg, cluster_id)
        _log.info("event log made for the restore", stream=cfg.events_stream, epoch=ident.epoch)


def _not_empty(messages: int, last: int, more: str = "") -> FailedPrecondition:
    return FailedPrecondition(
        f"restore needs an empty cluster: its event log holds {messages} events"
        + ("" if messages == last else f" (up to sequence {last})")
        + more,
        events=messages,
    )


def check_header(header: ExtractHeader, registry: EventRegistry) -> None:
    """InvalidArgument unless this code can restore an extract with ``header``."""
    if header.format_version != FORMAT_VERSION:
        if header.format_version > FORMAT_VERSION:
            raise InvalidArgument(
                f"extract format version {header.format_version} is newer than this "
                f"software reads (format version {FORMAT_VERSION}): restore it with "
                f"software at least as new as the one that wrote it "
                f"({header.software_version or 'unknown'})"
            )
        raise InvalidArgument(
            f"extract format version {header.format_version} is unknown "
            f"(this software reads format version {FORMAT_VERSION})"
        )
    if not header.extract_id:
        raise _corrupt("its header has no extract id")
    unknown = sorted({t.type for t in header.event_types if not registry.knows(t.type)})
    if unknown:
        raise InvalidArgument(
            f"extract holds event types this software does not know: {', '.join(unknown)}",
            event_types=unknown,
        )
    newer = sorted(
        f"{t.type} v{t.schema_version} (this software knows v{registry.current(t.type).version})"
        for t in header.event_types
        if t.schema_version > registry.current(t.type).version
    )
    if newer:
        raise InvalidArgument(
            f"extract holds event schema versions newer than this software reads: "
            f"{', '.join(newer)}"
        )
    bad = {k: v for k, v in header.reaction_floors.items() if v > header.last_seq}
    if bad:
        raise _corrupt(f"reaction floors past its last sequence {header.last_seq}: {bad}")


class _Validator:
    """Checks stored events as they arrive: contiguous from 1, each a
    well-formed batch of known event types on its aggregate's subject."""

    def __init__(self, registry: EventRegistry, last_seq: int) -> None:
        self._versions = {t: registry.current(t).version for t in registry.types()}
        self._last_seq = last_seq
        # (service, type, id) -> subject, for the aggregates seen lately
        self._subjects: dict[tuple[str, str, str], str] = {}
        self.next_seq = 1

    def check(self, ev: StoredEvents) -> None:
        seq = ev.seq
        if seq != self.next_seq:
            raise _corrupt(f"expected event message {self.next_seq}, got {seq}")
        if seq > self._last_seq:
            raise _corrupt(f"event message {seq} is past its last sequence {self._last_seq}")
        try:
            batch = parse_batch(ev.batch)
        except MalformedMessage as err:
            raise _corrupt(f"event message {seq} on {ev.subject}: {err.message}") from None
        versions = self._versions
        subjects = self._subjects
        subject = ev.subject
        for env in batch.events:
            current = versions.get(env.type)
            if current is None:
                raise InvalidArgument(
                    f"extract holds event type {env.type!r} (message {seq}) that this "
                    "software does not know",
                    event_types=[env.type],
                )
            if env.schema_version > current:
                raise InvalidArgument(
                    f"extract holds {env.type} v{env.schema_version} (message {seq}); this "
                    f"software reads up to v{current}"
                )
            key = (env.aggregate_service, env.aggregate_type, env.aggregate_id)
            expected = subjects.get(key)
            if expected is None:
                expected = f"{SUBJECT_PREFIX}.{key[0]}.{key[1]}.{encode_token(key[2])}"
                if len(subjects) >= 100_000:
                    subjects.clear()
                subjects[key] = expected
            if expected != subject:
                raise _corrupt(
                    f"event message {seq} is stored on {subject} but its event "
                    f"{env.event_id} belongs to {expected}"
                )
        self.next_seq = seq + 1


class _Incoming:
    """The extract's records, one at a time, each added to the checksum."""

    def __init__(self, records: AsyncIterable[tuple[ExtractRecord, bytes | None]]) -> None:
        self._it = aiter(records)
        self._raw: bytes | None = None
        self.checksum = Checksum()
        self.count = 0

    async def next(self) -> ExtractRecord | None:
        try:
            record, self._raw = await anext(self._it)
        except StopAsyncIteration:
            return None
        self.count += 1
        return record

    def sum(self, record: ExtractRecord) -> None:
        """Add the frame of ``record``, the one ``next`` returned last."""
        raw = self._raw
        self.checksum.add_record(record_bytes(record) if raw is None else raw)


async def _object(incoming: _Incoming, start: ExtractRecord, store: ObjectStore | None) -> int:
    """Read one object's records (after its ObjectStart) and write it to
    ``store`` (when given), verified; returns its size."""
    key = start.object.key
    size = start.object.size
    seen = [0]

    async def blocks() -> AsyncIterator[bytes]:
        hasher = blake3.blake3()
        while True:
            record = await incoming.next()
            if record is None:
                raise _truncated(f"it ends inside object {key}")
            incoming.sum(record)
            kind = record.WhichOneof("record")
            if kind == "object_data":
                block = record.object_data
                seen[0] += len(block)
                if seen[0] > size:
                    raise _corrupt(f"object {key} holds more than its {size} bytes")
                hasher.update(block)
                if block:
                    yield block
                continue
            if kind != "object_end":
                raise _corrupt(f"object {key} is followed by a {kind} record before its end")
            digest = str(hasher.hexdigest())
            if seen[0] != size:
                raise _corrupt(f"object {key} holds {seen[0]} bytes, not its {size}")
            if record.object_end.blake3 != digest:
                raise _corrupt(
                    f"object {key}: its bytes hash to {digest}, "
                    f"not the recorded {record.object_end.blake3}"
                )
            return

    if store is None:
        async for _ in blocks():
            pass
    else:
        await store.put_stream(key, blocks())
    return size


async def _receive(
    incoming: _Incoming,
    header: ExtractHeader,
    registry: EventRegistry,
    store: ObjectStore | None,
    spool: EventSpool,
    report: Callable[[str, int, int, int], None],
) -> tuple[int, int]:
    """Everything after the header, checked; events into ``spool``, objects
    into ``store``. Returns (objects, object bytes)."""
    validator = _Validator(registry, header.last_seq)
    objects = object_bytes = 0
    while True:
        record = await incoming.next()
        if record is None:
            raise _truncated(
                f"it ends after {spool.count} of {header.last_seq} events without its trailer"
            )
        kind = record.WhichOneof("record")
        if kind == "events":
            ev = record.events
            validator.check(ev)
            incoming.sum(record)
            await spool.add(ev.seq, ev.subject, ev.batch)
            if spool.count % PROGRESS_EVERY == 0:
                report("events", spool.count, objects, object_bytes)
            continue
        if kind == "object":
            if not header.objects:
                raise _corrupt(f"object {record.object.key} in an extract made without objects")
            if spool.count:
                raise _corrupt(f"object {record.object.key} comes after events")
            incoming.sum(record)
            object_bytes += await _object(incoming, record, store)
            objects += 1
            if objects % 1000 == 0:
                report("objects", 0, objects, object_bytes)
            continue
        if kind == "trailer":
            break
        raise _corrupt(f"record {incoming.count} is an unexpected {kind} record")
    trailer = record.trailer
    if trailer.checksum != incoming.checksum.hexdigest():
        raise _corrupt(
            f"its checksum is {incoming.checksum.hexdigest()}, the trailer records "
            f"{trailer.checksum}"
        )
    if spool.count != header.last_seq or trailer.events != spool.count:
        raise _corrupt(
            f"it holds {spool.count} events; its header says {header.last_seq}, "
            f"its trailer {trailer.events}"
        )
    if trailer.objects != objects or trailer.object_bytes != object_bytes:
        raise _corrupt(
            f"it holds {objects} objects ({object_bytes} bytes); its trailer says "
            f"{trailer.objects} ({trailer.object_bytes} bytes)"
        )
    extra = await incoming.next()
    if extra is not None:
        raise _corrupt(f"a {extra.WhichOneof('record')} record follows the trailer")
    return objects, object_bytes


def _append_error(exc: BaseException, seq: int, stream: str) -> PachError:
    if isinstance(exc, PublishError):
        if exc.err_code == ERR_WRONG_LAST_SEQUENCE:
            return FailedPrecondition(
                f"restore stopped at event {seq}: something else appended to the event log "
                f"{stream} during the restore"
            )
        return Unavailable(f"restore stopped at event {seq}: the event store refused it: {exc}")
    if isinstance(exc, NoStream):
        return Unavailable(f"restore stopped at event {seq}: no event stream accepts it")
    if isinstance(exc, TimeoutError):
        return Unavailable(f"restore stopped at event {seq}: not acknowledged in time")
    if isinstance(exc, PachError):
        return exc
    return Unavailable(f"restore stopped at event {seq}: {exc!r}")


async def _check_stored(
    js: JetStreamContext, stream: str, seq: int, subject: str, data: bytes
) -> None:
    try:
        stored = await js.get_msg(stream, seq)
    except nats.js.errors.NotFoundError:
        stored = None
    if stored is None or stored.subject != subject or stored.data != data:
        raise FailedPrecondition(
            f"cannot resume the restore: event {seq} in the log is not the extract's"
        )


async def _append(
    nc: Client,
    spool: EventSpool,
    extract_id: str,
    stream: str,
    report: Callable[[str, int, int, int], None],
    resume_from: int = 0,
) -> int:
    """Append the spooled messages verbatim, pipelined, each at its original
    sequence; returns how many were acknowledged. With ``resume_from``, the
    log already holds messages up to it (a restore of this extract that
    stopped part way): the last of them must be the extract's, and the rest
    follow it."""
    publisher = Publisher(nc)
    inflight: deque[tuple[int, asyncio.Future[Ack]]] = deque()
    acked = 0

    def settle() -> None:
        nonlocal acked
        while inflight and inflight[0][1].done():
            seq, fut = inflight.popleft()
            exc = fut.exception() if not fut.cancelled() else TimeoutError()
            if exc is not None:
                raise _append_error(exc, seq, stream)
            ack = fut.result()
            if ack.seq != seq:
                raise Unavailable(f"restore: event {seq} landed at sequence {ack.seq}")
            acked += 1
            if acked % PROGRESS_EVERY == 0:
                report("appending", acked, 0, 0)

    try:
        group: list[Outgoing] = []
        seqs: list[int] = []

        async def send() -> None:
            sent: Sequence[asyncio.Future[Ack] | Exception] = await publisher.send_many(
                group, _ACK_TIMEOUT_S
            )
            for seq, fut in zip(seqs, sent, strict=True):
                if isinstance(fut, Exception):
                    raise _append_error(fut, seq, stream)
                inflight.append((seq, fut))
            group.clear()
            seqs.clear()
            await asyncio.sleep(0)
            settle()

        async for seq, subject, data in spool.entries():
            if seq <= resume_from:
                if seq == resume_from:
                    await _check_stored(nc.jetstream(), stream, seq, subject, data)
                continue
            group.append(
                Outgoing(
                    subject,
                    data,
                    {_H_EXPECTED_LAST_SEQ: str(seq - 1), _H_MSG_ID: f"restore-{extract_id}-{seq}"},
                )
            )
            seqs.append(seq)
            if len(group) >= _SEND_GROUP:
                await send()
        if group:
            await send()
        while inflight:
            await asyncio.wait([inflight[0][1]])
            settle()
    finally:
        await publisher.close()
    return acked


async def restore(
    nc: Client,
    store: ObjectStore | None,
    records: AsyncIterable[ExtractRecord],
    *,
    registry: EventRegistry,
    stream: str = "EVENTS",
    spool_dir: Path,
    progress: Callable[[RestoreProgress], None] | None = None,
    stream_config: Config | None = None,
    kv_replicas: int = 1,
) -> RestoreSummary:
    """Restore the extract ``records`` into this (empty) cluster.

    FailedPrecondition when the event log holds anything; InvalidArgument,
    with the log left empty and no restore recorded, when the extract is
    truncated, corrupt, of a newer format, or holds event types this code
    does not know. Waiting for the services to apply the restored log is
    the caller's (``restore_and_wait``)."""

    async def pairs() -> AsyncIterator[tuple[ExtractRecord, bytes | None]]:
        async for record in records:
            yield record, None

    return await _restore(
        nc,
        store,
        pairs(),
        registry=registry,
        stream=stream,
        spool_dir=spool_dir,
        progress=progress,
        stream_config=stream_config,
        kv_replicas=kv_replicas,
    )


async def restore_frames(
    nc: Client,
    store: ObjectStore | None,
    data: AsyncIterable[bytes],
    *,
    registry: EventRegistry,
    stream: str = "EVENTS",
    spool_dir: Path,
    progress: Callable[[RestoreProgress], None] | None = None,
    stream_config: Config | None = None,
    kv_replicas: int = 1,
) -> RestoreSummary:
    """``restore`` of a framed extract (a file's bytes, in blocks of any
    size): the checksum is taken over the frames as they are, without
    serializing the records again."""
    return await _restore(
        nc,
        store,
        decode_frames_raw(data),
        registry=registry,
        stream=stream,
        spool_dir=spool_dir,
        progress=progress,
        stream_config=stream_config,
        kv_replicas=kv_replicas,
    )


async def _restore(
    nc: Client,
    store: ObjectStore | None,
    records: AsyncIterable[tuple[ExtractRecord, bytes | None]],
    *,
    registry: EventRegistry,
    stream: str,
    spool_dir: Path,
    progress: Callable[[RestoreProgress], None] | None,
    stream_config: Config | None,
    kv_replicas: int,
) -> RestoreSummary:
    started = time.monotonic()
    js = nc.jetstream()
    cluster = await ClusterState.open(js, replicas=kv_replicas)
    await _log_for_restore(js, stream_config or Config(events_stream=stream), cluster)
    messages, last = await _log_state(js, stream)
    stopped: RestoreStatus | None = None
    if messages or last:
        # Only a restore that stopped part way may go on: the same extract.
        stopped = await cluster.restore_status()
        if stopped is None or not stopped.running:
            raise _not_empty(messages, last)

    incoming = _Incoming(records)
    first = await incoming.next()
    if first is None:
        raise _truncated("it holds no record")
    if first.WhichOneof("record") != "header":
        raise _corrupt(f"it starts with a {first.WhichOneof('record')} record, not its header")
    header = first.header
    check_header(header, registry)
    incoming.sum(first)
    extract_id = header.extract_id
    resume_from = 0
    if stopped is not None:
        if stopped.restore_id != extract_id or last > header.last_seq:
            raise _not_empty(
                messages,
                last,
                f"; a restore of extract {stopped.restore_id} stopped part way: restore "
                "that extract again to finish it",
            )
        resume_from = last
    log = _log.bind(extract_id=extract_id, stream=stream, last_seq=header.last_seq)
    log.info("restore started", source=header.cluster_id, objects=header.objects)
    write_store = store if header.objects else None

    state = [0, 0]  # objects, object bytes (for progress)

    def report(phase: str, events: int, objects: int, nbytes: int) -> None:
        if phase == "objects":
            state[0], state[1] = objects, nbytes
        p = RestoreProgress(phase, events, state[0], state[1], header.last_seq)
        log.info("restore progress", phase=phase, events=events, objects=state[0], bytes=state[1])
        if progress is not None:
            progress(p)

    async with EventSpool(spool_dir) as spool:
        objects, object_bytes = await _receive(
            incoming, header, registry, write_store, spool, report
        )
        state[0], state[1] = objects, object_bytes
        report("events", spool.count, objects, object_bytes)

        messages, last = await _log_state(js, stream)
        if last != resume_from:
            raise _not_empty(messages, last)
        if resume_from:
            log.info("restore resumes a restore of this extract", after=resume_from)
        else:
            await cluster.begin_restore(extract_id, header.last_seq, dict(header.reaction_floors))
        try:
            appended = resume_from + await _append(
                nc, spool, extract_id, stream, report, resume_from
            )
        except BaseException:
            info = await js.stream_info(stream)
            if not info.state.messages and not resume_from:
                await cluster.abandon_restore(extract_id)
            else:
                log.error(
                    "restore stopped part way: the cluster stays held until a restore "
                    "of this extract finishes",
                    appended=info.state.messages,
                )
            raise
        await cluster.finish_restore(extract_id)
    summary = RestoreSummary(
        events=appended,
        objects=objects,
        object_bytes=object_bytes,
        seconds=time.monotonic() - started,
        extract_id=extract_id,
        last_seq=header.last_seq,
    )
    report("done", appended, objects, object_bytes)
    log.info("restore done", events=appended, objects=objects, seconds=round(summary.seconds, 3))
    return summary


async def restore_and_wait(
    nc: Client,
    store: ObjectStore | None,
    records: AsyncIterable[ExtractRecord],
    *,
    registry: EventRegistry,
    bus: Bus,
    spool_dir: Path,
    stream: str = "EVENTS",
    progress: Callable[[RestoreProgress], None] | None = None,
    stream_config: Config | None = None,
    kv_replicas: int = 1,
    services: Sequence[str] = ("pfs", "pps"),
    timeout: float = 300.0,
) -> RestoreSummary:
    """``restore``, then wait until ``services`` report that their read
    models applied the restored log."""
    summary = await restore(
        nc,
        store,
        records,
        registry=registry,
        stream=stream,
        spool_dir=spool_dir,
        progress=progress,
        stream_config=stream_config,
        kv_replicas=kv_replicas,
    )
    await wait_applied(bus, summary.last_seq, services=services, timeout=timeout)
    return summary
