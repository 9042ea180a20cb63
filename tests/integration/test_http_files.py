"""Plain HTTP file download/upload (``/pfs/<repo>/<ref>/<path>``) and the
dashboard's repo pages, against a real cluster."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.support.cluster import Cluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("http-files") / "data")


@pytest.fixture
def api(cluster: Cluster) -> Iterator[pfs_pb2_grpc.APIStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
    stub = pfs_pb2_grpc.APIStub(channel)
    stub.DeleteRepo(pfs.DeleteRepoRequest(all=True, force=True), timeout=10)
    stub.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="web")), timeout=10)
    try:
        yield stub
    finally:
        channel.close()


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    cluster: Cluster,
    method: str,
    path: str,
    data: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    req = urllib.request.Request(
        f"http://127.0.0.1:{cluster.http_port}{path}",
        data=data,
        method=method,
        headers=headers or {},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, dict(err.headers), err.read())


def names(api: pfs_pb2_grpc.APIStub, ref: str, path: str = "/") -> list[str]:
    f = pfs.File(commit=pfs.Commit(repo=pfs.Repo(name="web"), id=ref), path=path)
    return [i.file.path for i in api.ListFile(pfs.ListFileRequest(file=f)).file_info]


def test_upload_and_download_a_large_file(cluster: Cluster, api: pfs_pb2_grpc.APIStub) -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)
    up = http(cluster, "PUT", "/pfs/web/master/dir/big.bin", data)
    assert up.status == 201, up.body
    assert up.json() == {"repo": "web", "ref": "master", "path": "/dir/big.bin", "bytes": len(data)}
    down = http(cluster, "GET", "/pfs/web/master/dir/big.bin")
    assert down.status == 200 and down.body == data
    assert int(down.headers["Content-Length"]) == len(data)
    assert down.headers["Accept-Ranges"] == "bytes"

    # A streamed (chunked) body, in pieces (a POST names a type no
    # cross-site form can send).
    pieces = [os.urandom(700_000) for _ in range(4)]
    binary = {"Content-Type": "application/octet-stream"}
    up = http(cluster, "POST", "/pfs/web/master/chunked.bin", iter(pieces), binary)
    assert up.status == 201 and up.json()["bytes"] == sum(map(len, pieces))
    assert http(cluster, "GET", "/pfs/web/master/chunked.bin").body == b"".join(pieces)

    # Ranges.
    part = http(cluster, "GET", "/pfs/web/master/dir/big.bin", headers={"Range": "bytes=100-199"})
    assert part.status == 206 and part.body == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    tail = http(cluster, "GET", "/pfs/web/master/dir/big.bin", headers={"Range": "bytes=-10"})
    assert tail.status == 206 and tail.body == data[-10:]
    start = len(data) - 5
    rest = http(cluster, "GET", "/pfs/web/master/dir/big.bin", headers={"Range": f"bytes={start}-"})
    assert rest.status == 206 and rest.body == data[start:]
    past = http(
        cluster, "GET", "/pfs/web/master/dir/big.bin", headers={"Range": f"bytes={len(data)}-"}
    )
    assert past.status == 416 and past.headers["Content-Range"] == f"bytes */{len(data)}"
    bad = http(cluster, "GET", "/pfs/web/master/dir/big.bin", headers={"Range": "bytes=1-2,5-6"})
    assert bad.status == 400 and "Range" in bad.json()["error"]["message"]

    # Directories list as JSON; by the commit the branch resolved to.
    head = api.InspectCommit(
        pfs.InspectCommitRequest(commit=pfs.Commit(repo=pfs.Repo(name="web"), id="master"))
    ).commit.id
    listing = http(cluster, "GET", "/pfs/web/master/dir")
    assert listing.status == 200
    assert listing.json() == {
        "repo": "web",
        "commit": head,
        "path": "/dir",
        "files": [{"path": "/dir/big.bin", "type": "file", "size_bytes": len(data)}],
    }
    root = http(cluster, "GET", "/pfs/web/master").json()
    assert [(f["path"], f["type"]) for f in root["files"]] == [
        ("/chunked.bin", "file"),
        ("/dir", "dir"),
    ]


def test_append_overwrite_and_open_commits(cluster: Cluster, api: pfs_pb2_grpc.APIStub) -> None:
    assert http(cluster, "PUT", "/pfs/web/master/log.txt", b"one\n").status == 201
    assert http(cluster, "PUT", "/pfs/web/master/log.txt", b"two\n").status == 201
    assert http(cluster, "GET", "/pfs/web/master/log.txt").body == b"one\ntwo\n"
    assert http(cluster, "PUT", "/pfs/web/master/log.txt?overwrite=true", b"new\n").status == 201
    assert http(cluster, "GET", "/pfs/web/master/log.txt").body == b"new\n"
    assert len(api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name="web"))).commit_info) == 3

    # An open commit takes the write and stays open.
    dev = api.StartCommit(
        pfs.StartCommitRequest(parent=pfs.Commit(repo=pfs.Repo(name="web")), branch="dev")
    )
    assert http(cluster, "PUT", f"/pfs/web/{dev.id}/a.txt", b"A").status == 201
    info = api.InspectCommit(pfs.InspectCommitRequest(commit=dev))
    assert not info.HasField("finished")
    api.FinishCommit(pfs.FinishCommitRequest(commit=dev))
    assert http(cluster, "GET", "/pfs/web/dev/a.txt").body == b"A"


def test_http_file_errors_change_nothing(cluster: Cluster, api: pfs_pb2_grpc.APIStub) -> None:
    assert http(cluster, "PUT", "/pfs/web/master/kept.txt", b"kept").status == 201
    finished = api.InspectCommit(
        pfs.InspectCommitRequest(commit=pfs.Commit(repo=pfs.Repo(name="web"), id="master"))
    ).commit.id

    def error(reply: Reply, status: int, *words: str) -> None:
        assert reply.status == status, (reply.status, reply.body)
        message = reply.json()["error"]["message"]
        assert all(w in message for w in words), message

    error(http(cluster, "GET", "/pfs/web/master/missing.txt"), 404, "/missing.txt")
    error(http(cluster, "GET", "/pfs/nope/master/a"), 404, "nope")
    error(http(cluster, "GET", "/pfs/web/nobranch/a"), 404, "nobranch")
    error(http(cluster, "GET", "/pfs/web/master/a%01b"), 400, "printable")
    error(http(cluster, "PUT", "/pfs/web/master/a%01b", b"x"), 400, "printable")
    error(http(cluster, "PUT", "/pfs/web/master/", b"x"), 400, "path")
    error(http(cluster, "PUT", "/pfs/web/master/x?overwrite=maybe", b"x"), 400, "maybe")
    error(http(cluster, "PUT", "/pfs/bad%20name/master/x", b"x"), 400, "bad name")
    error(http(cluster, "PUT", "/pfs/nope/master/x", b"x"), 404, "nope")
    error(http(cluster, "PUT", f"/pfs/web/{finished}/x", b"x"), 412, finished, "finished")
    assert names(api, "master") == ["/kept.txt"]
    assert len(api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name="web"))).commit_info) == 1
    assert [r.repo.name for r in api.ListRepo(pfs.ListRepoRequest()).repo_info] == ["web"]


def test_dashboard_repo_page_and_file_browser(cluster: Cluster, api: pfs_pb2_grpc.APIStub) -> None:
    assert http(cluster, "PUT", "/pfs/web/master/docs/read<me>.txt", b"hi").status == 201
    assert http(cluster, "PUT", "/pfs/web/master/top.txt", b"top").status == 201
    api.CreateBranch(
        pfs.CreateBranchRequest(
            branch=pfs.Branch(repo=pfs.Repo(name="web"), name="v1"),
            head=pfs.Commit(repo=pfs.Repo(name="web"), id="master^"),
        )
    )
    infos = api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name="web"))).commit_info
    second, first = (i.commit.id for i in infos)

    index = http(cluster, "GET", "/")
    assert index.status == 200 and b'<script src="/static/index.js">' in index.body
    script = http(cluster, "GET", "/static/index.js")
    assert script.status == 200 and b'"/repos/" + encodeURIComponent' in script.body
    page = http(cluster, "GET", "/repos/web")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    text = page.body.decode()
    assert "<h1>Repo web</h1>" in text
    assert f'<a href="/repos/web/commits/{second}/"><code>{second}</code></a>' in text
    assert f"/repos/web/commits/{first}/" in text
    assert "<td>master</td>" in text and "<td>v1</td>" in text and "5B" in text

    root = http(cluster, "GET", f"/repos/web/commits/{second}/").body.decode()
    assert f'href="/repos/web/commits/{second}/docs">docs/</a>' in root
    # a file's name opens its preview; its download link fetches the bytes
    assert f'href="/repos/web/commits/{second}/top.txt">top.txt</a>' in root
    assert f'href="/pfs/web/{second}/top.txt">download</a>' in root
    docs = http(cluster, "GET", f"/repos/web/commits/{second}/docs").body.decode()
    # Escaped in text and in links.
    assert "read&lt;me&gt;.txt</a>" in docs and "<me>" not in docs
    assert f'href="/pfs/web/{first}/docs/read%3Cme%3E.txt"' not in docs
    assert f'href="/pfs/web/{second}/docs/read%3Cme%3E.txt"' in docs
    assert http(cluster, "GET", f"/pfs/web/{second}/docs/read%3Cme%3E.txt").body == b"hi"
    by_branch = http(cluster, "GET", "/repos/web/commits/v1/").body.decode()
    assert "docs/</a>" in by_branch and "top.txt" not in by_branch

    missing = http(cluster, "GET", "/repos/nope")
    assert missing.status == 404 and "nope" in missing.json()["error"]["message"]
    assert http(cluster, "GET", "/repos/web/commits/master/absent").status == 404
