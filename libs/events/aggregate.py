"""Load an aggregate, decide, append — and retry on fresh state when another
writer won the race.

A domain module supplies two pure functions:

- ``evolve(state, event) -> state``: apply one past event (returning a new
  state: states are shared, never changed in place);
- ``decide(state) -> list of events``: what a command does to that state
  (raising a ``PachError`` to refuse it).

``AggregateCache`` keeps each aggregate's latest state and position in the
process, so a command reads only the events appended since it last looked
(usually none: one round trip) instead of the whole history. Appends carry
the expected position, so a stale cache can never write a wrong decision: it
loses the race, catches up and decides again. ``execute``/``load`` are the
same without keeping anything.
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
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


@dataclass(frozen=True)
class Executed(Generic[S]):
    state: S  # the state after the new events
    events: Sequence[Message]
    appended: Appended | None  # None when decide returned no events
    attempts: int


class AggregateCache(Generic[S]):
    def __init__(
        self,
        store: EventStore,
        initial: Callable[[], S],
        evolve: Callable[[S, Message], S],
        max_entries: int = 10_000,
    ) -> None:
        self.store = store
        self.initial = initial
        self.evolve = evolve
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Loaded[S]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _remember(self, aggregate: AggregateRef, loaded: Loaded[S]) -> None:
        if self.max_entries <= 0:
            return
        key = aggregate.subject
        self._entries[key] = loaded
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, aggregate: AggregateRef) -> None:
        self._entries.pop(aggregate.subject, None)

    async def load(self, aggregate: AggregateRef) -> Loaded[S]:
        """The aggregate's current state: the cached one plus whatever was
        appended since (by any process)."""
        cached = self._entries.get(aggregate.subject)
        state, position = (
            (cached.state, cached.position) if cached else (self.initial(), Position())
        )
        async for recorded in self.store.read(aggregate, after_seq=position.seq):
            state = self.evolve(state, recorded.event)
            position = Position(recorded.stream_seq, recorded.aggregate_version)
        loaded = Loaded(state, position)
        self._remember(aggregate, loaded)
        return loaded

    def cached(self, aggregate: AggregateRef) -> Loaded[S] | None:
        """The state this process last loaded or appended, without asking
        the store (another process may have appended since: an append at
        its position then fails with ``ConcurrencyError``)."""
        return self._entries.get(aggregate.subject)

    async def append(
        self,
        aggregate: AggregateRef,
        loaded: Loaded[S],
        events: Sequence[Message],
        *,
        principal: str = "",
        causation_id: str = "",
        correlation_id: str = "",
    ) -> Executed[S]:
        """Append ``events``, decided on ``loaded``, if the aggregate still
        stands at its position; ``ConcurrencyError`` when it moved on (the
        entry is forgotten, so the next ``load`` reads what is new)."""
        try:
            appended = await self.store.append(
                aggregate,
                events,
                loaded.position,
                principal=principal,
                causation_id=causation_id,
                correlation_id=correlation_id,
            )
        except ConcurrencyError:
            self.forget(aggregate)
            raise
        return self._appended(aggregate, loaded, events, appended, 1)

    def _appended(
        self,
        aggregate: AggregateRef,
        loaded: Loaded[S],
        events: Sequence[Message],
        appended: Appended,
        attempt: int,
    ) -> Executed[S]:
        state = loaded.state
        for event in events:
            state = self.evolve(state, event)
        if appended.duplicate:
            self.forget(aggregate)  # what landed is not what we just decided
        else:
            self._remember(aggregate, Loaded(state, appended.position))
        return Executed(state, events, appended, attempt)

    async def execute(
        self,
        aggregate: AggregateRef,
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
            loaded = await self.load(aggregate)
            events = list(decide(loaded.state))
            if not events:
                return Executed(loaded.state, events, None, attempt)
            try:
                appended = await self.store.append(
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
            return self._appended(aggregate, loaded, events, appended, attempt)


async def load(
    store: EventStore, aggregate: AggregateRef, initial: S, evolve: Callable[[S, Message], S]
) -> Loaded[S]:
    return await AggregateCache(store, lambda: initial, evolve, max_entries=0).load(aggregate)


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
    cache = AggregateCache(store, lambda: initial, evolve, max_entries=0)
    return await cache.execute(
        aggregate,
        decide,
        principal=principal,
        causation_id=causation_id,
        correlation_id=correlation_id,
        max_attempts=max_attempts,
    )
