"""kill -9 in the middle of a job, against the real cluster: of a worker, of
pps, and of nats-server. Each time the job still finishes SUCCESS with
exactly the right output (every datum's line once, in datum order: no datum
applied twice, none lost) and there is exactly one job for the commit.

The datums are slow enough (0.2 s each, 2 workers) that the kill lands
while the job runs; redelivery of an unacknowledged chunk is quick because
the cluster runs with a short ack wait."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from tests.support.cluster import Cluster, running, wait_until

DATUMS = 24


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(
        Path(tmp_path_factory.mktemp("pps-crash")) / "data",
        PACH_LOG_LEVEL="warning",
        PACH_PPS_ACK_WAIT_S="3",
    )


def _stubs(cluster: Cluster) -> tuple[pfs_pb2_grpc.APIStub, pps_pb2_grpc.APIStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
    return pfs_pb2_grpc.APIStub(channel), pps_pb2_grpc.APIStub(channel)


def _retrying(call: object, *args: object, timeout: float = 60.0) -> object:
    """A call that may meet a restarting service: retried on UNAVAILABLE."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call(*args, timeout=30)  # type: ignore[operator]
        except grpc.RpcError as err:
            if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _start_job(cluster: Cluster, name: str) -> tuple[pfs_pb2_grpc.APIStub, pps_pb2_grpc.APIStub]:
    api, ppsapi = _stubs(cluster)
    repo = pfs.Repo(name=f"{name}_in")
    api.CreateRepo(pfs.CreateRepoRequest(repo=repo), timeout=30)
    commit = api.StartCommit(pfs.StartCommitRequest(parent=pfs.Commit(repo=repo), branch="master"))
    api.PutFile(
        iter(
            pfs.PutFileRequest(file=pfs.File(commit=commit, path=f"/d{i:03}"), value=b"%d\n" % i)
            for i in range(DATUMS)
        ),
        timeout=60,
    )
    api.FinishCommit(pfs.FinishCommitRequest(commit=commit), timeout=60)
    ppsapi.CreatePipeline(
        pps.CreatePipelineRequest(
            pipeline=pps.Pipeline(name=name),
            transform=pps.Transform(
                cmd=["sh"],
                stdin=[
                    "sleep 0.2",
                    f"for f in /pfs/{repo.name}/*; do",
                    '  cp "$f" /pfs/out/; cat "$f" >> /pfs/out/all',
                    "done",
                ],
            ),
            input=pps.Input(atom=pps.AtomInput(repo=repo.name, glob="/*")),
            parallelism_spec=pps.ParallelismSpec(constant=2),
            chunk_spec=pps.ChunkSpec(number=2),
        ),
        timeout=30,
    )
    return api, ppsapi


def _jobs(ppsapi: pps_pb2_grpc.APIStub, name: str) -> list[pps.JobInfo]:
    req = pps.ListJobRequest(pipeline=pps.Pipeline(name=name))
    infos = _retrying(ppsapi.ListJob, req)
    assert isinstance(infos, pps.JobInfos)
    return list(infos.job_info)


def _wait_running(ppsapi: pps_pb2_grpc.APIStub, name: str) -> None:
    """Until the job has processed some datums, but not all."""

    def started() -> bool:
        jobs = _jobs(ppsapi, name)
        return bool(jobs) and 0 < jobs[0].data_processed < DATUMS

    wait_until(started, timeout=60)


def _finished(api: pfs_pb2_grpc.APIStub, ppsapi: pps_pb2_grpc.APIStub, name: str) -> None:
    def done() -> bool:
        jobs = _jobs(ppsapi, name)
        return bool(jobs) and jobs[0].state in (pps.JOB_SUCCESS, pps.JOB_FAILURE)

    wait_until(done, timeout=120)
    jobs = _jobs(ppsapi, name)
    assert len(jobs) == 1, [j.job.id for j in jobs]
    job = jobs[0]
    assert job.state == pps.JOB_SUCCESS, job.reason
    assert job.data_processed + job.data_skipped == DATUMS
    commit = job.output_commit
    req = pfs.GetFileRequest(file=pfs.File(commit=commit, path="/all"))
    merged = b"".join(r.value for r in _retrying_stream(api.GetFile, req))
    assert merged == b"".join(b"%d\n" % i for i in range(DATUMS))
    listed = api.ListFile(pfs.ListFileRequest(file=pfs.File(commit=commit, path="/")), timeout=30)
    assert sorted(f.file.path for f in listed.file_info) == sorted(
        ["/all", *(f"/d{i:03}" for i in range(DATUMS))]
    )


def _retrying_stream(call: object, req: object) -> list[Any]:
    deadline = time.monotonic() + 60
    while True:
        try:
            return list(call(req, timeout=30))  # type: ignore[operator]
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_kill_a_worker_mid_job(cluster: Cluster) -> None:
    api, ppsapi = _start_job(cluster, "crash_worker")
    _wait_running(ppsapi, "crash_worker")
    victims = cluster.workers("crash_worker")
    assert victims, "no worker process found for the pipeline"
    os.kill(victims[0].pid, signal.SIGKILL)
    _finished(api, ppsapi, "crash_worker")


def test_kill_pps_mid_job(cluster: Cluster) -> None:
    api, ppsapi = _start_job(cluster, "crash_pps")
    _wait_running(ppsapi, "crash_pps")
    pid = cluster.state()["processes"]["pps-0"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: cluster.state()["processes"]["pps-0"]["pid"] not in (pid, None), timeout=30)
    _finished(api, ppsapi, "crash_pps")


def test_kill_nats_server_mid_job(cluster: Cluster) -> None:
    api, ppsapi = _start_job(cluster, "crash_nats")
    _wait_running(ppsapi, "crash_nats")
    pid = cluster.state()["nats"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: cluster.state()["nats"]["pid"] not in (pid, None), timeout=30)
    _finished(api, ppsapi, "crash_nats")
