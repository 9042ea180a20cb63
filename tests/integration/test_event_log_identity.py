"""The event log carries the cluster's id, and losing it never goes unnoticed.

On one real cluster (the launcher, nats-server, every service, pachctl):
the first start creates the stream with the cluster's id, a normal restart
of a service does not trip the check; the stream deleted under the running
cluster is reported by every service's health and refuses every write with
the cause, is not recreated by a restarted service, and a restore of an
extract taken before brings the cluster back; a stream of another cluster,
or one made anew and empty under read models that are not, refuses too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import nats.js.errors
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.config import Config
from libs.events.identity import META_CLUSTER_ID, META_EPOCH, stream_config
from libs.restore_gate import CLUSTER_BUCKET, CLUSTER_ID_KEY
from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import Cluster, alive, running, wait_until

BACKENDS = ("pfs", "pps", "auth", "enterprise", "admin")
MISSING = "event log missing: the EVENTS stream is gone"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = Path(tmp_path_factory.mktemp("logid"))
    # Every data dir counts as low on space: the replicas report degraded.
    yield from running(base / "data", PACH_LOG_CHECK_MS="300", PACH_DISK_LOW_BYTES=str(1 << 62))


def health(c: Cluster) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{c.http_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def states(c: Cluster) -> dict[str, str]:
    _, body = health(c)
    return {
        name: s.get("event_log", {}).get("state", s["status"])
        for name, s in body["services"].items()
    }


def wait_states(c: Cluster, want: str, timeout: float = 30.0) -> None:
    wait_until(lambda: set(states(c).values()) == {want}, timeout)


def fail(done: Any) -> str:
    assert done.returncode != 0, done.stdout
    return str(done.stderr.decode())


def admin_nats(c: Cluster) -> Any:
    """A privileged NATS connection to the cluster (the launcher's)."""
    return nats.connect(c.state()["nats"]["url"])


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def stream_meta(c: Cluster) -> dict[str, str] | None:
    nc = await admin_nats(c)
    try:
        info = await nc.jetstream().stream_info("EVENTS")
        return dict(info.config.metadata or {})
    except nats.js.errors.NotFoundError:
        return None
    finally:
        await nc.close()


async def stored_cluster_id(c: Cluster) -> str:
    nc = await admin_nats(c)
    try:
        kv = await nc.jetstream().key_value(CLUSTER_BUCKET)
        return ((await kv.get(CLUSTER_ID_KEY)).value or b"").decode()
    finally:
        await nc.close()


async def replace_stream(c: Cluster, cluster_id: str | None) -> None:
    """Delete the EVENTS stream; with ``cluster_id``, make an empty one
    carrying it (as a stray tool would)."""
    nc = await admin_nats(c)
    try:
        js = nc.jetstream()
        await js.delete_stream("EVENTS")
        if cluster_id is not None:
            await js.add_stream(stream_config(Config(), cluster_id))
    finally:
        await nc.close()


def restart(c: Cluster, service: str) -> None:
    """kill -9 one service; the launcher starts it again."""
    name = next(n for n, p in c.state()["processes"].items() if p["service"] == service)
    old = c.state()["processes"][name]["pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: c.state()["processes"][name]["pid"] not in (old, None))
    new = c.state()["processes"][name]["pid"]
    assert alive(new)


def pfs_stub(c: Cluster) -> Any:
    return pfs_pb2_grpc.APIStub(grpc.insecure_channel(f"127.0.0.1:{c.grpc_port}"))


@pytest.fixture(scope="module")
def backup(cluster: Cluster) -> bytes:
    """The cluster's first start, a repo with a file, and an extract of it."""
    meta = run(stream_meta(cluster))
    assert meta is not None
    cid = run(stored_cluster_id(cluster))
    assert cid and meta[META_CLUSTER_ID] == cid and int(meta[META_EPOCH]) > 0
    ok(pachctl(cluster, "create-repo", "kept"))
    ok(pachctl(cluster, "put-file", "kept", "master", "/a", "-f", "-", stdin=b"alpha\n"))
    return ok(pachctl(cluster, "extract"))


def test_first_start_stamps_the_log_and_a_restart_keeps_serving(
    cluster: Cluster, backup: bytes
) -> None:
    wait_states(cluster, "ok")
    status, body = health(cluster)
    assert status == 200 and body["status"] == "degraded"  # (low disk: still serving)
    cid = run(stored_cluster_id(cluster))
    for name in BACKENDS:
        svc = body["services"][name]
        assert svc["status"] == "degraded" and "low disk space" in svc["detail"]
        assert svc["disk"]["low"] is True
        assert svc["event_log"]["cluster_id"] == cid
        assert svc["event_log"]["last_seq"] > 0
        assert svc["nats"] == "connected"
        assert svc["disk"]["free_bytes"] > 0
    restart(cluster, "pfs")
    # (until the new pfs listens, the gateway finds no pfs at all)
    get = ("get-file", "kept", "master", "/a")
    wait_until(lambda: pachctl(cluster, *get).returncode == 0, 30)
    assert ok(pachctl(cluster, *get)) == b"alpha\n"
    ok(pachctl(cluster, "create-repo", "after-restart"))
    wait_states(cluster, "ok")
    assert health(cluster)[0] == 200
    assert run(stream_meta(cluster)) is not None


def test_a_deleted_log_is_reported_refused_not_recreated_and_restored(
    cluster: Cluster, backup: bytes
) -> None:
    ok(pachctl(cluster, "create-repo", "after-extract"))
    assert b"after-extract" in ok(pachctl(cluster, "list-repo"))
    run(replace_stream(cluster, None))

    wait_states(cluster, "missing")
    status, body = health(cluster)
    assert status == 503 and body["status"] == "unavailable"
    for name in BACKENDS:
        assert MISSING in body["services"][name]["detail"], body["services"][name]

    # Every write (and read) says why, over pachctl and over gRPC.
    assert MISSING in fail(pachctl(cluster, "create-repo", "x"))
    assert MISSING in fail(pachctl(cluster, "list-repo"))
    with pytest.raises(grpc.RpcError) as err:
        pfs_stub(cluster).CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="x")), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert MISSING in str(err.value.details())

    # A restarted service does not recreate it, and still says why.
    restart(cluster, "pfs")
    # (until the new pfs listens, the gateway finds no pfs at all)
    wait_until(lambda: MISSING in fail(pachctl(cluster, "create-repo", "x")), 30)
    wait_until(lambda: states(cluster)["pfs"] == "missing", 30)
    assert run(stream_meta(cluster)) is None

    # A restore of the extract brings the cluster back, as it was then.
    ok(pachctl(cluster, "restore", stdin=backup))
    wait_until(lambda: health(cluster)[0] == 200, 30)
    wait_states(cluster, "ok")
    repos = ok(pachctl(cluster, "list-repo")).decode()
    assert "kept" in repos and "after-extract" not in repos and "after-restart" not in repos
    assert ok(pachctl(cluster, "get-file", "kept", "master", "/a")) == b"alpha\n"
    ok(pachctl(cluster, "create-repo", "x"))
    ok(pachctl(cluster, "inspect-repo", "x"))
    assert "already exists" in fail(pachctl(cluster, "create-repo", "x"))
    meta = run(stream_meta(cluster))
    assert meta is not None and meta[META_CLUSTER_ID] == run(stored_cluster_id(cluster))


def test_a_foreign_or_emptied_log_refuses_to_serve(cluster: Cluster, backup: bytes) -> None:
    wait_states(cluster, "ok")
    run(replace_stream(cluster, "another-cluster"))
    wait_states(cluster, "foreign")
    err = fail(pachctl(cluster, "create-repo", "y"))
    assert "event log belongs to another cluster" in err and "another-cluster" in err
    assert health(cluster)[0] == 503

    # This cluster's id, but made anew and empty: the read models know better.
    run(replace_stream(cluster, run(stored_cluster_id(cluster))))
    wait_until(lambda: states(cluster)["pfs"] == "emptied", 30)
    assert "event log emptied" in fail(pachctl(cluster, "create-repo", "y"))
    assert health(cluster)[0] == 503
