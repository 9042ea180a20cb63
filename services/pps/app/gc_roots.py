"""``qry.pps.ObjectRoots``: every tree root pps references, for pfs's
garbage collection, a page at a time (the bus carries at most 1 MiB).

From the job read models: each job's output tree, and the input trees of a
job not done yet (it still reads them); each datum result's output and
stats trees; the skip index's output trees (later jobs reuse them). The
cursor is ``<collection index>:<document key>``; documents are read in key
order, so a page resumes exactly after the last document of the one before.
The first page also says when the oldest unfinished job was created: pfs
keeps its cutoff before it, so whatever a running job writes (its merged
output and stats tree come after its output commit is finished) survives.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from libs.api.internal import gc_pb2
from libs.bus import Bus, Context
from libs.errors import InvalidArgument
from libs.readmodels import DocumentStore
from services.pps.adapters.jobs_view import DATUMS, JOBS, PROCESSED

COLLECTIONS = (JOBS, DATUMS, PROCESSED)
DEFAULT_LIMIT = 2000
MAX_LIMIT = 10000  # 10,000 hashes: ~660 KB, under the bus's 1 MiB


def doc_trees(collection: str, doc: dict[str, Any]) -> Iterator[str]:
    """The tree roots one document references."""
    if collection == JOBS:
        yield doc.get("output_tree", "")
        if not doc.get("done"):
            for inp in doc.get("inputs", []):
                yield inp[4]
    elif collection == DATUMS:
        yield doc.get("output_tree", "")
        yield doc.get("stats_tree", "")
    else:
        yield doc.get("output_tree", "")


def _cursor(after: str) -> tuple[int, str]:
    if not after:
        return 0, ""
    index, sep, key = after.partition(":")
    if not sep or not index.isdigit() or int(index) >= len(COLLECTIONS):
        raise InvalidArgument(f"ObjectRoots cursor {after!r} is not one this service gave")
    return int(index), key


@dataclass
class ObjectRoots:
    docs: DocumentStore

    async def register(self, bus: Bus) -> None:
        await bus.serve("ObjectRoots", gc_pb2.ObjectRootsRequest, self.object_roots, kind="qry")

    async def object_roots(
        self, req: gc_pb2.ObjectRootsRequest, ctx: Context
    ) -> gc_pb2.ObjectRootsResponse:
        limit = min(req.limit or DEFAULT_LIMIT, MAX_LIMIT)
        index, after = _cursor(req.after)
        out = gc_pb2.ObjectRootsResponse()
        if not req.after:
            out.oldest_unfinished_job = await self._oldest_unfinished_job()
        seen: set[str] = set()
        while index < len(COLLECTIONS):
            collection = COLLECTIONS[index]
            query = self.docs.query(collection, start=after or None)
            async for doc in query:
                if doc["key"] == after:
                    continue  # the cursor's own document: on the page before
                if len(seen) >= limit:
                    out.next = f"{index}:{after}"
                    return out
                for tree in doc_trees(collection, doc):
                    if tree and tree not in seen:
                        seen.add(tree)
                        out.trees.append(tree)
                after = doc["key"]
            index, after = index + 1, ""
        return out

    async def _oldest_unfinished_job(self) -> float:
        oldest = 0
        async for doc in self.docs.query(JOBS, where={"done": False}):
            created = int(doc.get("created_ns", 0))
            if created and (not oldest or created < oldest):
                oldest = created
        return oldest / 1e9
