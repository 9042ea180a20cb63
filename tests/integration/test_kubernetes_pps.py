"""pps with ``PACH_PPS_RUNNER=kubernetes``: the real cluster (nats-server,
every service, the gateway) with its pipeline workers as
ReplicationControllers in a Kubernetes API emulator process
(tests/support/kube_emulator.py), over a pipeline's whole life driven
through the public gRPC API: create, update, stop, start, delete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from tests.support import kube_emulator
from tests.support.cluster import Cluster, running, wait_until

NS = "pach"


@pytest.fixture(scope="module")
def k8s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with kube_emulator.start(tmp_path_factory.mktemp("kube")) as (port, _config):
        yield port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, k8s: int) -> Iterator[Cluster]:
    config = kube_emulator.kubeconfig(k8s, tmp_path_factory.mktemp("kubeconfig") / "config")
    yield from running(
        tmp_path_factory.mktemp("pps-k8s") / "data",
        PACH_PPS_RUNNER="kubernetes",
        PACH_KUBECONFIG=str(config),
        PACH_PPS_NAMESPACE=NS,
        PACH_PPS_WORKER_IMAGE="reg.example/pachyderm-es:2.0",
    )


def controller(port: int, name: str) -> dict[str, Any] | None:
    url = f"http://127.0.0.1:{port}/api/v1/namespaces/{NS}/replicationcontrollers/{name}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return dict(json.load(resp))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def replicas(port: int, name: str) -> int | None:
    got = controller(port, name)
    return None if got is None else int(got["spec"]["replicas"])


def spec(image: str, parallelism: int, update: bool = False) -> pps.CreatePipelineRequest:
    return pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name="edges"),
        transform=pps.Transform(image=image, cmd=["sh"], stdin=["cp -r /pfs/images/* /pfs/out/"]),
        parallelism_spec=pps.ParallelismSpec(constant=parallelism),
        input=pps.Input(atom=pps.AtomInput(repo="images", glob="/*")),
        update=update,
    )


def test_a_pipelines_workers_are_pods_over_its_life(cluster: Cluster, k8s: int) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
    try:
        files = pfs_pb2_grpc.APIStub(channel)
        api = pps_pb2_grpc.APIStub(channel)
        files.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="images")), timeout=30)
        pipeline = pps.Pipeline(name="edges")

        api.CreatePipeline(spec("alpine:3.20", 2), timeout=30)
        wait_until(lambda: replicas(k8s, "pipeline-edges-v1") == 2, timeout=60)
        rc: Any = controller(k8s, "pipeline-edges-v1")
        user, worker = rc["spec"]["template"]["spec"]["containers"]
        assert user["image"] == "alpine:3.20"
        assert worker["image"] == "reg.example/pachyderm-es:2.0"

        api.CreatePipeline(spec("alpine:3.21", 3, update=True), timeout=30)
        wait_until(lambda: replicas(k8s, "pipeline-edges-v2") == 3, timeout=60)
        wait_until(lambda: controller(k8s, "pipeline-edges-v1") is None, timeout=30)

        api.StopPipeline(pps.StopPipelineRequest(pipeline=pipeline), timeout=30)
        wait_until(lambda: replicas(k8s, "pipeline-edges-v2") == 0, timeout=60)
        api.StartPipeline(pps.StartPipelineRequest(pipeline=pipeline), timeout=30)
        wait_until(lambda: replicas(k8s, "pipeline-edges-v2") == 3, timeout=60)

        api.DeletePipeline(pps.DeletePipelineRequest(pipeline=pipeline), timeout=30)
        wait_until(lambda: controller(k8s, "pipeline-edges-v2") is None, timeout=60)
    finally:
        channel.close()


def probe(cluster: Cluster, *argv: str, role: str = "pfs", password: str | None = None) -> int:
    """``python -m libs.deploy.probe``, as a backend pod's probe runs it."""
    user, real = cluster.nats_credential(role)
    env = {
        **os.environ,
        "PACH_NATS_URL": cluster.nats_address(),
        "PACH_NATS_USER": user,
        "PACH_NATS_PASSWORD": real if password is None else password,
    }
    return subprocess.run(
        [sys.executable, "-m", "libs.deploy.probe", *argv], env=env, timeout=60, check=False
    ).returncode


def test_the_backends_probe_asks_the_services_health_over_nats(cluster: Cluster) -> None:
    assert probe(cluster, "pfs") == 0
    assert probe(cluster, "pps", "--live", role="pps") == 0
    assert probe(cluster, "admin", role="gateway") == 0  # any user that may send qry.>
    assert probe(cluster, "pfs", password="wrong") == 1  # NATS refuses the connection
    assert probe(cluster, "nosuch") == 1  # nobody answers
    assert probe(cluster) == 2 and probe(cluster, "pfs", "--bogus") == 2
