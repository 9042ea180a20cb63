"""Job commands and queries over the bus: InspectJob, ListJob, DeleteJob,
StopJob, InspectDatum, ListDatum, RestartDatum, GetLogsPage, and the
workers' ChunkDone reports. ``JobWriter`` runs job decisions on the cached
aggregate and waits until the pps projections show them (read-your-writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal, Protocol

from google.protobuf.empty_pb2 import Empty

from libs.api.events.pps_pb2 import JobInputCommit
from libs.api.internal import pps_work_pb2 as work
from libs.api.pfs import pfs_pb2 as pfs_pb
from libs.api.pps import pps_pb2 as pps
from libs.bus import Bus, Context, kind_for
from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.events import AggregateWriter, EventStore, ProjectionRunner
from libs.objects import ObjectStore
from libs.readmodels import Document, DocumentStore
from services.pps.adapters import jobs_view as view
from services.pps.adapters.pfs import Pfs
from services.pps.adapters.pipelines_view import get_pipeline
from services.pps.app.datum_sets import commit_map, enumerate_datums, input_key
from services.pps.domain import jobs as domain

# The bus name of pipeline workers (services.pps.worker.loop.SERVICE).
WORKERS = "pps-worker"
_COMMIT_ID = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_PAGE_SIZE = 100


class LogPages(Protocol):
    async def page(self, request: pps.GetLogsRequest, after: int, limit: int) -> work.LogPage: ...


# --- the writer -----------------------------------------------------------------


class JobWriter(AggregateWriter[domain.Job]):
    """Job decisions on the cached aggregate; with ``wait``, they return once
    the jobs view shows them."""

    @classmethod
    def create(cls, events: EventStore, views: Sequence[ProjectionRunner]) -> JobWriter:
        return cls(events, views, ref=domain.ref, initial=domain.Job, evolve=domain.evolve)


# --- JobInfo / DatumInfo from the read models -----------------------------------------


def _commit(repo: str, commit: str) -> pfs_pb.Commit:
    return pfs_pb.Commit(repo=pfs_pb.Repo(name=repo), id=commit)


def _ts(ns: int, into: object) -> None:
    into.FromNanoseconds(ns)  # type: ignore[attr-defined]


def _fill_input(
    node: pps.Input, commits: dict[str, str], seen: dict[str, int] | None = None
) -> None:
    """The spec's input with each atom/cron input's job commit filled in
    (``commits`` by input key, as ``commit_map``: union members may share a
    name; ``seen`` counts the names met so far, depth-first in spec order)."""
    seen = {} if seen is None else seen
    leaf: pps.AtomInput | pps.CronInput | pps.GitInput | None = None
    if node.HasField("atom"):
        leaf = node.atom
    elif node.HasField("cron"):
        leaf = node.cron
    elif node.HasField("git"):
        leaf = node.git
    if leaf is not None:
        n = seen.get(leaf.name, 0)
        seen[leaf.name] = n + 1
        leaf.commit = commits.get(input_key(leaf.name, n), leaf.commit)
    for child in [*node.cross, *node.union]:
        _fill_input(child, commits, seen)


_SPEC_MESSAGES: tuple[
    Literal[
        "parallelism_spec",
        "egress",
        "service",
        "resource_requests",
        "resource_limits",
        "chunk_spec",
        "datum_timeout",
        "job_timeout",
        "scheduling_spec",
    ],
    ...,
] = (
    "parallelism_spec",
    "egress",
    "service",
    "resource_requests",
    "resource_limits",
    "chunk_spec",
    "datum_timeout",
    "job_timeout",
    "scheduling_spec",
)


def job_info(doc: Document, spec: pps.CreatePipelineRequest | None) -> pps.JobInfo:
    info = pps.JobInfo(
        job=pps.Job(id=doc["id"]),
        pipeline=pps.Pipeline(name=doc["pipeline"]),
        pipeline_version=int(doc["pipeline_version"]),
        output_commit=pfs_pb.Commit(
            repo=pfs_pb.Repo(name=doc["output_repo"]), id=doc["output_commit"]
        ),
        output_repo=pfs_pb.Repo(name=doc["output_repo"]),
        output_branch=doc["output_branch"],
        state=doc["state"],
        reason=doc["reason"],
        restart=int(doc["restart"]),
        data_processed=int(doc["data_processed"]),
        data_skipped=int(doc["data_skipped"]),
        data_total=int(doc["data_total"]),
        data_failed=int(doc["data_failed"]),
        stats=view.stats_pb(doc["stats"]),
        salt=doc["salt"],
    )
    if doc["parent_job"]:
        info.parent_job.id = doc["parent_job"]
    if doc["stats_commit"]:
        info.stats_commit.CopyFrom(
            pfs_pb.Commit(repo=pfs_pb.Repo(name=doc["output_repo"]), id=doc["stats_commit"])
        )
    _ts(int(doc["created_ns"]), info.started)  # 1.7: when the job was created
    if doc["finished_ns"]:
        _ts(int(doc["finished_ns"]), info.finished)
    if spec is not None:
        info.transform.CopyFrom(spec.transform)
        # Only what the spec sets: an unset field stays unset (1.7's nil).
        for field in _SPEC_MESSAGES:
            if spec.HasField(field):
                getattr(info, field).CopyFrom(getattr(spec, field))
        info.input.CopyFrom(spec.input)
        inputs = commit_map(input_commit(i) for i in doc["inputs"])
        _fill_input(info.input, {key: i.commit for key, i in inputs.items()})
        info.incremental = spec.incremental
        info.enable_stats = spec.enable_stats
        info.batch = spec.batch
        info.datum_tries = spec.datum_tries
        info.pod_spec = spec.pod_spec
    return info


def datum_info(doc: Document, job: str) -> pps.DatumInfo:
    info = pps.DatumInfo(
        datum=pps.Datum(id=doc["id"], job=pps.Job(id=job)),
        state=doc["state"],
        stats=view.stats_pb(doc.get("stats")),
    )
    for _name, repo, commit, path, hash_hex in doc.get("inputs", []):
        file = pfs_pb.File(path=path)
        if repo or commit:  # a datum from a v1 log knows only path and hash
            file.commit.CopyFrom(_commit(repo, commit))
        info.data.append(pfs_pb.FileInfo(file=file, hash=_hash_bytes(hash_hex)))
    return info


def input_commit(row: Sequence[str]) -> JobInputCommit:
    """A job document's input row as a ``JobInputCommit``."""
    name, repo, branch, commit, tree = row
    return JobInputCommit(name=name, repo=repo, branch=branch, commit=commit, tree=tree)


