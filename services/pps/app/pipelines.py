"""Pipeline commands and queries: CreatePipeline (and update-pipeline),
InspectPipeline, ListPipeline, GetPipelineSpec, DeletePipeline,
StartPipeline, StopPipeline, DeleteAll.

Commands append to the pipeline's aggregate (``ev.pps.pipeline.<name>``)
and return once the ``pipelines`` read model shows the change
(read-your-writes). Everything that can be checked is checked before
anything is created; what a failed create-pipeline did create (its output
repo, its cron repos) is deleted again."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from google.protobuf.empty_pb2 import Empty
from google.protobuf.timestamp_pb2 import Timestamp

from libs.api.internal import pps_work_pb2 as work
from libs.api.pfs import pfs_pb2 as pfs_pb
from libs.api.pps import pps_pb2 as pps
from libs.bus import Bus, Context, kind_for
from libs.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PachError
from libs.events import AggregateWriter, EventStore, ProjectionRunner
from libs.pps.git import allowed_prefixes, url_problem
from libs.pps.spec import check_spec, cron_inputs, git_inputs, input_branches
from libs.readmodels import DocumentStore
from services.pps.adapters.pfs import Pfs
from services.pps.adapters.pipelines_view import (
    PipelineRecord,
    get_pipeline,
    list_pipelines,
)
from services.pps.app.workers import worker_count
from services.pps.domain import pipelines as domain
from services.pps.domain.resources import WorkerCaps, check_resources
from services.pps.domain.secrets import check_transform_secrets

_log = structlog.get_logger("pps.pipelines")

# The counts of a pipeline's jobs by pps.JobState (the jobs read model's).
JobCounts = Callable[[DocumentStore, str], Awaitable[dict[int, int]]]
# Told the name of a pipeline a command just created, changed or deleted.
PipelineListener = Callable[[str], Awaitable[None]]

DEFAULT_CACHE_SIZE = "64M"
# Fields of the request that are not part of the stored spec.
_REQUEST_ONLY = ("update", "reprocess", "salt")


# --- the writer ---------------------------------------------------------------


class PipelineWriter(AggregateWriter[domain.Pipeline]):
    """Pipeline decisions on the cached aggregate, returning once the pps
    views show them."""

    @classmethod
    def create(cls, events: EventStore, views: Sequence[ProjectionRunner]) -> PipelineWriter:
        return cls(events, views, ref=domain.ref, initial=domain.Pipeline, evolve=domain.evolve)


# --- spec helpers -------------------------------------------------------------


def normalize(req: pps.CreatePipelineRequest, now: datetime) -> pps.CreatePipelineRequest:
    """The spec as stored: ``check_spec``'s normalized copy, plus 1.7's
    runtime defaults (cache size 64M, memory request = cache size, queue size
    1, cron start = now), without the request-only fields."""
    spec = check_spec(req)
    for name in _REQUEST_ONLY:
        spec.ClearField(name)  # type: ignore[arg-type]
    if not spec.cache_size:
        spec.cache_size = DEFAULT_CACHE_SIZE
    if not spec.HasField("resource_requests"):
        spec.resource_requests.memory = spec.cache_size
    if spec.max_queue_size < 1:
        spec.max_queue_size = 1
    for cron in cron_inputs(spec.input):
        if not cron.HasField("start"):
            cron.start.FromDatetime(now)
    return spec


def cron_repos(spec: pps.CreatePipelineRequest) -> list[str]:
    return [cron.repo for cron in cron_inputs(spec.input)]


def git_repos(spec: pps.CreatePipelineRequest) -> list[str]:
    return [git.name for git in git_inputs(spec.input)]


def read_repos(spec: pps.CreatePipelineRequest) -> set[str]:
    return {repo for _, repo, _ in input_branches(spec)}


def pipeline_info(record: PipelineRecord, job_counts: dict[int, int]) -> pps.PipelineInfo:
    """PipelineInfo as 1.7 fills it from the stored spec and state."""
    info = pps.PipelineInfo()
    for fd, value in record.spec.ListFields():
        if fd.name in _REQUEST_ONLY or fd.name not in info.DESCRIPTOR.fields_by_name:
            continue
        if fd.message_type is not None:
            getattr(info, fd.name).CopyFrom(value)
        else:
            setattr(info, fd.name, value)
    info.pipeline.name = record.name
    created = Timestamp()
    created.FromNanoseconds(record.created_ns)
    info.created_at.CopyFrom(created)
    info.version = record.version
    info.salt = record.salt
    info.stopped = record.stopped
    info.state = record.state  # type: ignore[assignment]
    info.reason = record.reason
    for state, count in job_counts.items():
        info.job_counts[int(state)] = int(count)
    return info


def _name(pipeline: pps.Pipeline) -> str:
    return domain.validate_pipeline_name(pipeline.name)


def _check_mount_points(name: str, spec: pps.CreatePipelineRequest) -> None:
    """The local sandbox shows this machine's top-level directories read-only
    (``/tmp`` is its own): a secret cannot be mounted inside one of them."""
    for secret in spec.transform.secrets:
        top = secret.mount_path.split("/")[1] if secret.mount_path else ""
        if top and top != "tmp" and os.path.lexists("/" + top):
            raise InvalidArgument(
                f"pipeline {name!r}: transform.secrets mount_path {secret.mount_path!r} lies in "
                f"/{top}, which the sandbox shows read-only: use a new top-level directory "
                f"(e.g. /secrets/{secret.name})",
                pipeline=name,
                field="transform.secrets",
            )


# --- the handlers -------------------------------------------------------------


@dataclass
class Pipelines:
    writer: PipelineWriter
    docs: DocumentStore
    pfs: Pfs
    job_counts: JobCounts
    listeners: list[PipelineListener] = field(default_factory=list)
    git_allowed: tuple[str, ...] = field(default_factory=allowed_prefixes)
    # Shown as PipelineInfo.githook_url for pipelines with git inputs.
    githook_url: str = ""
    new_salt: Callable[[], str] = field(default=lambda: uuid.uuid4().hex)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    caps: WorkerCaps = field(default_factory=WorkerCaps)

    async def register(self, bus: Bus) -> None:
        handlers = (
            ("CreatePipeline", pps.CreatePipelineRequest, self.create_pipeline),
            ("InspectPipeline", pps.InspectPipelineRequest, self.inspect_pipeline),
            ("ListPipeline", pps.ListPipelineRequest, self.list_pipeline),
            ("GetPipelineSpec", work.PipelineSpecRequest, self.get_pipeline_spec),
            ("DeletePipeline", pps.DeletePipelineRequest, self.delete_pipeline),
            ("StartPipeline", pps.StartPipelineRequest, self.start_pipeline),
            ("StopPipeline", pps.StopPipelineRequest, self.stop_pipeline),
            ("DeleteAll", Empty, self.delete_all),
        )
        for name, request_type, handler in handlers:
            await bus.serve(name, request_type, handler, kind=kind_for(name))  # type: ignore[arg-type]

    async def _changed(self, name: str) -> None:
        for listener in self.listeners:
            try:
                await listener(name)
            except Exception:  # a listener's failure must not fail the command
                _log.exception("pipeline listener failed", pipeline=name)

    # --- create / update ------------------------------------------------------

    async def create_pipeline(self, req: pps.CreatePipelineRequest, ctx: Context) -> Empty:
        spec = normalize(req, self.clock())
        name = spec.pipeline.name
        check_resources(spec)
        await self._check_caps(name, spec)
        pfs = self.pfs.as_principal(ctx.principal)
        current = await self.writer.load(name)
        if current.exists and not req.update:
            raise AlreadyExists(f"pipeline {name} already exists", pipeline=name)
        if not current.exists and req.update:
            raise NotFound(f"pipeline {name} not found: cannot update it", pipeline=name)
        check_transform_secrets(name, spec.transform.secrets)
        _check_mount_points(name, spec)
        for git in git_inputs(spec.input):
            problem = url_problem(git.url, self.git_allowed)
            if problem is not None:
                raise InvalidArgument(f"pipeline {name!r}: {problem}", pipeline=name, url=git.url)
        crons = set(cron_repos(spec))
        gits = set(git_repos(spec))
        for _, repo, _ in input_branches(spec):
            if repo not in crons | gits and await pfs.inspect_repo(repo) is None:
                raise NotFound(
                    f"pipeline {name}: input repo {repo} not found", pipeline=name, repo=repo
                )
        output_exists = await pfs.inspect_repo(name) is not None
        if output_exists and not current.exists:
            raise AlreadyExists(
                f"cannot create pipeline {name}: a repo named {name} already exists and is "
                "not a pipeline's output (delete the repo or choose another name)",
                pipeline=name,
                repo=name,
            )
        if spec.incremental:
            await self._check_shared_provenance(pfs, name, spec)

        created: list[str] = []
        recorded = False
        try:
            # A git input's repo (named after the input) is created with the
            # pipeline, as a cron input's is; it outlives the pipeline (1.7).
            for repo in sorted(crons | gits):
                if await pfs.inspect_repo(repo) is None:
                    await pfs.create_repo(repo)
                    created.append(repo)
            if not output_exists:
                await pfs.create_repo(name)
                created.append(name)
            before = await pfs.inspect_branch(name, spec.output_branch)
            # The pipeline is recorded before its output branch exists, so the
            # job trigger knows it when the branch's first commit opens (jobs
            # are created in output-commit order).
            salt = req.salt or self.new_salt()
            done = await self.writer.run(
                name, domain.create_pipeline(spec, salt, req.update, req.reprocess), ctx
            )
            recorded = not req.update
            # A stopped pipeline's output branch stays without provenance
            # (1.7): an update takes effect when it is started.
            stopped = done.state.stopped
            provenance = [] if stopped else _input_provenance(spec)
            await pfs.create_branch(name, spec.output_branch, provenance)
        except Exception:
            if recorded:
                await self.writer.run(name, domain.delete_pipeline(name), ctx)
            await self._undo(pfs, name, created)
            raise
        if req.update and not done.state.stopped:
            await self._rerun(pfs, spec.output_branch, before, done.state)
        await self._changed(name)
        return Empty()

    async def _rerun(
        self,
        pfs: Pfs,
        branch: str,
        before: pfs_pb.BranchInfo | None,
        state: domain.Pipeline,
    ) -> None:
        """An updated pipeline runs a job over the current inputs (1.7 did
        it with a new commit in its spec repo): a new output commit, unless
        the new provenance opened one already."""
        after = await pfs.inspect_branch(state.name, branch)
        head = after.head.id if after is not None else ""
        if before is not None and head != before.head.id:
            return
        commit_id = hashlib.sha256(f"{state.name}\0{state.version}".encode()).hexdigest()[:32]
        await pfs.propagate_branch(state.name, branch, commit_id)

    async def _check_caps(self, name: str, spec: pps.CreatePipelineRequest) -> None:
        """Refuse a parallelism over the per-pipeline or the cluster's cap
        (every other pipeline counts with its parallelism, stopped or not:
        starting it must not break the cap)."""
        workers = worker_count(spec.parallelism_spec)
        others = 0
        async for record in list_pipelines(self.docs):
            if record.name != name:
                others += worker_count(record.spec.parallelism_spec)
        self.caps.check(name, workers, others)

    async def _check_shared_provenance(
        self, pfs: Pfs, name: str, spec: pps.CreatePipelineRequest
    ) -> None:
        """1.7: an incremental pipeline's inputs may not share provenance."""
        seen: set[tuple[str, str]] = set()
        for _, repo, branch in input_branches(spec):
            keys = [(repo, branch)]
            info = await pfs.inspect_branch(repo, branch)
            if info is not None:
                keys += [(p.repo.name, p.name) for p in info.provenance]
            for key in keys:
                if key in seen:
                    raise InvalidArgument(
                        f"pipeline {name!r}: an incremental pipeline cannot have inputs "
                        f"that share provenance ({key[0]}@{key[1]} is reached twice)",
                        pipeline=name,
                        field="incremental",
                    )
                seen.add(key)

    async def _undo(self, pfs: Pfs, name: str, created: list[str]) -> None:
        for repo in reversed(created):
            try:
                await pfs.delete_repo(repo, force=True)
            except PachError:
                _log.exception("could not undo a failed create-pipeline", pipeline=name, repo=repo)

    # --- queries ----------------------------------------------------------------

    async def _record(self, name: str) -> PipelineRecord:
        record = await get_pipeline(self.docs, name)
        if record is None:
            raise NotFound(f"pipeline {name} not found", pipeline=name)
        return record

    async def _info(self, record: PipelineRecord) -> pps.PipelineInfo:
        info = pipeline_info(record, await self.job_counts(self.docs, record.name))
        if self.githook_url and git_inputs(record.spec.input):
            info.githook_url = self.githook_url
        return info

    async def inspect_pipeline(
        self, req: pps.InspectPipelineRequest, ctx: Context
    ) -> pps.PipelineInfo:
        return await self._info(await self._record(_name(req.pipeline)))

    async def list_pipeline(self, req: pps.ListPipelineRequest, ctx: Context) -> pps.PipelineInfos:
        infos = pps.PipelineInfos()
        async for record in list_pipelines(self.docs):
            infos.pipeline_info.append(await self._info(record))
        return infos

    async def get_pipeline_spec(
        self, req: work.PipelineSpecRequest, ctx: Context
    ) -> work.PipelineSpec:
        record = await self._record(_name(req.pipeline))
        return work.PipelineSpec(spec=record.spec, version=record.version, salt=record.salt)

    # --- delete -----------------------------------------------------------------

    async def delete_pipeline(self, req: pps.DeletePipelineRequest, ctx: Context) -> Empty:
        if req.all:
            if req.pipeline.name:
                raise InvalidArgument("cannot delete one pipeline and all pipelines at once")
            await self._delete_all(req.force, ctx)
            return Empty()
        name = _name(req.pipeline)
        await self._delete(await self._record(name), req.force, ctx, going=set())
        return Empty()

    async def delete_all(self, req: Empty, ctx: Context) -> Empty:
        """Pachyderm 1.7's DeleteAll on pps: every pipeline goes."""
        await self._delete_all(True, ctx)
        return Empty()

    async def _delete_all(self, force: bool, ctx: Context) -> None:
        """Every pipeline, downstream ones first (so none is deleted while
        another still reads it)."""
        remaining = {r.name: r async for r in list_pipelines(self.docs)}
        while remaining:
            names = set(remaining)
            read = {repo for r in remaining.values() for repo in read_repos(r.spec)}
            leaves = sorted(n for n in names if n not in read) or sorted(names)
            for leaf in leaves:
                await self._delete(remaining.pop(leaf), force, ctx, going=names)

    async def _readers(self, name: str, going: set[str]) -> list[str]:
        """The other live pipelines (not being deleted with it) that read
        pipeline ``name``'s output repo."""
        return sorted(
            [
                r.name
                async for r in list_pipelines(self.docs)
                if r.name != name and r.name not in going and name in read_repos(r.spec)
            ]
        )

    async def _delete(
        self, record: PipelineRecord, force: bool, ctx: Context, going: set[str]
    ) -> None:
        name = record.name
        readers = await self._readers(name, going)
        if readers and not force:
            raise FailedPrecondition(
                f"cannot delete pipeline {name}: pipeline(s) {', '.join(readers)} read its "
                "output (delete them first, or use --force)",
                pipeline=name,
            )
        pfs = self.pfs.as_principal(ctx.principal)
        await pfs.delete_repo(name, force=force)
        await self.writer.run(name, domain.delete_pipeline(name), ctx)
        await self._changed(name)  # cron ticks end before their repos go
        for repo in cron_repos(record.spec):
            await pfs.delete_repo(repo, force=True)

    # --- start / stop -----------------------------------------------------------

    async def stop_pipeline(self, req: pps.StopPipelineRequest, ctx: Context) -> Empty:
        """1.7: the output branch loses its provenance (its head stays), so
        new input commits open no output commit and create no job. The pfs
        step runs on every call, so a retry after a crash completes it."""
        name = _name(req.pipeline)
        done = await self.writer.run(name, domain.stop_pipeline(name), ctx)
        pfs = self.pfs.as_principal(ctx.principal)
        assert done.state.spec is not None  # require() in the decision
        await pfs.create_branch(name, done.state.spec.output_branch, [])
        await self._changed(name)
        return Empty()

    async def start_pipeline(self, req: pps.StartPipelineRequest, ctx: Context) -> Empty:
        """1.7: the output branch gets its provenance back; pfs opens an
        output commit over the current input heads unless the head has them
        already, so what came in while stopped runs as one job."""
        name = _name(req.pipeline)
        done = await self.writer.run(name, domain.start_pipeline(name), ctx)
        if done.state.spec is not None and not done.state.stopped:
            await self._restore_provenance(name, done.state.spec, ctx)
        await self._changed(name)
        return Empty()

    async def _restore_provenance(
        self, name: str, spec: pps.CreatePipelineRequest, ctx: Context
    ) -> None:
        pfs = self.pfs.as_principal(ctx.principal)
        await pfs.create_branch(name, spec.output_branch, _input_provenance(spec))


def _input_provenance(spec: pps.CreatePipelineRequest) -> list[tuple[str, str]]:
    """The output branch's provenance: every input's (repo, branch)."""
    return [(repo, branch) for _, repo, branch in input_branches(spec)]
