"""Garbage collection of a local store holding 100,000 objects: half live
(chunks referenced by a tree of 50,000 files), half garbage (unreferenced
chunks). Mark and sweep are timed separately (objects/s), with the marks in
memory and spilled to SQLite. The collection's clock is set an hour ahead so
every object is older than the cutoff, as on a store that has been idle.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

from libs.objects import LocalObjectStore, chunk_key, hash_bytes
from libs.trees import DataRef, Op, Put, TreeRoot, build
from services.pfs.app.gc import Source, collect
from services.pfs.app.gc_mark import TreeMarker
from tests.bench import BenchContext, Result

LIVE = 50_000
GARBAGE = 50_000
MARK_FLOOR = 20_000.0  # objects/s
SWEEP_FLOOR = 5_000.0  # objects/s
_AHEAD = 64


async def _put_chunks(store: LocalObjectStore, tag: bytes, n: int) -> list[str]:
    digests: list[str] = []
    pending: list[asyncio.Task[None]] = []
    for i in range(n):
        data = tag + i.to_bytes(8, "big") + os.urandom(40)
        digest = hash_bytes(data)
        digests.append(digest)
        pending.append(asyncio.create_task(store.put(chunk_key(digest), data)))
        if len(pending) >= _AHEAD:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    return digests


async def _tree(store: LocalObjectStore, digests: list[str], ctx: BenchContext) -> TreeRoot:
    async def ops() -> AsyncIterator[Op]:
        for i, d in enumerate(digests):
            yield Put(f"/dir-{i % 100:03d}/file-{i:08d}", [DataRef(d, 0, 56)])

    return await build(store, None, ops(), spill_dir=ctx.work_dir)


def _source(root: str) -> Source:
    async def source(marker: TreeMarker) -> float | None:
        await marker.tree(root)
        return None

    return source


async def _measure(store: LocalObjectStore, root: str, memory: int, label: str) -> list[Result]:
    result = await collect(
        store, [_source(root)], memory_bytes=memory, clock=lambda: time.time() + 3600
    )
    assert result.deleted.objects == GARBAGE, result
    listed = result.kept.objects + result.deleted.objects + result.protected.objects
    note = f"{result.marked:,} marked, {listed:,} listed, {result.deleted.objects:,} deleted"
    return [
        Result(
            f"gc mark ({label})",
            round(result.marked / result.mark_seconds, 0),
            "objects/s",
            MARK_FLOOR,
            note=f"{result.mark_seconds:.2f}s; {note}",
        ),
        Result(
            f"gc sweep ({label})",
            round(listed / result.sweep_seconds, 0),
            "objects/s",
            SWEEP_FLOOR,
            note=f"{result.sweep_seconds:.2f}s",
        ),
    ]


async def run(ctx: BenchContext) -> list[Result]:
    # Setup is not measured: writes skip the fsyncs.
    store = LocalObjectStore(ctx.work_dir / "gc-objects", durable=False)
    live = await _put_chunks(store, b"live", LIVE)
    root = await _tree(store, live, ctx)
    await _put_chunks(store, b"garbage", GARBAGE)
    results = await _measure(store, root.hash, 0, "marks in memory")
    await _put_chunks(store, b"garbage2", GARBAGE)
    results += await _measure(store, root.hash, 1 << 20, "marks in SQLite")
    return results
