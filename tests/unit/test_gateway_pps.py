"""The gateway's pps streams and waits, built from pps's unary bus queries:
the InspectJob block loop, datum pages, log pages (with follow), FlushJob,
ExtractPipeline and the RPCs the gateway refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import pytest
from google.protobuf.message import Message

from libs.api.admin import admin_pb2 as admin
from libs.api.internal import pps_work_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pps import pps_pb2 as pps
from libs.errors import DeadlineExceeded, InvalidArgument, NotFound, Unimplemented
from services.gateway.app import jobs, polling
from services.gateway.app.replies import TooLarge
from services.gateway.app.unserved import refusal
from services.gateway.grpc import admin as admin_grpc

Reply = Callable[[Message], Message]


class FakeAsk:
    """Answers each bus call from a per-name script; records the calls."""

    def __init__(self, **script: Reply) -> None:
        self.script = script
        self.asked: list[tuple[str, Message]] = []

    async def __call__(self, name: str, request: Message, response_type: Any, kind: str) -> Any:
        assert kind == "qry", name
        copy = type(request)()
        copy.CopyFrom(request)
        self.asked.append((name, copy))
        reply = self.script[name](copy)
        assert isinstance(reply, response_type)
        return reply

    def names(self) -> list[str]:
        return [n for n, _ in self.asked]


def job(job_id: str, state: int, commit: str = "") -> pps.JobInfo:
    return pps.JobInfo(
        job=pps.Job(id=job_id),
        state=state,  # type: ignore[arg-type]
        output_commit=pfs.Commit(repo=pfs.Repo(name="edges"), id=commit),
    )


def states(*replies: pps.JobInfo | Exception) -> Reply:
    queue = list(replies)

    def reply(_: Message) -> Message:
        got = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(got, Exception):
            raise got
        return got

    return reply


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(polling, "FIRST_POLL", 0.001)
    monkeypatch.setattr(polling, "LAST_POLL", 0.002)


# --- InspectJob --------------------------------------------------------------


async def test_inspect_job_without_block_asks_once() -> None:
    ask = FakeAsk(InspectJob=states(job("j1", pps.JOB_RUNNING)))
    req = pps.InspectJobRequest(job=pps.Job(id="j1"))
    info = await jobs.wait_for_job(ask, req, jobs.no_deadline)
    assert info.state == pps.JOB_RUNNING
    assert ask.names() == ["InspectJob"]


async def test_block_state_asks_again_until_the_job_is_done() -> None:
    ask = FakeAsk(
        InspectJob=states(
            job("j1", pps.JOB_STARTING),
            DeadlineExceeded("qry.pps.InspectJob did not answer within 10s"),
            job("j1", pps.JOB_RUNNING),
            job("j1", pps.JOB_FAILURE),
        )
    )
    req = pps.InspectJobRequest(job=pps.Job(id="j1"), block_state=True)
    info = await jobs.wait_for_job(ask, req, lambda: 30.0)
    assert info.state == pps.JOB_FAILURE
    assert ask.names() == ["InspectJob"] * 4
    assert all(isinstance(r, pps.InspectJobRequest) and r.block_state for _, r in ask.asked)


async def test_block_state_by_output_commit_follows_the_job_it_found() -> None:
    ask = FakeAsk(
        InspectJob=states(job("j7", pps.JOB_RUNNING, "c1"), job("j7", pps.JOB_KILLED, "c1"))
    )
    commit = pfs.Commit(repo=pfs.Repo(name="edges"), id="c1")
    req = pps.InspectJobRequest(output_commit=commit, block_state=True)
    assert (await jobs.wait_for_job(ask, req, jobs.no_deadline)).state == pps.JOB_KILLED
    first, second = (r for _, r in ask.asked)
    assert isinstance(first, pps.InspectJobRequest) and first.output_commit.id == "c1"
    assert isinstance(second, pps.InspectJobRequest) and second.job.id == "j7"


async def test_block_state_gives_up_when_the_callers_deadline_has_passed() -> None:
    ask = FakeAsk(InspectJob=states(job("j1", pps.JOB_RUNNING), DeadlineExceeded("too slow")))
    left = iter([1.0, -0.5])
    req = pps.InspectJobRequest(job=pps.Job(id="j1"), block_state=True)
    with pytest.raises(DeadlineExceeded):
        await jobs.wait_for_job(ask, req, lambda: next(left))


async def test_a_missing_job_is_an_error_unless_it_may_still_appear() -> None:
    missing = NotFound("job not found")
    req = pps.InspectJobRequest(job=pps.Job(id="nope"), block_state=True)
    with pytest.raises(NotFound):
        await jobs.wait_for_job(FakeAsk(InspectJob=states(missing)), req, lambda: 5.0)
    ask = FakeAsk(InspectJob=states(missing, missing, job("j2", pps.JOB_SUCCESS)))
    commit = pfs.Commit(repo=pfs.Repo(name="edges"), id="c2")
    by_commit = pps.InspectJobRequest(output_commit=commit, block_state=True)
    info = await jobs.wait_for_job(ask, by_commit, lambda: 5.0, missing_ok=True)
    assert info.job.id == "j2" and len(ask.asked) == 3


async def test_a_job_deleted_while_waited_for_is_an_error() -> None:
    ask = FakeAsk(InspectJob=states(job("j3", pps.JOB_RUNNING, "c3"), NotFound("job j3 deleted")))
    commit = pfs.Commit(repo=pfs.Repo(name="edges"), id="c3")
    req = pps.InspectJobRequest(output_commit=commit, block_state=True)
    with pytest.raises(NotFound, match="deleted"):
        await jobs.wait_for_job(ask, req, lambda: 5.0, missing_ok=True)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pps.InspectJobRequest(), "needs a job id or an output commit"),
        (
            pps.InspectJobRequest(
                job=pps.Job(id="j"),
                output_commit=pfs.Commit(repo=pfs.Repo(name="r"), id="c"),
            ),
            "not both",
        ),
        (
            pps.InspectJobRequest(output_commit=pfs.Commit(repo=pfs.Repo(name="r"))),
            "has no id",
        ),
    ],
)
async def test_inspect_job_needs_exactly_one_name(
    request_: pps.InspectJobRequest, message: str
) -> None:
    ask = FakeAsk()
    with pytest.raises(InvalidArgument, match=message):
        await jobs.wait_for_job(ask, request_, jobs.no_deadline)
    assert ask.asked == []


# --- datums ------------------------------------------------------------------


class Datums:
    """pps's ListDatum over ``n`` datums."""

    def __init__(self, n: int) -> None:
        self.ids = [f"d{i:03}" for i in range(n)]

    def __call__(self, request: Message) -> Message:
        assert isinstance(request, pps.ListDatumRequest)
        size = request.page_size or len(self.ids)
        part = self.ids[request.page * size : (request.page + 1) * size]
        return pps.ListDatumResponse(
            datum_infos=[pps.DatumInfo(datum=pps.Datum(id=i)) for i in part],
            page=request.page if request.page_size else 0,
            total_pages=-(-len(self.ids) // size) if request.page_size else 0,
        )


async def collect(items: AsyncIterator[pps.ListDatumStreamResponse]) -> list[str]:
    return [i.datum_info.datum.id async for i in items]


async def test_a_whole_datum_listing_pages_through_list_datum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs, "DATUM_PAGE", 4)
    ask = FakeAsk(ListDatum=Datums(10))
    req = pps.ListDatumRequest(job=pps.Job(id="j"))
    assert await collect(jobs.list_datums(ask, req)) == Datums(10).ids
    pages = [r for _, r in ask.asked]
    assert [(r.page, r.page_size) for r in pages] == [(0, 4), (1, 4), (2, 4)]  # type: ignore[attr-defined]


