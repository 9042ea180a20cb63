"""The ``commits`` read model: one document per commit, projected from the
repo aggregate's commit events, and ``commit_edges`` (provenance commit ->
commit). A commit's children (``parent`` is indexed) and its subvenance are
read from these two at query time, so deleting a commit (which re-parents its
children and drops its edges) keeps both current without rewriting others."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from libs.api.events import pfs_pb2 as ev
from libs.api.pfs import pfs_pb2 as pfs
from libs.events import Projection, RecordedEvent, View
from libs.readmodels import Collection, Document, DocumentStore
from services.pfs.adapters.scoped import RepoKeys

COMMITS = "commits"
# One document per (provenance commit -> commit) pair: a commit's subvenance.
COMMIT_EDGES = "commit_edges"
# One document per open commit a put session holds (``lease``): what pfs
# watches the leases of, read whole when it starts.
PUT_LEASES = "put_leases"


def commit_key(repo: str, commit_id: str) -> str:
    return f"{repo}/{commit_id}"


def _edge_key(up: list[str], repo: str, commit_id: str) -> str:
    return f"{up[0]}/{up[1]}>{repo}/{commit_id}"


class CommitsProjection(Projection):
    name = "pfs-commits"
    subjects = ("ev.pfs.repo.>",)
    collections = (
        Collection(COMMITS, indexes=("repo", "started_ns", "parent")),
        Collection(COMMIT_EDGES, indexes=("repo", "up_key")),
        Collection(PUT_LEASES, indexes=("repo",)),
    )

    def __init__(self, store: DocumentStore) -> None:
        self.keys = RepoKeys(store)

    async def apply(self, event: RecordedEvent, view: View) -> None:
        repo = event.aggregate.id
        msg = event.event
        if isinstance(msg, ev.CommitStarted):
            key = commit_key(repo, msg.id)
            view.put(
                COMMITS,
                key,
                {
                    "key": key,
                    "repo": repo,
                    "id": msg.id,
                    "parent": msg.parent,
                    "branch": msg.branch,
                    "description": msg.description,
                    "started_ns": event.envelope.time.ToNanoseconds(),
                    "finished_ns": 0,
                    "size_bytes": 0,
                    "tree": "",
                    "provenance": [[p.repo, p.id] for p in msg.provenance],
                    "lease": msg.lease,
                },
            )
            self.keys.wrote(view, COMMITS, repo, key)
            if msg.lease:
                lease = {
                    "key": key,
                    "repo": repo,
                    "id": msg.id,
                    "branch": msg.branch,
                    "session": msg.lease,
                }
                view.put(PUT_LEASES, key, lease)
                self.keys.wrote(view, PUT_LEASES, repo, key)
            for p in msg.provenance:
                edge = _edge_key([p.repo, p.id], repo, msg.id)
                up_key = commit_key(p.repo, p.id)
                view.put(
                    COMMIT_EDGES,
                    edge,
                    {"key": edge, "repo": repo, "id": msg.id, "up_key": up_key},
                )
                self.keys.wrote(view, COMMIT_EDGES, repo, edge)
        elif isinstance(msg, ev.CommitFinished):
            doc = await view.get(COMMITS, commit_key(repo, msg.id))
            if doc is not None:
                done = {
                    **doc,
                    "finished_ns": event.envelope.time.ToNanoseconds(),
                    "size_bytes": msg.size_bytes,
                    "tree": msg.tree,
                }
                if msg.description_set:
                    done["description"] = msg.description
                view.put(COMMITS, doc["key"], done)
                if doc.get("lease"):
                    view.delete(PUT_LEASES, doc["key"])
        elif isinstance(msg, ev.CommitDeleted):
            old = await view.get(COMMITS, commit_key(repo, msg.id))
            for up in old["provenance"] if old is not None else []:
                view.delete(COMMIT_EDGES, _edge_key(up, repo, msg.id))
            view.delete(COMMITS, commit_key(repo, msg.id))
            if old is not None and old.get("lease"):
                view.delete(PUT_LEASES, old["key"])
            for child in msg.children:
                doc = await view.get(COMMITS, commit_key(repo, child))
                if doc is not None:
                    view.put(COMMITS, doc["key"], {**doc, "parent": msg.parent})
        elif isinstance(msg, ev.RepoDeleted):
            for collection in (COMMITS, COMMIT_EDGES, PUT_LEASES):
                for key in await self.keys.of_repo(view, collection, repo):
                    view.delete(collection, key)


def _ts(ns: int) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(ns)
    return ts


def commit_info(doc: dict[str, Any]) -> pfs.CommitInfo:
    repo = pfs.Repo(name=doc["repo"])
    info = pfs.CommitInfo(
        commit=pfs.Commit(repo=repo, id=doc["id"]),
        started=_ts(int(doc["started_ns"])),
        size_bytes=int(doc["size_bytes"]),
        description=doc["description"],
        provenance=[pfs.Commit(repo=pfs.Repo(name=r), id=c) for r, c in doc["provenance"]],
    )
    if doc["parent"]:
        info.parent_commit.CopyFrom(pfs.Commit(repo=repo, id=doc["parent"]))
    if doc["finished_ns"]:
        info.finished.CopyFrom(_ts(int(doc["finished_ns"])))
    if doc["tree"]:
        info.tree.CopyFrom(pfs.Object(hash=doc["tree"]))
    return info


async def child_commits(docs: DocumentStore, repo: str, commit_id: str) -> list[pfs.Commit]:
    """The commits whose parent is ``commit_id``, oldest first."""
    children = docs.query(COMMITS, where={"repo": repo, "parent": commit_id}, order_by="started_ns")
    return [pfs.Commit(repo=pfs.Repo(name=repo), id=d["id"]) async for d in children]


async def subvenance(docs: DocumentStore, repo: str, commit_id: str) -> list[pfs.CommitRange]:
    """The commits that have ``commit_id`` in their provenance, as Pachyderm
    1.7 reports them: ranges ``lower..upper`` of one downstream branch's
    ancestry (a commit whose parent ends a range extends it), in the order
    the commits started."""
    downstream: list[Document] = []
    async for edge in docs.query(COMMIT_EDGES, where={"up_key": commit_key(repo, commit_id)}):
        doc = await docs.get(COMMITS, commit_key(edge["repo"], edge["id"]))
        if doc is not None:
            downstream.append(doc)
    downstream.sort(key=lambda d: (int(d["started_ns"]), d["repo"], d["id"]))
    ranges: list[list[str]] = []  # [repo, lower, upper]
    for doc in downstream:
        for r in ranges:
            if r[0] == doc["repo"] and doc["parent"] == r[2]:
                r[2] = doc["id"]
                break
        else:
            ranges.append([doc["repo"], doc["id"], doc["id"]])
    return [
        pfs.CommitRange(
            lower=pfs.Commit(repo=pfs.Repo(name=r), id=lower),
            upper=pfs.Commit(repo=pfs.Repo(name=r), id=upper),
        )
        for r, lower, upper in ranges
    ]


async def full_commit_info(docs: DocumentStore, doc: Document) -> pfs.CommitInfo:
    """``commit_info`` with the commit's children and subvenance."""
    info = commit_info(doc)
    info.child_commits.extend(await child_commits(docs, doc["repo"], doc["id"]))
    info.subvenance.extend(await subvenance(docs, doc["repo"], doc["id"]))
    return info
