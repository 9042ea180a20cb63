"""Garbage collection of the object store: ``cmd.pfs.GarbageCollect``
(docs/decisions/0011-extract-restore-gc.md).

``collect`` records its start, marks from every live source (each marks
through a ``TreeMarker`` and may return the start of the oldest open commit
it saw), then sweeps ``chunks/`` and ``trees/``: every unmarked object
modified before the cutoff is deleted, where

    cutoff = min(collection start, oldest open commit's start,
                 oldest unfinished job's creation) - grace

(``PACH_GC_GRACE_S``, default 1 s: clock skew between the services and the
object store, and S3's whole-second ``LastModified``). Writes during a
collection go into open commits, so they are newer than the cutoff and
survive; a write that reuses an old stored object touches it.

A collection waits while a restore runs (``ReactionGate``): until the
restored log is applied, the commits do not show what the restored objects
belong to. On an empty event log it deletes nothing: a restore writes its
objects before its first event (and before it marks itself running).

Marks are a ``MarkSet``: a Python set within the request's ``memory_bytes``
(default 256 MiB), a temporary SQLite table past it. One collection runs at
a time per pfs process; a second request waits for the first.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from nats.js import JetStreamContext

from libs.api.internal import gc_pb2
from libs.bus import Bus, Context
from libs.errors import InvalidArgument
from libs.events import EventStore
from libs.objects import ObjectStore
from libs.readmodels import DocumentStore
from libs.restore_gate import ReactionGate
from services.pfs.app.gc_live import pfs_live, pps_live
from services.pfs.app.gc_mark import TreeMarker
from services.pfs.app.gc_marks import MarkSet
from services.pfs.app.gc_sweep import PREFIXES, SweepResult, Tally, sweep

_log = structlog.get_logger("pfs.gc")

GRACE_ENV = "PACH_GC_GRACE_S"
DEFAULT_GRACE_S = 1.0

# Marks from one live source; returns the start (unix seconds) of the oldest
# open commit it saw, or None.
Source = Callable[[TreeMarker], Awaitable[float | None]]


@dataclass(frozen=True)
class GcSettings:
    grace_s: float = DEFAULT_GRACE_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GcSettings:
        """Read ``PACH_GC_GRACE_S`` (seconds, >= 0); InvalidArgument names a bad value."""
        e = os.environ if env is None else env
        raw = e.get(GRACE_ENV, "").strip()
        if not raw:
            return cls()
        try:
            grace = float(raw)
        except ValueError:
            raise InvalidArgument(
                f"{GRACE_ENV} must be a number of seconds, got {raw!r}", value=raw
            ) from None
        if not grace >= 0 or grace == float("inf"):
            raise InvalidArgument(f"{GRACE_ENV} must be >= 0 and finite, got {raw!r}", value=raw)
        return cls(grace_s=grace)


async def collect(
    store: ObjectStore,
    sources: Sequence[Source],
    *,
    grace_s: float = DEFAULT_GRACE_S,
    memory_bytes: int = 0,
    clock: Callable[[], float] = time.time,
    prefixes: Sequence[str] = PREFIXES,
    spill_dir: str | None = None,
    names: Sequence[str] = (),
) -> gc_pb2.GarbageCollectResult:
    """Mark from ``sources``, then sweep; see the module docstring. ``names``
    says what each source's oldest start is the start of (``cutoff_by``)."""
    if memory_bytes < 0:
        raise InvalidArgument(f"memory_bytes must be >= 0, got {memory_bytes}")
    started = clock()
    marks = MarkSet(memory_bytes, spill_dir)
    try:
        marker = TreeMarker(store, marks)
        try:
            opened: list[tuple[float, str]] = []
            for i, source in enumerate(sources):
                oldest = await source(marker)
                if oldest is not None:
                    opened.append((oldest, names[i] if i < len(names) else "open commit"))
            await marker.wait()
        finally:
            await marker.close()
        marked_at = clock()
        start, cutoff_by = min([(started, "collection"), *opened], key=lambda o: o[0])
        cutoff = start - grace_s
        swept = await sweep(store, marks, cutoff, prefixes)
        result = _result(
            swept, marker.roots, len(marks), cutoff, marked_at - started, clock() - marked_at
        )
        result.cutoff_by = cutoff_by
        return result
    finally:
        await marks.close()


def _count(t: Tally) -> gc_pb2.ObjectCount:
    return gc_pb2.ObjectCount(objects=t.objects, bytes=t.bytes)


def _result(
    swept: SweepResult, roots: int, marked: int, cutoff: float, mark_s: float, sweep_s: float
) -> gc_pb2.GarbageCollectResult:
    return gc_pb2.GarbageCollectResult(
        kept=_count(swept.kept),
        deleted=_count(swept.deleted),
        protected=_count(swept.protected),
        roots=roots,
        marked=marked,
        cutoff=cutoff,
        mark_seconds=mark_s,
        sweep_seconds=sweep_s,
    )


@dataclass
class GarbageCollector:
    """pfs's ``cmd.pfs.GarbageCollect``: marks from pfs's commits and pps's roots."""

    docs: DocumentStore
    events: EventStore
    store: ObjectStore
    bus: Bus
    settings: GcSettings = field(default_factory=GcSettings)
    # While a restore runs (and until pfs's read models applied its log) the
    # commits do not show what the objects belong to: collections wait.
    gate: ReactionGate | None = None
    # The event log's last sequence: 0 means an empty cluster, where only a
    # restore (still writing its objects, before its first event) puts objects.
    log_seq: Callable[[], Awaitable[int]] | None = None
    _running: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def register(self, bus: Bus) -> None:
        await bus.serve("GarbageCollect", gc_pb2.GarbageCollectRequest, self.garbage_collect)

    async def garbage_collect(
        self, req: gc_pb2.GarbageCollectRequest, ctx: Context
    ) -> gc_pb2.GarbageCollectResult:
        async def from_pfs(marker: TreeMarker) -> float | None:
            return await pfs_live(self.docs, self.events, marker)

        async def from_pps(marker: TreeMarker) -> float | None:
            return await pps_live(self.bus, marker, ctx.principal)

        if self.gate is not None:
            await self.gate.wait_open()
        if self.log_seq is not None and await self.log_seq() == 0:
            _log.info("garbage collection skipped: the event log is empty")
            return gc_pb2.GarbageCollectResult()
        async with self._running:
            # pps first: see services.pfs.app.gc_live.
            return await collect(
                self.store,
                [from_pps, from_pfs],
                grace_s=self.settings.grace_s,
                memory_bytes=req.memory_bytes,
                names=("unfinished job", "open commit"),
            )


def stream_last_seq(js: JetStreamContext, stream: str) -> Callable[[], Awaitable[int]]:
    """The event stream's last sequence, asked of JetStream each call."""

    async def last_seq() -> int:
        return int((await js.stream_info(stream)).state.last_seq)

    return last_seq
