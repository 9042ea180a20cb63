"""AggregateCache: cached state, catch-up reads, racing replicas."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from libs.config import Config
from libs.events import AggregateCache, EventStore, ensure_stream
from tests.support import counter


class CountingStore(EventStore):
    """Counts the messages fetched from JetStream (one get per message, plus
    one to learn there are no more)."""

    gets = 0

    async def _get_next(self, aggregate, seq):  # type: ignore[no-untyped-def, override]
        self.gets += 1
        return await super()._get_next(aggregate, seq)


async def _store(nc: Client) -> CountingStore:
    cfg = Config()
    await ensure_stream(nc.jetstream(), cfg)
    return CountingStore.from_config(nc, counter.registry(), cfg)  # type: ignore[return-value]


def _cache(store: EventStore, max_entries: int = 100) -> AggregateCache[counter.Counter]:
    return AggregateCache(store, counter.Counter, counter.evolve, max_entries=max_entries)


async def test_a_cached_aggregate_reads_only_what_is_new(nc: Client) -> None:
    store = await _store(nc)
    cache = _cache(store)
    ref = counter.ref("hot")
    await cache.execute(ref, counter.open_counter)
    for _ in range(50):
        await cache.execute(ref, counter.increment(1))
    before = store.gets
    done = await cache.execute(ref, counter.increment(1))
    # One look for newer events (none), not 52 messages replayed.
    assert store.gets - before == 1
    assert done.state.value == 51
    assert (await _cache(store, 0).load(ref)).state.value == 51  # agrees with a full replay
    await store.close()


async def test_two_replicas_see_each_others_writes(nc: Client) -> None:
    store = await _store(nc)
    a, b = _cache(store), _cache(store)
    ref = counter.ref("shared")
    await a.execute(ref, counter.open_counter)

    async def bump(cache: AggregateCache[counter.Counter], n: int) -> None:
        for _ in range(n):
            await cache.execute(ref, counter.increment(1))

    await asyncio.gather(bump(a, 40), bump(b, 40))
    assert (await a.load(ref)).state.value == 80
    assert (await b.load(ref)).state.value == 80
    assert (await a.load(ref)).position == (await b.load(ref)).position
    await store.close()


async def test_the_cache_is_bounded(nc: Client) -> None:
    store = await _store(nc)
    cache = _cache(store, max_entries=5)
    for i in range(12):
        await cache.execute(counter.ref(f"c{i}"), counter.open_counter)
    assert len(cache) == 5
    # An evicted aggregate is simply loaded again in full.
    assert (await cache.load(counter.ref("c0"))).state.exists
    await store.close()
