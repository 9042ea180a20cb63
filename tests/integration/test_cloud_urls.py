"""gs:// and as:// / wasb:// object URLs against real emulator processes
(the GCS emulator from PyPI, Azurite from npm): ``pachctl put-file -f`` of
one object and of a prefix (``-r``), the errors of a missing object and a
foreign account, and a pipeline's egress to each (a file larger than one
upload piece among them). The cluster reaches the emulators through its
object-store settings (``PACH_GCS_*``, ``PACH_AZURE_*``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import quote

import aiohttp
import grpc
import pytest
from azure.storage.blob.aio import BlobServiceClient

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from tests.servers.cloud import (
    AZURE_ACCOUNT,
    AZURE_KEY,
    AzureEmulator,
    GcsEmulator,
    start_azurite,
    start_gcs,
)
from tests.support.cluster import ROOT, Cluster, running, wait_until

BIG = 9 << 20  # more than one 8 MiB piece of a GCS resumable upload
CONTAINER = "pach-as"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    server = start_gcs(tmp_path_factory.mktemp("gcs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureEmulator]:
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, gcs: GcsEmulator, azure: AzureEmulator
) -> Iterator[Cluster]:
    asyncio.run(_seed(gcs, azure))
    yield from running(tmp_path_factory.mktemp("cloud") / "data", **gcs.env(), **azure.env())


# Objects written straight to the emulators (not through the code under test).
OBJECTS = {
    "in/a.txt": b"alpha\n",
    "in/sub/b.txt": b"beta\n" * 1000,
    "in/sub/c.bin": bytes(range(256)) * 64,
    "other/x": b"not under in/\n",
}


async def _seed(gcs: GcsEmulator, azure: AzureEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        for key, data in OBJECTS.items():
            url = f"{gcs.endpoint}/upload/storage/v1/b/{gcs.bucket}/o"
            async with http.post(url, params={"uploadType": "media", "name": key}, data=data) as r:
                assert r.status == 200, await r.text()
    async with _azure_service(azure) as svc:
        container = svc.get_container_client(CONTAINER)
        await container.create_container()
        for key, data in OBJECTS.items():
            await container.get_blob_client(key).upload_blob(data, overwrite=True)


def _azure_service(azure: AzureEmulator) -> BlobServiceClient:
    credential = {"account_name": AZURE_ACCOUNT, "account_key": AZURE_KEY}
    return BlobServiceClient(azure.endpoint, credential=credential)


async def _gcs_get(gcs: GcsEmulator, key: str) -> bytes | None:
    url = f"{gcs.endpoint}/storage/v1/b/{gcs.bucket}/o/{quote(key, safe='')}"
    async with aiohttp.ClientSession() as http, http.get(url, params={"alt": "media"}) as r:
        return await r.read() if r.status == 200 else None


async def _azure_get(azure: AzureEmulator, key: str) -> bytes:
    async with _azure_service(azure) as svc:
        blob = svc.get_container_client(CONTAINER).get_blob_client(key)
        return bytes(await (await blob.download_blob()).readall())


def pachctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "programs.pachctl", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=180,
    )


def ok(done: subprocess.CompletedProcess[bytes]) -> str:
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def files(cluster: Cluster, repo: str) -> dict[str, bytes]:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        commit = pfs.Commit(repo=pfs.Repo(name=repo), id="master")
        req = pfs.GlobFileRequest(commit=commit, pattern="**")
        out = {}
        for info in api.GlobFile(req, timeout=30).file_info:
            if info.file_type == pfs.FILE:
                get = pfs.GetFileRequest(file=pfs.File(commit=commit, path=info.file.path))
                out[info.file.path] = b"".join(r.value for r in api.GetFile(get, timeout=30))
        return out


@pytest.mark.parametrize(
    "scheme",
    ["gs", "as", "wasb"],
)
def test_put_file_from_an_object_and_a_prefix(
    cluster: Cluster, gcs: GcsEmulator, scheme: str
) -> None:
    base = {
        "gs": f"gs://{gcs.bucket}",
        "as": f"as://{CONTAINER}",
        "wasb": f"wasb://{CONTAINER}@{AZURE_ACCOUNT}.blob.core.windows.net",
    }[scheme]
    repo = f"put_{scheme}"
    ok(pachctl(cluster, "create-repo", repo))
    ok(pachctl(cluster, "put-file", repo, "master", "/one", "-f", f"{base}/in/sub/b.txt"))
    ok(pachctl(cluster, "put-file", repo, "master", "/tree", "-r", "-f", f"{base}/in"))
    assert files(cluster, repo) == {
        "/one": OBJECTS["in/sub/b.txt"],
        "/tree/a.txt": OBJECTS["in/a.txt"],
        "/tree/sub/b.txt": OBJECTS["in/sub/b.txt"],
        "/tree/sub/c.bin": OBJECTS["in/sub/c.bin"],
    }

    # Errors name what is wrong, and change nothing.
    missing = pachctl(cluster, "put-file", repo, "master", "/m", "-f", f"{base}/in/nope")
    assert missing.returncode != 0
    assert "in/nope" in missing.stderr.decode() and "no " in missing.stderr.decode()
    prefix = pachctl(cluster, "put-file", repo, "master", "/p", "-f", f"{base}/in/")
    assert prefix.returncode != 0 and "--recursive" in prefix.stderr.decode()
    assert "/m" not in files(cluster, repo) and "/p" not in files(cluster, repo)


def test_an_azure_url_of_another_account_is_refused(cluster: Cluster) -> None:
    ok(pachctl(cluster, "create-repo", "foreign"))
    url = f"wasb://{CONTAINER}@someoneelse.blob.core.windows.net/in/a.txt"
    done = pachctl(cluster, "put-file", "foreign", "master", "/a", "-f", url)
    assert done.returncode != 0
    err = done.stderr.decode()
    assert "someoneelse" in err and "not the cluster's Azure account" in err, err
    assert len(err.strip().splitlines()) == 1


def test_egress_to_gs_and_as(cluster: Cluster, gcs: GcsEmulator, azure: AzureEmulator) -> None:
    ok(pachctl(cluster, "create-repo", "eg_in"))
    big = os.urandom(BIG)
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        commit = pfs.Commit(repo=pfs.Repo(name="eg_in"), id="master")

        def reqs() -> Iterator[pfs.PutFileRequest]:
            yield pfs.PutFileRequest(file=pfs.File(commit=commit, path="/small"), value=b"s\n")
            for i in range(0, BIG, 1 << 20):
                yield pfs.PutFileRequest(
                    file=pfs.File(commit=commit, path="/d/big"), value=big[i : i + (1 << 20)]
                )

        api.PutFile(reqs(), timeout=120)
        ppsapi = pps_pb2_grpc.APIStub(channel)
        for name, url in (
            ("eg_gs", f"gs://{gcs.bucket}/egress/run1"),
            ("eg_as", f"as://{CONTAINER}/egress/run1"),
            ("eg_lost", "gs://no-such-bucket/x"),
        ):
            ppsapi.CreatePipeline(
                pps.CreatePipelineRequest(
                    pipeline=pps.Pipeline(name=name),
                    transform=pps.Transform(cmd=["sh", "-c", "cp -r /pfs/eg_in/* /pfs/out/"]),
                    input=pps.Input(atom=pps.AtomInput(repo="eg_in", glob="/")),
                    egress=pps.Egress(URL=url),
                ),
                timeout=30,
            )

        def finished(name: str) -> pps.JobInfo | None:
            req = pps.ListJobRequest(pipeline=pps.Pipeline(name=name))
            jobs = list(ppsapi.ListJob(req, timeout=30).job_info)
            return jobs[0] if jobs and jobs[0].HasField("finished") else None

        deadline = time.monotonic() + 120
        wait_until(lambda: all(finished(n) for n in ("eg_gs", "eg_as", "eg_lost")), 120)
        assert time.monotonic() < deadline
        for name in ("eg_gs", "eg_as"):
            job = finished(name)
            assert job is not None and job.state == pps.JOB_SUCCESS, job and job.reason
        lost = finished("eg_lost")
        assert lost is not None and lost.state == pps.JOB_FAILURE
        assert "gs://no-such-bucket/x" in lost.reason and "no-such-bucket" in lost.reason

    assert asyncio.run(_gcs_get(gcs, "egress/run1/small")) == b"s\n"
    assert asyncio.run(_gcs_get(gcs, "egress/run1/d/big")) == big
    assert asyncio.run(_azure_get(azure, "egress/run1/small")) == b"s\n"
    assert asyncio.run(_azure_get(azure, "egress/run1/d/big")) == big
