"""Event append rate (sequential and pipelined) and bus request/reply latency."""

from __future__ import annotations

import asyncio
import statistics
import time

import nats

from libs.api.events import testing_pb2 as t
from libs.api.internal.service_pb2 import HealthRequest, HealthResponse
from libs.bus import Bus, Context
from libs.config import Config
from libs.events import NEW, Append, EventStore, ensure_stream
from tests.bench import BenchContext, Result
from tests.support import counter


async def _appends(store: EventStore, prefix: str, n: int, in_flight: int) -> float:
    ids = iter(range(n))

    async def lane() -> None:
        for i in ids:
            await store.append(counter.ref(f"{prefix}{i}"), [t.CounterOpened()], NEW)

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    return n / (time.perf_counter() - start)


async def _append_many(store: EventStore, prefix: str, n: int, window: int) -> float:
    start = time.perf_counter()
    for base in range(0, n, window):
        items = [
            Append(counter.ref(f"{prefix}{i}"), [t.CounterOpened()], NEW)
            for i in range(base, min(n, base + window))
        ]
        for result in await store.append_many(items):
            assert not isinstance(result, Exception), result
    return n / (time.perf_counter() - start)


async def run(ctx: BenchContext) -> list[Result]:
    nc = await nats.connect(ctx.nats_url)
    cfg = Config()
    await ensure_stream(nc.jetstream(), cfg)
    store = EventStore.from_config(nc, counter.registry(), cfg)
    await _appends(store, "warm", 2000, 64)
    seq_rate = await _appends(store, "s", 3000, 1)
    pipe_rate = await _appends(store, "p", 60_000, 512)
    many_rate = await _append_many(store, "m", 60_000, 1024)

    server_nc = await nats.connect(ctx.nats_url)
    server = Bus(server_nc, service="bench")

    async def health(req: HealthRequest, c: Context) -> HealthResponse:
        return HealthResponse(ready=True)

    await server.serve("Health", HealthRequest, health, kind="qry")
    client = Bus(nc, service="caller")
    for _ in range(300):
        await client.request("bench", "Health", HealthRequest(), HealthResponse, kind="qry")
    lat = []
    for _ in range(3000):
        s = time.perf_counter()
        await client.request("bench", "Health", HealthRequest(), HealthResponse, kind="qry")
        lat.append((time.perf_counter() - s) * 1000)
    lat.sort()
    await server.close()
    await store.close()
    await server_nc.close()
    await nc.close()
    return [
        Result("event append, sequential", seq_rate, "appends/s", None),
        Result("event append, 512 concurrent appenders", pipe_rate, "appends/s"),
        Result("event append, pipelined (append_many)", many_rate, "appends/s", 30_000),
        Result("bus request/reply p50", statistics.median(lat), "ms", 0.4, higher_is_better=False),
        Result(
            "bus request/reply p99", lat[int(len(lat) * 0.99)], "ms", None, higher_is_better=False
        ),
    ]
