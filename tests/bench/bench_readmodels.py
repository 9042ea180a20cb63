"""Read-model throughput on the embedded SQLite store (WAL, synchronous=NORMAL).

Documents look like a small projection row (a job: pipeline, state, start
time, a few more fields, ~200 bytes of JSON) in a collection with three
indexed fields, so every write also maintains three secondary indexes.

Floors are about half of what a 2-core development machine measured
(~40k docs/s batched puts, ~19k sequential and ~31k concurrent gets/s,
~240k docs/s streamed), leaving room for a busy CI box.
"""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor

from libs.readmodels import Collection, SqliteDocumentStore
from tests.bench import BenchContext, Result

JOBS = Collection("jobs", ("pipeline", "state", "started"))
DOCS = 50_000
BATCH = 500
GETS = 20_000


def _job(i: int) -> dict[str, object]:
    return {
        "job": f"{i:08x}",
        "pipeline": f"pipeline-{i % 50}",
        "state": ("JOB_RUNNING", "JOB_SUCCESS", "JOB_FAILURE")[i % 3],
        "started": 1_700_000_000 + i,
        "data_processed": i * 7,
        "output_commit": {"repo": f"pipeline-{i % 50}", "id": f"{i:032x}"},
    }


async def _writes(store: SqliteDocumentStore) -> float:
    start = time.perf_counter()
    for first in range(0, DOCS, BATCH):
        async with store.batch() as b:
            for i in range(first, first + BATCH):
                b.put("jobs", f"{i:08x}", _job(i))
            b.set_checkpoint("bench", first + BATCH)
    return DOCS / (time.perf_counter() - start)


async def _gets(store: SqliteDocumentStore, lanes: int) -> float:
    rng = random.Random(7)
    keys = iter([f"{rng.randrange(DOCS):08x}" for _ in range(GETS)])

    async def lane() -> None:
        for k in keys:
            assert await store.get("jobs", k) is not None

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(lanes)))
    return GETS / (time.perf_counter() - start)


async def _handoffs() -> float:
    """The machine's ceiling for sequential gets: each get is one round trip
    to the store's SQLite thread; this is that round trip doing nothing."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1) as pool:
        start = time.perf_counter()
        for _ in range(GETS):
            await loop.run_in_executor(pool, int)
        return GETS / (time.perf_counter() - start)


async def _stream(store: SqliteDocumentStore) -> float:
    start = time.perf_counter()
    n = 0
    async for _ in store.query("jobs", order_by="started", descending=True):
        n += 1
    assert n == DOCS
    return n / (time.perf_counter() - start)


async def run(ctx: BenchContext) -> list[Result]:
    store = SqliteDocumentStore(ctx.work_dir / "bench-readmodels.sqlite")
    await store.open([JOBS])
    write_rate = await _writes(store)
    handoff_rate = await _handoffs()
    get_rate = await _gets(store, 1)
    get_rate_concurrent = await _gets(store, 32)
    stream_rate = await _stream(store)
    await store.close()
    return [
        Result("readmodel sqlite put, batches of 500", write_rate, "docs/s", 20_000),
        # Each get is one round trip to the SQLite thread, whose cost varies a
        # lot between VMs and moments: the get floors are relative to the empty
        # round trip measured in the same run (half of it sequentially, all
        # of it with 32 gets in flight).
        Result(
            "  peer: empty thread round trip, sequential",
            handoff_rate,
            "trips/s",
            note="the ceiling for sequential gets on this machine",
        ),
        Result("readmodel sqlite point get, sequential", get_rate, "gets/s", handoff_rate / 2),
        Result(
            "readmodel sqlite point get, 32 concurrent",
            get_rate_concurrent,
            "gets/s",
            handoff_rate,
        ),
        Result("readmodel sqlite ordered stream", stream_rate, "docs/s", 100_000),
    ]
