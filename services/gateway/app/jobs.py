"""pps's jobs, datums and logs as the API serves them, built from pps's
unary queries (a bus request cannot stream or wait for long); the gRPC
servicer, the HTTP JSON API and the dashboard all call these:

- ``wait_for_job`` (``InspectJob`` with ``block_state``) asks again until
  the job is in a terminal state (success, failure, killed) or the caller's
  deadline passes (pps holds each such request up to its own wait, ~10 s);
- ``flush_jobs`` (``FlushJob``) asks pfs which commits are downstream of the
  given ones (in the ``to_pipelines`` output repos) and yields each one's
  job as it finishes;
- ``list_datums`` / ``gather_datums`` (``ListDatumStream`` / ``ListDatum``)
  page through ``ListDatum`` when the caller asked for the whole listing
  (``page_size`` 0);
- ``log_messages`` (``GetLogs``) pages through ``GetLogsPage`` by log-stream
  sequence, and with ``follow`` keeps asking until the caller stops reading.

Waits back off as ``services.gateway.app.polling`` says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from libs.api.internal import pps_work_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pps import pps_pb2 as pps
from libs.errors import DeadlineExceeded, InvalidArgument, NotFound
from services.gateway.app import polling
from services.gateway.app.replies import TooLarge
from services.gateway.principal import Ask

# Seconds left before the caller's deadline; None without one.
Remaining = Callable[[], float | None]

# A job in one of these states does not change any more.
JOB_DONE = frozenset({pps.JOB_SUCCESS, pps.JOB_FAILURE, pps.JOB_KILLED})
# Datums per ListDatum request behind a whole listing.
DATUM_PAGE = 256
# Log lines per GetLogsPage request.
LOG_PAGE = 500


def no_deadline() -> float | None:
    """The ``Remaining`` of a caller without a deadline (HTTP)."""
    return None


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
    delay = polling.FIRST_POLL
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
            delay = polling.next_poll(delay)
            continue
        if info.state in JOB_DONE:
            return info
        if info.job.id and not asked.job.id:
            # Follow the job itself from now on; its deletion is an error.
            asked = pps.InspectJobRequest(job=info.job, block_state=True)
            missing_ok = False
        await asyncio.sleep(delay)
        delay = polling.next_poll(delay)


def _commit_name(commit: pfs.Commit) -> str:
    return f"{commit.repo.name}@{commit.id}"


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
    delay = polling.FIRST_POLL
    while True:
        got = await ask("GetLogsPage", page, internal.LogPage, "qry")
        for message in got.messages:
            yield message
        moved = got.next > page.after
        if moved:
            page.after = got.next
        page.request.tail = 0  # the first page applied it
        if got.messages or moved:
            delay = polling.FIRST_POLL
            continue
        if not request.follow:
            return
        await asyncio.sleep(delay)
        delay = polling.next_poll(delay)
