"""Optimistic concurrency across processes, and durability across kill -9."""

from __future__ import annotations

import asyncio
import json
import sys

import nats
from nats.aio.client import Client

from libs.api.events import testing_pb2 as t
from libs.config import Config
from libs.errors import DeadlineExceeded, Unavailable
from libs.events import NEW, EventStore, ensure_stream, execute, load
from programs.cluster.natsserver import NatsServer
from tests.support import counter


async def test_two_processes_racing_on_one_aggregate(nc: Client, nats_server: NatsServer) -> None:
    """Each process increments the same counter 150 times. Exactly one writer
    wins each version; losers retry on fresh state; nothing is lost or doubled.
    Two processes on a loaded machine may happen to take turns without ever
    colliding, so the race is run again (on a new counter, every check each
    time) until at least one append lost and was retried."""
    cfg = Config()
    await ensure_stream(nc.jetstream(), cfg)
    store = EventStore.from_config(nc, counter.registry(), cfg)
    retries = 0
    for attempt in range(5):
        retries = await _race(nc, nats_server, store, f"race-{attempt}", 150)
        if retries:
            break
    assert retries > 0, "two processes never collided in 5 races"


async def _race(nc: Client, nats_server: NatsServer, store: EventStore, name: str, n: int) -> int:
    """Race two worker processes on counter ``name``; check what they wrote;
    the number of lost appends they retried."""
    await execute(store, counter.ref(name), counter.Counter(), counter.evolve, counter.open_counter)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.race_worker",
            nats_server.url,
            name,
            str(n),
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for p in procs:  # both connected and waiting: start them at once
        assert p.stdout is not None
        assert (await p.stdout.readline()).strip() == b"ready"
    await nc.publish("race.go", b"")
    outs = [json.loads((await p.communicate())[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    events = [e async for e in store.read(counter.ref(name))]
    # 1 open + 2n increments, versions 1..2n+1 without gaps or repeats.
    assert [e.aggregate_version for e in events] == list(range(1, 2 * n + 2))
    assert len({e.envelope.event_id for e in events}) == 2 * n + 1
    state = (await load(store, counter.ref(name), counter.Counter(), counter.evolve)).state
    assert state.value == 2 * n
    # Both processes' winning appends are all there, none shared.
    won = set(outs[0]["seqs"]) | set(outs[1]["seqs"])
    assert len(won) == 2 * n
    assert won == {e.stream_seq for e in events[1:]}
    return int(outs[0]["retries"] + outs[1]["retries"])


async def test_acknowledged_appends_survive_kill_9_of_nats_server(
    nats_server: NatsServer,
) -> None:
    """Pipelined appends to many aggregates; nats-server is killed with
    SIGKILL mid-stream. After a restart every acknowledged append is there."""
    nc = await nats.connect(
        nats_server.url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
    )
    cfg = Config(request_timeout_s=2.0)
    await ensure_stream(nc.jetstream(), cfg)
    store = EventStore.from_config(nc, counter.registry(), cfg)
    acked: dict[str, int] = {}  # aggregate id -> stream seq of its acked append
    killed = asyncio.Event()
    failures_before_kill: list[str] = []
    counter_ids = iter(range(1_000_000))

    async def writer() -> None:
        # Keep appending (pipelined with the other writers) until the kill.
        while not killed.is_set():
            name = f"k{next(counter_ids)}"
            try:
                done = await store.append(counter.ref(name), [t.CounterOpened(name=name)], NEW)
                acked[name] = done.position.seq
            except (Unavailable, DeadlineExceeded) as err:
                if not killed.is_set():
                    failures_before_kill.append(repr(err))
                return

    async def killer() -> None:
        while len(acked) < 3000:  # noqa: ASYNC110 - polls a plain dict
            await asyncio.sleep(0.001)
        killed.set()
        nats_server.kill()

    await asyncio.gather(killer(), *(writer() for _ in range(256)))
    assert failures_before_kill == []
    assert len(acked) >= 3000
    await nc.close()

    nats_server.start()
    nc2 = await nats.connect(nats_server.url)
    store2 = EventStore.from_config(nc2, counter.registry(), cfg)
    missing = []
    for name, seq in acked.items():
        pos = await store2.position(counter.ref(name))
        if pos.seq != seq:
            missing.append(name)
    assert missing == []
    await nc2.close()
