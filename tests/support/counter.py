"""A tiny aggregate used by the event-store tests: a named counter.

Its events live in proto/events/testing.proto; ``testing.Renamed`` has two
schema versions so the tests can exercise upcasting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from google.protobuf.message import Message

from libs.api.events import testing_pb2 as t
from libs.errors import AlreadyExists, NotFound
from libs.events import AggregateRef, EventRegistry


def registry() -> EventRegistry:
    reg = EventRegistry()
    reg.register_module(t)

    @reg.upcaster("testing.Renamed", 1)
    def split_full_name(old: Message) -> Message:
        assert isinstance(old, t.RenamedV1)
        given, _, family = old.full_name.partition(" ")
        return t.Renamed(given_name=given, family_name=family)

    return reg


@dataclass(frozen=True)
class Counter:
    exists: bool = False
    value: int = 0
    given_name: str = ""
    family_name: str = ""


def ref(name: str) -> AggregateRef:
    return AggregateRef("testing", "counter", name)


def evolve(state: Counter, event: Message) -> Counter:
    if isinstance(event, t.CounterOpened):
        return replace(state, exists=True)
    if isinstance(event, t.CounterIncremented):
        return replace(state, value=state.value + event.by)
    if isinstance(event, t.Renamed):
        return replace(state, given_name=event.given_name, family_name=event.family_name)
    return state


def open_counter(state: Counter) -> Sequence[Message]:
    if state.exists:
        raise AlreadyExists("counter exists")
    return [t.CounterOpened()]


def increment(by: int = 1):  # type: ignore[no-untyped-def]
    def decide(state: Counter) -> Sequence[Message]:
        if not state.exists:
            raise NotFound("no such counter")
        return [t.CounterIncremented(by=by)]

    return decide
