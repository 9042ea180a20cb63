"""An idle cluster is quiet: once a pipeline's job finished, no service logs
anything at warning level (an idle fetch is not an interruption). And the
gateway's first calls succeed: a command sent the moment the gRPC port
accepts connections, before pfs serves, waits for it instead of finding "no
pfs service is serving"."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from programs.cluster.natsserver import NatsServer
from tests.integration.test_gateway import Procs
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


@pytest.fixture
def procs(tmp_path: Path, nats_server: NatsServer) -> Iterator[Procs]:
    ps = Procs(tmp_path, nats_server.url)
    try:
        yield ps
    finally:
        for p in ps.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


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


def test_a_call_before_its_backend_serves_waits_for_it(procs: Procs) -> None:
    """The gateway's port opens while pfs and pps are not up yet: a call sent
    then is held until they serve, and succeeds."""
    for service in ("admin", "auth", "enterprise", "gateway"):
        procs.start(service)
    _accepting(procs.grpc_port)
    done: list[object] = []

    def call() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{procs.grpc_port}") as channel:
            pfs_api, pps_api = pfs_pb2_grpc.APIStub(channel), pps_pb2_grpc.APIStub(channel)
            try:
                pfs_api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="first")), timeout=60)
                done.append(pps_api.ListPipeline(pps.ListPipelineRequest(), timeout=60))
            except grpc.RpcError as err:
                done.append(err)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(1.0)
    assert done == [], done  # held, not refused
    procs.start("pfs")
    procs.start("pps")
    caller.join(90)
    assert len(done) == 1 and isinstance(done[0], pps.PipelineInfos), done
    with grpc.insecure_channel(f"127.0.0.1:{procs.grpc_port}") as channel:
        repos = pfs_pb2_grpc.APIStub(channel).ListRepo(pfs.ListRepoRequest(), timeout=30)
    assert [r.repo.name for r in repos.repo_info] == ["first"]
