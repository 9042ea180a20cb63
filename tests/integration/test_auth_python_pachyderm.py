"""python-pachyderm 1.8.6, given an auth token, works against an
auth-activated cluster; without one it is UNAUTHENTICATED, and with the
token of a subject without access PERMISSION_DENIED."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.api.auth import auth_pb2 as auth
from libs.api.enterprise import enterprise_pb2 as ent
from tests.integration.auth_support import Client, code, write_keys
from tests.integration.test_python_pachyderm import COMPAT_PYTHON
from tests.support.cluster import ROOT, Cluster, running


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_keys(Path(tmp_path_factory.mktemp("pp-keys")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Iterator[Cluster]:
    base = Path(tmp_path_factory.mktemp("pp-auth"))
    yield from running(base / "data", PACH_ENTERPRISE_PUBLIC_KEY=str(keys[1]))


def test_python_pachyderm_with_a_token(cluster: Cluster, keys: tuple[Path, Path]) -> None:
    if os.environ.get("PACH_SKIP_COMPAT") == "1":
        pytest.skip("PACH_SKIP_COMPAT=1")
    if not COMPAT_PYTHON.exists():
        pytest.fail(f"{COMPAT_PYTHON} is missing: run `make test-deps` to install python-pachyderm")
    anon = Client(cluster.grpc_port)
    anon.call(anon.enterprise.Activate, ent.ActivateRequest(activation_code=code(keys[0])))
    token = anon.call(anon.auth.Activate, auth.ActivateRequest(subject="robot:admin")).pach_token
    admin = Client(cluster.grpc_port, token)
    user = admin.call(admin.auth.GetAuthToken, auth.GetAuthTokenRequest(subject="robot:pp")).token
    other = admin.call(admin.auth.GetAuthToken, auth.GetAuthTokenRequest(subject="robot:x")).token
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [
            str(COMPAT_PYTHON),
            str(ROOT / "tests" / "compat" / "pp_auth.py"),
            "127.0.0.1",
            str(cluster.grpc_port),
            user,
            other,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen == {
        "listed": ["compat_auth"],
        "content": "hello\n",
        "pipelines": [],
        "anonymous": "UNAUTHENTICATED",
        "stranger": "PERMISSION_DENIED",
    }