async def test_a_datum_page_streams_that_page_with_its_numbers_first() -> None:
    ask = FakeAsk(ListDatum=Datums(10))
    req = pps.ListDatumRequest(job=pps.Job(id="j"), page_size=3, page=1)
    items = [i async for i in jobs.list_datums(ask, req)]
    assert [i.datum_info.datum.id for i in items] == ["d003", "d004", "d005"]
    assert (items[0].page, items[0].total_pages) == (1, 4)
    assert (items[1].page, items[1].total_pages) == (0, 0)


async def test_unary_list_datum_gathers_up_to_the_reply_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs, "DATUM_PAGE", 4)
    req = pps.ListDatumRequest(job=pps.Job(id="j"))
    whole = await jobs.gather_datums(FakeAsk(ListDatum=Datums(9)), req, 10_000)
    assert [d.datum.id for d in whole.datum_infos] == Datums(9).ids
    with pytest.raises(TooLarge, match="ListDatumStream"):
        await jobs.gather_datums(FakeAsk(ListDatum=Datums(9)), req, 40)
    paged = pps.ListDatumRequest(job=pps.Job(id="j"), page_size=5, page=1)
    got = await jobs.gather_datums(FakeAsk(ListDatum=Datums(9)), paged, 40)
    assert (len(got.datum_infos), got.page, got.total_pages) == (4, 1, 2)


