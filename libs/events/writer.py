"""Commands on one kind of aggregate with read-your-writes: decide on the
cached state, append, and return once the service's views show the new
events.

Each service has one writer per aggregate kind (pfs's repos, pps's
pipelines and jobs). ``views`` must each follow every subject the
aggregate's events land on: a projection filtered to other subjects never
reaches their sequence numbers, and waiting for it would time out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from google.protobuf.message import Message

from libs.events.aggregate import AggregateCache, Executed, Loaded
from libs.events.envelope import AggregateRef
from libs.events.projection import ProjectionRunner
from libs.events.store import EventStore

S = TypeVar("S")


class Caller(Protocol):
    """Who asked (``libs.bus.Context`` is one)."""

    @property
    def principal(self) -> str: ...

    @property
    def request_id(self) -> str: ...


class AggregateWriter(Generic[S]):
    def __init__(
        self,
        events: EventStore,
        views: Sequence[ProjectionRunner],
        *,
        ref: Callable[[str], AggregateRef],
        initial: Callable[[], S],
        evolve: Callable[[S, Message], S],
    ) -> None:
        self.cache: AggregateCache[S] = AggregateCache(events, initial=initial, evolve=evolve)
        self.views = views
        self.ref = ref

    async def load(self, name: str) -> S:
        """The aggregate's current state (the views may not show it yet)."""
        return (await self.cache.load(self.ref(name))).state

    async def loaded(self, name: str) -> Loaded[S]:
        """``load`` with the position the state stands at."""
        return await self.cache.load(self.ref(name))

    def cached(self, name: str) -> Loaded[S] | None:
        """The state this process saw last, without a round trip to the log
        (it may be behind another process's appends)."""
        return self.cache.cached(self.ref(name))

    async def append_at(
        self,
        name: str,
        loaded: Loaded[S],
        events: Sequence[Message],
        *,
        principal: str = "",
        correlation_id: str = "",
    ) -> Executed[S]:
        """Append ``events`` decided on ``loaded`` (``cached`` or ``loaded``)
        if the aggregate still stands there, else ``ConcurrencyError``;
        does not wait for the views."""
        return await self.cache.append(
            self.ref(name), loaded, events, principal=principal, correlation_id=correlation_id
        )

    async def settled(self, name: str) -> S:
        """The aggregate's state, once every view shows all of its events."""
        loaded = await self.cache.load(self.ref(name))
        if loaded.position.seq:
            await self.wait_for(loaded.position.seq)
        return loaded.state

    async def wait_for(self, seq: int) -> None:
        await asyncio.gather(*(view.wait_for(seq) for view in self.views))

    async def run(
        self, name: str, decide: Callable[[S], Sequence[Message]], ctx: Caller
    ) -> Executed[S]:
        """``run_as`` on behalf of the caller of a command."""
        return await self.run_as(
            name, decide, principal=ctx.principal, correlation_id=ctx.request_id
        )

    async def run_as(
        self,
        name: str,
        decide: Callable[[S], Sequence[Message]],
        *,
        principal: str = "",
        correlation_id: str = "",
        causation_id: str = "",
        wait: bool = True,
    ) -> Executed[S]:
        """Decide and append; with ``wait``, return once the views show it."""
        done = await self.cache.execute(
            self.ref(name),
            decide,
            principal=principal,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        if wait and done.appended is not None:
            await self.wait_for(done.appended.position.seq)
        return done
