"""The pipeline masters: one task per pipeline runs its jobs, one at a time.

``Master`` supervises: it keeps a ``PipelineMaster`` task for every pipeline
of the ``pipelines`` read model (started for new ones, stopped for deleted
ones). Tasks wake on hints — a plain NATS subscription on ``ev.pps.>`` and
``ev.pfs.>`` — and re-check every few seconds anyway; the hints only make
them quicker, every decision is taken on the read models and aggregates.

A ``PipelineMaster``, while its pipeline exists:

- stopped: its workers are stopped, it waits (a running job resumes later);
- no unfinished job: workers kept (``standby``: stopped, state STANDBY);
- else it takes the oldest unfinished job whose parent job (the job of the
  output commit's parent) is not unfinished, and runs it (``JobRun``).

Running a job (crash-safe: every step can be repeated after a restart):
wait for its input commits to finish; enumerate its datums; skip those
processed under the pipeline's salt by other jobs (the ``processed``
index); ``JobStarted`` (total, skipped, chunk count); publish the to-do
datums in chunks; wait until every chunk is reported (or ``job_timeout``);
then finish the output commit — empty when a datum failed, else with the
datums' outputs merged in datum order — run egress, and ``JobFinished``.
Chunks are cut deterministically (to-do datums ``[c*t//C, (c+1)*t//C)`` for
chunk ``c`` of ``C``), so a master taking a running job up again
(``JobRestarted``) computes the same chunks and publishes only the
unreported ones."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Protocol

import nats.js.errors
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from libs.api.events.pps_pb2 import JobInputCommit
from libs.api.internal import pps_work_pb2 as work
from libs.api.pps import pps_pb2 as pps
from libs.config import ObjectStoreConfig
from libs.errors import ConcurrencyError, DeadlineExceeded, NotFound, PachError, Unavailable
from libs.objects import ObjectStore
from libs.readmodels import Document, DocumentStore
from libs.trees import Put, TreeRoot, build, file_refs, walk
from services.pps.adapters import jobs_view as view
from services.pps.adapters import work_queue
from services.pps.adapters.pfs import Pfs
from services.pps.adapters.pipelines_view import PipelineRecord, get_pipeline, list_pipelines
from services.pps.app.datum_sets import enumerate_datums, enumerate_new_datums
from services.pps.app.egress import egress
from services.pps.app.jobs import JobWriter, input_commit
from services.pps.app.merge import merge_incremental, merge_outputs
from services.pps.app.pipelines import PipelineWriter
from services.pps.app.stats import record_stats
from services.pps.app.workers import PoolFactory, WorkerPool, worker_count
from services.pps.domain import jobs as domain
from services.pps.domain import pipelines as pipeline_domain

_log = structlog.get_logger("pps.master")

# Chunk sizing: about CHUNKS_PER_WORKER chunks per worker, at most
# MAX_CHUNK_DATUMS datums in one, at most MAX_CHUNKS chunks in one job.
CHUNKS_PER_WORKER = 10
MAX_CHUNK_DATUMS = 1000
MAX_CHUNKS = 2000
# After a hint, the masters look again this much later (the read models
# apply an event shortly after it is published).
HINT_AGAIN_S = 0.1
LEASES_BUCKET = "PPS_MASTERS"
# A job with at most this many datums to do keeps them from planning to
# publishing (with more, publishing enumerates them again rather than hold them).
CACHED_DATUMS = 10_000


class LogSink(Protocol):
    async def append(self, msg: pps.LogMessage) -> None: ...


@dataclass
class Leases:
    """One master per pipeline across pps replicas: a lease per pipeline in
    the KV bucket ``PPS_MASTERS`` (entries expire ``ttl`` seconds after their
    last refresh). The holder refreshes it; a replica that finds it taken
    waits; a replica restarted under the same ``owner`` takes its own lease
    back at once."""

    js: JetStreamContext
    owner: str
    ttl: float = 10.0
    replicas: int = 1
    _kv: KeyValue | None = None
    _held: dict[str, int] = field(default_factory=dict)

    async def open(self) -> KeyValue:
        if self._kv is None:
            config = api.KeyValueConfig(
                bucket=LEASES_BUCKET, history=1, ttl=self.ttl, replicas=self.replicas
            )
            try:
                self._kv = await self.js.create_key_value(config)
            except nats.js.errors.BadRequestError:
                self._kv = await self.js.key_value(LEASES_BUCKET)
        return self._kv

    async def hold(self, name: str) -> bool:
        """Take or refresh the lease of pipeline ``name``; False when another
        replica holds it."""
        kv = await self.open()
        owner = self.owner.encode()
        try:
            rev = self._held.get(name)
            if rev is not None:
                self._held[name] = await kv.update(name, owner, last=rev)
                return True
            try:
                self._held[name] = await kv.create(name, owner)
                return True
            except nats.js.errors.KeyWrongLastSequenceError:
                entry = await kv.get(name)
                if entry.value != owner:
                    return False
                self._held[name] = await kv.update(name, owner, last=entry.revision)
                return True
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
            self._held.pop(name, None)
            return False

    async def release(self, name: str) -> None:
        rev = self._held.pop(name, None)
        if rev is None or self._kv is None:
            return
        with contextlib.suppress(Exception):
            await self._kv.delete(name, last=rev)


@dataclass
class MasterDeps:
    docs: DocumentStore
    jobs: JobWriter
    pipelines: PipelineWriter
    pfs: Pfs
    store: ObjectStore
    js: JetStreamContext
    logs: LogSink
    pools: PoolFactory
    s3: ObjectStoreConfig | None = None  # egress credentials
    poll: float = 1.0  # re-check while waiting, without hints
    leases: Leases | None = None  # None: this is the only pps replica


_TRANSIENT = (Unavailable, DeadlineExceeded, ConcurrencyError)


class _Gone(Exception):
    """The job (or its pipeline) went while it was being run."""


# --- chunking (pure) ------------------------------------------------------------------


def chunk_count(todo: int, workers: int, per_chunk: int = 0) -> int:
    """How many chunks ``todo`` datums travel in: ``per_chunk`` datums each
    (``chunk_spec.number``), else spread over ~10 chunks per worker; at most
    ``MAX_CHUNK_DATUMS`` datums per chunk and ``MAX_CHUNKS`` chunks."""
    if todo <= 0:
        return 0
    size = per_chunk if per_chunk > 0 else math.ceil(todo / (max(1, workers) * CHUNKS_PER_WORKER))
    size = max(1, min(size, MAX_CHUNK_DATUMS))
    return min(math.ceil(todo / size), MAX_CHUNKS)


def chunk_bounds(todo: int, chunks: int) -> list[int]:
    """Where each chunk starts among the to-do datums (plus the end)."""
    return [c * todo // chunks for c in range(chunks)] + [todo] if chunks else [0]


def chunk_of(bounds: Sequence[int], ordinal: int) -> int:
    return bisect.bisect_right(bounds, ordinal) - 1


async def _replay(tasks: Sequence[work.DatumTask]) -> AsyncIterator[work.DatumTask]:
    for task in tasks:
        yield task


async def _replay_str(items: Sequence[str]) -> AsyncIterator[str]:
    for item in items:
        if item:
            yield item


async def _some(tasks: AsyncIterator[work.DatumTask], limit: int) -> list[work.DatumTask] | None:
    """The tasks, or None when there are more than ``limit``."""
    out: list[work.DatumTask] = []
    async with aclosing(tasks):  # type: ignore[type-var]
        async for task in tasks:
            out.append(task)
            if len(out) > limit:
                return None
    return out


# --- one job -------------------------------------------------------------------------


@dataclass
class Plan:
    """A job's datums as the master cut them."""

    total: int
    skipped: dict[str, tuple[int, str]]  # datum id -> (index, output tree)
    incremental_previous: dict[str, JobInputCommit] | None = None

    @property
    def todo(self) -> int:
        return self.total - len(self.skipped)