async def test_negative_datum_pages_are_refused() -> None:
    ask = FakeAsk()
    with pytest.raises(InvalidArgument, match="negative"):
        await collect(jobs.list_datums(ask, pps.ListDatumRequest(page_size=-1)))


# --- logs --------------------------------------------------------------------


class Logs:
    """pps's GetLogsPage over a growing list of lines (sequence = index+1)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def __call__(self, request: Message) -> Message:
        assert isinstance(request, internal.GetLogsPageRequest)
        start = request.after
        if request.request.tail:
            start = max(start, len(self.lines) - request.request.tail)
        part = self.lines[start : start + request.limit]
        return internal.LogPage(
            messages=[pps.LogMessage(message=m) for m in part],
            next=start + len(part) if part else request.after,
        )


async def test_logs_page_through_and_stop_at_the_end() -> None:
    ask = FakeAsk(GetLogsPage=Logs([f"line {i}" for i in range(7)]))
    req = pps.GetLogsRequest(pipeline=pps.Pipeline(name="edges"))
    got = [m.message async for m in jobs.log_messages(ask, req, limit=3)]
    assert got == [f"line {i}" for i in range(7)]
    afters = [r.after for _, r in ask.asked]  # type: ignore[attr-defined]
    assert afters == [0, 3, 6, 7]


async def test_tail_goes_with_the_first_page_only() -> None:
    ask = FakeAsk(GetLogsPage=Logs([f"line {i}" for i in range(7)]))
    req = pps.GetLogsRequest(pipeline=pps.Pipeline(name="edges"), tail=2)
    got = [m.message async for m in jobs.log_messages(ask, req, limit=3)]
    assert got == ["line 5", "line 6"]
    tails = [r.request.tail for _, r in ask.asked]  # type: ignore[attr-defined]
    assert tails == [2, 0]


async def test_follow_keeps_asking_for_new_lines_until_the_caller_stops() -> None:
    lines = ["first"]
    ask = FakeAsk(GetLogsPage=Logs(lines))
    req = pps.GetLogsRequest(job=pps.Job(id="j"), follow=True)
    got: list[str] = []

    async def read() -> None:
        async for m in jobs.log_messages(ask, req):
            got.append(m.message)

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.05)
    assert got == ["first"]
    lines.append("second")
    await asyncio.sleep(0.05)
    assert got == ["first", "second"]
    assert not reader.done()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader


async def test_negative_tail_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="tail"):
        async for _ in jobs.log_messages(FakeAsk(), pps.GetLogsRequest(tail=-1)):
            pass


# --- FlushJob ----------------------------------------------------------------


def commit(repo: str, cid: str) -> pfs.Commit:
    return pfs.Commit(repo=pfs.Repo(name=repo), id=cid)


async def test_flush_job_sends_each_downstream_job_as_it_finishes() -> None:
    # edges (a pipeline) and montage (a pipeline) are downstream; "copies"
    # is a plain repo with provenance: not a job.
    downstream = [commit("edges", "e1"), commit("copies", "x1"), commit("montage", "m1")]
    pfs_ask = FakeAsk(
        FlushCommit=lambda _: pfs.CommitInfos(
            commit_info=[pfs.CommitInfo(commit=c) for c in downstream]
        )
    )
    polls: dict[str, int] = {}

    def inspect_pipeline(request: Message) -> Message:
        assert isinstance(request, pps.InspectPipelineRequest)
        if request.pipeline.name == "copies":
            raise NotFound("pipeline copies not found")
        return pps.PipelineInfo(pipeline=request.pipeline)

    def inspect_job(request: Message) -> Message:
        assert isinstance(request, pps.InspectJobRequest) and request.block_state
        key = request.output_commit.id or request.job.id
        polls[key] = polls.get(key, 0) + 1
        if key == "e1" and polls[key] < 3:
            raise NotFound("no job yet")  # the job trigger has not run yet
        if key in ("e1", "job-e1"):
            done = polls[key] > 2 if key == "job-e1" else False
            return job("job-e1", pps.JOB_SUCCESS if done else pps.JOB_RUNNING, "e1")
        return job("job-m1", pps.JOB_SUCCESS, "m1")

    pps_ask = FakeAsk(InspectPipeline=inspect_pipeline, InspectJob=inspect_job)
    req = pps.FlushJobRequest(commits=[commit("images", "i1")])
    got = [j.job.id async for j in jobs.flush_jobs(pfs_ask, pps_ask, req, lambda: 5.0)]
    assert got == ["job-m1", "job-e1"]  # in the order they finished
    flushed = pfs_ask.asked[0][1]
    assert isinstance(flushed, pfs.FlushCommitRequest) and not flushed.to_repos
    asked_pipelines = [r.pipeline.name for n, r in pps_ask.asked if n == "InspectPipeline"]  # type: ignore[attr-defined]
    assert asked_pipelines == ["edges", "copies", "montage"]


async def test_flush_job_passes_to_pipelines_as_repos_and_needs_commits() -> None:
    pfs_ask = FakeAsk(FlushCommit=lambda _: pfs.CommitInfos())
    req = pps.FlushJobRequest(
        commits=[commit("images", "i1")], to_pipelines=[pps.Pipeline(name="edges")]
    )
    assert [j async for j in jobs.flush_jobs(pfs_ask, FakeAsk(), req, lambda: 5.0)] == []
    flushed = pfs_ask.asked[0][1]
    assert isinstance(flushed, pfs.FlushCommitRequest)
    assert [r.name for r in flushed.to_repos] == ["edges"]
    with pytest.raises(InvalidArgument, match="at least one commit"):
        async for _ in jobs.flush_jobs(pfs_ask, FakeAsk(), pps.FlushJobRequest(), lambda: 5.0):
            pass


async def test_a_flush_stopped_early_cancels_its_waits() -> None:
    downstream = [commit("edges", "e1"), commit("montage", "m1")]
    pfs_ask = FakeAsk(
        FlushCommit=lambda _: pfs.CommitInfos(
            commit_info=[pfs.CommitInfo(commit=c) for c in downstream]
        )
    )

    def inspect_job(request: Message) -> Message:
        assert isinstance(request, pps.InspectJobRequest)
        done = request.output_commit.id == "m1"
        return job("j", pps.JOB_SUCCESS if done else pps.JOB_RUNNING)

    pps_ask = FakeAsk(InspectPipeline=lambda r: pps.PipelineInfo(), InspectJob=inspect_job)
    flushed = jobs.flush_jobs(
        pfs_ask, pps_ask, pps.FlushJobRequest(commits=downstream), lambda: 5.0
    )
    assert isinstance(flushed, AsyncGenerator)
    first = await anext(flushed)
    assert first.state == pps.JOB_SUCCESS
    await flushed.aclose()
    count = len(pps_ask.asked)
    await asyncio.sleep(0.02)
    assert len(pps_ask.asked) == count  # nobody polls any more


# --- refusals and ExtractPipeline -------------------------------------------


@pytest.mark.parametrize("rpc", ["CreateJob", "RerunPipeline", "ActivateAuth"])
def test_rpcs_the_gateway_does_not_serve_say_so(rpc: str) -> None:
    err = refusal(rpc)
    assert isinstance(err, Unimplemented) and len(str(err)) > 20


async def test_extract_pipeline_wraps_the_spec_in_a_restore_op() -> None:
    spec = pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name="edges"), transform=pps.Transform(cmd=["python3", "e.py"])
    )
    ask = FakeAsk(GetPipelineSpec=lambda _: internal.PipelineSpec(spec=spec, version=2))
    req = admin.ExtractPipelineRequest(pipeline=pps.Pipeline(name="edges"))
    op = await admin_grpc.extract_pipeline(ask, req)
    assert op.op1_7.pipeline == spec
    asked = ask.asked[0][1]
    assert isinstance(asked, internal.PipelineSpecRequest) and asked.pipeline.name == "edges"
    with pytest.raises(InvalidArgument, match="pipeline name"):
        await admin_grpc.extract_pipeline(ask, admin.ExtractPipelineRequest())
