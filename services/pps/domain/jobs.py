"""The job aggregate (``ev.pps.job.<id>``): its state, how its events change
it, and what the job commands decide. Pure: no I/O.

A job is created once per (pipeline, output commit) — its id derives from
both, so a repeated trigger is a no-op. The master starts it (datum counts
and the number of chunks the to-do datums travel in), workers' reports land
as ``DatumsProcessed`` (the first report of a chunk counts, a repeat changes
nothing: no datum is applied twice), and it finishes once.

Chunk slots: ``JobStarted.chunks`` slots are numbered ``0..chunks-1``. A
restart of failed datums (``DatumsRestarted``) on a running job takes the
reported chunks holding matching failed datums back and gives each a new
slot (numbered from ``slots`` on) whose datums are those of its original
chunk (``origin``); the master publishes the new slots.

State is immutable and shared (``AggregateCache``): ``evolve`` returns a new
``Job``, never changing the old one."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeAlias

from google.protobuf.message import Message

from libs.api.events import pps_pb2 as ev
from libs.api.pps import pps_pb2 as pps
from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.events.envelope import AggregateRef

TERMINAL = frozenset({pps.JOB_SUCCESS, pps.JOB_FAILURE, pps.JOB_KILLED})


def job_id(pipeline: str, output_commit: str) -> str:
    """The id of ``pipeline``'s job for ``output_commit``: 32 hex digits, the
    same every time."""
    return hashlib.sha256(f"job\0{pipeline}\0{output_commit}".encode()).hexdigest()[:32]


def ref(job: str) -> AggregateRef:
    return AggregateRef("pps", "job", job)


JobState: TypeAlias = pps.JobState.ValueType


def state_name(state: int) -> str:
    return str(pps.JobState.Name(JobState(state))) if state in pps.JobState.values() else str(state)


@dataclass(frozen=True)
class FailedDatum:
    """A failed datum as restart-datum matches it: its id and input files."""

    id: str
    paths: tuple[str, ...]
    hashes: tuple[str, ...]  # hex


@dataclass(frozen=True)
class ChunkReport:
    """What the first report of a chunk slot counted."""

    succeeded: int
    failed: tuple[FailedDatum, ...] = ()


@dataclass(frozen=True)
class Job:
    exists: bool = False
    deleted: bool = False
    id: str = ""
    pipeline: str = ""
    pipeline_version: int = 0
    salt: str = ""
    output_repo: str = ""
    output_branch: str = ""
    output_commit: str = ""
    parent_job: str = ""
    inputs: tuple[ev.JobInputCommit, ...] = ()
    state: JobState = pps.JOB_STARTING
    reason: str = ""
    started: bool = False
    total: int = 0
    skipped: int = 0
    chunks: int = 0  # the chunk count JobStarted recorded
    slots: int = 0  # chunks plus slots added by restarts
    origin: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    reports: Mapping[int, ChunkReport] = field(default_factory=lambda: MappingProxyType({}))
    restarts: int = 0
    output_tree: str = ""

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @property
    def processed(self) -> int:
        return sum(r.succeeded for r in self.reports.values())

    @property
    def failed(self) -> int:
        return sum(len(r.failed) for r in self.reports.values())

    def pending(self) -> list[int]:
        """Chunk slots without a report (and not taken back by a restart), in
        order."""
        superseded = set(self.origin.values())
        return [s for s in range(self.slots) if s not in self.reports and s not in superseded]

    def source_chunk(self, slot: int) -> int:
        """The original chunk whose datums slot ``slot`` carries."""
        while slot in self.origin:
            slot = self.origin[slot]
        return slot


def failed_datum(result: ev.DatumResult) -> FailedDatum:
    return FailedDatum(
        result.id,
        tuple(f.path for f in result.inputs),
        tuple(bytes(f.hash).hex() for f in result.inputs),
    )


def datum_matches(filters: Sequence[str], datum: FailedDatum) -> bool:
    """Pachyderm 1.7's data filters: every filter must name one of the
    datum's input paths or hashes (hex); no filters match every datum."""
    names = {p.lstrip("/") for p in datum.paths} | set(datum.hashes) | {datum.id}
    return all(f.lstrip("/") in names or f in names for f in filters)


def restart_targets(reports: Mapping[int, ChunkReport], filters: Sequence[str]) -> list[int]:
    """The reported slots holding failed datums that match ``filters``."""
    return sorted(s for s, r in reports.items() if any(datum_matches(filters, d) for d in r.failed))


def failed_matching(state: Job, filters: Sequence[str]) -> list[str]:
    """The ids of the reported failed datums that ``filters`` match (what a
    restart of them runs again)."""
    return [
        d.id
        for s in restart_targets(state.reports, filters)
        for d in state.reports[s].failed
        if datum_matches(filters, d)
    ]


def _without(m: Mapping[int, ChunkReport], keys: Iterable[int]) -> Mapping[int, ChunkReport]:
    copy = dict(m)
    for k in keys:
        copy.pop(k, None)
    return MappingProxyType(copy)


