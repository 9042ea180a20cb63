"""Extract and restore of a 1,000,000-event log (pfs-shaped: FilePut batches).

The log is built directly with ``EventStore.append_many``; the extract goes to
a file (``extract_frames``), and the file is restored into the empty event
stream of a second nats-server (``decode_frames`` -> ``restore``).
``PACH_BENCH_BACKUP_EVENTS`` changes the size.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats

from libs.api.events import pfs_pb2 as ev
from libs.config import Config
from libs.errors import PachError
from libs.events import NEW, AggregateRef, Append, EventStore, Position, ensure_stream
from programs.cluster.natsserver import NatsServer
from services.admin.app.extract import extract_frames
from services.admin.app.restore import RestoreProgress, restore_frames
from services.pfs.domain.events import registry
from tests.bench import BenchContext, Result

EVENTS_PER_MESSAGE = 4
AGGREGATES = 1000
READ_BLOCK = 1 << 20


def _file_puts(commit: int, round_: int) -> list[ev.FilePut]:
    return [
        ev.FilePut(
            path=f"/data/{round_:06d}/file-{i}.csv",
            refs=[
                ev.DataRef(
                    chunk=f"{(commit * 7919 + round_ * 31 + i) % (1 << 64):064x}",
                    offset=i * 4096,
                    length=4096,
                )
            ],
        )
        for i in range(EVENTS_PER_MESSAGE)
    ]


async def _build(store: EventStore, events: int) -> int:
    """Append ``events`` events; returns the number of messages."""
    messages = events // EVENTS_PER_MESSAGE
    positions: dict[int, Position] = {}
    sent = 0
    round_ = 0
    while sent < messages:
        n = min(AGGREGATES, messages - sent)
        refs = [AggregateRef("pfs", "commit", f"bench@{c:04d}") for c in range(n)]
        items = [Append(refs[c], _file_puts(c, round_), positions.get(c, NEW)) for c in range(n)]
        for c, result in enumerate(await store.append_many(items)):
            if isinstance(result, PachError):
                raise result
            positions[c] = result.position
        sent += n
        round_ += 1
    return messages


async def _write(path: Path, blocks: AsyncIterator[bytes]) -> int:
    size = 0
    buf: list[bytes] = []
    pending = 0
    with path.open("wb") as f:
        async for block in blocks:
            buf.append(block)
            pending += len(block)
            if pending >= 4 << 20:
                await asyncio.to_thread(f.write, b"".join(buf))
                size += pending
                buf, pending = [], 0
        await asyncio.to_thread(f.write, b"".join(buf))
        size += pending
    return size


async def _read(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while block := await asyncio.to_thread(f.read, READ_BLOCK):
            yield block


async def run(ctx: BenchContext) -> list[Result]:
    events = int(os.environ.get("PACH_BENCH_BACKUP_EVENTS", "1000000"))
    reg = registry()
    nc = await nats.connect(ctx.nats_url)
    await ensure_stream(nc.jetstream(), Config())
    store = EventStore.from_config(nc, reg, Config())
    started = time.perf_counter()
    messages = await _build(store, events)
    build_s = time.perf_counter() - started
    await store.close()

    path = ctx.work_dir / "backup.pachext"
    started = time.perf_counter()
    size = await _write(path, extract_frames(nc.jetstream(), None, reg, objects=False))
    extract_s = time.perf_counter() - started
    await nc.close()

    target_server = NatsServer(store_dir=ctx.work_dir / "nats-restore").start()
    try:
        target = await nats.connect(target_server.url)
        started = time.perf_counter()
        checked = [0.0]

        def progress(p: RestoreProgress) -> None:
            if p.phase == "events" and p.events == p.total_events:
                checked[0] = time.perf_counter() - started  # validated and spooled

        summary = await restore_frames(
            target,
            None,
            _read(path),
            registry=reg,
            spool_dir=ctx.work_dir / "spool",
            progress=progress,
        )
        restore_s = time.perf_counter() - started
        append_s = restore_s - checked[0]
        info = await target.jetstream().stream_info("EVENTS")
        assert summary.events == messages == info.state.messages, (summary, info.state)
        await target.close()
    finally:
        target_server.stop()
    mb = size / 1e6
    note = f"{events:,} events in {messages:,} messages, {mb:,.0f} MB"
    return [
        Result("backup: build the log (append_many)", events / build_s, "events/s", note=note),
        Result("backup: extract to a file", events / extract_s, "events/s", 100_000, note=note),
        Result("backup: extract to a file", messages / extract_s, "messages/s"),
        Result("backup: extract to a file", mb / extract_s, "MB/s"),
        Result("backup: restore from the file", events / restore_s, "events/s", 50_000),
        Result("backup: restore from the file", messages / restore_s, "messages/s"),
        Result("backup: restore from the file", mb / restore_s, "MB/s"),
        Result("backup: restore, read+check+spool phase", events / checked[0], "events/s"),
        Result("backup: restore, append phase", events / append_s, "events/s"),
    ]
