"""The pipeline masters: one task per pipeline runs its jobs, one at a time.

``Master`` supervises: it keeps a ``PipelineMaster`` task for every pipeline
of the ``pipelines`` read model (started for new ones, stopped for deleted
ones). Tasks wake on the events — a plain NATS subscription on ``ev.pps.>``
and ``ev.pfs.>`` — and look again a few times shortly after one (the read
models apply it a moment later); every decision is taken on the read models
and aggregates. While nothing happens they sleep: a slow safety-net sweep
(``SWEEP_S``) covers a wakeup that was lost (a hint published while this
process was down or disconnected).

A ``PipelineMaster``, while its pipeline exists:

- stopped: its workers are stopped, it waits (a running job resumes later);
- no unfinished job: workers kept (``standby``: stopped, state STANDBY);
- else it takes the oldest unfinished job whose parent job (the job of the
  output commit's parent) is not unfinished, and runs it (``JobRun``).

Running a job is ``services.pps.app.job_run``; one master per pipeline
across pps replicas is ``services.pps.adapters.leases``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from libs.api.pps import pps_pb2 as pps
from libs.errors import PachError
from libs.readmodels import Document
from libs.restore_gate import ReactionGate
from services.pps.adapters import jobs_view as view
from services.pps.adapters import work_queue
from services.pps.adapters.leases import Leases
from services.pps.adapters.pipelines_view import get_pipeline, list_pipelines
from services.pps.app.job_run import TRANSIENT, JobGone, JobRun, MasterDeps
from services.pps.app.workers import WorkerPool, worker_count
from services.pps.domain import pipelines as pipeline_domain

_log = structlog.get_logger("pps.master")

# After a hint, the masters look again after each of these delays (the read
# models apply an event a moment after it is published).
HINT_AGAIN_S = (0.01, 0.03, 0.1)
# Without any event, the supervisor and each idle pipeline master look again
# after this long: only a safety net for a lost wakeup, not how they learn of
# work.
SWEEP_S = 30.0


# --- one pipeline ---------------------------------------------------------------------


@dataclass
class PipelineMaster:
    deps: MasterDeps
    name: str
    pool: WorkerPool
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    taken_up: set[str] = field(default_factory=set)
    gate: ReactionGate | None = None  # no step while a restore runs

    async def run(self) -> None:
        """Run the pipeline while this replica holds its lease (always,
        without leases); give the workers up while another one does."""
        leases = self.deps.leases
        try:
            while True:
                if leases is not None and not await self._hold(leases):
                    await self.stop_all()
                    # Take over soon after the holder's lease expires.
                    await self.pause(leases.ttl / 2)
                    if await get_pipeline(self.deps.docs, self.name) is None:
                        return
                    continue
                work = asyncio.create_task(self.work(), name=f"pps master {self.name} work")
                waits: set[asyncio.Task[None]] = {work}
                if leases is not None:
                    waits.add(asyncio.create_task(self.heartbeat(leases)))
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in waits:
                        task.cancel()
                    await asyncio.gather(*waits, return_exceptions=True)
                if work.done() and not work.cancelled() and work.exception() is None:
                    return  # the pipeline is gone
                _log.info("pipeline lease lost", pipeline=self.name)
                await self.stop_all()
        finally:
            await self.stop_all()
            if leases is not None:
                await leases.release(self.name)

    async def _hold(self, leases: Leases) -> bool:
        """Take or refresh the lease, retrying while the key-value store does
        not answer (a NATS node failing over): the master never dies of it."""
        backoff = 0.5
        while True:
            try:
                return await leases.hold(self.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("pipeline lease unreachable", pipeline=self.name, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)

    async def stop_all(self) -> None:
        """Stop the pipeline's workers and its service (if it has one)."""
        await self.pool.stop()
        if self.deps.services is not None:
            await self.deps.services.stop(self.name)

    async def heartbeat(self, leases: Leases) -> None:
        """Keep the lease; return when it is lost."""
        while True:
            await asyncio.sleep(leases.ttl / 4)
            if not await leases.hold(self.name):
                return

    async def work(self) -> None:
        backoff = 0.5
        while True:
            try:
                if not await self.step():
                    return
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except JobGone as gone:
                _log.info("job dropped", pipeline=self.name, why=str(gone))
                await work_queue.purge(self.deps.js, self.name)
            except Exception as exc:
                _log.warning("pipeline master failed", pipeline=self.name, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(30.0, backoff * 2)

    async def pause(self, longest: float = SWEEP_S) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), longest)
        self.wake.clear()

    async def set_state(self, state: int, reason: str = "") -> None:
        await self.deps.pipelines.run_as(self.name, pipeline_domain.set_state(state, reason))

    async def step(self) -> bool:
        """One look at the pipeline; False once it is gone."""
        if self.gate is not None:
            await self.gate.wait_open()
        record = await get_pipeline(self.deps.docs, self.name)
        if record is None:
            return False
        if record.stopped:
            await self.stop_all()
            await self.pause()
            return True
        # A service runs in pps itself (``ServiceHost``): no workers.
        service = record.spec.HasField("service")
        workers = 0 if service else worker_count(record.spec.parallelism_spec)
        job = await self.next_job()
        if job is None:
            if record.spec.standby:
                await self.stop_all()
                await self.set_state(pps.PIPELINE_STANDBY)
            else:
                await self.pool.scale(workers)
                await self.set_state(pps.PIPELINE_RUNNING)
            await self.pause()
            return True
        await self.pool.scale(workers)
        if self.pool.failure:
            await self.set_state(pps.PIPELINE_FAILURE, self.pool.failure)
        else:
            await self.set_state(pps.PIPELINE_RUNNING)
        run = JobRun(self.deps, record, job["id"], self.wake, self.pool, job["id"] in self.taken_up)
        self.taken_up.add(job["id"])
        try:
            await run.run()
        except PachError as err:
            if isinstance(err, TRANSIENT):
                raise  # retried by run(), with backoff
            # Nothing a retry would change (a bad input, a file/directory
            # conflict between datum outputs, ...): the job fails with it.
            state = await run.state()
            if not state.finished:
                await run.fail(state, str(err))
        return True

    async def next_job(self) -> Document | None:
        """The oldest unfinished job whose parent job is not unfinished."""
        async for doc in view.unfinished_jobs(self.deps.docs, self.name):
            parent = doc["parent_job"]
            if parent:
                pdoc = await view.get_job(self.deps.docs, parent)
                if pdoc is not None and not pdoc["done"]:
                    continue
            return doc
        return None


