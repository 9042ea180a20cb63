"""The ``branches`` read model (one document per branch) and
``branch_edges`` (one per upstream -> downstream pair of the transitive
provenance, to find a branch's or a repo's subvenance, with the time the
pair first appeared)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from libs.api.events import pfs_pb2 as ev
from libs.api.pfs import pfs_pb2 as pfs
from libs.events import Projection, RecordedEvent, View
from libs.readmodels import Collection, DocumentStore
from services.pfs.adapters.scoped import RepoKeys

BRANCHES = "branches"
EDGES = "branch_edges"


def branch_key(repo: str, name: str) -> str:
    return f"{repo}/{name}"


def _edge_key(up: list[str], repo: str, name: str) -> str:
    return f"{up[0]}/{up[1]}>{repo}/{name}"


class BranchesProjection(Projection):
    name = "pfs-branches"
    subjects = ("ev.pfs.repo.>",)
    collections = (
        Collection(BRANCHES, indexes=("repo", "created_ns")),
        Collection(EDGES, indexes=("repo", "up_repo", "up_key")),
    )

    def __init__(self, store: DocumentStore) -> None:
        self.keys = RepoKeys(store)

    def prefetch(self, event: RecordedEvent) -> Sequence[tuple[str, str]]:
        msg = event.event
        if isinstance(msg, ev.BranchSet | ev.BranchDeleted):
            return [(BRANCHES, branch_key(event.aggregate.id, msg.name))]
        return ()

    async def apply(self, event: RecordedEvent, view: View) -> None:
        repo = event.aggregate.id
        msg = event.event
        if isinstance(msg, ev.BranchSet):
            key = branch_key(repo, msg.name)
            provenance = [[p.repo, p.name] for p in msg.provenance]
            # An edge that stays keeps the time it first appeared.
            since: dict[str, int] = {}
            for up in provenance:
                old_edge = await view.get(EDGES, _edge_key(up, repo, msg.name))
                if old_edge is not None:
                    since[old_edge["key"]] = int(old_edge["since_ns"])
            old = await view.get(BRANCHES, key)
            created = int(old["created_ns"]) if old else event.envelope.time.ToNanoseconds()
            await self._drop(view, repo, msg.name)
            doc: dict[str, Any] = {
                "key": key,
                "repo": repo,
                "name": msg.name,
                "head": msg.head,
                "provenance": provenance,
                "direct": [[p.repo, p.name] for p in msg.direct_provenance],
                "created_ns": created,
            }
            view.put(BRANCHES, key, doc)
            self.keys.wrote(view, BRANCHES, repo, key)
            for up in provenance:
                edge = _edge_key(up, repo, msg.name)
                view.put(
                    EDGES,
                    edge,
                    {
                        "key": edge,
                        "repo": repo,
                        "branch": msg.name,
                        "up_repo": up[0],
                        "up_key": branch_key(up[0], up[1]),
                        "since_ns": since.get(edge, event.envelope.time.ToNanoseconds()),
                    },
                )
                self.keys.wrote(view, EDGES, repo, edge)
        elif isinstance(msg, ev.BranchDeleted):
            await self._drop(view, repo, msg.name)
        elif isinstance(msg, ev.RepoDeleted):
            for collection in (BRANCHES, EDGES):
                for key in await self.keys.of_repo(view, collection, repo):
                    view.delete(collection, key)

    async def _drop(self, view: View, repo: str, name: str) -> None:
        old = await view.get(BRANCHES, branch_key(repo, name))
        if old is None:
            return
        view.delete(BRANCHES, old["key"])
        for up in old["provenance"]:
            view.delete(EDGES, _edge_key(up, repo, name))


def branch_info(doc: dict[str, Any]) -> pfs.BranchInfo:
    repo = pfs.Repo(name=doc["repo"])
    info = pfs.BranchInfo(
        name=doc["name"],
        branch=pfs.Branch(repo=repo, name=doc["name"]),
        provenance=[pfs.Branch(repo=pfs.Repo(name=r), name=b) for r, b in doc["provenance"]],
        direct_provenance=[pfs.Branch(repo=pfs.Repo(name=r), name=b) for r, b in doc["direct"]],
    )
    if doc["head"]:
        info.head.CopyFrom(pfs.Commit(repo=repo, id=doc["head"]))
    return info
