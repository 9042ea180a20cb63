"""Where garbage collection starts marking: what pfs and pps reference.

``pfs_live`` walks pfs's ``commits`` read model once, in key order: a
finished commit gives its tree; an open one its recorded writes (the refs
of ``FilePut``, ``FilesPut``, ``HeaderSet``, ``FooterSet``, ``SplitPiecePut``,
the source tree of ``FileCopied``, the tree of ``CommitWritesSealed``), read from its
commit aggregate, and its start time, which bounds the cutoff. A commit seen
open covers everything it writes later through that bound; one that started
after the collection did writes only after the collection's start.

``pps_live`` pages through ``qry.pps.ObjectRoots`` (the bus carries at most
1 MiB a message): every tree root pps keeps, and when the oldest unfinished
job was created, which bounds the cutoff too. pps must answer: without its
roots nothing may be swept, so its failure fails the collection.

pps is asked first: a job finishes its output commit and builds its stats
commit before it is recorded finished, so a job pps reports finished has
both in pfs's read model by the time pfs's commits are read.
"""

from __future__ import annotations

from libs.api.events import pfs_pb2 as ev
from libs.api.internal import gc_pb2
from libs.bus import Bus
from libs.events import EventStore
from libs.readmodels import DocumentStore
from services.pfs.adapters.commits_view import COMMITS
from services.pfs.app.gc_mark import TreeMarker
from services.pfs.domain import files

ROOTS_PAGE = 5000  # tree hashes per ObjectRoots page: ~340 KB


async def pfs_live(docs: DocumentStore, events: EventStore, marker: TreeMarker) -> float | None:
    """Mark from every commit; return the start (unix seconds) of the
    oldest open commit, None when none is open."""
    oldest: int | None = None
    async for doc in docs.query(COMMITS):
        if doc["finished_ns"]:
            await marker.tree(doc["tree"])
            continue
        started = int(doc["started_ns"])
        oldest = started if oldest is None else min(oldest, started)
        await open_commit_writes(events, doc["id"], marker)
    return None if oldest is None else oldest / 1e9


async def open_commit_writes(events: EventStore, commit_id: str, marker: TreeMarker) -> None:
    """Mark what the open commit ``commit_id``'s recorded writes reference."""
    async for recorded in events.read(files.ref(commit_id)):
        e = recorded.event
        if isinstance(e, ev.FilePut | ev.HeaderSet | ev.FooterSet | ev.SplitPiecePut):
            await marker.refs(r.chunk for r in e.refs)
        elif isinstance(e, ev.FilesPut):
            await marker.refs(r.chunk for put in e.puts for r in put.refs)
        elif isinstance(e, ev.FileCopied):
            await marker.tree(e.src_root)
        elif isinstance(e, ev.CommitWritesSealed):
            await marker.tree(e.tree)


async def pps_live(bus: Bus, marker: TreeMarker, principal: str = "") -> float | None:
    """Mark every tree root pps references, page by page; return when the
    oldest unfinished job was created (unix seconds), None when none is."""
    after = ""
    oldest: float | None = None
    while True:
        page = await bus.request(
            "pps",
            "ObjectRoots",
            gc_pb2.ObjectRootsRequest(after=after, limit=ROOTS_PAGE),
            gc_pb2.ObjectRootsResponse,
            kind="qry",
            principal=principal,
            timeout=60.0,
        )
        if page.oldest_unfinished_job:
            oldest = page.oldest_unfinished_job
        for root in page.trees:
            await marker.tree(root)
        if not page.next:
            return oldest
        after = page.next
