"""The worker process of one pipeline: pull a chunk, run its datums, report, ack.

Settings come from the environment: ``PACH_PPS_PIPELINE`` (required),
``PACH_PPS_WORKER_ID`` (default ``<pipeline>-<pid>``),
``PACH_PPS_ACK_WAIT_S`` (default 30), ``PACH_PPS_SCRATCH_DIR`` (default
``<data dir>/pps-scratch``; each worker uses its own directory below it)
and ``PACH_PPS_PARENT_PID`` (optional: the process whose death ends the
worker; default: the parent at start).

For each chunk: the pipeline's spec at the chunk's version (asked of pps,
``qry.pps.GetPipelineSpec``, cached by version), every datum through
``run_datum`` while ``in_progress`` keeps the chunk ours, the results to
pps (``cmd.pps.ChunkDone``, retried while pps is unavailable), then the
ack. A worker that dies before the ack leaves the chunk to be redelivered;
pps applies only the first report of a chunk. The worker exits when its
parent process goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog
from google.protobuf.empty_pb2 import Empty
from nats.js import JetStreamContext

from libs.api.events import pps_pb2 as pachevents
from libs.api.internal import pps_work_pb2 as pachinternal
from libs.api.pps import pps_pb2
from libs.bus import Bus
from libs.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from libs.objects import ObjectStore, open_object_store
from libs.service import ServiceContext, Setup
from services.pps.adapters import work_queue
from services.pps.adapters.logs import LogStore
from services.pps.adapters.secrets import SecretStore, default_root
from services.pps.domain.jobs import FailedDatum, datum_matches
from services.pps.runners.base import Runner
from services.pps.runners.local import LocalRunner
from services.pps.worker.cache import TreeCachingStore
from services.pps.worker.datum import run_datum

SERVICE = "pps-worker"
_RETRY_MIN_S = 0.2
_RETRY_MAX_S = 5.0
_NAK_DELAY_S = 2.0
_PARENT_POLL_S = 1.0
_SPECS_KEPT = 4
_PR_SET_PDEATHSIG = 1
_FINAL = (InvalidArgument, NotFound, FailedPrecondition)  # a report pps will never take

_log = structlog.get_logger(SERVICE)
T = TypeVar("T")


@dataclass(frozen=True)
class WorkerSettings:
    pipeline: str
    worker_id: str
    ack_wait: float
    scratch_root: Path
    # Datums of a chunk run at once: a datum mostly waits for its sandbox
    # to start and end, so two overlap that wait with the next one's setup.
    datums_at_once: int = 2

    @property
    def progress_every(self) -> float:
        """How often ``in_progress`` is sent while a chunk runs."""
        return max(0.2, min(5.0, self.ack_wait / 3))

    @classmethod
    def from_env(cls, data_dir: Path, env: Mapping[str, str] | None = None) -> WorkerSettings:
        e = os.environ if env is None else env
        pipeline = e.get("PACH_PPS_PIPELINE", "")
        if not pipeline:
            raise InvalidArgument("PACH_PPS_PIPELINE must name the pipeline this worker runs")
        work_queue.check_token(pipeline, "pipeline name")
        worker_id = e.get("PACH_PPS_WORKER_ID") or f"{pipeline}-{os.getpid()}"
        root = Path(e.get("PACH_PPS_SCRATCH_DIR") or data_dir / "pps-scratch").absolute()
        at_once = e.get("PACH_PPS_DATUMS_AT_ONCE", "2")
        if not at_once.isdigit() or int(at_once) < 1:
            raise InvalidArgument(
                f"PACH_PPS_DATUMS_AT_ONCE must be a whole number >= 1, got {at_once!r}"
            )
        return cls(pipeline, worker_id, work_queue.ack_wait_from_env(e), root, int(at_once))

    @property
    def own_scratch(self) -> Path:
        return self.scratch_root / self.worker_id


class Worker:
    def __init__(
        self,
        *,
        bus: Bus,
        js: JetStreamContext,
        store: ObjectStore,
        runner: Runner,
        logs: LogStore,
        settings: WorkerSettings,
        secrets: SecretStore | None = None,
    ) -> None:
        self._secrets = secrets
        self._bus = bus
        self._js = js
        self._store = store
        self._runner = runner
        self._logs = logs
        self.settings = settings
        self._specs: dict[int, pps_pb2.CreatePipelineRequest] = {}
        self.chunks_done = 0
        # The datums running now: (job, datum id) -> (task, restart signal).
        self.running: dict[tuple[str, str], tuple[pachinternal.DatumTask, asyncio.Event]] = {}

    async def restart_datum(
        self, req: pps_pb2.RestartDatumRequest, ctx: object = None
    ) -> pachinternal.RestartedDatums | None:
        """restart-datum (``note.pps-worker.RestartDatum``): restart the
        running datums of ``req.job`` that ``req.data_filters`` match (every
        filter names the datum's id, one of its input paths or hashes); say
        which, or nothing when none is running here."""
        hit = [
            datum
            for (job, datum), (task, _) in self.running.items()
            if job == req.job.id and datum_matches(list(req.data_filters), _as_filtered(task))
        ]
        for datum in hit:
            self.running[(req.job.id, datum)][1].set()
        if not hit:
            return None
        return pachinternal.RestartedDatums(worker_id=self.settings.worker_id, datum_ids=hit)

    async def run(self) -> None:
        """Take and process chunks until cancelled; a broken subscription is
        opened again after a pause."""
        s = self.settings
        while True:
            try:
                async for received in work_queue.chunks(self._js, s.pipeline, ack_wait=s.ack_wait):
                    await self.process(received)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS trouble: take up the queue again
                _log.warning("work queue interrupted", pipeline=s.pipeline, error=repr(exc))
                await asyncio.sleep(_RETRY_MAX_S)

    async def process(self, received: work_queue.ReceivedChunk) -> None:
        chunk = received.chunk
        keep = asyncio.create_task(self._keep_alive(received))
        try:
            try:
                report = await self.run_chunk(chunk)
                await self._logs.flush()
                accepted = await self._report(report)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.error(
                    "chunk failed; handing it back",
                    job=chunk.job_id,
                    chunk=chunk.chunk,
                    error=repr(exc),
                )
                await received.nak(_NAK_DELAY_S)
                return
        finally:
            keep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep
        if not accepted:
            _log.warning("pps refused the chunk's report; dropping it", job=chunk.job_id)
        await received.ack()
        self.chunks_done += 1

    async def run_chunk(self, chunk: pachinternal.WorkChunk) -> pachinternal.ChunkDoneRequest:
        spec = await self.spec(chunk.pipeline, chunk.pipeline_version)
        report = pachinternal.ChunkDoneRequest(
            job_id=chunk.job_id, chunk=chunk.chunk, worker_id=self.settings.worker_id
        )
        # Each datum at once has a slot: a directory whose sandbox the
        # runner may keep running for the slot's next datum.
        free: asyncio.Queue[int] = asyncio.Queue()
        for n in range(self.settings.datums_at_once):
            free.put_nowait(n)

        async def one(task: pachinternal.DatumTask) -> pachevents.DatumResult:
            slot = await free.get()
            try:
                key = (chunk.job_id, task.id)
                restart = asyncio.Event()
                self.running[key] = (task, restart)
                try:
                    return await run_datum(
                        task,
                        job_id=chunk.job_id,
                        output_commit=chunk.output_commit,
                        spec=spec,
                        store=self._store,
                        runner=self._runner,
                        scratch_root=self.settings.own_scratch,
                        log=self._logs.append,
                        previous_output=chunk.previous_output,
                        worker_id=self.settings.worker_id,
                        secret_store=self._secrets,
                        restart=restart,
                        slot=self.settings.own_scratch / f"slot-{slot}",
                    )
                finally:
                    self.running.pop(key, None)
            finally:
                free.put_nowait(slot)

        async with asyncio.TaskGroup() as group:
            runs = [group.create_task(one(task)) for task in chunk.datums]
        report.results.extend(run.result() for run in runs)  # in datum order
        return report

    async def spec(self, pipeline: str, version: int) -> pps_pb2.CreatePipelineRequest:
        """The pipeline's spec at ``version`` (pps serves the current one; an
        older chunk runs with the newer spec, as 1.7's workers did)."""
        if version in self._specs:
            return self._specs[version]
        got = await _retrying(
            lambda: self._bus.request(
                "pps",
                "GetPipelineSpec",
                pachinternal.PipelineSpecRequest(pipeline=pps_pb2.Pipeline(name=pipeline)),
                pachinternal.PipelineSpec,
                kind="qry",
            )
        )
        if got.version != version:
            _log.info("chunk of another pipeline version", chunk=version, current=got.version)
        while len(self._specs) >= _SPECS_KEPT:
            self._specs.pop(next(iter(self._specs)))
        self._specs[version] = got.spec
        return got.spec

    async def _report(self, report: pachinternal.ChunkDoneRequest) -> bool:
        """Send the chunk's results until pps takes them; False if it never will."""
        try:
            await _retrying(
                lambda: self._bus.request("pps", "ChunkDone", report, Empty, kind="cmd")
            )
        except _FINAL as err:
            _log.warning("ChunkDone refused", job=report.job_id, chunk=report.chunk, error=str(err))
            return False
        return True

    async def _keep_alive(self, received: work_queue.ReceivedChunk) -> None:
        while True:
            await asyncio.sleep(self.settings.progress_every)
            try:
                await received.in_progress()
            except Exception as exc:  # the ack may still make it; keep trying
                _log.warning("in_progress not sent", error=repr(exc))


def _as_filtered(task: pachinternal.DatumTask) -> FailedDatum:
    """A running datum as restart-datum's filters see it."""
    return FailedDatum(
        task.id, tuple(i.path for i in task.inputs), tuple(i.hash for i in task.inputs)
    )


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` again while pps is unavailable or slow, with backoff."""
    delay = _RETRY_MIN_S
    while True:
        try:
            return await call()
        except (Unavailable, DeadlineExceeded) as err:
            _log.info("pps busy or away; retrying", error=str(err), delay=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, _RETRY_MAX_S)


def die_with_parent(parent: int, env: Mapping[str, str] | None = None) -> None:
    """Have the kernel kill this process when its parent dies
    (PR_SET_PDEATHSIG, SIGKILL: it works even while the worker still waits
    for NATS; an unacked chunk is redelivered and the scratch directory is
    cleared at the next start), and exit now if the parent is already gone:
    the parent read at start (``parent``) or the one pps names in
    ``PACH_PPS_PARENT_PID``."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    named = (os.environ if env is None else env).get("PACH_PPS_PARENT_PID", "")
    expected = int(named) if named.isdigit() else parent
    if os.getppid() != expected:
        _log.warning("parent process gone before the worker started", parent=expected)
        sys.exit(0)


async def watch_parent(stop: asyncio.Event, parent: int) -> None:
    """Set ``stop`` once the process that started this one is gone."""
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells us the parent died
        await asyncio.sleep(_PARENT_POLL_S)
    _log.warning("parent process gone: stopping", parent=parent)
    stop.set()


def _runner(settings: WorkerSettings) -> Runner:
    """The local sandbox, or in a Kubernetes worker pod (``PACH_PPS_RUNNER=pod``)
    the datum driver in the user's container (runners/kubernetes.py)."""
    if os.environ.get("PACH_PPS_RUNNER") == "pod":
        from services.pps.runners.kubernetes import PodRunner

        return PodRunner(Path("/pach/run"), Path("/pach/pfs"))
    # The scratch root is where datums' /pfs live: the runner reaches it
    # for the sandbox uid (its parents may be private) and never shows it.
    return LocalRunner(hide=[settings.scratch_root])


def make_setup(parent: int | None = None) -> Setup:
    """The ``run_service`` setup of a worker whose parent is ``parent``
    (default: the parent when setup runs)."""

    async def setup(ctx: ServiceContext) -> None:
        await start_worker(ctx, os.getppid() if parent is None else parent)

    return setup


async def start_worker(ctx: ServiceContext, parent: int) -> None:
    """Open the worker's resources on ``ctx.stack`` and start its loop and
    the parent watch in the background."""
    settings = WorkerSettings.from_env(ctx.config.data_dir)
    await asyncio.to_thread(shutil.rmtree, settings.own_scratch, True)
    settings.own_scratch.mkdir(parents=True, exist_ok=True)
    store = open_object_store(ctx.config.objects)
    ctx.stack.push_async_callback(store.close)
    await work_queue.ensure_stream(ctx.js)
    logs = LogStore(ctx.js)
    await logs.ensure()
    runner = _runner(settings)
    ctx.stack.callback(runner.close)
    worker = Worker(
        bus=ctx.bus,
        js=ctx.js,
        store=TreeCachingStore(store),
        runner=runner,
        logs=logs,
        settings=settings,
        secrets=SecretStore(default_root(ctx.config.data_dir)),
    )
    await ctx.bus.listen("RestartDatum", pps_pb2.RestartDatumRequest, worker.restart_datum)
    tasks = [
        asyncio.create_task(worker.run(), name="pps-worker"),
        asyncio.create_task(watch_parent(ctx.stopping, parent), name="pps-worker-parent"),
    ]

    async def stop() -> None:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await logs.flush(timeout=2.0)
        await asyncio.to_thread(shutil.rmtree, settings.own_scratch, True)

    ctx.stack.push_async_callback(stop)
    ctx.log.info("pps worker started", pipeline=settings.pipeline, worker=settings.worker_id)


__all__ = [
    "SERVICE",
    "Worker",
    "WorkerSettings",
    "die_with_parent",
    "make_setup",
    "start_worker",
    "watch_parent",
]
