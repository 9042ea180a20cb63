"""The event log: envelopes, the registry with upcasters, the event store on
JetStream, aggregates, projections and reactions."""

from __future__ import annotations

from libs.events.aggregate import AggregateCache, Executed, Loaded, execute, load
from libs.events.envelope import NEW, AggregateRef, Position, RecordedEvent
from libs.events.projection import Projection, ProjectionRunner, View
from libs.events.reactor import Reactor
from libs.events.registry import EventRegistry, EventSchema
from libs.events.store import Append, Appended, EventStore, ensure_stream
from libs.events.writer import AggregateWriter

__all__ = [
    "NEW",
    "AggregateCache",
    "AggregateRef",
    "AggregateWriter",
    "Append",
    "Appended",
    "EventRegistry",
    "EventSchema",
    "EventStore",
    "Executed",
    "Loaded",
    "Position",
    "Projection",
    "ProjectionRunner",
    "Reactor",
    "RecordedEvent",
    "View",
    "ensure_stream",
    "execute",
    "load",
]
