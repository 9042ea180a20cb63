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
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from opentelemetry import propagate, trace

from libs.api.events.envelope_pb2 import EventBatch
from libs.config import Config
from libs.errors import (
    ConcurrencyError,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    MessageTooLarge,
    PachError,
    Unavailable,
)
from libs.events.envelope import (
    AggregateRef,
    Position,
    RecordedEvent,
    decode_batch,
    parse_batch,
)
from libs.events.identity import log_missing, stream_config
from libs.events.publisher import (
    Ack,
    NoStream,
    Outgoing,
    Publisher,
    PublishError,
    header_value,
)
from libs.events.registry import EventRegistry

# JetStream API error codes we act on.
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_MSG_TOO_LARGE = 10054
ERR_NO_MESSAGE = 10037


_H_EXPECTED_SEQ = api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value
_H_MSG_ID = api.Header.MSG_ID.value

# append_many hands appends to the connection in groups of this many, and
# lets the event loop write each group while it encodes the next.
_SEND_GROUP = 128


def new_event_id() -> str:
    """A random (version 4) UUID as 32 hex digits, like ``uuid4().hex`` at a
    quarter of the cost."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def _trace_context() -> dict[str, str]:
    """The W3C trace context of the current span ({} outside of one)."""
    trace_ctx: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(trace_ctx)
    return trace_ctx


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
class Appended:
    """The result of an append: where the aggregate now stands."""

    position: Position
    duplicate: bool  # True when the server had it already (a retried append)


async def ensure_stream(js: JetStreamContext, cfg: Config, cluster_id: str = "") -> None:
    """Create the events stream if missing (idempotent; safe to race).

    For tools and tests that run parts of the system alone: in a cluster
    only admin creates the stream, with the cluster's identity
    (``libs.events.identity.create_stream``); services never do."""
    try:
        await js.add_stream(stream_config(cfg, cluster_id))
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
        direct: bool = True,
    ) -> None:
        self._nc = nc
        # Direct gets may be answered by any replica of a clustered stream,
        # including a follower that has not applied the newest appends: two
        # reads could then disagree (a commit sealed at a position whose
        # writes one stale read missed). With replicas, reads go to the
        # stream's leader (docs/decisions/0026-nats-cluster.md).
        self.direct = direct
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
            direct=cfg.events_replicas == 1,
        )

    # --- writing -----------------------------------------------------------

    def _build(self, item: Append, trace_ctx: dict[str, str]) -> EventBatch:
        events = item.events
        if not events:
            raise InvalidArgument("an append needs at least one event")
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        aggregate = item.aggregate
        service, agg_type, agg_id = aggregate.service, aggregate.type, aggregate.id
        principal, causation_id, correlation_id = (
            item.principal,
            item.causation_id,
            item.correlation_id,
        )
        schema_for = self.registry.schema_for
        version = item.expected.version
        batch = EventBatch()
        add = batch.events.add
        # Fields are set one by one on envelopes the batch creates: several
        # times cheaper than Envelope(**kwargs) plus a Timestamp per event.
        # Empty strings are left unset (proto3: the same bytes).
        for event in events:
            schema = schema_for(event)
            version += 1
            env = add()
            env.event_id = new_event_id()
            env.type = schema.event_type
            env.schema_version = schema.version
            env.aggregate_service = service
            env.aggregate_type = agg_type
            env.aggregate_id = agg_id
            env.aggregate_version = version
            ts = env.time
            ts.seconds = seconds
            ts.nanos = nanos
            if principal:
                env.principal = principal
            if causation_id:
                env.causation_id = causation_id
            if correlation_id:
                env.correlation_id = correlation_id
            if trace_ctx:
                env.trace_context.update(trace_ctx)
            env.payload = event.SerializeToString()
        return batch

    def _outgoing(self, item: Append, trace_ctx: dict[str, str]) -> tuple[Outgoing, str]:
        """The message for one append, and its msg id."""
        batch = self._build(item, trace_ctx)
        data = batch.SerializeToString()
        if len(data) > self.max_message_bytes:
            raise MessageTooLarge(
                len(data), self.max_message_bytes, f"events for {item.aggregate.id}"
            )
        # Compared with what the server stored when a retry needs it.
        msg_id = header_value(item.msg_id) if item.msg_id else batch.events[0].event_id
        headers = {_H_EXPECTED_SEQ: str(item.expected.seq), _H_MSG_ID: msg_id}
        return Outgoing(item.aggregate.subject, data, headers), msg_id

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
        [result] = await self.append_many([item])
        if isinstance(result, PachError):
            raise result
        return result

    async def append_many(self, items: Sequence[Append]) -> list[Appended | PachError]:
        """Pipelined appends: all are sent before any acknowledgement is
        awaited. Each result is ``Appended`` or the error that append got;
        appends to different aggregates are independent."""
        results: list[Appended | PachError | None] = [None] * len(items)
        trace_ctx = _trace_context()
        # (index, item, msg id, size, ack) of every append that went out.
        inflight: list[tuple[int, Append, str, int, asyncio.Future[Ack]]] = []
        for start in range(0, len(items), _SEND_GROUP):
            batch: list[Outgoing] = []
            meta: list[tuple[int, Append, str, int]] = []
            for i in range(start, min(len(items), start + _SEND_GROUP)):
                item = items[i]
                try:
                    out, msg_id = self._outgoing(item, trace_ctx)
                except PachError as err:
                    results[i] = err
                    continue
                batch.append(out)
                meta.append((i, item, msg_id, len(out.data)))
            if batch:
                sent = await self._publisher.send_many(batch, self.timeout)
                for (i, item, msg_id, size), ack in zip(meta, sent, strict=True):
                    if isinstance(ack, Exception):
                        results[i] = self._send_failed(item, size, ack)
                    else:
                        inflight.append((i, item, msg_id, size, ack))
            if start + _SEND_GROUP < len(items):
                # Let the connection write this group (and read the acks
                # that came back) while we encode the next one: nats-server
                # works on it in parallel.
                await asyncio.sleep(0)
        for i, item, msg_id, size, ack in inflight:
            if ack.done() and not ack.cancelled() and ack.exception() is None:
                done = ack.result()
                results[i] = Appended(
                    Position(done.seq, item.expected.version + len(item.events)), done.duplicate
                )
                continue
            try:
                results[i] = await self._settle(item, msg_id, size, ack)
            except PachError as err:
                results[i] = err
        done_results = [r for r in results if r is not None]
        if len(done_results) != len(items):  # every item gets a result, in order
            raise Internal(f"append_many lost {len(items) - len(done_results)} results")
        return done_results

    def _send_failed(self, item: Append, size: int, exc: Exception) -> PachError:
        subject = item.aggregate.subject
        if isinstance(exc, TimeoutError):
            return DeadlineExceeded(
                f"append to {subject} found no room among the pending appends within "
                f"{self.timeout:g}s; retrying with the same msg_id is safe",
                subject=subject,
            )
        if isinstance(exc, nats.errors.MaxPayloadError):
            return MessageTooLarge(size, self._nc.max_payload, f"events for {item.aggregate.id}")
        if isinstance(exc, nats.errors.BadHeaderError):
            return InvalidArgument(f"msg_id {item.msg_id!r} is not a valid header value")
        if isinstance(exc, nats.errors.Error):
            return Unavailable(f"event store unavailable for {subject}")
        raise exc

    async def _settle(
        self, item: Append, msg_id: str, size: int, future: asyncio.Future[Ack]
    ) -> Appended:
        try:
            ack = await future
        except PublishError as exc:
            if exc.err_code == ERR_WRONG_LAST_SEQUENCE:
                # The server checks the expected sequence before
                # de-duplication, so a retry of an append that did land (its
                # ack was lost) shows up here: look for it among the
                # aggregate's newer messages.
                landed = await self._find_msg_id(item.aggregate, item.expected.seq, msg_id)
                if landed is not None:
                    return Appended(landed, True)
                raise ConcurrencyError(item.aggregate.subject, item.expected.seq) from None
            if exc.err_code == ERR_MSG_TOO_LARGE:
                raise MessageTooLarge(size, self.max_message_bytes, "event batch") from None
            raise Unavailable(f"event store refused the append: {exc.description}") from None
        except TimeoutError:
            raise DeadlineExceeded(
                f"append to {item.aggregate.subject} not acknowledged within "
                f"{self.timeout:g}s; retrying with the same msg_id is safe",
                subject=item.aggregate.subject,
            ) from None
        except NoStream:
            # Our subjects always have a stream: none means the log is gone.
            raise log_missing(self.stream) from None
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
            raw = await self.js.get_last_msg(self.stream, aggregate.subject, direct=self.direct)
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
                self.stream, seq=seq, subject=aggregate.subject, next=True, direct=self.direct
            )
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            raise Unavailable("event store unavailable") from None
