"""File trees: building a big directory, and a one-path change on top of it.

The change's cost must not grow with the tree: it is measured on a
100,000-file tree and on a 10,000-file tree (docs/decisions/0006-file-trees.md).
The store is a durable LocalObjectStore, as PFS uses it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator

from libs.objects import LocalObjectStore, hash_bytes
from libs.trees import DataRef, Op, Put, build
from tests.bench import BenchContext, Result

BUILD_FLOOR = 5_000.0  # files/s
CHANGE_FLOOR_MS = 100.0
CHUNK = hash_bytes(b"bench")


def _puts(n: int) -> AsyncIterator[Op]:
    async def gen() -> AsyncIterator[Op]:
        for i in range(n):
            yield Put(f"/data/dir-{i % 10}/file-{i:08d}", [DataRef(CHUNK, i * 100, 100)])

    return gen()


async def _one(op: Op) -> AsyncIterator[Op]:
    yield op


async def _change_ms(store: LocalObjectStore, root: str, n: int) -> float:
    times = []
    for k in range(5):
        path = f"/data/dir-{k}/file-{n // 2 + k:08d}"
        start = time.perf_counter()
        await build(store, root, _one(Put(path, [DataRef(CHUNK, 0, 7 + k)])))
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


async def run(ctx: BenchContext) -> list[Result]:
    store = LocalObjectStore(ctx.work_dir / "trees", durable=True)
    results: list[Result] = []
    n = 100_000
    start = time.perf_counter()
    big = await build(store, None, _puts(n), spill_dir=ctx.work_dir)
    elapsed = time.perf_counter() - start
    results.append(Result("trees build 100k files", round(n / elapsed, 0), "files/s", BUILD_FLOOR))
    results.append(
        Result(
            "trees 1-path change, 100k-file tree",
            await _change_ms(store, big.hash, n),
            "ms",
            CHANGE_FLOOR_MS,
            higher_is_better=False,
            note="median of 5",
        )
    )
    small = await build(store, None, _puts(10_000), spill_dir=ctx.work_dir)
    results.append(
        Result(
            "trees 1-path change, 10k-file tree",
            await _change_ms(store, small.hash, 10_000),
            "ms",
            CHANGE_FLOOR_MS,
            higher_is_better=False,
            note="median of 5",
        )
    )
    return results
