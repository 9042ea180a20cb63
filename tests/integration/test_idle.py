"""An idle cluster is quiet: once a pipeline's job finished, no service logs
anything at warning level (an idle fetch is not an interruption). And the
gateway's first call succeeds: a command sent the moment the gRPC port
accepts connections waits for its backend instead of finding "no pfs
service is serving"."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from tests.support import idle
from tests.support.cluster import Cluster, running

QUIET_S = 20.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from running(tmp_path / "data")


def test_an_idle_cluster_logs_no_warning(cluster: Cluster) -> None:
    idle.settle(cluster, 1)
    offset = cluster.log.stat().st_size
    time.sleep(QUIET_S)
    lines = idle.warnings_in(cluster.log, offset)
    assert lines == [], lines[:5]
    # The services do log to this file (at info level): the silence is real.
    logged = {line.get("service") for line in idle.log_lines(cluster.log)}
    assert {"pfs", "pps", "gateway"} <= logged, logged


def _accepting(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def test_the_first_call_after_the_port_opens_succeeds(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "data").start()
    try:
        _accepting(cluster.grpc_port)
        with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
            pfs_api, pps_api = pfs_pb2_grpc.APIStub(channel), pps_pb2_grpc.APIStub(channel)
            pfs_api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="first")), timeout=90)
            pipelines = pps_api.ListPipeline(pps.ListPipelineRequest(), timeout=90)
            repos = pfs_api.ListRepo(pfs.ListRepoRequest(), timeout=30)
        assert list(pipelines.pipeline_info) == []
        assert [r.repo.name for r in repos.repo_info] == ["first"]
    finally:
        cluster.kill()
