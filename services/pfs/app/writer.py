"""Commands on the repo aggregate: decide on the cached state, append, and
return once every pfs read model shows the new events (read-your-writes)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from libs.bus import Context
from libs.events import AggregateCache, EventStore, Executed, ProjectionRunner
from services.pfs.domain import repo


@dataclass
class RepoWriter:
    cache: AggregateCache[repo.Repo]
    views: Sequence[ProjectionRunner]

    @classmethod
    def create(cls, events: EventStore, views: Sequence[ProjectionRunner]) -> RepoWriter:
        return cls(AggregateCache(events, initial=repo.Repo, evolve=repo.evolve), views)

    async def run(self, name: str, decide: repo.Decide, ctx: Context) -> Executed[repo.Repo]:
        return await self.run_as(
            name, decide, principal=ctx.principal, correlation_id=ctx.request_id
        )

    async def run_as(
        self,
        name: str,
        decide: repo.Decide,
        *,
        principal: str = "",
        correlation_id: str = "",
        causation_id: str = "",
    ) -> Executed[repo.Repo]:
        done = await self.cache.execute(
            repo.ref(name),
            decide,
            principal=principal,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        if done.appended is not None:
            seq = done.appended.position.seq
            await asyncio.gather(*(view.wait_for(seq) for view in self.views))
        return done
