"""Service pipelines (1.7's ``service``) end to end through pachctl: a
pipeline serving its input with ``python3 -m http.server <internal_port>``
in /pfs/<input>; a file fetched through ``external_port`` on 127.0.0.1; a
new input commit restarts the service on the new data (the new content is
served), the replaced job succeeds and the current one is running (none
stuck in starting)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from programs.cluster.natsserver import free_port
from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import Cluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("service")) / "data")


def fetch(port: int, path: str, want: bytes, timeout: float = 60.0) -> bytes:
    """GET http://127.0.0.1:<port>/<path> until it answers ``want``."""
    deadline = time.monotonic() + timeout
    got: bytes | str = b""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as r:
                got = r.read()
            if got == want:
                return got
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            got = str(exc)
        time.sleep(0.3)
    raise AssertionError(f"port {port} /{path}: wanted {want!r}, last got {got!r}")


def job_states(cluster: Cluster) -> list[str]:
    rows = ok(pachctl(cluster, "list-job", "-p", "web")).decode().splitlines()[1:]
    states = ("starting", "running", "success", "failure", "killed")
    return [w for row in rows for w in row.split() if w in states]


def test_service_pipeline(cluster: Cluster, tmp_path: Path) -> None:
    internal, external = free_port(), free_port()
    ok(pachctl(cluster, "create-repo", "site"))
    ok(pachctl(cluster, "put-file", "site", "master", "/index.txt", "-f", "-", stdin=b"v1\n"))
    spec = {
        "pipeline": {"name": "web"},
        "transform": {
            "cmd": ["python3", "-m", "http.server", str(internal), "--bind", "127.0.0.1"],
            "working_dir": "/pfs/site",
        },
        "input": {"atom": {"repo": "site", "glob": "/"}},
        "service": {"internal_port": internal, "external_port": external},
    }
    path = tmp_path / "web.json"
    path.write_text(json.dumps(spec))
    ok(pachctl(cluster, "create-pipeline", "-f", str(path)))

    assert fetch(external, "index.txt", b"v1\n") == b"v1\n"
    assert job_states(cluster) == ["running"]

    ok(pachctl(cluster, "put-file", "site", "master", "/index.txt", "-o", "-f", "-", stdin=b"v2\n"))
    assert fetch(external, "index.txt", b"v2\n") == b"v2\n"
    deadline = time.monotonic() + 30
    while job_states(cluster) != ["running", "success"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert job_states(cluster) == ["running", "success"]  # newest first

    inspected = ok(pachctl(cluster, "inspect-pipeline", "web")).decode()
    assert "running" in inspected.lower()

    # Deleting the pipeline stops the service.
    ok(pachctl(cluster, "delete-pipeline", "web"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{internal}/index.txt", timeout=2)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the service still answers after delete-pipeline")
