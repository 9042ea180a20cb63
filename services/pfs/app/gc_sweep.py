"""The sweep phase: delete every unmarked object older than the cutoff.

The listing of each prefix streams in batches of ``BATCH`` keys; each batch
is checked against the ``MarkSet`` at once and its garbage deleted
``CONCURRENCY`` at a time with ``ObjectStore.delete_if_older``, which
checks the modification time again right at the delete, so an object a
write touched after the listing survives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from libs.objects import ObjectInfo, ObjectStore
from services.pfs.app.gc_marks import MarkSet

# The object key spaces pfs and pps write: chunks and packs, tree objects.
PREFIXES = ("chunks/", "trees/")
BATCH = 1000
CONCURRENCY = 16


@dataclass
class Tally:
    objects: int = 0
    bytes: int = 0

    def add(self, info: ObjectInfo) -> None:
        self.objects += 1
        self.bytes += info.size


@dataclass
class SweepResult:
    kept: Tally = field(default_factory=Tally)  # marked live
    deleted: Tally = field(default_factory=Tally)
    protected: Tally = field(default_factory=Tally)  # unmarked, but not older than the cutoff


async def sweep(
    store: ObjectStore,
    marks: MarkSet,
    cutoff: float,
    prefixes: Sequence[str] = PREFIXES,
    *,
    batch: int = BATCH,
    concurrency: int = CONCURRENCY,
) -> SweepResult:
    """Delete what ``marks`` lacks under ``prefixes`` if modified before
    ``cutoff`` (unix seconds); count what was kept, deleted and protected."""
    result = SweepResult()
    limit = asyncio.Semaphore(max(1, concurrency))

    async def condemn(info: ObjectInfo) -> None:
        async with limit:
            gone = await store.delete_if_older(info.key, cutoff)
        (result.deleted if gone else result.protected).add(info)

    async def settle(infos: list[ObjectInfo]) -> None:
        live = await marks.marked([i.key for i in infos])
        doomed: list[ObjectInfo] = []
        for info in infos:
            if info.key in live:
                result.kept.add(info)
            elif info.modified >= cutoff:
                result.protected.add(info)
            else:
                doomed.append(info)
        await asyncio.gather(*(condemn(i) for i in doomed))

    for prefix in prefixes:
        pending: list[ObjectInfo] = []
        async for info in store.list(prefix):
            pending.append(info)
            if len(pending) >= batch:
                await settle(pending)
                pending = []
        if pending:
            await settle(pending)
    return result
