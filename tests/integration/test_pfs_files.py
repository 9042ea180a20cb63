"""Files through the real cluster: put-file, get-file, list-file,
inspect-file, delete-file over gRPC, and finish-commit building the tree."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.support.cluster import Cluster, running

BLOCK = 512 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("pfs-files") / "data")


@pytest.fixture
def api(cluster: Cluster) -> Iterator[pfs_pb2_grpc.APIStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
    stub = pfs_pb2_grpc.APIStub(channel)
    stub.DeleteRepo(pfs.DeleteRepoRequest(all=True, force=True), timeout=10)
    stub.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="data")), timeout=10)
    try:
        yield stub
    finally:
        channel.close()


def status(err: grpc.RpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
    return code


def commit(ref: str) -> pfs.Commit:
    return pfs.Commit(repo=pfs.Repo(name="data"), id=ref)


def put(
    api: pfs_pb2_grpc.APIStub, ref: str, path: str, data: bytes, overwrite: bool = False
) -> None:
    def requests() -> Iterator[pfs.PutFileRequest]:
        first = pfs.PutFileRequest(file=pfs.File(commit=commit(ref), path=path))
        if overwrite:
            first.overwrite_index.CopyFrom(pfs.OverwriteIndex(index=0))
        yield first
        for i in range(0, len(data), BLOCK):
            yield pfs.PutFileRequest(value=data[i : i + BLOCK])

    api.PutFile(requests(), timeout=60)


def get(api: pfs_pb2_grpc.APIStub, ref: str, path: str, offset: int = 0, size: int = 0) -> bytes:
    req = pfs.GetFileRequest(
        file=pfs.File(commit=commit(ref), path=path), offset_bytes=offset, size_bytes=size
    )
    return b"".join(r.value for r in api.GetFile(req, timeout=60))


def start(api: pfs_pb2_grpc.APIStub) -> str:
    return str(api.StartCommit(pfs.StartCommitRequest(parent=commit(""), branch="master")).id)


def finish(api: pfs_pb2_grpc.APIStub, ref: str) -> None:
    api.FinishCommit(pfs.FinishCommitRequest(commit=commit(ref)), timeout=30)


def listing(api: pfs_pb2_grpc.APIStub, ref: str, path: str = "/") -> list[tuple[str, int, int]]:
    req = pfs.ListFileRequest(file=pfs.File(commit=commit(ref), path=path))
    return [(i.file.path, i.file_type, i.size_bytes) for i in api.ListFile(req).file_info]


def test_put_get_round_trip_is_byte_identical(api: pfs_pb2_grpc.APIStub) -> None:
    big = os.urandom(5 * 1024 * 1024 + 123)
    c = start(api)
    put(api, c, "/dir/big", big)
    put(api, c, "/empty", b"")
    put(api, c, "small", b"hello\n")
    finish(api, c)
    assert hashlib.sha256(get(api, "master", "/dir/big")).digest() == hashlib.sha256(big).digest()
    assert get(api, "master", "/empty") == b""
    assert get(api, c, "/small") == b"hello\n"
    assert get(api, "master", "/dir/big", offset=10, size=20) == big[10:30]
    info = api.InspectCommit(pfs.InspectCommitRequest(commit=commit(c)))
    assert info.size_bytes == len(big) + 6
    assert info.tree.hash
    repo = api.InspectRepo(pfs.InspectRepoRequest(repo=pfs.Repo(name="data")))
    assert repo.size_bytes == len(big) + 6


def test_append_and_overwrite_in_one_commit(api: pfs_pb2_grpc.APIStub) -> None:
    c = start(api)
    put(api, c, "/a", b"one\n")
    put(api, c, "/a", b"two\n")
    put(api, c, "/b", b"old\n")
    put(api, c, "/b", b"new\n", overwrite=True)
    finish(api, c)
    assert get(api, c, "/a") == b"one\ntwo\n"
    assert get(api, c, "/b") == b"new\n"


def test_put_on_a_branch_without_open_commit_commits(api: pfs_pb2_grpc.APIStub) -> None:
    put(api, "master", "/f", b"x")
    first = api.InspectCommit(pfs.InspectCommitRequest(commit=commit("master")))
    assert first.HasField("finished")
    put(api, "master", "/g", b"yy")
    second = api.InspectCommit(pfs.InspectCommitRequest(commit=commit("master")))
    assert second.parent_commit.id == first.commit.id
    assert listing(api, "master") == [("/f", pfs.FILE, 1), ("/g", pfs.FILE, 2)]


def test_list_and_inspect_file(api: pfs_pb2_grpc.APIStub) -> None:
    c = start(api)
    put(api, c, "/d/x", b"12345")
    put(api, c, "/d/y", b"1")
    put(api, c, "/top", b"")
    # an open commit reads its parent's tree: nothing yet
    assert listing(api, c) == []
    finish(api, c)
    assert listing(api, c) == [("/d", pfs.DIR, 6), ("/top", pfs.FILE, 0)]
    assert listing(api, c, "/d") == [("/d/x", pfs.FILE, 5), ("/d/y", pfs.FILE, 1)]
    info = api.InspectFile(pfs.InspectFileRequest(file=pfs.File(commit=commit(c), path="/d/x")))
    assert (info.file_type, info.size_bytes, len(info.hash)) == (pfs.FILE, 5, 32)
    with pytest.raises(grpc.RpcError) as err:
        api.InspectFile(pfs.InspectFileRequest(file=pfs.File(commit=commit(c), path="/nope")))
    assert status(err.value) == grpc.StatusCode.NOT_FOUND


def test_delete_root_leaves_nothing(api: pfs_pb2_grpc.APIStub) -> None:
    c = start(api)
    put(api, c, "/f", b"data")
    api.DeleteFile(pfs.DeleteFileRequest(file=pfs.File(commit=commit(c), path="/")))
    finish(api, c)
    assert listing(api, c) == []


@pytest.mark.parametrize("path", ["/a/../b", "/bad\x01name", "/caf\u00e9"])
def test_bad_paths_are_invalid_and_change_nothing(api: pfs_pb2_grpc.APIStub, path: str) -> None:
    c = start(api)
    with pytest.raises(grpc.RpcError) as err:
        put(api, c, path, b"x")
    assert status(err.value) == grpc.StatusCode.INVALID_ARGUMENT
    finish(api, c)
    assert listing(api, c) == []


def test_put_into_finished_commit_fails(api: pfs_pb2_grpc.APIStub) -> None:
    c = start(api)
    finish(api, c)
    with pytest.raises(grpc.RpcError) as err:
        put(api, c, "/f", b"x")
    assert status(err.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert listing(api, c) == []


def test_file_dir_conflict_refuses_finish(api: pfs_pb2_grpc.APIStub) -> None:
    c = start(api)
    put(api, c, "/a", b"file")
    put(api, c, "/a/b", b"child")
    with pytest.raises(grpc.RpcError) as err:
        finish(api, c)
    assert status(err.value) == grpc.StatusCode.FAILED_PRECONDITION
    info = api.InspectCommit(pfs.InspectCommitRequest(commit=commit(c)))
    assert not info.HasField("finished")
    api.DeleteFile(pfs.DeleteFileRequest(file=pfs.File(commit=commit(c), path="/a")))
    put(api, c, "/a/b", b"child")
    finish(api, c)
    assert get(api, c, "/a/b") == b"child"
