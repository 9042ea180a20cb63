"""Running one job (crash-safe: every step can be repeated after a restart):
wait for its input commits to finish; enumerate its datums; skip those
processed under the pipeline's salt by other jobs (the ``processed``
index); ``JobStarted`` (total, skipped, chunk count); publish the to-do
datums in chunks (``services.pps.domain.chunks``); wait until every chunk
is reported (or ``job_timeout``); then finish the output commit — empty
when a datum failed, else with the datums' outputs merged in datum order —
record stats, run egress, and ``JobFinished``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from libs.api.events.pps_pb2 import JobInputCommit
from libs.api.internal import pps_work_pb2 as work
from libs.api.pfs import pfs_pb2 as pfs_pb
from libs.api.pps import pps_pb2 as pps
from libs.config import ObjectStoreConfig
from libs.errors import (
    ConcurrencyError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PachError,
    Unavailable,
)
from libs.objects import ObjectStore
from libs.readmodels import Document, DocumentStore
from libs.trees import EMPTY_ROOT, Delete, Put, TreeRoot, build, diff, file_refs
from services.pps.adapters import jobs_view as view
from services.pps.adapters import work_queue
from services.pps.adapters.leases import Leases
from services.pps.adapters.pfs import Pfs
from services.pps.adapters.pipelines_view import PipelineRecord, get_pipeline
from services.pps.app.datum_sets import commit_map, enumerate_datums, enumerate_new_datums
from services.pps.app.egress import egress
from services.pps.app.jobs import JobWriter, input_commit
from services.pps.app.merge import merge_incremental, merge_outputs
from services.pps.app.pipelines import PipelineWriter
from services.pps.app.service import ServiceHost
from services.pps.app.stats import record_stats
from services.pps.app.workers import PoolFactory, WorkerPool, worker_count
from services.pps.domain import jobs as domain
from services.pps.domain import pipelines as pipeline_domain
from services.pps.domain.chunks import chunk_bounds, chunk_count, chunk_of

_log = structlog.get_logger("pps.master")

# A job with at most this many datums to do keeps them from planning to
# publishing (with more, publishing enumerates them again rather than hold them).
CACHED_DATUMS = 10_000


class LogSink(Protocol):
    async def append(self, msg: pps.LogMessage) -> None: ...


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
    # Why a new job of a pipeline may not read its inputs ("" when it may):
    # the pipeline's capability, checked from the local auth view.
    may_read: Callable[[str, list[str]], Awaitable[str]] | None = None
    poll: float = 1.0  # re-check while waiting, without hints
    leases: Leases | None = None  # None: this is the only pps replica
    services: ServiceHost | None = None  # runs service pipelines (None: refused)


TRANSIENT = (Unavailable, DeadlineExceeded, ConcurrencyError)


# Waits before a commit pfs does not know yet is taken for gone.
_NOT_FOUND_RETRIES = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


class JobGone(Exception):
    """The job (or its pipeline) went while it was being run."""


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


# At most this many skip-index documents are asked for at once.
LOOKUPS_AT_ONCE = 64


# --- one job -------------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    """How a job's datums differ from the previous successful job's (a
    single atom input, same salt and spec): the datums whose matched node is
    new or changed, and those of the previous job that are gone or changed."""

    added: list[work.DatumTask]
    removed: list[work.DatumTask]


@dataclass
class Plan:
    """A job's datums as the master cut them."""

    total: int
    # datum id -> (index, output tree); with ``delta``, only the added datums
    # skipped (the unchanged ones are counted in ``unchanged``).
    skipped: dict[str, tuple[int, str]]
    incremental_previous: dict[str, JobInputCommit] | None = None
    # Incremental, or planned from the delta: the datums unchanged since the
    # previous job (skipped, as 1.7 counts them; their output is already in
    # the previous output).
    unchanged: int = 0
    delta: Delta | None = None

    @property
    def skipped_count(self) -> int:
        return len(self.skipped) + self.unchanged

    @property
    def todo(self) -> int:
        return self.total - self.skipped_count


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
            raise JobGone(f"job {self.job} was deleted")
        return state

    async def pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), self.deps.poll)
        self.wake.clear()

    async def inspect_commit(self, repo: str, commit: str) -> pfs_pb.CommitInfo:
        """The commit's info; NotFound only once pfs has said so for a few
        seconds: pfs publishes a commit's events before its own read models
        show them, so a job can be seen before its output commit is."""
        for delay in _NOT_FOUND_RETRIES:
            try:
                return await self.deps.pfs.inspect_commit(repo, commit)
            except NotFound:
                await asyncio.sleep(delay)
        return await self.deps.pfs.inspect_commit(repo, commit)

    async def drop(self, why: str) -> None:
        await self.log(f"dropping job: {why}")
        await self.deps.jobs.run_as(self.job, domain.delete_job(self.job))
        raise JobGone(why)

    # --- the steps ------------------------------------------------------------------

    async def run(self) -> None:
        state = await self.state()
        if state.finished:
            return
        self.salt = state.salt
        try:
            await self.inspect_commit(state.output_repo, state.output_commit)
        except NotFound:
            await self.drop(f"its output commit {state.output_repo}/{state.output_commit} is gone")
        if self.spec.HasField("service"):
            await self.run_service(state)
            return
        if not state.started:
            inputs = await self.wait_inputs(state)
            plan = await self.plan(state, inputs)
            chunks = chunk_count(
                plan.todo, worker_count(self.spec.parallelism_spec), self.spec.chunk_spec.number
            )
            await self.deps.jobs.run_as(
                self.job,
                domain.start_job(self.job, plan.total, plan.skipped_count, chunks, inputs),
            )
            await self.log(
                f"started: {plan.total} datums, {plan.skipped_count} skipped, "
                f"{plan.todo} to process in {chunks} chunks"
            )
            if plan.delta is not None:
                await self.log(
                    f"planned from the input's diff against the previous job: "
                    f"{len(plan.delta.added)} datums new or changed, "
                    f"{len(plan.delta.removed)} gone or changed"
                )
        else:
            if not self.taken_up:
                await self.deps.jobs.run_as(self.job, domain.restart_job(self.job))
                await self.log("taken up again after a restart")
            plan = await self.plan(state, list(state.inputs))
            if plan.total != state.total or plan.skipped_count != state.skipped:
                await self.log(
                    f"datums changed since the job started ({state.total}/{state.skipped} "
                    f"-> {plan.total}/{plan.skipped_count} total/skipped)"
                )
        started = time.monotonic()
        state = await self.wait_chunks(plan, started)
        if state.finished:
            return
        await self.finish(state, plan)

    # --- service pipelines ------------------------------------------------------------

    async def newer_job(self) -> bool:
        """Whether an unfinished job of the pipeline came after this one."""
        async for doc in view.unfinished_jobs(self.deps.docs, self.record.name):
            if doc["id"] != self.job:
                return True
        return False

    async def service_datum(self, inputs: Sequence[JobInputCommit]) -> work.DatumTask:
        tasks: list[work.DatumTask] = []
        async for task in enumerate_datums(
            self.deps.store, self.spec.input, commit_map(inputs), self.salt
        ):
            tasks.append(task)
            if len(tasks) > 1:
                break
        if len(tasks) != 1:
            raise InvalidArgument(
                f"services must have a single datum: this job's input has "
                f"{'more than one' if tasks else 'none'} (use glob '/')",
                job=self.job,
            )
        return tasks[0]

    async def run_service(self, state: domain.Job) -> None:
        """1.7's service pipelines: the newest job's service runs (its job
        stays running); a newer job stops it, and the replaced job succeeds
        with its output commit finished as it is."""
        host = self.deps.services
        name = self.record.name
        if host is None:
            raise FailedPrecondition(f"pipeline {name}: this pps runs no service pipelines")
        if not state.started:
            inputs = await self.wait_inputs(state)
            task = await self.service_datum(inputs)
            await self.deps.jobs.run_as(
                self.job, domain.start_job(self.job, 1, 0, 0, inputs, service=True)
            )
            state = await self.state()
        if await self.newer_job():
            if host.current(name) == self.job:
                await host.stop(name)
            await self.deps.pfs.finish_commit(state.output_repo, state.output_commit)
            await self.deps.jobs.run_as(self.job, domain.finish_job(self.job, pps.JOB_SUCCESS))
            await self.log("service replaced by a newer job")
            return
        if host.current(name) != self.job:
            task = await self.service_datum(list(state.inputs))
            await host.replace(name, self.job, state.output_commit, self.spec, task)
            await self.log(f"service running (internal port {self.spec.service.internal_port})")
        await self.pause()

    async def wait_inputs(self, state: domain.Job) -> list[JobInputCommit]:
        """The job's input commits with their trees, once all are finished."""
        if self.deps.may_read is not None:  # the pipeline's capability
            denial = await self.deps.may_read(self.record.name, [i.repo for i in state.inputs])
            if denial:
                await self.fail(state, denial)
                raise JobGone(denial)
        out = []
        for i in state.inputs:
            done = JobInputCommit()
            done.CopyFrom(i)
            while i.commit:
                try:
                    info = await self.inspect_commit(i.repo, i.commit)
                except NotFound:
                    await self.drop(f"its input commit {i.repo}/{i.commit} is gone")
                if info.HasField("finished"):
                    done.tree = info.tree.hash
                    break
                await self.pause()
                if (await self.state()).finished:
                    raise JobGone("finished while waiting for its inputs")
            out.append(done)
        return out

    async def plan(self, state: domain.Job, inputs: Sequence[JobInputCommit]) -> Plan:
        """Every datum of the job; those processed under the salt by another
        job are skipped (their outputs are reused)."""
        commits = commit_map(inputs)
        if self.spec.incremental:
            # Only the new or changed datums run; 1.7 counts every datum of
            # the job all the same, the unchanged ones as skipped.
            previous = await self.previous_inputs(state)
            new = 0
            async for _ in self.tasks(commits, previous):
                new += 1
            total = 0
            if previous:
                async for _ in enumerate_datums(
                    self.deps.store, self.spec.input, commits, self.salt
                ):
                    total += 1
            total = max(total, new)
            return Plan(total, {}, previous, unchanged=total - new)
        delta = await self.plan_delta(state, commits)
        if delta is not None:
            return delta
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

    async def plan_delta(
        self, state: domain.Job, commits: dict[str, JobInputCommit]
    ) -> Plan | None:
        """The plan from the input's diff against the previous successful
        job's, without listing every datum or reading the whole skip index:
        that job's datums (all processed or skipped under the salt) minus
        those gone or changed are skipped unchanged; each new or changed
        datum is looked up in the skip index. None (plan in full) unless the
        input is a single atom (or cron) input, the previous job ran the same
        spec version under the same salt, and the change is small."""
        spec_input = self.spec.input
        if not (spec_input.HasField("atom") or spec_input.HasField("cron")):
            return None
        prev = await self.previous_success(state)
        if prev is None or prev["salt"] != self.salt:
            return None
        if not self.same_spec(prev, state):
            return None  # another spec may match other datums
        before = {row[0]: input_commit(row) for row in prev["inputs"]}
        if len(commits) != 1:
            return None
        [(name, now)] = commits.items()
        if name not in before or before[name].repo != now.repo or not before[name].tree:
            return None
        prev_total = int(prev["data_total"])
        limit = min(CACHED_DATUMS, max(16, prev_total // 4))
        store = self.deps.store
        added = await _some(
            enumerate_new_datums(store, spec_input, commits, before, self.salt, incremental=False),
            limit,
        )
        if added is None:
            return None
        removed = await _some(
            enumerate_new_datums(store, spec_input, before, commits, self.salt, incremental=False),
            limit,
        )
        if removed is None or len(removed) > prev_total:
            return None
        done = await self.skip_index([t.id for t in added])
        skipped: dict[str, tuple[int, str]] = {}
        todo: list[work.DatumTask] = []
        for task in added:
            tree = done.get(task.id)
            if tree is not None:
                skipped[task.id] = (task.index, tree)
            else:
                todo.append(task)
        self.cached = todo
        unchanged = prev_total - len(removed)
        return Plan(
            unchanged + len(added), skipped, unchanged=unchanged, delta=Delta(added, removed)
        )

    def same_spec(self, prev: Document, state: domain.Job) -> bool:
        """Whether the previous job ``prev`` ran the spec this job runs (its
        version, and this job's, are the pipeline's)."""
        version = self.record.version
        return int(prev["pipeline_version"]) == version and state.pipeline_version == version

    async def skip_index(self, ids: Sequence[str]) -> dict[str, str]:
        """Datum id -> output tree of those of ``ids`` another job processed
        under the salt (the skip index), asked for ``LOOKUPS_AT_ONCE`` at a time."""
        out: dict[str, str] = {}
        docs = self.deps.docs
        for at in range(0, len(ids), LOOKUPS_AT_ONCE):
            batch = ids[at : at + LOOKUPS_AT_ONCE]
            keys = [view.processed_key(self.record.name, self.salt, i) for i in batch]
            found = await asyncio.gather(*(docs.get(view.PROCESSED, k) for k in keys))
            for ident, doc in zip(batch, found, strict=True):
                if doc is not None and doc["job"] != self.job:
                    out[ident] = doc["output_tree"]
        return out

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

    def todo_tasks(
        self, plan: Plan, commits: dict[str, JobInputCommit]
    ) -> AsyncIterator[work.DatumTask]:
        """The datums the job processes, in datum order."""
        if plan.delta is not None:  # its to-do datums were kept by plan
            return _replay([t for t in plan.delta.added if t.id not in plan.skipped])
        return self._unskipped(self.tasks(commits, plan.incremental_previous), plan)

    async def _unskipped(
        self, tasks: AsyncIterator[work.DatumTask], plan: Plan
    ) -> AsyncIterator[work.DatumTask]:
        async with aclosing(tasks):  # type: ignore[type-var]
            async for task in tasks:
                if task.id not in plan.skipped:
                    yield task

    async def previous_inputs(self, state: domain.Job) -> dict[str, JobInputCommit]:
        parent = await self.previous_success(state)
        if parent is None:
            return {}
        return {row[0]: input_commit(row) for row in parent["inputs"]}

    async def previous_success(self, state: domain.Job) -> Document | None:
        doc = await view.get_job(self.deps.docs, self.job)
        if doc is None:
            raise JobGone(f"job {self.job} is not in the read model")
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
        commits = commit_map(state.inputs)
        bounds = chunk_bounds(plan.todo, state.chunks)
        current: list[work.DatumTask] = []
        current_chunk = -1
        ordinal = 0
        async for task in self.todo_tasks(plan, commits):
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
                raise JobGone(f"pipeline {self.record.name} was deleted")
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
        await self.deps.jobs.run_as(self.job, domain.finish_job(self.job, pps.JOB_FAILURE, reason))
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
                await self.deps.jobs.run_as(
                    self.job, domain.finish_job(self.job, pps.JOB_FAILURE, reason, root.hash, stats)
                )
                await self.log(f"failed: {reason}")
                return
            await self.log(f"egress: {copied} files copied to {url}")
        await self.deps.jobs.run_as(
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
            paths = ", ".join(view.datum_paths(d)) or "/"
            why = f": {d['reason']}" if d["reason"] else ""
            return f"failed to process datum {d['id']} (inputs {paths}){why}"
        return "a datum failed"

    async def merge(self, plan: Plan) -> TreeRoot:
        if self.spec.incremental:
            parent = await self.previous_success(await self.state())
            base = parent["output_tree"] if parent is not None else ""
            return await build(self.deps.store, base or None, self._overlay(base))
        root = await self.merge_from_previous(plan)
        if root is not None:
            await self.log("output merged from the previous job's output and the changed datums")
            return root
        return await merge_outputs(self.deps.store, self.outputs(plan))

    async def merge_from_previous(self, plan: Plan) -> TreeRoot | None:
        """The output as the previous successful job's output minus the
        outputs of its datums this job does not have, plus those of this
        job's new datums — when the input is a single atom (the datum sets
        differ by what its tree diff shows), the salts and the spec versions
        agree (after an update the datums may differ where the inputs do
        not: another glob), the change is small and ``merge_incremental`` can
        vouch for the result. None: merge in full."""
        spec_input = self.spec.input
        if not (spec_input.HasField("atom") or spec_input.HasField("cron")):
            return None
        state = await self.state()
        prev = await self.previous_success(state)
        if prev is None or prev["salt"] != self.salt or not prev["output_tree"]:
            return None
        if not self.same_spec(prev, state):
            return None  # its datums came from another spec (another glob...)
        store = self.deps.store
        if plan.delta is not None:
            added: list[work.DatumTask] | None = plan.delta.added
            removed: list[work.DatumTask] | None = plan.delta.removed
        else:
            before = {row[0]: input_commit(row) for row in prev["inputs"]}
            now = commit_map(state.inputs)
            limit = max(16, plan.total // 4)
            added = await _some(
                enumerate_new_datums(store, spec_input, now, before, self.salt), limit
            )
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
        if plan.delta is not None:
            async for tree in self.outputs_enumerated():
                yield tree
            return
        skipped = sorted(plan.skipped.values())
        k = 0
        async for d in view.job_datums(self.deps.docs, self.job):
            while k < len(skipped) and skipped[k][0] < int(d["index"]):
                yield skipped[k][1]
                k += 1
            yield d["output_tree"]
        for _, tree in skipped[k:]:
            yield tree

    async def outputs_enumerated(self) -> AsyncIterator[str]:
        """``outputs`` when the plan came from the delta (its skipped datums
        are not all known, nor the datum order of those processed): every
        datum enumerated, its output from this job or from the skip index."""
        state = await self.state()
        mine: dict[str, str] = {}
        async for d in view.job_datums(self.deps.docs, self.job):
            mine[d["id"]] = d["output_tree"]
        done: dict[str, str] = {}
        async for doc in view.processed(self.deps.docs, self.record.name, self.salt):
            if doc["job"] != self.job:
                done[doc["id"]] = doc["output_tree"]
        commits = commit_map(state.inputs)
        async for task in enumerate_datums(self.deps.store, self.spec.input, commits, self.salt):
            tree = mine.get(task.id)
            yield tree if tree is not None else done.get(task.id, "")

    async def _overlay(self, base: str) -> AsyncIterator[Put | Delete]:
        """Incremental: each datum's /pfs/out started as the previous output
        (``base``), so the output is that output with what each datum changed
        of it applied in datum order: the files it wrote or replaced, the
        ones it removed (an unchanged file of one datum does not undo
        another datum's change of it)."""
        store = self.deps.store
        async for d in view.job_datums(self.deps.docs, self.job):
            if not d["output_tree"]:
                continue
            changes = diff(store, base or EMPTY_ROOT, d["output_tree"])
            async for path, before, after in changes:
                if after is not None and not after.is_dir:
                    yield Put(path, await file_refs(store, after))
                elif before is not None and after is None:
                    yield Delete(path)