def _hash_bytes(value: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        return value.encode()


def unprocessed_info(
    task: work.DatumTask, job: str, state: pps.DatumState.ValueType
) -> pps.DatumInfo:
    """A datum the job has no result of: SKIPPED, or STARTING (to do)."""
    info = pps.DatumInfo(datum=pps.Datum(id=task.id, job=pps.Job(id=job)), state=state)
    for d in task.inputs:
        info.data.append(
            pfs_pb.FileInfo(
                file=pfs_pb.File(
                    commit=pfs_pb.Commit(repo=pfs_pb.Repo(name=d.repo), id=d.commit), path=d.path
                ),
                hash=_hash_bytes(d.hash),
            )
        )
    return info


def _job_name(job: pps.Job) -> str:
    if not job.id:
        raise InvalidArgument("a job id is required")
    return job.id


# --- the handlers ---------------------------------------------------------------------


@dataclass
class Jobs:
    writer: JobWriter
    docs: DocumentStore
    pfs: Pfs
    logs: LogPages
    store: ObjectStore
    block_for: float = 8.0  # InspectJob(block_state) waits this long at most per request
    # How long restart-datum waits for the workers' answers.
    survey_s: float = 1.0
    bus: Bus | None = None

    async def register(self, bus: Bus) -> None:
        self.bus = bus
        handlers = (
            ("InspectJob", pps.InspectJobRequest, self.inspect_job),
            ("ListJob", pps.ListJobRequest, self.list_job),
            ("DeleteJob", pps.DeleteJobRequest, self.delete_job),
            ("StopJob", pps.StopJobRequest, self.stop_job),
            ("InspectDatum", pps.InspectDatumRequest, self.inspect_datum),
            ("ListDatum", pps.ListDatumRequest, self.list_datum),
            ("RestartDatum", pps.RestartDatumRequest, self.restart_datum),
            ("GetLogsPage", work.GetLogsPageRequest, self.get_logs_page),
            ("ChunkDone", work.ChunkDoneRequest, self.chunk_done),
        )
        for name, request_type, handler in handlers:
            await bus.serve(name, request_type, handler, kind=kind_for(name))  # type: ignore[arg-type]

    async def _doc(self, job: str) -> Document:
        doc = await view.get_job(self.docs, job)
        if doc is None:
            raise NotFound(f"job {job} not found", job=job)
        return doc

    async def _info(self, doc: Document) -> pps.JobInfo:
        record = await get_pipeline(self.docs, doc["pipeline"])
        return job_info(doc, record.spec if record is not None else None)

    async def _by_output(self, commit: pfs_pb.Commit, ctx: Context) -> Document:
        repo, ref = commit.repo.name, commit.id
        if not repo or not ref:
            raise InvalidArgument("an output commit needs a repo and a commit id")
        doc = await view.job_by_output(self.docs, repo, ref)
        if doc is None and not _COMMIT_ID.match(ref):
            info = await self.pfs.as_principal(ctx.principal).inspect_commit(repo, ref)
            doc = await view.job_by_output(self.docs, repo, info.commit.id)
        if doc is None:
            raise NotFound(f"no job for output commit {repo}/{ref}", repo=repo, commit=ref)
        return doc

    async def inspect_job(self, req: pps.InspectJobRequest, ctx: Context) -> pps.JobInfo:
        if req.job.id:
            doc = await self._doc(req.job.id)
        elif req.HasField("output_commit"):
            doc = await self._by_output(req.output_commit, ctx)
        else:
            raise InvalidArgument("InspectJob needs a job id or an output commit")
        if req.block_state:
            deadline = time.monotonic() + self.block_for
            delay = 0.02
            while not doc["done"] and time.monotonic() < deadline:
                await asyncio.sleep(delay)
                delay = min(0.25, delay * 2)
                doc = await self._doc(doc["id"])
        return await self._info(doc)

    async def list_job(self, req: pps.ListJobRequest, ctx: Context) -> pps.JobInfos:
        inputs = []
        for c in req.input_commit:
            ref = c.id
            if not _COMMIT_ID.match(ref):  # a branch or ancestry reference
                info = await self.pfs.as_principal(ctx.principal).inspect_commit(c.repo.name, ref)
                ref = info.commit.id
            inputs.append((c.repo.name, ref))
        output = None
        if req.HasField("output_commit"):
            repo, ref = req.output_commit.repo.name, req.output_commit.id
            if ref and not _COMMIT_ID.match(ref):  # repo/branch: its head, as 1.7
                info = await self.pfs.as_principal(ctx.principal).inspect_commit(repo, ref)
                ref = info.commit.id
            output = (repo, ref)
        out = pps.JobInfos()
        specs: dict[str, pps.CreatePipelineRequest | None] = {}
        async for doc in view.list_jobs(self.docs, req.pipeline.name, inputs, output):
            name = doc["pipeline"]
            if name not in specs:
                record = await get_pipeline(self.docs, name)
                specs[name] = record.spec if record is not None else None
            out.job_info.append(job_info(doc, specs[name]))
        return out

    async def delete_job(self, req: pps.DeleteJobRequest, ctx: Context) -> Empty:
        job = _job_name(req.job)
        doc = await self._doc(job)
        if not doc["done"]:
            await self._kill(doc, "job deleted", ctx)
        await self.writer.run_as(
            job, domain.delete_job(job), principal=ctx.principal, correlation_id=ctx.request_id
        )
        return Empty()

    async def stop_job(self, req: pps.StopJobRequest, ctx: Context) -> Empty:
        job = _job_name(req.job)
        doc = await self._doc(job)
        await self._kill(doc, "job stopped", ctx)
        return Empty()

    async def _kill(self, doc: Document, reason: str, ctx: Context) -> None:
        """KILLED, then its output commit finished empty (so that nothing
        downstream waits on it)."""
        job = doc["id"]
        await self.writer.run_as(
            job,
            domain.finish_job(job, pps.JOB_KILLED, reason),
            principal=ctx.principal,
            correlation_id=ctx.request_id,
        )
        with contextlib.suppress(NotFound):  # the output commit went already
            await self.pfs.finish_commit(doc["output_repo"], doc["output_commit"], empty=True)

    async def inspect_datum(self, req: pps.InspectDatumRequest, ctx: Context) -> pps.DatumInfo:
        job = _job_name(req.datum.job)
        if not req.datum.id:
            raise InvalidArgument("a datum id is required")
        job_doc = await self._doc(job)
        doc = await view.get_datum(self.docs, job, req.datum.id)
        if doc is not None:
            return datum_info(doc, job)
        # Skipped: processed (under the same salt) by an earlier job.
        key = view.processed_key(job_doc["pipeline"], job_doc["salt"], req.datum.id)
        done = await self.docs.get(view.PROCESSED, key)
        earlier = await view.get_datum(self.docs, done["job"], req.datum.id) if done else None
        if earlier is None:
            raise NotFound(f"datum {req.datum.id} of job {job} not found", job=job)
        info = datum_info(earlier, job)
        info.state = pps.SKIPPED
        return info

    async def list_datum(self, req: pps.ListDatumRequest, ctx: Context) -> pps.ListDatumResponse:
        """The job's datums in datum order, paged (``page_size`` 0: all).
        Once the job has started its datums are enumerated again from its
        input trees (as 1.7 does): those it processed show their result,
        those an earlier job processed are SKIPPED, the rest STARTING."""
        job = _job_name(req.job)
        doc = await self._doc(job)
        if req.page_size < 0 or req.page < 0:
            raise InvalidArgument("page and page_size must not be negative")
        record = await get_pipeline(self.docs, doc["pipeline"])
        enumerate_all = doc["started_ns"] and record is not None
        if enumerate_all:
            total = int(doc["data_total"])
        else:
            total = await self.docs.count(view.DATUMS, where={"job": job})
        size = int(req.page_size)
        resp = pps.ListDatumResponse(page=req.page)
        if size:
            resp.total_pages = max(1, math.ceil(total / size))
        first = req.page * size
        last = first + size if size else None
        if enumerate_all and record is not None:
            # By key, not name: union members may share a name.
            commits = commit_map(input_commit(i) for i in doc["inputs"])
            tasks = enumerate_datums(self.store, record.spec.input, commits, doc["salt"])
            async with aclosing(tasks):  # type: ignore[type-var]
                async for task in tasks:
                    if last is not None and task.index >= last:
                        break
                    if task.index < first:
                        continue
                    found = await view.get_datum(self.docs, job, task.id)
                    if found is not None:
                        resp.datum_infos.append(datum_info(found, job))
                        continue
                    key = view.processed_key(doc["pipeline"], doc["salt"], task.id)
                    earlier = await self.docs.get(view.PROCESSED, key)
                    skipped = earlier is not None and earlier["job"] != job
                    state = pps.SKIPPED if skipped else pps.STARTING  # not processed yet
                    resp.datum_infos.append(unprocessed_info(task, job, state))
            return resp
        i = 0
        async for datum in view.job_datums(self.docs, job):
            if last is not None and i >= last:
                break
            if i >= first:
                resp.datum_infos.append(datum_info(datum, job))
            i += 1
        return resp

    async def restart_datum(
        self, req: pps.RestartDatumRequest, ctx: Context
    ) -> work.RestartDatumResult:
        """restart-datum as Pachyderm 1.7: the matching datums the job's
        workers are running stop and run again (the workers answer a survey,
        ``note.pps-worker.RestartDatum``); here also the matching failed
        datums of the still-running job run again. The reply says which; a
        finished job, or nothing matching, is FailedPrecondition."""
        job = _job_name(req.job)
        filters = list(req.data_filters)
        state = await self.writer.load(job)
        domain.require(state, job)
        if state.finished:
            raise FailedPrecondition(
                f"job {job} has finished ({domain.state_name(state.state)}): the datums of a "
                "finished job are not restarted; commit new input or update the pipeline "
                "with --reprocess to run them again",
                job=job,
            )
        result = work.RestartDatumResult()
        if self.bus is not None:
            answers = await self.bus.survey(
                WORKERS,
                "RestartDatum",
                req,
                work.RestartedDatums,
                window=self.survey_s,
                principal=ctx.principal,
            )
            result.running.extend(sorted({d for a in answers for d in a.datum_ids}))
        failed = domain.failed_matching(state, filters)
        if failed:
            await self.writer.run_as(
                job,
                domain.restart_datums(job, filters),
                principal=ctx.principal,
                correlation_id=ctx.request_id,
            )
            result.failed.extend(failed)
        if not result.running and not result.failed:
            raise FailedPrecondition(
                f"job {job} has no running or failed datum matching {filters}: nothing restarted",
                job=job,
            )
        return result

    async def get_logs_page(self, req: work.GetLogsPageRequest, ctx: Context) -> work.LogPage:
        if req.limit < 0:
            raise InvalidArgument(f"limit must not be negative, got {req.limit}")
        return await self.logs.page(req.request, req.after, req.limit or 1000)

    async def chunk_done(self, req: work.ChunkDoneRequest, ctx: Context) -> Empty:
        if not req.job_id:
            raise InvalidArgument("ChunkDone needs a job id")
        if req.chunk < 0:
            raise InvalidArgument(f"chunk must not be negative, got {req.chunk}")
        await self.writer.run_as(
            req.job_id,
            domain.record_chunk(req.job_id, req.chunk, list(req.results), req.worker_id),
            principal=ctx.principal,
            correlation_id=ctx.request_id,
            wait=False,
        )
        return Empty()
