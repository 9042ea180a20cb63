"""File operations through the real cluster and gRPC: headers/footers, split
pieces, copy-file, diff-file, paged list-file/glob-file (and their streams),
inspect-file of directories.

Headers, footers and split pieces are written as the gateway does: bytes
into the object store, then pfs's ``PutFileRefs`` over the bus."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest

from libs import trees
from libs.api.internal import pfs_files_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.bus import Bus
from libs.config import ObjectStoreConfig
from libs.filedata import FileWriter
from libs.objects import open_object_store
from tests.integration.test_pfs_files import commit, finish, get, put, start, status
from tests.support.cluster import Cluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("pfs-file-ops") / "data")


@pytest.fixture
def api(cluster: Cluster) -> Iterator[pfs_pb2_grpc.APIStub]:
    channel = grpc.insecure_channel(
        f"127.0.0.1:{cluster.grpc_port}",
        options=[("grpc.max_receive_message_length", 64 << 20)],
    )
    stub = pfs_pb2_grpc.APIStub(channel)
    stub.DeleteRepo(pfs.DeleteRepoRequest(all=True, force=True), timeout=10)
    stub.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="data")), timeout=10)
    try:
        yield stub
    finally:
        channel.close()


class Writes:
    """Writes sent to pfs the way the gateway sends them."""

    def __init__(self, bus: Bus, objects: Path) -> None:
        self.bus = bus
        self.store = open_object_store(ObjectStoreConfig(local_root=objects))

    async def refs(self, data: bytes) -> list[trees.DataRef]:
        writer = FileWriter(self.store)

        async def blocks() -> AsyncIterator[bytes]:
            yield data

        refs = await writer.write_file(blocks())
        await writer.flush()
        return refs

    async def send(self, ref: str, *writes: internal.FileWrite) -> None:
        req = internal.PutFileRefsRequest(commit=commit(ref), writes=writes)
        await self.bus.request("pfs", "PutFileRefs", req, internal.PutFileRefsResponse)

    async def write(
        self, path: str, data: bytes, kind: int = internal.CONTENT, split: bool = False
    ) -> internal.FileWrite:
        refs = trees.model.refs_to_pb(await self.refs(data))
        return internal.FileWrite(path=path, refs=refs, kind=kind, split=split)  # type: ignore[arg-type]


@pytest.fixture
async def writes(cluster: Cluster) -> AsyncIterator[Writes]:
    nc = await nats.connect(cluster.state()["nats"]["url"])
    try:
        yield Writes(Bus(nc, service="test"), cluster.data_dir / "objects")
    finally:
        await nc.close()


def inspect(api: pfs_pb2_grpc.APIStub, ref: str, path: str) -> pfs.FileInfo:
    req = pfs.InspectFileRequest(file=pfs.File(commit=commit(ref), path=path))
    info: pfs.FileInfo = api.InspectFile(req, timeout=30)
    return info


def names(infos: Sequence[pfs.FileInfo]) -> list[str]:
    return [i.file.path for i in infos]


def fails(call: object, code: grpc.StatusCode, text: str) -> None:
    assert callable(call)
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert status(err.value) == code, err.value
    assert text in str(err.value.details()), err.value.details()  # type: ignore[attr-defined]


# --- headers and footers -------------------------------------------------------


async def test_header_and_footer_wrap_each_file_of_their_directory(
    api: pfs_pb2_grpc.APIStub, writes: Writes
) -> None:
    c1 = start(api)
    put(api, c1, "/d/a", b"alpha\n")
    put(api, c1, "/d/b", b"beta\n")
    put(api, c1, "/top", b"top\n")
    await writes.send(
        c1,
        await writes.write("/d", b"H\n", internal.HEADER),
        await writes.write("d/", b"F\n", internal.FOOTER),
    )
    finish(api, c1)
    assert get(api, c1, "/d/a") == b"H\nalpha\nF\n"
    assert get(api, c1, "/d/b", offset=1, size=4) == b"\nbet"
    assert get(api, c1, "/d") == b"H\nF\n"  # a directory reads as its header+footer
    assert get(api, c1, "/top") == b"top\n"
    # A directory with neither header nor footer cannot be read (1.7).
    fails(lambda: get(api, c1, "/"), grpc.StatusCode.FAILED_PRECONDITION, "no header or footer")
    assert inspect(api, c1, "/d/a").size_bytes == len(b"H\nalpha\nF\n")
    listed = api.ListFile(pfs.ListFileRequest(file=pfs.File(commit=commit(c1), path="/d")))
    assert [(i.file.path, i.size_bytes) for i in listed.file_info] == [
        ("/d/a", 10),
        ("/d/b", 9),
    ]

    # An empty header clears it; the footer stays.
    c2 = start(api)
    await writes.send(c2, internal.FileWrite(path="/d", kind=internal.HEADER))
    finish(api, c2)
    assert get(api, c2, "/d/a") == b"alpha\nF\n"
    assert get(api, c1, "/d/a") == b"H\nalpha\nF\n"  # the old commit is unchanged


async def test_a_header_on_a_file_refuses_the_finish(
    api: pfs_pb2_grpc.APIStub, writes: Writes
) -> None:
    c1 = start(api)
    put(api, c1, "/f", b"x")
    finish(api, c1)
    c2 = start(api)
    await writes.send(c2, await writes.write("/f", b"H", internal.HEADER))
    fails(lambda: finish(api, c2), grpc.StatusCode.FAILED_PRECONDITION, "/f is a file")


async def test_bad_header_writes_change_nothing(api: pfs_pb2_grpc.APIStub, writes: Writes) -> None:
    c1 = start(api)
    bad = await writes.write("/d", b"H", internal.HEADER, split=True)
    good = await writes.write("/e", b"H", internal.HEADER)
    with pytest.raises(Exception, match="split applies to file content"):
        await writes.send(c1, good, bad)
    finish(api, c1)
    fails(lambda: inspect(api, c1, "/e"), grpc.StatusCode.NOT_FOUND, "/e")


# --- split pieces ----------------------------------------------------------------


async def test_split_pieces_number_on_across_commits_and_restart_after_a_delete(
    api: pfs_pb2_grpc.APIStub, writes: Writes
) -> None:
    c1 = start(api)
    await writes.send(c1, *[await writes.write("/s", b"%d\n" % i, split=True) for i in range(3)])
    await writes.send(c1, await writes.write("/s", b"3\n", split=True))
    finish(api, c1)
    listed = api.ListFile(pfs.ListFileRequest(file=pfs.File(commit=commit(c1), path="/s")))
    assert names(listed.file_info) == [f"/s/{i:016x}" for i in range(4)]
    assert get(api, c1, "/s/0000000000000002") == b"2\n"

    c2 = start(api)
    await writes.send(c2, await writes.write("/s", b"4\n", split=True))
    finish(api, c2)
    assert get(api, c2, f"/s/{4:016x}") == b"4\n"

    # Overwrite with split: the gateway deletes the directory first.
    c3 = start(api)
    api.DeleteFile(pfs.DeleteFileRequest(file=pfs.File(commit=commit(c3), path="/s")))
    await writes.send(c3, await writes.write("/s", b"new\n", split=True))
    finish(api, c3)
    listed = api.ListFile(pfs.ListFileRequest(file=pfs.File(commit=commit(c3), path="/s")))
    assert names(listed.file_info) == ["/s/0000000000000000"]
    assert get(api, c3, "/s/0000000000000000") == b"new\n"


async def test_split_into_a_file_is_refused(api: pfs_pb2_grpc.APIStub, writes: Writes) -> None:
    c1 = start(api)
    put(api, c1, "/f", b"x")
    finish(api, c1)
    c2 = start(api)
    with pytest.raises(Exception, match="cannot split into /f: it is a file"):
        await writes.send(c2, await writes.write("/f", b"y", split=True))
    finish(api, c2)
    assert get(api, c2, "/f") == b"x"


# --- copy-file -----------------------------------------------------------------


def copy(
    api: pfs_pb2_grpc.APIStub, src: str, src_path: str, dst: str, dst_path: str, over: bool
) -> None:
    api.CopyFile(
        pfs.CopyFileRequest(
            src=pfs.File(commit=commit(src), path=src_path),
            dst=pfs.File(commit=commit(dst), path=dst_path),
            overwrite=over,
        ),
        timeout=30,
    )


async def test_copy_file_shares_directories_and_appends_without_overwrite(
    api: pfs_pb2_grpc.APIStub, writes: Writes
) -> None:
    c1 = start(api)
    put(api, c1, "/dir/x", b"x1")
    put(api, c1, "/dir/sub/y", b"y1")
    put(api, c1, "/g", b"g1")
    await writes.send(c1, await writes.write("/dir", b"H:", internal.HEADER))
    finish(api, c1)

    c2 = start(api)
    copy(api, c1, "/dir", c2, "/copy", True)
    copy(api, c1, "/dir/x", c2, "/g", False)  # appends to /g
    copy(api, c1, "/dir", c2, "/dir", False)  # appends each file to itself
    finish(api, c2)
    assert inspect(api, c2, "/copy").hash == inspect(api, c1, "/dir").hash
    assert get(api, c2, "/copy/x") == b"H:x1"
    assert get(api, c2, "/copy/sub/y") == b"y1"
    assert get(api, c2, "/g") == b"g1x1"
    assert get(api, c2, "/dir/x") == b"H:x1x1"
    assert get(api, c2, "/dir/sub/y") == b"y1y1"

    c3 = start(api)
    copy(api, c1, "/g", c3, "/g", True)  # overwrite
    finish(api, c3)
    assert get(api, c3, "/g") == b"g1"


async def test_copy_file_errors_change_nothing(api: pfs_pb2_grpc.APIStub) -> None:
    c1 = start(api)
    put(api, c1, "/f", b"f")
    finish(api, c1)
    c2 = start(api)
    fails(lambda: copy(api, c1, "/nope", c2, "/x", False), grpc.StatusCode.NOT_FOUND, "/nope")
    fails(
        lambda: copy(api, c1, "/f", c1, "/x", False),
        grpc.StatusCode.FAILED_PRECONDITION,
        "already been finished",
    )
    fails(
        lambda: copy(api, c2, "/f", c2, "/x", False),
        grpc.StatusCode.FAILED_PRECONDITION,
        "still open",
    )
    fails(
        lambda: copy(api, c1, "/f", c2, "/a//b", False), grpc.StatusCode.INVALID_ARGUMENT, "/a//b"
    )
    fails(lambda: copy(api, c1, "/f", c2, "/", False), grpc.StatusCode.INVALID_ARGUMENT, "root")
    finish(api, c2)
    listed = api.ListFile(pfs.ListFileRequest(file=pfs.File(commit=commit(c2), path="/")))
    assert names(listed.file_info) == ["/f"]


def test_copy_file_onto_a_branch_makes_its_own_commit(api: pfs_pb2_grpc.APIStub) -> None:
    """Onto a branch whose head is finished, CopyFile makes a commit and
    finishes it, as put-file does (Pachyderm 1.7); a failed copy leaves no
    commit behind."""
    c1 = start(api)
    put(api, c1, "/f", b"payload")
    finish(api, c1)
    copy(api, c1, "/f", "master", "/g", False)
    head = api.InspectCommit(pfs.InspectCommitRequest(commit=commit("master")))
    assert head.commit.id != c1 and head.HasField("finished")
    assert head.parent_commit.id == c1
    assert get(api, "master", "/g") == b"payload"
    fails(lambda: copy(api, c1, "/nope", "master", "/h", False), grpc.StatusCode.NOT_FOUND, "/nope")
    after = api.InspectCommit(pfs.InspectCommitRequest(commit=commit("master")))
    assert after.commit.id == head.commit.id  # the commit opened for it is gone
    commits = api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name="data")))
    assert len(commits.commit_info) == 2


# --- diff-file -----------------------------------------------------------------


def diff(
    api: pfs_pb2_grpc.APIStub, new: str, path: str, old: str = "", shallow: bool = False
) -> tuple[list[str], list[str]]:
    req = pfs.DiffFileRequest(new_file=pfs.File(commit=commit(new), path=path), shallow=shallow)
    if old:
        req.old_file.CopyFrom(pfs.File(commit=commit(old), path=path))
    got = api.DiffFile(req, timeout=30)
    return names(got.new_files), names(got.old_files)


def test_diff_file_against_the_parent_and_a_given_commit(api: pfs_pb2_grpc.APIStub) -> None:
    c1 = start(api)
    put(api, c1, "/a/1", b"1")
    put(api, c1, "/a/2", b"2")
    put(api, c1, "/b", b"b")
    finish(api, c1)
    assert diff(api, c1, "/") == (["/a/1", "/a/2", "/b"], [])  # against no parent

    c2 = start(api)
    put(api, c2, "/a/2", b"22", overwrite=True)
    put(api, c2, "/c/3", b"3")
    api.DeleteFile(pfs.DeleteFileRequest(file=pfs.File(commit=commit(c2), path="/b")))
    finish(api, c2)
    assert diff(api, c2, "/") == (["/a/2", "/c/3"], ["/a/2", "/b"])
    assert diff(api, c2, "/", shallow=True) == (["/a", "/c"], ["/a", "/b"])
    assert diff(api, c2, "/a") == (["/a/2"], ["/a/2"])
    assert diff(api, c2, "/c", shallow=True) == (["/c/3"], [])  # a new directory lists
    assert diff(api, c2, "/", old=c2) == ([], [])
    assert diff(api, c1, "/", old=c2) == (["/a/2", "/b"], ["/a/2", "/c/3"])
    got = api.DiffFile(pfs.DiffFileRequest(new_file=pfs.File(commit=commit(c2), path="/a/2")))
    assert got.new_files[0].size_bytes == 2 and got.old_files[0].size_bytes == 1

    # Two different paths (Pachyderm 1.7): each side named in its own tree.
    # (A file's hash names its data refs, so /copy starts as a copy of /a.)
    c3 = start(api)
    copy(api, c2, "/a", c3, "/copy", True)
    put(api, c3, "/copy/2", b"two", overwrite=True)
    put(api, c3, "/copy/9", b"9")
    finish(api, c3)

    def diff2(new: str, new_path: str, old: str, old_path: str, shallow: bool = False) -> Any:
        got = api.DiffFile(
            pfs.DiffFileRequest(
                new_file=pfs.File(commit=commit(new), path=new_path),
                old_file=pfs.File(commit=commit(old), path=old_path),
                shallow=shallow,
            )
        )
        return names(got.new_files), names(got.old_files)

    assert diff2(c3, "/copy", c2, "/a") == (["/copy/2", "/copy/9"], ["/a/2"])
    assert diff2(c3, "/copy", c2, "/a", shallow=True) == (["/copy/2", "/copy/9"], ["/a/2"])
    assert diff2(c3, "/copy/1", c2, "/a/1") == ([], [])
    assert diff2(c3, "/copy/2", c2, "/a/2") == (["/copy/2"], ["/a/2"])
    assert diff2(c3, "/copy", c2, "/nope") == (["/copy/1", "/copy/2", "/copy/9"], [])
    assert diff2(c2, "/a", c3, "/copy") == (["/a/2"], ["/copy/2", "/copy/9"])


# --- inspect, glob, paging -----------------------------------------------------


def test_inspect_directory_lists_children(api: pfs_pb2_grpc.APIStub) -> None:
    c1 = start(api)
    put(api, c1, "/d/b", b"bb")
    put(api, c1, "/d/a", b"a")
    put(api, c1, "/d/e/f", b"fff")
    finish(api, c1)
    info = inspect(api, c1, "/d")
    assert info.file_type == pfs.DIR
    assert list(info.children) == ["a", "b", "e"]
    assert info.size_bytes == 6
    assert len(info.hash) == 32
    assert not inspect(api, c1, "/d/a").children


def bulk_put(api: pfs_pb2_grpc.APIStub, ref: str, paths: Sequence[str]) -> None:
    def requests() -> Iterator[pfs.PutFileRequest]:
        for p in paths:
            yield pfs.PutFileRequest(file=pfs.File(commit=commit(ref), path=p), value=p.encode())

    api.PutFile(requests(), timeout=300)


def test_fifty_thousand_files_list_and_glob_page_by_page(api: pfs_pb2_grpc.APIStub) -> None:
    n = 50_000
    paths = [f"/big/f{i:06d}" for i in range(n)]
    c1 = start(api)
    t0 = time.monotonic()
    bulk_put(api, c1, paths)
    finish(api, c1)
    put_s = time.monotonic() - t0

    t0 = time.monotonic()
    req = pfs.ListFileRequest(file=pfs.File(commit=commit("master"), path="/big"))
    streamed = [i.file.path for i in api.ListFileStream(req, timeout=300)]
    stream_s = time.monotonic() - t0
    assert streamed == paths  # every file once, in order

    t0 = time.monotonic()
    unary = api.ListFile(req, timeout=300)
    unary_s = time.monotonic() - t0
    assert names(unary.file_info) == paths
    assert all(i.file.commit.id == c1 for i in unary.file_info[:: n // 10])

    glob = pfs.GlobFileRequest(commit=commit(c1), pattern="/big/f0[0-2]*")
    t0 = time.monotonic()
    globbed = [i.file.path for i in api.GlobFileStream(glob, timeout=300)]
    glob_s = time.monotonic() - t0
    assert globbed == paths[:30_000]
    assert names(api.GlobFile(glob, timeout=300).file_info) == paths[:30_000]

    c2 = start(api)
    bulk_put(api, c2, [f"/big/g{i:06d}" for i in range(20_000)])
    finish(api, c2)
    t0 = time.monotonic()
    new, old = diff(api, c2, "/")
    diff_s = time.monotonic() - t0
    assert new == [f"/big/g{i:06d}" for i in range(20_000)] and old == []
    print(
        f"\n50k files: put+finish {put_s:.1f}s, ListFileStream {stream_s:.2f}s, "
        f"ListFile {unary_s:.2f}s, GlobFileStream(30k) {glob_s:.2f}s, DiffFile(20k) {diff_s:.2f}s"
    )
