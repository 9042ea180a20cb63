"""Bounds and error classes against a real cluster: every refusal is
INVALID_ARGUMENT / 400 naming the limit, malformed protobuf and bad JSON are
the client's mistake, a full disk is RESOURCE_EXHAUSTED / 507, messages are
one line; a 1,000-level path works end to end; a pipeline whose input repo
is force-deleted fails with that reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from tests.support.cluster import ROOT, Cluster, wait_until


def started(data: Path, **env: str) -> Iterator[Cluster]:
    """A ready cluster (patient: the test machine may be loaded)."""
    c = Cluster(data, **env).start()
    try:
        c.wait_ready(timeout=180)
        yield c
    finally:
        c.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started(tmp_path_factory.mktemp("bounds") / "data")


@pytest.fixture(scope="module")
def channel(cluster: Cluster) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as ch:
        yield ch


@pytest.fixture
def api(channel: grpc.Channel) -> pfs_pb2_grpc.APIStub:
    stub = pfs_pb2_grpc.APIStub(channel)
    pps_pb2_grpc.APIStub(channel).DeleteAll(Empty(), timeout=60)
    stub.DeleteRepo(pfs.DeleteRepoRequest(all=True, force=True), timeout=30)
    return stub


def refused(call: Any, *args: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=30)
    err: Any = info.value
    return err.code(), str(err.details())


def http(cluster: Cluster, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{cluster.http_port}{path}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def repo(name: str) -> pfs.Repo:
    return pfs.Repo(name=name)


def put(api: pfs_pb2_grpc.APIStub, commit: pfs.Commit, path: str, data: bytes) -> None:
    api.PutFile(
        iter([pfs.PutFileRequest(file=pfs.File(commit=commit, path=path), value=data)]), timeout=60
    )


# --- bounds ---------------------------------------------------------------------


def test_name_and_path_bounds_are_invalid_argument_naming_the_limit(
    api: pfs_pb2_grpc.APIStub, channel: grpc.Channel
) -> None:
    code, msg = refused(api.CreateRepo, pfs.CreateRepoRequest(repo=repo("r" * 64)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "repo name" in msg and "limit of 63 bytes" in msg and "64 bytes" in msg
    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("r" * 63)), timeout=30)
    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("data")), timeout=30)
    code, msg = refused(
        api.CreateBranch,
        pfs.CreateBranchRequest(branch=pfs.Branch(repo=repo("data"), name="b" * 256)),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit of 255 bytes" in msg
    head = pfs.Commit(repo=repo("data"))
    commit = api.StartCommit(pfs.StartCommitRequest(parent=head, branch="master"), timeout=30)
    for path, limit in (
        ("/a/" + "c" * 256, "limit of 255 bytes"),
        ("/x" * 2100, "limit of 4096 bytes"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            put(api, commit, path, b"x")
        err: Any = info.value
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and limit in err.details()
    api.FinishCommit(pfs.FinishCommitRequest(commit=commit), timeout=60)
    spec = pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name="p" * 49),
        transform=pps.Transform(cmd=["true"]),
        input=pps.Input(atom=pps.AtomInput(repo="data", glob="/*")),
    )
    code, msg = refused(pps_pb2_grpc.APIStub(channel).CreatePipeline, spec)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "48" in msg
    names = [r.repo.name for r in api.ListRepo(pfs.ListRepoRequest(), timeout=30).repo_info]
    assert sorted(names) == sorted(["r" * 63, "data"])


def test_spec_nesting_depth_is_bounded(api: pfs_pb2_grpc.APIStub, channel: grpc.Channel) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("data")), timeout=30)
    node = pps.Input(atom=pps.AtomInput(repo="data", glob="/*"))
    for i in range(40):
        leaf = pps.Input(atom=pps.AtomInput(repo="data", glob="/*", name=f"in{i}"))
        node = pps.Input(cross=[node, leaf])
    spec = pps.CreatePipelineRequest(
        pipeline=pps.Pipeline(name="deep"), transform=pps.Transform(cmd=["true"]), input=node
    )
    code, msg = refused(pps_pb2_grpc.APIStub(channel).CreatePipeline, spec)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit of 32 levels" in msg


# --- error classes ---------------------------------------------------------------


def test_malformed_protobuf_is_invalid_argument(channel: grpc.Channel) -> None:
    for method in ("/pfs.API/CreateRepo", "/pps.API/InspectPipeline", "/pfs.API/ListFile"):
        raw: Any = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\xff\xff\xff\x0f garbage", timeout=10)
        err: Any = info.value
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert "malformed request" in err.details()
    # a streaming upload with a bad message in it
    stream: Any = channel.stream_unary(
        "/pfs.API/PutFile", request_serializer=None, response_deserializer=None
    )
    with pytest.raises(grpc.RpcError) as info:
        stream(iter([b"\x0a\xff\xff"]), timeout=10)
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()


def test_bad_http_bodies_are_400_naming_the_problem(
    api: pfs_pb2_grpc.APIStub, cluster: Cluster
) -> None:
    for body, needle in (
        (b'{"repo": {"name": "\xff\xfe"}}', "not UTF-8"),
        (b'{"repo": ', "bad CreateRepoRequest body"),
        (b"[" * 10_000 + b"]" * 10_000, "levels of nesting"),
        (b'{"repo": {"name": 5}}', "bad CreateRepoRequest body"),
        (b'{"repo": [1, 2]}', "bad CreateRepoRequest body"),
    ):
        status, reply = http(cluster, "/api/pfs/CreateRepo", body)
        assert status == 400, (body[:40], reply)
        assert needle in reply["error"]["message"], reply
    assert api.ListRepo(pfs.ListRepoRequest(), timeout=30).repo_info == []


def test_messages_are_one_line(api: pfs_pb2_grpc.APIStub, cluster: Cluster) -> None:
    code, msg = refused(api.CreateRepo, pfs.CreateRepoRequest(repo=repo("bad\nname\x1b[31m")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "\n" not in msg and "\x1b" not in msg and "bad\\nname\\x1b" in msg
    out = pachctl(cluster, "create-repo", "two\nlines")
    assert out.returncode != 0
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "two\\nlines" in lines[0], lines


def pachctl(
    cluster: Cluster, *args: str, port: int | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {
        **os.environ,
        "PACHD_ADDRESS": f"127.0.0.1:{port or cluster.grpc_port}",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "programs.pachctl", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )


# --- deep paths ------------------------------------------------------------------


def test_a_thousand_level_path_end_to_end(api: pfs_pb2_grpc.APIStub, cluster: Cluster) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("deep")), timeout=30)
    levels = "/" + "/".join(f"d{i % 10}" for i in range(1000))
    path = levels + "/leaf.txt"
    head = pfs.Commit(repo=repo("deep"))
    commit = api.StartCommit(pfs.StartCommitRequest(parent=head, branch="master"), timeout=30)
    put(api, commit, path, b"deep data\n")
    put(api, commit, "/top.txt", b"top\n")
    api.FinishCommit(pfs.FinishCommitRequest(commit=commit), timeout=120)
    at = pfs.Commit(repo=repo("deep"), id="master")
    listed = api.ListFile(pfs.ListFileRequest(file=pfs.File(commit=at, path=levels)), timeout=60)
    assert [f.file.path for f in listed.file_info] == [path]
    got = b"".join(
        r.value
        for r in api.GetFile(pfs.GetFileRequest(file=pfs.File(commit=at, path=path)), timeout=60)
    )
    assert got == b"deep data\n"
    globbed = api.GlobFile(pfs.GlobFileRequest(commit=at, pattern="/**.txt"), timeout=60)
    assert sorted(f.file.path for f in globbed.file_info) == sorted([path, "/top.txt"])
    # the same through pachctl and HTTP
    out = pachctl(cluster, "get-file", "deep", "master", path)
    assert out.returncode == 0 and out.stdout == b"deep data\n", out.stderr[-500:]
    # delete it again: the branch is not wedged
    nxt = api.StartCommit(pfs.StartCommitRequest(parent=head, branch="master"), timeout=30)
    api.DeleteFile(pfs.DeleteFileRequest(file=pfs.File(commit=nxt, path="/d0")), timeout=30)
    api.FinishCommit(pfs.FinishCommitRequest(commit=nxt), timeout=120)
    rest = api.ListFile(pfs.ListFileRequest(file=pfs.File(commit=at, path="/")), timeout=60)
    assert [f.file.path for f in rest.file_info] == ["/top.txt"]
    info = api.InspectCommit(pfs.InspectCommitRequest(commit=at), timeout=30)
    assert info.finished.seconds > 0


# --- a full disk ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_is_resource_exhausted_naming_it(
    small_disk: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    objects = small_disk / "objects"
    for c in started(tmp_path_factory.mktemp("full") / "data", PACH_OBJECT_DIR=str(objects)):
        with grpc.insecure_channel(f"127.0.0.1:{c.grpc_port}") as ch:
            stub = pfs_pb2_grpc.APIStub(ch)
            stub.CreateRepo(pfs.CreateRepoRequest(repo=repo("data")), timeout=30)
            head = pfs.Commit(repo=repo("data"))
            commit = stub.StartCommit(
                pfs.StartCommitRequest(parent=head, branch="master"), timeout=30
            )
            with pytest.raises(grpc.RpcError) as info:
                put(stub, commit, "/big", os.urandom(8 << 20))
            err: Any = info.value
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
            assert "disk full" in err.details() and str(small_disk) in err.details()
            status, reply = http_upload(c, "/big2", os.urandom(8 << 20))
            assert status == 507, reply
            assert "disk full" in reply["error"]["message"]
            # pachctl says what happened, not "cannot reach pachd"
            big = tmp_path_factory.mktemp("f") / "big"
            big.write_bytes(os.urandom(8 << 20))
            out = pachctl(
                c, "put-file", "data", commit.id, "/big3", "-f", str(big), port=c.grpc_port
            )
            text = out.stderr.decode()
            assert out.returncode != 0 and "disk full" in text and "cannot reach" not in text, text
            assert len(text.strip().splitlines()) == 1


def http_upload(c: Cluster, path: str, data: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{c.http_port}/pfs/data/master{path}",
        data=data,
        method="PUT",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body or b"{}")
        except ValueError:
            return err.code, {"error": {"message": body.decode(errors="replace")}}


# --- a force-deleted input ----------------------------------------------------------


def test_a_pipeline_whose_input_repo_is_force_deleted_fails(
    api: pfs_pb2_grpc.APIStub, channel: grpc.Channel, cluster: Cluster
) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("images")), timeout=30)
    stub = pps_pb2_grpc.APIStub(channel)
    stub.CreatePipeline(
        pps.CreatePipelineRequest(
            pipeline=pps.Pipeline(name="copy"),
            transform=pps.Transform(cmd=["sh"], stdin=["cp -r /pfs/images/. /pfs/out/"]),
            input=pps.Input(atom=pps.AtomInput(repo="images", glob="/*")),
        ),
        timeout=60,
    )
    out = pachctl(cluster, "delete-repo", "-f", "images")
    assert out.returncode == 0, out.stderr

    def failed() -> bool:
        info = stub.InspectPipeline(
            pps.InspectPipelineRequest(pipeline=pps.Pipeline(name="copy")), timeout=30
        )
        return bool(info.state == pps.PIPELINE_FAILURE)

    wait_until(failed, 30)
    info = stub.InspectPipeline(
        pps.InspectPipelineRequest(pipeline=pps.Pipeline(name="copy")), timeout=30
    )
    assert "images" in info.reason and "deleted" in info.reason
    listed = stub.ListPipeline(pps.ListPipelineRequest(), timeout=30).pipeline_info
    assert [(p.pipeline.name, p.state) for p in listed] == [("copy", pps.PIPELINE_FAILURE)]
    out = pachctl(cluster, "list-pipeline")
    assert b"failure" in out.stdout.lower(), out.stdout
    time.sleep(0.5)  # a master's next look must not flip it back
    assert failed()
