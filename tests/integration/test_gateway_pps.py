"""pps.API and admin.ExtractPipeline through the real cluster over gRPC (as
a Pachyderm 1.7 client speaks), plus the JSON API and the dashboard pages:
create a repo and a pipeline, wait for its job, list its datums, read its
logs, extract its spec; the RPCs the gateway refuses and bad requests."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from libs.api.admin import admin_pb2 as admin
from libs.api.admin import admin_pb2_grpc
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from tests.support.cluster import Cluster, running


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.pfs = pfs_pb2_grpc.APIStub(channel)
        self.pps = pps_pb2_grpc.APIStub(channel)
        self.admin = admin_pb2_grpc.APIStub(channel)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("gateway-pps") / "data")


@pytest.fixture
def api(cluster: Cluster) -> Iterator[Stubs]:
    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
    stubs = Stubs(channel)
    stubs.pps.DeleteAll(Empty(), timeout=60)
    stubs.pfs.DeleteRepo(pfs.DeleteRepoRequest(all=True, force=True), timeout=30)
    try:
        yield stubs
    finally:
        channel.close()


def code(err: grpc.RpcError) -> grpc.StatusCode:
    got: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
    return got


def details(err: grpc.RpcError) -> str:
    return str(err.details())  # type: ignore[attr-defined]


def put_commit(api: Stubs, repo: str, files: dict[str, bytes]) -> pfs.Commit:
    """One finished commit on ``repo``/master holding ``files``."""
    head = pfs.Commit(repo=pfs.Repo(name=repo))
    commit = api.pfs.StartCommit(pfs.StartCommitRequest(parent=head, branch="master"), timeout=10)
    for path, data in files.items():
        req = pfs.PutFileRequest(file=pfs.File(commit=commit, path=path), value=data)
        api.pfs.PutFile(iter([req]), timeout=30)
    api.pfs.FinishCommit(pfs.FinishCommitRequest(commit=commit), timeout=60)
    return commit


def edges_spec(name: str = "edges") -> pps.CreatePipelineRequest:
    return pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name=name),
        transform=pps.Transform(
            cmd=["sh"],
            stdin=[
                "for f in /pfs/images/*; do echo processing $(basename $f); done",
                "cp /pfs/images/* /pfs/out/",
            ],
        ),
        input=pps.Input(atom=pps.AtomInput(repo="images", glob="/*")),
        description="copies images",
    )


def http(cluster: Cluster, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{cluster.http_port}{path}",
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            kind = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(raw) if "json" in kind else raw.decode()
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_a_pipeline_job_datums_logs_and_spec_over_grpc(api: Stubs, cluster: Cluster) -> None:
    api.pfs.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="images")), timeout=10)
    api.pps.CreatePipeline(edges_spec(), timeout=60)

    infos = api.pps.ListPipeline(pps.ListPipelineRequest(), timeout=10).pipeline_info
    assert [i.pipeline.name for i in infos] == ["edges"]
    info = api.pps.InspectPipeline(
        pps.InspectPipelineRequest(pipeline=pps.Pipeline(name="edges")), timeout=10
    )
    assert info.input.atom.repo == "images" and info.output_branch == "master"

    commit = put_commit(api, "images", {"/a.png": b"aaa", "/b.png": b"bbbb"})
    flushed = list(api.pps.FlushJob(pps.FlushJobRequest(commits=[commit]), timeout=120))
    assert [j.pipeline.name for j in flushed] == ["edges"]
    job = flushed[0]
    assert job.state == pps.JOB_SUCCESS, job.reason
    assert (job.data_processed, job.data_total) == (2, 2)

    by_id = pps.InspectJobRequest(job=job.job, block_state=True)
    assert api.pps.InspectJob(by_id, timeout=30).state == pps.JOB_SUCCESS
    by_commit = pps.InspectJobRequest(output_commit=job.output_commit)
    assert api.pps.InspectJob(by_commit, timeout=10).job.id == job.job.id
    streamed = list(api.pps.ListJobStream(pps.ListJobRequest(pipeline=info.pipeline), timeout=10))
    assert [j.job.id for j in streamed] == [job.job.id]

    datums = list(api.pps.ListDatumStream(pps.ListDatumRequest(job=job.job), timeout=30))
    assert len(datums) == 2 and all(d.datum_info.state == pps.SUCCESS for d in datums)
    paged = api.pps.ListDatum(pps.ListDatumRequest(job=job.job, page_size=1, page=1), timeout=30)
    assert (len(paged.datum_infos), paged.page, paged.total_pages) == (1, 1, 2)
    one = api.pps.InspectDatum(
        pps.InspectDatumRequest(datum=pps.Datum(id=datums[0].datum_info.datum.id, job=job.job)),
        timeout=10,
    )
    assert one.state == pps.SUCCESS

    # The output commit holds the copies.
    out = pfs.GetFileRequest(file=pfs.File(commit=job.output_commit, path="/b.png"))
    assert b"".join(r.value for r in api.pfs.GetFile(out, timeout=30)) == b"bbbb"

    logs = [m.message for m in api.pps.GetLogs(pps.GetLogsRequest(job=job.job), timeout=30)]
    assert any("processing a.png" in line for line in logs), logs
    tail = list(api.pps.GetLogs(pps.GetLogsRequest(job=job.job, tail=1), timeout=30))
    assert len(tail) == 1

    extracted = api.admin.ExtractPipeline(
        admin.ExtractPipelineRequest(pipeline=pps.Pipeline(name="edges")), timeout=10
    )
    spec = extracted.op1_7.pipeline
    assert spec.pipeline.name == "edges" and list(spec.transform.stdin) == list(
        edges_spec().transform.stdin
    )

    # The JSON API and the dashboard show the same.
    status, body = http(cluster, "/api/pps/ListJobStream", {"pipeline": {"name": "edges"}})
    assert status == 200 and [j["job"]["id"] for j in body] == [job.job.id]
    status, page = http(cluster, "/pipelines/edges")
    assert status == 200 and job.job.id in page and "images:/*" in page
    status, page = http(cluster, f"/jobs/{job.job.id}")
    assert status == 200 and "processing a.png" in page


def test_follow_streams_new_log_lines_until_cancelled(api: Stubs) -> None:
    api.pfs.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="images")), timeout=10)
    api.pps.CreatePipeline(edges_spec(), timeout=60)
    got: list[str] = []
    call = api.pps.GetLogs(
        pps.GetLogsRequest(pipeline=pps.Pipeline(name="edges"), follow=True), timeout=120
    )

    def read() -> None:
        try:
            for m in call:
                got.append(m.message)
        except grpc.RpcError as err:
            assert code(err) == grpc.StatusCode.CANCELLED

    reader = threading.Thread(target=read)
    reader.start()
    commit = put_commit(api, "images", {"/c.png": b"c"})
    list(api.pps.FlushJob(pps.FlushJobRequest(commits=[commit]), timeout=120))
    deadline = time.monotonic() + 30
    while not any("processing c.png" in line for line in got) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reader.is_alive()  # still following
    call.cancel()  # type: ignore[attr-defined]
    reader.join(10)
    assert not reader.is_alive()
    assert any("processing c.png" in line for line in got), got


def test_refused_rpcs_and_bad_requests(api: Stubs, cluster: Cluster) -> None:
    for rpc, req in (
        ("CreateJob", pps.CreateJobRequest(pipeline=pps.Pipeline(name="x"))),
        ("RerunPipeline", pps.RerunPipelineRequest(pipeline=pps.Pipeline(name="x"))),
        ("ActivateAuth", pps.ActivateAuthRequest()),
    ):
        with pytest.raises(grpc.RpcError) as info:
            getattr(api.pps, rpc)(req, timeout=10)
        assert code(info.value) == grpc.StatusCode.UNIMPLEMENTED, rpc
        assert details(info.value), rpc
    with pytest.raises(grpc.RpcError) as info:
        api.pps.InspectJob(pps.InspectJobRequest(job=pps.Job(id="nope")), timeout=10)
    assert code(info.value) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        api.pps.InspectJob(pps.InspectJobRequest(), timeout=10)
    assert code(info.value) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        api.admin.ExtractPipeline(
            admin.ExtractPipelineRequest(pipeline=pps.Pipeline(name="nope")), timeout=10
        )
    assert code(info.value) == grpc.StatusCode.NOT_FOUND and "nope" in details(info.value)
    with pytest.raises(grpc.RpcError) as info:
        api.pps.CreatePipeline(edges_spec("bad name"), timeout=30)
    assert code(info.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert api.pps.ListPipeline(pps.ListPipelineRequest(), timeout=10).pipeline_info == []
    status, body = http(cluster, "/api/pps/CreateJob", {})
    assert status == 501 and "deprecated" in body["error"]["message"]
    status, body = http(cluster, "/api/pps/GetLogs", {"follow": True})
    assert status == 400
