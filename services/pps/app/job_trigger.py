"""The job trigger: pfs opening an output commit of a pipeline creates its
job; pfs deleting an output commit deletes it.

A durable ``Reactor`` (``pps-jobs``) on ``ev.pfs.repo.>``:

- ``pfs.CommitStarted`` with provenance on a pipeline's output branch
  (repo = pipeline name, branch = its ``output_branch``) -> ``JobCreated``
  with the job's input commits: for every atom/cron input of the spec, the
  commit of its repo in the output commit's provenance (none: the input has
  no commit yet, its datums are none);
- ``pfs.CommitDeleted`` of an output commit -> ``JobDeleted``;
- ``pfs.RepoDeleted`` of a repo a pipeline reads (``delete-repo -f``) ->
  that pipeline fails (``PipelineStateSet`` FAILURE naming the repo): it
  can never run again, so it must not look "running".

Idempotent: the job id derives from the pipeline and the output commit and
creating an existing (or deleted) job is a no-op.

create-pipeline records the pipeline before it creates the output branch
(whose first commit pfs may open at once), so the pipeline's aggregate
knows it by then; a commit with provenance in a repo that is no pipeline's
is a plain downstream branch and is left alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from libs.api.events import pfs_pb2 as pfs_ev
from libs.api.events import pps_pb2 as ev
from libs.api.pps import pps_pb2 as pps
from libs.events import RecordedEvent
from libs.pps.spec import input_branches
from libs.readmodels import DocumentStore
from services.pps.adapters.pfs import Pfs
from services.pps.adapters.pipelines_view import list_pipelines
from services.pps.app.jobs import JobWriter
from services.pps.app.pipelines import PipelineWriter
from services.pps.app.stats import stats_commit_id
from services.pps.domain import jobs as domain
from services.pps.domain.pipelines import set_state

_log = structlog.get_logger("pps.job_trigger")

NAME = "pps-jobs"
SUBJECTS = ("ev.pfs.repo.>",)
EVENT_TYPES = frozenset({"pfs.CommitStarted", "pfs.CommitDeleted", "pfs.RepoDeleted"})
# Attempts (a second apart) before an event whose reaction keeps failing is
# given up (transient errors retry without limit).
MAX_ATTEMPTS = 20


@dataclass
class JobTrigger:
    writer: JobWriter
    docs: DocumentStore
    pfs: Pfs
    pipelines: PipelineWriter
    # Told about each new job once the views show it (this replica's
    # masters start it at once instead of on their next look).
    on_created: Callable[[str], Awaitable[None]] | None = None

    async def handle(self, event: RecordedEvent) -> None:
        msg = event.event
        repo = event.aggregate.id
        if isinstance(msg, pfs_ev.CommitStarted):
            await self._started(repo, msg, event)
        elif isinstance(msg, pfs_ev.RepoDeleted):
            await self._input_deleted(repo, event)
        elif isinstance(msg, pfs_ev.CommitDeleted):
            job = domain.job_id(repo, msg.id)
            await self.writer.run_as(
                job,
                domain.delete_job(job),
                principal=event.envelope.principal,
                causation_id=event.envelope.event_id,
                wait=False,
            )

    async def _input_deleted(self, repo: str, event: RecordedEvent) -> None:
        readers = [
            record.name
            async for record in list_pipelines(self.docs)
            if record.name != repo and any(r == repo for _, r, _ in input_branches(record.spec))
        ]
        for name in readers:
            reason = f"input repo {repo!r} was deleted"
            await self.pipelines.run_as(
                name,
                set_state(pps.PIPELINE_FAILURE, reason),
                principal=event.envelope.principal,
                causation_id=event.envelope.event_id,
                wait=False,
            )
            _log.info("pipeline failed", pipeline=name, reason=reason)

    async def _started(self, repo: str, msg: pfs_ev.CommitStarted, event: RecordedEvent) -> None:
        if not msg.provenance or not msg.branch:
            return  # an input commit, or a commit on no branch
        # The pipeline is recorded before its output branch exists, so its
        # aggregate (read from the log, not a read model that may lag on
        # another replica) knows it; otherwise this is a plain branch with
        # provenance, no pipeline's output.
        pipeline = await self.pipelines.load(repo)
        if not pipeline.exists or pipeline.spec is None:
            return
        spec = pipeline.spec
        if msg.branch != (spec.output_branch or "master"):
            return
        inputs = await self.inputs(spec, [(p.repo, p.id) for p in msg.provenance])
        job = domain.job_id(repo, msg.id)
        created = ev.JobCreated(
            pipeline=repo,
            pipeline_version=pipeline.version,
            salt=pipeline.salt,
            output_repo=repo,
            output_branch=msg.branch,
            output_commit=msg.id,
            inputs=inputs,
            parent_job=domain.job_id(repo, msg.parent) if msg.parent else "",
            stats_commit=stats_commit_id(job) if spec.enable_stats else "",
        )
        done = await self.writer.run_as(
            job,
            domain.create_job(created),
            principal=event.envelope.principal,
            correlation_id=event.envelope.correlation_id,
            causation_id=event.envelope.event_id,
            wait=False,
        )
        if done.events:
            _log.info("job created", job=job, pipeline=repo, output_commit=msg.id)
            if self.on_created is not None:
                await self.writer.settled(job)
                await self.on_created(repo)

    async def inputs(
        self, spec: pps.CreatePipelineRequest, provenance: Sequence[tuple[str, str]]
    ) -> list[ev.JobInputCommit]:
        """The job's commit of every atom/cron input, from the output
        commit's provenance. Two branches of one repo: the commit that is
        that branch's head, else the first."""
        out = []
        for name, repo, branch in input_branches(spec):
            candidates = [c for r, c in provenance if r == repo]
            commit = candidates[0] if candidates else ""
            if len(candidates) > 1:
                info = await self.pfs.inspect_branch(repo, branch)
                if info is not None and info.head.id in candidates:
                    commit = info.head.id
            out.append(ev.JobInputCommit(name=name, repo=repo, branch=branch, commit=commit))
        return out