# --- the supervisor -------------------------------------------------------------------


@dataclass
class Master:
    deps: MasterDeps
    nc: Client
    recheck: float = SWEEP_S
    gate: ReactionGate | None = None  # masters take no job while a restore runs
    _runners: dict[str, tuple[PipelineMaster, asyncio.Task[None]]] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _subs: list[Subscription] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _again: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        for subject in ("ev.pps.>", "ev.pfs.>"):
            self._subs.append(await self.nc.subscribe(subject, cb=self._hint))
        self._task = asyncio.create_task(self._supervise(), name="pps master")

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        if self._again is not None:
            self._again.cancel()
            self._again = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._stop_runners(list(self._runners))

    async def poke(self, pipeline: str = "") -> None:
        """Look again now (e.g. told by a pipeline command)."""
        self._wake.set()
        for master, _ in self._runners.values():
            master.wake.set()

    async def _hint(self, msg: Msg) -> None:
        if msg.subject.startswith("ev.pps.pipeline."):
            self._wake.set()
        self._wake_runners()
        # The read models apply the event a moment after it is published:
        # look once more shortly after (one pending look at a time).
        if self._again is None:
            self._again = asyncio.get_running_loop().call_later(
                HINT_AGAIN_S[0], self._wake_again, 1
            )

    def _wake_again(self, step: int) -> None:
        self._again = None
        self._wake.set()
        self._wake_runners()
        if step < len(HINT_AGAIN_S):
            delay = HINT_AGAIN_S[step] - HINT_AGAIN_S[step - 1]
            self._again = asyncio.get_running_loop().call_later(delay, self._wake_again, step + 1)

    def _wake_runners(self) -> None:
        for master, _ in self._runners.values():
            master.wake.set()

    async def _supervise(self) -> None:
        while True:
            try:
                names = {r.name async for r in list_pipelines(self.deps.docs)}
                gone = [n for n in self._runners if n not in names]
                await self._stop_runners(gone)
                for name in gone:  # chunks still queued for it go too
                    await work_queue.purge(self.deps.js, name)
                    await work_queue.delete_consumer(self.deps.js, name)
                for name in names:
                    running = self._runners.get(name)
                    if running is None or running[1].done():
                        master = PipelineMaster(
                            self.deps, name, self.deps.pools(name), gate=self.gate
                        )
                        task = asyncio.create_task(master.run(), name=f"pps master {name}")
                        task.add_done_callback(self._master_ended)
                        self._runners[name] = (master, task)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("master supervisor failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.recheck)
            self._wake.clear()

    def _master_ended(self, task: asyncio.Task[None]) -> None:
        """A pipeline's master ended: look at once (it is started again
        unless its pipeline is gone), not at the next sweep."""
        if not task.cancelled() and task.exception() is not None:
            _log.warning(
                "pipeline master ended", task=task.get_name(), error=repr(task.exception())
            )
        self._wake.set()

    async def _stop_runners(self, names: Sequence[str]) -> None:
        tasks = []
        for name in names:
            _, task = self._runners.pop(name)
            task.cancel()
            tasks.append(task)
        await asyncio.gather(*tasks, return_exceptions=True)
