"""A whole embedded cluster on the azure object-store backend
(PACH_OBJECT_BACKEND=azure, Azurite as the blob service): create a repo, put
files, run a pipeline, read its output, with the contents really stored as
blobs in the container (listed through the SDK) and nothing in the local
object directory. Skipped only when Azurite is not installed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from azure.storage.blob.aio import BlobServiceClient

from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from tests.servers.cloud import AZURE_ACCOUNT, AZURE_KEY, AZURITE, AzureEmulator, start_azurite
from tests.support.cluster import ROOT, Cluster, running, wait_until

pytestmark = pytest.mark.skipif(
    not AZURITE.exists(), reason="Azurite is not installed (make test-deps)"
)

CONTAINER = "pach-cluster"
PREFIX = "pach"


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureEmulator]:
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield server
    finally:
        server.stop()


def _service(azure: AzureEmulator) -> BlobServiceClient:
    credential = {"account_name": AZURE_ACCOUNT, "account_key": AZURE_KEY}
    return BlobServiceClient(azure.endpoint, credential=credential)


async def _create_container(azure: AzureEmulator) -> None:
    async with _service(azure) as svc:
        await svc.get_container_client(CONTAINER).create_container()


async def _blobs(azure: AzureEmulator) -> dict[str, int]:
    async with _service(azure) as svc:
        container = svc.get_container_client(CONTAINER)
        return {b.name: int(b.size) async for b in container.list_blobs()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, azurite: AzureEmulator) -> Iterator[Cluster]:
    asyncio.run(_create_container(azurite))
    env = {
        **azurite.env(),
        "PACH_OBJECT_BACKEND": "azure",
        "PACH_AZURE_CONTAINER": CONTAINER,
        "PACH_AZURE_PREFIX": PREFIX,
    }
    yield from running(tmp_path_factory.mktemp("azure") / "data", **env)


def pachctl(cluster: Cluster, *args: str, stdin: bytes = b"") -> str:
    env = {**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "programs.pachctl", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_repo_files_and_a_pipeline_live_in_the_azure_container(
    cluster: Cluster, azurite: AzureEmulator, tmp_path: Path
) -> None:
    big = os.urandom(3 << 20)
    (tmp_path / "big.bin").write_bytes(big)
    pachctl(cluster, "create-repo", "words")
    pachctl(cluster, "put-file", "words", "master", "/a.txt", stdin=b"hello azure\n")
    pachctl(cluster, "put-file", "words", "master", "/big.bin", "-f", str(tmp_path / "big.bin"))
    assert pachctl(cluster, "get-file", "words", "master", "/a.txt") == "hello azure\n"

    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pps_pb2_grpc.APIStub(channel)
        api.CreatePipeline(
            pps.CreatePipelineRequest(
                pipeline=pps.Pipeline(name="shout"),
                transform=pps.Transform(
                    cmd=["sh", "-c", "tr a-z A-Z < /pfs/words/a.txt > /pfs/out/a.txt"]
                ),
                input=pps.Input(atom=pps.AtomInput(repo="words", glob="/")),
            ),
            timeout=30,
        )

        def finished() -> pps.JobInfo | None:
            req = pps.ListJobRequest(pipeline=pps.Pipeline(name="shout"))
            jobs = list(api.ListJob(req, timeout=30).job_info)
            return jobs[0] if jobs and jobs[0].HasField("finished") else None

        wait_until(lambda: finished() is not None, 120)
        job = finished()
        assert job is not None and job.state == pps.JOB_SUCCESS, job and job.reason

    assert pachctl(cluster, "get-file", "shout", "master", "/a.txt") == "HELLO AZURE\n"
    out = subprocess.run(
        [sys.executable, "-m", "programs.pachctl", "get-file", "words", "master", "/big.bin"],
        cwd=ROOT,
        env={**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}"},
        capture_output=True,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout == big, out.stderr.decode()

    # The contents are blobs under the configured prefix, nowhere else.
    blobs = asyncio.run(_blobs(azurite))
    assert blobs and all(name.startswith(PREFIX + "/") for name in blobs), sorted(blobs)[:5]
    assert sum(blobs.values()) >= len(big)
    kinds = {name.split("/")[1] for name in blobs}
    assert {"chunks", "trees"} <= kinds, kinds
    local = cluster.data_dir / "objects"
    assert not local.exists() or not any(p.is_file() for p in local.rglob("*"))
