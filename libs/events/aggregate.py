"""Load an aggregate, decide, append — and retry on fresh state when another
writer won the race.

A domain module supplies two pure functions:

- ``evolve(state, event) -> state``: apply one past event;
- ``decide(state) -> list of events``: what a command does to that state
  (raising a ``PachError`` to refuse it).

``execute`` loads the aggregate, decides, and appends with optimistic
concurrency; on ``ConcurrencyError`` it reloads and decides again, so two
replicas racing on one aggregate cannot both win and no command is lost.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

from libs.errors import ConcurrencyError
from libs.events.envelope import AggregateRef, Position
from libs.events.store import Appended, EventStore

S = TypeVar("S")

Evolve = Callable[[S, Message], S]
Decide = Callable[[S], Sequence[Message]]


@dataclass(frozen=True)
class Loaded(Generic[S]):
    state: S
    position: Position


async def load(
    store: EventStore, aggregate: AggregateRef, initial: S, evolve: Callable[[S, Message], S]
) -> Loaded[S]:
    state = initial
    position = Position()
    async for recorded in store.read(aggregate):
        state = evolve(state, recorded.event)
        position = Position(recorded.stream_seq, recorded.aggregate_version)
    return Loaded(state, position)


@dataclass(frozen=True)
class Executed(Generic[S]):
    state: S  # the state after the new events
    events: Sequence[Message]
    appended: Appended | None  # None when decide returned no events
    attempts: int


async def execute(
    store: EventStore,
    aggregate: AggregateRef,
    initial: S,
    evolve: Callable[[S, Message], S],
    decide: Callable[[S], Sequence[Message]],
    *,
    principal: str = "",
    causation_id: str = "",
    correlation_id: str = "",
    max_attempts: int = 20,
) -> Executed[S]:
    attempt = 0
    while True:
        attempt += 1
        loaded = await load(store, aggregate, initial, evolve)
        events = list(decide(loaded.state))
        if not events:
            return Executed(loaded.state, events, None, attempt)
        try:
            appended = await store.append(
                aggregate,
                events,
                loaded.position,
                principal=principal,
                causation_id=causation_id,
                correlation_id=correlation_id,
            )
        except ConcurrencyError:
            if attempt >= max_attempts:
                raise
            # Back off a little, with jitter, so racing writers spread out.
            await asyncio.sleep(random.uniform(0, 0.002 * attempt))
            continue
        state = loaded.state
        for event in events:
            state = evolve(state, event)
        return Executed(state, events, appended, attempt)
