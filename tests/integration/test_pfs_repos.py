"""Repos through the real cluster: gRPC (pfs.API on the gateway) and pachctl."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.support.cluster import ROOT, Cluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("pfs") / "data")


@pytest.fixture
def api(cluster: Cluster) -> Iterator[pfs_pb2_grpc.APIStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
    stub = pfs_pb2_grpc.APIStub(channel)
    stub.DeleteRepo(pfs.DeleteRepoRequest(all=True, force=True), timeout=10)
    try:
        yield stub
    finally:
        channel.close()


def pachctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}"}
    return subprocess.run(
        [sys.executable, "-m", "programs.pachctl", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def names(api: pfs_pb2_grpc.APIStub) -> list[str]:
    return [i.repo.name for i in api.ListRepo(pfs.ListRepoRequest(), timeout=10).repo_info]


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return, attr-defined]


def test_create_inspect_list_update_delete_over_grpc(api: pfs_pb2_grpc.APIStub) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="images"), description="pics"))
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="edges")))
    # Read-your-writes: visible at once, newest first.
    assert names(api) == ["edges", "images"]
    info = api.InspectRepo(pfs.InspectRepoRequest(repo=pfs.Repo(name="images")))
    assert info.description == "pics" and info.size_bytes == 0 and info.created.seconds > 0

    api.CreateRepo(
        pfs.CreateRepoRequest(repo=pfs.Repo(name="images"), description="photos", update=True)
    )
    info = api.InspectRepo(pfs.InspectRepoRequest(repo=pfs.Repo(name="images")))
    assert info.description == "photos"

    api.DeleteRepo(pfs.DeleteRepoRequest(repo=pfs.Repo(name="edges")))
    assert names(api) == ["images"]
    # A deleted name can be used again.
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="edges")))
    assert names(api) == ["edges", "images"]
    api.DeleteRepo(pfs.DeleteRepoRequest(all=True))
    assert names(api) == []


def test_bad_requests_get_precise_codes_and_change_nothing(api: pfs_pb2_grpc.APIStub) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="data")))
    create = api.CreateRepo
    assert code_of(lambda: create(pfs.CreateRepoRequest(repo=pfs.Repo(name="data")))) == (
        grpc.StatusCode.ALREADY_EXISTS
    )
    for bad in ("has space", "dots.not.ok", "slash/no", "ünï", ""):
        req = pfs.CreateRepoRequest(repo=pfs.Repo(name=bad))
        assert code_of(lambda r=req: create(r)) == grpc.StatusCode.INVALID_ARGUMENT, bad
    missing = pfs.Repo(name="nope")
    assert code_of(lambda: api.InspectRepo(pfs.InspectRepoRequest(repo=missing))) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert code_of(lambda: api.DeleteRepo(pfs.DeleteRepoRequest(repo=missing))) == (
        grpc.StatusCode.NOT_FOUND
    )
    both = pfs.DeleteRepoRequest(repo=pfs.Repo(name="data"), all=True)
    assert code_of(lambda: api.DeleteRepo(both)) == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing changed.
    assert names(api) == ["data"]
    info = api.InspectRepo(pfs.InspectRepoRequest(repo=pfs.Repo(name="data")))
    assert info.description == ""


def test_pachctl_repo_commands(cluster: Cluster, api: pfs_pb2_grpc.APIStub) -> None:
    assert pachctl(cluster, "create-repo", "images", "-d", "raw pictures").returncode == 0
    assert pachctl(cluster, "create-repo", "edges").returncode == 0

    listing = pachctl(cluster, "list-repo")
    assert listing.returncode == 0
    lines = [ln.rstrip() for ln in listing.stdout.splitlines()]
    assert lines[0].split() == ["NAME", "CREATED", "SIZE"]
    assert lines[0].index("CREATED") == 20 and lines[0].index("SIZE") >= 40  # tabwriter columns
    age = r"(Less than a second|1 second|\d+ seconds) ago"
    assert re.fullmatch(rf"edges {{15}}{age} +0B", lines[1]), lines[1]
    assert re.fullmatch(rf"images {{14}}{age} +0B", lines[2]), lines[2]
    assert lines[1].index("0B") == lines[2].index("0B") == lines[0].index("SIZE")  # aligned

    inspect = pachctl(cluster, "inspect-repo", "images")
    assert inspect.stdout.splitlines()[0] == "Name: images"
    assert "Description: raw pictures" in inspect.stdout
    assert "Size: 0B" in inspect.stdout and "ago" in inspect.stdout

    raw = json.loads(pachctl(cluster, "inspect-repo", "images", "--raw").stdout)
    assert raw["repo"]["name"] == "images" and raw["description"] == "raw pictures"

    assert pachctl(cluster, "update-repo", "images", "-d", "new").returncode == 0
    assert "Description: new" in pachctl(cluster, "inspect-repo", "images").stdout

    dup = pachctl(cluster, "create-repo", "images")
    assert dup.returncode == 1
    assert dup.stderr.strip().splitlines() == [dup.stderr.strip()]  # one line
    assert "images already exists" in dup.stderr

    bad = pachctl(cluster, "create-repo", "no spaces")
    assert bad.returncode == 1 and "invalid" in bad.stderr

    neither = pachctl(cluster, "delete-repo")
    assert neither.returncode == 1 and "--all" in neither.stderr

    assert pachctl(cluster, "delete-repo", "edges").returncode == 0
    assert names(api) == ["images"]
    assert pachctl(cluster, "delete-repo", "--all").returncode == 0
    assert names(api) == []


def test_repos_survive_a_pfs_restart(cluster: Cluster, api: pfs_pb2_grpc.APIStub) -> None:
    """The read model resumes from its checkpoint; nothing is lost or doubled."""
    import os as _os
    import signal

    from tests.support.cluster import wait_until

    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="kept"), description="k"))
    old = cluster.state()["processes"]["pfs-0"]["pid"]
    _os.kill(old, signal.SIGKILL)
    wait_until(lambda: cluster.state()["processes"]["pfs-0"]["pid"] not in (old, None), 30)

    def answers() -> bool:
        try:
            return names(api) == ["kept"]
        except grpc.RpcError:
            return False

    wait_until(answers, 30)
    info = api.InspectRepo(pfs.InspectRepoRequest(repo=pfs.Repo(name="kept")))
    assert info.description == "k"
