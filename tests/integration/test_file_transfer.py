"""The file-transfer fast paths through a real cluster: GetFile replies
framed straight from the bytes read (still ``BytesValue`` to any protobuf
client), a slow reader that must not make the gateway buffer the file, and
PutFile batches of small files (what ``pachctl put-file -r`` sends)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.wrappers_pb2 import BytesValue

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from services.gateway.app.file_pages import REPLY_BYTES
from tests.support.cluster import ROOT, Cluster, running

MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("transfer") / "data")


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[pfs_pb2_grpc.APIStub]:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        yield pfs_pb2_grpc.APIStub(channel)


def _commit(repo: str, ref: str = "master") -> pfs.Commit:
    return pfs.Commit(repo=pfs.Repo(name=repo), id=ref)


def _put(api: pfs_pb2_grpc.APIStub, repo: str, path: str, data: bytes) -> None:
    def requests() -> Iterator[pfs.PutFileRequest]:
        yield pfs.PutFileRequest(file=pfs.File(commit=_commit(repo), path=path))
        for i in range(0, len(data), MiB):
            yield pfs.PutFileRequest(value=data[i : i + MiB])

    api.PutFile(requests(), timeout=120)


def _get(api: pfs_pb2_grpc.APIStub, repo: str, path: str, offset: int = 0, size: int = 0) -> bytes:
    req = pfs.GetFileRequest(
        file=pfs.File(commit=_commit(repo), path=path), offset_bytes=offset, size_bytes=size
    )
    return b"".join(r.value for r in api.GetFile(req, timeout=60))


def _unique(n: int) -> bytes:
    """``n`` bytes that differ at every 8-byte position (a misplaced slice shows)."""
    return b"".join(i.to_bytes(8, "big") for i in range(n // 8 + 1))[:n]


def test_get_file_ranges_return_exact_bytes(api: pfs_pb2_grpc.APIStub) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="ranges")), timeout=10)
    data = _unique(20 * MiB + 12345)  # several 8 MiB reads, many replies
    _put(api, "ranges", "/f", data)
    size = len(data)
    cases = [
        (0, 0),
        (1, 0),
        (REPLY_BYTES - 1, 3),
        (8 * MiB - 5, REPLY_BYTES + 10),
        (3, 17 * MiB),
        (size - 1, 0),
        (size - 10, 100),
        (size, 0),
        (size + 10, 0),
    ]
    for offset, length in cases:
        want = data[offset : offset + length] if length else data[offset:]
        assert _get(api, "ranges", "/f", offset, length) == want, (offset, length)


def test_get_file_replies_are_bytes_values_within_the_client_limit(cluster: Cluster) -> None:
    """Each reply parses as a ``BytesValue`` (python-pachyderm's parser), is
    never empty and fits a default client's 4 MiB message limit."""
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="frames")), timeout=10)
        data = os.urandom(5 * MiB + 3)
        _put(api, "frames", "/f", data)
        raw: grpc.UnaryStreamMultiCallable[pfs.GetFileRequest, bytes] = channel.unary_stream(
            "/pfs.API/GetFile", request_serializer=pfs.GetFileRequest.SerializeToString
        )
        req = pfs.GetFileRequest(file=pfs.File(commit=_commit("frames"), path="/f"))
        messages: list[bytes] = list(raw(req, timeout=60))
    assert all(0 < len(m) <= REPLY_BYTES + 8 for m in messages)
    assert b"".join(BytesValue.FromString(m).value for m in messages) == data


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_slow_reader_does_not_make_the_gateway_buffer_the_file(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub
) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="slow")), timeout=10)
    size = 160 * MiB
    block = os.urandom(MiB)

    def requests() -> Iterator[pfs.PutFileRequest]:
        yield pfs.PutFileRequest(file=pfs.File(commit=_commit("slow"), path="/big"))
        for i in range(size // MiB):
            yield pfs.PutFileRequest(value=i.to_bytes(8, "big") + block[8:])

    api.PutFile(requests(), timeout=120)
    procs = cluster.state()["processes"].values()
    gateway = next(p["pid"] for p in procs if p["service"] == "gateway")
    before = _rss(gateway)
    req = pfs.GetFileRequest(file=pfs.File(commit=_commit("slow"), path="/big"))
    replies = api.GetFile(req, timeout=120)
    got = len(next(replies).value)
    peak = 0
    for _ in range(6):  # the client reads nothing for 3 s
        time.sleep(0.5)
        peak = max(peak, _rss(gateway) - before)
    for reply in replies:
        got += len(reply.value)
    assert got == size
    # Read-ahead and the transport's windows hold tens of MiB at most, not the file.
    assert peak < 64 * MiB, f"gateway grew by {peak / MiB:.0f} MiB while the reader stalled"


def test_a_batch_of_files_is_read_as_its_entries(api: pfs_pb2_grpc.APIStub) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="batch")), timeout=10)

    def entry(path: str, value: bytes) -> pfs.PutFileRequest:
        return pfs.PutFileRequest(file=pfs.File(commit=_commit("batch"), path=path), value=value)

    def requests() -> Iterator[pfs.PutFileRequest]:
        yield pfs.PutFileRequest(batch=[entry(f"/d/{i}", b"%d" % i) for i in range(300)])
        # a file of its own, continued by a bytes-only message, then a batch
        # whose entry appends to it and whose last entry continues
        yield entry("/big", b"a" * 10)
        yield pfs.PutFileRequest(value=b"b" * 10)
        yield pfs.PutFileRequest(batch=[entry("/e", b""), entry("/big", b"c"), entry("/z", b"1")])
        yield pfs.PutFileRequest(value=b"2")

    api.PutFile(requests(), timeout=60)
    assert _get(api, "batch", "/d/7") == b"7" and _get(api, "batch", "/d/299") == b"299"
    assert _get(api, "batch", "/big") == b"a" * 10 + b"b" * 10 + b"c"
    assert _get(api, "batch", "/e") == b"" and _get(api, "batch", "/z") == b"12"
    infos = api.ListFile(pfs.ListFileRequest(file=pfs.File(commit=_commit("batch"), path="/d")))
    assert len(infos.file_info) == 300


