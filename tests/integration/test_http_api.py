"""The HTTP JSON API on the gateway, against a real cluster."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(Path(tmp_path_factory.mktemp("http")) / "data").start()
    try:
        c.wait_ready()
        yield c
    finally:
        c.kill()


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