@dataclass
class JobRun:
    deps: MasterDeps
    record: PipelineRecord
    job: str
    wake: asyncio.Event
    pool: WorkerPool
    taken_up: bool  # this process ran the job before (else a restart is recorded)
    published: set[int] = field(default_factory=set)
    salt: str = ""  # the job's (set from its state): datum ids and the skip index use it
    cached: list[work.DatumTask] | None = None  # the to-do datums, kept by plan when few

    @property
    def spec(self) -> pps.CreatePipelineRequest:
        return self.record.spec

    async def log(self, message: str) -> None:
        ts = Timestamp()
        ts.GetCurrentTime()
        line = pps.LogMessage(
            pipeline_name=self.record.name, job_id=self.job, message=message, master=True, ts=ts
        )
        try:
            await self.deps.logs.append(line)
        except PachError as err:
            _log.warning("master log line lost", job=self.job, error=str(err))
        _log.info(message, pipeline=self.record.name, job=self.job)

    async def state(self) -> domain.Job:
        state = await self.deps.jobs.load(self.job)
        if not state.exists:
            raise _Gone(f"job {self.job} was deleted")
        return state

    async def pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), self.deps.poll)
        self.wake.clear()

    async def drop(self, why: str) -> None:
        await self.log(f"dropping job: {why}")
        await self.deps.jobs.run(self.job, domain.delete_job(self.job))
        raise _Gone(why)

    # --- the steps ------------------------------------------------------------------

    async def run(self) -> None:
        state = await self.state()
        if state.finished:
            return
        self.salt = state.salt
        try:
            await self.deps.pfs.inspect_commit(state.output_repo, state.output_commit)
        except NotFound:
            await self.drop(f"its output commit {state.output_repo}/{state.output_commit} is gone")
        if not state.started:
            inputs = await self.wait_inputs(state)
            plan = await self.plan(state, inputs)
            chunks = chunk_count(
                plan.todo, worker_count(self.spec.parallelism_spec), self.spec.chunk_spec.number
            )
            await self.deps.jobs.run(
                self.job,
                domain.start_job(self.job, plan.total, len(plan.skipped), chunks, inputs),
            )
            await self.log(
                f"started: {plan.total} datums, {len(plan.skipped)} skipped, "
                f"{plan.todo} to process in {chunks} chunks"
            )
        else:
            if not self.taken_up:
                await self.deps.jobs.run(self.job, domain.restart_job(self.job))
                await self.log("taken up again after a restart")
            plan = await self.plan(state, list(state.inputs))
            if plan.total != state.total or len(plan.skipped) != state.skipped:
                await self.log(
                    f"datums changed since the job started ({state.total}/{state.skipped} "
                    f"-> {plan.total}/{len(plan.skipped)} total/skipped)"
                )
        started = time.monotonic()
        state = await self.wait_chunks(plan, started)
        if state.finished:
            return
        await self.finish(state, plan)

    async def wait_inputs(self, state: domain.Job) -> list[JobInputCommit]:
        """The job's input commits with their trees, once all are finished."""
        out = []
        for i in state.inputs:
            done = JobInputCommit()
            done.CopyFrom(i)
            while i.commit:
                try:
                    info = await self.deps.pfs.inspect_commit(i.repo, i.commit)
                except NotFound:
                    await self.drop(f"its input commit {i.repo}/{i.commit} is gone")
                if info.HasField("finished"):
                    done.tree = info.tree.hash
                    break
                await self.pause()
                if (await self.state()).finished:
                    raise _Gone("finished while waiting for its inputs")
            out.append(done)
        return out

    async def plan(self, state: domain.Job, inputs: Sequence[JobInputCommit]) -> Plan:
        """Every datum of the job; those processed under the salt by another
        job are skipped (their outputs are reused)."""
        commits = {i.name: i for i in inputs}
        if self.spec.incremental:
            previous = await self.previous_inputs(state)
            total = 0
            async for _ in self.tasks(commits, previous):
                total += 1
            return Plan(total, {}, previous)
        # The skip index of the salt (datums other jobs processed), then one
        # pass over the datums; the to-do ones of a small job are kept for
        # publishing (a big one enumerates them again there).
        done: dict[str, str] = {}
        async for doc in view.processed(self.deps.docs, self.record.name, state.salt):
            if doc["job"] != self.job:
                done[doc["id"]] = doc["output_tree"]
        self.cached = None
        todo: list[work.DatumTask] | None = []
        skipped: dict[str, tuple[int, str]] = {}
        total = 0
        async for task in self.tasks(commits, None):
            total += 1
            tree = done.get(task.id)
            if tree is not None:
                skipped[task.id] = (task.index, tree)
            elif todo is not None:
                todo.append(task)
                if len(todo) > CACHED_DATUMS:
                    todo = None
        self.cached = todo
        return Plan(total, skipped)

    def tasks(
        self, commits: dict[str, JobInputCommit], previous: dict[str, JobInputCommit] | None
    ) -> AsyncIterator[work.DatumTask]:
        if previous is not None:
            return enumerate_new_datums(
                self.deps.store, self.spec.input, commits, previous, self.salt
            )
        if self.cached is not None:
            return _replay(self.cached)
        return enumerate_datums(self.deps.store, self.spec.input, commits, self.salt)

    async def previous_inputs(self, state: domain.Job) -> dict[str, JobInputCommit]:
        parent = await self.previous_success(state)
        if parent is None:
            return {}
        return {row[0]: input_commit(row) for row in parent["inputs"]}

    async def previous_success(self, state: domain.Job) -> Document | None:
        doc = await view.get_job(self.deps.docs, self.job)
        if doc is None:
            raise _Gone(f"job {self.job} is not in the read model")
        return await view.last_success(self.deps.docs, self.record.name, int(doc["created"]))

    async def publish(self, state: domain.Job, plan: Plan) -> None:
        """Publish every pending chunk slot not published by this run yet."""
        wanted: dict[int, list[int]] = {}  # original chunk -> slots carrying it
        for slot in state.pending():
            if slot not in self.published:
                wanted.setdefault(state.source_chunk(slot), []).append(slot)
        if not wanted:
            return
        previous_output = ""
        if self.spec.incremental:
            parent = await self.previous_success(state)
            previous_output = parent["output_tree"] if parent is not None else ""
        commits = {i.name: i for i in state.inputs}
        bounds = chunk_bounds(plan.todo, state.chunks)
        current: list[work.DatumTask] = []
        current_chunk = -1
        ordinal = 0
        async for task in self.tasks(commits, plan.incremental_previous):
            if task.id in plan.skipped:
                continue
            c = chunk_of(bounds, ordinal)
            ordinal += 1
            if c != current_chunk:
                await self._send(state, wanted.get(current_chunk, []), current, previous_output)
                current, current_chunk = [], c
            if c in wanted:
                current.append(task)
        await self._send(state, wanted.get(current_chunk, []), current, previous_output)

    async def _send(
        self,
        state: domain.Job,
        slots: Sequence[int],
        datums: Sequence[work.DatumTask],
        previous_output: str,
    ) -> None:
        for slot in slots:
            chunk = work.WorkChunk(
                job_id=self.job,
                pipeline=self.record.name,
                pipeline_version=state.pipeline_version,
                chunk=slot,
                datums=datums,
                output_commit=state.output_commit,
                previous_output=previous_output,
            )
            await work_queue.publish_chunk(self.deps.js, chunk)
            self.published.add(slot)

    async def wait_chunks(self, plan: Plan, started: float) -> domain.Job:
        """The job's state once every chunk slot is reported (or it finished
        meanwhile, or timed out: then it is finished here)."""
        timeout = self.spec.job_timeout.ToTimedelta().total_seconds()
        while True:
            state = await self.state()
            if state.finished:  # stopped: its chunks still queued go
                await work_queue.purge(self.deps.js, self.record.name)
                return state
            if not state.pending():
                return state
            record = await get_pipeline(self.deps.docs, self.record.name)
            if record is None:
                raise _Gone(f"pipeline {self.record.name} was deleted")
            if record.stopped:
                await self.pool.stop()
            else:
                await self.pool.scale(worker_count(self.spec.parallelism_spec))
                await self.publish(state, plan)
                if self.pool.failure:  # workers crash-looping: the pipeline cannot run
                    decide = pipeline_domain.set_state(pps.PIPELINE_FAILURE, self.pool.failure)
                    await self.deps.pipelines.run_as(self.record.name, decide)
            if timeout and time.monotonic() - started > timeout:
                await work_queue.purge(self.deps.js, self.record.name)
                await self.fail(state, f"job timed out after {timeout:g}s")
                return await self.state()
            await self.pause()

    async def fail(self, state: domain.Job, reason: str) -> None:
        await self.deps.pfs.finish_commit(state.output_repo, state.output_commit, empty=True)
        await self.record_stats(state)
        await self.deps.jobs.run(self.job, domain.finish_job(self.job, pps.JOB_FAILURE, reason))
        await self.log(f"failed: {reason}")

    async def finish(self, state: domain.Job, plan: Plan) -> None:
        state = await self.deps.jobs.settled(self.job)
        doc = await view.get_job(self.deps.docs, self.job)
        stats = view.stats_pb(doc["stats"] if doc is not None else None)
        if state.failed:
            await self.fail(state, await self.failure_reason())
            return
        root = await self.merge(plan)
        if (await self.state()).finished:
            return
        await self.deps.pfs.finish_commit(state.output_repo, state.output_commit, tree=root.hash)
        await self.record_stats(state)
        url = self.spec.egress.URL
        if url:
            try:
                copied = await egress(self.deps.store, root.hash, url, self.deps.s3)
            except Exception as exc:  # any egress failure fails the job, named
                reason = f"egress to {url} failed: {exc}"
                await self.deps.jobs.run(
                    self.job, domain.finish_job(self.job, pps.JOB_FAILURE, reason, root.hash, stats)
                )
                await self.log(f"failed: {reason}")
                return
            await self.log(f"egress: {copied} files copied to {url}")
        await self.deps.jobs.run(
            self.job, domain.finish_job(self.job, pps.JOB_SUCCESS, "", root.hash, stats)
        )
        await self.log(f"succeeded: {root.files} files, {root.size} bytes")

    async def record_stats(self, state: domain.Job) -> None:
        """enable_stats: the job's stats commit on the output repo's stats branch."""
        if not self.spec.enable_stats:
            return

        async def datums() -> AsyncIterator[tuple[str, str]]:
            async for d in view.job_datums(self.deps.docs, self.job):
                yield d["id"], d["stats_tree"]

        await record_stats(
            self.deps.store,
            self.deps.pfs,
            repo=state.output_repo,
            job_id=self.job,
            output_commit=state.output_commit,
            datums=datums(),
        )

    async def failure_reason(self) -> str:
        async for d in view.job_datums(self.deps.docs, self.job, state=pps.FAILED):
            paths = ", ".join(p for p, _ in d["data"]) or "/"
            why = f": {d['reason']}" if d["reason"] else ""
            return f"failed to process datum {d['id']} (inputs {paths}){why}"
        return "a datum failed"

    async def merge(self, plan: Plan) -> TreeRoot:
        if self.spec.incremental:
            return await build(self.deps.store, None, self._overlay())
        root = await self.merge_from_previous(plan)
        if root is not None:
            await self.log("output merged from the previous job's output and the changed datums")
            return root
        return await merge_outputs(self.deps.store, self.outputs(plan))

    async def merge_from_previous(self, plan: Plan) -> TreeRoot | None:
        """The output as the previous successful job's output minus the
        outputs of its datums this job does not have, plus those of this
        job's new datums — when the input is a single atom (the datum sets
        differ by what its tree diff shows), the salts agree, the change is
        small and ``merge_incremental`` can vouch for the result. None: merge
        in full."""
        spec_input = self.spec.input
        if not (spec_input.HasField("atom") or spec_input.HasField("cron")):
            return None
        state = await self.state()
        prev = await self.previous_success(state)
        if prev is None or prev["salt"] != self.salt or not prev["output_tree"]:
            return None
        before = {row[0]: input_commit(row) for row in prev["inputs"]}
        now = {i.name: i for i in state.inputs}
        limit = max(16, plan.total // 4)
        store = self.deps.store
        added = await _some(enumerate_new_datums(store, spec_input, now, before, self.salt), limit)
        removed = await _some(
            enumerate_new_datums(store, spec_input, before, now, self.salt), limit
        )
        if added is None or removed is None:
            return None
        added_trees = []
        for task in added:
            if task.id in plan.skipped:
                added_trees.append(plan.skipped[task.id][1])
                continue
            doc = await view.get_datum(self.deps.docs, self.job, task.id)
            if doc is None:
                return None
            added_trees.append(doc["output_tree"])
        removed_trees = []
        for task in removed:
            key = view.processed_key(self.record.name, self.salt, task.id)
            done = await self.deps.docs.get(view.PROCESSED, key)
            if done is None:
                return None
            removed_trees.append(done["output_tree"])
        return await merge_incremental(
            store, prev["output_tree"], _replay_str(removed_trees), _replay_str(added_trees)
        )

    async def outputs(self, plan: Plan) -> AsyncIterator[str]:
        """Output trees of all the job's datums in datum order: those it
        processed and those it skipped."""
        skipped = sorted(plan.skipped.values())
        k = 0
        async for d in view.job_datums(self.deps.docs, self.job):
            while k < len(skipped) and skipped[k][0] < int(d["index"]):
                yield skipped[k][1]
                k += 1
            yield d["output_tree"]
        for _, tree in skipped[k:]:
            yield tree

    async def _overlay(self) -> AsyncIterator[Put]:
        """Incremental: each datum's /pfs/out started as the previous output,
        so the output is their files, a later datum's version of a path
        replacing an earlier one's."""
        async for d in view.job_datums(self.deps.docs, self.job):
            if not d["output_tree"]:
                continue
            async for path, node in walk(self.deps.store, d["output_tree"]):
                if not node.is_dir:
                    yield Put(path, await file_refs(self.deps.store, node))


# --- one pipeline ---------------------------------------------------------------------


@dataclass
class PipelineMaster:
    deps: MasterDeps
    name: str
    pool: WorkerPool
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    taken_up: set[str] = field(default_factory=set)

    async def run(self) -> None:
        """Run the pipeline while this replica holds its lease (always,
        without leases); give the workers up while another one does."""
        leases = self.deps.leases
        try:
            while True:
                if leases is not None and not await leases.hold(self.name):
                    await self.pool.stop()
                    await self.pause()
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
                await self.pool.stop()
        finally:
            await self.pool.stop()
            if leases is not None:
                await leases.release(self.name)

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
            except _Gone as gone:
                _log.info("job dropped", pipeline=self.name, why=str(gone))
                await work_queue.purge(self.deps.js, self.name)
            except Exception as exc:
                _log.warning("pipeline master failed", pipeline=self.name, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(30.0, backoff * 2)

    async def pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), self.deps.poll * 5)
        self.wake.clear()

    async def set_state(self, state: int, reason: str = "") -> None:
        await self.deps.pipelines.run_as(self.name, pipeline_domain.set_state(state, reason))

    async def step(self) -> bool:
        """One look at the pipeline; False once it is gone."""
        record = await get_pipeline(self.deps.docs, self.name)
        if record is None:
            return False
        if record.stopped:
            await self.pool.stop()
            await self.pause()
            return True
        workers = worker_count(record.spec.parallelism_spec)
        job = await self.next_job()
        if job is None:
            if record.spec.standby:
                await self.pool.stop()
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
            if isinstance(err, _TRANSIENT):
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
    recheck: float = 5.0
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
            self._again = asyncio.get_running_loop().call_later(HINT_AGAIN_S, self._wake_again)

    def _wake_again(self) -> None:
        self._again = None
        self._wake.set()
        self._wake_runners()

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
                        master = PipelineMaster(self.deps, name, self.deps.pools(name))
                        task = asyncio.create_task(master.run(), name=f"pps master {name}")
                        self._runners[name] = (master, task)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("master supervisor failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.recheck)
            self._wake.clear()

    async def _stop_runners(self, names: Sequence[str]) -> None:
        tasks = []
        for name in names:
            _, task = self._runners.pop(name)
            task.cancel()
            tasks.append(task)
        await asyncio.gather(*tasks, return_exceptions=True)
