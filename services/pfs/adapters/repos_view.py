"""The ``repos`` read model: one document per live repo, projected from the
repo events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from libs.api.events import pfs_pb2 as ev
from libs.api.pfs import pfs_pb2 as pfs
from libs.events import Projection, RecordedEvent, View
from libs.readmodels import Collection

REPOS = "repos"


class ReposProjection(Projection):
    name = "pfs-repos"
    subjects = ("ev.pfs.repo.>",)
    collections = (Collection(REPOS, indexes=("created_ns",)),)

    def prefetch(self, event: RecordedEvent) -> Sequence[tuple[str, str]]:
        if isinstance(event.event, ev.CommitFinished | ev.RepoDescriptionSet):
            return [(REPOS, event.aggregate.id)]
        return ()

    async def apply(self, event: RecordedEvent, view: View) -> None:
        name = event.aggregate.id
        msg = event.event
        if isinstance(msg, ev.RepoCreated):
            view.put(
                REPOS,
                name,
                {
                    "name": name,
                    "description": msg.description,
                    "created_ns": event.envelope.time.ToNanoseconds(),
                    "size_bytes": 0,
                    "version": event.aggregate_version,
                },
            )
        elif isinstance(msg, ev.RepoDescriptionSet):
            doc = await view.get(REPOS, name)
            if doc is not None and doc["version"] < event.aggregate_version:
                view.put(
                    REPOS,
                    name,
                    {**doc, "description": msg.description, "version": event.aggregate_version},
                )
        elif isinstance(msg, ev.CommitFinished):
            # A repo's size is the size of its newest finished commit's tree.
            doc = await view.get(REPOS, name)
            if doc is not None:
                view.put(REPOS, name, {**doc, "size_bytes": msg.size_bytes})
        elif isinstance(msg, ev.RepoDeleted):
            view.delete(REPOS, name)


def repo_info(doc: dict[str, Any]) -> pfs.RepoInfo:
    created = Timestamp()
    created.FromNanoseconds(int(doc["created_ns"]))
    return pfs.RepoInfo(
        repo=pfs.Repo(name=doc["name"]),
        created=created,
        size_bytes=int(doc["size_bytes"]),
        description=doc["description"],
    )
