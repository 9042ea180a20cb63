"""A separate process that increments one counter N times through
``libs.events.AggregateCache`` and prints how many lost races it retried.

Usage: python -m tests.support.race_worker NATS_URL COUNTER N"""

from __future__ import annotations

import asyncio
import json
import sys

import nats

from libs.config import Config
from libs.events import AggregateCache, EventStore
from tests.support import counter


async def main(url: str, name: str, n: int) -> None:
    nc = await nats.connect(url)
    store = EventStore.from_config(nc, counter.registry(), Config())
    # Start together with the other worker: say we are ready, wait for "go".
    go = await nc.subscribe("race.go", max_msgs=1)
    await nc.flush()
    print("ready", flush=True)
    await go.next_msg(timeout=30)
    retries = 0
    seqs = []
    cache = AggregateCache(store, counter.Counter, counter.evolve)
    for _ in range(n):
        done = await cache.execute(counter.ref(name), counter.increment(1))
        retries += done.attempts - 1
        assert done.appended is not None
        seqs.append(done.appended.position.seq)
    print(json.dumps({"retries": retries, "seqs": seqs}))
    await store.close()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
