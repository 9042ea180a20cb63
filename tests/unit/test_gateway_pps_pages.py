"""The dashboard's pipeline and job pages, rendered from a fake bus: what
they show, that every value is escaped, and a bad page number."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from libs.api.internal import pps_work_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pps import pps_pb2 as pps
from libs.bus import Bus
from libs.objects import ObjectStore
from services.gateway.dashboard import pages
from services.gateway.errors import http_errors
from tests.unit.test_gateway_pps_http import FakeBus

EDGES_INPUT = pps.Input(
    cross=[
        pps.Input(atom=pps.AtomInput(repo="images", glob="/*")),
        pps.Input(union=[pps.Input(cron=pps.CronInput(name="tick", spec="@every 1m"))]),
    ]
)


def pipeline_info(name: str, state: int) -> pps.PipelineInfo:
    return pps.PipelineInfo(
        pipeline=pps.Pipeline(name=name),
        input=EDGES_INPUT,
        output_branch="master",
        state=state,  # type: ignore[arg-type]
        transform=pps.Transform(cmd=["python3", "/edges.py"], image="opencv"),
        created_at=Timestamp(seconds=1_700_000_000),
        job_counts={pps.JOB_SUCCESS: 2, pps.JOB_RUNNING: 1},
        version=3,
        description="finds <edges>",
    )


def job_info(job_id: str, state: int) -> pps.JobInfo:
    return pps.JobInfo(
        job=pps.Job(id=job_id),
        pipeline=pps.Pipeline(name="edges"),
        state=state,  # type: ignore[arg-type]
        output_commit=pfs.Commit(repo=pfs.Repo(name="edges"), id="c" * 32),
        data_processed=3,
        data_skipped=1,
        data_total=5,
        started=Timestamp(seconds=1_700_000_000),
        finished=Timestamp(seconds=1_700_000_004),
        reason="datum <d1> failed" if state == pps.JOB_FAILURE else "",
    )


def bus() -> FakeBus:
    def logs(request: Message) -> Message:
        assert isinstance(request, internal.GetLogsPageRequest)
        if request.after:
            return internal.LogPage(next=request.after)
        assert request.request.job.id == "j1" and request.request.tail == pages.LOG_LINES_SHOWN
        return internal.LogPage(
            messages=[
                pps.LogMessage(message="edge <found>\n", worker_id="w0", datum_id="d1"),
                pps.LogMessage(message="done", worker_id="w1", datum_id="d2"),
            ],
            next=2,
        )

    def datums(request: Message) -> Message:
        assert isinstance(request, pps.ListDatumRequest) and request.page_size == 100
        return pps.ListDatumResponse(
            datum_infos=[
                pps.DatumInfo(
                    datum=pps.Datum(id="d1"),
                    state=pps.FAILED,
                    data=[
                        pfs.FileInfo(
                            file=pfs.File(
                                commit=pfs.Commit(repo=pfs.Repo(name="images")), path="/a.png"
                            )
                        )
                    ],
                    stats=pps.ProcessStats(process_time=Duration(seconds=2)),
                ),
                pps.DatumInfo(datum=pps.Datum(id="d2"), state=pps.SKIPPED),
            ],
            page=request.page,
            total_pages=3,
        )

    return FakeBus(
        pps_ListPipeline=lambda _: pps.PipelineInfos(
            pipeline_info=[
                pipeline_info("edges", pps.PIPELINE_RUNNING),
                pipeline_info("<montage>", pps.PIPELINE_FAILURE),
            ]
        ),
        pps_InspectPipeline=lambda _: pipeline_info("edges", pps.PIPELINE_RUNNING),
        pps_ListJob=lambda _: pps.JobInfos(
            job_info=[job_info("j1", pps.JOB_FAILURE), job_info("j0", pps.JOB_SUCCESS)]
        ),
        pps_InspectJob=lambda _: job_info("j1", pps.JOB_FAILURE),
        pps_ListDatum=datums,
        pps_GetLogsPage=logs,
    )


async def client_for(fake: FakeBus) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application(middlewares=[http_errors])
    pages.mount(app, cast(Bus, fake), cast(ObjectStore, None))
    async with TestClient(TestServer(app)) as client:
        yield client


async def get(client: TestClient[web.Request, web.Application], path: str) -> tuple[int, str]:
    resp = await client.get(path)
    return resp.status, await resp.text()


async def test_the_pipelines_page_lists_name_input_output_and_state() -> None:
    async for client in client_for(bus()):
        status, text = await get(client, "/pipelines")
    assert status == 200
    assert '<a href="/pipelines/edges">edges</a>' in text
    assert "(images:/* \N{VECTOR OR CROSS PRODUCT} (tick:@every 1m))" in text
    assert '<a href="/repos/edges">edges/master</a>' in text
    assert '<span class="running">running</span>' in text
    assert "&lt;montage&gt;" in text and "<montage>" not in text
    assert "/pipelines/%3Cmontage%3E" in text


async def test_the_pipeline_page_shows_its_spec_and_jobs() -> None:
    fake = bus()
    async for client in client_for(fake):
        status, text = await get(client, "/pipelines/edges")
    assert status == 200
    assert "<h1>Pipeline edges</h1>" in text and "finds &lt;edges&gt;" in text
    assert "<code>python3 /edges.py</code>" in text and "opencv" in text
    assert "running: 1, success: 2" in text
    assert '<a href="/jobs/j1"><code>j1</code></a>' in text
    assert '<progress value="4" max="5"></progress> 3 + 1 / 5' in text
    assert '<span class="failure">failure</span> datum &lt;d1&gt; failed' in text
    assert "4s" in text  # duration
    assert f"/repos/edges/commits/{'c' * 32}/" in text
    listed = [r for n, _, r, _ in fake.asked if n == "pps.ListJob"]
    assert isinstance(listed[0], pps.ListJobRequest) and listed[0].pipeline.name == "edges"


async def test_the_job_page_shows_datums_and_logs() -> None:
    async for client in client_for(bus()):
        status, text = await get(client, "/jobs/j1?page=1")
    assert status == 200
    assert 'data-job="j1" data-datum="">Job <code>j1</code></h1>' in text
    assert '<a href="/pipelines/edges">edges</a>' in text
    # a failed datum's logs are one click away; timings are charted
    assert '<a href="/jobs/j1?datum=d1#logs">failed: logs</a>' in text
    assert '<svg class="timing"' in text and '<rect class="process"' in text
    assert '<progress id="job-progress"' in text and '<script src="/static/pages.js">' in text
    assert '<span class="failed">failed</span>' in text and "images/a.png" in text
    assert '<span class="skipped">skipped</span>' in text and "2s" in text
    assert "Page 2 of 3" in text
    assert '<a href="/jobs/j1?page=0">previous</a>' in text
    assert '<a href="/jobs/j1?page=2">next</a>' in text
    assert "w0 d1 edge &lt;found&gt;" in text and "w1 d2 done" in text


async def test_a_bad_datum_page_number_is_refused() -> None:
    async for client in client_for(bus()):
        resp = await client.get("/jobs/j1?page=-1")
        assert resp.status == 400
        assert "page must be a number" in (await resp.json())["error"]["message"]
