"""Aggregates' subjects, envelopes, and decoded (recorded) events."""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf.message import DecodeError, Message

from libs.api.events.envelope_pb2 import Envelope, EventBatch
from libs.errors import InvalidArgument, MalformedMessage
from libs.events.registry import EventRegistry

SUBJECT_PREFIX = "ev"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def encode_token(value: str) -> str:
    """A NATS subject token for any string: kept as is when it is plain
    (letters, digits, ``_``, ``-``), else ``~`` + hex of its UTF-8 bytes."""
    if _TOKEN.match(value):
        return value
    return "~" + value.encode().hex()


def decode_token(token: str) -> str:
    if token.startswith("~"):
        try:
            return bytes.fromhex(token[1:]).decode()
        except ValueError:
            raise InvalidArgument(f"bad subject token {token!r}") from None
    return token


# (service, aggregate type) pairs already validated.
_GOOD_KINDS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class AggregateRef:
    """One aggregate: e.g. ``AggregateRef("pfs", "repo", "images")``."""

    service: str
    type: str
    id: str

    def __post_init__(self) -> None:
        if (self.service, self.type) not in _GOOD_KINDS:
            for part, what in ((self.service, "service"), (self.type, "aggregate type")):
                if not isinstance(part, str) or not _TOKEN.match(part):
                    raise InvalidArgument(f"bad {what} {part!r}: letters, digits, _ and - only")
            if len(_GOOD_KINDS) < 4096:
                _GOOD_KINDS.add((self.service, self.type))
        if not self.id:
            raise InvalidArgument("an aggregate id must not be empty")

    @property
    def subject(self) -> str:
        return f"{SUBJECT_PREFIX}.{self.service}.{self.type}.{encode_token(self.id)}"

    @classmethod
    def from_subject(cls, subject: str) -> AggregateRef:
        parts = subject.split(".")
        if len(parts) != 4 or parts[0] != SUBJECT_PREFIX:
            raise InvalidArgument(f"{subject!r} is not an event subject")
        return cls(parts[1], parts[2], decode_token(parts[3]))


@dataclass(frozen=True)
class Position:
    """Where an aggregate stands: the stream sequence of its last message
    (what optimistic concurrency checks) and its event count."""

    seq: int = 0
    version: int = 0


NEW = Position(0, 0)


@dataclass(frozen=True)
class RecordedEvent:
    """An event read back from the log, its payload lifted to the current
    schema version."""

    envelope: Envelope
    event: Message
    stream_seq: int

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def aggregate(self) -> AggregateRef:
        e = self.envelope
        return AggregateRef(e.aggregate_service, e.aggregate_type, e.aggregate_id)

    @property
    def aggregate_version(self) -> int:
        return self.envelope.aggregate_version


def parse_batch(data: bytes) -> EventBatch:
    batch = EventBatch()
    try:
        batch.ParseFromString(data)
    except DecodeError as exc:
        raise MalformedMessage("event batch", str(exc)) from None
    if not batch.events:
        raise MalformedMessage("event batch", "no events")
    for env in batch.events:
        if not env.type or not env.event_id or not env.aggregate_id or env.schema_version < 1:
            raise MalformedMessage("event envelope", "type, id, aggregate and version required")
    return batch


def decode_batch(
    data: bytes, stream_seq: int, registry: EventRegistry, only: frozenset[str] | None = None
) -> list[RecordedEvent]:
    """Decode one stored message. With ``only``, events of other types are
    left out without decoding their payloads (so unknown types pass by)."""
    out = []
    for env in parse_batch(data).events:
        if only is not None and env.type not in only:
            continue
        event = registry.decode(env.type, env.schema_version, env.payload)
        out.append(RecordedEvent(env, event, stream_seq))
    return out