def evolve(state: Job, event: Message) -> Job:
    if isinstance(event, ev.JobCreated):
        if state.exists or state.deleted:
            return state
        return Job(
            exists=True,
            pipeline=event.pipeline,
            pipeline_version=event.pipeline_version,
            salt=event.salt,
            output_repo=event.output_repo,
            output_branch=event.output_branch,
            output_commit=event.output_commit,
            parent_job=event.parent_job,
            inputs=tuple(event.inputs),
            id=job_id(event.pipeline, event.output_commit),
        )
    if isinstance(event, ev.JobStarted):
        return replace(
            state,
            state=pps.JOB_RUNNING,
            started=True,
            total=event.total,
            skipped=event.skipped,
            chunks=event.chunks,
            slots=event.chunks,
            inputs=tuple(event.inputs) or state.inputs,
        )
    if isinstance(event, ev.DatumsProcessed):
        if event.chunk in state.reports:
            return state
        failed = tuple(failed_datum(r) for r in event.results if r.state == pps.FAILED)
        succeeded = sum(1 for r in event.results if r.state != pps.FAILED)
        reports = dict(state.reports)
        reports[event.chunk] = ChunkReport(succeeded, failed)
        return replace(state, reports=MappingProxyType(reports))
    if isinstance(event, ev.DatumsRestarted):
        targets = restart_targets(state.reports, event.data_filters)
        origin = dict(state.origin)
        for i, slot in enumerate(targets):
            origin[state.slots + i] = slot
        return replace(
            state,
            reports=_without(state.reports, targets),
            origin=MappingProxyType(origin),
            slots=state.slots + len(targets),
        )
    if isinstance(event, ev.JobRestarted):
        return replace(state, restarts=state.restarts + 1)
    if isinstance(event, ev.JobFinished):
        return replace(state, state=event.state, reason=event.reason, output_tree=event.output_tree)
    if isinstance(event, ev.JobDeleted):
        return Job(deleted=True, id=state.id)
    return state


Decide = Callable[[Job], Sequence[Message]]


def require(state: Job, job: str) -> None:
    if not state.exists:
        raise NotFound(f"job {job} not found", job=job)


def _require_running(state: Job, job: str, what: str) -> None:
    require(state, job)
    if state.finished:
        raise FailedPrecondition(
            f"cannot {what} job {job}: it is {state_name(state.state)}",
            job=job,
            state=state_name(state.state),
        )


def create_job(created: ev.JobCreated) -> Decide:
    """JobCreated, unless the job exists already (or existed: a deleted job
    is not brought back by a late trigger)."""

    def decide(state: Job) -> Sequence[Message]:
        if state.exists or state.deleted:
            return []
        return [created]

    return decide


def start_job(
    job: str,
    total: int,
    skipped: int,
    chunks: int,
    inputs: Sequence[ev.JobInputCommit],
    *,
    service: bool = False,
) -> Decide:
    """JobStarted. A service pipeline's job has its one datum and no chunks:
    pps runs it until a newer job replaces it."""
    if total < 0 or skipped < 0 or chunks < 0 or skipped > total:
        raise InvalidArgument(
            f"job {job}: bad datum counts (total {total}, skipped {skipped}, chunks {chunks})",
            job=job,
        )
    if chunks == 0 and skipped != total and not service:
        raise InvalidArgument(f"job {job}: {total - skipped} datums to do need chunks", job=job)

    def decide(state: Job) -> Sequence[Message]:
        _require_running(state, job, "start")
        if state.started:
            raise FailedPrecondition(f"job {job} has already been started", job=job)
        return [ev.JobStarted(total=total, skipped=skipped, chunks=chunks, inputs=inputs)]

    return decide


def restart_job(job: str) -> Decide:
    """JobRestarted: the master takes a running job up again."""

    def decide(state: Job) -> Sequence[Message]:
        _require_running(state, job, "restart")
        return [ev.JobRestarted()]

    return decide


def record_chunk(
    job: str, chunk: int, results: Sequence[ev.DatumResult], worker_id: str = ""
) -> Decide:
    """DatumsProcessed for chunk slot ``chunk`` — nothing when that slot has
    its report already or the job has finished (a late redelivery)."""

    def decide(state: Job) -> Sequence[Message]:
        require(state, job)
        if state.finished or chunk in state.reports:
            return []
        if not state.started:
            raise FailedPrecondition(
                f"job {job} has not been started: chunk {chunk} cannot be reported", job=job
            )
        if not 0 <= chunk < state.slots:
            raise InvalidArgument(
                f"job {job} has chunks 0..{state.slots - 1}, not {chunk}", job=job, chunk=chunk
            )
        if chunk not in state.pending():
            return []  # taken back by a restart: its new slot will report
        return [ev.DatumsProcessed(chunk=chunk, results=results, worker_id=worker_id)]

    return decide


def restart_datums(job: str, data_filters: Sequence[str]) -> Decide:
    """DatumsRestarted: the failed datums of a running job that match
    ``data_filters`` run again. Refused when there is nothing to restart."""

    def decide(state: Job) -> Sequence[Message]:
        _require_running(state, job, "restart datums of")
        if not restart_targets(state.reports, data_filters):
            raise FailedPrecondition(
                f"job {job} has no failed datum matching {list(data_filters)}", job=job
            )
        return [ev.DatumsRestarted(data_filters=data_filters)]

    return decide


def finish_job(
    job: str,
    job_state: JobState,
    reason: str = "",
    output_tree: str = "",
    stats: pps.ProcessStats | None = None,
) -> Decide:
    if job_state not in TERMINAL:
        raise InvalidArgument(
            f"job {job} cannot finish as {state_name(job_state)}", job=job, state=job_state
        )

    def decide(state: Job) -> Sequence[Message]:
        _require_running(state, job, "finish")
        if job_state == pps.JOB_SUCCESS and (state.pending() or state.failed):
            raise FailedPrecondition(
                f"job {job} cannot succeed: {len(state.pending())} chunks unreported, "
                f"{state.failed} datums failed",
                job=job,
            )
        done = ev.JobFinished(state=job_state, reason=reason, output_tree=output_tree)
        if stats is not None:
            done.stats.CopyFrom(stats)
        return [done]

    return decide


def delete_job(job: str) -> Decide:
    """JobDeleted; nothing when the job is gone already."""

    def decide(state: Job) -> Sequence[Message]:
        if not state.exists:
            return []
        return [ev.JobDeleted()]

    return decide
