"""``pps.API``: each unary RPC is forwarded to the pps service over the bus
with the caller's principal and deadline.

A bus request cannot stream or wait for long, so these are built here from
pps's unary queries (and shared with the HTTP JSON API):

- ``InspectJob`` with ``block_state`` asks again until the job is in a
  terminal state (success, failure, killed) or the caller's deadline passes
  (pps holds each such request up to its own wait, ~10 s);
- ``ListJobStream`` sends ``ListJob``'s answer one job at a time;
- ``ListDatum``/``ListDatumStream`` page through ``ListDatum`` when the
  caller asked for the whole listing (``page_size`` 0);
- ``GetLogs`` pages through ``GetLogsPage`` by log-stream sequence, and with
  ``follow`` keeps asking until the caller cancels;
- ``FlushJob`` asks pfs which commits are downstream of the given ones (in
  the ``to_pipelines`` output repos) and sends each one's job as it finishes.

``GarbageCollect`` runs ``cmd.pfs.GarbageCollect`` (pfs collects; it may
take long, so it waits as long as the caller allows) and answers 1.7's empty
``GarbageCollectResponse``; what it kept, deleted and protected travels in
the trailing metadata ``GC_RESULT_KEY`` (a serialized
``pachgc.GarbageCollectResult``), which ``pachctl garbage-collect`` prints;
over the HTTP JSON API the counts are the answer itself.

``CreateJob`` (deprecated in 1.7), ``RerunPipeline`` (never implemented by
1.7) and ``ActivateAuth`` (a later issue) answer UNIMPLEMENTED with a message
saying what to do instead."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc.aio
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from libs.api.internal import gc_pb2
from libs.api.internal import pps_work_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from libs.bus import Bus
from libs.errors import DeadlineExceeded, InvalidArgument, NotFound, Unimplemented
from services.gateway.file_pages import TooLarge
from services.gateway.principal import Ask, ask

Ctx = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", bound=Message)
# Seconds left before the caller's deadline; None without one.
Remaining = Callable[[], float | None]

# A job in one of these states does not change any more.
JOB_DONE = frozenset({pps.JOB_SUCCESS, pps.JOB_FAILURE, pps.JOB_KILLED})
# Datums per ListDatum request behind a whole listing.
DATUM_PAGE = 256
# Log lines per GetLogsPage request.
LOG_PAGE = 500
# Back-off between polls (seconds): first, then doubling up to the last.
FIRST_POLL = 0.02
LAST_POLL = 0.5
# Largest unary reply (as the pfs servicer's).
MAX_REPLY = 20 << 20

# RPCs the gateway does not serve, and why.
REFUSED = {
    "CreateJob": (
        "CreateJob is deprecated in Pachyderm 1.7: a pipeline creates its jobs "
        "when its input commits finish; create or update a pipeline instead"
    ),
    "RerunPipeline": (
        "RerunPipeline is not implemented (nor was it in Pachyderm 1.7); "
        "update the pipeline with reprocess set to process every datum again"
    ),
    "ActivateAuth": (
        "pps ActivateAuth is not available yet: pipelines do not hold auth tokens here"
    ),
}


# Trailing metadata of GarbageCollect: a serialized pachgc.GarbageCollectResult.
GC_RESULT_KEY = "pach-gc-result-bin"


async def garbage_collect(
    ask: Ask, request: pps.GarbageCollectRequest
) -> gc_pb2.GarbageCollectResult:
    """Collect garbage (pfs's ``cmd.pfs.GarbageCollect``); ``ask`` calls pfs."""
    if request.memory_bytes < 0:
        raise InvalidArgument(
            f"garbage collection memory must be >= 0 bytes, got {request.memory_bytes}"
        )
    req = gc_pb2.GarbageCollectRequest(memory_bytes=request.memory_bytes)
    return await ask("GarbageCollect", req, gc_pb2.GarbageCollectResult, "cmd")


def refusal(rpc: str) -> Unimplemented:
    """The error an RPC the gateway does not serve answers with."""
    return Unimplemented(REFUSED[rpc], rpc=rpc)


def no_deadline() -> float | None:
    return None


def _next_poll(delay: float) -> float:
    return min(delay * 2, LAST_POLL)


def check_job_request(request: pps.InspectJobRequest) -> None:
    """Exactly one of ``job`` and ``output_commit`` names the job."""
    by_job = bool(request.job.id)
    by_commit = bool(request.output_commit.repo.name)
    if not by_job and not by_commit:
        raise InvalidArgument("InspectJob needs a job id or an output commit")
    if by_job and by_commit:
        raise InvalidArgument(
            "InspectJob takes a job id or an output commit, not both",
            job=request.job.id,
        )
    if by_commit and not request.output_commit.id:
        raise InvalidArgument(
            f"the output commit in repo {request.output_commit.repo.name!r} has no id",
            repo=request.output_commit.repo.name,
        )


async def wait_for_job(
    ask: Ask, request: pps.InspectJobRequest, remaining: Remaining, *, missing_ok: bool = False
) -> pps.JobInfo:
    """``InspectJob``; with ``block_state``, the job once it is done.

    pps answers a blocking request with the job as it is when its own wait
    ends (or the bus times the request out): either way this asks again,
    until the job is done or ``remaining()`` says the caller's deadline has
    passed (then ``DeadlineExceeded``). ``missing_ok``: a job not found is
    one about to be created for its output commit (FlushJob), so wait for
    it too; once seen, its deletion is an error."""
    check_job_request(request)
    if not request.block_state:
        return await ask("InspectJob", request, pps.JobInfo, "qry")
    asked = pps.InspectJobRequest()
    asked.CopyFrom(request)
    delay = FIRST_POLL
    while True:
        try:
            info = await ask("InspectJob", asked, pps.JobInfo, "qry")
        except DeadlineExceeded:
            left = remaining()
            if left is not None and left <= 0:
                raise
            continue  # pps held the request for its whole wait: ask again
        except NotFound:
            if not missing_ok:
                raise
            left = remaining()
            if left is not None and left <= 0:
                raise DeadlineExceeded(
                    f"no job appeared for output commit {_commit_name(asked.output_commit)} "
                    "before the deadline",
                ) from None
            await asyncio.sleep(delay)
            delay = _next_poll(delay)
            continue
        if info.state in JOB_DONE:
            return info
        if info.job.id and not asked.job.id:
            # Follow the job itself from now on; its deletion is an error.
            asked = pps.InspectJobRequest(job=info.job, block_state=True)
            missing_ok = False
        await asyncio.sleep(delay)
        delay = _next_poll(delay)


def _commit_name(commit: pfs.Commit) -> str:
    return f"{commit.repo.name}@{commit.id}"


async def list_datums(
    ask: Ask, request: pps.ListDatumRequest
) -> AsyncIterator[pps.ListDatumStreamResponse]:
    """The job's datums, one per message: the page asked for (the first
    message carries ``page`` and ``total_pages``, as 1.7's does), or with
    ``page_size`` 0 all of them, page after page."""
    if request.page_size < 0 or request.page < 0:
        raise InvalidArgument(
            "ListDatum page and page_size must not be negative",
            page=request.page,
            page_size=request.page_size,
        )
    if request.page_size > 0:
        got = await ask("ListDatum", request, pps.ListDatumResponse, "qry")
        for i, datum in enumerate(got.datum_infos):
            first = i == 0
            yield pps.ListDatumStreamResponse(
                datum_info=datum,
                page=got.page if first else 0,
                total_pages=got.total_pages if first else 0,
            )
        return
    page = pps.ListDatumRequest(job=request.job, page_size=DATUM_PAGE, page=0)
    while True:
        got = await ask("ListDatum", page, pps.ListDatumResponse, "qry")
        for datum in got.datum_infos:
            yield pps.ListDatumStreamResponse(datum_info=datum)
        page.page += 1
        if not got.datum_infos or page.page >= got.total_pages:
            return


async def gather_datums(
    ask: Ask, request: pps.ListDatumRequest, limit: int
) -> pps.ListDatumResponse:
    """``ListDatum``: the page asked for as pps answers it, or with
    ``page_size`` 0 every datum, up to the unary reply ``limit``."""
    if request.page_size > 0 and request.page >= 0:
        return await ask("ListDatum", request, pps.ListDatumResponse, "qry")
    out = pps.ListDatumResponse()
    size = 0
    async for item in list_datums(ask, request):
        size += item.datum_info.ByteSize() + 6
        if size > limit:
            raise TooLarge("ListDatum", "ListDatumStream or a page_size", limit)
        out.datum_infos.append(item.datum_info)
    return out


async def log_messages(
    ask: Ask, request: pps.GetLogsRequest, *, limit: int = LOG_PAGE
) -> AsyncIterator[pps.LogMessage]:
    """The log lines ``request`` selects, oldest first, page after page.
    ``tail`` goes with the first page only (pps starts there); with
    ``follow``, an empty page means "nothing new yet": ask again (backing
    off) until the caller stops reading."""
    if request.tail < 0:
        raise InvalidArgument("GetLogs tail must not be negative", tail=request.tail)
    page = internal.GetLogsPageRequest(request=request, after=0, limit=limit)
    delay = FIRST_POLL
    while True:
        got = await ask("GetLogsPage", page, internal.LogPage, "qry")
        for message in got.messages:
            yield message
        moved = got.next > page.after
        if moved:
            page.after = got.next
        page.request.tail = 0  # the first page applied it
        if got.messages or moved:
            delay = FIRST_POLL
            continue
        if not request.follow:
            return
        await asyncio.sleep(delay)
        delay = _next_poll(delay)


async def flush_jobs(
    pfs_ask: Ask, pps_ask: Ask, request: pps.FlushJobRequest, remaining: Remaining
) -> AsyncIterator[pps.JobInfo]:
    """The jobs whose output commits are downstream of ``request.commits``
    (only those of ``to_pipelines`` when given), each once it is done, in
    the order they finish."""
    if not request.commits:
        raise InvalidArgument("FlushJob needs at least one commit")
    flush = pfs.FlushCommitRequest(
        commits=request.commits,
        to_repos=[pfs.Repo(name=p.name) for p in request.to_pipelines],
    )
    found = await pfs_ask("FlushCommit", flush, pfs.CommitInfos, "qry")
    pipelines: dict[str, bool] = {}
    outputs: list[pfs.Commit] = []
    for info in found.commit_info:
        repo = info.commit.repo.name
        if repo not in pipelines:
            pipelines[repo] = await _is_pipeline(pps_ask, repo)
        if pipelines[repo]:
            outputs.append(info.commit)
    waits = [
        asyncio.ensure_future(
            wait_for_job(
                pps_ask,
                pps.InspectJobRequest(output_commit=commit, block_state=True),
                remaining,
                missing_ok=True,
            )
        )
        for commit in outputs
    ]
    try:
        for done in asyncio.as_completed(waits):
            yield await done
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


async def _is_pipeline(ask: Ask, name: str) -> bool:
    req = pps.InspectPipelineRequest(pipeline=pps.Pipeline(name=name))
    try:
        await ask("InspectPipeline", req, pps.PipelineInfo, "qry")
    except NotFound:
        return False
    return True


class PpsServicer(pps_pb2_grpc.APIServicer):
    def __init__(self, bus: Bus, max_reply: int = MAX_REPLY) -> None:
        self.bus = bus
        self.max_reply = max_reply

    def _ask(self, context: Ctx, service: str = "pps") -> Ask:
        async def call(name: str, request: Message, response_type: type[R], kind: str) -> R:
            return await ask(self.bus, context, service, name, request, response_type, kind=kind)

        return call

    async def _cmd(self, context: Ctx, name: str, request: Message) -> Empty:
        return await ask(self.bus, context, "pps", name, request, Empty)

    # --- pipelines ---------------------------------------------------------

    async def CreatePipeline(  # type: ignore[override]
        self, request: pps.CreatePipelineRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "CreatePipeline", request)

    async def InspectPipeline(  # type: ignore[override]
        self, request: pps.InspectPipelineRequest, context: Ctx
    ) -> pps.PipelineInfo:
        return await self._ask(context)("InspectPipeline", request, pps.PipelineInfo, "qry")

    async def ListPipeline(  # type: ignore[override]
        self, request: pps.ListPipelineRequest, context: Ctx
    ) -> pps.PipelineInfos:
        return await self._ask(context)("ListPipeline", request, pps.PipelineInfos, "qry")

    async def DeletePipeline(  # type: ignore[override]
        self, request: pps.DeletePipelineRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "DeletePipeline", request)

    async def StartPipeline(  # type: ignore[override]
        self, request: pps.StartPipelineRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "StartPipeline", request)

    async def StopPipeline(  # type: ignore[override]
        self, request: pps.StopPipelineRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "StopPipeline", request)

    async def RerunPipeline(  # type: ignore[override]
        self, request: pps.RerunPipelineRequest, context: Ctx
    ) -> Empty:
        raise refusal("RerunPipeline")

    async def DeleteAll(self, request: Empty, context: Ctx) -> Empty:  # type: ignore[override]
        return await self._cmd(context, "DeleteAll", request)

    # --- jobs --------------------------------------------------------------

    async def CreateJob(  # type: ignore[override]
        self, request: pps.CreateJobRequest, context: Ctx
    ) -> pps.Job:
        raise refusal("CreateJob")

    async def InspectJob(  # type: ignore[override]
        self, request: pps.InspectJobRequest, context: Ctx
    ) -> pps.JobInfo:
        return await wait_for_job(self._ask(context), request, context.time_remaining)

    async def ListJob(  # type: ignore[override]
        self, request: pps.ListJobRequest, context: Ctx
    ) -> pps.JobInfos:
        return await self._ask(context)("ListJob", request, pps.JobInfos, "qry")

    async def ListJobStream(  # type: ignore[override]
        self, request: pps.ListJobRequest, context: Ctx
    ) -> AsyncIterator[pps.JobInfo]:
        infos = await self._ask(context)("ListJob", request, pps.JobInfos, "qry")
        for info in infos.job_info:
            yield info

    async def FlushJob(  # type: ignore[override]
        self, request: pps.FlushJobRequest, context: Ctx
    ) -> AsyncIterator[pps.JobInfo]:
        jobs = flush_jobs(
            self._ask(context, "pfs"), self._ask(context), request, context.time_remaining
        )
        async for info in jobs:
            yield info

    async def DeleteJob(  # type: ignore[override]
        self, request: pps.DeleteJobRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "DeleteJob", request)

    async def StopJob(  # type: ignore[override]
        self, request: pps.StopJobRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "StopJob", request)

    # --- datums ------------------------------------------------------------

    async def InspectDatum(  # type: ignore[override]
        self, request: pps.InspectDatumRequest, context: Ctx
    ) -> pps.DatumInfo:
        return await self._ask(context)("InspectDatum", request, pps.DatumInfo, "qry")

    async def ListDatum(  # type: ignore[override]
        self, request: pps.ListDatumRequest, context: Ctx
    ) -> pps.ListDatumResponse:
        return await gather_datums(self._ask(context), request, self.max_reply)

    async def ListDatumStream(  # type: ignore[override]
        self, request: pps.ListDatumRequest, context: Ctx
    ) -> AsyncIterator[pps.ListDatumStreamResponse]:
        async for item in list_datums(self._ask(context), request):
            yield item

    async def RestartDatum(  # type: ignore[override]
        self, request: pps.RestartDatumRequest, context: Ctx
    ) -> Empty:
        return await self._cmd(context, "RestartDatum", request)

    # --- logs and the rest -------------------------------------------------

    async def GetLogs(  # type: ignore[override]
        self, request: pps.GetLogsRequest, context: Ctx
    ) -> AsyncIterator[pps.LogMessage]:
        async for message in log_messages(self._ask(context), request):
            yield message

    async def GarbageCollect(  # type: ignore[override]
        self, request: pps.GarbageCollectRequest, context: Ctx
    ) -> pps.GarbageCollectResponse:
        result = await garbage_collect(self._ask(context, "pfs"), request)
        context.set_trailing_metadata(((GC_RESULT_KEY, result.SerializeToString()),))
        return pps.GarbageCollectResponse()

    async def ActivateAuth(  # type: ignore[override]
        self, request: pps.ActivateAuthRequest, context: Ctx
    ) -> pps.ActivateAuthResponse:
        raise refusal("ActivateAuth")


def register(server: grpc.aio.Server, bus: Bus, max_reply: int = MAX_REPLY) -> None:
    pps_pb2_grpc.add_APIServicer_to_server(PpsServicer(bus, max_reply), server)
