"""The downstream reaction: when an input commit (one without provenance)
on a branch finishes, every branch that has that branch in its provenance
gets a new open commit, whose provenance is the finished commit plus the
current heads of the branch's other provenance branches.

Runs as a durable ``Reactor`` shared by pfs's replicas. Idempotent: each
opened commit's id derives from the finished commit and the downstream
branch (``commits.downstream_id``), and starting an existing id is a no-op."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from google.protobuf.message import Message

from libs.api.events import pfs_pb2 as ev
from libs.errors import NotFound
from libs.events import RecordedEvent
from libs.readmodels import DocumentStore
from services.pfs.adapters.branches_view import BRANCHES, EDGES, branch_key
from services.pfs.app.writer import RepoWriter
from services.pfs.domain import commits, repo
from services.pfs.domain.repo import Decide, Key, Repo

_log = structlog.get_logger("pfs.downstream")

EVENT_TYPES = frozenset({"pfs.CommitFinished"})


@dataclass
class Downstream:
    writer: RepoWriter
    docs: DocumentStore

    async def handle(self, event: RecordedEvent) -> None:
        msg = event.event
        if not isinstance(msg, ev.CommitFinished):
            return
        upstream_repo = event.aggregate.id
        # A commit's branch and provenance never change: the state this
        # replica holds tells them when it knows the commit (it usually made
        # it), without a round trip to the log; the reaction itself decides
        # on the state loaded afresh.
        cached = self.writer.cached(upstream_repo)
        known = cached.state.commits.get(msg.id) if cached is not None else None
        if known is not None and (not known.branch or known.provenance):
            return  # on no branch, or itself an output commit
        if known is not None and not await self._has_downstream(upstream_repo, known.branch):
            return
        state = (await self.writer.cache.load(repo.ref(upstream_repo))).state
        finished = state.commits.get(msg.id)
        if finished is None or not finished.branch or finished.provenance:
            return  # gone, on no branch, or itself an output commit
        up: Key = (upstream_repo, finished.branch)
        edges = self.docs.query(EDGES, where={"up_key": branch_key(*up)})
        found = [
            await self.docs.get(BRANCHES, branch_key(e["repo"], e["branch"])) async for e in edges
        ]
        # Upstream branches first: a downstream commit's provenance names the
        # commits opened upstream of it (those that exist: one whose
        # provenance repeats its branch's head is not opened).
        targets = sorted(
            (d for d in found if d is not None),
            key=lambda d: (len(d["provenance"]), d["repo"], d["name"]),
        )
        opened: dict[Key, str] = {}
        for doc in targets:
            target: Key = (doc["repo"], doc["name"])
            cid = commits.downstream_id(msg.id, *target)
            provenance: list[Key] = []
            for r, b in doc["provenance"]:
                if (r, b) == up:
                    provenance.append((r, msg.id))
                elif (r, b) in opened:
                    provenance.append((r, opened[(r, b)]))
                else:
                    head = await self.docs.get(BRANCHES, branch_key(r, b))
                    if head is not None and head["head"]:
                        provenance.append((r, head["head"]))
            decide = _unless_superseded(
                commits.start_commit(target[0], cid, target[1], provenance=provenance),
                state,
                msg.id,
                target[1],
            )
            try:
                done = await self.writer.run_as(
                    target[0],
                    decide,
                    principal=event.envelope.principal,
                    correlation_id=event.envelope.correlation_id,
                    causation_id=event.envelope.event_id,
                )
            except NotFound as err:  # the downstream repo went meanwhile
                _log.info("downstream branch gone", branch=branch_key(*target), error=str(err))
                continue
            if cid in done.state.commits:
                opened[target] = cid

    async def _has_downstream(self, repo_name: str, branch: str) -> bool:
        edges = self.docs.query(EDGES, where={"up_key": branch_key(repo_name, branch)}, limit=1)
        return bool([e async for e in edges])


def _unless_superseded(decide: Decide, upstream: Repo, finished: str, branch: str) -> Decide:
    """``decide``, unless the downstream branch already moved past
    ``finished`` (``commits.superseded``): then nothing. Judged on the
    downstream repo's state as the write sees it."""

    def guarded(downstream: Repo) -> Sequence[Message]:
        if commits.superseded(upstream, finished, downstream, branch):
            _log.info(
                "late reaction: downstream has newer data",
                downstream=branch_key(downstream.name, branch),
                commit=finished,
            )
            return []
        return decide(downstream)

    return guarded
