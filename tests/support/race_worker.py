"""A separate process that increments one counter N times through
``libs.events.execute`` and prints how many lost races it retried.

Usage: python -m tests.support.race_worker NATS_URL COUNTER N"""

from __future__ import annotations

import asyncio
import json
import sys

import nats

from libs.config import Config
from libs.events import EventStore, execute
from tests.support import counter


async def main(url: str, name: str, n: int) -> None:
    nc = await nats.connect(url)
    store = EventStore.from_config(nc, counter.registry(), Config())
    retries = 0
    seqs = []
    for _ in range(n):
        done = await execute(
            store, counter.ref(name), counter.Counter(), counter.evolve, counter.increment(1)
        )
        retries += done.attempts - 1
        assert done.appended is not None
        seqs.append(done.appended.position.seq)
    print(json.dumps({"retries": retries, "seqs": seqs}))
    await store.close()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
