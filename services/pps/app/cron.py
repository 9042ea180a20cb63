"""Cron ticks: for every running pipeline with cron inputs, a task that, at
each tick of an input's schedule, commits the tick's time to the input's
repo (branch ``master``), which makes pfs open the pipeline's next output
commit and so starts a job.

- Not incremental: each tick's commit holds one file, ``time``, with the
  tick's time in RFC 3339 (``2006-01-02T15:04:05Z``), overwriting the last.
- Incremental (``spec.incremental``): each tick adds a new file named by the
  tick's time, with that time as its content.

Ticks follow ``CronSchedule.next_after``: the first one after the input's
``start`` (create-pipeline sets it to the creation time when the spec has
none), or after the cron repo's last commit when that is later (a restart
goes on from where the ticks stopped). Ticks missed while pps was down (or
stopped) are made as one tick, at once, with the time of the first of them
(1.7 made every missed tick, one commit each: hours of ``@every 1s`` would
queue thousands of jobs). A stopped or deleted pipeline has no task; an
updated one gets a new task for its new spec.

``sync(name)`` is the ``Pipelines`` listener (a command of this process
changed the pipeline); a resync every ``resync_s`` picks up what other
replicas changed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from libs.api.pps import pps_pb2 as pps
from libs.errors import PachError
from libs.events.background import ResumingTask
from libs.filedata import FileWriter
from libs.objects import ObjectStore
from libs.pps.cron import CronSchedule
from libs.pps.spec import cron_inputs
from libs.readmodels import DocumentStore
from libs.restore_gate import ReactionGate
from services.pps.adapters.pfs import Pfs
from services.pps.adapters.pipelines_view import PipelineRecord, get_pipeline, list_pipelines

_log = structlog.get_logger("pps.cron")

CRON_BRANCH = "master"
TIME_FILE = "/time"

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(t: datetime) -> str:
    """A tick's time as Go's time.RFC3339 writes a UTC time."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tick_path(t: datetime, incremental: bool) -> str:
    return f"/{rfc3339(t)}" if incremental else TIME_FILE


@dataclass
class CronInputTicks:
    """The tick loop of one cron input of one pipeline."""

    pipeline: str
    cron: pps.CronInput
    incremental: bool
    pfs: Pfs
    store: ObjectStore
    clock: Clock = _utc_now
    gate: ReactionGate | None = None  # no tick while a restore runs

    async def run(self) -> None:
        schedule = CronSchedule.parse(self.cron.spec)
        await self._wait_open()
        start = self.cron.start.ToDatetime(tzinfo=UTC) if self.cron.HasField("start") else None
        last = start or self.clock()
        head = await self._head_time()
        if head is not None and head > last:
            last = head
        while True:
            tick = schedule.next_after(last)
            delay = (tick - self.clock()).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._wait_open()
            head = await self._head_time()
            if head is None or head < tick:  # not already made (by another replica)
                await self.write_tick(tick)
            last = tick
            now = self.clock()
            if schedule.next_after(last) <= now:
                last = now  # behind schedule: the missed ticks were made as this one

    async def _wait_open(self) -> None:
        if self.gate is not None:
            await self.gate.wait_open()

    async def _head_time(self) -> datetime | None:
        """When the cron repo's last finished commit was started; an open
        head (a tick cut short by a crash) is deleted."""
        branch = await self.pfs.inspect_branch(self.cron.repo, CRON_BRANCH)
        if branch is None or not branch.head.id:
            return None
        info = await self.pfs.inspect_commit(self.cron.repo, branch.head.id)
        if not info.HasField("finished"):
            _log.warning(
                "deleting an unfinished cron commit",
                pipeline=self.pipeline,
                repo=self.cron.repo,
                commit=branch.head.id,
            )
            await self.pfs.delete_commit(self.cron.repo, branch.head.id)
            return await self._head_time()
        return info.started.ToDatetime(tzinfo=UTC)

    async def write_tick(self, tick: datetime) -> None:
        repo = self.cron.repo
        data = rfc3339(tick).encode()
        commit = await self.pfs.start_commit(repo, CRON_BRANCH)
        try:
            writer = FileWriter(self.store)
            refs = await writer.write_file(_one(data))
            await writer.flush()
            await self.pfs.put_refs(repo, commit, tick_path(tick, self.incremental), refs)
            await self.pfs.finish_commit(repo, commit)
        except BaseException:
            with contextlib.suppress(PachError):
                await self.pfs.delete_commit(repo, commit)
            raise
        _log.info("cron tick", pipeline=self.pipeline, repo=repo, time=rfc3339(tick))


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


@dataclass
class _Running:
    version: int
    loops: list[ResumingTask]

    async def stop(self) -> None:
        await asyncio.gather(*(loop.stop() for loop in self.loops))


@dataclass
class CronTicks:
    """Runs the tick loops of every running pipeline with cron inputs."""

    docs: DocumentStore
    pfs: Pfs
    store: ObjectStore
    resync_s: float = 5.0
    clock: Clock = _utc_now
    gate: ReactionGate | None = None
    _running: dict[str, _Running] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _resync: ResumingTask | None = None

    async def start(self) -> None:
        await self.resync()
        if self._resync is None:
            self._resync = ResumingTask("pps cron resync", self._resync_forever)
            self._resync.start()

    async def stop(self) -> None:
        if self._resync is not None:
            await self._resync.stop()
            self._resync = None
        async with self._lock:
            for running in self._running.values():
                await running.stop()
            self._running.clear()

    def running(self) -> dict[str, int]:
        """Pipelines whose ticks run, with the pipeline version they follow."""
        return {name: r.version for name, r in self._running.items()}

    async def sync(self, name: str) -> None:
        """Start, restart or stop ``name``'s ticks to match the read model."""
        record = await get_pipeline(self.docs, name)
        async with self._lock:
            await self._apply(name, record)

    async def resync(self) -> None:
        records = {r.name: r async for r in list_pipelines(self.docs)}
        async with self._lock:
            for name in set(self._running) | set(records):
                await self._apply(name, records.get(name))

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.resync_s)
            await self.resync()

    async def _apply(self, name: str, record: PipelineRecord | None) -> None:
        crons = [] if record is None or record.stopped else cron_inputs(record.spec.input)
        running = self._running.get(name)
        if running is not None:
            if crons and record is not None and running.version == record.version:
                return
            await running.stop()
            del self._running[name]
        if not crons or record is None:
            return
        loops = []
        for cron in crons:
            ticks = CronInputTicks(
                name, cron, record.spec.incremental, self.pfs, self.store, self.clock, self.gate
            )
            loop = ResumingTask(f"pps cron {name}/{cron.name}", ticks.run)
            loop.start()
            loops.append(loop)
        self._running[name] = _Running(record.version, loops)
        _log.info("cron ticks started", pipeline=name, inputs=[c.name for c in crons])
