"""Commands on the repo aggregate: decide on the cached state, append, and
return once every pfs read model shows the new events (read-your-writes)."""

from __future__ import annotations

from collections.abc import Sequence

from libs.events import AggregateWriter, EventStore, ProjectionRunner
from services.pfs.domain import repo


class RepoWriter(AggregateWriter[repo.Repo]):
    @classmethod
    def create(cls, events: EventStore, views: Sequence[ProjectionRunner]) -> RepoWriter:
        return cls(events, views, ref=repo.ref, initial=repo.Repo, evolve=repo.evolve)
