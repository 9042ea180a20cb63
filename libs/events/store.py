"""The event store on NATS JetStream.

One stream (``EVENTS`` by default) holds every event, on the subjects
``ev.<service>.<aggregate type>.<aggregate id>``. Each stored message is an
``EventBatch``: the events one command appended to one aggregate, stored all
or nothing. Appends carry

- ``Nats-Expected-Last-Subject-Sequence``: the stream sequence of the
  aggregate's last message as the caller saw it. If another writer got there
  first the server refuses and we raise ``ConcurrencyError``;
- ``Nats-Msg-Id``: a retry of the same append (after a lost ack) is dropped
  by the server's de-duplication window instead of being stored twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from opentelemetry import propagate, trace

from libs.api.events.envelope_pb2 import Envelope, EventBatch
from libs.config import Config
from libs.errors import (
    ConcurrencyError,
    DeadlineExceeded,
    InvalidArgument,
    MessageTooLarge,
    PachError,
    Unavailable,
)
from libs.events.envelope import (
    SUBJECT_PREFIX,
    AggregateRef,
    Position,
    RecordedEvent,
    decode_batch,
    parse_batch,
)
from libs.events.publisher import Ack, NoStream, Publisher, PublishError
from libs.events.registry import EventRegistry

# JetStream API error codes we act on.
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_MSG_TOO_LARGE = 10054
ERR_NO_MESSAGE = 10037

DUPLICATE_WINDOW_S = 120.0


_H_EXPECTED_SEQ = api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value
_H_MSG_ID = api.Header.MSG_ID.value


@dataclass(frozen=True)
class Append:
    """One append for ``EventStore.append_many``."""

    aggregate: AggregateRef
    events: Sequence[Message]
    expected: Position
    principal: str = ""
    causation_id: str = ""
    correlation_id: str = ""
    msg_id: str | None = None


@dataclass(frozen=True)
class _Sent:
    item: Append
    msg_id: str
    size: int
    ack: asyncio.Future[Ack]


@dataclass(frozen=True)
class Appended:
    """The result of an append: where the aggregate now stands."""

    position: Position
    duplicate: bool  # True when the server had it already (a retried append)


async def ensure_stream(js: JetStreamContext, cfg: Config) -> None:
    """Create the events stream if missing (idempotent; safe to race)."""
    config = api.StreamConfig(
        name=cfg.events_stream,
        subjects=[f"{SUBJECT_PREFIX}.>"],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        num_replicas=cfg.events_replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_msg_size=cfg.max_message_bytes,
        allow_direct=True,
        deny_delete=True,
        deny_purge=True,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        # "stream name already in use" with a different config: keep theirs.
        if "already in use" not in str(exc.description or ""):
            raise


class EventStore:
    def __init__(
        self,
        nc: Client,
        registry: EventRegistry,
        *,
        stream: str = "EVENTS",
        max_message_bytes: int = 1 << 20,
        timeout: float = 10.0,
    ) -> None:
        self.js = nc.jetstream()
        self.registry = registry
        self.stream = stream
        self._publisher = Publisher(nc)
        self.max_message_bytes = max_message_bytes
        self.timeout = timeout

    @classmethod
    def from_config(cls, nc: Client, registry: EventRegistry, cfg: Config) -> EventStore:
        return cls(
            nc,
            registry,
            stream=cfg.events_stream,
            max_message_bytes=cfg.max_message_bytes,
            timeout=cfg.request_timeout_s,
        )

    # --- writing -----------------------------------------------------------

    def build_batch(
        self,
        aggregate: AggregateRef,
        events: Sequence[Message],
        expected: Position,
        *,
        principal: str = "",
        causation_id: str = "",
        correlation_id: str = "",
    ) -> EventBatch:
        if not events:
            raise InvalidArgument("an append needs at least one event")
        now = Timestamp()
        now.FromNanoseconds(time.time_ns())
        trace_ctx: dict[str, str] = {}
        if trace.get_current_span().get_span_context().is_valid:
            propagate.inject(trace_ctx)
        batch = EventBatch()
        for i, event in enumerate(events, start=1):
            schema = self.registry.schema_for(event)
            batch.events.append(
                Envelope(
                    event_id=uuid.uuid4().hex,
                    type=schema.event_type,
                    schema_version=schema.version,
                    aggregate_service=aggregate.service,
                    aggregate_type=aggregate.type,
                    aggregate_id=aggregate.id,
                    aggregate_version=expected.version + i,
                    time=now,
                    principal=principal,
                    causation_id=causation_id,
                    correlation_id=correlation_id,
                    trace_context=trace_ctx,
                    payload=event.SerializeToString(),
                )
            )
        return batch

    async def append(
        self,
        aggregate: AggregateRef,
        events: Sequence[Message],
        expected: Position,
        *,
        principal: str = "",
        causation_id: str = "",
        correlation_id: str = "",
        msg_id: str | None = None,
    ) -> Appended:
        """Append ``events`` to ``aggregate`` if it still stands at ``expected``.

        ``msg_id`` makes the append idempotent: pass the same id when
        retrying after a lost acknowledgement (e.g. derive it from the
        command). Raises ConcurrencyError when the aggregate moved on."""
        item = Append(aggregate, events, expected, principal, causation_id, correlation_id, msg_id)
        return await self._settle(await self._send(item))

    async def append_many(self, items: Sequence[Append]) -> list[Appended | PachError]:
        """Pipelined appends: all are sent before any acknowledgement is
        awaited. Each result is ``Appended`` or the error that append got;
        appends to different aggregates are independent."""
        sent: list[_Sent | PachError] = []
        for item in items:
            try:
                sent.append(await self._send(item))
            except PachError as err:
                sent.append(err)
        results: list[Appended | PachError] = []
        for one in sent:
            if isinstance(one, PachError):
                results.append(one)
                continue
            try:
                results.append(await self._settle(one))
            except PachError as err:
                results.append(err)
        return results

    async def _send(self, item: Append) -> _Sent:
        batch = self.build_batch(
            item.aggregate,
            item.events,
            item.expected,
            principal=item.principal,
            causation_id=item.causation_id,
            correlation_id=item.correlation_id,
        )
        data = batch.SerializeToString()
        if len(data) > self.max_message_bytes:
            raise MessageTooLarge(
                len(data), self.max_message_bytes, f"events for {item.aggregate.id}"
            )
        msg_id = item.msg_id or batch.events[0].event_id
        headers = {
            _H_EXPECTED_SEQ: str(item.expected.seq),
            _H_MSG_ID: msg_id,
        }
        try:
            ack = await self._publisher.send(item.aggregate.subject, data, headers, self.timeout)
        except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError):
            raise Unavailable(f"event store unavailable for {item.aggregate.subject}") from None
        return _Sent(item, msg_id, len(data), ack)

    async def _settle(self, sent: _Sent) -> Appended:
        item = sent.item
        try:
            ack = await sent.ack
        except PublishError as exc:
            if exc.err_code == ERR_WRONG_LAST_SEQUENCE:
                # The server checks the expected sequence before
                # de-duplication, so a retry of an append that did land (its
                # ack was lost) shows up here: look for it among the
                # aggregate's newer messages.
                landed = await self._find_msg_id(item.aggregate, item.expected.seq, sent.msg_id)
                if landed is not None:
                    return Appended(landed, True)
                raise ConcurrencyError(item.aggregate.subject, item.expected.seq) from None
            if exc.err_code == ERR_MSG_TOO_LARGE:
                raise MessageTooLarge(sent.size, self.max_message_bytes, "event batch") from None
            raise Unavailable(f"event store refused the append: {exc.description}") from None
        except TimeoutError:
            raise DeadlineExceeded(
                f"append to {item.aggregate.subject} not acknowledged within "
                f"{self.timeout:g}s; retrying with the same msg_id is safe",
                subject=item.aggregate.subject,
            ) from None
        except NoStream:
            raise Unavailable(f"no event stream accepts {item.aggregate.subject}") from None
        return Appended(Position(ack.seq, item.expected.version + len(item.events)), ack.duplicate)

    async def _find_msg_id(
        self, aggregate: AggregateRef, after_seq: int, msg_id: str
    ) -> Position | None:
        seq = after_seq + 1
        while True:
            raw = await self._get_next(aggregate, seq)
            if raw is None:
                return None
            if (raw.headers or {}).get(_H_MSG_ID) == msg_id:
                batch = parse_batch(raw.data or b"")
                return Position(raw.seq or 0, batch.events[-1].aggregate_version)
            seq = (raw.seq or 0) + 1

    async def close(self) -> None:
        await self._publisher.close()

    # --- reading -----------------------------------------------------------

    async def position(self, aggregate: AggregateRef) -> Position:
        """Where the aggregate stands now (NEW if it has no events)."""
        try:
            raw = await self.js.get_last_msg(self.stream, aggregate.subject, direct=True)
        except nats.js.errors.NotFoundError:
            return Position()
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            raise Unavailable("event store unavailable") from None
        batch = parse_batch(raw.data or b"")
        return Position(raw.seq or 0, batch.events[-1].aggregate_version)

    async def read(
        self, aggregate: AggregateRef, after_seq: int = 0
    ) -> AsyncIterator[RecordedEvent]:
        """The aggregate's events in order (those in messages after
        ``after_seq`` when given), upcast to current schemas."""
        seq = after_seq + 1
        while True:
            raw = await self._get_next(aggregate, seq)
            if raw is None:
                return
            msg_seq = raw.seq or 0
            for event in decode_batch(raw.data or b"", msg_seq, self.registry):
                yield event
            seq = msg_seq + 1

    async def _get_next(self, aggregate: AggregateRef, seq: int) -> api.RawStreamMsg | None:
        """The aggregate's first message at or after stream sequence ``seq``."""
        try:
            return await self.js.get_msg(
                self.stream, seq=seq, subject=aggregate.subject, next=True, direct=True
            )
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            raise Unavailable("event store unavailable") from None

    async def last_sequence(self) -> int:
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq)