@pytest.mark.parametrize(
    "bad",
    [
        pfs.PutFileRequest(
            file=pfs.File(commit=_commit("refused"), path="/x"),
            batch=[pfs.PutFileRequest(file=pfs.File(commit=_commit("refused"), path="/y"))],
        ),
        pfs.PutFileRequest(
            batch=[
                pfs.PutFileRequest(
                    file=pfs.File(commit=_commit("refused"), path="/y"),
                    batch=[pfs.PutFileRequest(file=pfs.File(commit=_commit("refused"), path="/z"))],
                )
            ]
        ),
        pfs.PutFileRequest(batch=[pfs.PutFileRequest(file=pfs.File(commit=_commit("refused")))]),
    ],
    ids=["batch-with-a-file", "nested-batch", "entry-path-root"],
)
def test_a_bad_batch_is_refused_and_writes_nothing(
    api: pfs_pb2_grpc.APIStub, bad: pfs.PutFileRequest
) -> None:
    with contextlib.suppress(grpc.RpcError):  # the last case's repo
        api.DeleteRepo(pfs.DeleteRepoRequest(repo=pfs.Repo(name="refused"), force=True))
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="refused")), timeout=10)
    first = pfs.PutFileRequest(file=pfs.File(commit=_commit("refused"), path="/ok"), value=b"x")
    with pytest.raises(grpc.RpcError) as err:
        api.PutFile(iter([first, bad]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    info = api.InspectRepo(pfs.InspectRepoRequest(repo=pfs.Repo(name="refused")), timeout=10)
    assert info.size_bytes == 0
    commits = api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name="refused")), timeout=10)
    assert all(c.finished.seconds == 0 or c.size_bytes == 0 for c in commits.commit_info)


def test_pachctl_put_file_r_and_get_file_round_trip(cluster: Cluster, tmp_path: Path) -> None:
    """Small files (batched), an empty one, and files past the small-file
    size (streamed on their own) in one ``put-file -r``; back byte for byte."""
    src = tmp_path / "tree"
    files = {
        "a/0": b"",
        "a/1": b"one",
        "a/big": _unique(3 * MiB + 5),
        "b/mid": os.urandom(64 * 1024 + 1),
        **{f"c/{i:04}": os.urandom(i % 700) for i in range(2500)},
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    env = {**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}", "PYTHONPATH": str(ROOT)}

    def pachctl(*args: str) -> bytes:
        done = subprocess.run(
            [sys.executable, "-m", "programs.pachctl", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout

    pachctl("create-repo", "tree")
    pachctl("put-file", "tree", "master", "/in", "-r", "-f", str(src))
    listing = pachctl("list-file", "tree", "master", "/in/c").decode().splitlines()
    names = [ln.split()[0] for ln in listing if ln.startswith("/in/c/")]
    assert names == [f"/in/c/{i:04}" for i in range(2500)], listing[:3]
    for rel in ("a/0", "a/1", "a/big", "b/mid", "c/0000", "c/0699", "c/2499"):
        assert pachctl("get-file", "tree", "master", f"/in/{rel}") == files[rel], rel
    out = tmp_path / "big.out"
    pachctl("get-file", "tree", "master", "/in/a/big", "-o", str(out))
    assert out.read_bytes() == files["a/big"]
