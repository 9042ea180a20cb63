"""The HTTP JSON API on the gateway, against a real cluster."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("http")) / "data")


def call(
    cluster: Cluster, path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(
        f"http://127.0.0.1:{cluster.http_port}{path}",
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_repos_over_http(cluster: Cluster) -> None:
    assert call(cluster, "/api/pfs/CreateRepo", {"repo": {"name": "web"}, "description": "d"}) == (
        200,
        {},
    )
    status, listing = call(cluster, "/api/pfs/ListRepo")
    assert status == 200
    assert [r["repo"]["name"] for r in listing["repoInfo"]] == ["web"]
    status, info = call(cluster, "/api/pfs/InspectRepo", {"repo": {"name": "web"}})
    assert status == 200 and info["description"] == "d" and info["created"].endswith("Z")
    assert call(cluster, "/api/pfs/DeleteRepo", {"repo": {"name": "web"}})[0] == 200
    assert call(cluster, "/api/pfs/ListRepo") == (200, {})


def test_http_errors_are_precise(cluster: Cluster) -> None:
    status, body = call(cluster, "/api/pfs/InspectRepo", {"repo": {"name": "absent"}})
    assert status == 404 and body["error"]["type"] == "NotFound"
    assert "absent" in body["error"]["message"]
    status, body = call(cluster, "/api/pfs/CreateRepo", {"repo": {"name": "bad name"}})
    assert status == 400 and "invalid" in body["error"]["message"]
    status, body = call(cluster, "/api/pfs/CreateRepo", raw=b"{not json")
    assert status == 400 and "CreateRepoRequest" in body["error"]["message"]
    status, body = call(cluster, "/api/pfs/CreateRepo", {"repo": {"name": "x"}, "colour": 1})
    assert status == 400 and "colour" in body["error"]["message"]
    assert call(cluster, "/api/pfs/NoSuchMethod", {})[0] == 404
    assert call(cluster, "/api/nope/ListRepo")[0] == 404
    assert call(cluster, "/api/pfs/ListFileStream", {})[0] == 501
    assert call(cluster, "/api/pfs/ListRepo") == (200, {})  # nothing was created


def test_files_over_the_json_api(cluster: Cluster) -> None:
    """The listing RPCs the gateway pages from pfs (ListFile, GlobFile,
    DiffFile) and CopyFile answer over JSON as over gRPC."""
    assert call(cluster, "/api/pfs/CreateRepo", {"repo": {"name": "docs"}})[0] == 200
    for name in ("a.txt", "b.txt", "c.md"):
        put = urllib.request.Request(
            f"http://127.0.0.1:{cluster.http_port}/pfs/docs/master/dir/{name}",
            data=name.encode(),
            method="PUT",
        )
        with urllib.request.urlopen(put, timeout=10) as resp:
            assert resp.status in (200, 201)
    master = {"repo": {"name": "docs"}, "id": "master"}
    status, listing = call(
        cluster, "/api/pfs/ListFile", {"file": {"commit": master, "path": "/dir"}}
    )
    assert status == 200
    assert [i["file"]["path"] for i in listing["fileInfo"]] == [
        "/dir/a.txt",
        "/dir/b.txt",
        "/dir/c.md",
    ]
    status, globbed = call(
        cluster, "/api/pfs/GlobFile", {"commit": master, "pattern": "/dir/*.txt"}
    )
    assert status == 200 and len(globbed["fileInfo"]) == 2
    status, started = call(
        cluster, "/api/pfs/StartCommit", {"parent": {"repo": {"name": "docs"}}, "branch": "master"}
    )
    assert status == 200
    open_commit = {"repo": {"name": "docs"}, "id": started["id"]}
    status, _ = call(
        cluster,
        "/api/pfs/CopyFile",
        {
            "src": {"commit": {"repo": {"name": "docs"}, "id": "master^"}, "path": "/dir/c.md"},
            "dst": {"commit": open_commit, "path": "/copy.md"},
        },
    )
    assert status == 200
    assert call(cluster, "/api/pfs/FinishCommit", {"commit": open_commit})[0] == 200
    status, diff = call(cluster, "/api/pfs/DiffFile", {"newFile": {"commit": master, "path": "/"}})
    assert status == 200
    assert [i["file"]["path"] for i in diff["newFiles"]] == ["/copy.md"]
    assert "oldFiles" not in diff
    status, body = call(cluster, "/api/pfs/ListFile", {"file": {"commit": master, "path": "/nope"}})
    assert status == 404 and "/nope" in body["error"]["message"]
